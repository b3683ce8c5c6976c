"""Pictures of pix2pixHD inputs and outputs: coloured label maps and the label | generated | real sample grid.

Label colours follow the official ``util.labelcolormap`` (NVIDIA/pix2pixHD ``util/util.py``): the 35
Cityscapes label colours when ``label_nc`` is 35, else the bit-interleaved palette (bit k of the id goes to
bit 7 - k // 3 of R, G or B by k % 3), as the official training visualiser shows them.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ...core.images import tensor_to_pixels

CITYSCAPES_35 = (
    (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (111, 74, 0), (81, 0, 81), (128, 64, 128),
    (244, 35, 232), (250, 170, 160), (230, 150, 140), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (180, 165, 180), (150, 100, 100), (150, 120, 90), (153, 153, 153), (153, 153, 153), (250, 170, 30),
    (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142),
    (0, 0, 70), (0, 60, 100), (0, 0, 90), (0, 0, 110), (0, 80, 100), (0, 0, 230), (119, 11, 32), (0, 0, 142),
)


def label_palette(label_nc: int) -> np.ndarray:
    """``(label_nc, 3)`` uint8 colours of the class ids."""
    if label_nc == 35:
        return np.array(CITYSCAPES_35, dtype=np.uint8)
    palette = np.zeros((label_nc, 3), dtype=np.uint8)
    for i in range(label_nc):
        value, rgb = i, [0, 0, 0]
        for j in range(7):
            for c in range(3):
                rgb[c] |= ((value >> c) & 1) << (7 - j)
            value >>= 3
        palette[i] = rgb
    return palette


def colorize(label: torch.Tensor, label_nc: int) -> np.ndarray:
    """Class ids ``(H, W)`` or ``(1, H, W)`` -> uint8 ``(H, W, 3)``; ids outside the palette are black."""
    ids = label.reshape(label.shape[-2:]).long().cpu().numpy()
    palette = np.concatenate([label_palette(label_nc), np.zeros((1, 3), np.uint8)])
    return palette[np.where((ids >= 0) & (ids < label_nc), ids, label_nc)]


def sample_grid(label: torch.Tensor, generated: torch.Tensor, real: torch.Tensor | None, label_nc: int
                ) -> Image.Image:
    """One row per image: the label map (coloured, or the input photo for label_nc 0) | generated | real."""
    rows = []
    for i in range(generated.shape[0]):
        tiles = [colorize(label[i], label_nc) if label_nc else tensor_to_pixels(label[i].float()).cpu().numpy(),
                 tensor_to_pixels(generated[i]).cpu().numpy()]
        if real is not None:
            tiles.append(tensor_to_pixels(real[i]).cpu().numpy())
        rows.append(np.concatenate(tiles, axis=1))
    return Image.fromarray(np.concatenate(rows, axis=0))
