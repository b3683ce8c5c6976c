"""Issue 9: real reports and attacks, each rebuilt as a small input and run through the real CLI or loader.

Every test here failed on 4d26972 (ported onto the family layout). They use tiny models (light, ch 4, 32 px),
few iterations and small hostile files the test writes itself. A hostile MODEL means nothing could start:
exit 2 (README "Exit status"). The last section tries the same kinds on the other families (pix2pixHD, TUNIT).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from ugatit_cli.cli import app
from ugatit_cli.families.model_folder import write_model_folder
from ugatit_cli.families.ugatit.config import UGATITConfig
from ugatit_cli.families.ugatit.family import UGATITModel
from ugatit_cli.families.ugatit.networks import Generator

REPO_ROOT = Path(__file__).resolve().parents[1]
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
TINY_TRAIN = ["--light", "--size", "32", "--ch", "4", "--n-res", "1", "--workers", "0", "--no-decay", "--quiet"]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(light=True, size=32, seed=0) -> UGATITModel:
    torch.manual_seed(seed)
    config = UGATITConfig(img_size=size, ch=4, n_res=1, light=light)
    return UGATITModel(config, {"a2b": Generator(config).eval(), "b2a": Generator(config).eval()})


def make_images(folder: Path, count: int = 2, size: int = 36) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(folder)))
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def make_dataset(root: Path) -> Path:
    for name, count in (("trainA", 3), ("trainB", 3), ("testA", 1), ("testB", 1)):
        make_images(root / name, count)
    return root


def invoke(*args) -> "CliRunner.Result":
    return CliRunner().invoke(app, [str(a) for a in args])


def cli(*args, timeout=300, env=None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ugatit_cli", *map(str, args)], capture_output=True, text=True,
                          env={**CHILD_ENV, **(env or {})}, timeout=timeout, **kwargs)


def one_line_error(output: str, *needles: str) -> None:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert "Traceback" not in output, output
    assert lines and lines[-1].startswith("error: "), output
    for needle in needles:
        assert needle in output, output


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    return write_model_folder(tiny_model(), tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """A real two-iteration training run (one CLI call, shared by the tests that only read it)."""
    root = tmp_path_factory.mktemp("runs")
    data = make_dataset(root / "data")
    result = invoke("train", data, *TINY_TRAIN, "--iterations", "2", "--save-every", "1", "--output", root / "run")
    assert result.exit_code == 0, result.output
    return root / "run"


def tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


# --- 1, 2: --overwrite removes only what this tool wrote ----------------------------------------------------


def test_export_overwrite_leaves_a_sibling_named_like_its_old_copy(tmp_path, model_folder):
    out = tmp_path / "out"
    assert invoke("export", model_folder, "--output", out, "--quiet").exit_code == 0
    mine = tmp_path / ".out.old"  # the name the old output used to be moved to, and deleted
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    result = invoke("export", model_folder, "--output", out, "--overwrite", "--quiet")
    assert result.exit_code == 0, result.output
    assert (mine / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.old", "out"]  # no temporary left either


def test_export_overwrite_never_replaces_the_source_or_a_folder_holding_it(tmp_path, run_folder):
    before = tree(run_folder)
    result = invoke("export", run_folder, "--output", run_folder, "--overwrite", "--quiet")
    assert result.exit_code == 2
    one_line_error(result.output, "refusing to replace", "is the source")
    # a folder that contains the source
    result = invoke("export", run_folder / "checkpoints", "--output", run_folder, "--overwrite", "--quiet")
    assert result.exit_code == 2
    one_line_error(result.output, "contains the source")
    assert tree(run_folder) == before


def test_export_overwrite_refuses_folders_with_files_it_did_not_write(tmp_path, model_folder, monkeypatch):
    out = tmp_path / "out"
    assert invoke("export", model_folder, "--output", out, "--quiet").exit_code == 0
    (out / "notes.txt").write_text("mine")
    result = invoke("export", model_folder, "--output", out, "--overwrite", "--quiet")
    assert result.exit_code == 2
    one_line_error(result.output, "notes.txt", "did not write")
    assert (out / "notes.txt").read_text() == "mine" and (out / "config.json").is_file()
    # the current directory is never replaced, even when it holds only our files
    (out / "notes.txt").unlink()
    monkeypatch.chdir(out)
    result = invoke("export", model_folder, "--output", ".", "--overwrite", "--quiet")
    assert result.exit_code == 2
    one_line_error(result.output, "current directory")


# --- 3: non-finite numbers where a model is produced or consumed -------------------------------------------


def test_diverging_training_stops_keeps_the_last_finite_checkpoint_and_leaves_no_black_outputs(tmp_path):
    data = make_dataset(tmp_path / "data")
    run = tmp_path / "run"
    # lr 3000: Adam's first step moves every weight by ~3000 (still finite: checkpoint 1 is saved), the next
    # iteration overflows; the run must stop there and keep the last finite checkpoint
    result = invoke("train", data, *TINY_TRAIN, "--iterations", "6", "--lr", "3000", "--save-every", "1",
                    "--keep", "2", "--output", run)
    assert result.exit_code == 1, result.output
    one_line_error(result.output, "training diverged at iteration", "last finite checkpoint")
    kept = sorted(p.name for p in (run / "checkpoints").glob("step_*"))
    assert kept, "the finite checkpoint was rotated out"
    assert (run / "checkpoints" / "latest").read_text().strip() == kept[-1]
    for file in (run / "checkpoints" / kept[-1]).glob("*.safetensors"):
        from safetensors.torch import load_file
        assert all(torch.isfinite(t).all() for t in load_file(file).values())
    out = tmp_path / "out"
    result = invoke("translate", make_images(tmp_path / "photos", 1), "--model", run, "--output", out, "--quiet")
    assert result.exit_code == 0, result.output  # the kept checkpoint translates
    assert np.asarray(Image.open(next(out.rglob("*.png")))).std() > 0
    # diverging before the first checkpoint leaves no run folder to block the corrected command
    result = invoke("train", data, *TINY_TRAIN, "--iterations", "4", "--lr", "3000", "--output", tmp_path / "r2")
    assert result.exit_code == 1 and "no checkpoint had been written" in result.output, result.output
    assert not (tmp_path / "r2").exists()


def test_models_with_nan_weights_are_refused_when_loaded(tmp_path):
    model = tiny_model()
    with torch.no_grad():
        next(model.generators["a2b"].parameters()).view(-1)[0] = float("nan")
    folder = write_model_folder(model, tmp_path / "nan_model")
    out = tmp_path / "out"
    result = invoke("translate", make_images(tmp_path / "photos", 1), "--model", folder, "--output", out)
    assert result.exit_code == 2
    one_line_error(result.output, "NaN or infinite")
    assert not list(out.rglob("*.png")) if out.exists() else True
    # the same weights as an official PyTorch checkpoint
    states = {"genA2B": model.generators["a2b"].state_dict(), "genB2A": model.generators["b2a"].state_dict()}
    torch.save(states, tmp_path / "nan_params_0000001.pt")
    result = invoke("export", tmp_path / "nan_params_0000001.pt", "--output", tmp_path / "exp", "--quiet")
    assert result.exit_code == 2
    one_line_error(result.output, "NaN or infinite")


# --- 4: one training process per run folder; runs are never made inside runs ---------------------------------


def test_a_run_folder_is_locked_while_it_trains(tmp_path):
    data = make_dataset(tmp_path / "data")
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "ugatit_cli", "train", str(data), *TINY_TRAIN, "--iterations",
                              "100000", "--save-every", "1000", "--log-every", "1", "--output", str(run)],
                             env=CHILD_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):
            if (run / "log.jsonl").is_file() and (run / "log.jsonl").stat().st_size:
                break
            assert first.poll() is None, first.stderr.read()
            import time
            time.sleep(0.1)
        result = budget_cli("train", data, "--resume", "--output", run, "--quiet")  # a second process
        assert result.returncode == 2
        one_line_error(result.stderr, "in use by another ugatit train", f"pid {first.pid}")
    finally:
        first.terminate()
        first.wait(60)
    assert first.returncode == 130  # it saved and stopped, untouched by the refused second run
    assert [p.name for p in (run / "checkpoints").glob("step_*")]


def test_resume_into_a_checkpoint_is_refused(tmp_path, run_folder):
    checkpoint = sorted((run_folder / "checkpoints").glob("step_*"))[-1]
    before = tree(run_folder)
    data = tmp_path / "data"
    make_dataset(data)
    for args in (["--resume", "--output", checkpoint], ["--output", checkpoint / "inner"]):
        result = invoke("train", data, *TINY_TRAIN, "--iterations", "3", *args)
        assert result.exit_code == 2, result.output
        one_line_error(result.output)
        assert "checkpoint of a run" in result.output or "inside the training run" in result.output
    assert tree(run_folder) == before


def test_a_half_deleted_checkpoint_is_removed_by_the_next_prune(tmp_path):
    data = make_dataset(tmp_path / "data")
    run = tmp_path / "run"
    common = [*TINY_TRAIN, "--save-every", "1", "--keep", "1", "--output", run]
    assert invoke("train", data, *common, "--iterations", "1").exit_code == 0
    # what a kill -9 in the middle of deleting an old checkpoint left: the folder without its state.pt
    half = run / "checkpoints" / "step_00000000"
    half.mkdir()
    (half / "genA2B.safetensors").write_bytes(b"partial")
    assert invoke("train", data, *common, "--iterations", "2", "--resume").exit_code == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if not p.name.startswith(".")) == [
        "latest", "step_00000002"]


# --- 5: numbers read from files are checked before anything is allocated or looped over -------------------

MEMORY_BUDGET = 4 << 30  # address space for a child: enough for torch and a tiny model, far below the claims


def _limit_memory():
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BUDGET, MEMORY_BUDGET))


def budget_cli(*args, timeout=60):
    """The real CLI in a child with 4 GB of address space and a deadline: a hostile file that makes it
    allocate what it claims, or loop, fails here with a traceback or a timeout."""
    try:
        return cli(*args, timeout=timeout, preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired:
        pytest.fail(f"ugatit {' '.join(map(str, args))} did not answer within {timeout} s")


def hostile_model_folder(root: Path, **config_changes) -> Path:
    folder = write_model_folder(tiny_model(light=False), root)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **config_changes}))
    return folder


def test_config_numbers_are_checked_before_they_size_or_loop_anything(tmp_path):
    photos = make_images(tmp_path / "photos", 1)
    for changes, needle in (({"dis_global_layers": 10_000_000}, "dis_global_layers"),
                            ({"ch": 1000, "img_size": 256}, "weights do not match"),
                            ({"ch": 100_000}, "ch must be in")):
        folder = hostile_model_folder(tmp_path / f"m{len(str(changes))}", **changes)
        result = budget_cli("translate", photos, "--model", folder, "--output", tmp_path / "out")
        assert result.returncode == 2, result.stderr
        one_line_error(result.stderr, needle)


def test_official_checkpoint_of_stride_0_views_is_refused_without_allocating(tmp_path):
    config = UGATITConfig(img_size=32, ch=1024, n_res=1, light=True)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in Generator(config).state_dict().items()}
    state = {k: torch.zeros(1).expand(shape) for k, shape in shapes.items()}  # ~100 bytes claiming ~GBs
    path = tmp_path / "hostile_params_0000001.pt"
    torch.save({"genA2B": state, "genB2A": state}, path)
    assert path.stat().st_size < 200_000
    result = budget_cli("export", path, "--output", tmp_path / "out", "--quiet")
    assert result.returncode == 2, result.stderr
    one_line_error(result.stderr, "stores only")
    assert not (tmp_path / "out").exists()


def tf_checkpoint_with_index(folder: Path, claims: dict[str, tuple[tuple[int, ...], int, int]] | None = None,
                             scope_shapes: dict[str, tuple[int, ...]] | None = None) -> Path:
    """A tiny light TF generator pair written as an official checkpoint, then its index rewritten so that
    ``claims`` (name -> (shape, offset, size)) say what the test wants; ``scope_shapes`` rewrites shapes only."""
    import tf_writer
    from tf_writer import tf_generator_tensors, write_checkpoint

    from ugatit_cli.families.ugatit.importers.tf_checkpoint import open_local_checkpoint

    folder.mkdir(parents=True)
    torch.manual_seed(0)
    generator = Generator(UGATITConfig(img_size=32, ch=4, n_res=4, light=True, variant="tf"))
    tensors = {**tf_generator_tensors(generator, "generator_B"), **tf_generator_tensors(generator, "generator_A")}
    prefix = folder / "UGATIT.model-1000"
    write_checkpoint(prefix, tensors)
    entries = open_local_checkpoint(prefix).entries
    records = [(b"", tf_writer._field_varint(1, 1) + tf_writer._field_bytes(3, tf_writer._field_varint(1, 1)))]
    for name in sorted(entries):
        e = entries[name]
        shape, offset, size = (claims or {}).get(name, ((scope_shapes or {}).get(name, e.shape), e.offset, e.size))
        # a negative dimension is written as protobuf writes an int64: two's complement in 64 bits
        proto = tf_writer._entry_proto(tuple(d & (2**64 - 1) for d in shape), 0, offset, size, e.crc32c)
        records.append((name.encode(), proto))
    _rewrite_index(prefix, records)
    return folder


def _rewrite_index(prefix: Path, records) -> None:
    import struct

    import tf_writer
    data_block = tf_writer._with_trailer(tf_writer._block(records))
    meta_block = tf_writer._with_trailer(tf_writer._block([]))
    index_offset = len(data_block) + len(meta_block)
    index_block = tf_writer._with_trailer(tf_writer._block([(records[-1][0], tf_writer._varint(0)
                                                              + tf_writer._varint(len(data_block) - 5))]))
    handles = (tf_writer._varint(len(data_block)) + tf_writer._varint(len(meta_block) - 5)
               + tf_writer._varint(index_offset) + tf_writer._varint(len(index_block) - 5))
    footer = handles.ljust(40, b"\0") + struct.pack("<Q", tf_writer.TABLE_MAGIC)
    Path(f"{prefix}.index").write_bytes(data_block + meta_block + index_block + footer)


def test_tf_index_claiming_more_than_its_data_file_holds_is_refused_before_allocating(tmp_path):
    name = "generator_B/MLP/linear_1/dense/kernel"
    folder = tf_checkpoint_with_index(tmp_path / "UGATIT_light_hostile",
                                      claims={name: ((16, 400_000_000), 0, 16 * 400_000_000 * 4)})
    result = budget_cli("export", folder, "--output", tmp_path / "out", "--direction", "a2b", "--quiet")
    assert result.returncode == 2, result.stderr
    one_line_error(result.stderr, name)
    # a tensor whose bytes lie past the end of the data file, with a shape that fits the generator
    entry_size = 16 * 16 * 4
    folder = tf_checkpoint_with_index(tmp_path / "UGATIT_light_past_end",
                                      claims={name: ((16, 16), 10**9, entry_size)})
    result = budget_cli("export", folder, "--output", tmp_path / "out", "--direction", "a2b", "--quiet")
    assert result.returncode == 2, result.stderr
    one_line_error(result.stderr, "claims bytes", "holds")


def test_an_index_that_is_a_link_to_a_device_is_not_read(tmp_path):
    folder = tmp_path / "UGATIT_light_zero"
    folder.mkdir()
    (folder / "UGATIT.model-1.index").symlink_to("/dev/zero")
    (folder / "UGATIT.model-1.data-00000-of-00001").write_bytes(b"")
    result = budget_cli("export", folder, "--output", tmp_path / "out", "--quiet",
                        timeout=30)
    assert result.returncode in (1, 2), result.stderr
    one_line_error(result.stderr, "not a regular file")


# --- 6: links that loop are walked once ---------------------------------------------------------------------


def test_a_symlink_loop_in_an_input_folder_translates_each_image_once(tmp_path, model_folder):
    photos = make_images(tmp_path / "photos", 1)
    (photos / "self").symlink_to(".")
    (photos / "sub").mkdir()
    (photos / "sub" / "up").symlink_to("..")
    result = budget_cli("translate", photos, "--model", model_folder, "--output", tmp_path / "out", "--json",
                        timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["counts"]["done"] == 1
    assert len(list((tmp_path / "out").rglob("*.png"))) == 1


# --- 8: hostile model files are one line, never a traceback -----------------------------------------------


@pytest.mark.parametrize("config_text", ["[1, 2]", "null", '{"ch": "4"}', '{"n_res": null}', '{"light": "yes"}',
                                         '{"img_size": 1e400}', "{"])
def test_hostile_config_json_is_one_line(tmp_path, model_folder, config_text):
    import shutil
    folder = Path(shutil.copytree(model_folder, tmp_path / "m"))
    original = json.loads((folder / "config.json").read_text())
    if config_text.startswith("{") and config_text.endswith("}"):
        config_text = json.dumps({**original, **json.loads(config_text)})
    (folder / "config.json").write_text(config_text)
    result = invoke("translate", make_images(tmp_path / "photos", 1), "--model", folder, "--output", tmp_path / "o")
    assert result.exit_code == 2, result.output
    one_line_error(result.output, "config.json")


@pytest.mark.parametrize("damage", ["empty", "truncated", "text"])
def test_hostile_weights_files_are_one_line(tmp_path, model_folder, damage):
    import shutil
    folder = Path(shutil.copytree(model_folder, tmp_path / "m"))
    weights = folder / "generator_a2b.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "text": b"hello, not weights"}[damage])
    result = invoke("export", folder, "--output", tmp_path / "out", "--quiet")
    assert result.exit_code == 2, result.output
    one_line_error(result.output, "generator_a2b.safetensors")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("payload", ["tensor", "list", "text", "module_prefix_mismatch"])
def test_hostile_official_checkpoints_are_one_line(tmp_path, payload):
    path = tmp_path / "x_params_0000001.pt"
    if payload == "text":
        path.write_text("this is not a checkpoint\n")
    else:
        value = {"tensor": torch.zeros(3), "list": [1, 2, 3],
                 "module_prefix_mismatch": {"module.DownBlock.1.weight": torch.zeros(4, 3, 7, 7)}}[payload]
        torch.save({"genA2B": value, "genB2A": value}, path)
    result = invoke("export", path, "--output", tmp_path / "out", "--quiet")
    assert result.exit_code in (1, 2), result.output
    one_line_error(result.output, str(path.name))


@pytest.mark.parametrize("shape", [(7, 7, 3, 0), (7, 7, 3, -4), (7, 7, 12)])
def test_hostile_tf_index_shapes_are_one_line(tmp_path, shape):
    name = "generator_B/conv/conv2d/kernel"
    folder = tf_checkpoint_with_index(tmp_path / "UGATIT_light_bad", scope_shapes={name: shape})
    result = invoke("export", folder, "--output", tmp_path / "out", "--direction", "a2b", "--quiet")
    assert result.exit_code in (1, 2), result.output
    one_line_error(result.output, "generator_B")


# --- 7: no network is one line, at once --------------------------------------------------------------------


def _closed_port() -> int:
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens there once the probe is closed


@pytest.mark.parametrize("command", [["translate", "PHOTOS", "--model", "selfie2anime"],
                                     ["export", "selfie2anime", "--quiet"],
                                     ["translate", "PHOTOS", "--model", "someone/some-model"],
                                     ["export", "someone/some-model", "--quiet"]])
def test_no_network_is_one_line_at_once(tmp_path, command):
    import time
    photos = make_images(tmp_path / "photos", 1)
    args = [str(photos) if a == "PHOTOS" else a for a in command]
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}", "HF_HOME": str(tmp_path / "hf")}
    began = time.monotonic()
    assert cli("models", env=env).returncode == 0
    start_up = time.monotonic() - began  # what any command takes to start on this (shared) machine
    began = time.monotonic()
    result = cli(*args, "--output", tmp_path / "out", env=env, timeout=180)
    assert result.returncode == 2, result.stderr
    one_line_error(result.stderr, "cannot be reached")
    assert "Retrying" not in result.stderr
    assert time.monotonic() - began < start_up + 15  # huggingface_hub alone retries for ~27 s
    result = cli(*args, "--output", tmp_path / "out", env={**env, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2
    one_line_error(result.stderr, "HF_HUB_OFFLINE")


# --- 10: numeric options are checked before anything is written --------------------------------------------


@pytest.mark.parametrize("option", [["--lr", "-1"], ["--lr", "nan"], ["--lr", "inf"], ["--cycle-weight", "-2"],
                                    ["--weight-decay", "nan"], ["--ema", "1.5"], ["--ema", "nan"]])
def test_bad_numbers_are_one_line_and_leave_no_run_folder(tmp_path, option):
    data = make_dataset(tmp_path / "data")
    run = tmp_path / "run"
    result = invoke("train", data, *TINY_TRAIN, "--iterations", "2", *option, "--output", run)
    assert result.exit_code == 2, result.output
    one_line_error(result.output, option[0])
    assert not run.exists()
    # the corrected command is not refused as "not empty"
    assert invoke("train", data, *TINY_TRAIN, "--iterations", "1", "--output", run).exit_code == 0


# --- 9: a full disk, a broken optional dependency ------------------------------------------------------------


def _small_disk(limit: int):
    """Files may grow to ``limit`` bytes, as on a nearly full disk (EFBIG instead of ENOSPC; same handling)."""
    def apply():
        import resource
        import signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with an error instead of a signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_during_training_and_export_is_one_line_and_keeps_what_was_there(tmp_path, model_folder):
    data = make_dataset(tmp_path / "data")
    run = tmp_path / "run"
    assert invoke("train", data, *TINY_TRAIN, "--iterations", "1", "--save-every", "1", "--output", run).exit_code == 0
    before = tree(run / "checkpoints" / "step_00000001")
    result = cli("train", data, "--resume", "--iterations", "3", "--output", run, "--quiet",
                 preexec_fn=_small_disk(8_000), timeout=120)
    assert result.returncode == 1, result.stderr
    one_line_error(result.stderr, "cannot write", "step_00000001, is intact")
    assert tree(run / "checkpoints" / "step_00000001") == before
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_00000001"
    result = cli("export", model_folder, "--output", tmp_path / "out", "--quiet", preexec_fn=_small_disk(8_000))
    assert result.returncode == 1, result.stderr
    one_line_error(result.stderr, "cannot write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "run"]  # no folder, no temporary


def test_an_unwritable_feature_cache_only_warns(tmp_path):
    real, fake = make_images(tmp_path / "real", 3), make_images(tmp_path / "fake", 3, size=40)
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder would be")
    env = {"XDG_CACHE_HOME": str(blocker / "cache"), "PYTHONPATH": f"{REPO_ROOT}:{REPO_ROOT / 'tests'}"}
    result = cli("eval", "--kid", "--real", real, "--fake", fake, "--kid-subset-size", "2", "--json",
                 "--feature-extractor", "small_extractor:SmallFeatures", env=env)
    assert result.returncode == 0, result.stderr
    assert "feature cache not written" in result.stderr and "Traceback" not in result.stderr
    assert json.loads(result.stdout)["results"][0]["kid_mean"] is not None


def test_a_broken_torchvision_under_torch_fidelity_shows_the_cause(tmp_path):
    pytest.importorskip("torch_fidelity")
    broken = tmp_path / "site" / "torchvision"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    real, fake = make_images(tmp_path / "real", 2), make_images(tmp_path / "fake", 2)
    result = cli("eval", "--kid", "--real", real, "--fake", fake, "--no-cache",
                 env={"PYTHONPATH": f"{tmp_path / 'site'}:{REPO_ROOT}"})
    assert result.returncode == 2, result.stderr
    one_line_error(result.stderr, "torchvision::nms does not exist", "cannot be imported")


# --- 11, 19: inputs inside the output folder are named; one stable, collision-free layout ------------------


def test_an_input_that_is_the_output_folder_is_named_not_dropped(tmp_path, model_folder):
    photos = make_images(tmp_path / "photos", 2)
    result = invoke("translate", photos, "--model", model_folder, "--output", photos)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert f"error: {photos}: is inside the output folder" in result.output.splitlines()[0], result.output
    # results of an earlier run inside a folder being translated are left out, and the summary says so
    assert invoke("translate", photos, "--model", model_folder, "--output", photos / "out").exit_code == 0
    result = invoke("translate", photos, "--model", model_folder, "--output", photos / "out")
    assert result.exit_code == 0 and f"1 folder(s) of earlier ugatit results left out ({photos / 'out'}" in \
        result.output, result.output


def test_the_output_layout_does_not_depend_on_the_other_inputs_and_never_collides(tmp_path, model_folder,
                                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_images(Path("a"), 2)
    make_images(Path("c"), 1)
    Image.open("c/000.png").save("b.png")
    for d in ("shots/day1", "shots/day2"):
        make_images(Path(d), 1)
    first = invoke("translate", "a", "--model", model_folder, "--output", "out1", "--json")
    second = invoke("translate", "a", "b.png", "--model", model_folder, "--output", "out2", "--json")
    names = [sorted(Path(d["output"]).relative_to(out).as_posix() for d in json.loads(r.stdout)["done"])
             for r, out in ((first, "out1"), (second, "out2"))]
    assert names[0] == ["a/000.png", "a/001.png"] and names[1] == ["a/000.png", "a/001.png", "b.png"]
    result = invoke("translate", "shots/**/*.png", "--model", model_folder, "--output", "out3", "--json")
    assert result.exit_code == 0, result.output
    assert sorted(p.relative_to("out3").as_posix() for p in Path("out3").rglob("*.png")) == [
        "day1/000.png", "day2/000.png"]


# --- 12: every file and folder written honours the umask ---------------------------------------------------


def _umask(mask):
    return lambda: os.umask(mask)


@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_outputs_honour_the_umask(tmp_path, model_folder, mask):
    photos = make_images(tmp_path / "photos", 1)
    result = cli("translate", photos, "--model", model_folder, "--output", tmp_path / "out", "--heatmap", "-q",
                 preexec_fn=_umask(mask))
    assert result.returncode == 0, result.stderr
    result = cli("export", model_folder, "--output", tmp_path / "exported", "-q", preexec_fn=_umask(mask))
    assert result.returncode == 0, result.stderr
    data = make_dataset(tmp_path / "data")
    result = cli("train", data, *TINY_TRAIN, "--iterations", "1", "--output", tmp_path / "run",
                 preexec_fn=_umask(mask))
    assert result.returncode == 0, result.stderr
    for root in ("out", "exported", "run"):
        for path in [tmp_path / root, *(tmp_path / root).rglob("*")]:
            if path.name == ".lock":
                continue
            expected = (0o777 if path.is_dir() else 0o666) & ~mask
            assert path.stat().st_mode & 0o777 == expected, f"{path}: {oct(path.stat().st_mode & 0o777)}"


# --- 21: honest rates ---------------------------------------------------------------------------------------


def test_no_rate_when_nothing_was_translated_and_json_states_both_times(tmp_path, model_folder):
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        (bad / f"{i}.png").write_bytes(b"not a png")
    result = invoke("translate", bad, "--model", model_folder, "--output", tmp_path / "out")
    assert result.exit_code == 1
    summary = result.output.strip().splitlines()[-1]
    assert summary.startswith("Translated 0 images") and "images/s" not in summary, summary
    result = invoke("translate", make_images(tmp_path / "ok", 2), "--model", model_folder, "--output",
                    tmp_path / "out", "--json")
    report = json.loads(result.stdout)
    assert report["translate_seconds"] <= report["seconds"]
    assert report["images_per_second"] == pytest.approx(2 / report["translate_seconds"], rel=0.05)


# --- 20: one error style; help that lists choices and defaults plainly --------------------------------------


@pytest.mark.parametrize("args, needle", [
    (["eval", "--real", "somewhere"], "--fake"),
    (["export", "x", "--output", "y", "--format", "tflite"], "'tflite' is not one of"),
    (["translate", "x.png"], "Missing option '--model'"),
    (["translate", "x.png", "--model", "m", "--precision", "fp8"], "'fp8' is not one of"),
])
def test_usage_errors_are_one_red_line_like_every_other_error(args, needle):
    result = cli(*args)
    assert result.returncode == 2, result.stderr
    assert "╭" not in result.stderr and "Usage:" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.stderr


def test_help_lists_choices_and_plain_defaults_and_every_option_has_help():
    for command in ("translate", "train", "export", "eval"):
        result = cli(command, "--help", env={"COLUMNS": "200", "NO_COLOR": "1"})
        assert result.returncode == 0
        text = result.stdout
        assert "(256)" not in text and "[default: (" not in text
        for line in text.splitlines():
            if re.match(r"^│\s{1,5}(\*\s+)?--", line):  # an option's own line, not a wrapped description
                cells = [c.strip() for c in line.strip("│ ").split("  ") if c.strip()]
                described = [c for c in cells[1:] if not c.startswith(("<", "[", "-"))]
                assert described, f"{command}: an option without help: {line}"
        if command == "translate":
            assert "fp32|bf16|fp16" in text and "a2b or b2a" in text
        if command == "train":
            # --size's default differs by family (tunit trains at 128): each family's is named
            assert "(default: ugatit: 256;" in text and "Weight of the cycle" in text


# --- 13, 14, 15: foreign checkpoints in every form they come in ----------------------------------------------


def official_states(model: UGATITModel, prefix: str = "") -> dict:
    """The official ``UGATIT.save`` layout (six networks), keys optionally prefixed as DataParallel saves them."""
    from ugatit_cli.families.ugatit.networks import build_discriminators
    nets = {"genA2B": model.generators["a2b"], "genB2A": model.generators["b2a"],
            **build_discriminators(model.config)}
    return {name: {prefix + k: v for k, v in net.state_dict().items()} for name, net in nets.items()}


def test_a_light_official_checkpoint_says_its_size_is_assumed_and_export_records_the_real_one(tmp_path):
    model = tiny_model(light=True, size=64)
    path = tmp_path / "light_params_0001000.pt"
    torch.save(official_states(model), path)
    result = cli("export", path, "--output", tmp_path / "assumed", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "warning:" in result.stderr and "256 px is assumed" in result.stderr
    config = json.loads((tmp_path / "assumed" / "config.json").read_text())
    assert config["img_size"] == 256 and config["img_size_assumed"] is True
    assert "is assumed, not known" in (tmp_path / "assumed" / "README.md").read_text()
    result = invoke("export", path, "--output", tmp_path / "stated", "--size", "64", "--quiet")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "stated" / "config.json").read_text())
    assert config["img_size"] == 64 and "img_size_assumed" not in config
    # the model folder now translates at its real size by default
    out = tmp_path / "out"
    result = invoke("translate", make_images(tmp_path / "p", 1), "--model", tmp_path / "stated", "--output", out,
                    "--json")
    assert result.exit_code == 0 and Image.open(next(out.rglob("*.png"))).size == (64, 64)


def test_checkpoints_saved_from_data_parallel_load_everywhere(tmp_path):
    model = tiny_model(light=True)
    path = tmp_path / "dp_params_0001000.pt"
    torch.save(official_states(model, prefix="module."), path)
    result = invoke("export", path, "--output", tmp_path / "out", "--size", "32", "--quiet")
    assert result.exit_code == 0, result.output
    from safetensors.torch import load_file
    exported = load_file(tmp_path / "out" / "generator_a2b.safetensors")
    assert all(torch.equal(exported[k], v) for k, v in model.generators["a2b"].state_dict().items())
    # and as the start of a training run (all six networks)
    data = make_dataset(tmp_path / "data")
    result = invoke("train", data, *TINY_TRAIN, "--n-res", "1", "--iterations", "1", "--init-from", path,
                    "--output", tmp_path / "run")
    assert result.exit_code == 0, result.output


def test_a_tf_checkpoint_named_in_every_way_tf_tools_name_it(tmp_path):
    from tf_writer import tf_generator_tensors, write_checkpoint
    folder = tmp_path / "UGATIT_light_tiny"
    folder.mkdir()
    torch.manual_seed(0)
    generator = Generator(UGATITConfig(img_size=32, ch=4, n_res=4, light=True, variant="tf"))
    prefix = folder / "UGATIT.model-1000"
    write_checkpoint(prefix, {**tf_generator_tensors(generator, "generator_B"),
                              **tf_generator_tensors(generator, "generator_A")})
    (folder / "UGATIT.model-1000.meta").write_bytes(b"graph")
    (folder / "checkpoint").write_text('model_checkpoint_path: "/train/machine/UGATIT.model-1000"\n')
    for i, name in enumerate([prefix, f"{prefix}.index", f"{prefix}.data-00000-of-00001", f"{prefix}.meta",
                              folder / "checkpoint"]):
        result = invoke("export", name, "--output", tmp_path / f"out{i}", "--size", "32", "--quiet")
        assert result.exit_code == 0, f"{name}: {result.output}"
        assert (tmp_path / f"out{i}" / "generator_a2b.safetensors").is_file()


# --- 16: SIGTERM during translate leaves no temporary files, and a later run removes a killed run's ---------


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_sigterm_during_translate_leaves_no_temporaries(tmp_path, model_folder, signum):
    """kill and Ctrl-C alike: exit 130 at once, finished images complete, no temporary left (the signal is
    raised where the pipeline waits, never inside a future's lock, where it once hung the shutdown)."""
    import signal
    import time
    photos = make_images(tmp_path / "photos", 60, size=256)
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "ugatit_cli", "translate", str(photos), "--model",
                                str(model_folder), "--output", str(out), "--size", "128", "--workers", "2", "-q"],
                               env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out.is_dir() and any(out.rglob("*.png"))):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.02)
    process.send_signal(getattr(signal, signum))
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    written = list(out.rglob("*.png"))
    assert 0 < len(written) < 60
    assert [p.name for p in out.rglob("*") if p.name.endswith(".tmp")] == []
    for path in written:  # every file under its final name is complete
        Image.open(path).load()


