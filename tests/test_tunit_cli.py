"""TUNIT through the real ``ugatit`` CLI on a tiny labelled folder (32 px, a few iterations): train (and an exact
resume), translate with a reference and with a domain, cluster, export (model folder and ONNX, checked with
onnxruntime), eval (cluster accuracy, mFID); and an official-layout checkpoint translated through the CLI
against an independent restatement of the official networks."""

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import tunit_reference as ref
from PIL import Image
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")])}
SETTINGS = {"size": 32, "k": 3, "sty_dim": 8, "nf": 8, "batch_size": 4, "iterations": 4, "warmup_iterations": 2,
            "epoch_iterations": 2, "save_every": 2, "sample_every": 2, "log_every": 2, "workers": 0}
TINY = ["--arch", "tunit", "--size", "32", "--k", "3", "--sty-dim", "8", "--nf", "8", "--batch-size", "4",
        "--warmup-iterations", "2", "--epoch-iterations", "2", "--save-every", "2", "--sample-every", "2",
        "--log-every", "2", "--workers", "0", "--quiet"]
COLOURS = {"moss": (60, 170, 70), "sky": (70, 110, 230)}


def ugatit_process(*args, ok=True):
    """The CLI in a process of its own, as a user runs it."""
    done = subprocess.run([sys.executable, "-m", "ugatit_cli", *map(str, args)], env=ENV, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    if ok:
        assert done.returncode == 0, done.stderr
    return done


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


def ugatit(*args, ok=True):
    """The CLI in this process (the same Typer app; no interpreter start-up per call)."""
    from typer.testing import CliRunner

    from ugatit_cli.cli.app import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    done = Done(result.exit_code, result.stdout, result.stderr)
    if ok:
        assert done.returncode == 0, (done.stderr, result.exception)
    return done


def _image(path: Path, colour, seed: int, size=(40, 36)):
    rng = np.random.default_rng(seed)
    w, h = size
    pixels = np.zeros((h, w, 3), np.float64) + colour
    pixels[rng.integers(0, h // 2):, rng.integers(0, w // 2):] *= 0.5  # a darker corner somewhere
    pixels += rng.normal(0, 12, pixels.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tunit-data")
    for c, (name, colour) in enumerate(COLOURS.items()):
        for i in range(4):
            _image(root / name / f"{name}_{i}.png", colour, 10 * c + i)
    return root


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("tunit-run") / "run"
    done = ugatit_process("train", data, *[a for a in TINY if a != "--quiet"], "--iterations", "4", "--output", out)
    (out.parent / "train.stderr").write_text(done.stderr)  # the summary's command, checked below
    return out


def test_resume_with_more_iterations_keeps_the_phases(data, tmp_path):
    """The warm-up and EMA start that default to fractions of --iterations are those of the run's start: a
    resume with a larger --iterations does not go back to the warm-up after the GAN phase began."""
    at = TINY.index("--warmup-iterations")
    tiny = TINY[:at] + TINY[at + 2:]  # the defaults: 65/200 of --iterations
    run = tmp_path / "run"
    ugatit("train", data, *tiny, "--log-every", "1", "--sample-every", "100", "--iterations", "1", "--output", run)
    train = json.loads((run / "config.json").read_text())["train"]
    assert (train["warmup_iterations"], train["ema_start"]) == (0, 0)  # round(1 * 65 / 200), + round(1 / 200)
    done = ugatit("train", data, "--resume", "--output", run, "--iterations", "6", "--save-every", "100")
    said = " ".join(done.stderr.split())  # the console wraps long lines
    assert "--iterations changed from 1 to 6" in said and "alone for the first 0 iterations" in said
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in lines] == list(range(1, 7))
    assert all("g_loss" in r for r in lines)  # never back to the warm-up (6 * 65 / 200 would be 2)
    train = json.loads((run / "config.json").read_text())["train"]
    assert (train["iterations"], train["warmup_iterations"], train["ema_start"]) == (6, 0, 0)
    # a shorter --iterations than the run has done: nothing to do, said as such, nothing rewritten
    done = ugatit("train", data, "--resume", "--output", run, "--iterations", "3", ok=False)
    assert done.returncode == 2
    assert "already at iteration 6 of --iterations 3; nothing to do" in " ".join(done.stderr.split())
    assert json.loads((run / "config.json").read_text())["train"]["iterations"] == 6


def _pixels(path: Path, size: int = 32) -> torch.Tensor:
    """The official test transform, restated: RGB, bilinear resize, [-1, 1]; 1 x 3 x size x size."""
    img = Image.open(path).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(img, np.float32) / 127.5 - 1).permute(2, 0, 1)[None]


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), np.int16)


