"""Measure the Winograd rewrite of ``ugatit_cli.graph_rewrites`` per convolution shape; prints one JSON object.

    python benchmarks/winograd.py              # the 3x3 convolutions of U-GAT-IT, pix2pixHD and TUNIT at 256 px
    python benchmarks/winograd.py --threads 2

Each shape is one ONNX graph of four chained reflect-padded 3x3 convolutions (random weights), run by ONNX
Runtime's CPU provider with the session options ``translate`` uses, as the plain graph (``direct_ms``: its
NCHWc convolution kernels) and rewritten by :func:`~ugatit_cli.graph_rewrites.winograd_convs`
(``winograd_ms``); times are per convolution, best of ``--repeats`` runs, and ``speedup`` = direct /
winograd. ``max_abs_err``: the largest difference of each against the same convolution computed in float64 by
NumPy, on inputs with unit variance. ``WINOGRAD_MIN_CHANNELS`` is set from this table.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT)]

#: (input channels, output channels, height, width, where it occurs)
SHAPES = [
    (256, 256, 64, 64, "U-GAT-IT ch64 residual blocks, 256 px"),
    (256, 128, 128, 128, "U-GAT-IT up-sampling 1, 256 px"),
    (128, 64, 256, 256, "U-GAT-IT up-sampling 2, 256 px"),
    (128, 128, 128, 128, "TUNIT-like 128-channel blocks"),
    (64, 64, 256, 256, "64-channel layer at full resolution"),
    (1024, 1024, 16, 16, "pix2pixHD global generator residual blocks, 256 px"),
    (512, 512, 32, 32, "512-channel blocks"),
]


def chain(in_ch: int, out_ch: int, h: int, w: int, count: int, rng) -> tuple:
    """``count`` reflect-pad + 3x3 convolutions; the first maps in_ch -> out_ch, the others out_ch -> out_ch
    only when in_ch == out_ch (else every layer is in_ch -> out_ch, fed the same input)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, outputs = [], [], []
    inits.append(numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"))
    weights = []
    current = "x"
    for i in range(count):
        weight = (rng.standard_normal((out_ch, in_ch, 3, 3)) / np.sqrt(9 * in_ch)).astype(np.float32)
        weights.append(weight)
        inits.append(numpy_helper.from_array(weight, f"w{i}"))
        nodes += [helper.make_node("Pad", [current, "pads"], [f"p{i}"], mode="reflect"),
                  helper.make_node("Conv", [f"p{i}", f"w{i}"], [f"y{i}"])]
        current = f"y{i}" if in_ch == out_ch else "x"
        outputs.append(f"y{i}")
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", in_ch, "h", "w"])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), weights


def reference(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """The reflect-padded convolution in float64 (NumPy: an independent implementation)."""
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))  # n c h w 3 3
    return np.einsum("nchwrs,ocrs->nohw", windows, weight.astype(np.float64), optimize=True)


def measure(model, x: np.ndarray, threads: int, repeats: int, count: int) -> tuple[float, list[np.ndarray]]:
    """Best seconds per convolution (ms) and the outputs, in a session with translate's options."""
    import onnxruntime as ort

    from ugatit_cli.onnx_backend import session_options

    session = ort.InferenceSession(model.SerializeToString(), session_options(threads),
                                   providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"x": x})
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {"x": x})
        best = min(best, time.perf_counter() - start)
    return best / count * 1000, outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import onnxruntime

    from ugatit_cli.core.hardware import cpu_features
    from ugatit_cli.graph_rewrites import WINOGRAD_MIN_CHANNELS, winograd_convs

    rng = np.random.default_rng(0)
    rows = []
    for in_ch, out_ch, h, w, where in SHAPES:
        count = 4
        model, weights = chain(in_ch, out_ch, h, w, count, rng)
        x = rng.standard_normal((1, in_ch, h, w)).astype(np.float32)
        direct_ms, direct_out = measure(model, x, args.threads, args.repeats, count)
        assert winograd_convs(model, min_channels=1) == count
        winograd_ms, winograd_out = measure(model, x, args.threads, args.repeats, count)
        ref = reference(x, weights[0])  # the first layer reads x in both chains
        rows.append({
            "in_ch": in_ch, "out_ch": out_ch, "size": [h, w], "where": where,
            "direct_ms": round(direct_ms, 2), "winograd_ms": round(winograd_ms, 2),
            "speedup": round(direct_ms / winograd_ms, 2),
            "rewritten_by_default": min(in_ch, out_ch) >= WINOGRAD_MIN_CHANNELS,
            "max_abs_err": {"direct": float(np.abs(direct_out[0] - ref).max()),
                            "winograd": float(np.abs(winograd_out[0] - ref).max())},
        })
    print(json.dumps({"onnxruntime": onnxruntime.__version__, "threads": args.threads,
                      "cpu": cpu_features().to_dict(), "shapes": rows}, indent=1))


if __name__ == "__main__":
    main()
