"""``ugatit eval``: KID/FID numerics against torch-fidelity and by hand, features, cache, bad images, errors."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from small_extractor import SmallFeatures
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric

import ugatit_cli
from ugatit_cli.errors import UserError
from ugatit_cli.evaluate import metrics
from ugatit_cli.evaluate.evaluation import evaluate_folders
from ugatit_cli.evaluate.features import InceptionFeatures, default_cache_dir, folder_features, random_inception_weights
from ugatit_cli.families.model_folder import write_model_folder
from ugatit_cli.families.ugatit import Generator, UGATITConfig
from ugatit_cli.families.ugatit.family import UGATITModel
from ugatit_cli.translation import translate

SMALL = "small_extractor:SmallFeatures"
TESTS_DIR = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path, monkeypatch):
    """Feature cache and torch hub (Inception weights) in a temporary folder, never the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


def run_cli(*args: str, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(extra_env or {})}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "ugatit_cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def write_images(folder: Path, count: int, seed: int, size: int = 24, brightness: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        pixels = rng.integers(0, 200, (size, size, 3)) + brightness
        path = folder / f"img_{i:02d}.png"
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def random_features(n: int, d: int, seed: int, shift: float = 0.0, dtype=torch.float64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(n, d, generator=generator, dtype=torch.float64) * 2 + shift).to(dtype)


# --- KID and FID numerics -----------------------------------------------------------------------------------


@pytest.mark.parametrize("gram_limit", [metrics._GRAM_LIMIT, 0], ids=["one-kernel-matrix", "kernel-per-subset"])
@pytest.mark.parametrize("n_real,n_fake,subset_size", [(40, 30, 1000), (70, 60, 25)], ids=["n-below", "n-above"])
def test_kid_equals_torch_fidelity(n_real, n_fake, subset_size, gram_limit, monkeypatch):
    monkeypatch.setattr(metrics, "_GRAM_LIMIT", gram_limit)
    real, fake = random_features(n_real, 64, 1), random_features(n_fake, 64, 2, shift=0.1)
    mean, std = ugatit_cli.kid_from_features(real, fake, subsets=20, subset_size=subset_size, seed=7)
    # torch-fidelity insists on n >= subset size; ours uses min(subset_size, n). Its input1 is the generated set.
    theirs = kid_features_to_metric(fake, real, kid_subsets=20, kid_subset_size=min(subset_size, n_real, n_fake),
                                    rng_seed=7, verbose=False)
    assert mean == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-10)
    assert std == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-6, abs=1e-12)
    assert mean > 0.01  # the shifted set is measurably different
    assert std > 0  # different subsets of the larger set(s) give different values
    assert ugatit_cli.kid_from_features(real, fake, subsets=20, subset_size=subset_size, seed=8)[0] != mean


def test_kid_of_float32_inception_like_features_matches_torch_fidelity_to_float32_precision():
    real, fake = random_features(50, 512, 3, dtype=torch.float32), random_features(50, 512, 4, 0.02, torch.float32)
    mean, std = ugatit_cli.kid_from_features(real, fake, subsets=10, subset_size=40, seed=2020)
    theirs = kid_features_to_metric(fake, real, kid_subsets=10, kid_subset_size=40, rng_seed=2020, verbose=False)
    assert mean == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-3)
    assert std == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-2)


def test_polynomial_kernel_unbiased_mmd2_by_hand():
    x = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    y = np.array([[2.0, 1.0], [0.0, 0.0], [1.0, 3.0]])

    def k(a, b):
        return (sum(ai * bi for ai, bi in zip(a, b, strict=True)) / 2 + 1) ** 3

    m = 3
    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    between = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    expected = within - 2 * between
    assert metrics.polynomial_kernel(x, y)[0, 0] == pytest.approx(k(x[0], y[0]))
    kernels = metrics.polynomial_kernel(x, x), metrics.polynomial_kernel(x, y), metrics.polynomial_kernel(y, y)
    assert metrics.unbiased_mmd2(*kernels) == pytest.approx(expected, rel=1e-12)
    # one subset holding every row is the same estimate whatever the order it was drawn in
    mean, std = ugatit_cli.kid_from_features(y, x, subsets=3, subset_size=3)
    assert mean == pytest.approx(expected, rel=1e-12) and std == pytest.approx(0, abs=1e-12)


