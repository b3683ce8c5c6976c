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
#: traffic outweighs the saved arithmetic (benchmarks/winograd.py, one thread: 256->256 channels 1.81x, 128->128
#: 1.29x, 128->64 1.03x, 64->64 0.69x)
WINOGRAD_MIN_CHANNELS = 128


def winograd_convs(model: Any, min_channels: int = WINOGRAD_MIN_CHANNELS) -> int:
    """Rewrite, in place, every float32 3x3 convolution of ``model`` (an ``onnx.ModelProto``, top-level graph)
    with stride 1, dilation 1, one group, weights held in an initializer and at least ``min_channels`` input
    and output channels, as the Winograd F(4x4, 3x3) computation above; any padding and a bias are kept.
    Shapes may be dynamic (batch and sides). Returns the number of convolutions rewritten."""
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    m, a = WINOGRAD_AT.shape
    tiles = a * a
    constants: list[Any] = []

    def const(name: str, value: np.ndarray) -> str:
        constants.append(numpy_helper.from_array(value, name))
        return name

    shared = {
        "bt": const("winograd/BT", np.einsum("ar,bs->abrs", WINOGRAD_BT, WINOGRAD_BT)
                    .reshape(tiles, 1, a, a).astype(np.float32)),
        "g": const("winograd/G", WINOGRAD_G.astype(np.float32)),
        "gt": const("winograd/GT", WINOGRAD_G.T.copy().astype(np.float32)),
        "at": const("winograd/AT", np.einsum("ia,jb->ijab", WINOGRAD_AT, WINOGRAD_AT)
                    .reshape(m * m, tiles).astype(np.float32)),
        "x_shape": const("winograd/x_shape", np.array([-1, 1, 0, 0], np.int64)),
        "tiles_shape": const("winograd/tiles_shape", np.array([tiles, -1], np.int64)),
        "i2": const("winograd/i2", np.array([2], np.int64)),
        "i4": const("winograd/i4", np.array([4], np.int64)),
        "zeros2": const("winograd/zeros2", np.array([0, 0], np.int64)),
        "axes23": const("winograd/axes23", np.array([2, 3], np.int64)),
        "i1": const("winograd/i1", np.array([1], np.int64)),
    }
    new_nodes: list[Any] = []
    count = 0
    for node in graph.node:
        spec = _eligible(node, weights, min_channels)
        if spec is None:
            new_nodes.append(node)
            continue
        count += 1
        out_ch, in_ch, pads = spec
        p = f"winograd/{count}/"
        x, w = node.input[0], node.input[1]
        pt, pl, pb, pr = pads
        const(p + "U_shape", np.array([out_ch, in_ch, tiles], np.int64))
        const(p + "NCTP_head", np.array([-1, in_ch, tiles], np.int64))
        const(p + "M_head", np.array([m * m, -1, out_ch], np.int64))
        const(p + "Y_head", np.array([-1, m * m * out_ch], np.int64))
        const(p + "crop", np.array([pt + pb - 2, pl + pr - 2], np.int64))
        n = helper.make_node
        new_nodes += [
            # U[t, 1, o, c] = (G w[o, c] G^T)[t]: constant, folded by ONNX Runtime
            n("MatMul", [shared["g"], w], [p + "Gw"]),
            n("MatMul", [p + "Gw", shared["gt"]], [p + "GwGt"]),
            n("Reshape", [p + "GwGt", p + "U_shape"], [p + "U_oct"]),
            n("Transpose", [p + "U_oct"], [p + "U_toc"], perm=[2, 0, 1]),
            n("Unsqueeze", [p + "U_toc", shared["i1"]], [p + "U"]),
            # V[n, c, t, tile] = B^T d B of every 6x6 input tile (stride 4); padded at the end so that the
            # tiles cover the output, which is cropped to its size afterwards
            n("Reshape", [x, shared["x_shape"]], [p + "x1"]),
            n("Conv", [p + "x1", shared["bt"]], [p + "V"], kernel_shape=[a, a], strides=[m, m],
              pads=[pt, pl, pb + m - 1, pr + m - 1]),
            n("Shape", [p + "V"], [p + "V_shape"]),
            n("Slice", [p + "V_shape", shared["i2"], shared["i4"]], [p + "th_tw"]),
            n("ReduceProd", [p + "th_tw"], [p + "P"], keepdims=1),
            n("Concat", [p + "NCTP_head", p + "P"], [p + "NCTP"], axis=0),
            n("Reshape", [p + "V", p + "NCTP"], [p + "V_nctp"]),
            n("Transpose", [p + "V_nctp"], [p + "V_tncp"], perm=[2, 0, 1, 3]),
            # M[t, n, o, tile] = U[t] V[t]
            n("MatMul", [p + "U", p + "V_tncp"], [p + "M"]),
            # Y = A^T M A for the 16 outputs of each tile, laid out for DepthToSpace
            n("Reshape", [p + "M", shared["tiles_shape"]], [p + "M2"]),
            n("MatMul", [shared["at"], p + "M2"], [p + "Y"]),
            n("Concat", [p + "M_head", p + "th_tw"], [p + "Y_shape"], axis=0),
            n("Reshape", [p + "Y", p + "Y_shape"], [p + "Y_knoij"]),
            n("Transpose", [p + "Y_knoij"], [p + "Y_nkoij"], perm=[1, 0, 2, 3, 4]),
            n("Concat", [p + "Y_head", p + "th_tw"], [p + "Y_shape2"], axis=0),
            n("Reshape", [p + "Y_nkoij", p + "Y_shape2"], [p + "Y4"]),
            n("DepthToSpace", [p + "Y4"], [p + "Y_full"], blocksize=m, mode="DCR"),
            # crop to the convolution's own output size: input sides + pads - 2
            n("Shape", [x], [p + "x_shape"]),
            n("Slice", [p + "x_shape", shared["i2"], shared["i4"]], [p + "x_hw"]),
            n("Add", [p + "x_hw", p + "crop"], [p + "out_hw"]),
        ]
        last = p + "Y_crop" if len(node.input) > 2 and node.input[2] else node.output[0]
        new_nodes.append(n("Slice", [p + "Y_full", shared["zeros2"], p + "out_hw", shared["axes23"]], [last]))
        if last != node.output[0]:
            const(p + "bias_shape", np.array([1, out_ch, 1, 1], np.int64))
            new_nodes += [n("Reshape", [node.input[2], p + "bias_shape"], [p + "bias"]),
                          n("Add", [last, p + "bias"], [node.output[0]])]
    if count:
        del graph.node[:]
        graph.node.extend(new_nodes)
        graph.initializer.extend(constants)
    return count


def _eligible(node: Any, weights: dict[str, Any], min_channels: int) -> tuple[int, int, list[int]] | None:
    """(output channels, input channels, pads [top, left, bottom, right]) of a Conv this rewrite applies to."""
    from onnx import TensorProto, helper

    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
        return None
    weight = weights.get(node.input[1])
    if weight is None or weight.data_type != TensorProto.FLOAT or list(weight.dims[2:]) != [3, 3]:
        return None
    if len(node.input) > 2 and node.input[2] and node.input[2] not in weights:
        return None
    attrs = {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}
    if attrs.get("group", 1) != 1 or any(s != 1 for s in attrs.get("strides", [1, 1])):
        return None
    if any(d != 1 for d in attrs.get("dilations", [1, 1])):
        return None
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    out_ch, in_ch = int(weight.dims[0]), int(weight.dims[1])
    if min(out_ch, in_ch) < min_channels:
        return None
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    return out_ch, in_ch, pads
