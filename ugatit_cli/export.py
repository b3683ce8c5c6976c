"""``ugatit export``: any MODEL source -> a model folder (safetensors or ONNX), optionally pushed to the Hub.

Only generators are exported: ``resolve_model`` never loads discriminators or optimizer state. The folder
is filled under a temporary sibling name and renamed into place (``hub.atomic_folder``), so an interrupted
export leaves nothing under the final name and ``--overwrite`` replaces an old folder only once the new
one is complete.

ONNX goes through ``torch.onnx.export(dynamo=True)``: it is PyTorch's default and maintained exporter (the
TorchScript one is deprecated), and ``torch.export`` fails loudly if the code specialises the batch size
we declare dynamic instead of silently baking it in; on the 1.1 GB generator it was also faster and used
less memory than the TorchScript exporter.
"""

import contextlib
import copy
import importlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import constants

from . import __version__
from .errors import UserError
from .files import atomic_file
from .hub import (
    CARD_NAME,
    CONFIG_NAME,
    DIRECTIONS,
    UGATITModel,
    atomic_folder,
    check_direction,
    check_output_folder,
    hub_write_errors,
    is_model_folder,
    weights_name,
)
from .loading import resolve_model
from .model import Generator, UGATITConfig
from .progress import progress_disabled, step_progress
from .registry import MODELS

FORMATS = ("safetensors", "onnx")
ONNX_OPSET = 20  # stated, not left to the exporter's default, so an export does not change with torch versions
ONNX_INPUT = "input"
ONNX_OUTPUTS = ("image", "cam_logit", "heatmap")
ONNX_EXTRA_HINT = 'pip install "ugatit-cli[onnx]"'
#: protobuf cannot hold a model over 2 GiB; larger graphs keep their weights in a ``.onnx.data`` file
ONNX_INLINE_LIMIT = 2**31 - 2**26


def onnx_name(direction: str) -> str:
    return f"generator_{direction}.onnx"


@dataclass
class ExportResult:
    """What ``export_model`` wrote (and pushed); ``files`` maps each file name to its size in bytes."""

    folder: Path
    format: str
    directions: tuple[str, ...]
    weights_dtype: str
    files: dict[str, int]
    seconds: float
    opset: int | None = None
    quantize: str | None = None
    pushed: dict[str, str] = field(default_factory=dict)  # repo_id, branch, commit_url

    def to_dict(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "format": self.format, "directions": list(self.directions),
                "weights_dtype": self.weights_dtype, "opset": self.opset, "quantize": self.quantize,
                "files": self.files,
                "seconds": round(self.seconds, 3), "pushed": self.pushed or None}


def parse_directions(spec: str) -> tuple[str, ...]:
    """``a2b``, ``b2a`` or ``both``."""
    return DIRECTIONS if spec == "both" else (check_direction(spec),)


def export_model(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    format: str = "safetensors",
    directions: Sequence[str] = DIRECTIONS,
    half: bool = False,
    overwrite: bool = False,
    revision: str | None = None,
    opset: int = ONNX_OPSET,
    repo_id: str | None = None,
    private: bool = False,
    branch: str | None = None,
    show_progress: bool = True,
    quantize: str | None = None,
    calibration: str | os.PathLike | None = None,
) -> ExportResult:
    """Load the generators of ``source`` (any MODEL) and write them to the folder ``output``.

    ``quantize="int8"`` (ONNX only) writes int8 graphs calibrated on the images in the folder
    ``calibration`` (real images of each exported direction's source domain; see ``ugatit_cli.quantize``).

    ``half`` stores the weights in float16 (half the size; loaders compute in float32 again). With
    ``repo_id`` the folder is then pushed to that Hub repository (see ``push_model_folder``), and its model
    card names the repo in its usage lines.
    """
    if format not in FORMATS:
        raise UserError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    directions = tuple(dict.fromkeys(check_direction(d) for d in directions))
    if not directions:
        raise UserError("no direction to export")
    if (private or branch) and not repo_id:
        raise UserError("--private and --branch apply to a push: add --push-to-hub REPO_ID")
    calibration_paths = _check_quantize(format, quantize, calibration, half)
    output = Path(output).expanduser()
    check_output_folder(output, overwrite=overwrite)  # before loading a 1.1 GB generator, not after
    if format == "onnx":
        _require_onnx()
    token = _hub_token(repo_id) if repo_id else None  # a missing token is found before the work, not after
    start = time.perf_counter()
    steps = 1 + (len(directions) if format == "onnx" else 1) + (1 if repo_id else 0)
    with step_progress(steps, enabled=show_progress) as step:
        step(f"loading {source}")
        with contextlib.nullcontext() if show_progress else progress_disabled():
            model = resolve_model(source, directions, revision)
        exported = UGATITModel(model.config, model.generators, card=_card_facts(model, source),
                               weights_dtype="float16" if half else "float32")
        card: dict[str, Any] = {"model_id": repo_id} if repo_id else {}
        with atomic_folder(output, overwrite=overwrite) as tmp:
            if format == "safetensors":
                step(f"writing {', '.join(weights_name(d) for d in directions)}")
                exported.save_pretrained(tmp, model_card_kwargs=card)
            else:
                quantization = None
                for direction in directions:
                    step(f"exporting {onnx_name(direction)} (ONNX opset {opset}"
                         f"{f', {quantize} calibrated on {len(calibration_paths)} images' if quantize else ''})")
                    if quantize:
                        quantization = _export_int8(exported.generators[direction], tmp, direction, opset,
                                                    calibration_paths)
                    else:
                        export_onnx(exported.generators[direction], tmp / onnx_name(direction), opset=opset,
                                    half=half)
                _write_onnx_metadata(exported, tmp, opset, card, quantization)
        files = {p.name: p.stat().st_size for p in sorted(output.iterdir()) if p.is_file()}
        result = ExportResult(output, format, directions, exported.weights_dtype, files,
                              time.perf_counter() - start, opset if format == "onnx" else None, quantize)
        if repo_id:
            step(f"pushing to {repo_id}")
            try:
                url = push_model_folder(output, repo_id, private=private, branch=branch, token=token)
            except UserError as exc:
                raise type(exc)(f"{exc} (the export itself is complete in {output})") from None
            result.pushed = {"repo_id": repo_id, "branch": branch or "main", "commit_url": url}
    result.seconds = time.perf_counter() - start
    return result


