"""pix2pixHD inputs: label and instance maps, the official dataset layout, the official transforms.

Source: NVIDIA/pix2pixHD ``data/aligned_dataset.py``, ``data/base_dataset.py``, ``models/pix2pixHD_model.py``
(``encode_input``, ``get_edges``). Facts that decide parity:

- Layout: ``{phase}_label/`` (class-id maps) + ``{phase}_img/`` (photos) + ``{phase}_inst/`` (instance-id maps,
  unless ``no_instance``); with ``label_nc`` 0 ``{phase}_A/`` (input photos) + ``{phase}_B/``. The official loader
  pairs the sorted file lists by position, and so does this module; when the counts differ, names are
  compared (each folder's common trailing part removed, so Cityscapes' ``*_gtFine_labelIds.png`` meets
  ``*_leftImg8bit.png``) to name the files without partner, before anything runs.
- Label map: one channel of class ids (PNG mode L, P, I or I;16); resized NEAREST; one-hot by scatter into
  ``label_nc`` channels (an id >= label_nc has no channel: rejected before training, named with its file).
- Instance map -> edge map: a pixel is 1 where its id differs from its right or lower neighbour, marked on
  both pixels of the pair (4-neighbourhood), else 0; one channel after the one-hot labels. Resized NEAREST.
- Photos: RGB, BICUBIC resize, ``ToTensor`` + ``Normalize(0.5, 0.5)`` -> [-1, 1].
- Training transform (``resize_or_crop``, default ``scale_width``): scale the width to ``load_size`` (height
  ``int(load_size * h / w)``), or ``resize_and_crop`` (``load_size`` square then a random ``fine_size`` crop),
  ``crop`` (random ``fine_size`` crop), ``scale_width_and_crop``; then a horizontal flip with probability 0.5
  unless ``no_flip``; one draw of crop and flip per sample shared by its label, instance map and photo.
- Test transform (``resize_or_crop none``): each side to the nearest multiple of the generator's side multiple
  (Python ``round``: halves go to even), labels and instance maps NEAREST, photos BICUBIC.
- Differences, chosen: instance maps are always resized NEAREST (with ``label_nc`` 0 the official code resizes
  them BICUBIC, creating ids that exist nowhere); instance ids are read as integers whatever the PNG mode (the
  official encoder compares 8-bit maps, which ``ToTensor`` scales to [0, 1], with integer ids).

Reading id maps and translation's inputs is :mod:`.maps` (NumPy, no torch: a stored ONNX graph translates
without it); the ``prepare_*`` functions here are its arrays as tensors.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ...core.images import BadImageError, image_to_tensor, is_image_name, open_rgb, walk_once
from ...errors import UserError
from .config import Pix2PixHDConfig, Pix2PixHDTrainConfig
from .maps import instance_array, label_array, photo_array, read_id_map, resize_ids

MAX_LISTED = 5  # problems of one kind named in an error before "and N more"


# --- model inputs ---------------------------------------------------------------------------------------------


def one_hot(label: torch.Tensor, label_nc: int) -> torch.Tensor:
    """Class ids ``(B, 1, H, W)`` (integers in [0, label_nc)) -> float one-hot ``(B, label_nc, H, W)``.

    Official ``encode_input``: ``zeros(...).scatter_(1, label, 1.0)``. Ids outside the range raise ``ValueError``.
    """
    label = label.long()
    if label.numel() and (int(label.min()) < 0 or int(label.max()) >= label_nc):
        raise ValueError(f"label ids must be in [0, {label_nc}), found {int(label.min())}..{int(label.max())}")
    b, _, h, w = label.shape
    return torch.zeros(b, label_nc, h, w, device=label.device).scatter_(1, label, 1.0)


def edge_map(inst: torch.Tensor) -> torch.Tensor:
    """Instance ids ``(B, 1, H, W)`` -> float edges ``(B, 1, H, W)``: 1 where a pixel's id differs from a
    4-neighbour's (both pixels of each differing pair marked), else 0. Official ``get_edges``."""
    edge = torch.zeros(inst.shape, dtype=torch.bool, device=inst.device)
    horizontal = inst[..., :, 1:] != inst[..., :, :-1]
    vertical = inst[..., 1:, :] != inst[..., :-1, :]
    edge[..., :, 1:] |= horizontal
    edge[..., :, :-1] |= horizontal
    edge[..., 1:, :] |= vertical
    edge[..., :-1, :] |= vertical
    return edge.float()


