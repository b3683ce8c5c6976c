"""Training data from a Hugging Face Hub dataset: ``ugatit train hf://datasets/OWNER/NAME``.

The dataset is read with the ``datasets`` library (extra ``hub-datasets``): its own loading code resolves
the repo (parquet, imagefolder, ...), downloads it once into its cache (``HF_HUB_OFFLINE=1`` then works)
and keeps it as memory-mapped Arrow files. The result is what the training data pipeline consumes: per
domain, a list of images it can open (:class:`HubImage`, beside the :class:`~pathlib.Path` of a local
folder), each decoded by the same code as a local file (:func:`ugatit_cli.images.open_rgb_bytes`).

Cached rather than streamed: the order of a run is a function of (seed, stream, epoch, position), so the
images need random access; a stream would have to be held in memory whole to give it.

Columns -> domains (:func:`infer_mapping`; ``--domain-column`` overrides):

- U-GAT-IT (roles ``A``, ``B``): two image columns named after the domains (``imageA``/``imageB``), or
  one image column and a label column with two values (``trainA``/``trainB`` of an
  imagefolder upload of the official layout, whose ``testA``/``testB`` rows become the sample images);
- pix2pixHD (``label``, ``image``) and TUNIT (``image``): the same rules with their role names.

Rows keep the dataset's order; a domain of a label column takes its rows in ascending order. A row id
(``train[12].imageA``) is what a run's ``data.json`` records, like a file's relative path.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .errors import UserError
from .images import BadImageError, open_rgb, open_rgb_bytes

PREFIX = "hf://datasets/"
INSTALL_HINT = 'reading Hub datasets needs the datasets library: pip install "ugatit-cli[hub-datasets]"'
#: the domains each family's training reads, in order
ROLES = {"ugatit": ("A", "B"), "pix2pixhd": ("label", "image"), "tunit": ("image",)}
_SPEC = re.compile(r"^hf://datasets/([\w.-]+/[\w.-]+)(?:@([\w./-]+))?/?$")


@dataclass(frozen=True)
class HubDatasetSpec:
    """``hf://datasets/OWNER/NAME[@REVISION]``."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"{PREFIX}{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


def is_hub_dataset(text: str | os.PathLike) -> bool:
    return str(text).startswith(PREFIX)


def parse_hub_dataset(text: str | os.PathLike) -> HubDatasetSpec:
    match = _SPEC.match(str(text))
    if not match:
        raise UserError(f"{text}: expected hf://datasets/OWNER/NAME or hf://datasets/OWNER/NAME@REVISION")
    return HubDatasetSpec(match.group(1), match.group(2))


@dataclass(frozen=True)
class ColumnMapping:
    """Which columns hold which role: ``images[role]`` is a column name, or with ``label`` set, every role
    reads ``images[role]`` on the rows where ``label`` equals ``values[role]`` (``test_values`` for samples)."""

    images: dict[str, str]
    label: str | None = None
    values: dict[str, Any] | None = None
    test_values: dict[str, Any] | None = None


def _is_image(feature: Any) -> bool:
    from datasets import Image

    if isinstance(feature, Image):
        return True
    return isinstance(feature, dict) and set(feature) == {"bytes", "path"}  # parquet without HF metadata


def _label_values(dataset: Any, column: str) -> list[Any]:
    from datasets import ClassLabel

    feature = dataset.features[column]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    return sorted({v for v in dataset.unique(column) if v is not None}, key=str)


def _describe(dataset: Any) -> str:
    from datasets import ClassLabel

    parts = []
    for name, feature in dataset.features.items():
        if _is_image(feature):
            parts.append(f"{name} (image)")
        elif isinstance(feature, ClassLabel):
            parts.append(f"{name} (label: {', '.join(map(str, feature.names[:8]))})")
        else:
            parts.append(f"{name} ({getattr(feature, 'dtype', type(feature).__name__)})")
    return "; ".join(parts)


