"""Rewrites of float32 ONNX graphs that make them faster on ONNX Runtime's CPU provider, applied in memory when
a CPU session is built (:class:`ugatit_cli.onnx_backend.OnnxSession`); graph files on disk stay the plain
exported ones, which other runtimes (CUDA, TensorRT, other CPUs' tools) run best as they are.

Winograd convolution (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016): a 3x3
stride-1 convolution computed as F(4x4, 3x3) tiles needs 36 multiplications per 16 outputs and input
channel instead of 144. ONNX Runtime's CPU convolutions have no Winograd kernel (its direct NCHWc kernels run
near the fp32 peak, so only fewer operations make them faster); expressed with standard ops, the tile
products become one batched matrix product:

    input tiles   V = B^T d B   a grouped 6x6 stride-4 Conv with constant weights
    weights       U = G g G^T   computed in the graph from the convolution's weights (ONNX Runtime folds it
                                into a constant when the session is built)
    products      M = U V       MatMul, batched over the 36 tile positions
    output tiles  Y = A^T M A   MatMul with a constant 16x36 matrix, then DepthToSpace

Measured by ``benchmarks/winograd.py`` (ONNX Runtime 1.32, one thread, AVX-512 Xeon): a 256->256 channel 3x3
convolution on 64x64 features takes 17 ms instead of 31 ms; a light ch64 U-GAT-IT generator at 256 px, 0.61 s
per image instead of 0.98 s. Exact in real arithmetic; in float32 one convolution's largest error grows from
about 1.5e-6 to 5e-5 on unit-variance inputs (1.2e-4 with 1024 input channels), the price cuDNN's Winograd
kernels also pay. Through a whole generator it is lost in the other differences between runtimes: the light
U-GAT-IT's output (in [-1, 1]) differs from PyTorch's by at most 2.9e-5 rewritten, 2.7e-5 not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: F(4x4, 3x3) with the interpolation points 0, 1, -1, 2, -2 and infinity (Lavin & Gray 2016)
WINOGRAD_BT = np.array([[4, 0, -5, 0, 1, 0],
                        [0, -4, -4, 1, 1, 0],
                        [0, 4, -4, -1, 1, 0],
                        [0, -2, -1, 2, 1, 0],
                        [0, 2, -1, -2, 1, 0],
                        [0, 4, 0, -5, 0, 1]], dtype=np.float64)
WINOGRAD_G = np.array([[1 / 4, 0, 0],
                       [-1 / 6, -1 / 6, -1 / 6],
                       [-1 / 6, 1 / 6, -1 / 6],
                       [1 / 24, 1 / 12, 1 / 6],
                       [1 / 24, -1 / 12, 1 / 6],
                       [0, 0, 1]], dtype=np.float64)
WINOGRAD_AT = np.array([[1, 1, 1, 1, 1, 0],
                        [0, 1, -1, 2, -2, 0],
                        [0, 1, 1, 4, 4, 0],
                        [0, 1, -1, 8, -8, 1]], dtype=np.float64)
#: convolutions with fewer input or output channels than this keep the direct kernel: the tile transforms' memory
#: traffic outweighs the saved arithmetic (benchmarks/winograd.py, one thread: 256->256 channels 1.83x, 256->128
#: 1.73x, 128->128 0.93-0.98x, 128->64 1.02-1.07x, 64->64 0.66-0.72x; 128 keeps U-GAT-IT's 256->128 up-sampling
#: convolution, and 128->128 ones gain nothing but lose nothing either)
WINOGRAD_MIN_CHANNELS = 128


#: the rewrites use operators of this ONNX opset (Einsum, Pad and Slice with tensor inputs, DCR DepthToSpace)
MIN_OPSET = 13


def rewrite_for_cpu(model: Any) -> dict[str, int]:
    """Both rewrites of this module, in place, on ``model`` (an ``onnx.ModelProto``); how many convolutions each
    rewrote (none in a graph of an opset below :data:`MIN_OPSET`)."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        return {"winograd": 0, "space_to_depth": 0}
    return {"winograd": winograd_convs(model), "space_to_depth": space_to_depth_convs(model)}