def test_a_later_run_removes_only_temporaries_of_dead_runs(tmp_path, model_folder):
    photos = make_images(tmp_path / "photos", 1)
    target = tmp_path / "out" / "photos"
    target.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = target / f".000.png.ugatit-{dead}-k2j4.tmp"  # what a kill -9 left
    live = target / f".001.png.ugatit-{os.getpid()}-x9z1.tmp"  # another run, still writing
    mine = target / ".notes.tmp"  # the user's
    for path in (stale, live, mine):
        path.write_bytes(b"partial")
    assert invoke("translate", photos, "--model", model_folder, "--output", tmp_path / "out").exit_code == 0
    assert not stale.exists() and live.exists() and mine.exists()


# --- 21, 22: --max-pixels; what was trained and what was loaded is said ---------------------------------------


def test_max_pixels_allows_a_100_megapixel_camera_file(tmp_path, model_folder):
    from test_translate import _png_claiming
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "camera.png").write_bytes(_png_claiming(12_000, 8_400))  # 100.8 MP: over Pillow's 89.5 MP
    result = invoke("translate", photos, "--model", model_folder, "--output", tmp_path / "out")
    assert result.exit_code == 1 and "--max-pixels" in result.output, result.output
    result = invoke("translate", photos, "--model", model_folder, "--output", tmp_path / "out",
                    "--max-pixels", "120000000")
    # the limit no longer refuses it: what fails now is this test file's (deliberately empty) pixel data
    assert "decompression-bomb" not in result.output and "truncated" in result.output, result.output
    from PIL import Image as PILImage
    assert PILImage.MAX_IMAGE_PIXELS == 89_478_485  # put back after the call


