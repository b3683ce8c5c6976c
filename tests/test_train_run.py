"""`ugatit train`: run folders, exact resume, crash safety, samples, logs, the run as a MODEL, the CLI."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import ugatit_cli
from ugatit_cli.cli.app import app
from ugatit_cli.core.images import image_to_tensor, open_rgb, tensor_to_image
from ugatit_cli.errors import UserError
from ugatit_cli.families.ugatit.importers.official_pytorch import NETWORK_NAMES
from ugatit_cli.store import run_folder as ckpt
from ugatit_cli.train.run import train

TINY = {"size": 32, "ch": 4, "n_res": 1, "light": True, "workers": 0, "log_every": 1, "decay": False}
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny models: threads only fight over the 2 cores


def make_dataset(root, counts=(("trainA", 6), ("trainB", 5), ("testA", 2), ("testB", 2))):
    rng = np.random.default_rng(0)
    for folder, count in counts:
        (root / folder).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (36 + 2 * i, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / folder / f"{i:03d}.png")
    return root


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "horse2zebra")


def states_equal(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(states_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(states_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_resume_continues_exactly(dataset, tmp_path):
    settings = {**TINY, "batch_size": 2, "ema": 0.9, "save_every": 2}
    straight = train(dataset, {**settings, "iterations": 4}, output=tmp_path / "straight", device="cpu",
                     progress=False)
    first = train(dataset, {**settings, "iterations": 2}, output=tmp_path / "split", device="cpu", progress=False)
    assert first.iteration == 2 and not first.interrupted
    # resumed with other workers and a longer run: settings that do not change the computation
    resumed = train(dataset, {"iterations": 4, "workers": 2}, output=tmp_path / "split", resume=True, device="cpu",
                    progress=False)
    assert resumed.iteration == 4
    assert states_equal(straight.trainer.state_dict(), resumed.trainer.state_dict())  # weights, EMA, both Adams
    for name in NETWORK_NAMES:  # and the files say the same
        a = ckpt.load_checkpoint(straight.checkpoint)
        b = ckpt.load_checkpoint(resumed.checkpoint)
        assert states_equal(a["nets"][name], b["nets"][name])
    assert states_equal(a["ema"], b["ema"]) and states_equal(a["g_optim"], b["g_optim"])
    # every loss term logged once per iteration, identical in both runs
    logs = [[json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
            for run in ("straight", "split")]
    assert [r["iteration"] for r in logs[1]] == [1, 2, 3, 4]
    for x, y in zip(*logs, strict=True):
        assert {k: v for k, v in x.items() if k not in ("time", "it_per_s")} == \
               {k: v for k, v in y.items() if k not in ("time", "it_per_s")}
    assert {"d_loss", "g_loss", "lr", "g_cycle_A", "g_cam_B", "d_adv_LB"} <= set(logs[0][0])
    config = json.loads((tmp_path / "split" / "config.json").read_text())
    assert config["train"]["iterations"] == 4 and config["model"]["img_size"] == 32


def test_run_folder_rules(dataset, tmp_path):
    run = tmp_path / "run"
    train(dataset, {**TINY, "iterations": 1}, output=run, device="cpu", progress=False)
    with pytest.raises(UserError, match="already exists and is not empty; pass --resume"):
        train(dataset, {**TINY, "iterations": 1}, output=run, device="cpu", progress=False)
    with pytest.raises(UserError, match=r"differ from the run's: ch \(run: 4, now: 8\)"):
        train(dataset, {"ch": 8, "iterations": 2}, output=run, resume=True, device="cpu", progress=False)
    with pytest.raises(UserError, match="no such run folder to resume"):
        train(dataset, None, output=tmp_path / "nothing", resume=True, device="cpu", progress=False)
    with pytest.raises(UserError, match="exclude each other"):
        train(dataset, None, output=run, resume=True, init_from=run, device="cpu", progress=False)
    with pytest.raises(UserError, match="fp16 autocast needs a GPU"):
        train(dataset, {**TINY, "precision": "fp16"}, output=tmp_path / "fp16", device="cpu", progress=False)
    assert not (tmp_path / "fp16").exists()  # nothing is created for a run that cannot start
    with pytest.raises(UserError, match="unknown training setting"):
        train(dataset, {"colour": 1}, output=tmp_path / "x", device="cpu", progress=False)
    again = train(dataset, None, output=run, resume=True, device="cpu", progress=False)  # nothing left to do
    assert again.iteration == 1 and again.checkpoint.name == "step_00000001"


def test_keep_last_checkpoints_pointer_and_samples(dataset, tmp_path):
    run = tmp_path / "run"
    summary = train(dataset, {**TINY, "iterations": 4, "save_every": 1, "keep_checkpoints": 2, "sample_every": 2},
                    output=run, device="cpu", progress=False)
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step_00000003", "step_00000004"]
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_00000004" == summary.checkpoint.name
    # a stale or missing pointer falls back to the newest complete checkpoint; leftovers of a killed save go
    (run / "checkpoints" / "latest").write_text("step_00000099\n")
    (run / "checkpoints" / ".step_00000005.abc.tmp").mkdir()
    assert ckpt.latest_checkpoint(run).name == "step_00000004"
    ckpt.prune_checkpoints(run, 2)
    assert not list((run / "checkpoints").glob(".*.tmp"))
    # sample grids: 5 train + 2 test images side by side, 7 tiles down, for both directions
    grids = sorted(p.name for p in (run / "samples").iterdir())
    assert grids == ["A2B_00000002.png", "A2B_00000004.png", "B2A_00000002.png", "B2A_00000004.png"]
    with Image.open(run / "samples" / "A2B_00000004.png") as grid:
        assert grid.size == (7 * 32, 7 * 32) and grid.mode == "RGB"
        grid.load()
    # column 0 starts with the first training image at the sample size; column 5 with the first test image
    for column, first in ((0, dataset / "trainA" / "000.png"), (5, dataset / "testA" / "000.png")):
        expected = tensor_to_image(image_to_tensor(open_rgb(first), 32))
        assert np.array_equal(np.asarray(grid.crop((32 * column, 0, 32 * column + 32, 32))), np.asarray(expected))
    heatmap = np.asarray(grid.crop((0, 32, 32, 64))).astype(int)  # row 1: the identity heatmap, in jet colours
    assert np.abs(heatmap[..., 0] - heatmap[..., 2]).max() > 100
    state = torch.load(summary.checkpoint / "state.pt", weights_only=True)
    assert state["iteration"] == 4 and set(state["rng"][0]) >= {"torch", "python"}


def test_run_folder_and_checkpoint_are_model_sources(dataset, tmp_path):
    run = tmp_path / "run"
    summary = train(dataset, {**TINY, "iterations": 2, "ema": 0.5, "save_every": 1}, output=run, device="cpu",
                    progress=False)
    batch = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        ema = summary.trainer.generators()["genB2A"]  # the EMA generator
        expected = ema(batch)
        for source in (run, run / "checkpoints" / "step_00000002"):
            loaded = ugatit_cli.load_generator(source, direction="b2a")
            assert states_equal(loaded.state_dict(), ema.state_dict())
            # the trainer keeps channels_last weights, whose convolution kernels round differently
            for ours, theirs in zip(loaded(batch), expected, strict=True):
                torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
        older = ugatit_cli.load_generator(run / "checkpoints" / "step_00000001", direction="b2a")(batch)[0]
        assert not torch.equal(older, expected[0])
    model = ugatit_cli.resolve_model(run, ("a2b",))
    assert model.card["training"]["iterations"] == 2 and model.card["training"]["ema"] == 0.5
    assert "horse2zebra" in model.card["source"] and set(model.generators) == {"a2b"}


def test_init_from_an_official_checkpoint(dataset, tmp_path):
    donor = train(dataset, {**TINY, "iterations": 1}, output=tmp_path / "donor", device="cpu", progress=False)
    official = tmp_path / "horse2zebra_params_0000001.pt"
    torch.save({name: net.state_dict() for name, net in donor.trainer.nets.items()}, official)
    fresh = train(dataset, {**TINY, "iterations": 0 + 1, "lr": 0.0, "weight_decay": 0.0}, output=tmp_path / "new",
                  init_from=official, device="cpu", progress=False)
    # lr 0: the weights after one iteration are the loaded ones (the spectral-norm vectors do move)
    for name, net in fresh.trainer.nets.items():
        for key, value in net.state_dict().items():
            if not key.endswith(("weight_u", "weight_v")):
                assert torch.equal(value, donor.trainer.nets[name].state_dict()[key]), (name, key)
    with pytest.raises(UserError, match="--init-from takes"):
        train(dataset, TINY, output=tmp_path / "bad", init_from=dataset, device="cpu", progress=False)
    with pytest.raises(UserError, match="does not fit"):
        train(dataset, {**TINY, "ch": 8}, output=tmp_path / "bad", init_from=official, device="cpu", progress=False)
    assert not (tmp_path / "bad").exists()  # the corrected command can use the same --output


def test_64px_training_runs(dataset, tmp_path):
    summary = train(dataset, {**TINY, "size": 64, "iterations": 2}, output=tmp_path / "run64", device="cpu",
                    progress=False)
    assert summary.iteration == 2 and all(np.isfinite(v) for v in summary.losses.values())


def cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "ugatit_cli", *map(str, args)], capture_output=True, text=True,
                          env=CHILD_ENV, timeout=120, **kwargs)


TINY_ARGS = ["--size", "32", "--ch", "4", "--n-res", "1", "--light", "--workers", "0", "--no-decay", "--log-every", "1"]


def test_cli_end_to_end_and_one_line_errors(dataset, tmp_path):
    run = tmp_path / "run"
    done = cli("train", dataset, *TINY_ARGS, "--iterations", "2", "--output", run, "--quiet", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["iteration"] == 2 and (run / "checkpoints" / "step_00000002").is_dir()
    result = cli("train", dataset, "--output", run)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: {run}: already exists and is not empty; pass --resume to continue " \
                                    f"that run, or choose another --output"
    # the same command in-process, for the other mistakes (a subprocess costs seconds of imports)
    cases = [
        (["train", str(dataset), "--output", str(run), "--resume", "--size", "64"], "size (run: 32, now: 64)"),
        (["train", str(tmp_path / "nowhere")], "no such data folder"),
        (["train", str(dataset / "trainA" / sorted(os.listdir(dataset / "trainA"))[0])],
         "is a file, not a data folder"),
        (["train", str(run), "--output", str(tmp_path / "other")], "trainA: no such folder"),
        (["train", str(dataset), "--output", str(tmp_path / "other"), "--device", "cuda:7"], "cuda:7"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        assert message in result.stderr and result.stderr.startswith("error: ")
        assert result.stderr.strip().count("\n") == 0, result.stderr
    assert not (tmp_path / "other").exists()
    assert CliRunner().invoke(app, ["train", str(dataset), "--size", "abc"]).exit_code == 2


@pytest.mark.parametrize("arch", ["ugatit", "pix2pixhd", "tunit"])
def test_a_run_folder_inside_its_data_folder_is_refused(arch, tmp_path, monkeypatch):
    """The run's samples and checkpoints would be read back as training images on the next start or resume."""
    from typer.testing import CliRunner

    from ugatit_cli.cli.app import app

    data = tmp_path / "photos"
    data.mkdir()
    result = CliRunner().invoke(app, ["train", str(data), "--arch", arch, "--output", str(data / "run")])
    assert result.exit_code == 2, result.output
    assert f"{data / 'run'}: is inside the data folder {data}" in " ".join(result.stderr.split())
    monkeypatch.chdir(data)  # cd photos && ugatit train . : the default runs/photos is inside the data
    result = CliRunner().invoke(app, ["train", ".", "--arch", arch])
    assert result.exit_code == 2, result.output
    assert "is inside the data folder . (the default --output runs/NAME" in " ".join(result.stderr.split())
    assert sorted(data.iterdir()) == []  # nothing written