def _quantised(x: torch.Tensor) -> np.ndarray:
    return ((x[0].clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0).numpy().astype(np.int16)


def test_train_writes_the_run_and_resumes_exactly(data, run, tmp_path):
    config = json.loads((run / "config.json").read_text())
    assert config["family"] == "tunit" and config["model"]["k"] == 3 and config["train"]["batch_size"] == 4
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in lines] == [2, 4]
    for record in lines:  # C's pseudo-domains of the 2 x 4 images since the last line
        assert len(record["cluster_sizes"]) == 3 and sum(record["cluster_sizes"]) == 8
    assert "iic" in lines[0] and "g_loss" not in lines[0]  # iterations 1-2: the guiding network's warm-up
    assert "g_loss" in lines[1] and "d_loss" in lines[1]  # then the GAN phase
    step = run / "checkpoints" / "step_00000004"
    assert {p.name for p in step.glob("*.safetensors")} == {"C.safetensors", "D.safetensors", "G.safetensors",
                                                           "ema_C.safetensors", "ema_G.safetensors",
                                                           "ema_styles.safetensors"}
    styles = load_file(step / "ema_styles.safetensors")
    assert styles["styles"].shape == (3, 8) and int(styles["counts"].sum()) == 8  # every training image
    assert {p.name for p in (run / "samples").iterdir()} == {f"{n}_0000000{i}.png" for n in ("reference", "domains")
                                                            for i in (2, 4)}
    with Image.open(run / "samples" / "reference_00000004.png") as grid:  # 4 sources x 4 references, + 1
        assert grid.size == (5 * 32, 5 * 32)

    from ugatit_cli.train.run import train

    again = tmp_path / "again"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the CLI run (OMP_NUM_THREADS=1): the same float sums
    try:
        train(data, {**SETTINGS, "iterations": 2}, arch="tunit", output=again, progress=False)
        summary = train(data, {"iterations": 4}, output=again, resume=True, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert summary.iteration == 4
    for name in ("C", "D", "G", "ema_C", "ema_G", "ema_styles"):
        ours = load_file(again / "checkpoints" / "step_00000004" / f"{name}.safetensors")
        straight = load_file(step / f"{name}.safetensors")
        assert ours.keys() == straight.keys()
        for key in ours:
            assert torch.equal(ours[key], straight[key]), f"{name}.{key}"


def test_translate_with_a_reference_or_a_domain(data, run, tmp_path):
    from ugatit_cli.families.tunit.networks import build
    from ugatit_cli.families.tunit.step import domain_styles

    sources, references = data / "moss", data / "sky"
    done = ugatit("translate", sources, "--model", run, "-o", tmp_path / "none", ok=False)
    assert done.returncode == 2 and "give --reference IMAGE|DIR or --domain K" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1

    ugatit("translate", sources, "--model", run, "-o", tmp_path / "one", "--reference", references / "sky_0.png")
    ugatit("translate", sources, "--model", run, "-o", tmp_path / "all", "--reference", references)
    names = sorted(p.name for p in (tmp_path / "all" / "moss").iterdir())  # a folder's results under its name
    assert names == sorted(f"moss_{i}_sky_{j}.png" for i in range(4) for j in range(4))

    step = run / "checkpoints" / "step_00000004"
    config = json.loads((run / "config.json").read_text())["model"]
    from ugatit_cli.families.tunit.config import TunitConfig

    cfg = TunitConfig.from_dict(config)
    g, c = build(cfg, "G").eval(), build(cfg, "C").eval()
    g.load_state_dict(load_file(step / "ema_G.safetensors"))
    c.load_state_dict(load_file(step / "ema_C.safetensors"))
    x = _pixels(sources / "moss_2.png")
    with torch.no_grad():
        expected = g(x, c(_pixels(references / "sky_3.png"), sty=True))
        assert np.abs(_png(tmp_path / "all" / "moss" / "moss_2_sky_3.png") - _quantised(expected)).max() <= 1
        expected = g(x, c(_pixels(references / "sky_0.png"), sty=True))
        assert np.abs(_png(tmp_path / "one" / "moss" / "moss_2.png") - _quantised(expected)).max() <= 1

        # --domain k: the mean style code of C_EMA over the training images assigned to k
        every = torch.cat([_pixels(p) for p in sorted(data.rglob("*.png"))])
        styles, counts = domain_styles(c, every, 3)
    stored = load_file(step / "ema_styles.safetensors")
    torch.testing.assert_close(stored["styles"], styles, atol=1e-5, rtol=1e-5)
    assert torch.equal(stored["counts"], counts)
    k = int(counts.argmax())
    ugatit("translate", sources, "--model", run, "-o", tmp_path / "domain", "--domain", k)
    with torch.no_grad():
        expected = g(x, styles[k:k + 1])
    assert np.abs(_png(tmp_path / "domain" / "moss" / "moss_2.png") - _quantised(expected)).max() <= 1
    empty = [i for i in range(3) if counts[i] == 0]
    if empty:
        done = ugatit("translate", sources, "--model", run, "-o", tmp_path / "x", "--domain", empty[0], ok=False)
        assert done.returncode == 2 and "no style code" in done.stderr
    done = ugatit("translate", sources, "--model", run, "-o", tmp_path / "x", "--domain", 3, ok=False)
    assert done.returncode == 2 and "pseudo-domains 0 to 2" in done.stderr


def test_unreadable_references_are_left_out_with_a_warning(data, run, tmp_path):
    """A reference folder with a damaged image: the others are used (one warning line names it, the summary
    counts the files written); a damaged single reference, or a folder of damaged ones, is one error line."""
    refs = tmp_path / "refs"
    refs.mkdir()
    for name in ("sky_0.png", "sky_1.png"):
        (refs / name).write_bytes((data / "sky" / name).read_bytes())
    (refs / "broken.png").write_bytes((data / "sky" / "sky_2.png").read_bytes()[:60])  # truncated
    out = tmp_path / "out"
    done = ugatit("translate", data / "moss", "--model", run, "-o", out, "--reference", refs)
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "broken.png: reference image left out" in warnings[0], done.stderr
    assert sorted(p.name for p in (out / "moss").iterdir()) == sorted(
        f"moss_{i}_sky_{j}.png" for i in range(4) for j in range(2))
    assert "Translated 4 images (8 files written)" in done.stderr, done.stderr

    done = ugatit("translate", data / "moss", "--model", run, "-o", tmp_path / "x", "--reference",
                  refs / "broken.png", ok=False)
    assert done.returncode == 2 and "broken.png: --reference:" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    (refs / "sky_0.png").unlink()
    (refs / "sky_1.png").write_bytes(b"")
    done = ugatit("translate", data / "moss", "--model", run, "-o", tmp_path / "x", "--reference", refs, ok=False)
    assert done.returncode == 2 and "none of its 2 images can be read" in done.stderr
    assert not (tmp_path / "x").exists()


def test_cluster_writes_each_images_domain(data, run, tmp_path):
    out = tmp_path / "clusters"
    done = ugatit("cluster", data, "--model", run, "--output", out, "--link", "--quiet")
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert len(rows) == 8 and (out / "domains.csv").read_text() == done.stdout
    from ugatit_cli.families.tunit.cluster import assign
    from ugatit_cli.store.sources import resolve_model

    model = resolve_model(str(run))
    files = sorted(data.rglob("*.png"))
    domains, probs = assign(model.nets["guiding"].eval(), torch.cat([_pixels(p) for p in files]))
    got = {Path(r["image"]).name: (int(r["domain"]), float(r["probability"])) for r in rows}
    for path, d, p in zip(files, domains.tolist(), probs.max(1).values.tolist(), strict=True):
        assert got[path.name][0] == d and abs(got[path.name][1] - p) < 1e-5
        link = out / f"domain_{d}" / data.name / path.parent.name / path.name
        assert link.is_symlink() and link.resolve() == path.resolve()
    assert oct((out / "domains.csv").stat().st_mode & 0o777) == oct(0o666 & ~_umask())

    done = ugatit("cluster", data, "--model", run, "--output", out, "--copy", ok=False)  # the table exists
    assert done.returncode == 2 and "domains.csv: exists" in done.stderr
    copies = tmp_path / "copies"
    report = json.loads(ugatit("cluster", data / "sky", "--model", run, "-o", copies, "--copy", "--json",
                               "-q").stdout)
    assert report["k"] == 3 and sum(report["counts"]) == 4
    for row in report["images"]:
        placed = Path(row["placed"])
        assert not placed.is_symlink() and placed.read_bytes() == Path(row["image"]).read_bytes()
    done = ugatit("cluster", data, "--model", run, "--link", ok=False)
    assert done.returncode == 2 and "--link needs --output" in done.stderr


def test_a_length_that_ends_before_g_ema_starts_says_the_generator_stays_untrained():
    from ugatit_cli.families import get_family
    from ugatit_cli.families.base import RunConfig

    family = get_family("tunit")
    hyper = family.hyper_params(warmup_iterations=1, ema_start=5)  # as a resume reads them from the run
    note = family.schedule_note(RunConfig(iterations=4, batch_size=4), hyper)
    assert "the generator it saves stays untrained (pass --iterations above 5, or --ema-start" in note, note
    assert "untrained" not in family.schedule_note(RunConfig(iterations=6, batch_size=4), hyper)


def test_cluster_results_written_into_the_data_are_not_read_again(data, run, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    ugatit("cluster", copy, "--model", run, "-o", copy / "sorted", "--copy", "-q")
    assert len(list((copy / "sorted").rglob("*.png"))) == 8
    report = json.loads(ugatit("cluster", copy, "--model", run, "--json", "-q").stdout)
    assert sum(report["counts"]) == 8  # the images, not their copies in sorted/ as well


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_export_folder_and_onnx(data, run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    folder = tmp_path / "folder"
    ugatit("export", run, "-o", folder, "--quiet")
    assert {p.name for p in folder.iterdir()} == {"README.md", "config.json", "generator.safetensors",
                                                  "guiding_network.safetensors", "style_codes.safetensors"}
    step = run / "checkpoints" / "step_00000004"
    for ours, theirs in (("generator", "ema_G"), ("guiding_network", "ema_C"), ("style_codes", "ema_styles")):
        a, b = load_file(folder / f"{ours}.safetensors"), load_file(step / f"{theirs}.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    onnx = tmp_path / "onnx"
    ugatit("export", folder, "-o", onnx, "--format", "onnx", "--quiet")
    from ugatit_cli.store.sources import resolve_model

    model = resolve_model(str(folder))
    g, c, styles = (model.nets[k] for k in ("generator", "guiding", "styles"))
    x = torch.cat([_pixels(data / "moss" / "moss_1.png"), _pixels(data / "sky" / "sky_2.png", 48)[..., :32, :32]])
    session = ort.InferenceSession(str(onnx / "guiding_network.onnx"))
    logits, style = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        out = c(x)
        np.testing.assert_allclose(logits, out["disc"].numpy(), atol=1e-4)
        np.testing.assert_allclose(style, out["cont"].numpy(), atol=1e-4)
        session = ort.InferenceSession(str(onnx / "generator.onnx"))
        (image,) = session.run(None, {"input": x.numpy(), "style": out["cont"].flip(0).numpy()})
        np.testing.assert_allclose(image, g(x, out["cont"].flip(0)).numpy(), atol=1e-4)
    # the style codes are a table beside the graphs, with the counts that say which domains hold images
    stored = load_file(onnx / "style_codes.safetensors")
    assert torch.equal(stored["styles"], styles.styles) and torch.equal(stored["counts"], styles.counts)
    assert not (onnx / "style_codes.onnx").exists()


def _translations(folder: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(folder).as_posix(): _png(p) for p in sorted(folder.rglob("*.png"))}


def _cases(data: Path, run: Path) -> dict[str, list]:
    counts = load_file(run / "checkpoints" / "step_00000004" / "ema_styles.safetensors")["counts"]
    return {"domain": ["--domain", int(counts.argmax())], "one": ["--reference", data / "sky" / "sky_1.png"],
            "all": ["--reference", data / "sky"], "rr": ["--reference", data, "--round-robin"]}


@pytest.fixture(scope="module")
def torch_translations(data, run, tmp_path_factory):
    """What --backend torch writes for each of :func:`_cases`."""
    root = tmp_path_factory.mktemp("tunit-torch")
    out = {}
    for name, options in _cases(data, run).items():
        ugatit("translate", data / "moss", "--model", run, "-o", root / name, "--backend", "torch", *options)
        out[name] = _translations(root / name)
        assert len(out[name]) == (16 if name == "all" else 4)
    return out


def _same(got: dict[str, np.ndarray], expected: dict[str, np.ndarray], name: str) -> None:
    assert got.keys() == expected.keys(), name
    assert all(np.abs(got[f] - expected[f]).max() <= 1 for f in expected), name


def test_onnxruntime_and_auto_backends_translate_as_torch(data, run, torch_translations, tmp_path, monkeypatch):
    """--backend onnxruntime and --backend auto (many images: exported once; then the cached graph for any
    run) give torch's translations for --domain and --reference (file, folder, round-robin); the graph's
    results are within 1e-4 of PyTorch's."""
    pytest.importorskip("onnxruntime")
    from ugatit_cli import translation
    from ugatit_cli.store.sources import resolve_model

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cases = _cases(data, run)
    done = ugatit("translate", data / "moss", "--model", run, "-o", tmp_path / "ort", "--backend", "onnxruntime",
                  *cases["all"], "--json")
    assert json.loads(done.stdout)["backend"] == "onnxruntime"
    _same(_translations(tmp_path / "ort"), torch_translations["all"], "all")
    monkeypatch.setattr(translation, "AUTO_ONNX_MIN_IMAGES", 2)
    for name, options in cases.items():
        done = ugatit("translate", data / "moss", "--model", run, "-o", tmp_path / name, *options, "--json")
        assert json.loads(done.stdout)["backend"] == "onnxruntime", name
        _same(_translations(tmp_path / name), torch_translations[name], name)

    # the graph against PyTorch, unquantised: the translator's own feeds
    model = resolve_model(str(run))
    plan = translation._Plan.for_device(torch.device("cpu"), None, None)
    x = torch.cat([_pixels(p) for p in sorted((data / "moss").glob("*.png"))])
    for options in ({"domain": cases["domain"][1]}, {"reference": data / "sky"}):
        reference = translation._prepare_translator(model, None, None, dict(options), plan, "torch")
        graph = translation._prepare_translator(model, None, None, dict(options), plan, "onnxruntime")
        with torch.inference_mode():
            want, got = reference.forward(x, {}), graph.forward(x, {})
        assert want.keys() == got.keys()
        for key in want:
            torch.testing.assert_close(got[key], want[key], atol=1e-4, rtol=0)


def test_an_onnx_export_folder_translates_and_clusters(data, run, torch_translations, tmp_path):
    """An ONNX export folder as MODEL: --domain (its style_codes.safetensors), --reference (file, folder,
    round-robin: guiding_network.onnx) give torch's translations; cluster gives the model folder's domains, with
    probabilities equal to float rounding (onnxruntime's Winograd convolutions may move the sixth decimal); the
    exporter's own warnings do not leak while its progress shows."""
    pytest.importorskip("onnxruntime")
    onnx = tmp_path / "onnx"
    done = ugatit("export", run, "-o", onnx, "--format", "onnx")
    assert "warning" not in done.stderr.lower(), done.stderr
    for name, options in _cases(data, run).items():
        done = ugatit("translate", data / "moss", "--model", onnx, "-o", tmp_path / name, *options, "--json")
        assert json.loads(done.stdout)["backend"] == "onnxruntime"
        _same(_translations(tmp_path / name), torch_translations[name], name)
    ugatit("cluster", data, "--model", run, "-o", tmp_path / "clusters_torch")
    ugatit("cluster", data, "--model", onnx, "-o", tmp_path / "clusters_onnx")
    a, b = (list(csv.DictReader((tmp_path / f"clusters_{m}" / "domains.csv").open())) for m in ("torch", "onnx"))
    assert [(r["image"], r["domain"]) for r in a] == [(r["image"], r["domain"]) for r in b] and len(a) > 0
    np.testing.assert_allclose([float(r["probability"]) for r in a], [float(r["probability"]) for r in b],
                               atol=2e-6, rtol=0)


def _write_official(path: Path, size: int = 32, k: int = 3, sty_dim: int = 8, nf: int = 16) -> dict:
    """An official ``model_N.ckpt`` as clovaai/tunit's save_model writes it under DDP (``module.`` keys), with
    random weights in every tensor; returns the state dicts without the prefix."""
    from ugatit_cli.families.tunit.config import TunitConfig
    from ugatit_cli.families.tunit.networks import build
    from ugatit_cli.families.tunit.official import official_state_dict

    config = TunitConfig(size=size, k=k, sty_dim=sty_dim, nf=nf)
    states = {name: ref.randomise(official_state_dict(build(config, name), name), seed=20 + i)
              for i, name in enumerate(("C", "C_EMA", "D", "G", "G_EMA"))}
    torch.save({"epoch": 7, **{f"{n}_state_dict": {f"module.{k}": v for k, v in s.items()} for n, s in states.items()}},
               path)
    return states


def test_official_checkpoint_through_the_cli_equals_the_official_networks(tmp_path):
    checkpoint = tmp_path / "model_7.ckpt"
    states = _write_official(checkpoint)
    source, reference = tmp_path / "in" / "photo.png", tmp_path / "style.png"
    _image(source, (200, 120, 40), 1, size=(45, 37))
    _image(reference, (40, 90, 200), 2, size=(30, 50))
    ugatit_process("translate", source, "--model", checkpoint, "--reference", reference, "-o", tmp_path / "out")
    x, r = _pixels(source), _pixels(reference)
    with torch.no_grad():
        expected = ref.generator(states["G_EMA"], x, ref.guiding(states["C_EMA"], r)["cont"])
    assert np.abs(_png(tmp_path / "out" / "photo.png") - _quantised(expected)).max() <= 1

    # before quantisation, on the tensors the translate pipeline makes: 1e-5
    from ugatit_cli.core.images import open_rgb, pixels_to_tensor, resized_pixels
    from ugatit_cli.families.tunit import FAMILY
    from ugatit_cli.store.sources import resolve_model

    model = resolve_model(str(checkpoint))
    assert model.family is FAMILY and (model.config.size, model.config.k, model.config.sty_dim) == (32, 3, 8)
    translator = FAMILY.translator(model, None, None, {"reference": reference})
    ours_x = pixels_to_tensor(torch.from_numpy(resized_pixels(open_rgb(source), 32).copy()))[None]
    torch.testing.assert_close(ours_x, x, atol=1e-6, rtol=0)
    with torch.no_grad():
        ours = translator.forward(ours_x, {})["image"]
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)

    # no domain style codes in an official checkpoint: --domain says so; cluster works
    done = ugatit("translate", source, "--model", checkpoint, "--domain", 1, "-o", tmp_path / "d", ok=False)
    assert done.returncode == 2 and "official checkpoints hold none" in done.stderr
    ugatit("export", checkpoint, "-o", tmp_path / "converted", "-q")
    card = (tmp_path / "converted" / "README.md").read_text()
    assert "license: cc-by-nc-4.0" in card and "non-commercial use only" in card
    assert load_file(tmp_path / "converted" / "style_codes.safetensors")["counts"].sum() == 0
    rows = list(csv.DictReader(io.StringIO(ugatit("cluster", source, "--model", checkpoint, "-q").stdout)))
    with torch.no_grad():
        logits = ref.guiding(states["C_EMA"], x)["disc"]
    assert int(rows[0]["domain"]) == int(logits.argmax())


def test_style_codes_of_an_official_checkpoint_from_a_folder_of_images(data, tmp_path):
    checkpoint = tmp_path / "model_3.ckpt"
    states = _write_official(checkpoint)
    source = tmp_path / "in" / "photo.png"
    _image(source, (200, 120, 40), 1, size=(45, 37))
    files = sorted(data.rglob("*.png"))
    # what --style-data means, restated on the official networks: C_EMA (eval mode) sorts each image into the
    # argmax of its logits; a domain's code is the mean of its images' style codes
    with torch.no_grad():
        out = ref.guiding(states["C_EMA"], torch.cat([_pixels(p) for p in files]))
    domains = out["disc"].argmax(1)
    counts = torch.bincount(domains, minlength=3)
    styles = torch.stack([out["cont"][domains == d].mean(0) if counts[d] else torch.zeros(8) for d in range(3)])
    k = int(counts.argmax())
    with torch.no_grad():
        expected = _quantised(ref.generator(states["G_EMA"], _pixels(source), styles[k:k + 1]))

    ugatit("translate", source, "--model", checkpoint, "--domain", k, "--style-data", data, "-o", tmp_path / "t", "-q")
    assert np.abs(_png(tmp_path / "t" / "photo.png") - expected).max() <= 1

    # export: the model folder carries the codes, and --domain works from it alone
    ugatit("export", checkpoint, "-o", tmp_path / "folder", "--style-data", data, "-q")
    stored = load_file(tmp_path / "folder" / "style_codes.safetensors")
    torch.testing.assert_close(stored["styles"], styles, atol=1e-5, rtol=1e-5)
    assert torch.equal(stored["counts"], counts) and int(counts.sum()) == len(files)
    assert f"computed from {len(files)} image(s) of `{data.name}`" in (tmp_path / "folder" / "README.md").read_text()
    ugatit("translate", source, "--model", tmp_path / "folder", "--domain", k, "-o", tmp_path / "f", "-q")
    assert np.abs(_png(tmp_path / "f" / "photo.png") - expected).max() <= 1

    # one image: the other domains have none there, which --domain says in one line naming the folder
    one = tmp_path / "one"
    _image(one / "a.png", (60, 170, 70), 5)
    with torch.no_grad():
        alone = ref.guiding(states["C_EMA"], _pixels(one / "a.png"))
        own = int(alone["disc"].argmax())
        expected = _quantised(ref.generator(states["G_EMA"], _pixels(source), alone["cont"]))
    empty = [d for d in range(3) if d != own]
    # (one image file does too: the demo uploads files)
    ugatit("translate", source, "--model", checkpoint, "--domain", own, "--style-data", one / "a.png",
           "-o", tmp_path / "a", "-q")
    assert np.abs(_png(tmp_path / "a" / "photo.png") - expected).max() <= 1
    done = ugatit("translate", source, "--model", checkpoint, "--domain", empty[0], "--style-data", one,
                  "-o", tmp_path / "e", ok=False)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert f"--domain {empty[0]}" in done.stderr and str(one) in done.stderr.replace("\n", "")
    # bad uses: one line each, nothing written
    done = ugatit("translate", source, "--model", checkpoint, "--reference", source, "--style-data", one,
                  "-o", tmp_path / "e", ok=False)
    assert done.returncode == 2 and "--style-data applies to --domain" in done.stderr
    done = ugatit("export", checkpoint, "-o", tmp_path / "none", "--style-data", tmp_path / "missing", ok=False)
    assert done.returncode == 2 and "missing: not a folder of images" in done.stderr
    assert not (tmp_path / "e").exists() and not (tmp_path / "none").exists()


def test_eval_without_labels_compares_each_pseudo_domain(data, run, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in sorted(data.rglob("*.png")):
        (flat / path.name).write_bytes(path.read_bytes())
    report = json.loads(ugatit("eval", flat, "--model", run, "--kid", "--fid", "--json", "--quiet",
                               "--kid-subset-size", "2", "--feature-extractor", "small_extractor:SmallFeatures",
                               "--no-cache").stdout)
    from ugatit_cli.families.tunit.cluster import assign
    from ugatit_cli.store.sources import resolve_model

    model = resolve_model(str(run))
    domains, _ = assign(model.nets["guiding"].eval(), torch.cat([_pixels(p) for p in sorted(flat.iterdir())]))
    sizes = np.bincount(domains.numpy(), minlength=3)
    measured = [k for k in range(3) if sizes[k] >= 2 and sizes[k] < 8]  # 2+ real images and others to translate
    assert [r["direction"] for r in report["results"]] == [f"domain {k}" for k in measured]
    for r in report["results"]:
        k = int(r["direction"].split()[1])
        assert r["real_images"] == sizes[k] and r["fake_images"] == 8 - sizes[k]
    assert "cluster_accuracy" not in report.get("scores", {})
    if measured:
        assert report["scores"]["mFID"] == pytest.approx(np.mean([r["fid"] for r in report["results"]]))


def test_training_batches_are_seeded_and_semi_supervised_batches_carry_labels(data, tmp_path):
    from ugatit_cli.errors import UserError
    from ugatit_cli.families.tunit import FAMILY
    from ugatit_cli.families.tunit.hyper import TunitOptions
    from ugatit_cli.families.tunit.training import TunitBatches

    @dataclass
    class Run:
        iterations: int = 10
        batch_size: int = 2
        seed: int = 3
        ema: float = 0.999

    scanned = FAMILY.scan_data(data)
    assert scanned.classes == ["moss", "sky"] and len(scanned.files) == 8
    hyper = TunitOptions(size=32, k=3, sty_dim=8, p_semi=0.5).recipe(Run())
    batches = TunitBatches(scanned, hyper)
    again = TunitBatches(scanned, hyper)
    labelled = [k for k in range(10) if "y" in batches[k]]
    assert labelled == [1, 3, 5, 7, 9]  # a share p_semi of the iterations
    for k in (0, 1, 6, 7):
        a, b = batches[k], again[k]
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
        assert a["x_org"].shape == a["x_tf"].shape == (2, 3, 32, 32)
        assert not torch.equal(a["x_org"], a["x_tf"])  # the IIC view is another view
    names = [scanned.files[i] for i in batches.labelled]  # the labelled subset: half of each class
    assert sorted(n.split("/")[0] for n in names) == ["moss", "moss", "sky", "sky"]
    y = batches[1]["y"]
    assert set(y.tolist()) <= {0, 1}
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.png").write_bytes((data / "moss" / "moss_0.png").read_bytes())
    (flat / "b.png").write_bytes((data / "sky" / "sky_0.png").read_bytes())
    (flat / "broken.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning, match="broken.png"):
        scanned = FAMILY.scan_data(flat)
    assert scanned.files == ["a.png", "b.png"]
    with pytest.raises(UserError, match="--p-semi needs the images in class subfolders"):
        TunitBatches(scanned, TunitOptions(size=32, k=3, sty_dim=8, p_semi=0.5).recipe(Run()))
    done = ugatit("train", flat, *TINY, "--iterations", "2", "--batch-size", "1", "--output", tmp_path / "r", ok=False)
    assert done.returncode == 2 and "batch_size must be >= 2" in done.stderr
    assert not (tmp_path / "r").exists()  # nothing left behind by a run that could not start


def test_init_from_an_official_checkpoint(data, tmp_path):
    checkpoint = tmp_path / "model_7.ckpt"
    states = _write_official(checkpoint)
    from ugatit_cli.train.run import train

    run = tmp_path / "run"
    settings = {**SETTINGS, "nf": 16, "iterations": 1, "save_every": 1, "sample_every": 100}
    train(data, settings, arch="tunit", output=run, init_from=checkpoint, progress=False)
    step = run / "checkpoints" / "step_00000001"
    # one warm-up iteration trains the guiding network only: G, D and G_EMA are still the official weights
    for ours, theirs in (("G", "G"), ("D", "D"), ("ema_G", "G_EMA")):
        saved = load_file(step / f"{ours}.safetensors")
        expected = {k: v for k, v in states[theirs].items() if k in saved}  # the AdaIN buffers are dropped
        assert saved.keys() == expected.keys() and all(torch.equal(saved[k], expected[k]) for k in saved), ours
    assert not torch.equal(load_file(step / "C.safetensors")["cont.weight"], states["C"]["cont.weight"])
    done = ugatit("train", data, *TINY, "--iterations", "1", "--init-from", checkpoint, "--output", tmp_path / "r2",
                  ok=False)  # nf 8 does not fit the checkpoint's 16
    assert done.returncode == 2 and "--nf 16" in done.stderr


def test_the_summary_card_and_messages_name_working_options(data, run, tmp_path):
    """The training summary's translate command works as shown; the exported card's --domain example is a
    pseudo-domain that holds images; export --direction does not suggest options export lacks."""
    import re
    import shlex

    summary = (run.parent / "train.stderr").read_text()
    command = re.search(r"with: ugatit (translate IMAGES .*?)\s+\(or export", " ".join(summary.split())).group(1)
    args = shlex.split(command)
    args[1] = str(data / "moss")
    ugatit(*args, "-o", tmp_path / "out", "--quiet")
    assert len(list((tmp_path / "out").rglob("*.png"))) == 4

    counts = load_file(run / "checkpoints" / "step_00000004" / "ema_styles.safetensors")["counts"]
    ugatit("export", run, "-o", tmp_path / "model", "--quiet")
    card = (tmp_path / "model" / "README.md").read_text()
    domain = int(re.search(r"--domain (\d+)", card).group(1))
    assert counts[domain] == counts.max() > 0

    done = ugatit("export", run, "-o", tmp_path / "x", "--direction", "a2b", ok=False)
    assert done.returncode == 2 and "--reference" not in done.stderr and "direction" in done.stderr