def test_train_ends_with_a_summary_and_translate_says_which_checkpoint(tmp_path):
    data = make_dataset(tmp_path / "data")
    run = tmp_path / "run"
    args = [a for a in TINY_TRAIN if a != "--quiet"]
    result = cli("train", data, *args, "--iterations", "2", "--ema", "0.5", "--output", run)
    assert result.returncode == 0, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "Trained 2 of 2 iterations" in result.stderr and "step_00000002" in result.stderr, result.stderr
    assert f"--model {run}" in result.stderr, last
    result = invoke("translate", make_images(tmp_path / "p", 1), "--model", run, "--output", tmp_path / "out")
    assert result.exit_code == 0
    assert "Model: checkpoint step_00000002 (iteration 2)" in result.output and "EMA networks" in result.output


# --- the same kinds on the other families: pix2pixHD and TUNIT ----------------------------------------------

P2P_TINY = ("--arch", "pix2pixhd", "--label-nc", "4", "--no-instance", "--ngf", "4", "--n-downsample-global", "2",
            "--n-blocks-global", "1", "--ndf", "8", "--num-d", "1", "--no-vgg-loss", "--resize-or-crop", "none",
            "--workers", "0", "--quiet")


def p2p_data(root: Path, count: int = 2) -> Path:
    """A pix2pixHD dataset in the official layout: 32 px label maps (ids 0..3) and photos."""
    rng = np.random.default_rng(0)
    for phase in ("train", "test"):
        (root / f"{phase}_label").mkdir(parents=True, exist_ok=True)
        (root / f"{phase}_img").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            labels = rng.integers(0, 4, (32, 32), dtype=np.uint8)
            Image.fromarray(labels, mode="L").save(root / f"{phase}_label" / f"c{i}.png")
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / f"{phase}_img" / f"c{i}.png")
    return root