def encode_input(config: Pix2PixHDConfig, label: torch.Tensor, inst: torch.Tensor | None) -> torch.Tensor:
    """G's and D's conditioning input: one-hot labels (or the RGB input for label_nc 0) + the edge map.

    ``label``: ``(B, 1, H, W)`` ids, or ``(B, input_nc, H, W)`` in [-1, 1] when label_nc is 0; ``inst``:
    ``(B, 1, H, W)`` ids, required unless ``no_instance``.
    """
    x = label.float() if config.label_nc == 0 else one_hot(label, config.label_nc)
    if not config.no_instance:
        if inst is None:
            raise ValueError("this model takes instance maps (no_instance is off) and none was given")
        x = torch.cat([x, edge_map(inst).to(x.dtype)], dim=1)
    return x


# --- the dataset layout ---------------------------------------------------------------------------------------


def folder_names(config: Pix2PixHDConfig, phase: str) -> dict[str, str]:
    """The official folders of ``phase``: role (label, image, inst) -> folder name."""
    names = {"label": f"{phase}_A" if config.label_nc == 0 else f"{phase}_label",
             "image": f"{phase}_B" if config.label_nc == 0 else f"{phase}_img"}
    if not config.no_instance:
        names["inst"] = f"{phase}_inst"
    return names


def _image_files(folder: Path) -> list[Path]:
    files = []
    for root, _, names in walk_once(folder):  # links that loop are walked once
        files += [Path(root) / n for n in sorted(names) if not n.startswith(".") and is_image_name(Path(n))]
    return files


def _pair_keys(folder: Path, files: Sequence[Path]) -> list[str]:
    """Each file's name key: its path below ``folder`` without suffix and, in a folder of several files, without
    the trailing part all its names share from a separator on (``_gtFine_labelIds``, ``_leftImg8bit``)."""
    stems = [f.relative_to(folder).with_suffix("").as_posix() for f in files]
    if len(stems) < 2:
        return stems
    common = os.path.commonprefix([s[::-1] for s in stems])[::-1]
    for i in range(len(common), 0, -1):
        if common[-i] in "_-. " and all(len(s) > i for s in stems):
            return [s[:-i] for s in stems]
    return stems


def _partners(keys: Sequence[str], other_keys: Sequence[str]) -> list[int | None]:
    """For each of ``keys``, the index of the first of ``other_keys`` it starts or prefixes; None: no partner."""
    return [next((j for j, o in enumerate(other_keys) if o.startswith(k) or k.startswith(o)), None) for k in keys]


@dataclass(frozen=True)
class Sample:
    """One training or test example: its files, its size (width, height) and its label ids' range."""

    label: Path
    image: Path | None
    inst: Path | None
    size: tuple[int, int]
    label_range: tuple[int, int] | None = None  # (min, max) id of the label map; None for RGB inputs


@dataclass(frozen=True)
class DataProblem:
    """One thing wrong with a dataset: its ``kind`` (problems are listed by kind), ``text``, the file
    (relative to the data folder) and the reason, and ``role``, the folder kind it concerns ("inst" for
    instance maps, which settings may leave unused)."""

    kind: str
    text: str
    role: str = "label"


NO_PARTNER = "files without a partner"
UNREADABLE = "unreadable files"
SIZE_MISMATCH = "sizes that differ from the label map's"
LABEL_IDS = "label ids >= label_nc"
TRAINING_SIZE = "sizes the training transform cannot use"


def raise_problems(root: str | os.PathLike, problems: Sequence[DataProblem]) -> None:
    """Raise one :class:`UserError` listing ``problems`` (when there are any) as a block: a headline with the
    count, then per kind its count and its first ``MAX_LISTED`` files with their reasons, one a line."""
    if not problems:
        return
    kinds: dict[str, list[str]] = {}
    for problem in problems:
        kinds.setdefault(problem.kind, []).append(problem.text)
    lines = [f"{root}: {len(problems)} problem(s) in the data (all of them; fix these, then run again):"]
    for kind, texts in kinds.items():
        lines += [f"  {kind} ({len(texts)}):", *(f"    {text}" for text in texts[:MAX_LISTED])]
        lines += [f"    and {len(texts) - MAX_LISTED} more"] if len(texts) > MAX_LISTED else []
    raise UserError("\n".join(lines))


