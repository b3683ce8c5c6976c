"""pix2pixHD under DDP: two CPU processes over gloo, as torchrun sets them up, training through the library.

The replicas stay identical, each rank reads its own half of every epoch, and (the per-sample losses being
means over equal-sized images) two ranks at batch 1 train what one process at batch 2 trains. The feature
clusters computed after the last iteration are the same on both ranks and equal the single-process ones.
"""

import json
import os

import numpy as np
import torch
import torch.multiprocessing as mp
from test_pix2pixhd_cli import _pair
from test_train_ddp import free_port
from test_train_run import states_equal

from ugatit_cli.store import run_folder as ckpt

# a local enhancer whose first iteration trains the enhancer alone: netG's DDP wrapper is rebuilt for the second
SETTINGS = {"label_nc": 4, "netG": "local", "ngf": 4, "n_downsample_global": 1, "n_blocks_global": 1,
            "n_blocks_local": 1, "niter_fix_global": 1, "ndf": 8, "num_D": 1,
            "no_vgg_loss": True, "resize_or_crop": "none", "workers": 0, "instance_feat": True, "nef": 4,
            "n_downsample_E": 2, "iterations": 2, "save_every": 2, "sample_every": 2, "log_every": 1}


def rank_main(rank, port, data, out, settings):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from ugatit_cli.families.pix2pixhd.step import Pix2PixHDTrainer
    from ugatit_cli.train.run import train

    seen, losses = [], []
    step = Pix2PixHDTrainer.train_step

    def recording(self, batch):
        seen.append([float(x) for x in batch["image"].flatten(1).sum(1)])  # one fingerprint per sample
        losses.append(step(self, batch))
        return losses[-1]

    Pix2PixHDTrainer.train_step = recording
    summary = train(data, settings, arch="pix2pixhd", output=out / "ddp", device="cpu", progress=False)
    torch.save({"iteration": summary.iteration, "nets": summary.trainer.state_dict()["nets"], "seen": seen,
                "losses": losses},
               out / f"rank{rank}.pt")


def test_two_gloo_processes_train_like_one_process_at_twice_the_batch(tmp_path):
    data = tmp_path / "data"
    for i in range(4):
        _pair(data, "train", f"city_{i:06d}", (32, 32), i)
    mp.spawn(rank_main, args=(free_port(), data, tmp_path, SETTINGS), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert rank0["iteration"] == rank1["iteration"] == 2
    assert set(rank0["nets"]) == {"netG", "netD", "netE", "clusters"}
    assert states_equal(rank0["nets"], rank1["nets"])  # identical replicas, clusters included
    assert int(rank0["nets"]["clusters"]["counts"].sum()) > 0

    # the data is sharded: in each iteration the ranks read different samples, and together all four once
    from ugatit_cli.train.run import train

    fingerprints = [s for r in (rank0, rank1) for step in r["seen"] for s in step]
    assert len(fingerprints) == 4 and len({round(f, 3) for f in fingerprints}) == 4

    # one process at batch 2 reads the same pairs per iteration: from the same weights its first loss terms are
    # the mean of the ranks' (every term is a mean over equal-sized images), and it trains the same weights up to
    # the sign of Adam's first steps where a gradient is ~0 (each such step is +-lr whatever the gradient's size)
    single = train(data, {**SETTINGS, "batch_size": 2}, arch="pix2pixhd", output=tmp_path / "single",
                   device="cpu", progress=False)
    first = [json.loads(line) for line in (tmp_path / "single" / "log.jsonl").read_text().splitlines()][0]
    for term in ("G_GAN", "G_GAN_Feat", "D_real", "D_fake"):
        mean = (rank0["losses"][0][term] + rank1["losses"][0][term]) / 2
        assert abs(first[term] - mean) <= 1e-5 * abs(mean) + 1e-7, term
    alone = single.trainer.state_dict()["nets"]
    lr, steps = 2e-4, SETTINGS["iterations"]
    for name in ("netG", "netD", "netE"):
        diff = torch.cat([(rank0["nets"][name][k] - v).abs().flatten() for k, v in alone[name].items()])
        assert float(diff.max()) <= 2 * lr * steps + 1e-6, name
        assert float((diff <= lr / 4).float().mean()) >= 0.9, name
    torch.testing.assert_close(rank0["nets"]["clusters"]["counts"], alone["clusters"]["counts"])
    np.testing.assert_allclose(rank0["nets"]["clusters"]["centres"].numpy(), alone["clusters"]["centres"].numpy(),
                               atol=2e-3)

    # rank 0 alone wrote the run: one log line per iteration, its checkpoint holds the clusters
    run = tmp_path / "ddp"
    assert len((run / "log.jsonl").read_text().splitlines()) == 2
    saved = ckpt.load_checkpoint(ckpt.latest_checkpoint(run))
    assert saved["world_size"] == 2 and states_equal(saved["nets"]["clusters"], rank1["nets"]["clusters"])