def p2p_model_folder(root: Path, **config_changes) -> Path:
    from ugatit_cli.families.base import Model, get_family
    from ugatit_cli.families.pix2pixhd.config import Pix2PixHDConfig

    family = get_family("pix2pixhd")
    config = Pix2PixHDConfig(label_nc=4, no_instance=True, ngf=4, n_downsample_global=2, n_blocks_global=1)
    torch.manual_seed(0)
    folder = write_model_folder(Model(family, config, {"netG": family.build_net(config, "netG").eval()}), root)
    if config_changes:
        data = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**data, **config_changes}))
    return folder


def test_pix2pixhd_hostile_config_and_nan_weights_are_one_line_and_its_outputs_follow_the_layout(tmp_path):
    labels = p2p_data(tmp_path / "data", 1) / "test_label"
    good = p2p_model_folder(tmp_path / "good")
    result = invoke("translate", labels, "--model", good, "--output", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    assert [p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png")] == [
        "test_label/c0.png"]  # a folder keeps its name, as for every family
    for changes, needle in (({"ngf": "4"}, "ngf must be an integer"), ({"n_blocks_global": None}, "n_blocks_global"),
                            ({"ngf": 4096, "n_downsample_global": 8}, "channels")):
        folder = p2p_model_folder(tmp_path / f"m{len(str(changes))}", **changes)
        result = invoke("translate", labels, "--model", folder, "--output", tmp_path / "o")
        assert result.exit_code == 2, result.output
        one_line_error(result.output, "config.json", needle)
    from safetensors.torch import load_file, save_file
    weights = good / "netG.safetensors" if (good / "netG.safetensors").is_file() else next(good.glob("*.safetensors"))
    state = load_file(weights)
    state[next(iter(state))].view(-1)[0] = float("inf")
    save_file(state, weights)
    result = invoke("translate", labels, "--model", good, "--output", tmp_path / "o2")
    assert result.exit_code == 2
    one_line_error(result.output, "NaN or infinite")


def test_pix2pixhd_official_checkpoints_stride0_and_wrapper_prefixes(tmp_path):
    from pix2pixhd_reference import RefGlobal
    from test_pix2pixhd_official import write_opt_txt

    from ugatit_cli.families.pix2pixhd.official import read_official

    # torch.compile's and DataParallel's prefixes together
    ckpt = tmp_path / "compiled"
    ckpt.mkdir()
    torch.manual_seed(0)
    ref = RefGlobal(5, 3, 8, 2, 2)
    torch.save({f"module._orig_mod.{k}": v for k, v in ref.state_dict().items()}, ckpt / "latest_net_G.pth")
    write_opt_txt(ckpt, label_nc=4, ngf=8, n_downsample_global=2, n_blocks_global=2)
    model = read_official(ckpt)
    assert model.config.ngf == 8 and set(model.generator) == set(ref.state_dict())
    # a 10 KB file of stride-0 views claiming a generator of ~GBs (ngf 1024) consistent with its opt.txt
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in RefGlobal(5, 3, 1024, 4, 9).state_dict().items()}
    torch.save({k: torch.zeros(1).expand(s) for k, s in shapes.items()}, hostile / "latest_net_G.pth")
    write_opt_txt(hostile, label_nc=4, ngf=1024, n_downsample_global=4, n_blocks_global=9)
    assert (hostile / "latest_net_G.pth").stat().st_size < 200_000
    result = budget_cli("export", hostile, "--output", tmp_path / "out", "--quiet")
    assert result.returncode == 2, result.stderr
    one_line_error(result.stderr, "stores only")
    # an opt.txt that is a device is not read
    (ckpt / "opt.txt").unlink()
    (ckpt / "opt.txt").symlink_to("/dev/zero")
    result = budget_cli("export", ckpt, "--output", tmp_path / "out", "--quiet", timeout=60)
    assert result.returncode == 2, result.stderr
    one_line_error(result.stderr, "not a regular file")


