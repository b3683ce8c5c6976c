"""Speed paths of ``translate``: ONNX Runtime (fp32 and int8) for U-GAT-IT and pix2pixHD, precision choices,
sharding under torchrun.

Real photos come from the sample data that ships with scikit-image, scikit-learn and matplotlib; models are
tiny and random (U-GAT-IT's rho drawn away from its init, so LIN/AdaLIN mix both statistics). The ONNX
exports are the real exporter's and run in the real ONNX Runtime; the CPU capability check is the only thing
faked (to play machines with and without AMX).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import skimage
import sklearn.datasets
import torch
from PIL import Image
from typer.testing import CliRunner

import ugatit_cli
from ugatit_cli.cli import app
from ugatit_cli.core import hardware
from ugatit_cli.core.images import pixels_to_tensor
from ugatit_cli.core.sharding import Shard
from ugatit_cli.errors import UserError
from ugatit_cli.families.model_folder import write_model_folder
from ugatit_cli.families.pix2pixhd.config import Pix2PixHDConfig
from ugatit_cli.families.pix2pixhd.family import FAMILY as PIX2PIXHD
from ugatit_cli.families.pix2pixhd.family import Pix2PixHDModel
from ugatit_cli.families.ugatit.config import UGATITConfig
from ugatit_cli.families.ugatit.family import UGATITModel
from ugatit_cli.families.ugatit.networks import Generator
from ugatit_cli.onnx_backend import OnnxSession, OnnxTranslator
from ugatit_cli.quantize import calibration_feeds, psnr_and_max_error
from ugatit_cli.store.sources import resolve_model

pytest.importorskip("onnxruntime")
REPO_ROOT = Path(__file__).resolve().parents[1]

SKIMAGE = Path(skimage.__file__).parent / "data"
SKLEARN = Path(sklearn.datasets.__file__).parent / "images"
MATPLOTLIB = Path(matplotlib.get_data_path()) / "sample_data"
CALIBRATION = [SKIMAGE / "astronaut.png", SKIMAGE / "chelsea.png", SKIMAGE / "coffee.png", SKIMAGE / "rocket.jpg",
               SKIMAGE / "motorcycle_left.png", SKLEARN / "china.jpg"]
HELD_OUT = [MATPLOTLIB / "grace_hopper.jpg", SKLEARN / "flower.jpg", SKIMAGE / "motorcycle_right.png"]


def random_model(root: Path, **config) -> Path:
    torch.manual_seed(0)
    config = UGATITConfig(**config)
    generators = {d: Generator(config) for d in ("a2b", "b2a")}
    for generator in generators.values():
        for name, param in generator.named_parameters():
            if name.endswith("rho"):
                param.data.uniform_(0.2, 0.8)
    return write_model_folder(UGATITModel(config, generators), root)


@pytest.fixture(scope="module")
def light_model(tmp_path_factory) -> Path:
    return random_model(tmp_path_factory.mktemp("models") / "light", img_size=32, ch=4, n_res=1, light=True)


@pytest.fixture(scope="module")
def onnx_folder(light_model, tmp_path_factory) -> Path:
    """``ugatit export --format onnx`` of the light model (both directions), once for the module."""
    folder = tmp_path_factory.mktemp("exports") / "onnx"
    result = subprocess.run([sys.executable, "-m", "ugatit_cli", "export", str(light_model), "-o", str(folder),
                             "--format", "onnx", "--quiet"], capture_output=True, text=True, cwd=REPO_ROOT,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=600)
    assert result.returncode == 0, result.stderr
    return folder


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory) -> Path:
    """One ONNX cache for the module: the first onnxruntime run exports, the others reuse the graph."""
    return tmp_path_factory.mktemp("xdg-cache")


@pytest.fixture
def env(onnx_cache, monkeypatch) -> dict[str, str]:
    monkeypatch.setenv("XDG_CACHE_HOME", str(onnx_cache))
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}


def photos(folder: Path, sources=HELD_OUT) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for path in sources:
        shutil.copy(path, folder / path.name)
    return folder


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.int16)


def cli(*args, env, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ugatit_cli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=REPO_ROOT, timeout=timeout)


def batch_of(translator, path: Path) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
    """One input as translate hands it to ``forward``: the translator's own read, stacked, pixels scaled."""
    arrays, _ = translator.read(path)
    batch = {key: torch.from_numpy(np.array(value)[None]) for key, value in arrays.items()}
    x = batch.pop("pixels", None)
    return (None if x is None else pixels_to_tensor(x)), batch


def assert_same_forward(torch_translator, onnx_translator, inputs) -> None:
    """Both backends give the same outputs to 1e-4 on the same prepared inputs, for every output written."""
    for path in inputs:
        x, extras = batch_of(torch_translator, path)
        with torch.inference_mode():
            expected = torch_translator.forward(x, extras)
        got = onnx_translator.forward(x, extras)
        assert set(got) == {spec.key for spec in torch_translator.outputs}
        for key in got:
            np.testing.assert_allclose(got[key].numpy(), expected[key].float().numpy(), atol=1e-4, rtol=0)


# --- ONNX Runtime: same outputs as PyTorch --------------------------------------------------------------------