def test_fid_closed_forms_and_torch_fidelity():
    a = random_features(300, 8, 5).numpy()
    assert ugatit_cli.fid_from_features(a, a) == pytest.approx(0, abs=1e-9)
    shift = np.linspace(-1, 1, 8)
    assert ugatit_cli.fid_from_features(a, a + shift) == pytest.approx(shift @ shift, rel=1e-9)
    # b = s a + c: covariance s^2 S, so FID = |mu_a - mu_b|^2 + (1 - s)^2 tr(S)
    s = 1.7
    b = s * a + shift
    diff = a.mean(0) - b.mean(0)
    expected = diff @ diff + (1 - s) ** 2 * np.trace(np.cov(a, rowvar=False))
    assert ugatit_cli.fid_from_features(a, b) == pytest.approx(expected, rel=1e-9)
    # fewer rows than dimensions (singular covariances), like 100 test images in 2048-d Inception space
    few_real, few_fake = random_features(20, 64, 6), random_features(25, 64, 7, shift=0.3)
    theirs = fid_statistics_to_metric(fid_features_to_statistics(few_real), fid_features_to_statistics(few_fake), False)
    assert ugatit_cli.fid_from_features(few_real, few_fake) == pytest.approx(
        theirs["frechet_inception_distance"], rel=1e-6)


# --- features, cache, folders ----------------------------------------------------------------------------------


def test_feature_cache_skips_the_extractor_until_the_folder_changes(tmp_path):
    images = write_images(tmp_path / "real", 5, seed=1)
    extractor = SmallFeatures()
    first = folder_features(tmp_path / "real", extractor, batch_size=2, progress=False)
    assert (extractor.calls, extractor.images) == (3, 5) and not first.from_cache
    assert first.features.shape == (5, 16) and first.features.dtype == torch.float32
    stored = list(default_cache_dir().glob("*.safetensors"))
    assert len(stored) == 1 and stored[0].parent == tmp_path / "xdg-cache" / "ugatit-cli" / "features"
    assert torch.equal(load_file(stored[0])["features"], first.features)

    again = folder_features(tmp_path / "real", extractor, batch_size=2, progress=False)
    assert extractor.calls == 3 and again.from_cache and torch.equal(again.features, first.features)

    os.utime(images[0], ns=(1, 1))  # any change to a file recomputes the folder
    folder_features(tmp_path / "real", extractor, batch_size=2, progress=False)
    assert extractor.calls == 6
    other = SmallFeatures(seed=1)
    other.identity = "tests small-cnn 16 seed 1"  # another extractor never reuses these features
    folder_features(tmp_path / "real", other, progress=False)
    assert other.calls == 1
    folder_features(tmp_path / "real", extractor, cache=False, progress=False)
    assert extractor.calls == 7


def test_batches_hold_images_of_one_size_in_file_order(tmp_path):
    write_images(tmp_path / "mixed", 3, seed=2, size=24)
    big = Image.open(tmp_path / "mixed" / "img_01.png").resize((40, 40))
    big.save(tmp_path / "mixed" / "img_01.png")
    extractor = SmallFeatures()
    mixed = folder_features(tmp_path / "mixed", extractor, batch_size=8, cache=False, progress=False)
    assert extractor.calls == 3  # 24 px, 40 px, 24 px: three batches
    alone = [SmallFeatures()(torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1)[None])
             for p in sorted((tmp_path / "mixed").iterdir())]
    assert torch.allclose(mixed.features, torch.cat(alone), atol=1e-6)


