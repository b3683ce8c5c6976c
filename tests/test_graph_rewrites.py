"""The Winograd rewrite of float32 graphs for ONNX Runtime's CPU provider (``ugatit_cli.graph_rewrites``).

Graphs are built with onnx.helper and run by the real ONNX Runtime, rewritten and not; the model test runs a
real U-GAT-IT export (channels large enough to be rewritten) on real photos against PyTorch.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from ugatit_cli.graph_rewrites import WINOGRAD_MIN_CHANNELS, rewrite_for_cpu, space_to_depth_convs, winograd_convs

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from test_speed import HELD_OUT, assert_same_forward, random_model  # noqa: E402


def conv_graph(weight: np.ndarray, bias: np.ndarray | None = None, **attrs) -> onnx.ModelProto:
    """x [n, C, h, w] (all dynamic but C) -> Conv(weight, bias, **attrs) -> y."""
    inits = [numpy_helper.from_array(weight, "w")] + ([] if bias is None else [numpy_helper.from_array(bias, "b")])
    node = helper.make_node("Conv", ["x", "w"] + ([] if bias is None else ["b"]), ["y"], **attrs)
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["n", weight.shape[1] * attrs.get("group", 1), "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]


@pytest.mark.parametrize("pads,bias,batch,size", [
    ([0, 0, 0, 0], False, 1, (18, 18)),   # sides + 2 - 2 = 16: whole tiles
    ([1, 1, 1, 1], True, 3, (13, 10)),    # a batch, sides that need cropping
    ([2, 0, 1, 3], False, 2, (7, 9)),     # uneven padding
])
def test_rewritten_convolutions_compute_the_direct_convolution(pads, bias, batch, size):
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((24, 20, 3, 3)) / 13).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32) if bias else None
    model = conv_graph(weight, b, pads=pads)
    x = rng.standard_normal((batch, 20, *size)).astype(np.float32)
    direct = run(model, x)
    assert winograd_convs(model, min_channels=16) == 1
    assert "Conv" in {n.op_type for n in model.graph.node} and "MatMul" in {n.op_type for n in model.graph.node}
    assert not [n for n in model.graph.node if n.op_type == "Conv" and n.input[1] == "w"]
    rewritten = run(model, x)
    assert rewritten.shape == direct.shape == (batch, 24, size[0] + pads[0] + pads[2] - 2,
                                               size[1] + pads[1] + pads[3] - 2)
    np.testing.assert_allclose(rewritten, direct, atol=2e-5, rtol=0)


@pytest.mark.parametrize("shape,attrs", [
    ((24, 20, 3, 3), {"strides": [2, 2]}),
    ((24, 20, 3, 3), {"dilations": [2, 2]}),
    ((24, 10, 3, 3), {"group": 2}),
    ((24, 20, 5, 5), {}),
    ((24, 20, 1, 1), {}),
])
def test_other_convolutions_are_left_alone(shape, attrs):
    model = conv_graph(np.ones(shape, np.float32), **attrs)
    assert winograd_convs(model, min_channels=1) == 0
    assert [n.op_type for n in model.graph.node] == ["Conv"] and len(model.graph.initializer) == 1


@pytest.mark.parametrize("kernel,out_ch,pads,bias,batch,size", [
    (7, 3, [0, 0, 0, 0], False, 1, (22, 22)),   # U-GAT-IT's last convolution (after its reflection pad)
    (7, 3, [3, 3, 3, 3], True, 2, (13, 10)),    # its own zero padding, an odd side, a bias
    (5, 4, [1, 2, 0, 1], False, 1, (9, 12)),
])
def test_space_to_depth_convolutions_compute_the_direct_convolution(kernel, out_ch, pads, bias, batch, size):
    rng = np.random.default_rng(1)
    weight = (rng.standard_normal((out_ch, 16, kernel, kernel)) / 20).astype(np.float32)
    b = rng.standard_normal(out_ch).astype(np.float32) if bias else None
    model = conv_graph(weight, b, pads=pads)
    x = rng.standard_normal((batch, 16, *size)).astype(np.float32)
    direct = run(model, x)
    assert space_to_depth_convs(model) == 1
    assert {"SpaceToDepth", "DepthToSpace"} <= {n.op_type for n in model.graph.node}
    rewritten = run(model, x)
    assert rewritten.shape == direct.shape == (batch, out_ch, size[0] + pads[0] + pads[2] - kernel + 1,
                                               size[1] + pads[1] + pads[3] - kernel + 1)
    np.testing.assert_allclose(rewritten, direct, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape,attrs", [
    ((5, 16, 7, 7), {}),                      # more outputs than the block rule allows
    ((3, 16, 3, 3), {}),                      # small kernel
    ((3, 16, 6, 6), {}),                      # even kernel
    ((3, 16, 7, 7), {"strides": [2, 2]}),
])
def test_space_to_depth_leaves_other_convolutions_alone(shape, attrs):
    model = conv_graph(np.ones(shape, np.float32), **attrs)
    assert space_to_depth_convs(model) == 0
    assert [n.op_type for n in model.graph.node] == ["Conv"]


def test_float16_weights_cast_to_float32_are_rewritten_too():
    """``ugatit export --half`` stores float16 weights and casts them in the graph: both rewrites still apply."""
    rng = np.random.default_rng(3)
    for shape, rewrite, atol in (((128, 128, 3, 3), winograd_convs, 1e-4), ((3, 16, 7, 7), space_to_depth_convs, 1e-5)):
        weight = (rng.standard_normal(shape) / 30).astype(np.float16)
        cast = helper.make_node("Cast", ["w16"], ["w"], to=TensorProto.FLOAT)
        conv = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
        graph = helper.make_graph([cast, conv], "half", [helper.make_tensor_value_info(
            "x", TensorProto.FLOAT, ["n", shape[1], "h", "w"])], [helper.make_tensor_value_info(
                "y", TensorProto.FLOAT, None)], [numpy_helper.from_array(weight, "w16")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        x = rng.standard_normal((1, shape[1], 12, 10)).astype(np.float32)
        direct = run(model, x)
        assert rewrite(model) == 1
        np.testing.assert_allclose(run(model, x), direct, atol=atol, rtol=0)


def test_graphs_of_old_opsets_are_left_alone():
    model = conv_graph(np.ones((128, 128, 3, 3), np.float32))
    model.opset_import[0].version = 12  # no Einsum
    assert rewrite_for_cpu(model) == {"winograd": 0, "space_to_depth": 0}
    assert [n.op_type for n in model.graph.node] == ["Conv"]


def test_a_rewrite_that_cannot_run_leaves_the_session_on_the_graph_as_exported(tmp_path, monkeypatch):
    """A rewrite is an optimisation: if its graph fails to build (here a rewrite that adds an operator ONNX
    Runtime does not know), the session is built from the file and computes what the file says."""
    import ugatit_cli.graph_rewrites as rewrites
    from ugatit_cli.onnx_backend import OnnxSession

    rng = np.random.default_rng(2)
    model = conv_graph((rng.standard_normal((128, 128, 3, 3)) / 30).astype(np.float32), pads=[1, 1, 1, 1])
    path = tmp_path / "conv.onnx"
    onnx.save(model, str(path))
    x = rng.standard_normal((1, 128, 8, 8)).astype(np.float32)
    good = OnnxSession(path)
    assert good.rewritten == {"winograd": 1, "space_to_depth": 0}

    def broken(model):
        model.graph.node.append(helper.make_node("NoSuchOp", ["y"], ["z"]))
        return {"winograd": 1, "space_to_depth": 0}

    monkeypatch.setattr(rewrites, "rewrite_for_cpu", broken)
    fallback = OnnxSession(path)
    assert fallback.rewritten == {}
    np.testing.assert_allclose(fallback.run({"x": x})["y"], run(model, x), atol=0, rtol=0)
    np.testing.assert_allclose(good.run({"x": x})["y"], run(model, x), atol=1e-4, rtol=0)  # Winograd rounding


def test_small_channel_counts_keep_the_direct_kernel():
    model = conv_graph(np.ones((WINOGRAD_MIN_CHANNELS, WINOGRAD_MIN_CHANNELS - 1, 3, 3), np.float32))
    assert winograd_convs(model) == 0
    model = conv_graph(np.ones((WINOGRAD_MIN_CHANNELS, WINOGRAD_MIN_CHANNELS, 3, 3), np.float32))
    assert winograd_convs(model) == 1


def test_a_generator_session_runs_rewritten_and_matches_pytorch(tmp_path, monkeypatch):
    """A light U-GAT-IT with ch 32 (residual blocks of 128 channels) exported to the cache: its session rewrites
    the residual blocks' convolutions and the last one, computes PyTorch's outputs to 1e-4 on real photos, and
    the graph file is the exported one; UGATIT_ORT_REWRITE=0 runs it as exported."""
    import ugatit_cli.onnx_backend as backend
    from ugatit_cli.onnx_backend import OnnxSession, OnnxTranslator, cached_graph
    from ugatit_cli.store.sources import resolve_model

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    folder = random_model(tmp_path / "model", img_size=32, ch=32, n_res=2, light=True)
    model = resolve_model(folder, ("a2b",))
    graph = cached_graph(model, "a2b")
    before = graph.read_bytes()
    session = OnnxSession(graph)
    # two blocks of two convolutions, in the encoder and in the decoder; the 7x7 one that writes the image
    assert session.rewritten == {"winograd": 2 * 2 * 2, "space_to_depth": 1}
    assert graph.read_bytes() == before
    translator = model.family.translator(model, "a2b", None, {"heatmap": True})
    assert_same_forward(translator, OnnxTranslator(translator, session), HELD_OUT)

    monkeypatch.setenv("UGATIT_ORT_REWRITE", "0")
    plain = OnnxSession(graph)
    assert plain.rewritten == {}
    assert_same_forward(translator, OnnxTranslator(translator, plain), HELD_OUT[:1])
    monkeypatch.delenv("UGATIT_ORT_REWRITE")
    monkeypatch.setenv("UGATIT_ORT_LOW_MEMORY", "1")  # the smallest footprint: no 4x Winograd weights
    assert OnnxSession(graph).rewritten == {}
    monkeypatch.delenv("UGATIT_ORT_LOW_MEMORY")
    monkeypatch.setattr(backend, "REWRITE_MAX_INLINE_BYTES", graph.stat().st_size - 1)  # too large to parse
    assert OnnxSession(graph).rewritten == {}


def test_the_benchmark_script_reference_is_a_real_convolution():
    """benchmarks/winograd.py measures errors against its own float64 convolution: it agrees with PyTorch's."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "winograd_bench", Path(__file__).resolve().parents[1] / "benchmarks" / "winograd.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 5, 9, 7)), rng.standard_normal((4, 5, 3, 3))
    expected = torch.nn.functional.conv2d(
        torch.nn.functional.pad(torch.from_numpy(x), (1, 1, 1, 1), mode="reflect"), torch.from_numpy(w)).numpy()
    np.testing.assert_allclose(bench.reference(x, w), expected, atol=1e-10)
