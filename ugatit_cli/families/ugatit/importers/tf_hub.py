"""Official TF checkpoints on the Hugging Face Hub: fetch one generator's bytes, convert once, cache.

The selfie2anime release is one ~8 GB data file holding both generators, four discriminators and their
Adam slots; one full generator is ~1.1 GB of it. So the small ``.index`` is downloaded whole
(``hf_hub_download``, cached like any Hub file) and only the wanted generators' byte ranges of the data
file are read, through ``HfFileSystem`` with no read-ahead. The result is stored as an ordinary model
folder per direction under ``<HF_HUB_CACHE>/ugatit-cli/converted/<owner>--<name>@<revision>/...``: each
is written under a temporary name and renamed when complete, so an interrupted run leaves nothing a later
run trusts, and every later run loads the folder without touching the network.

A branch such as ``main`` is resolved to its commit once, when converting; the result is kept under the
branch name (the official release is frozen). Delete the folder to convert again.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from huggingface_hub import HfApi, HfFileSystem, constants, hf_hub_download

from ....core.progress import byte_progress
from ....errors import UserError, first_line
from ...model_folder import (
    CONFIG_NAME,
    hub_errors,
    hub_reachable,
    offline_reason,
    read_model_folder,
    write_model_folder,
)
from ..family import DIRECTIONS, UGATITModel, check_direction, weights_name

FETCH_WORKERS = 8  # parallel range requests: hide per-request latency, exceed one connection's throughput


@dataclass(frozen=True)
class HubTFCheckpoint:
    """An official TF checkpoint in a Hub repo: ``<folder>/<prefix>.index`` + ``<prefix>.data-*``."""

    repo_id: str
    folder: str
    prefix: str
    img_size: int | None = None  # training size, needed only for light models (their weights omit it)

    @property
    def url(self) -> str:
        return f"hf://{self.repo_id}/{self.folder}/{self.prefix}"

    def resolve(self, directions: Sequence[str], revision: str | None = None) -> UGATITModel:
        """The registry's resolver: the converted generators for ``directions``."""
        return load_hub_tf_checkpoint(self, directions, revision)

    def converted_folder(self, direction: str, revision: str | None = None) -> Path | None:
        """The model folder of the ``direction`` generator converted on an earlier use, or None."""
        folder = converted_dir(self, revision or constants.DEFAULT_REVISION) / direction
        return folder if _is_converted(folder, direction) else None


def converted_dir(source: HubTFCheckpoint, revision: str) -> Path:
    """Where the converted model folders of ``source`` at ``revision`` live (one subfolder per direction)."""
    repo = source.repo_id.replace("/", "--")
    return (Path(constants.HF_HUB_CACHE) / "ugatit-cli" / "converted" / f"{repo}@{quote(revision, safe='')}"
            / source.folder / source.prefix)


def _is_converted(folder: Path, direction: str) -> bool:
    return (folder / CONFIG_NAME).is_file() and (folder / weights_name(direction)).is_file()


def load_hub_tf_checkpoint(
    source: HubTFCheckpoint, directions: Sequence[str] = DIRECTIONS, revision: str | None = None,
    show_progress: bool = True,
) -> UGATITModel:
    """The generators for ``directions``, converting those not yet in the local cache (the only step that
    needs the network)."""
    directions = tuple(check_direction(d) for d in directions)
    revision = revision or constants.DEFAULT_REVISION
    root = converted_dir(source, revision)
    missing = [d for d in directions if not _is_converted(root / d, d)]
    if missing:
        if not hub_reachable():  # at once, and one line, instead of retries and a traceback
            raise UserError(f"{source.repo_id}@{revision}: the {'/'.join(missing)} generator is not converted yet "
                            f"and needs the Hugging Face Hub, but {offline_reason()}")
        with hub_errors(source.repo_id, revision):
            convert_from_hub(source, missing, revision, root, show_progress=show_progress)
    generators = {}
    config = None
    for direction in directions:
        model = read_model_folder(root / direction, (direction,))
        config, generators[direction] = model.config, model.generators[direction]
    return UGATITModel(config, generators)