def test_evaluate_folders_reports_kid_and_fid_of_the_features(tmp_path):
    write_images(tmp_path / "real", 8, seed=1)
    write_images(tmp_path / "fake", 6, seed=2, brightness=50)
    report = evaluate_folders(tmp_path / "real", tmp_path / "fake", fid=True, extractor=SmallFeatures(),
                              kid_subsets=10, progress=False)
    (result,) = report.comparisons
    real = folder_features(tmp_path / "real", SmallFeatures(), progress=False).features
    fake = folder_features(tmp_path / "fake", SmallFeatures(), progress=False).features
    assert (result.kid_mean, result.kid_std) == ugatit_cli.kid_from_features(real, fake, subsets=10)
    assert result.fid == ugatit_cli.fid_from_features(real, fake)
    assert (result.real_images, result.fake_images, result.kid_subset_size) == (8, 6, 6)
    assert report.ok and report.extractor == SmallFeatures.identity


def test_cli_compares_two_folders_as_json_and_names_bad_images(tmp_path):
    write_images(tmp_path / "real", 6, seed=1)
    write_images(tmp_path / "fake", 5, seed=2, brightness=50)
    good = (tmp_path / "fake" / "img_00.png").read_bytes()
    (tmp_path / "fake" / "truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "fake" / "empty.jpg").write_bytes(b"")
    (tmp_path / "real" / "notes.png").write_text("not an image")
    proc = run_cli("eval", "--kid", "--fid", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"),
                   "--json", "--kid-subsets", "10", "--feature-extractor", SMALL)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"{tmp_path / 'fake' / 'truncated.png'}: truncated or corrupt image data" in proc.stderr
    assert f"{tmp_path / 'fake' / 'empty.jpg'}: empty file (0 bytes)" in proc.stderr
    assert f"{tmp_path / 'real' / 'notes.png'}: not an image file Pillow can read" in proc.stderr
    out = json.loads(proc.stdout)
    (result,) = out["results"]
    assert (result["real_images"], result["fake_images"]) == (6, 5)
    assert {Path(f["path"]).name for f in out["failures"]} == {"truncated.png", "empty.jpg", "notes.png"}
    expected = evaluate_folders(tmp_path / "real", tmp_path / "fake", fid=True, extractor=SmallFeatures(),
                                kid_subsets=10, progress=False).comparisons[0]
    assert result["kid_mean"] == pytest.approx(expected.kid_mean, rel=1e-6)
    assert result["kid_x100_mean"] == pytest.approx(100 * expected.kid_mean, rel=1e-6)
    assert result["fid"] == pytest.approx(expected.fid, rel=1e-6)

    table = run_cli("eval", "--kid", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"),
                    "--kid-subsets", "10", "--feature-extractor", SMALL, "--quiet")
    assert table.returncode == 1
    assert f"{100 * expected.kid_mean:.2f} ± {100 * expected.kid_std:.2f}" in table.stdout


def test_cli_fake_folder_counts_translations_not_translates_extra_outputs(tmp_path):
    """translate --heatmap writes NAME.png and NAME_heatmap.png per input: only the first is a translation."""
    write_images(tmp_path / "real", 6, seed=1)
    write_images(tmp_path / "fake", 4, seed=2, brightness=50)
    for image in sorted((tmp_path / "fake").glob("*.png")):
        Image.open(image).convert("L").convert("RGB").save(image.with_name(f"{image.stem}_heatmap.png"))
    proc = run_cli("eval", "--kid", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"), "--json",
                   "--kid-subsets", "10", "--feature-extractor", SMALL, "--no-cache")
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads(proc.stdout)["results"]
    assert (result["real_images"], result["fake_images"]) == (6, 4)


def test_cli_usage_errors_exit_2(tmp_path):
    write_images(tmp_path / "real", 2, seed=1)
    # KID is the default metric (issue 9); usage errors are one red line, no boxed panel
    both = run_cli("eval", "--real", str(tmp_path / "real"))
    assert both.returncode == 2 and "--fake" in both.stderr and "╭" not in both.stderr
    assert both.stderr.strip().splitlines()[-1].startswith("error: ")
    no_model = run_cli("eval", str(tmp_path), "--kid")
    assert no_model.returncode == 2 and "--model" in no_model.stderr
    missing = run_cli("eval", "--kid", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "nope"),
                      "--feature-extractor", SMALL)
    assert missing.returncode == 2 and f"{tmp_path / 'nope'}: no such folder" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_too_few_readable_images_is_a_clear_error(tmp_path):
    write_images(tmp_path / "real", 3, seed=1)
    write_images(tmp_path / "fake", 1, seed=2)
    (tmp_path / "fake" / "broken.png").write_bytes(b"\x89PNG")
    with pytest.raises(UserError, match=r"fake: 1 readable image\(s\); KID and FID need at least 2"):
        evaluate_folders(tmp_path / "real", tmp_path / "fake", extractor=SmallFeatures(), progress=False)


