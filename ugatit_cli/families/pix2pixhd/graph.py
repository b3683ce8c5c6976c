"""The pix2pixHD generator as one graph from label ids (and instance ids) to the image, for ONNX export.

The one-hot encoding and the edge map are the graph's first operations (comparisons and slices, which every
ONNX runtime has), so an exported model takes what a user has: the label-id image. Same values as
:func:`.data.encode_input` followed by the generator.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import Pix2PixHDConfig


class LabelToImage(nn.Module):
    """``forward(label, inst=None, feat=None)``: ``label`` ``(B, 1, H, W)`` float class ids (``(B, input_nc, H, W)``
    in [-1, 1] for label_nc 0), ``inst`` ``(B, 1, H, W)`` float instance ids (unless ``no_instance``), ``feat``
    ``(B, feat_num, H, W)`` instance features (models with features) -> ``(B, output_nc, H, W)`` in [-1, 1]."""

    def __init__(self, config: Pix2PixHDConfig, net_g: nn.Module):
        super().__init__()
        self.config = config
        self.net_g = net_g
        self.register_buffer("classes", torch.arange(max(config.label_nc, 1), dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)

    @staticmethod
    def edges(inst: torch.Tensor) -> torch.Tensor:
        """The official 4-neighbour edge map, written with pads instead of in-place slice updates."""
        dx = (inst[..., :, 1:] != inst[..., :, :-1]).float()
        dy = (inst[..., 1:, :] != inst[..., :-1, :]).float()
        zero_col = torch.zeros_like(inst[..., :, :1])
        zero_row = torch.zeros_like(inst[..., :1, :])
        horizontal = torch.maximum(torch.cat([zero_col, dx], -1), torch.cat([dx, zero_col], -1))
        vertical = torch.maximum(torch.cat([zero_row, dy], -2), torch.cat([dy, zero_row], -2))
        return torch.maximum(horizontal, vertical)

    def forward(self, label: torch.Tensor, inst: torch.Tensor | None = None,
                feat: torch.Tensor | None = None) -> torch.Tensor:
        parts = [label if self.config.label_nc == 0 else (label == self.classes).to(label.dtype)]
        if not self.config.no_instance:
            parts.append(self.edges(inst))
        if self.config.use_features:
            parts.append(feat)
        return self.net_g(torch.cat(parts, dim=1))
