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


def test_the_numpy_conversions_give_the_tensor_conversions_bytes():
    """ONNX Runtime's path (NumPy, no torch) scales inputs and renders outputs exactly as PyTorch's does, rounding
    ties and out-of-range values included, so both backends write the same pixels for the same model output."""
    import numpy as np

    from ugatit_cli.core.images import array_to_pixels, pixels_to_array, pixels_to_tensor, tensor_to_pixels

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2, 7, 5, 3), dtype=np.uint8)
    x = pixels_to_array(pixels)
    assert x.dtype == np.float32 and x.shape == (2, 3, 7, 5) and x.flags.c_contiguous
    assert np.array_equal(x, pixels_to_tensor(torch.from_numpy(pixels)).numpy())

    ties = (np.arange(256, dtype=np.float32) + 0.5) / np.float32(127.5) - 1  # (v + 1) * 127.5 lands on k + 0.5
    values = np.concatenate([rng.normal(0, 1.2, 3 * 4 * 50).astype(np.float32), ties, [-5.0, 5.0, -1.0, 1.0] * 2])
    values = values[: 3 * (values.size // 3)].reshape(1, 3, -1, 1)
    got = array_to_pixels(values)
    assert got.dtype == np.uint8 and got.shape == (1, values.shape[2], 1, 3)
    assert np.array_equal(got, tensor_to_pixels(torch.from_numpy(values)).numpy())

    heatmap = rng.normal(size=(1, 9, 7)).astype(np.float32)
    drawn = heatmap_to_image(heatmap, (14, 18))
    assert drawn.tobytes() == heatmap_to_image(torch.from_numpy(heatmap), (14, 18)).tobytes()