def _check_quantize(format: str, quantize: str | None, calibration: str | os.PathLike | None,
                    half: bool) -> list[Path]:
    """The calibration images for ``quantize`` (checked before any model is loaded), [] without it."""
    if quantize is None:
        if calibration is not None:
            raise UserError("--calibration applies to --quantize int8")
        return []
    from .quantize import QUANTIZE_CHOICES, calibration_images, require_quantization

    if quantize not in QUANTIZE_CHOICES:
        raise UserError(f"unknown quantization {quantize!r}; expected {', '.join(QUANTIZE_CHOICES)}")
    if format != "onnx":
        raise UserError("--quantize int8 writes ONNX graphs: add --format onnx")
    if half:
        raise UserError("--quantize int8 and --half do not combine: int8 weights are already a quarter of the size")
    if calibration is None:
        raise UserError("--quantize int8 needs --calibration PHOTOS/: a folder of real images of the source domain")
    require_quantization()
    return calibration_images(calibration)


def _export_int8(generator: Generator, folder: Path, direction: str, opset: int,
                 calibration: list[Path]) -> dict[str, Any]:
    """Export the fp32 graph beside the final name, quantize it into ``onnx_name(direction)``, drop the fp32."""
    from .quantize import quantize_int8

    fp32 = folder / f".fp32.{onnx_name(direction)}"
    try:
        export_onnx(generator, fp32, opset=opset)
        with atomic_file(folder / onnx_name(direction)) as tmp:
            facts = quantize_int8(fp32, tmp, calibration, generator.config.img_size)
    finally:
        fp32.unlink(missing_ok=True)
        Path(f"{fp32}.data").unlink(missing_ok=True)
    return facts


def _card_facts(model: UGATITModel, source: str | os.PathLike) -> dict[str, Any]:
    """The loader's facts about the model, and an origin sentence when the loader gave none.

    Local sources are named by their file or folder name only: a card is often published, a home
    directory's path should not be.
    """
    facts = dict(model.card)
    text = str(source)
    if Path(text).expanduser().exists():
        origin = f"`{Path(text).name}`"
    elif text in MODELS:
        origin = f"the registered model `{text}` ({MODELS[text].origin})"
    else:  # a Hub repo: the card's metadata links the two
        origin = f"the Hub repository [{text}]({constants.ENDPOINT}/{text})"
        facts.setdefault("base_model", text)
    facts.setdefault("source", f"Exported by ugatit-cli {__version__} from {origin}.")
    return facts


# --- ONNX ---------------------------------------------------------------------------------------------

def _require_onnx() -> None:
    for module in ("onnx", "onnxscript"):
        try:
            importlib.import_module(module)
        except ImportError:
            raise UserError(f"ONNX export needs the optional packages onnx and onnxscript: {ONNX_EXTRA_HINT}") from None


def onnx_dynamic_axes(config: UGATITConfig) -> dict[int, str]:
    """The input's dynamic axes: the batch; for light models also height and width, which their pooled
    gamma/beta MLP does not fix (a full model's MLP reads the whole map, so its size is the training size)."""
    return {0: "batch", 2: "height", 3: "width"} if config.light else {0: "batch"}