def model_and_test_sets(tmp_path: Path, n_res: int = 2) -> Path:
    """A tiny U-GAT-IT model folder at ``tmp_path/model`` and ``tmp_path/data`` with testA/ (4 images) and
    testB/ (5, brighter); returns the data folder."""
    torch.manual_seed(0)
    config = UGATITConfig(img_size=32, ch=4, n_res=n_res, light=True)
    write_model_folder(UGATITModel(config, {d: Generator(config).eval() for d in ("a2b", "b2a")}), tmp_path / "model")
    data = tmp_path / "data"
    write_images(data / "testA", 4, seed=1, size=40)
    write_images(data / "testB", 5, seed=2, size=40, brightness=40)
    return data


def test_cli_evaluates_a_model_on_the_test_sets_of_a_dataset(tmp_path):
    data = model_and_test_sets(tmp_path)
    (data / "testA" / "broken.png").write_bytes(b"")
    (tmp_path / "tmp").mkdir()
    proc = run_cli("eval", str(data), "--model", str(tmp_path / "model"), "--kid", "--fid", "--direction", "both",
                   "--json", "--kid-subsets", "10", "--device", "cpu", "--feature-extractor", SMALL,
                   extra_env={"TMPDIR": str(tmp_path / "tmp")})
    assert proc.returncode == 1, proc.stderr  # broken.png was named and left out, everything else measured
    assert f"{data / 'testA' / 'broken.png'}: empty file (0 bytes)" in proc.stderr and "Traceback" not in proc.stderr
    out = json.loads(proc.stdout)
    a2b, b2a = out["results"]
    assert (a2b["direction"], a2b["fake_images"], a2b["real_images"]) == ("a2b", 4, 5)
    assert (b2a["direction"], b2a["fake_images"], b2a["real_images"]) == ("b2a", 5, 4)
    assert [Path(f["path"]).name for f in out["failures"]] == ["broken.png"]  # once, though testA is read twice
    assert not any((tmp_path / "tmp").iterdir())  # the translations were removed

    # the same numbers as translating testA into a folder and comparing that folder with testB
    translate([data / "testA"], str(tmp_path / "model"), output=tmp_path / "a2b", direction="a2b", device="cpu",
              progress=False)
    expected = evaluate_folders(data / "testB", tmp_path / "a2b", fid=True, extractor=SmallFeatures(),
                                kid_subsets=10, progress=False).comparisons[0]
    assert a2b["kid_mean"] == pytest.approx(expected.kid_mean, rel=1e-4)
    assert a2b["fid"] == pytest.approx(expected.fid, rel=1e-4)


def test_eval_leaves_out_translate_outputs_written_into_the_test_folders(tmp_path):
    data = model_and_test_sets(tmp_path, n_res=1)
    # a user looks at translations inside the data folder: one output in the translated folder, one in the real
    for out in (data / "testA" / "out", data / "testB" / "a2b"):
        done = run_cli("translate", str(data / "testA"), "--model", str(tmp_path / "model"), "-o", str(out),
                       "--device", "cpu", "--quiet")
        assert done.returncode == 0 and len(list(out.rglob("*.png"))) == 4, done.stderr
    proc = run_cli("eval", str(data), "--model", str(tmp_path / "model"), "--json", "--kid-subsets", "10",
                   "--device", "cpu", "--feature-extractor", SMALL, "--quiet")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    (a2b,) = json.loads(proc.stdout)["results"]
    assert (a2b["fake_images"], a2b["real_images"]) == (4, 5)  # the test images only, not the earlier outputs
    notes = [line for line in proc.stderr.splitlines() if "earlier ugatit results" in line]
    assert notes == [f"note: 2 folder(s) of earlier ugatit results left out ({data / 'testA' / 'out'}, "
                     f"{data / 'testB' / 'a2b'}; name one to read it)"], proc.stderr
    # a results folder named directly is read: the fake side of a two-folder comparison
    report = evaluate_folders(data / "testB", data / "testB" / "a2b", extractor=SmallFeatures(), kid_subsets=10,
                              progress=False)
    assert (report.comparisons[0].real_images, report.comparisons[0].fake_images) == (5, 4)
    assert report.left_out == [str(data / "testB" / "a2b")]