def scan_dataset(root: str | os.PathLike, config: Pix2PixHDConfig, phase: str = "train",
                 need_images: bool = True, problems: list[DataProblem] | None = None) -> list[Sample]:
    """Pair and check every file of ``root/{phase}_*`` before anything runs.

    Every label map is decoded (ids must be < label_nc), photos and instance maps are opened (their size must be
    the label map's). Every problem is found in one pass: files without partner (folders of different counts
    are paired by name for the other checks), unreadable files, out-of-range ids, size mismatches. They are
    appended to ``problems`` when given, else raised as one :class:`UserError` block (:func:`raise_problems`).
    A missing folder or an empty label folder raises at once. Returns the samples whose label map and photo
    have no problem (a bad instance map matters only to settings that use them), in the order of their label
    files.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such data folder")
    names = folder_names(config, phase)
    if not need_images:
        names.pop("image")
    for role, name in names.items():
        if not (root / name).is_dir():
            expected = " ".join(f"{n}/" for n in names.values())
            hint = "" if role != "inst" else " (or train without instance maps: --no-instance)"
            raise UserError(f"{root / name}: no such folder; a pix2pixHD dataset holds {expected}{hint}")
    files = {role: _image_files(root / name) for role, name in names.items()}
    if not files["label"]:
        raise UserError(f"{root / names['label']}: folder contains no images")
    found: list[DataProblem] = []
    partner: dict[str, list[int | None]] = {}  # role -> for each label map, the index of its file
    for role in files.keys() - {"label"}:
        if len(files[role]) == len(files["label"]):
            partner[role] = list(range(len(files["label"])))  # paired by sorted position, as the official loader
            continue
        keys = {r: _pair_keys(root / names[r], files[r]) for r in ("label", role)}
        partner[role] = _partners(keys["label"], keys[role])
        unpaired = [(files["label"][i], role) for i, j in enumerate(partner[role]) if j is None]
        unpaired += [(files[role][j], "label") for j, i in enumerate(_partners(keys[role], keys["label"]))
                     if i is None]
        found += [DataProblem(NO_PARTNER, f"{_rel(root, path)}: no partner in {names[other]}/", role)
                  for path, other in sorted(unpaired)]
        if not unpaired:
            found.append(DataProblem(NO_PARTNER, f"{names['label']}/ has {len(files['label'])} files but "
                                                 f"{names[role]}/ has {len(files[role])}; label maps and {role} "
                                                 f"files are paired in sorted order", role))
            partner[role] = [None] * len(files["label"])

    samples = []
    for i, label_path in enumerate(files["label"]):
        paths = {role: files[role][partner[role][i]] if partner[role][i] is not None else None for role in partner}
        bad = {role for role in partner if paths[role] is None}  # roles whose file is missing or bad
        label_range = None
        try:
            if config.label_nc == 0:
                size = open_rgb(label_path).size
            else:
                ids = read_id_map(label_path, "label map")
                size = (ids.shape[1], ids.shape[0])
                label_range = (int(ids.min()), int(ids.max()))
                if ids.min() < 0 or ids.max() >= config.label_nc:
                    found.append(DataProblem(LABEL_IDS, _id_reason(root, label_path, label_range, config.label_nc)))
                    bad.add("label")
        except BadImageError as exc:
            found.append(DataProblem(UNREADABLE, f"{_rel(root, Path(exc.path))}: {exc.reason}"))
            bad.add("label")
            size = None
        for role, reader in (("image", lambda p: open_rgb(p).size),
                             ("inst", lambda p: read_id_map(p, "instance map").shape[::-1])):
            path = paths.get(role)
            if path is None:
                continue
            try:
                other = tuple(reader(path))
            except BadImageError as exc:
                found.append(DataProblem(UNREADABLE, f"{_rel(root, Path(exc.path))}: {exc.reason}", role))
                bad.add(role)
                continue
            if size is not None and other != size:
                found.append(DataProblem(SIZE_MISMATCH, f"{_rel(root, path)}: {other[0]}x{other[1]} but its label "
                                                        f"map {_rel(root, label_path)} is {size[0]}x{size[1]}", role))
                bad.add(role)
        if not bad - {"inst"}:  # a bad instance map is a problem only for settings that use them (check_data)
            samples.append(Sample(label_path, paths.get("image"), paths.get("inst"), size, label_range))
    if problems is None:
        raise_problems(root, found)
    else:
        problems += found
    return samples


def _id_reason(root: Path, label: Path, label_range: tuple[int, int], label_nc: int) -> str:
    return f"{_rel(root, label)}: label ids {label_range[0]}..{label_range[1]} but label_nc is {label_nc}"


def label_id_problems(samples: Sequence[Sample], label_nc: int, root: str | os.PathLike) -> list[DataProblem]:
    """The label maps (from a scan) whose ids are not in [0, label_nc)."""
    return [DataProblem(LABEL_IDS, _id_reason(Path(root), s.label, s.label_range, label_nc)) for s in samples
            if s.label_range is not None and (s.label_range[0] < 0 or s.label_range[1] >= label_nc)]


def _rel(root: Path, path: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


# --- transforms -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransformParams:
    """One draw of the official ``get_params``: the resized size, the crop corner and the flip."""

    resized: tuple[int, int]  # (width, height) after the resize step
    crop: tuple[int, int] | None  # (x, y) of the fine_size crop, None without crop
    flip: bool


def resized_size(train: Pix2PixHDTrainConfig, size: tuple[int, int]) -> tuple[int, int]:
    """(width, height) after the resize step of ``resize_or_crop`` (official ``get_transform``)."""
    w, h = size
    mode = train.resize_or_crop
    if "resize" in mode:
        return train.load_size, train.load_size
    if "scale_width" in mode:
        return (w, h) if w == train.load_size else (train.load_size, int(train.load_size * h / w))
    if mode == "none":
        rh, rw = train.model.rounded_size(h, w)
        return rw, rh
    return w, h


def output_size(train: Pix2PixHDTrainConfig, size: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of a training sample of this size after the whole transform."""
    w, h = resized_size(train, size)
    if "crop" in train.resize_or_crop and (w > train.fine_size or h > train.fine_size):
        return train.fine_size, train.fine_size
    return w, h


