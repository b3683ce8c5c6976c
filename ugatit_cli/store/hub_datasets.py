"""Training data from a Hugging Face Hub dataset: ``ugatit train hf://datasets/OWNER/NAME[@REVISION]``.

The dataset is read with the ``datasets`` library (extra ``hub``): its own loading code resolves the repo
(parquet, imagefolder, ...), downloads it once into its cache (``HF_HUB_OFFLINE=1`` then works) and keeps
it as memory-mapped Arrow files. Its columns are then mapped to the roles the family declares
(:class:`~ugatit_cli.families.base.HubColumns`: two unpaired domains, a paired input and target, or one
image column) and every image is written, as the bytes the dataset
holds (no re-encoding), into a folder of the family's own DATA_DIR layout beside the ``datasets`` cache.
Training then reads that folder with :meth:`Family.scan_data` and :meth:`Family.loader`, exactly as a
local folder: the same checks of every file, the same data order (a function of seed and position), the
same exact resume. (A folder rather than a reader of Arrow rows: every family's reader takes files, and
paired families pair them by name and read id maps by path.)

Columns -> roles (:func:`infer_mapping`; ``--domain-column`` overrides):

- one image column per role, recognised by the names the family gives in ``HubColumns.roles``; or, for
  unpaired roles, one image column and a label column whose values are the family's folder names
  (``HubColumns.train``, and ``HubColumns.test`` for the test images, as an imagefolder upload of an
  official layout has) or exactly one value per role;
- ``--domain-column COLUMN`` once per role (in the family's order), or ``--domain-column LABEL=V1,V2``.

Rows keep the dataset's order: the file of row 12 is ``000012.png`` (its own suffix), so sorted names are
row order. The ``test`` split (when the dataset has one) fills the family's test folders.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..core.images import is_image_name
from ..errors import UserError
from ..families.base import Family, HubColumns

PREFIX = "hf://datasets/"
INSTALL_HINT = 'reading Hub datasets needs the datasets library: pip install "ugatit-cli[hub]"'
#: version of the written layout; part of the cache key, so a change writes a fresh folder
LAYOUT_VERSION = 1
TEST_SPLIT = "test"
_SPEC = re.compile(r"^hf://datasets/([\w.-]+/[\w.-]+)(?:@([\w./-]+))?/?$")
_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif", "GIF": ".gif",
            "PPM": ".ppm"}


@dataclass(frozen=True)
class HubDatasetSpec:
    """``hf://datasets/OWNER/NAME[@REVISION]``."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"{PREFIX}{self.repo_id}" + (f"@{self.revision}" if self.revision else "")

    @property
    def name(self) -> str:
        return self.repo_id.split("/")[1]


def is_hub_dataset(text: str | os.PathLike) -> bool:
    return str(text).startswith(PREFIX)


def parse_hub_dataset(text: str | os.PathLike) -> HubDatasetSpec:
    """The repo id and revision of ``hf://datasets/OWNER/NAME[@REVISION]``; UserError for another form."""
    match = _SPEC.match(str(text))
    if not match:
        raise UserError(f"{text}: expected hf://datasets/OWNER/NAME or hf://datasets/OWNER/NAME@REVISION")
    return HubDatasetSpec(match.group(1), match.group(2))


# --- columns -> roles -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnMapping:
    """Which column holds which role. ``images[role]``: a column name. With ``label`` set and ``values``,
    every role reads its column on the rows where ``label`` equals ``values[role]`` (``test_values``: the
    rows of the test images, from the same split). With ``classes`` set, that label column names each
    image's class subfolder."""

    images: dict[str, str]
    label: str | None = None
    values: dict[str, Any] | None = None
    test_values: dict[str, Any] | None = None
    classes: str | None = None


def _is_image(feature: Any) -> bool:
    from datasets import Image

    if isinstance(feature, Image):
        return True
    return isinstance(feature, dict) and set(feature) == {"bytes", "path"}  # parquet without HF metadata


