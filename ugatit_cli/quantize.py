"""int8 ONNX graphs: ``ugatit export SOURCE --format onnx --quantize int8 --calibration PHOTOS/``.

ONNX Runtime's static quantization (``onnxruntime.quantization.quantize_static``), not our own: QDQ format
(QuantizeLinear/DequantizeLinear pairs that ONNX Runtime fuses into int8 kernels, VNNI on x86), weights
int8 per output channel, activations uint8 per tensor with ranges calibrated (min/max) on real inputs of the
source domain, prepared exactly as ``translate`` prepares them: the family's
:class:`~ugatit_cli.families.base.Translator` reads each file (:meth:`~Translator.read`) and says what the
graph is fed (:meth:`~Translator.onnx_feeds`), so any family's graph can be calibrated (U-GAT-IT: photos;
pix2pixHD: label maps, for models without instance maps).

What is quantized: the convolutions and the linear layers (``QUANTIZED_OPS``), which hold ~all of the
arithmetic, except the first three convolutions in graph order (for U-GAT-IT the encoder's 7x7 one that
reads the image and the two stride-2 down-sampling ones) and the last convolution (it writes the image).
Everything else stays float32: instance and layer norms, AdaLIN, the CAM attention, Resize, Tanh and the
elementwise ops.

Why those convolutions: measured on a light ch64 U-GAT-IT generator at 256 px (random weights, rho drawn
in [0.2, 0.8]), calibrated on six scikit-image / scikit-learn photos, PSNR against the fp32 graph on three
held-out photos (matplotlib's grace_hopper, scikit-learn's flower, scikit-image's motorcycle_right):
quantizing every convolution but the first and last gave 28.3-29.1 dB (largest per-pixel error 46-51 of
255), below the 30 dB bar; also keeping the decoder's convolutions in fp32 changed nothing, so the error is
born in the encoder (it reaches every output pixel through the CAM weights and the gamma/beta MLP).
Keeping the first three convolutions in fp32 (~6% of the arithmetic) gave 32.5-32.6 dB (largest error
29-35); the first six, 34.8-35.0 dB; the whole encoder, 40.6-40.7 dB but half the speed-up. The rule was
not measured on pix2pixHD (same shape of network: a 7x7 stem, stride-2 down-sampling, residual blocks).
"""

from __future__ import annotations

import itertools
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .core.images import BadImageError, collect_images, pixels_to_tensor
from .errors import UserError
from .families.base import Translator


class SkippedCalibrationWarning(UserWarning):
    """A calibration file that cannot be read; it is left out of the calibration."""


QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
QUANTIZE_CHOICES = ("int8",)
#: at most this many calibration images are read (min/max ranges settle long before)
MAX_CALIBRATION_IMAGES = 64


def require_quantization() -> Any:
    try:
        from onnxruntime import quantization
    except ImportError:
        raise UserError('--quantize int8 needs onnxruntime: pip install "ugatit-cli[onnx]"') from None
    return quantization


def calibration_images(folder: str | os.PathLike) -> list[Path]:
    """The readable images under ``folder`` (recursively, sorted), at most ``MAX_CALIBRATION_IMAGES``;
    UserError when there is none."""
    images, problems = collect_images([folder])
    paths = sorted(image.path for image in images)[:MAX_CALIBRATION_IMAGES]
    if not paths:
        reason = problems[0].reason if problems else "no images found"
        raise UserError(f"{folder}: no calibration images ({reason}); give a folder of real images of the "
                        "source domain")
    return paths


def calibration_feeds(translator: Translator, path: Path, input_names: Sequence[str]) -> dict[str, np.ndarray]:
    """One input as ``translate`` feeds the family's graph (batch of one): the translator reads and prepares
    it, :meth:`Translator.onnx_feeds` names the graph's inputs. BadImageError for an unusable file."""
    import torch

    arrays, _ = translator.read(path)
    batch = {key: torch.from_numpy(np.array(value)[None]) for key, value in arrays.items()}
    pixels = batch.pop("pixels", None)
    x = None if pixels is None else pixels_to_tensor(pixels)
    feeds = translator.onnx_feeds(x, batch, input_names)
    return {name: value.float().numpy() for name, value in feeds.items()}