def test_resume_on_another_data_dir_keeps_config_and_data_json_in_step(dataset, tmp_path):
    """config.json's data_dir and data.json's root both name the data the run trains on now; data.json keeps
    the earlier folder."""
    import shutil

    from typer.testing import CliRunner

    from ugatit_cli.cli.app import app

    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(dataset), *TINY_ARGS, "--iterations", "1", "--output", str(run),
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    moved = shutil.copytree(dataset, tmp_path / "moved")
    result = CliRunner().invoke(app, ["train", str(moved), "--resume", "--iterations", "2", "--output", str(run)])
    assert result.exit_code == 0, result.output
    assert f"is not the run's, {dataset.resolve()}" in " ".join(result.stderr.split())
    config = json.loads((run / "config.json").read_text())
    data = json.loads((run / "data.json").read_text())
    assert config["data_dir"] == data["root"] == str(moved.resolve())
    assert data["earlier"] == [{"root": str(dataset.resolve()), "images": sum(len(v) for v in data["train"].values())}]


def wait_for(predicate, process, timeout=90):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_kill_9_loses_at_most_the_iterations_since_the_last_save(dataset, tmp_path):
    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "ugatit_cli", "train", str(dataset), *TINY_ARGS,
                                "--iterations", "1000", "--save-every", "2", "--keep", "2", "--output", str(run),
                                "--quiet"], env=CHILD_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: len(ckpt.list_checkpoints(run)) >= 2, process)
        time.sleep(0.3)  # somewhere in the middle of the next iterations or saves
    finally:
        process.kill()
        process.communicate()
    newest = ckpt.latest_checkpoint(run)
    logged = max(json.loads(line)["iteration"] for line in (run / "log.jsonl").read_text().splitlines()
                 if line.endswith("}"))
    saved = int(newest.name.split("_")[1])
    assert logged - saved < 2 + 1  # at most the iterations since the last save are lost
    summary = train(dataset, {"iterations": saved + 2}, output=run, resume=True, device="cpu", progress=False)
    assert summary.iteration == saved + 2
    iterations = [json.loads(line)["iteration"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert iterations == list(range(1, saved + 3))  # the lost iterations were trimmed from the log, then redone


def test_sigint_saves_a_checkpoint_and_exits_cleanly(dataset, tmp_path):
    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "ugatit_cli", "train", str(dataset), *TINY_ARGS,
                                "--iterations", "1000", "--save-every", "500", "--workers", "1", "--output",
                                str(run)], env=CHILD_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (run / "log.jsonl").is_file() and (run / "log.jsonl").stat().st_size > 0, process)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "interrupted at iteration" in stderr and "Traceback" not in stderr
    newest = ckpt.latest_checkpoint(run)
    assert newest is not None and 0 < int(newest.name.split("_")[1]) < 500
    assert ckpt.load_checkpoint(newest)["iteration"] == int(newest.name.split("_")[1])