def winograd_convs(model: Any, min_channels: int = WINOGRAD_MIN_CHANNELS) -> int:
    """Rewrite, in place, every float32 3x3 convolution of ``model`` (an ``onnx.ModelProto``, top-level graph)
    with stride 1, dilation 1, one group, constant weights (float32, or float16 cast to float32) and at least
    ``min_channels`` input and output channels, as the Winograd F(4x4, 3x3) computation above; any padding and a
    bias are kept.
    Shapes may be dynamic (batch and sides). Returns the number of convolutions rewritten."""
    m, a = WINOGRAD_AT.shape
    tiles = a * a
    c = _Constants("winograd/")
    bt = np.einsum("ar,bs->abrs", WINOGRAD_BT, WINOGRAD_BT).reshape(tiles, 1, a, a)  # per channel
    c.shared("GG", np.einsum("ar,bs->abrs", WINOGRAD_G, WINOGRAD_G).reshape(tiles, 3, 3))
    c.shared("AT", np.einsum("ia,jb->ijab", WINOGRAD_AT, WINOGRAD_AT).reshape(m * m, tiles))

    def matches(spec: _Conv) -> bool:
        return spec.kernel == (3, 3) and min(spec.out_ch, spec.in_ch) >= min_channels

    def build(node: Any, spec: _Conv, p: str) -> list[Any]:
        from onnx.helper import make_node as n

        x, w = node.input[0], node.input[1]
        pt, pl, pb, pr = spec.pads
        return [
            *_output_size(c, p, x, spec),
            # U[t, o, c] = (G w[o, c] G^T)[t]: one constant node, folded by ONNX Runtime when the session is
            # built (one Einsum: a chain of products would leave each intermediate's copy in memory meanwhile)
            n("Einsum", [c.shared("GG"), w], [p + "U"], equation="trs,ocrs->toc"),
            # V[n, c, t, tile] = B^T d B of every 6x6 input tile (stride 4), one channel at a time; padded at
            # the end so that the tiles cover the output, which is cropped to its size afterwards
            n("Conv", [x, c.shared(f"BT{spec.in_ch}", np.tile(bt, (spec.in_ch, 1, 1, 1)))], [p + "V"],
              kernel_shape=[a, a], strides=[m, m], pads=[pt, pl, pb + m - 1, pr + m - 1], group=spec.in_ch),
            n("Shape", [p + "V"], [p + "V_shape"]),
            n("Slice", [p + "V_shape", c.ints("two", [2]), c.ints("four", [4])], [p + "th_tw"]),
            n("ReduceProd", [p + "th_tw"], [p + "P"], keepdims=1),
            n("Concat", [c.ints(p + "NCTP_head", [-1, spec.in_ch, tiles]), p + "P"], [p + "NCTP"], axis=0),
            n("Reshape", [p + "V", p + "NCTP"], [p + "V_nctp"]),
            n("Transpose", [p + "V_nctp"], [p + "V_ntcp"], perm=[0, 2, 1, 3]),
            # M[n, t, o, tile] = U[t] V[n, t]
            n("MatMul", [p + "U", p + "V_ntcp"], [p + "M"]),
            # Y = A^T M A: the 16 outputs of each tile, channels (i, j, o) as DepthToSpace reads them
            n("Reshape", [p + "M", c.ints("tiles_second", [0, tiles, -1])], [p + "M2"]),
            n("MatMul", [c.shared("AT"), p + "M2"], [p + "Y"]),
            n("Concat", [c.ints(p + "Y_head", [-1, m * m * spec.out_ch]), p + "th_tw"], [p + "Y_shape"], axis=0),
            n("Reshape", [p + "Y", p + "Y_shape"], [p + "Y4"]),
            n("DepthToSpace", [p + "Y4"], [p + "Y_full"], blocksize=m, mode="DCR"),
            *_crop_and_bias(c, p, p + "Y_full", spec, node.output[0]),
        ]

    return _rewrite(model, c, matches, build)


#: convolutions with at most this many outputs are rewritten by :func:`space_to_depth_convs`: ONNX Runtime's
#: NCHWc kernels compute outputs in blocks of 16 (AVX-512), so a 3-output convolution costs as much as 16
SPACE_TO_DEPTH_MAX_OUT_CHANNELS = 4