def _readable_feeds(translator: Translator, paths: Sequence[Path], input_names: Sequence[str],
                    unreadable: list[str]) -> Iterator[dict[str, np.ndarray]]:
    """The feeds of the files that can be read; each one that cannot is left out (like in training data) with a
    one-line :class:`SkippedCalibrationWarning`, and noted in ``unreadable`` as "path: reason"."""
    for path in paths:
        try:
            yield calibration_feeds(translator, path, input_names)
        except BadImageError as exc:
            unreadable.append(f"{path}: {exc.reason}")
            warnings.warn(f"{unreadable[-1]} (left out of the calibration)", SkippedCalibrationWarning,
                          stacklevel=2)


#: convolutions kept in float32 at each end of the graph (in graph order: the encoder's stem first)
FLOAT_LEADING_CONVS = 3
FLOAT_TRAILING_CONVS = 1


def float_convs(model_path: Path) -> list[str]:
    """Names of the convolutions that stay float32: the first ``FLOAT_LEADING_CONVS`` and the last
    ``FLOAT_TRAILING_CONVS`` in graph order."""
    import onnx

    convs = [node.name for node in onnx.load(str(model_path), load_external_data=False).graph.node
             if node.op_type == "Conv"]
    return sorted(set(convs[:FLOAT_LEADING_CONVS] + convs[len(convs) - FLOAT_TRAILING_CONVS:]))


def quantize_int8(fp32_graph: Path, output: Path, calibration: Sequence[Path], translator: Translator
                  ) -> dict[str, Any]:
    """Write the int8 (QDQ) version of ``fp32_graph`` to ``output``, calibrated on the ``calibration`` files
    as ``translator`` (the family's, for the exported network) prepares them; returns the facts recorded in
    ``config.json`` (``onnx.quantization``). UserError when no calibration file could be read."""
    q = require_quantization()
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(q.CalibrationDataReader):
        def __init__(self, batches: Iterator[dict[str, np.ndarray]]) -> None:
            self.batches = batches
            self.count = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            self.count += batch is not None
            return batch

    import onnx

    input_names = [i.name for i in onnx.load(str(fp32_graph), load_external_data=False).graph.input]
    unreadable: list[str] = []
    feeds = _readable_feeds(translator, calibration, input_names, unreadable)
    first = next(feeds, None)  # before ONNX Runtime's calibrator, which fails with its own error on no data
    if first is None:
        raise UserError(f"none of the {len(calibration)} calibration files could be read ({unreadable[0]})")
    reader = Reader(itertools.chain([first], feeds))
    with tempfile.TemporaryDirectory(prefix="ugatit-quantize-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # ONNX Runtime's recommended pre-processing: shape inference and graph optimisation, so that the
        # quantizer sees the fused graph ONNX Runtime will run
        quant_pre_process(str(fp32_graph), str(prepared), skip_symbolic_shape=True)
        excluded = float_convs(prepared)
        q.quantize_static(
            str(prepared), str(output), reader, quant_format=q.QuantFormat.QDQ, per_channel=True,
            activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
            op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_exclude=excluded,
            calibrate_method=q.CalibrationMethod.MinMax,
        )
    return {"dtype": "int8", "format": "QDQ", "weights": "int8, per output channel",
            "activations": "uint8, per tensor, min/max calibrated", "quantized_ops": list(QUANTIZED_OPS),
            "float32": "first three and last convolution, normalisations, attention, elementwise ops",
            "float32_nodes": excluded,
            "calibration_images": reader.count, "tool": "onnxruntime.quantization.quantize_static"}


def psnr_and_max_error(reference: np.ndarray, test: np.ndarray) -> tuple[float, int]:
    """PSNR (dB) and the largest per-pixel difference of two model outputs in [-1, 1], both compared as the
    8-bit images ``translate`` writes."""
    a = np.round((np.clip(reference, -1, 1) + 1) * 127.5)
    b = np.round((np.clip(test, -1, 1) + 1) * 127.5)
    mse = float(np.mean((a - b) ** 2))
    psnr = float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
    return psnr, int(np.abs(a - b).max())