def training_size_problems(train: Pix2PixHDTrainConfig, samples: Sequence[Sample], root: str | os.PathLike
                           ) -> list[DataProblem]:
    """The files whose transformed size the generator cannot take, or sizes that cannot share a batch
    (batch_size > 1 needs one size)."""
    problems = []
    sizes = set()
    m = train.model.size_multiple
    for s in samples:
        w, h = output_size(train, s.size)
        if "crop" in train.resize_or_crop and (w, h) != (train.fine_size, train.fine_size):
            problems.append(DataProblem(TRAINING_SIZE, f"{_rel(Path(root), s.label)}: {s.size[0]}x{s.size[1]} "
                                                       f"becomes {w}x{h}, smaller than the {train.fine_size} px crop"))
        elif w % m or h % m or w < m or h < m:
            problems.append(DataProblem(TRAINING_SIZE, f"{_rel(Path(root), s.label)}: {s.size[0]}x{s.size[1]} "
                                                       f"becomes {w}x{h} with resize_or_crop {train.resize_or_crop}; "
                                                       f"the generator needs multiples of {m}"))
        sizes.add((w, h))
    if not problems and train.batch_size > 1 and len(sizes) > 1:
        listed = ", ".join(f"{w}x{h}" for w, h in sorted(sizes))
        problems.append(DataProblem(TRAINING_SIZE, f"images of several sizes ({listed}) after resize_or_crop "
                                                   f"{train.resize_or_crop} cannot share a batch of "
                                                   f"{train.batch_size}; use --batch-size 1 or a crop"))
    return problems


def draw_params(train: Pix2PixHDTrainConfig, size: tuple[int, int], rng: np.random.Generator) -> TransformParams:
    """Official ``get_params``: crop corner uniform in [0, resized - fine_size] per axis, flip with p 0.5."""
    w, h = resized_size(train, size)
    x = int(rng.integers(0, max(0, w - train.fine_size) + 1))
    y = int(rng.integers(0, max(0, h - train.fine_size) + 1))
    flip = bool(rng.random() > 0.5) and not train.no_flip
    crop = (x, y) if "crop" in train.resize_or_crop and (w > train.fine_size or h > train.fine_size) else None
    return TransformParams((w, h), crop, flip)


def _geometry_ids(ids: np.ndarray, params: TransformParams, fine: int) -> np.ndarray:
    ids = resize_ids(ids, params.resized)
    if params.crop is not None:
        x, y = params.crop
        ids = ids[y:y + fine, x:x + fine]
    return np.ascontiguousarray(ids[:, ::-1]) if params.flip else ids


def _geometry_rgb(img: Image.Image, params: TransformParams, fine: int) -> Image.Image:
    if img.size != params.resized:
        img = img.resize(params.resized, Image.Resampling.BICUBIC)
    if params.crop is not None:
        x, y = params.crop
        img = img.crop((x, y, x + fine, y + fine))
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if params.flip else img