def _is_label(feature: Any) -> bool:
    from datasets import ClassLabel, Value

    return isinstance(feature, ClassLabel) or (isinstance(feature, Value) and feature.dtype in (
        "string", "large_string", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool"))


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


def _by_name(columns: Sequence[str], aliases: Sequence[str]) -> list[str]:
    """Image columns a role's names recognise: equal ignoring case, else ending in one of them."""
    exact = [c for c in columns if c.lower() in {a.lower() for a in aliases}]
    return exact or [c for c in columns if any(c.endswith(a) for a in aliases)]


def infer_mapping(dataset: Any, hub: HubColumns, requested: Sequence[str] = (), source: str = "") -> ColumnMapping:
    """The columns of each role of ``hub`` in ``dataset`` (a ``datasets.Dataset``); ``requested`` are the
    ``--domain-column`` values: ``COLUMN`` (an image column per role, in the family's order; optional roles
    may be left out) or ``LABEL=VALUE,VALUE`` (a label column and the value of each role; ``LABEL`` alone
    when it has one value per role, or for a family whose label column names classes).

    UserError, one line listing the columns and what to pass, when the mapping cannot be inferred.
    """
    columns = dict(dataset.features)
    image_columns = [c for c, f in columns.items() if _is_image(f)]
    roles = list(hub.roles)
    required = [r for r in roles if r not in hub.optional]
    split_by_label = not hub.paired and not hub.classes and len(required) > 1
    ask = (f"{source}: cannot tell which columns hold {' and '.join(roles)}; columns: {_describe(dataset)}. "
           f"Pass " + " ".join(f"--domain-column {r.upper()}_COLUMN" for r in roles)
           + (f" or --domain-column LABEL={','.join('VALUE_' + r.upper() for r in required)}" if split_by_label
              else ""))
    for r in requested:
        name = r.split("=")[0]
        if name not in columns:
            raise UserError(f"{source}: no column {name!r}; columns: {_describe(dataset)}")
    images = [r for r in requested if "=" not in r and _is_image(columns[r])]
    labels = [r for r in requested if r not in images]
    if len(labels) > 1:
        raise UserError(ask)
    label, _, wanted = labels[0].partition("=") if labels else (None, "", "")
    if label is not None and not _is_label(columns[label]):
        raise UserError(f"{source}: column {label!r} is neither an image nor a label column; columns: "
                        f"{_describe(dataset)}")
    classes = None
    if hub.classes:  # the label column (given, or the one there is) names classes, not roles
        candidates = [label] if label else [c for c, f in columns.items() if _label_is_class(f)]
        classes = candidates[0] if len(candidates) == 1 else None
        label = None
    if label is not None:
        if not split_by_label or len(images) > 1:
            raise UserError(ask)
        image = images[0] if images else (image_columns[0] if len(image_columns) == 1 else None)
        if image is None:
            raise UserError(ask)
        return _label_mapping(dataset, hub, image, label, wanted, source)
    if images:
        if not len(required) <= len(images) <= len(roles):
            raise UserError(ask)
        return ColumnMapping(dict(zip(roles, images, strict=False)), classes=classes)
    found = {r: _by_name(image_columns, hub.roles[r]) for r in roles}
    chosen = {r: v[0] for r, v in found.items() if len(v) == 1}
    if all(r in chosen for r in required) and all(len(v) <= 1 for v in found.values()) \
            and len(set(chosen.values())) == len(chosen):
        return ColumnMapping(chosen, classes=classes)
    if len(image_columns) == 1 and len(required) == 1:
        return ColumnMapping({required[0]: image_columns[0]}, classes=classes)
    if len(image_columns) == 1 and split_by_label:
        for label in [c for c, f in columns.items() if _is_label(f)]:
            try:
                return _label_mapping(dataset, hub, image_columns[0], label, "", source)
            except UserError:
                continue
    raise UserError(ask)


def _label_is_class(feature: Any) -> bool:
    from datasets import ClassLabel

    return isinstance(feature, ClassLabel)


def _label_mapping(dataset: Any, hub: HubColumns, image: str, label: str, wanted: str, source: str) -> ColumnMapping:
    """Every role reads ``image`` on the rows of its value of ``label``: the values given (``wanted``), the
    family's folder names (``hub.train`` for training, ``hub.test`` for test rows), or the column's only
    values in their order."""
    roles = list(hub.roles)
    present = _label_values(dataset, label)
    text = [str(v) for v in present]
    if wanted:
        chosen = [v.strip() for v in wanted.split(",")]
        if len(chosen) != len(roles):
            raise UserError(f"{source}: column {label} has values {', '.join(text)}; name {len(roles)} of them: "
                            f"--domain-column {label}={','.join('VALUE_' + r.upper() for r in roles)}")
        missing = [v for v in chosen if v not in text]
        if missing:
            raise UserError(f"{source}: column {label} has no value {missing[0]!r}; it has {', '.join(text)}")
        return ColumnMapping(dict.fromkeys(roles, image), label,
                             {r: present[text.index(v)] for r, v in zip(roles, chosen, strict=True)})

    def named(folders: Mapping[str, str]) -> dict[str, Any] | None:
        found = {r: [v for v in present if str(v).lower() == folders.get(r, "").lower()] for r in roles}
        return {r: v[0] for r, v in found.items()} if all(len(v) == 1 for v in found.values()) else None

    train = named(hub.train)
    if train is not None:
        return ColumnMapping(dict.fromkeys(roles, image), label, train, named(hub.test))
    if len(present) == len(roles):
        return ColumnMapping(dict.fromkeys(roles, image), label, dict(zip(roles, present, strict=True)))
    raise UserError(f"{source}: column {label} has values {', '.join(text)}; name {len(roles)} of them: "
                    f"--domain-column {label}={','.join('VALUE_' + r.upper() for r in roles)}")


# --- loading and writing ---------------------------------------------------------------------------------------


def _import_datasets():
    try:
        import datasets
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return datasets


@contextmanager
def _datasets_quiet(quiet: bool) -> Iterator[None]:
    """Without progress: no progress bars and no notes (``Using the latest cached version ...``) from the
    ``datasets`` library, only its errors."""
    if not quiet:
        yield
        return
    from datasets.utils import logging as datasets_logging
    from datasets.utils.tqdm import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from huggingface_hub.utils import are_progress_bars_disabled as hub_bars_off
    from huggingface_hub.utils import disable_progress_bars as hub_disable
    from huggingface_hub.utils import enable_progress_bars as hub_enable

    level, bars_off, hub_off = datasets_logging.get_verbosity(), are_progress_bars_disabled(), hub_bars_off()
    datasets_logging.set_verbosity_error()
    disable_progress_bars()
    hub_disable()
    try:
        yield
    finally:
        datasets_logging.set_verbosity(level)
        if not bars_off:
            enable_progress_bars()
        if not hub_off:
            hub_enable()


def _load(spec: HubDatasetSpec, progress: bool) -> Any:
    """Every split of the dataset (a ``DatasetDict``), downloaded into the ``datasets`` cache once."""
    datasets = _import_datasets()
    from datasets.exceptions import DatasetNotFoundError

    try:
        with _datasets_quiet(not progress):
            return datasets.load_dataset(spec.repo_id, revision=spec.revision)
    except DatasetNotFoundError as exc:
        raise UserError(f"{spec}: {str(exc).splitlines()[0]}") from None
    except (OSError, ConnectionError) as exc:
        raise UserError(f"{spec}: cannot read the dataset ({str(exc).splitlines()[0]}); offline, it must be in "
                        "the datasets cache already") from None
    except ValueError as exc:  # a repo the loaders cannot make sense of
        raise UserError(f"{spec}: {str(exc).splitlines()[0]}") from None


def _suffix(cell: Mapping[str, Any], data: bytes | None) -> str:
    """The file suffix of an image cell: the format Pillow recognises in its bytes (a header read), else its
    own file name's, else .png (the family's scan then names the file as unreadable, as for a local folder)."""
    if data:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as img:
                if img.format in _FORMATS:
                    return _FORMATS[img.format]
        except (UnidentifiedImageError, OSError, ValueError):
            pass
    name = cell.get("path") or ""
    return Path(name).suffix.lower() if name and is_image_name(Path(name)) else ".png"


def _write_cell(cell: Mapping[str, Any] | None, folder: Path, stem: str) -> bool:
    """Write one image cell as ``folder/stem<suffix>`` (its bytes, or a copy of the file it points to);
    False for an empty cell."""
    if cell is None:
        return False
    data = cell.get("bytes")
    path = cell.get("path")
    if not data and not (path and os.path.isfile(path)):
        return False
    target = folder / f"{stem}{_suffix(cell, data)}"
    target.parent.mkdir(parents=True, exist_ok=True)
    if data:
        target.write_bytes(data)
    else:
        shutil.copyfile(path, target)
    return True


def _safe_name(value: Any) -> str:
    """A class value as a folder name (no separators, not hidden)."""
    text = re.sub(r"[/\\\x00]", "_", str(value)).strip() or "_"
    return "_" + text if text.startswith(".") else text


def _write_split(dataset: Any, mapping: ColumnMapping, hub: HubColumns, folders: Mapping[str, str],
                 values: Mapping[str, Any] | None, root: Path) -> int:
    """Write the images of ``dataset``'s rows (those of ``values`` when the roles come from a label column)
    into ``root/<folder of each role>``; returns the number of rows written."""
    from datasets import ClassLabel, Image

    used = list(dict.fromkeys([*mapping.images.values(), *([mapping.label] if mapping.label else []),
                               *([mapping.classes] if mapping.classes else [])]))
    rows = dataset.select_columns(used)
    for column in set(mapping.images.values()):
        if isinstance(rows.features[column], Image):
            rows = rows.cast_column(column, Image(decode=False))
    names = {}
    for column in (mapping.label, mapping.classes):
        if column and isinstance(rows.features[column], ClassLabel):
            names[column] = rows.features[column].names
    width = max(6, len(str(max(len(rows) - 1, 0))))
    required = [r for r in mapping.images if r not in hub.optional]
    written = 0
    index = 0
    for batch in rows.iter(batch_size=64):
        for i in range(len(batch[used[0]])):
            row, index = index, index + 1
            stem = f"{row:0{width}d}"
            if mapping.label is not None:
                label = _value(batch, mapping.label, i, names)
                role = next((r for r, v in (values or {}).items() if v == label), None)
                if role is not None and folders.get(role):
                    written += _write_cell(batch[mapping.images[role]][i], root / folders[role], stem)
                continue
            if mapping.classes is not None:
                cls = _value(batch, mapping.classes, i, names)
                stem = f"{_safe_name(cls)}/{stem}" if cls is not None else stem
            cells = {r: batch[c][i] for r, c in mapping.images.items() if folders.get(r)}
            if hub.paired and any(not _has_image(cells.get(r)) for r in required):
                continue  # one example per row: a row without one of its images is no example
            wrote = [_write_cell(cell, root / folders[r], stem) for r, cell in cells.items()]
            written += any(wrote)
    return written


def _value(batch: Mapping[str, list[Any]], column: str, i: int, names: Mapping[str, list[str]]) -> Any:
    """Row ``i``'s value of a label column, as its class name when it is a ClassLabel."""
    raw = batch[column][i]
    return names[column][raw] if column in names and raw is not None else raw


def _has_image(cell: Mapping[str, Any] | None) -> bool:
    return bool(cell) and bool(cell.get("bytes") or (cell.get("path") and os.path.isfile(cell["path"])))


def _cache_root() -> Path:
    import datasets.config

    return Path(datasets.config.HF_DATASETS_CACHE) / "ugatit-cli"


def hub_data_dir(source: str | HubDatasetSpec, family: Family, *, hyper: Any = None, split: str | None = None,
                 domain_columns: Sequence[str] = (), progress: bool = True) -> Path:
    """A local DATA_DIR in ``family``'s layout (for the hyper-parameters ``hyper``, when given: see
    :meth:`Family.hub_columns_for`) holding the images of the Hub dataset ``source``: ``split``
    (default ``train``) in its training folders, the ``test`` split (or the test rows of a label column) in
    its test folders (``progress``: the ``datasets`` library's bars and notes). Written once per dataset
    version and mapping (beside the ``datasets`` cache, under a
    temporary name and then renamed), reused after that, offline too.

    UserError: no ``datasets`` library, no such dataset or split, a family that does not train from Hub
    datasets, columns that cannot be mapped (one line listing them), no image of a required role.
    """
    spec = source if isinstance(source, HubDatasetSpec) else parse_hub_dataset(source)
    hub = family.hub_columns if hyper is None else family.hub_columns_for(hyper)
    if hub is None:
        raise UserError(f"{family.title} models do not train from Hub datasets; give a local DATA_DIR")
    split = split or "train"
    splits = _load(spec, progress)
    if split not in splits:
        raise UserError(f"{spec}: no split {split!r}; it has {', '.join(splits)}")
    train = splits[split]
    mapping = infer_mapping(train, hub, domain_columns, str(spec))
    test = None
    if mapping.test_values is None and split != TEST_SPLIT and TEST_SPLIT in splits and hub.test:
        candidate = splits[TEST_SPLIT]
        needed = {*mapping.images.values(), *([mapping.label] if mapping.label else [])}
        if needed <= set(candidate.column_names):
            test = candidate
    key = hashlib.sha256(json.dumps({
        "layout": LAYOUT_VERSION, "dataset": str(spec), "split": split, "train": _version(train),
        "test": _version(test) if test is not None else None, "mapping": asdict(mapping),
        "columns": {"train": dict(hub.train), "test": dict(hub.test), "paired": hub.paired},
    }, sort_keys=True, default=str).encode()).hexdigest()[:16]
    target = _cache_root() / spec.repo_id.replace("/", "--") / f"{family.name}-{split}-{key}"
    if target.is_dir():
        return target
    _write_layout(target, lambda root: _fill(root, spec, train, test, mapping, hub))
    return target


def _version(dataset: Any) -> Any:
    """What identifies this version of a split: the ``datasets`` fingerprint (a hash of how the Arrow files
    were made, the same online and offline), else the Arrow files themselves."""
    return getattr(dataset, "_fingerprint", None) or [f.get("filename") for f in dataset.cache_files]


def _fill(root: Path, spec: HubDatasetSpec, train: Any, test: Any, mapping: ColumnMapping, hub: HubColumns) -> None:
    for role, folder in hub.train.items():
        if role in mapping.images:
            (root / folder).mkdir(parents=True, exist_ok=True)
    _write_split(train, mapping, hub, hub.train, mapping.values, root)
    for role in mapping.images:
        if role in hub.optional:
            continue
        if not any(p.is_file() for p in (root / hub.train[role]).rglob("*")):
            raise UserError(f"{spec}: no image of {role} in column {mapping.images[role]}")
    if mapping.test_values is not None:
        _write_split(train, mapping, hub, hub.test, mapping.test_values, root)
    elif test is not None:
        _write_split(test, mapping, hub, hub.test, mapping.values, root)


def _write_layout(target: Path, fill) -> None:
    """``fill(folder)`` into a temporary sibling of ``target``, then rename it into place; when another
    process got there first, its (complete) folder is kept."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes it private; the result should be an ordinary folder
        fill(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
