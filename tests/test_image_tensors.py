"""Pixels <-> tensors: the conversions translation, training samples and evaluation share."""

import torch
from PIL import Image

from ugatit_cli.core.images import image_to_tensor, tensor_to_image
from ugatit_cli.core.images import jet_image as heatmap_to_image


def test_image_to_tensor_scales_to_minus_one_one_and_back_exactly():
    img = Image.frombytes("RGB", (4, 2), bytes(range(0, 240, 10)))
    tensor = image_to_tensor(img)
    assert tensor.shape == (3, 2, 4) and tensor.dtype == torch.float32
    assert tensor.min() >= -1 and tensor.max() <= 1
    assert tensor[0, 0, 0].item() == -1.0  # pixel value 0
    assert tensor_to_image(tensor).tobytes() == img.tobytes()


def test_image_to_tensor_resizes_with_pillows_bilinear_filter():
    img = Image.effect_noise((64, 48), 60).convert("RGB")
    expected = image_to_tensor(img.resize((32, 32), Image.Resampling.BILINEAR))
    assert torch.equal(image_to_tensor(img, 32), expected)


def test_tensor_to_image_clamps_out_of_range_values():
    tensor = torch.tensor([-3.0, 0.0, 3.0]).view(3, 1, 1)
    assert tensor_to_image(tensor).getpixel((0, 0)) == (0, 128, 255)


def test_heatmap_is_min_max_normalised_and_jet_coloured():
    heatmap = torch.tensor([[5.0, 6.0], [7.0, 9.0]])
    img = heatmap_to_image(heatmap, (2, 2))
    assert img.mode == "RGB" and img.size == (2, 2)
    low, high = img.getpixel((0, 0)), img.getpixel((1, 1))
    assert low[2] > 100 and low[0] == 0  # the minimum is blue
    assert high[0] > 100 and high[2] == 0  # the maximum is red
    flat = heatmap_to_image(torch.full((3, 3), 2.0), (6, 6))  # a constant map does not divide by zero
    assert flat.getpixel((0, 0)) == low