def test_tunit_official_checkpoints_stride0_nan_and_compile_prefixes(tmp_path):
    from test_tunit_official import CONFIG, _write_official

    from ugatit_cli.errors import UserError
    from ugatit_cli.families.tunit.official import load_official

    path = tmp_path / "model_1.ckpt"
    states = _write_official(path, ddp=True)
    data = torch.load(path, weights_only=True)
    data["G_EMA_state_dict"] = {f"_orig_mod.{k}": v for k, v in data["G_EMA_state_dict"].items()}
    torch.save(data, path)
    config, nets, _ = load_official(path)
    assert config.k == CONFIG.k and set(nets) == {"G_EMA", "C_EMA"}
    for damage, needle in (("stride0", "stores only"), ("nan", "NaN or infinite")):
        bad = dict(data)
        state = dict(bad["C_EMA_state_dict"])
        key = next(k for k, v in state.items() if v.dim() >= 2)
        state[key] = (torch.zeros(1).expand(state[key].shape) if damage == "stride0"
                      else torch.full_like(state[key], float("nan")))
        bad["C_EMA_state_dict"] = state
        torch.save(bad, tmp_path / f"{damage}.ckpt")
        with pytest.raises(UserError, match=needle):
            load_official(tmp_path / f"{damage}.ckpt")
    assert states  # the official layout the helper wrote


