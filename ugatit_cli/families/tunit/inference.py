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

import threading
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


class StyleLookup(nn.Module):
    """ONNX graph of the style codes: ``domain`` (B int64 in [0, K)) -> ``style`` (B x sty_dim)."""

    def __init__(self, styles: DomainStyles):
        super().__init__()
        self.register_buffer("styles", styles.styles.detach().clone())

    def forward(self, domain: torch.Tensor) -> torch.Tensor:
        return self.styles[domain]


class GuidingGraph(nn.Module):
    """ONNX graph of the guiding network: ``input`` (B x 3 x H x W in [-1, 1]) -> (``logits`` B x K,
    ``style`` B x sty_dim)."""

    def __init__(self, guiding: nn.Module):
        super().__init__()
        self.net = guiding

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(x)
        return out["disc"], out["cont"]


def reference_files(reference: str | Path) -> tuple[Path, list[Path]]:
    """``(root, files)``: a reference image is its own root; a folder gives its images (recursive, sorted).
    UserError when it does not exist or holds no image."""
    from .data import scan_images

    path = Path(reference)
    if path.is_file():
        return path.parent, [path]
    if not path.exists():
        raise UserError(f"{path}: --reference: no such image or folder")
    data = scan_images(path)
    return path, [data.path(i) for i in range(len(data.files))]


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
        if self.domain is not None:
            styles = model.nets.get("styles")
            k = model.config.k
            if not 0 <= self.domain < k:
                raise UserError(f"--domain {self.domain}: this model has pseudo-domains 0 to {k - 1}")
            known = styles.known() if styles is not None else []
            if self.domain not in known:
                why = (f"domains with style codes: {', '.join(map(str, known))}" if known else
                       "it stores no domain style codes (official checkpoints hold none); use --reference")
                raise UserError(f"--domain {self.domain}: no training image fell into this pseudo-domain, so it has "
                                f"no style code; {why}")
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
                    x = pixels_to_tensor(pixels).to(next(self.guiding.parameters()).dtype)
                    codes.append(self.guiding(x, sty=True))
                self._codes = torch.cat(codes)
            return self._codes

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
