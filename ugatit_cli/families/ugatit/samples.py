"""Sample grids in the official arrangement: one column per image, seven tiles down, both directions.

A column (official ``UGATIT.train``): input, identity heatmap, identity, translation heatmap, translation,
cycle heatmap, cycle. ``A2B_<iteration>.png`` shows domain A's images, ``B2A_<iteration>.png`` domain B's;
training images first, then test images.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from PIL import Image

from ...core.images import jet_image, save_image_atomic, tensor_to_image

GRID_NAMES = {"A": "A2B", "B": "B2A"}


def sample_grid(outputs: Mapping[str, torch.Tensor], rows: Sequence[str]) -> Image.Image:
    """Tile ``outputs`` (``Trainer.sample``'s dict) into one image: column ``i`` is image ``i``, its tiles in
    the order of ``rows`` (keys ending in ``_heatmap`` are attention maps, drawn in jet colours)."""
    count, _, height, width = outputs[rows[0]].shape
    grid = Image.new("RGB", (width * count, height * len(rows)))
    for column in range(count):
        for row, key in enumerate(rows):
            value = outputs[key][column]
            tile = jet_image(value, (width, height)) if key.endswith("_heatmap") else tensor_to_image(value)
            grid.paste(tile, (column * width, row * height))
    return grid


def write_samples(folder: Path, iteration: int, outputs: Mapping[str, torch.Tensor],
                  rows: Mapping[str, Sequence[str]]) -> list[Path]:
    """Write ``A2B_<iteration>.png`` and ``B2A_<iteration>.png`` atomically; returns their paths."""
    written = []
    for domain, keys in rows.items():
        if outputs[keys[0]].shape[0] == 0:
            continue
        path = folder / f"{GRID_NAMES[domain]}_{iteration:08d}.png"
        save_image_atomic(sample_grid(outputs, keys), path)
        written.append(path)
    return written
