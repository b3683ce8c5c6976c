"""A :data:`~ugatit_cli.faces.BatchTranslator` from a model's forward pass: how face crops and video frames
reach any model family.

``forward`` takes a float tensor B x 3 x size x size in [-1, 1] on the device and returns a mapping of
output tensors: ``"image"`` (B x 3 x size x size in [-1, 1]) and optionally ``"heatmap"`` (B x 1 x h x w,
any range: rendered like the official ``cam``). The images are prepared like the official test transform
(bilinear resize to size x size); the outputs come back as RGB images of the model's size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch
from PIL import Image

from .devices import autocast
from .images import heatmap_to_image, pixels_to_tensor, resized_pixels, tensor_to_pixels

Forward = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]


def generator_forward(generator: torch.nn.Module, *, heatmap: bool = False) -> Forward:
    """U-GAT-IT's generator (``(image, cam_logit, heatmap)``) as a :data:`Forward`."""

    def forward(x: torch.Tensor) -> dict[str, torch.Tensor]:
        image, _, attention = generator(x)
        return {"image": image, "heatmap": attention} if heatmap else {"image": image}

    return forward


def batch_translator(forward: Forward, size: int, *, device: torch.device | str = "cpu",
                     dtype: torch.dtype | None = None,
                     memory_format: torch.memory_format = torch.contiguous_format,
                     ) -> Callable[[list[Image.Image]], list[dict[str, Image.Image]]]:
    """RGB images of any size in, one ``{"image": ..., "heatmap": ...}`` per image out (size x size).

    Runs under inference mode and, with ``dtype``, autocast. An empty list gives an empty list.
    """
    device = torch.device(device)

    def translate(images: list[Image.Image]) -> list[dict[str, Image.Image]]:
        if not images:
            return []
        pixels = torch.from_numpy(np.stack([resized_pixels(img.convert("RGB"), size) for img in images]))
        x = pixels_to_tensor(pixels.to(device)).contiguous(memory_format=memory_format)
        with torch.inference_mode(), autocast(device, dtype):
            outputs = forward(x)
            rendered = tensor_to_pixels(outputs["image"]).contiguous().cpu().numpy()
            heat = outputs.get("heatmap")
            heat = heat.float().cpu() if heat is not None else None
        results = []
        for i in range(len(images)):
            out = {"image": Image.fromarray(rendered[i], mode="RGB")}
            if heat is not None:
                out["heatmap"] = heatmap_to_image(heat[i], (size, size))
            results.append(out)
        return results

    return translate