def infer_mapping(dataset: Any, roles: Sequence[str], requested: Sequence[str] = (), source: str = "") -> ColumnMapping:
    """The columns of ``roles`` (see the module docstring); ``requested`` are ``--domain-column`` values:
    ``COLUMN`` (an image column, one per role in order) or ``LABEL=VALUE_A,VALUE_B`` (a label column and
    the value of each role; ``LABEL`` alone when it has exactly as many values as roles). UserError listing
    the columns when the mapping cannot be inferred."""
    columns = dict(dataset.features)
    image_columns = [c for c, f in columns.items() if _is_image(f)]
    names = " and ".join(roles)
    ask = (f"{source}: cannot tell which columns hold {names}; columns: {_describe(dataset)}. Pass "
           + " ".join(f"--domain-column IMAGE_{r.upper()}" for r in roles)
           + (f" or --domain-column LABEL={','.join('VALUE_' + r.upper() for r in roles)}" if len(roles) > 1 else ""))
    images = [r for r in requested if "=" not in r and r in columns]
    labels = [r for r in requested if "=" in r or (r in columns and not _is_image(columns[r]))]
    for r in requested:
        name = r.split("=")[0]
        if name not in columns:
            raise UserError(f"{source}: no column {name!r}; columns: {_describe(dataset)}")
    images = [r for r in images if r not in labels]
    if labels:
        if len(labels) > 1 or len(images) > 1:
            raise UserError(ask)
        label, _, wanted = labels[0].partition("=")
        image = images[0] if images else (image_columns[0] if len(image_columns) == 1 else None)
        if image is None:
            raise UserError(ask)
        present = _label_values(dataset, label)
        chosen = [v.strip() for v in wanted.split(",")] if wanted else present
        if len(chosen) != len(roles):
            placeholders = ",".join("VALUE_" + r.upper() for r in roles)
            raise UserError(f"{source}: column {label} has values {', '.join(map(str, present))}; name "
                            f"{len(roles)} of them: --domain-column {label}={placeholders}")
        missing = [v for v in chosen if v not in [str(p) for p in present]]
        if missing:
            raise UserError(f"{source}: column {label} has no value {missing[0]!r}; it has "
                            f"{', '.join(map(str, present))}")
        typed = [next(p for p in present if str(p) == v) for v in chosen]
        return ColumnMapping({r: image for r in roles}, label, dict(zip(roles, typed, strict=True)))
    if images:
        if len(images) != len(roles):
            raise UserError(ask)
        return ColumnMapping(dict(zip(roles, images, strict=True)))
    # inferred: one image column per role named after it (imageA/imageB, label/image)
    by_suffix = {r: [c for c in image_columns if c.lower() == r.lower() or c.endswith(r)] for r in roles}
    if all(len(v) == 1 for v in by_suffix.values()) and len({v[0] for v in by_suffix.values()}) == len(roles):
        return ColumnMapping({r: v[0] for r, v in by_suffix.items()})
    if len(image_columns) == len(roles) == 1:
        return ColumnMapping({roles[0]: image_columns[0]})
    if len(image_columns) == 1 and len(roles) > 1:  # a label column: trainA/trainB (+ testA/testB), or 2 values
        for label in [c for c in columns if c not in image_columns]:
            present = _label_values(dataset, label)
            train = {r: [v for v in present if str(v).lower() == f"train{r}".lower()] for r in roles}
            if all(len(v) == 1 for v in train.values()):
                test = {r: [v for v in present if str(v).lower() == f"test{r}".lower()] for r in roles}
                return ColumnMapping({r: image_columns[0] for r in roles}, label, {r: v[0] for r, v in train.items()},
                               {r: v[0] for r, v in test.items()} if all(len(v) == 1 for v in test.values()) else None)
            if len(present) == len(roles):
                values = dict(zip(roles, present, strict=True))
                return ColumnMapping({r: image_columns[0] for r in roles}, label, values)
    raise UserError(ask)


@dataclass(frozen=True)
class HubImage:
    """One image cell of a dataset: ``open_rgb()`` decodes it like a local file (same checks and reasons)."""

    rows: Any  # the datasets.Dataset of the split with its image columns undecoded ({"bytes", "path"})
    split: str
    row: int
    column: str

    @property
    def name(self) -> str:
        return f"{self.split}[{self.row}].{self.column}"

    def __str__(self) -> str:
        return self.name

    def open_rgb(self):
        value = self.rows[self.row][self.column]
        if value is None:
            raise BadImageError(self.name, "no image in this row")
        if value.get("bytes"):
            return open_rgb_bytes(value["bytes"], self.name)
        if value.get("path"):
            return open_rgb(value["path"])
        raise BadImageError(self.name, "empty file (0 bytes)")


@dataclass(frozen=True)
class HubTrainingData:
    """What :func:`scan_hub_dataset` found: readable images per role (``train``), sample images (``test``:
    a list, or None) and the dataset it came from (``root``)."""

    root: str
    train: dict[str, list[HubImage]]
    test: dict[str, list[HubImage] | None]
    mapping: ColumnMapping

    def relative(self) -> dict[str, list[str]]:
        return {role: [image.name for image in images] for role, images in self.train.items()}


def _import_datasets():
    try:
        import datasets
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return datasets


