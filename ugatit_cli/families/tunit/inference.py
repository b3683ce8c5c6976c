"""TUNIT inference: the per-domain style codes a model folder stores, the translator of ``ugatit translate``
(into the style of reference images or of a pseudo-domain), the domain assigner of ``ugatit cluster`` and the
graphs of the ONNX export.

A translation is the official ``G_EMA(x, C_EMA(ref, sty=True))`` (clovaai/tunit ``validation/validation.py``),
or ``G_EMA.decode(G_EMA.cnt_encoder(x), s_k)`` with ``s_k`` the mean style code of pseudo-domain k (the
official "AVG" rows). Inputs and references go through the official test transform (RGB, bilinear resize to
size x size, [-1, 1]); the networks run in eval mode (batch norm with running statistics), so an image's
style code and domain do not depend on the batch it is in.
"""

from __future__ import annotations

import functools
import threading
import warnings
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...core.images import BadImageError, open_rgb, pixels_to_tensor, resized_pixels
from ...errors import UserError
from ..base import DomainAssigner, OutputSpec, Translator

#: references whose style codes one forward pass of the guiding network computes
REFERENCE_BATCH = 32


class DomainStyles(nn.Module):
    """Per-domain mean style codes: ``styles`` K x sty_dim (float) and ``counts`` K (int64, training images
    the code averages; 0: unknown, e.g. a model converted from an official checkpoint)."""

    def __init__(self, k: int, sty_dim: int):
        super().__init__()
        self.register_buffer("styles", torch.zeros(k, sty_dim))
        self.register_buffer("counts", torch.zeros(k, dtype=torch.long))

    def known(self) -> list[int]:
        return [i for i, n in enumerate(self.counts.tolist()) if n > 0]


class GuidingGraph(nn.Module):
    """ONNX graph of the guiding network: ``input`` (B x 3 x H x W in [-1, 1]) -> (``logits`` B x K,
    ``style`` B x sty_dim)."""

    def __init__(self, guiding: nn.Module):
        super().__init__()
        self.net = guiding

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(x)
        return out["disc"], out["cont"]


class OnnxGuiding(nn.Module):
    """The guiding network of an ONNX export folder (``guiding_network.onnx``, see :class:`GuidingGraph`),
    called like :class:`~ugatit_cli.families.tunit.networks.GuidingNetwork`: ``x`` (B x 3 x H x W in [-1, 1])
    -> ``{"disc": logits B x K, "cont": style B x sty_dim}``, or the style codes with ``sty=True``. ``run``
    runs the graph (ONNX Runtime, CPU): input name -> tensor to output name -> tensor."""

    def __init__(self, run: Any):
        super().__init__()
        self.run = run

    def forward(self, x: torch.Tensor, sty: bool = False) -> Any:
        out = self.run({"input": x.float()})
        return out["style"] if sty else {"disc": out["logits"], "cont": out["style"]}


def _dtype(module: nn.Module) -> torch.dtype:
    """The dtype of a module's weights (float32 for one that holds none: an ONNX graph's wrapper)."""
    return next((p.dtype for p in module.parameters()), torch.float32)


def styles_from_folder(model: Any, folder: str | Path) -> DomainStyles:
    """The mean style code of each pseudo-domain over the images of ``folder`` (recursive, or one image file; at most
    :data:`~ugatit_cli.families.tunit.training.STYLE_IMAGES`, evenly spaced; unreadable files passed over),
    computed as training computes a checkpoint's: the model's guiding network (C_EMA) in eval mode assigns
    each image to the ``argmax`` of its logits and its style codes are averaged per domain
    (:func:`~ugatit_cli.families.tunit.training.compute_domain_styles`). For models that store no codes (official
    checkpoints). A domain no image falls into gets count 0. UserError naming ``folder`` when it is no folder,
    holds no image or none can be read."""
    from .data import TunitData, scan_images
    from .training import compute_domain_styles

    if "guiding" not in model.nets:
        raise UserError("--style-data needs the model's guiding network (its style encoder)")
    path = Path(folder)
    # one image also does (the demo uploads files): the code of its own domain
    data = TunitData(path.parent, [path.name]) if path.is_file() else scan_images(path)
    config = model.config
    try:
        styles, counts = compute_domain_styles(model.nets["guiding"], data, config.size, config.k)
    except ValueError:  # not one image could be decoded
        raise UserError(f"{folder}: --style-data: none of its {len(data.files)} image(s) can be read") from None
    out = DomainStyles(config.k, config.sty_dim).eval()
    out.styles.copy_(styles)
    out.counts.copy_(counts)
    return out