def test_onnxruntime_backend_matches_pytorch_through_the_cli(tmp_path, light_model, env, onnx_cache):
    src = photos(tmp_path / "in")
    out = tmp_path / "ort"
    result = cli("translate", src, "--model", light_model, "--output", out, "--backend", "onnxruntime", "--heatmap",
                 env=env)
    assert result.returncode == 0, result.stderr
    assert "exporting the model to ONNX" in result.stderr and "onnxruntime fp32" in result.stderr
    graphs = list((onnx_cache / "ugatit-cli" / "onnx").glob("*/generator_a2b.onnx"))
    assert len(graphs) == 1  # exported once, into the cache

    # the cached graph computes what the PyTorch translator computes (image and attention map), to 1e-4
    model = resolve_model(light_model, ("a2b",))
    translator = model.family.translator(model, "a2b", None, {"heatmap": True})
    assert_same_forward(translator, OnnxTranslator(translator, OnnxSession(graphs[0])), HELD_OUT)
    # so the written PNGs are PyTorch's, up to a rounding at a level boundary
    torch_out = tmp_path / "torch"
    ugatit_cli.translate(src, light_model, output=torch_out, backend="torch", heatmap=True, progress=False)
    for photo in HELD_OUT:
        for name in (f"{photo.stem}.png", f"{photo.stem}_heatmap.png"):
            diff = np.abs(pixels(out / "in" / name) - pixels(torch_out / "in" / name))  # FOLDER -> out/FOLDER/
            assert diff.max() <= 1 and (diff > 0).mean() < 0.01, name

    # a second run reads the cache (no export), and existing outputs are skipped as with PyTorch
    mtime = graphs[0].stat().st_mtime_ns
    again = cli("translate", src, "--model", light_model, "--output", out, "--backend", "onnxruntime", "--json",
                env=env)
    assert again.returncode == 0 and "exporting" not in again.stderr
    assert json.loads(again.stdout)["counts"] == {"done": 0, "skipped": 3, "failed": 0}
    assert graphs[0].stat().st_mtime_ns == mtime


def test_cached_graphs_keep_their_weights_in_a_mapped_file(tmp_path, light_model, env, onnx_cache, monkeypatch):
    """The cache stores a graph's weights as ONNX external data (ONNX Runtime maps them rather than parsing
    a copy), with the mode the umask gives; large graphs run without pre-packed weights, computing the same;
    an entry whose weights file is gone is exported again, not run."""
    import ugatit_cli.onnx_backend as backend
    from ugatit_cli.export import external_data_path

    model = resolve_model(light_model, ("a2b",))
    graph = backend.cached_graph(model, "a2b")
    data = external_data_path(graph)
    assert data.is_file() and data.stat().st_size > 0.9 * sum(
        t.numel() * t.element_size() for t in model.nets["a2b"].state_dict().values())
    umask = os.umask(0)
    os.umask(umask)
    assert {oct(p.stat().st_mode & 0o777) for p in (graph, data)} == {oct(0o666 & ~umask)}
    assert not [p for p in graph.parent.iterdir() if p.name.startswith(".")]  # no temporary left

    translator = model.family.translator(model, "a2b", None, {})
    packed = OnnxSession(graph)
    monkeypatch.setattr(backend, "PREPACK_MAX_BYTES", 0)  # this graph now counts as large: no pre-packing
    created = []
    real_options = backend.session_options
    monkeypatch.setattr(backend, "session_options", lambda *a, **k: created.append(k) or real_options(*a, **k))
    unpacked = OnnxSession(graph)
    assert created == [{"prepack": False}]
    assert_same_forward(OnnxTranslator(translator, packed), OnnxTranslator(translator, unpacked), HELD_OUT)

    data.unlink()
    mtime = graph.stat().st_mtime_ns
    assert backend.cached_graph(model, "a2b") == graph and data.is_file() and graph.stat().st_mtime_ns != mtime


def test_two_model_streams_share_one_session_and_write_what_one_stream_writes(tmp_path, light_model, env,
                                                                              monkeypatch):
    """translate on a CPU runs one model stream per torch thread, all calling ``run`` on one ONNX Runtime
    session (one copy of the pre-packed weights): two streams write byte for byte what one stream writes. A
    batch size above 1 runs the same way (a CPU gains nothing from batches) and writes the same bytes."""
    import threading

    src = photos(tmp_path / "in", HELD_OUT + CALIBRATION)
    sessions, callers = [], {}
    real_init, real_run = OnnxSession.__init__, OnnxSession.run

    def init(self, *args, **kwargs):  # the real constructor, counted
        real_init(self, *args, **kwargs)
        sessions.append(self)

    def run(self, feeds):  # the real run, noting which session and thread called it
        callers.setdefault(id(self), set()).add(threading.current_thread().name)
        return real_run(self, feeds)

    import ugatit_cli.translation as translation

    plans = []
    real_pipeline = translation._run

    def pipeline(jobs, translator, plan, *args):  # the real pipeline, noting its plan (streams, threads each)
        plans.append(plan)
        return real_pipeline(jobs, translator, plan, *args)

    monkeypatch.setattr(OnnxSession, "__init__", init)
    monkeypatch.setattr(OnnxSession, "run", run)
    monkeypatch.setattr(translation, "_run", pipeline)
    threads = torch.get_num_threads()
    reports = {}
    try:
        for streams in (1, 2):
            torch.set_num_threads(streams)  # translate's CPU plan: one single-threaded stream per torch thread
            sessions.clear()
            callers.clear()
            reports[streams] = ugatit_cli.translate(src, light_model, output=tmp_path / f"out{streams}",
                                                    backend="onnxruntime", device="cpu", heatmap=True,
                                                    progress=False)
            assert len(sessions) == 1 and list(callers) == [id(sessions[0])]  # one session, shared
            assert (plans[-1].streams, plans[-1].threads_per_stream) == (streams, 1)
            # ... run from at most that many model threads (an idle pool thread takes the next batch: a fast
            # model may leave the second one unstarted)
            assert 1 <= len(callers[id(sessions[0])]) <= streams
        # a batch size above 1: still one image per pass, in as many streams
        batched = ugatit_cli.translate(src, light_model, output=tmp_path / "batched", backend="onnxruntime",
                                       device="cpu", heatmap=True, progress=False, batch_size=4)
        assert (plans[-1].batch_size, plans[-1].streams, plans[-1].threads_per_stream) == (1, 2, 1)
    finally:
        torch.set_num_threads(threads)
    assert all(len(r.done) == len(HELD_OUT + CALIBRATION) and not r.failed for r in reports.values())
    for one, two, both in zip(reports[1].done, reports[2].done, batched.done, strict=True):
        for name in ("output", "heatmap"):
            assert getattr(one, name).read_bytes() == getattr(two, name).read_bytes(), (one.source, name)
            assert getattr(one, name).read_bytes() == getattr(both, name).read_bytes(), (one.source, name)