def test_a_run_folder_translates_and_exports_through_the_cli(dataset, tmp_path):
    """The run folder is a MODEL for `translate` and `export`; the export's card carries the training config."""
    run = tmp_path / "run"
    train(dataset, {**TINY, "iterations": 2, "ema": 0.5}, output=run, device="cpu", progress=False)

    result = CliRunner().invoke(app, ["translate", str(dataset / "testA"), "--model", str(run), "--output",
                                      str(tmp_path / "translated"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "translated" / "testA").iterdir()) == ["000.png", "001.png"]

    result = CliRunner().invoke(app, ["export", str(run), "--output", str(tmp_path / "exported"), "--quiet"])
    assert result.exit_code == 0, result.output
    card = (tmp_path / "exported" / "README.md").read_text()
    assert "iterations" in card and "ema" in card and "horse2zebra" in card

    batch = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        for direction in ("a2b", "b2a"):
            exported = ugatit_cli.load_generator(tmp_path / "exported", direction=direction)(batch)
            from_run = ugatit_cli.load_generator(run, direction=direction)(batch)
            for ours, theirs in zip(exported, from_run, strict=True):
                assert torch.equal(ours, theirs)


def test_losses_go_to_tensorboard_when_it_is_installed(dataset, tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    run = tmp_path / "run"
    train(dataset, {**TINY, "iterations": 3}, output=run, device="cpu", progress=False)
    events = event_accumulator.EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"loss/d_loss", "loss/g_loss", "lr"} <= set(tags)
    logged = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [e.step for e in events.Scalars("loss/g_loss")] == [entry["iteration"] for entry in logged]
    assert [e.value for e in events.Scalars("loss/g_loss")] == pytest.approx([entry["g_loss"] for entry in logged])


def test_a_bf16_run_trains_saves_and_loads(dataset, tmp_path):
    """bf16 autocast through a whole run (the CPU can run it): finite losses, fp32 weights in the checkpoint."""
    run = tmp_path / "run"
    summary = train(dataset, {**TINY, "iterations": 2, "precision": "bf16"}, output=run, device="cpu", progress=False)
    assert all(np.isfinite(value) for value in summary.losses.values())
    generator = ugatit_cli.load_generator(run, direction="a2b")
    assert all(p.dtype == torch.float32 for p in generator.parameters())
    with torch.no_grad():
        assert torch.isfinite(generator(torch.rand(1, 3, 32, 32) * 2 - 1)[0]).all()