def convert_from_hub(
    source: HubTFCheckpoint, directions: Sequence[str], revision: str, root: Path, show_progress: bool = True
) -> None:
    """Fetch the index and the byte ranges of the ``directions``' generators; write one folder each."""
    from .tf_checkpoint import MAX_INDEX_BYTES, TFCheckpoint, TFCheckpointError, parse_index
    from .tf_convert import (
        TF_SCOPES,
        conversion_note,
        convert_checkpoint,
        generators_nbytes,
        smoothing_from_folder_name,
    )

    api = HfApi()
    commit = api.model_info(source.repo_id, revision=revision).sha or revision  # pin every later request
    fs = HfFileSystem(skip_instance_cache=True)
    folder_path = f"{source.repo_id}/{source.folder}"
    try:
        listing = {PurePosixPath(item["name"]).name: item["size"]
                   for item in fs.ls(folder_path, revision=commit, detail=True) if item["type"] == "file"}
    except FileNotFoundError:
        raise UserError(f"hf://{folder_path}: no such folder in the repository at {revision}") from None
    index_name = f"{source.prefix}.index"
    if index_name not in listing:
        raise TFCheckpointError(f"hf://{folder_path}: no {index_name} (the folder holds {', '.join(sorted(listing))})")
    index_file = hf_hub_download(source.repo_id, f"{source.folder}/{index_name}", revision=commit)
    if listing[index_name] > MAX_INDEX_BYTES:
        raise TFCheckpointError(f"hf://{folder_path}/{index_name}: {listing[index_name]} bytes is too large for a "
                                "checkpoint index")
    index = parse_index(Path(index_file).read_bytes(), origin=f"hf://{folder_path}/{index_name}")

    def fetch(shard: str, offset: int, length: int) -> bytes:
        """One range request; thread-safe (a fresh file object per call, no read-ahead cache)."""
        if shard not in listing:
            raise TFCheckpointError(f"hf://{folder_path}: the index refers to {shard}, which is missing")
        try:
            return fs.cat_file(f"{folder_path}/{shard}", start=offset, end=offset + length, revision=commit,
                               cache_type="none")
        except Exception as exc:  # any transport failure, whatever HTTP library huggingface_hub uses
            raise UserError(f"hf://{folder_path}/{shard}: download failed at byte {offset} ({first_line(exc)})"
                            ) from exc

    checkpoint = TFCheckpoint(index, source.prefix, fetch, origin=source.url, shard_size=listing.get)
    smoothing = smoothing_from_folder_name(source.folder)
    total = generators_nbytes(checkpoint, directions)
    description = f"fetching {', '.join(TF_SCOPES[d] for d in directions)}"
    where = (f"`{source.prefix}` in [{source.repo_id}]({constants.ENDPOINT}/{source.repo_id}/tree/{commit}/"
             f"{source.folder}) at commit `{commit}`")
    with byte_progress(description, total, enabled=show_progress) as advance:
        for direction in directions:  # one at a time: a full generator is ~1.1 GB in memory
            model = convert_checkpoint(checkpoint, (direction,), img_size=source.img_size, smoothing=smoothing,
                                       on_bytes=advance, workers=FETCH_WORKERS)
            write_model_folder(model, root / direction, overwrite=True, title=f"U-GAT-IT {source.folder}",
                               source=conversion_note(where, (direction,)))
            del model


#: The official TF release (taki0112/UGATIT): full model, 256 px, ch 64, 4 residual blocks, 1M iterations.
SELFIE2ANIME = HubTFCheckpoint(
    repo_id="hylee/UGATIT_model",
    folder="UGATIT_selfie2anime_lsgan_4resblock_6dis_1_1_10_10_1000_sn_smoothing",
    prefix="UGATIT.model-1000000",
)