def test_a_run_with_nothing_to_translate_names_no_backend_precision_or_output_folder(tmp_path, light_model):
    src = photos(tmp_path / "in", HELD_OUT[:1])
    first = ugatit_cli.translate(src, light_model, output=tmp_path / "out", device="cpu", backend="torch",
                                 precision="fp32", progress=False)
    again = ugatit_cli.translate(src, light_model, output=tmp_path / "out", device="cpu", backend="torch",
                                 precision="fp32", progress=False)
    assert (first.to_dict()["backend"], first.to_dict()["precision"]) == ("torch", "fp32") and len(first.done) == 1
    assert len(again.skipped) == 1 and (again.to_dict()["backend"], again.to_dict()["precision"]) == (None, None)

    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["translate", str(tmp_path / "empty"), "-m", str(light_model), "-o",
                                      str(tmp_path / "never")])
    assert result.exit_code == 1 and "no images" in result.output and "never" not in result.output
    assert not (tmp_path / "never").exists()


def pix2pixhd_model(root: Path, **config) -> Path:
    """A tiny random pix2pixHD model folder (4 classes); with instance features also its encoder and centres."""
    torch.manual_seed(0)
    config = Pix2PixHDConfig(label_nc=4, ngf=4, n_downsample_global=2, n_blocks_global=1, **config)
    nets = {key: PIX2PIXHD.build_net(config, key).eval() for key in PIX2PIXHD.weight_files(config)}
    if "clusters" in nets:
        rng = np.random.default_rng(0)
        nets["clusters"].set({c: rng.normal(size=(2, config.feat_num)) for c in range(config.label_nc)})
    return write_model_folder(Pix2PixHDModel(config, nets), root)


