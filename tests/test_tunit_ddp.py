"""TUNIT under DDP: two CPU processes over gloo, as torchrun sets them up, training through the library across the
warm-up -> GAN boundary (R1's double backward, G and D idle during the warm-up), then an exact resume.

What holds, as in the official distributed run (per-process batch norm, queue and IIC; gradients averaged): each
rank's first-step loss terms are those of one process on that rank's shard alone, and the gradient every rank
applies is the mean of the two shards' gradients. What does not: equality with one process at twice the batch
(batch-norm statistics, IIC's joint distribution and the queue's negatives are per process).
"""

import json
import os
import shutil

import pytest
import torch
import torch.multiprocessing as mp
from test_train_ddp import free_port
from test_train_run import states_equal
from test_tunit_cli import _image

from ugatit_cli.store import run_folder as ckpt

SETTINGS = {"size": 32, "k": 3, "sty_dim": 8, "nf": 4, "batch_size": 2, "iterations": 3, "warmup_iterations": 1,
            "ema_start": 2, "epoch_iterations": 2, "save_every": 2, "sample_every": 3, "log_every": 1,
            "workers": 0}


def rank_main(rank, port, data, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from ugatit_cli.families.tunit.step import TunitTrainer
    from ugatit_cli.train.run import train

    record = {"batches": [], "losses": [], "grads": None}
    step, init = TunitTrainer.step, TunitTrainer.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        opt_step = self.opt_c.step

        def first_grads(*a, **kw):  # the gradients C's first optimiser step applies (after DDP's averaging)
            if record["grads"] is None:
                record["grads"] = [p.grad.clone() for p in self.nets["C"].parameters()]
            return opt_step(*a, **kw)

        self.opt_c.step = first_grads

    def recording_step(self, x_org, x_tf, *args, **kwargs):
        record["batches"].append((x_org.clone(), x_tf.clone()))
        record["losses"].append(step(self, x_org, x_tf, *args, **kwargs))
        return record["losses"][-1]

    TunitTrainer.__init__, TunitTrainer.step = recording_init, recording_step
    straight = train(data, SETTINGS, arch="tunit", output=out / "straight", device="cpu", progress=False)
    first = dict(record)
    if rank == 0:  # the run as it was after iteration 2 (its checkpoint at 2, the one at 3 not yet written)
        shutil.copytree(out / "straight", out / "split")
        shutil.rmtree(out / "split" / "checkpoints" / "step_00000003")
    torch.distributed.barrier()
    split = train(data, {"iterations": 3}, output=out / "split", resume=True, device="cpu", progress=False)
    torch.save({"straight": straight.trainer.core.state_dict(), "split": split.trainer.core.state_dict(),
                "batches": first["batches"], "losses": first["losses"], "grads": first["grads"]},
               out / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    root = tmp_path_factory.mktemp("tunit-ddp")
    data = root / "data"
    for i in range(8):
        _image(data / f"img_{i}.png", (40 + 25 * i, 200 - 20 * i, 90), i)
    mp.spawn(rank_main, args=(free_port(), data, root), nprocs=2, join=True)
    return root, [torch.load(root / f"rank{r}.pt", weights_only=True) for r in range(2)]


def test_ranks_stay_identical_cross_into_the_gan_phase_and_resume_exactly(ddp):
    root, (rank0, rank1) = ddp
    assert rank0["straight"]["iteration"] == rank1["straight"]["iteration"] == 3
    assert set(rank0["losses"][0]) == {"c_loss", "moco", "iic"}  # the warm-up: C alone
    assert {"d_gp", "g_loss", "g_stycont"} <= set(rank0["losses"][1])  # then the GAN phase, R1 included
    # identical replicas: weights, EMA copies (G_EMA from iteration 2), averaged batch-norm statistics, every
    # rank's queue, the cluster counts
    assert states_equal(rank0["straight"], rank1["straight"])
    assert rank0["straight"]["queue"].shape == (2, 2 + 3 * 2, 8)  # 2 ranks x (first batch + 3 batches) x sty_dim
    assert not torch.equal(rank0["straight"]["queue"][0], rank0["straight"]["queue"][1])  # each rank its own
    # a run resumed under DDP from its checkpoint at iteration 2 continues exactly
    assert states_equal(rank0["straight"], rank0["split"]) and states_equal(rank1["straight"], rank1["split"])

    # the data is sharded: in the first epoch (iterations 1-2) the ranks read disjoint halves, all 8 images
    sums = [[round(float(s), 3) for s in x.flatten(1).sum(1)] for r in (rank0, rank1) for x, _ in r["batches"][:2]]
    assert len({s for batch in sums for s in batch}) == 8

    # rank 0 alone wrote the run: one log line per iteration with every rank's cluster sizes (2 ranks x 2 images)
    run = root / "straight"
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in lines] == [1, 2, 3]
    assert all(sum(r["cluster_sizes"]) == 4 for r in lines)
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["domains_00000003.png", "reference_00000003.png"]
    saved = ckpt.load_checkpoint(ckpt.latest_checkpoint(run))
    assert saved["world_size"] == 2 and saved["queue"].shape == (2, 8, 8)
    assert states_equal(saved["nets"]["C"], rank1["straight"]["nets"]["C"])
    assert sorted(p.name for p in root.iterdir()) == ["data", "rank0.pt", "rank1.pt", "split", "straight"]


def test_a_ddp_step_is_each_shards_official_step_with_averaged_gradients(ddp):
    from ugatit_cli.families.base import get_family
    from ugatit_cli.families.tunit.step import TunitTrainer
    from ugatit_cli.train.run import resolve_config

    _, ranks = ddp
    config, hyper = resolve_config(get_family("tunit"), SETTINGS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone = []
        for r in ranks:  # one process on this rank's shard, from the same initial weights (the run's seed)
            torch.manual_seed(config.seed)
            single = TunitTrainer(hyper.recipe(config))
            losses = single.step(*r["batches"][0])
            assert losses.keys() == r["losses"][0].keys()
            for name, value in losses.items():
                assert value == pytest.approx(r["losses"][0][name], rel=1e-6, abs=1e-8), name
            alone.append([p.grad for p in single.nets["C"].parameters()])  # this shard's gradient of C
    finally:
        torch.set_num_threads(threads)
    assert not torch.allclose(alone[0][0], alone[1][0])  # the shards' gradients differ...
    for own0, own1, g0, g1 in zip(*alone, ranks[0]["grads"], ranks[1]["grads"], strict=True):
        assert torch.equal(g0, g1)  # ...every rank applies the same one...
        torch.testing.assert_close(g0, (own0 + own1) / 2, rtol=1e-5, atol=1e-9)  # ...their mean