def space_to_depth_convs(model: Any, max_out_channels: int = SPACE_TO_DEPTH_MAX_OUT_CHANNELS) -> int:
    """Rewrite, in place, every float32 convolution of ``model`` with a square odd kernel of 5 or more, stride 1,
    dilation 1, one group, constant weights and at most ``max_out_channels`` outputs (the 7x7 one that
    writes U-GAT-IT's and pix2pixHD's image) on 2x2 blocks of pixels: SpaceToDepth(2), a convolution with 4x the
    input and output channels and a kernel of (k + 1) / 2, DepthToSpace(2). Its outputs fill the 16-wide blocks
    of ONNX Runtime's kernels: U-GAT-IT's 64 -> 3 channel 7x7 convolution rewritten took a light ch64 generator
    at 256 px from 0.86 to 0.80 s (one thread, before the Winograd rewrite), its int8 graph from 0.39 to 0.36 s.
    The kernel is gathered from the original weights in the graph (folded by ONNX Runtime). Exact up to the order
    of the sums. Returns the number of convolutions rewritten."""
    c = _Constants("space_to_depth/")

    def matches(spec: _Conv) -> bool:
        k = spec.kernel[0]
        return spec.kernel == (k, k) and k % 2 == 1 and k >= 5 and spec.out_ch <= max_out_channels

    def build(node: Any, spec: _Conv, p: str) -> list[Any]:
        from onnx.helper import make_node as n

        k = spec.kernel[0]
        kb = (k + 1) // 2  # the kernel over 2x2 blocks
        side = 2 * kb + 1  # the original kernel padded by one on each side
        # W'[(a, b, o), (p, q, c), u, v] = W[o, c, 2u + p - a, 2v + q - b], zero outside the kernel:
        # padded by 1, the tap 2u + p - a + 1 of the padded kernel, flattened with its column
        a, b, pp, q, u, v = np.meshgrid(*[range(2)] * 4, range(kb), range(kb), indexing="ij")
        taps = (2 * u + pp - a + 1) * side + (2 * v + q - b + 1)
        x, w = node.input[0], node.input[1]
        pt, pl, pb, pr = spec.pads
        return [
            *_output_size(c, p, x, spec),
            n("Pad", [w, c.ints("kernel_pads", [0, 0, 1, 1, 0, 0, side - k - 1, side - k - 1])], [p + "w_pad"]),
            n("Reshape", [p + "w_pad", c.ints("flat_taps", [0, 0, -1])], [p + "w_flat"]),
            n("Gather", [p + "w_flat", c.ints(p + "taps", taps)], [p + "w_taps"], axis=2),  # o c a b p q u v
            n("Transpose", [p + "w_taps"], [p + "w_perm"], perm=[2, 3, 0, 4, 5, 1, 6, 7]),
            n("Reshape", [p + "w_perm", c.ints(p + "w_shape", [4 * spec.out_ch, 4 * spec.in_ch, kb, kb])],
              [p + "w_blocks"]),
            # pad: the convolution's own padding, plus a row/column of zeros when a padded side is odd
            n("Add", [p + "in_hw", c.ints(p + "pads_hw", [pt + pb, pl + pr])], [p + "padded_hw"]),
            n("Mod", [p + "padded_hw", c.ints("two_two", [2, 2])], [p + "odd_hw"]),
            n("Add", [p + "odd_hw", c.ints(p + "end_pads", [pb, pr])], [p + "end_hw"]),
            n("Concat", [c.ints(p + "begin_pads", [0, 0, pt, pl, 0, 0]), p + "end_hw"], [p + "pads"], axis=0),
            n("Pad", [x, p + "pads"], [p + "x_pad"]),
            n("SpaceToDepth", [p + "x_pad"], [p + "x_blocks"], blocksize=2),
            n("Conv", [p + "x_blocks", p + "w_blocks"], [p + "y_blocks"], kernel_shape=[kb, kb]),
            n("DepthToSpace", [p + "y_blocks"], [p + "y_full"], blocksize=2, mode="DCR"),
            *_crop_and_bias(c, p, p + "y_full", spec, node.output[0]),
        ]

    return _rewrite(model, c, matches, build)


def _output_size(c: _Constants, p: str, x: str, spec: _Conv) -> list[Any]:
    """Nodes computing ``p + "out_hw"``, the convolution's own output sides (input sides + pads - kernel + 1).
    Placed first, so that the input's last reader is the rewrite's and its memory is freed early."""
    from onnx.helper import make_node as n

    pt, pl, pb, pr = spec.pads
    kh, kw = spec.kernel
    return [
        n("Shape", [x], [p + "in_shape"]),
        n("Slice", [p + "in_shape", c.ints("two", [2]), c.ints("four", [4])], [p + "in_hw"]),
        n("Add", [p + "in_hw", c.ints(p + "crop", [pt + pb - kh + 1, pl + pr - kw + 1])], [p + "out_hw"]),
    ]