def pix2pixhd_maps(root: Path) -> tuple[Path, Path]:
    """Two label maps of other sizes (Cityscapes names) and their instance maps (ids ``class * 1000 + k``)."""
    labels, insts = root / "labels", root / "insts"
    labels.mkdir()
    insts.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(((24, 36), (32, 20))):
        ids = np.zeros((h, w), np.uint8)
        ids[:, w // 2:] = 1 + i
        ids[h // 3:, :] += rng.integers(0, 2, (h - h // 3, w)).astype(np.uint8)
        Image.fromarray(ids, mode="L").save(labels / f"city_{i}_labelIds.png")
        Image.fromarray(ids.astype(np.uint16) * 1000 + 1 + (np.arange(w) > w // 3)).save(
            insts / f"city_{i}_instanceIds.png")
    return labels, insts


def test_onnxruntime_runs_pix2pixhd_label_and_instance_maps(tmp_path, env):
    """pix2pixHD's graph takes ``label`` and ``inst`` (its OnnxIO): the same outputs as PyTorch to 1e-4, as a
    cached graph of a model folder and as an ONNX export folder given as MODEL."""
    folder = pix2pixhd_model(tmp_path / "p2p")
    labels, insts = pix2pixhd_maps(tmp_path)

    reports = {backend: ugatit_cli.translate(labels, folder, output=tmp_path / backend, backend=backend,
                                             instance_maps=insts, progress=False)
               for backend in ("torch", "onnxruntime")}
    assert [r.backend for r in reports.values()] == ["torch", "onnxruntime"]
    assert all(len(r.done) == 2 and not r.failed for r in reports.values())
    for torch_done, ort_done in zip(reports["torch"].done, reports["onnxruntime"].done, strict=True):
        assert np.abs(pixels(torch_done.output) - pixels(ort_done.output)).max() <= 1

    (graph,) = (Path(os.environ["XDG_CACHE_HOME"]) / "ugatit-cli" / "onnx").glob("*/generator.onnx")
    model = resolve_model(folder)
    translator = PIX2PIXHD.translator(model, None, None, {"instance_maps": insts})
    session = OnnxSession(graph)
    assert session.input_names == ["label", "inst"]
    assert_same_forward(translator, OnnxTranslator(translator, session), sorted(labels.iterdir()))

    # an ONNX export folder of the pix2pixHD model is a MODEL: it runs with onnxruntime, instance maps and all
    exported = tmp_path / "p2p-onnx"
    assert cli("export", folder, "-o", exported, "--format", "onnx", "--quiet", env=env).returncode == 0
    result = cli("translate", labels, "--model", exported, "--instance-maps", insts, "-o", tmp_path / "exp", "--json",
                 env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["backend"] == "onnxruntime"
    for done in reports["torch"].done:
        assert np.abs(pixels(tmp_path / "exp" / "labels" / done.output.name) - pixels(done.output)).max() <= 1
    missing = cli("translate", labels, "--model", exported, "-o", tmp_path / "bad", env=env)
    assert missing.returncode == 2 and "--instance-maps" in missing.stderr and "Traceback" not in missing.stderr


def test_a_pix2pixhd_graph_translates_label_and_instance_maps_without_torch(tmp_path, env):
    """A pix2pixHD model without instance features whose graph a run exported, and an ONNX export folder of it,
    translate label and instance maps in a process that never imports torch, writing byte for byte what the
    run that loaded the model wrote; ``--size`` scales the maps as PyTorch's translate does; a missing
    ``--instance-maps`` stays one line."""
    env = {**env, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    folder = pix2pixhd_model(tmp_path / "p2p")
    labels, insts = pix2pixhd_maps(tmp_path)
    maps = ("--instance-maps", insts)
    code, imported, err = probe("translate", labels, "-m", folder, *maps, "-o", tmp_path / "first", "--backend",
                                "onnxruntime", env=env)
    assert code == 0 and imported and "exporting the model to ONNX" in err, err
    written = sorted((tmp_path / "first" / "labels").iterdir())
    assert len(written) == 2
    # backend auto: two maps are not worth an export, but the graph is cached now
    code, imported, err = probe("translate", labels, "-m", folder, *maps, "-o", tmp_path / "second", "--device",
                                "cpu", env=env)
    assert code == 0 and not imported and "onnxruntime fp32" in err, err
    assert all((tmp_path / "second" / "labels" / p.name).read_bytes() == p.read_bytes() for p in written)

    exported = tmp_path / "p2p-onnx"
    assert cli("export", folder, "-o", exported, "--format", "onnx", "--quiet", env=env).returncode == 0
    code, imported, err = probe("translate", labels, "-m", exported, *maps, "-o", tmp_path / "export", "--device",
                                "cpu", env=env)
    assert code == 0 and not imported and "onnxruntime fp32" in err, err
    assert all((tmp_path / "export" / "labels" / p.name).read_bytes() == p.read_bytes() for p in written)

    code, imported, err = probe("translate", labels, "-m", folder, *maps, "-o", tmp_path / "wide", "--size", "44",
                                "--device", "cpu", env=env)
    assert code == 0 and not imported, err
    reference = ugatit_cli.translate(labels, folder, output=tmp_path / "torch-wide", size=44, backend="torch",
                                     instance_maps=insts, progress=False)
    assert len(reference.done) == 2
    for done in reference.done:
        ours = pixels(tmp_path / "wide" / "labels" / done.output.name)
        assert ours.shape[1] == 44 and ours.shape == pixels(done.output).shape  # 44 wide, the height in proportion
        assert np.abs(ours - pixels(done.output)).max() <= 1

    for model in (folder, exported):
        code, imported, err = probe("translate", labels, "-m", model, "-o", tmp_path / "bad", "--device", "cpu",
                                    env=env)
        assert code == 2 and not imported and "--instance-maps DIR" in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 2  # the message, then the probe's facts


def test_a_pix2pixhd_model_with_instance_features_keeps_the_torch_path(tmp_path, env):
    """Instance features need the model's cluster centres drawn into a feature map (torch): even with its graph
    cached such a model loads, and translates as the run that exported the graph did, and as PyTorch does (the
    graph's feature map is drawn with the same ``--seed``)."""
    env = {**env, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    folder = pix2pixhd_model(tmp_path / "p2p", instance_feat=True, nef=4)
    labels, insts = pix2pixhd_maps(tmp_path)
    args = ("translate", labels, "-m", folder, "--instance-maps", insts, "--seed", "3", "--backend", "onnxruntime")
    code, imported, err = probe(*args, "-o", tmp_path / "first", env=env)
    assert code == 0 and imported and "exporting the model to ONNX" in err, err
    assert list((tmp_path / "cache" / "ugatit-cli" / "onnx" / "sources").iterdir())  # its graph is indexed
    code, imported, err = probe(*args, "-o", tmp_path / "second", "--device", "cpu", env=env)
    assert code == 0 and imported and "exporting" not in err, err
    written = sorted((tmp_path / "first" / "labels").iterdir())
    assert len(written) == 2
    assert all((tmp_path / "second" / "labels" / p.name).read_bytes() == p.read_bytes() for p in written)
    reference = ugatit_cli.translate(labels, folder, output=tmp_path / "torch", backend="torch", instance_maps=insts,
                                     seed=3, progress=False)
    for done in reference.done:
        assert np.abs(pixels(tmp_path / "first" / "labels" / done.output.name) - pixels(done.output)).max() <= 1


def test_an_onnx_export_folder_is_a_model(tmp_path, light_model, onnx_folder, env):
    exported = onnx_folder
    src = photos(tmp_path / "in", HELD_OUT[:2])
    (src / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    result = cli("translate", src, "--model", exported, "--direction", "b2a", "--output", tmp_path / "out", "--json",
                 env=env)
    assert result.returncode == 1  # the broken input fails alone, named with its reason, like with PyTorch
    report = json.loads(result.stdout)
    assert report["backend"] == "onnxruntime" and report["counts"] == {"done": 2, "skipped": 0, "failed": 1}
    assert "broken.jpg" in result.stderr and "Traceback" not in result.stderr
    torch_out = ugatit_cli.translate(src / HELD_OUT[0].name, light_model, output=tmp_path / "torch", direction="b2a",
                                     backend="torch", progress=False)
    diff = np.abs(pixels(tmp_path / "out" / "in" / f"{HELD_OUT[0].stem}.png") - pixels(torch_out.done[0].output))
    assert diff.max() <= 1

    # torch cannot run it; onnxruntime is a CPU fp32 path; a direction that was not exported is named
    (tmp_path / "one").mkdir()
    for name in ("config.json", "generator_b2a.onnx"):
        shutil.copy(exported / name, tmp_path / "one" / name)
    missing = cli("translate", src, "--model", tmp_path / "one", "--output", tmp_path / "bad", env=env)
    assert missing.returncode == 2 and "has no generator_a2b.onnx" in missing.stderr
    import onnx  # a valid graph, not the family's (no output "image"): named by its file, in one line
    from onnx import TensorProto, helper

    plain = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, None, None])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, None, None])])
    graph = tmp_path / "one" / "generator_b2a.onnx"
    onnx.save(helper.make_model(plain, opset_imports=[helper.make_opsetid("", 20)]), graph)
    wrong = cli("translate", src, "--model", tmp_path / "one", "--direction", "b2a", "--output", tmp_path / "bad",
                env=env)
    errors = [line for line in wrong.stderr.splitlines() if line.startswith("error:")]
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr, wrong.stderr
    assert errors == [f"error: {graph}: the ONNX graph has no output image (it has y)"]
    for args, message in ((["--direction", "b2a", "--backend", "torch"], "runs with --backend onnxruntime"),
                          (["--direction", "b2a", "--precision", "bf16"], "computes in float32")):
        bad = cli("translate", src, "--model", exported, "--output", tmp_path / "bad", *args, env=env)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr


def test_auto_backend_rule(tmp_path, light_model, env, onnx_cache, monkeypatch):
    """auto: PyTorch for a few images without a cached graph; onnxruntime once the graph is cached."""
    src = photos(tmp_path / "in", HELD_OUT[:1])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    report = ugatit_cli.translate(src, light_model, output=tmp_path / "a", device="cpu", progress=False)
    assert report.backend == "torch"  # one image is not worth an export
    assert not (tmp_path / "empty-cache").exists()
    monkeypatch.setenv("XDG_CACHE_HOME", str(onnx_cache))
    ugatit_cli.translate(src, light_model, output=tmp_path / "b", backend="onnxruntime", progress=False)
    report = ugatit_cli.translate(src, light_model, output=tmp_path / "c", device="cpu", progress=False)
    assert report.backend == "onnxruntime"
    monkeypatch.setenv("UGATIT_BACKEND", "torch")
    assert ugatit_cli.translate(src, light_model, output=tmp_path / "d", progress=False).backend == "torch"


# --- stored graphs run without torch ------------------------------------------------------------------------

PROBE = """
import json, sys
from ugatit_cli.cli.app import app
code = 0
try:
    app(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"exit": code, "torch": "torch" in sys.modules}), file=sys.stderr)
"""


def probe(*args, env) -> tuple[int, bool, str]:
    """``ugatit ARGS`` in a fresh process: its exit status, whether it imported torch, its stderr."""
    result = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True,
                            env=env, cwd=REPO_ROOT, timeout=300)
    facts = json.loads(result.stderr.strip().splitlines()[-1])
    return facts["exit"], facts["torch"], result.stderr