def export_onnx(generator: Generator, path: Path, *, opset: int = ONNX_OPSET, half: bool = False) -> None:
    """One generator as an ONNX graph: input ``input`` (B x C x H x W), outputs ``image``, ``cam_logit``,
    ``heatmap``; the axes of ``onnx_dynamic_axes`` are dynamic. ``half`` stores the weights in float16, cast
    to float32 inside the graph."""
    _require_onnx()
    import onnx

    config = generator.config
    parameters = set(generator.state_dict())
    if half:
        # Round the weights first, so that constants the exporter folds from them (e.g. 1 - rho) are computed
        # from the float16 values too, and the graph computes exactly what the float16 weights give in PyTorch.
        generator = copy.deepcopy(generator)
        with torch.no_grad():
            for tensor in generator.state_dict().values():
                if tensor.is_floating_point():
                    tensor.copy_(tensor.half())
    # Batch 2, not 1: torch.export specialises sizes of 0 and 1, which would fix the batch dimension.
    example = torch.zeros(2, config.img_ch, config.img_size, config.img_size)
    # the batch, and for light models the image sides: multiples of 4 (the encoder halves the image twice)
    dims = {axis: torch.export.Dim(name, min=1) if axis == 0 else 4 * torch.export.Dim(f"{name}_div4", min=4)
            for axis, name in onnx_dynamic_axes(config).items()}
    program = torch.onnx.export(
        generator.eval(), (example,), None, dynamo=True, opset_version=opset, input_names=[ONNX_INPUT],
        output_names=list(ONNX_OUTPUTS), dynamic_shapes={"x": dims}, verbose=False,
    )
    model = program.model_proto
    if half:
        store_initializers_as_float16(model, parameters)
    onnx.helper.set_model_props(model, {"ugatit_cli.version": __version__,
                                        "ugatit_cli.weights_dtype": "float16" if half else "float32"})
    large = sum(t.ByteSize() for t in model.graph.initializer) > ONNX_INLINE_LIMIT
    with atomic_file(path) as tmp:
        onnx.save_model(model, tmp, save_as_external_data=large, location=f"{path.name}.data" if large else None)


def store_initializers_as_float16(model: Any, names: set[str]) -> None:
    """Store the float32 initializers ``names`` (the weights) as float16, cast back by ``Cast`` nodes at the
    graph's start. Small constants the exporter derived from them stay float32.

    Own code rather than onnxconverter-common's ``convert_float_to_float16``: that one makes the graph
    compute in float16, which onnxruntime's CPU kernels mostly lack; we only want half-size storage.
    """
    from onnx import TensorProto, helper, numpy_helper

    casts = []
    for tensor in model.graph.initializer:
        if tensor.data_type != TensorProto.FLOAT or tensor.name not in names:
            continue
        name = tensor.name
        half = numpy_helper.from_array(numpy_helper.to_array(tensor).astype("float16"), f"{name}.float16")
        tensor.CopyFrom(half)
        casts.append(helper.make_node("Cast", [half.name], [name], name=f"{name}.to_float32", to=TensorProto.FLOAT))
    nodes = [*casts, *model.graph.node]  # consumers keep reading the original name, now the Cast's output
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _write_onnx_metadata(model: UGATITModel, folder: Path, opset: int, card: dict[str, Any],
                         quantization: dict[str, Any] | None = None) -> None:
    onnx_facts = {
        "opset": opset, "input": ONNX_INPUT, "outputs": list(ONNX_OUTPUTS),
        "dynamic_axes": {ONNX_INPUT: {str(k): v for k, v in onnx_dynamic_axes(model.config).items()}},
        "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
    }
    if quantization:
        onnx_facts["quantization"] = quantization
    model.write_config(folder, onnx=onnx_facts)
    files = {onnx_name(d): f"generator {d} ({'A -> B' if d == 'a2b' else 'B -> A'}), ONNX opset {opset}"
             for d in model.generators}
    model.generate_model_card(files=files, onnx=onnx_facts, tags=["onnx"], **card).save(folder / CARD_NAME)


# --- the Hub ------------------------------------------------------------------------------------------

def push_model_folder(
    folder: str | os.PathLike, repo_id: str, *, private: bool = False, branch: str | None = None,
    token: str | None = None, commit_message: str | None = None,
) -> str:
    """Upload an exported folder to the Hub repo ``repo_id`` (created if missing) in one commit; return its URL.

    ``branch`` is created from ``main`` when it does not exist. The token is huggingface_hub's usual one
    (``token``, else ``HF_TOKEN``, else the file written by ``hf auth login``).
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file():
        raise UserError(f"{folder}: not an exported model folder (no {CONFIG_NAME})")
    token = _hub_token(repo_id, token)
    kind = "model" if is_model_folder(folder) else "ONNX export"
    message = commit_message or f"Upload U-GAT-IT {kind} with ugatit-cli {__version__}"
    api = HfApi(token=token)
    with hub_write_errors(repo_id):
        repo = api.create_repo(repo_id, private=private, exist_ok=True)
        if branch and branch != "main":
            api.create_branch(repo.repo_id, branch=branch, exist_ok=True)
        info = api.upload_folder(repo_id=repo.repo_id, folder_path=folder, revision=branch, commit_message=message)
    return info.commit_url


def _hub_token(repo_id: str, token: str | None = None) -> str:
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise UserError(f"{repo_id}: pushing to the Hugging Face Hub needs a token: set HF_TOKEN or run "
                        "`hf auth login`")
    return token