def load_sample(train: Pix2PixHDTrainConfig, sample: Sample, params: TransformParams) -> dict[str, torch.Tensor]:
    """One sample through the training transform: ``label`` (1, H, W) int64 ids or (3, H, W) in [-1, 1] for
    label_nc 0, ``image`` (3, H, W) in [-1, 1], and ``inst`` (1, H, W) int64 ids when instance maps are used."""
    fine = train.fine_size
    out: dict[str, torch.Tensor] = {}
    if train.model.label_nc == 0:
        out["label"] = image_to_tensor(_geometry_rgb(open_rgb(sample.label), params, fine))
    else:
        out["label"] = torch.from_numpy(_geometry_ids(read_id_map(sample.label), params, fine).copy())[None]
    if sample.image is not None:
        out["image"] = image_to_tensor(_geometry_rgb(open_rgb(sample.image), params, fine))
    if sample.inst is not None:
        out["inst"] = torch.from_numpy(_geometry_ids(read_id_map(sample.inst, "instance map"), params,
                                                     fine).copy())[None]
    return out


def _seed(*parts: int) -> np.random.Generator:
    return np.random.default_rng([int(p) for p in parts])


class PairedBatches(torch.utils.data.Dataset):
    """Item ``k`` is the batch of training iteration ``k`` (0-based) on this rank: a dict of stacked tensors
    (``label``, ``image``, ``inst`` as :func:`load_sample` gives them).

    Every epoch is a permutation of the samples seeded from (seed, epoch), each sample's crop and flip from
    (seed, epoch, position): a resumed run continues exactly, whatever the number of loader workers. With
    ``world_size`` ranks, rank ``r`` takes positions ``r, r + world_size, ...``; the last batch of an epoch may
    be smaller (as the official loader's).
    """

    def __init__(self, train: Pix2PixHDTrainConfig, samples: Sequence[Sample], rank: int = 0, world_size: int = 1):
        if not samples:
            raise UserError("no training samples")
        self.train, self.samples = train, list(samples)
        self.rank, self.world_size = rank, world_size
        self.per_rank = math.ceil(len(self.samples) / world_size)
        self.batches_per_epoch = math.ceil(self.per_rank / train.batch_size)

    def __len__(self) -> int:  # iterations are unbounded; a sampler picks them
        return 2**62

    def __getitem__(self, iteration: int) -> dict[str, torch.Tensor]:
        epoch, batch = divmod(int(iteration), self.batches_per_epoch)
        order = _seed(self.train.seed, epoch).permutation(len(self.samples))
        mine = range(self.rank, self.per_rank * self.world_size, self.world_size)
        positions = mine[batch * self.train.batch_size:(batch + 1) * self.train.batch_size]
        items = []
        for position in positions:
            sample = self.samples[int(order[position % len(self.samples)])]
            params = draw_params(self.train, sample.size, _seed(self.train.seed, epoch, position))
            items.append(load_sample(self.train, sample, params))
        return {key: torch.stack([item[key] for item in items]) for key in items[0]}


# --- inference inputs -------------------------------------------------------------------------------------------


def prepare_label(config: Pix2PixHDConfig, path: str | os.PathLike, size: tuple[int, int] | None = None
                  ) -> tuple[torch.Tensor, tuple[int, int]]:
    """:func:`.maps.label_array` as a batch of one: (``(1, 1, H, W)`` int64 ids, or ``(1, 3, H, W)`` in [-1, 1]
    for label_nc 0; its original (width, height)). Raises :class:`BadImageError` for unreadable files and ids
    >= label_nc."""
    label, original = label_array(config, path, size)
    return torch.from_numpy(label)[None], original


def prepare_instance(path: str | os.PathLike, size: tuple[int, int]) -> torch.Tensor:
    """An instance map file -> ``(1, 1, H, W)`` int64 ids at ``size`` (NEAREST; :func:`.maps.instance_array`)."""
    return torch.from_numpy(instance_array(path, size))[None]


def prepare_photo(path: str | os.PathLike, size: tuple[int, int]) -> torch.Tensor:
    """A photo -> ``(1, 3, H, W)`` in [-1, 1] at ``size`` (BICUBIC, as the official test transform;
    :func:`.maps.photo_array`)."""
    return torch.from_numpy(photo_array(path, size))[None]