def _load_split(spec: HubDatasetSpec, split: str) -> Any:
    datasets = _import_datasets()
    from datasets.exceptions import DatasetNotFoundError

    try:
        return datasets.load_dataset(spec.repo_id, split=split, revision=spec.revision)
    except DatasetNotFoundError as exc:
        raise UserError(f"{spec}: {str(exc).splitlines()[0]}") from None
    except ValueError as exc:  # an unknown split
        raise UserError(f"{spec}: {str(exc).splitlines()[0]}") from None
    except (OSError, ConnectionError) as exc:
        raise UserError(f"{spec}: cannot read the dataset ({str(exc).splitlines()[0]}); offline, it must be in "
                        "the datasets cache already") from None


def _undecoded(dataset: Any, columns: Sequence[str]) -> Any:
    from datasets import Image

    for column in set(columns):
        if isinstance(dataset.features[column], Image):
            dataset = dataset.cast_column(column, Image(decode=False))
    return dataset


def _images(rows: Any, split: str, mapping: ColumnMapping, role: str, values: dict[str, Any] | None) -> list[HubImage]:
    """The images of ``role`` in row order; rows whose cell is empty (a shorter domain's column) are not images."""
    import pyarrow.compute as pc

    column = mapping.images[role]
    present = pc.is_valid(rows.data.column(column)).to_pylist()  # Arrow's null mask, without reading the bytes
    if mapping.label is not None:
        from datasets import ClassLabel

        wanted = (values or {})[role]
        feature = rows.features[mapping.label]
        if isinstance(feature, ClassLabel):  # stored as the index of the name
            wanted = feature.str2int(wanted)
        labels = rows.data.column(mapping.label).to_pylist()
        present = [p and v == wanted for p, v in zip(present, labels, strict=True)]
    return [HubImage(rows, split, i, column) for i, keep in enumerate(present) if keep]


def _readable(image: HubImage) -> BadImageError | None:
    try:
        image.open_rgb()
    except BadImageError as exc:
        return exc
    return None


def scan_hub_dataset(source: str | HubDatasetSpec, *, split: str = "train", domain_columns: Sequence[str] = (),
                     family: str = "ugatit", test_split: str | None = "test",
                     threads: int | None = None) -> HubTrainingData:
    """Read ``source`` (``hf://datasets/OWNER/NAME[@REV]``) and map its columns to ``family``'s roles.

    Every image is decoded once (threads); unreadable ones are named in one warning and left out, as for a
    local folder. Sample images come from ``test_split`` when the dataset has it (or from the ``testA``/
    ``testB`` label values). UserError: no ``datasets`` library, no such dataset/split, a mapping that
    cannot be inferred, a role with no readable image.
    """
    spec = source if isinstance(source, HubDatasetSpec) else parse_hub_dataset(source)
    roles = ROLES.get(family)
    if roles is None:
        raise UserError(f"training from Hub datasets does not know the family {family!r}")
    dataset = _load_split(spec, split)
    mapping = infer_mapping(dataset, roles, domain_columns, str(spec))
    used = list(dict.fromkeys(mapping.images.values()))
    rows = _undecoded(dataset.select_columns(used + ([mapping.label] if mapping.label else [])), used)
    candidates = {role: _images(rows, split, mapping, role, mapping.values) for role in roles}
    everything = [image for images in candidates.values() for image in images]
    with ThreadPoolExecutor(max_workers=threads or min(8, os.cpu_count() or 1)) as pool:
        problems = dict(zip(everything, pool.map(_readable, everything), strict=True))
    bad = [problems[i] for i in everything if problems[i] is not None]
    if bad:
        from .train.data import SkippedImagesWarning

        listing = "; ".join(f"{e.path} ({e.reason})" for e in bad)
        warnings.warn(f"skipping {len(bad)} unreadable training image(s): {listing}", SkippedImagesWarning,
                      stacklevel=2)
    train = {role: [i for i in images if problems[i] is None] for role, images in candidates.items()}
    for role, images in train.items():
        if not images:
            raise UserError(f"{spec}: none of the {len(candidates[role])} images of {role} can be read")
    test: dict[str, list[HubImage] | None] = dict.fromkeys(roles)
    if mapping.test_values:
        test = {role: _images(rows, split, mapping, role, mapping.test_values) for role in roles}
    elif test_split and test_split != split:
        try:
            test_rows = _load_split(spec, test_split)
        except UserError:
            test_rows = None
        if test_rows is not None and set(rows.column_names) <= set(test_rows.column_names):
            test_rows = _undecoded(test_rows.select_columns(rows.column_names), used)
            test = {role: _images(test_rows, test_split, mapping, role, mapping.values) for role in roles}
    return HubTrainingData(str(spec), train, test, mapping)