def reference_files(reference: str | Path) -> tuple[Path, list[Path]]:
    """``(root, files)``: a reference image is its own root; a folder gives its readable images (recursive,
    sorted). A folder's unreadable images are left out with one warning each (once per file version); UserError
    when the path does not exist, the image (or every image of the folder) cannot be read, or the folder holds
    no image."""
    from .data import scan_images

    path = Path(reference)
    if path.is_file():
        if (problem := _unreadable(path)) is not None:
            raise UserError(f"{path}: --reference: {problem}")
        return path.parent, [path]
    if not path.exists():
        raise UserError(f"{path}: --reference: no such image or folder")
    data = scan_images(path)
    files = [data.path(i) for i in range(len(data.files))]
    readable = [f for f in files if _unreadable(f) is None]
    if not readable:
        raise UserError(f"{path}: --reference: none of its {len(files)} images can be read (first: {files[0]}: "
                        f"{_unreadable(files[0])})")
    return path, readable


def _unreadable(path: Path) -> str | None:
    """Why ``path`` cannot serve as a reference, or None; decoded once per file version (size, mtime)."""
    try:
        stat = path.stat()
    except OSError as exc:
        return f"cannot read ({exc.strerror or exc})"
    return _decode_problem(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _decode_problem(path: str, size: int, mtime_ns: int) -> str | None:
    try:
        open_rgb(path)
    except BadImageError as exc:
        warnings.warn(f"{path}: reference image left out: {exc.reason}", stacklevel=3)
        return exc.reason
    return None


def reference_specs(reference: str | Path) -> tuple[OutputSpec, ...]:
    """The files written per input with ``--reference``: one image for one reference file; for a folder one
    per reference, ``<input>_<reference>.png`` (the reference's path in the folder, ``/`` as ``-``)."""
    root, files = reference_files(reference)
    if Path(reference).is_file():
        return (OutputSpec("image"),)
    names = [f.relative_to(root).with_suffix("").as_posix().replace("/", "-") for f in files]
    if len(set(names)) < len(names):  # a.jpg and a.png: keep the extension
        names = [f.relative_to(root).as_posix().replace("/", "-") for f in files]
    return tuple(OutputSpec(f"ref{i}", f"_{name}") for i, name in enumerate(names))


def read_pixels(path: Path, size: int) -> np.ndarray:
    """The official test transform's pixels of ``path`` (uint8 size x size x 3); BadImageError naming it."""
    return resized_pixels(open_rgb(path), size)


class TunitTranslator(Translator):
    """Translate into the style of references (``reference``: one image, or a folder: every pair, or with
    ``round_robin`` one reference per input) or of pseudo-domain ``domain``."""

    def __init__(self, model: Any, size: int, options: Mapping[str, Any]):
        self.generator = model.nets["generator"]
        self.guiding = model.nets.get("guiding")
        self._size = size
        self.reference = options.get("reference")
        self.round_robin = bool(options.get("round_robin"))
        self.domain = options.get("domain")
        self.style: torch.Tensor | None = None
        self.references: list[Path] = []
        self._codes: torch.Tensor | None = None
        self._lock = threading.Lock()
        style_data = options.get("style_data")
        if style_data is not None and self.domain is None:
            raise UserError("--style-data applies to --domain K (it computes the pseudo-domains' style codes)")
        if self.domain is not None:
            k = model.config.k
            if not 0 <= self.domain < k:
                raise UserError(f"--domain {self.domain}: this model has pseudo-domains 0 to {k - 1}")
            styles = model.nets.get("styles") if style_data is None else styles_from_folder(model, style_data)
            known = styles.known() if styles is not None else []
            if self.domain not in known and style_data is not None:
                raise UserError(f"--domain {self.domain}: none of the images of {style_data} falls into this "
                                f"pseudo-domain, so it has no style code there (domains with images there: "
                                f"{', '.join(map(str, known))})")
            if not known:
                raise UserError(f"--domain {self.domain}: the model stores no per-domain style codes (official "
                                f"checkpoints hold none): compute them from a folder of images with --style-data "
                                f"DIR, or use --reference")
            if self.domain not in known:
                raise UserError(f"--domain {self.domain}: no image fell into this pseudo-domain when the model's "
                                f"style codes were computed, so it has no style code; domains with style codes: "
                                f"{', '.join(map(str, known))}")
            self.style = styles.styles[self.domain].detach().clone()
            self.outputs = (OutputSpec("image"),)
        else:
            if self.guiding is None:
                raise UserError("--reference needs the model's guiding network (its style encoder)")
            _, self.references = reference_files(self.reference)
            self.outputs = (OutputSpec("image"),) if self.round_robin else reference_specs(self.reference)

    @property
    def size(self) -> int:
        return self._size

    def modules(self) -> Sequence[nn.Module]:
        return [self.generator] + ([self.guiding] if self.guiding is not None else [])

    def prepare(self, source: Path, pixels: Any) -> dict[str, Any]:
        if not self.round_robin:
            return {}
        # the same reference for an input whatever the order or threads: a hash of its path picks it
        pick = zlib.crc32(str(source).encode("utf-8")) % len(self.references)
        try:
            return {"reference": read_pixels(self.references[pick], self.size)}
        except BadImageError as exc:
            raise BadImageError(source, f"its reference {exc.path}: {exc.reason}") from None

    def _reference_codes(self, device: torch.device) -> torch.Tensor:
        """Style codes of every reference (computed once, on the first batch's device)."""
        with self._lock:
            if self._codes is None:
                codes = []
                for start in range(0, len(self.references), REFERENCE_BATCH):
                    chunk = self.references[start:start + REFERENCE_BATCH]
                    pixels = torch.from_numpy(np.stack([read_pixels(p, self.size) for p in chunk])).to(device)
                    x = pixels_to_tensor(pixels).to(_dtype(self.guiding))
                    codes.append(self.guiding(x, sty=True).to(device))
                self._codes = torch.cat(codes)
            return self._codes

    def styles(self, x: torch.Tensor, extras: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        """The style codes of a batch ``x`` (B x 3 x H x W): one B x sty_dim tensor per :attr:`outputs` entry
        (the pseudo-domain's code, each input's round-robin reference's, or each reference's)."""
        batch = x.shape[0]
        if self.style is not None:
            return [self.style.to(x.device, x.dtype).expand(batch, -1)]
        if self.round_robin:
            return [self.guiding(pixels_to_tensor(extras["reference"]).to(x.dtype), sty=True).to(x.device, x.dtype)]
        try:
            codes = self._reference_codes(x.device)
        except BadImageError as exc:
            raise UserError(f"{exc.path}: reference image: {exc.reason}") from None
        return [codes[i:i + 1].to(x.dtype).expand(batch, -1) for i in range(len(self.outputs))]

    def can_feed_onnx(self, input_names: Sequence[str]) -> bool:
        return set(input_names) == {"input", "style"}

    def onnx_feeds(self, x, extras, input_names):
        """The generator graph's ``input`` and ``style``; with several references the batch is repeated once
        per reference (reference-major), so one run gives every output (:meth:`onnx_outputs` splits it)."""
        if not self.can_feed_onnx(input_names):
            return super().onnx_feeds(x, extras, input_names)
        styles = self.styles(x, extras)
        return {"input": x.repeat(len(styles), 1, 1, 1) if len(styles) > 1 else x, "style": torch.cat(styles)}

    def onnx_outputs(self, results):
        if "image" not in results:
            return super().onnx_outputs(results)
        images = results["image"]
        per = images.shape[0] // len(self.outputs)
        return {spec.key: images[i * per:(i + 1) * per] for i, spec in enumerate(self.outputs)}

    def forward(self, x, extras):
        g = self.generator
        content = g.cnt_encoder(x)
        batch = x.shape[0]
        if self.style is not None:
            style = self.style.to(x.device, content.dtype).expand(batch, -1)
            return {"image": g.decode(content, style)}
        if self.round_robin:
            style = self.guiding(pixels_to_tensor(extras["reference"]).to(x.dtype), sty=True)
            return {"image": g.decode(content, style)}
        try:
            codes = self._reference_codes(x.device)
        except BadImageError as exc:
            raise UserError(f"{exc.path}: reference image: {exc.reason}") from None
        return {spec.key: g.decode(content, codes[i:i + 1].expand(batch, -1))
                for i, spec in enumerate(self.outputs)}


class TunitAssigner(DomainAssigner):
    """Pseudo-domain probabilities of images: softmax of the guiding network's logits (eval mode)."""

    def __init__(self, guiding: nn.Module, k: int, size: int):
        self.guiding, self.k, self._size = guiding, k, size

    @property
    def size(self) -> int:
        return self._size

    def modules(self) -> Sequence[nn.Module]:
        return [self.guiding]

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.guiding(x)["disc"].float(), 1)