def _crop_and_bias(c: _Constants, p: str, full: str, spec: _Conv, output: str) -> list[Any]:
    """Nodes that crop ``full`` to ``p + "out_hw"`` (:func:`_output_size`) and add the convolution's bias, if
    any, writing ``output``."""
    from onnx.helper import make_node as n

    cropped = output if spec.bias is None else p + "cropped"
    nodes = [n("Slice", [full, c.ints("zeros", [0, 0]), p + "out_hw", c.ints("axes_hw", [2, 3])], [cropped])]
    if spec.bias is not None:
        nodes += [n("Reshape", [spec.bias, c.ints("bias_shape", [1, -1, 1, 1])], [p + "bias"]),
                  n("Add", [cropped, p + "bias"], [output])]
    return nodes


@dataclass(frozen=True)
class _Conv:
    """A Conv node's facts that the rewrites decide on."""

    out_ch: int
    in_ch: int
    kernel: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, left, bottom, right
    bias: str | None


def _plain_conv(node: Any, weights: dict[str, Any]) -> _Conv | None:
    """The facts of a float32 Conv with stride 1, dilation 1, one group, explicit padding and constant weights
    (and bias): float32 initializers, or float16 ones cast to float32 (``ugatit export --half``), as ``weights``
    maps them (:func:`_constant_weights`); None for any other node."""
    from onnx import helper

    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
        return None
    weight = weights.get(node.input[1])
    if weight is None or len(weight.dims) != 4:
        return None
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if bias is not None and bias not in weights:
        return None
    attrs = {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}
    if attrs.get("group", 1) != 1 or any(v != 1 for v in [*attrs.get("strides", []), *attrs.get("dilations", [])]):
        return None
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    pads = tuple(attrs.get("pads", [0, 0, 0, 0]))
    return _Conv(int(weight.dims[0]), int(weight.dims[1]), (int(weight.dims[2]), int(weight.dims[3])),
                 pads, bias)


class _Constants:
    """The constant tensors a rewrite adds to a graph, named under ``prefix``; each added once."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.tensors: dict[str, Any] = {}

    def shared(self, name: str, value: np.ndarray | None = None) -> str:
        """A float32 constant (``value`` given the first time)."""
        return self._add(name, None if value is None else np.ascontiguousarray(value, dtype=np.float32))

    def ints(self, name: str, value: Any) -> str:
        return self._add(name, np.asarray(value, dtype=np.int64))

    def _add(self, name: str, value: np.ndarray | None) -> str:
        from onnx import numpy_helper

        full = name if name.startswith(self.prefix) else self.prefix + name
        if full not in self.tensors:
            self.tensors[full] = numpy_helper.from_array(value, full)
        return full


def _constant_weights(graph: Any) -> dict[str, Any]:
    """Float32 values a Conv can take as constant weights, by name: float32 initializers, and the outputs of
    Casts to float32 of float16 initializers (the initializer, for its shape)."""
    from onnx import TensorProto, helper

    initializers = {init.name: init for init in graph.initializer}
    weights = {name: init for name, init in initializers.items() if init.data_type == TensorProto.FLOAT}
    for node in graph.node:
        source = initializers.get(node.input[0]) if node.op_type == "Cast" and node.input else None
        to = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "to"), None)
        if source is not None and source.data_type == TensorProto.FLOAT16 and to == TensorProto.FLOAT:
            weights[node.output[0]] = source
    return weights


def _rewrite(model: Any, constants: _Constants, matches: Any, build: Any) -> int:
    """Replace each plain Conv of ``model``'s graph for which ``matches(spec)`` by ``build(node, spec, prefix)``;
    the constants those nodes use are added. Returns the count."""
    graph = model.graph
    weights = _constant_weights(graph)
    nodes: list[Any] = []
    count = 0
    for node in graph.node:
        spec = _plain_conv(node, weights)
        if spec is None or not matches(spec):
            nodes.append(node)
            continue
        count += 1
        nodes += build(node, spec, f"{constants.prefix}{count}/")
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
        graph.initializer.extend(constants.tensors.values())
    return count