def test_pix2pixhd_runs_share_the_lock_prune_and_divergence_rules(tmp_path):
    from ugatit_cli.core.safety import FolderLock

    data = p2p_data(tmp_path / "data")
    run = tmp_path / "run"
    common = [*P2P_TINY, "--save-every", "1", "--sample-every", "100", "--keep", "1", "--output", run]
    result = invoke("train", data, *common, "--iterations", "1")
    assert result.exit_code == 0, result.output
    lock = FolderLock(run, ".lock", "test")  # another process training in it
    try:
        result = invoke("train", data, "--resume", "--iterations", "2", "--output", run, "--quiet")
        assert result.exit_code == 2
        one_line_error(result.output, "in use by another")
    finally:
        lock.release()
    half = run / "checkpoints" / "step_00000000"  # what a kill during an older prune left
    half.mkdir()
    result = invoke("train", data, "--resume", "--iterations", "2", "--output", run, "--quiet")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step_00000002"]
    # a learning rate that overflows: stopped with exit 1, no checkpoint of NaN weights, no run folder left
    result = invoke("train", data, *P2P_TINY, "--iterations", "6", "--save-every", "100", "--lr", "1e30",
                    "--output", tmp_path / "diverged")
    assert result.exit_code == 1, result.output
    one_line_error(result.output, "training diverged", "--lr")
    assert not (tmp_path / "diverged").exists()
    # numeric settings of pix2pixHD are checked like U-GAT-IT's before anything is written
    result = invoke("train", data, *P2P_TINY, "--iterations", "1", "--lambda-feat", "nan", "--output", tmp_path / "r")
    assert result.exit_code == 2
    one_line_error(result.output, "--lambda-feat")
    assert not (tmp_path / "r").exists()


def test_every_written_file_honours_the_umask_media_included(tmp_path):
    from ugatit_cli.core.files import atomic_file
    from ugatit_cli.core.images import save_image_atomic

    previous = os.umask(0o027)
    try:
        save_image_atomic(Image.new("RGB", (4, 4)), tmp_path / "face" / "crop.png")  # faces, frames, PNGs
        with atomic_file(tmp_path / "clip.mp4") as tmp:  # videos are written through atomic_file
            tmp.write_bytes(b"\0")
    finally:
        os.umask(previous)
    for path in (tmp_path / "face" / "crop.png", tmp_path / "clip.mp4"):
        assert path.stat().st_mode & 0o777 == 0o640, oct(path.stat().st_mode)