# --- the FID Inception network: weights, missing extra ---------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_inception_weights_is_one_clear_line(tmp_path):
    write_images(tmp_path / "real", 2, seed=1)
    proxy = f"http://127.0.0.1:{closed_port()}"  # every download is refused at once, with or without internet
    env = {"https_proxy": proxy, "HTTPS_PROXY": proxy, "no_proxy": "", "NO_PROXY": ""}
    proc = run_cli("eval", "--kid", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "real"),
                   extra_env=env)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "could not be downloaded" in line and "--inception-weights PATH" in line
    assert not any((tmp_path / "torch-home").rglob("*.pth"))  # no partial weights file left behind


def test_missing_extra_names_what_to_install(tmp_path, monkeypatch):
    write_images(tmp_path / "real", 2, seed=1)
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # what Python does when it is not installed
    with pytest.raises(UserError, match=r"pip install 'ugatit-cli\[eval\]'"):
        evaluate_folders(tmp_path / "real", tmp_path / "real")


class _RunsCodeWhenUnpickled:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_inception_weights_that_are_not_weights_are_refused(tmp_path):
    write_images(tmp_path / "real", 2, seed=1)
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"weights.pth: not FID Inception weights"):
        evaluate_folders(tmp_path / "real", tmp_path / "real", inception_weights=bad, progress=False)
    # torch-fidelity loads with weights_only=False; we make torch refuse pickled code anyway
    torch.save({"Conv2d_1a_3x3.conv.weight": _RunsCodeWhenUnpickled(tmp_path / "pwned")}, bad)
    with pytest.raises(UserError, match=r"weights.pth: not FID Inception weights"):
        evaluate_folders(tmp_path / "real", tmp_path / "real", inception_weights=bad, progress=False)
    assert not (tmp_path / "pwned").exists()
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ  # restored afterwards
    with pytest.raises(UserError, match="no such Inception weights file"):
        evaluate_folders(tmp_path / "real", tmp_path / "real", inception_weights=tmp_path / "nope.pth")


def test_cli_runs_the_fid_inception_network_from_local_weights(tmp_path):
    # Slow on a CPU (~1 s per image): two images per folder. That our numbers equal torch-fidelity's own
    # pipeline follows from the tests above (same network class, same uint8 input, same KID/FID).
    weights = random_inception_weights(tmp_path / "inception.pth")
    write_images(tmp_path / "real", 2, seed=1, size=16)
    write_images(tmp_path / "fake", 2, seed=2, size=16, brightness=50)
    proc = run_cli("eval", "--kid", "--fid", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"),
                   "--json", "--inception-weights", str(weights), "--device", "cpu", "--kid-subsets", "3")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["feature_extractor"].startswith("torch-fidelity inception-v3-compat 2048 sha256:")
    cache = tmp_path / "xdg-cache" / "ugatit-cli" / "features"
    real, fake = (folder_features(tmp_path / name, InceptionFeatures(weights), progress=False, cache_dir=cache)
                  for name in ("real", "fake"))
    assert real.from_cache and fake.from_cache and real.features.shape == (2, 2048)
    assert real.features.std() > 1e-3  # He-initialised random weights keep the features' scale
    (result,) = out["results"]
    assert (result["kid_mean"], result["kid_std"]) == pytest.approx(
        ugatit_cli.kid_from_features(real.features, fake.features, subsets=3), rel=1e-12)
    assert result["fid"] == pytest.approx(ugatit_cli.fid_from_features(real.features, fake.features), rel=1e-12)
    assert result["kid_mean"] > 0 and result["fid"] > 0