def test_a_stored_graph_translates_without_importing_torch(tmp_path, env, onnx_folder):
    """A model folder whose graph an earlier run exported, and an ONNX export folder, translate in a process that
    never imports torch (~500 MB of memory with a CUDA build), writing what the run that loaded the model wrote.
    A model folder replaced since (other weights under the same path) is loaded again, never run with the old
    graph; a damaged index entry only costs that load."""
    env = {**env, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    model = random_model(tmp_path / "model", img_size=32, ch=4, n_res=1, light=True)
    src = photos(tmp_path / "in")
    code, imported, err = probe("translate", src, "-m", model, "-o", tmp_path / "first", "--backend", "onnxruntime",
                                "--heatmap", env=env)
    assert code == 0 and imported and "exporting the model to ONNX" in err, err
    # backend auto: three images are not worth an export, but the graph is cached now
    code, imported, err = probe("translate", src, "-m", model, "-o", tmp_path / "second", "--device", "cpu",
                                "--heatmap", env=env)
    assert code == 0 and not imported and "onnxruntime fp32" in err, err
    written = sorted((tmp_path / "first" / "in").iterdir())
    assert len(written) == 2 * len(HELD_OUT)  # images and attention maps, byte for byte the same
    assert all((tmp_path / "second" / "in" / p.name).read_bytes() == p.read_bytes() for p in written)

    device = [] if hardware.surely_cpu_only() else ["--device", "cpu"]  # auto picks the CPU on this machine
    code, imported, err = probe("translate", src, "-m", onnx_folder, "-o", tmp_path / "export", *device,
                                "--precision", "auto", env=env)  # auto: a graph's own precision, fp32
    assert code == 0 and not imported and "onnxruntime fp32" in err, err

    # a damaged cache entry fails one run in one line and is removed; the next run exports the graph anew
    (graph,) = (tmp_path / "cache" / "ugatit-cli" / "onnx").glob("*/generator_a2b.onnx")
    with open(f"{graph}.data", "r+b") as data:
        data.truncate(100)
    code, imported, err = probe("translate", src, "-m", model, "-o", tmp_path / "damaged", "--device", "cpu",
                                env=env)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and not imported and len(lines) == 1 and "cached graph is removed" in lines[0], err
    assert "Traceback" not in err and "[E:onnxruntime" not in err and not graph.exists()
    assert lines[0].startswith(f"error: {graph}.data: truncated (100 bytes; the weights of {graph.name} need "), err
    code, imported, err = probe("translate", src, "-m", model, "-o", tmp_path / "damaged", "--device", "cpu",
                                "--backend", "onnxruntime", env=env)
    assert code == 0 and imported and "exporting the model to ONNX" in err, err

    torch.manual_seed(1)  # other weights, same folder: the index entry no longer fits the files
    other = UGATITConfig(img_size=32, ch=4, n_res=1, light=True)
    write_model_folder(UGATITModel(other, {d: Generator(other) for d in ("a2b", "b2a")}), model, overwrite=True)
    code, imported, err = probe("translate", src, "-m", model, "-o", tmp_path / "third", "--backend", "onnxruntime",
                                env=env)
    assert code == 0 and imported and "exporting the model to ONNX" in err, err
    first = pixels(tmp_path / "first" / "in" / f"{HELD_OUT[0].stem}.png")
    assert np.abs(pixels(tmp_path / "third" / "in" / f"{HELD_OUT[0].stem}.png") - first).max() > 10

    for entry in (tmp_path / "cache" / "ugatit-cli" / "onnx" / "sources").iterdir():
        entry.write_text('{"graph_version": 3, "graph": "../../../etc/passwd"')  # damaged: not even JSON
    code, imported, err = probe("translate", src, "-m", model, "-o", tmp_path / "fourth", "--backend", "onnxruntime",
                                env=env)
    assert code == 0 and imported and "Traceback" not in err, err


def test_a_hub_repo_whose_graph_is_cached_translates_without_torch(tmp_path, env):
    """A Hub repo id: the run that loads it indexes its graph by the files in huggingface_hub's cache, so the
    next runs (over HTTP to the local Hub stand-in, then offline) never import torch, with the same outputs."""
    from hub_server import LocalHub, repo_from_folder

    folder = random_model(tmp_path / "model", img_size=32, ch=4, n_res=1, light=True)
    src = photos(tmp_path / "in", HELD_OUT[:2])
    with LocalHub({"someone/tiny-ugatit": repo_from_folder(folder)}) as hub:
        env = {**env, **hub.environ(tmp_path / "hub-cache"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
        args = ("translate", src, "-m", "someone/tiny-ugatit", "--backend", "onnxruntime", "--json")
        code, imported, err = probe(*args, "-o", tmp_path / "first", env=env)
        assert code == 0 and imported, err
        code, imported, err = probe(*args, "-o", tmp_path / "second", env=env)
        assert code == 0 and not imported, err
    code, imported, err = probe(*args, "-o", tmp_path / "offline", env={**env, "HF_HUB_OFFLINE": "1"})
    assert code == 0 and not imported, err
    for written in (tmp_path / "first" / "in").iterdir():
        for run in ("second", "offline"):
            assert (tmp_path / run / "in" / written.name).read_bytes() == written.read_bytes()


def test_the_registered_model_runs_its_cached_graph_without_torch(tmp_path, env):
    """``--model selfie2anime``, once its generator was converted into huggingface_hub's cache (here a tiny
    stand-in in the converted folder) and a run exported its graph, translates offline without torch."""
    from huggingface_hub import constants

    from ugatit_cli.families.ugatit.importers.tf_hub import SELFIE2ANIME, converted_dir

    hub_cache = tmp_path / "hub-cache"
    converted = hub_cache / converted_dir(SELFIE2ANIME, "main").relative_to(constants.HF_HUB_CACHE) / "a2b"
    random_model(converted, img_size=32, ch=4, n_res=1, light=True)
    env = {**env, "HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    src = photos(tmp_path / "in", HELD_OUT[:1])
    args = ("translate", src, "-m", "selfie2anime", "--backend", "onnxruntime")
    code, imported, err = probe(*args, "-o", tmp_path / "first", env=env)
    assert code == 0 and imported and "exporting the model to ONNX" in err, err
    code, imported, err = probe(*args, "-o", tmp_path / "second", env=env)
    assert code == 0 and not imported, err
    name = f"{HELD_OUT[0].stem}.png"
    assert (tmp_path / "second" / "in" / name).read_bytes() == (tmp_path / "first" / "in" / name).read_bytes()


def test_a_stored_graph_translates_clips_and_faces_without_torch(tmp_path, env, onnx_folder, light_model):
    """Video clips go through the same graph translator: frames as PyTorch's translate writes them, up to a
    rounding at a level boundary, and the process never imports torch."""
    pytest.importorskip("av")
    from clips import pan, write_clip

    (tmp_path / "clips").mkdir()
    with Image.open(HELD_OUT[0]) as photo:
        write_clip(tmp_path / "clips" / "pan.mp4", pan(photo.convert("RGB"), 6, (64, 48)), audio=False)
    code, imported, err = probe("translate", tmp_path / "clips", "-m", onnx_folder, "-o", tmp_path / "ort",
                                "--device", "cpu", "--crf", "0", env=env)
    assert code == 0 and not imported, err
    report = ugatit_cli.translate(tmp_path / "clips", light_model, output=tmp_path / "torch", backend="torch",
                                  crf=0, progress=False)
    assert len(report.done) == 1

    import av

    def frames(path: Path) -> list[np.ndarray]:
        with av.open(str(path)) as container:
            return [f.to_ndarray(format="rgb24").astype(np.int16) for f in container.decode(video=0)]

    ort, reference = frames(tmp_path / "ort" / "clips" / "pan.mp4"), frames(report.done[0].output)
    assert len(ort) == len(reference) == 6
    assert max(np.abs(a - b).max() for a, b in zip(ort, reference, strict=True)) <= 3  # lossless H.264, YUV 4:2:0


# --- int8 -----------------------------------------------------------------------------------------------------


def test_int8_export_keeps_30_db_on_held_out_real_photos(tmp_path, env, monkeypatch):
    model = random_model(tmp_path / "model", img_size=64, ch=8, n_res=2, light=True)
    calibration = photos(tmp_path / "calibration", CALIBRATION)
    fp32, int8 = tmp_path / "fp32", tmp_path / "int8"
    assert cli("export", model, "-o", fp32, "--format", "onnx", "--direction", "a2b", env=env).returncode == 0
    result = cli("export", model, "-o", int8, "--format", "onnx", "--direction", "a2b", "--quantize", "int8",
                 "--calibration", calibration, "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["quantize"] == "int8"
    quantization = json.loads((int8 / "config.json").read_text())["onnx"]["quantization"]
    assert quantization["calibration_images"] == len(CALIBRATION) and quantization["format"] == "QDQ"

    import onnx

    graph = onnx.load(str(int8 / "generator_a2b.onnx")).graph
    int8_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert len(int8_weights) >= 5  # the convolutions' weights are stored in int8
    assert (int8 / "generator_a2b.onnx").stat().st_size < 0.5 * (fp32 / "generator_a2b.onnx").stat().st_size

    loaded = resolve_model(model, ("a2b",))
    translator = loaded.family.translator(loaded, "a2b", None, {})
    reference = OnnxSession(fp32 / "generator_a2b.onnx")
    quantized = OnnxSession(int8 / "generator_a2b.onnx")
    for photo in HELD_OUT:  # photos the calibration never saw, prepared as translate prepares them
        feeds = calibration_feeds(translator, photo, ["input"])
        psnr, worst = psnr_and_max_error(reference.run(feeds)["image"], quantized.run(feeds)["image"])
        assert psnr >= 30, f"{photo.name}: {psnr:.1f} dB (largest error {worst})"

    # translate runs the int8 folder and says so
    out = cli("translate", photos(tmp_path / "in", HELD_OUT[:1]), "--model", int8, "-o", tmp_path / "out", env=env)
    assert out.returncode == 0 and "onnxruntime int8" in out.stderr

    # an int8 graph keeps ONNX Runtime's pre-packing however large (its int8 convolutions would pack their weights
    # on every run), a float32 one of that size does not: both still write what they wrote before
    import ugatit_cli.onnx_backend as backend

    monkeypatch.setattr(backend, "PREPACK_MAX_BYTES", 0)
    created = []
    real_options = backend.session_options
    monkeypatch.setattr(backend, "session_options", lambda *a, **k: created.append(k) or real_options(*a, **k))
    for folder in (int8, fp32):
        report = ugatit_cli.translate(tmp_path / "in", folder, output=tmp_path / f"again_{folder.name}",
                                      device="cpu", backend="onnxruntime", progress=False)
        assert len(report.done) == 1 and not report.failed
    assert created == [{"prepack": True}, {"prepack": False}]
    again = tmp_path / "again_int8" / "in" / f"{HELD_OUT[0].stem}.png"
    assert again.read_bytes() == (tmp_path / "out" / "in" / f"{HELD_OUT[0].stem}.png").read_bytes()


@pytest.mark.parametrize("args, message", [
    (["--format", "onnx", "--quantize", "int8"], "needs --calibration"),
    (["--quantize", "int8", "--calibration", "."], "add --format onnx"),
    (["--format", "onnx", "--calibration", "."], "--calibration applies to --quantize int8"),
    (["--format", "onnx", "--quantize", "int4", "--calibration", "."], "unknown quantization"),
    (["--format", "onnx", "--quantize", "int8", "--calibration", "EMPTY"], "no calibration images"),
    # every file unreadable: found before ONNX Runtime's calibrator (which failed with a traceback)
    (["--format", "onnx", "--quantize", "int8", "--calibration", "JUNK", "--direction", "a2b"],
     "none of the 2 calibration files could be read"),
    # both directions from one folder: each direction's graph reads photos of its own source domain
    (["--format", "onnx", "--quantize", "int8", "--calibration", "PHOTOS"], "export one direction at a time"),
])
def test_quantize_usage_errors_are_one_line(tmp_path, light_model, args, message):
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "JUNK").mkdir()
    (tmp_path / "JUNK" / "a.jpg").write_text("not a photo")
    (tmp_path / "JUNK" / "b.png").write_bytes(b"")
    folders = {"EMPTY": tmp_path / "EMPTY", "JUNK": tmp_path / "JUNK", "PHOTOS": photos(tmp_path / "p", HELD_OUT[:1])}
    args = [str(folders.get(a, a)) for a in args]
    result = CliRunner().invoke(app, ["export", str(light_model), "-o", str(tmp_path / "out"), *args])
    assert result.exit_code == 2 and message in result.output, result.output
    # the error in one last line (after progress, and a warning per unreadable file), no traceback
    assert "Traceback" not in result.output and result.output.strip().splitlines()[-1].startswith("error: ")
    assert not (tmp_path / "out").exists()


def test_int8_calibration_names_each_unreadable_file_and_counts_the_rest(tmp_path, light_model):
    calibration = photos(tmp_path / "calibration", CALIBRATION[:2])
    (calibration / "junk.jpg").write_text("not a photo")
    result = CliRunner().invoke(app, ["export", str(light_model), "-o", str(tmp_path / "int8"), "--format", "onnx",
                                      "--quantize", "int8", "--calibration", str(calibration), "--direction", "a2b"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "junk.jpg" in warnings[0] and "left out of the calibration" in warnings[0]
    quantization = json.loads((tmp_path / "int8" / "config.json").read_text())["onnx"]["quantization"]
    assert quantization["calibration_images"] == 2


# --- precision: bf16 on CPUs without AMX ---------------------------------------------------------------------


def fake_cpu(monkeypatch, amx: bool, avx512_bf16: bool = True) -> None:
    features = hardware.CpuFeatures(capability="AVX512", avx512_bf16=avx512_bf16, amx_bf16=amx, vnni=True)
    monkeypatch.setattr(hardware, "cpu_features", lambda: features)


def test_bf16_without_amx_warns_in_one_line_and_still_translates(tmp_path, light_model, monkeypatch):
    photos(tmp_path / "in", HELD_OUT[:1])
    fake_cpu(monkeypatch, amx=False)
    result = CliRunner().invoke(app, ["translate", str(tmp_path / "in"), "-m", str(light_model), "-o",
                                      str(tmp_path / "out"), "--precision", "bf16", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "slower than fp32" in warnings[0] and "no AMX" in warnings[0]
    assert "torch bf16" in result.output and (tmp_path / "out" / "in" / f"{HELD_OUT[0].stem}.png").is_file()
    with pytest.warns(hardware.SlowPrecisionWarning, match="no AVX-512 BF16 and no AMX"):
        fake_cpu(monkeypatch, amx=False, avx512_bf16=False)
        ugatit_cli.translate(tmp_path / "in", light_model, output=tmp_path / "out2", precision="bf16",
                             device="cpu", progress=False)


def test_bf16_with_amx_is_quiet_and_auto_picks_it(tmp_path, light_model, monkeypatch, recwarn):
    photos(tmp_path / "in", HELD_OUT[:1])
    fake_cpu(monkeypatch, amx=True)
    report = ugatit_cli.translate(tmp_path / "in", light_model, output=tmp_path / "out", precision="auto",
                                  device="cpu", progress=False)
    assert report.precision == "bf16" and report.to_dict()["precision"] == "bf16"
    assert not [w for w in recwarn if issubclass(w.category, hardware.SlowPrecisionWarning)]
    fake_cpu(monkeypatch, amx=False)
    report = ugatit_cli.translate(tmp_path / "in", light_model, output=tmp_path / "out2", precision="auto",
                                  device="cpu", progress=False)
    assert report.precision == "fp32"


def test_the_capability_check_reads_this_cpu():
    features = hardware.cpu_features()
    flags = hardware._cpuinfo_flags()
    if flags:  # Linux: PyTorch's probe and the kernel's flags agree
        assert features.avx512_bf16 == ("avx512_bf16" in flags)
        assert features.amx_bf16 == ("amx_bf16" in flags or "amx_tile" in flags)
    assert features.capability in ("DEFAULT", "AVX2", "AVX512", "unknown", "NO AVX")


def test_unknown_backend_is_a_usage_error(tmp_path, light_model):
    with pytest.raises(UserError, match="unknown backend"):
        ugatit_cli.translate(tmp_path, light_model, backend="tensorrt", progress=False)


# --- many processes: torchrun shards --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_shards_split_names_alike_without_gap_or_overlap(tmp_path, light_model):
    src = tmp_path / "in"
    for name in ("a.jpg", "a.png", "b.png", "c.png", "sub/d.png"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20, 20), (len(name) * 20, 90, 10)).save(src / name)
    reports = [ugatit_cli.translate(src, light_model, output=tmp_path / "out", shard=Shard(r, 2), backend="torch",
                                    progress=False) for r in range(2)]
    done = [{t.source.name for t in r.done} for r in reports]
    assert done[0] | done[1] == {"a.jpg", "a.png", "b.png", "c.png", "d.png"} and not done[0] & done[1]
    assert abs(len(done[0]) - len(done[1])) <= 1
    # the two inputs named "a" keep their suffixes although different ranks write them
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.png")) == [
        "in/a.jpg.png", "in/a.png.png", "in/b.png", "in/c.png", "in/sub/d.png"]


def test_torchrun_two_processes_split_a_folder_and_a_rerun_finishes_it(tmp_path, light_model, env):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(7):
        Image.fromarray(rng.integers(0, 255, (24, 30, 3), dtype=np.uint8)).save(src / f"{i}.png")
    out = tmp_path / "out"

    def torchrun(tag: str) -> list[dict]:
        logs = tmp_path / f"logs-{tag}"
        result = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
             f"--master_port={free_port()}", "--redirects=1", f"--log-dir={logs}", "-m", "ugatit_cli",
             "translate", str(src), "--model", str(light_model), "--output", str(out), "--device", "cpu",
             "--backend", "torch", "--json"],
            capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300)
        assert result.returncode == 0, result.stderr
        reports = {}
        for rank in range(2):
            (stdout,) = logs.rglob(f"attempt_0/{rank}/stdout.log")
            reports[rank] = json.loads(stdout.read_text())
        assert [reports[r]["shard"] for r in range(2)] == [{"rank": r, "world_size": 2} for r in range(2)]
        return [reports[r] for r in range(2)]

    first = torchrun("first")
    done = [{Path(d["input"]).name for d in report["done"]} for report in first]
    everything = {f"{i}.png" for i in range(7)}
    assert done[0] | done[1] == everything and not done[0] & done[1]
    assert {p.name for p in (out / "in").iterdir()} == everything

    # a crash lost two outputs: the same command translates just those, each on the rank that owns it
    for name in ("2.png", "5.png"):
        (out / "in" / name).unlink()
    second = torchrun("second")
    redone = [{Path(d["input"]).name for d in report["done"]} for report in second]
    assert redone[0] | redone[1] == {"2.png", "5.png"} and not redone[0] & redone[1]
    assert sum(r["counts"]["skipped"] for r in second) == 5


def test_eval_translates_with_onnxruntime_and_takes_an_onnx_export_folder(tmp_path, light_model, onnx_folder, env):
    exported = onnx_folder
    data = tmp_path / "data"
    photos(data / "testA", HELD_OUT)
    photos(data / "testB", CALIBRATION[:4])
    env = {**env, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "tests"), str(REPO_ROOT)])}
    results = {}
    for name, model, backend in (("torch", light_model, "torch"), ("ort", light_model, "onnxruntime"),
                                 ("folder", exported, "auto")):
        proc = cli("eval", data, "--model", model, "--kid", "--json", "--kid-subsets", "10", "--device", "cpu",
                   "--backend", backend, "--feature-extractor", "small_extractor:SmallFeatures", env=env)
        assert proc.returncode == 0, proc.stderr
        results[name] = json.loads(proc.stdout)["results"][0]
    # the same translations up to a rounding at a level boundary, so the same KID to a small tolerance
    for name in ("ort", "folder"):
        assert results[name]["fake_images"] == 3
        assert results[name]["kid_mean"] == pytest.approx(results["torch"]["kid_mean"], rel=1e-2, abs=1e-4)
