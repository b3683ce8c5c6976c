"""Distributed training with two CPU processes over gloo: identical replicas, rank 0 alone writes, exact resume."""

import json
import os
import socket
import subprocess
import sys

import torch
import torch.multiprocessing as mp
from test_train_run import TINY, TINY_ARGS, make_dataset, states_equal

from ugatit_cli.store import run_folder as ckpt


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rank_main(rank, port, dataset, out, runs):
    """One rank, set up the way torchrun sets it up (environment variables), training through the library."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from ugatit_cli.train.run import train

    for name, settings, resume in runs:
        summary = train(dataset, settings, output=out / name, resume=resume, device="cpu", progress=False)
        torch.save({"iteration": summary.iteration, "state": summary.trainer.state_dict()},
                   out / f"{name}.rank{rank}.pt")


def spawn(dataset, out, runs):
    mp.spawn(rank_main, args=(free_port(), dataset, out, runs), nprocs=2, join=True)


def results(out, name):
    return [torch.load(out / f"{name}.rank{r}.pt", weights_only=True) for r in range(2)]


def test_two_gloo_processes_train_identical_replicas_and_resume_exactly(tmp_path):
    dataset = make_dataset(tmp_path / "data")
    settings = {**TINY, "save_every": 2, "sample_every": 2}
    spawn(dataset, tmp_path, [("straight", {**settings, "iterations": 4}, False),
                              ("split", {**settings, "iterations": 2}, False)])
    spawn(dataset, tmp_path, [("split", {"iterations": 4}, True)])
    for name in ("straight", "split"):
        rank0, rank1 = results(tmp_path, name)
        assert rank0["iteration"] == rank1["iteration"] == 4  # both ranks ran
        assert states_equal(rank0["state"]["nets"], rank1["state"]["nets"])  # DDP kept the replicas identical
    # resumed under DDP exactly like the uninterrupted run (weights and both optimisers)
    assert states_equal(results(tmp_path, "straight")[0]["state"], results(tmp_path, "split")[0]["state"])
    # rank 0 alone wrote: one log line per iteration, one grid per sample, checkpoints of rank 0's weights
    run = tmp_path / "split"
    assert [json.loads(line)["iteration"] for line in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "A2B_00000002.png", "A2B_00000004.png", "B2A_00000002.png", "B2A_00000004.png"]
    saved = ckpt.load_checkpoint(ckpt.latest_checkpoint(run))
    assert len(saved["rng"]) == 2 and saved["world_size"] == 2
    assert states_equal(saved["nets"], {k: {n: t.contiguous() for n, t in v.items()}
                                        for k, v in results(tmp_path, "split")[1]["state"]["nets"].items()})
    assert json.loads((run / "config.json").read_text())["world_size"] == 2
    # and nothing else: no rank wrote a folder or file of its own
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["data", "split", "straight"] + [f"{n}.rank{r}.pt" for n in ("split", "straight") for r in range(2)])


def test_torchrun_runs_the_cli_on_two_processes(tmp_path):
    dataset = make_dataset(tmp_path / "data")
    run = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
               "-m", "ugatit_cli", "train", str(dataset), *TINY_ARGS, "--iterations", "3", "--output", str(run),
               "--json"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["iteration"] == 3  # printed once, by rank 0
    assert [json.loads(line)["iteration"] for line in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert ckpt.latest_checkpoint(run).name == "step_00000003"
