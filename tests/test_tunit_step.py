"""The TUNIT training iteration: phases, which networks move, EMA, exact resume, domain style codes."""

import copy

import pytest
import torch

from ugatit_cli.families.tunit.config import TunitHyperParams
from ugatit_cli.families.tunit.losses import contrastive_loss, iic_loss
from ugatit_cli.families.tunit.step import TunitTrainer, domain_styles

B = 4


pytestmark = pytest.mark.usefixtures("one_thread")


def _trainer(**kw) -> TunitTrainer:
    torch.manual_seed(0)
    settings = dict(size=32, k=3, sty_dim=8, nf=8, batch_size=B, iterations=10, warmup_iterations=1, ema_start=2,
                    epoch_iterations=2)
    settings.update(kw)
    return TunitTrainer(TunitHyperParams(**settings))


def _batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, 3, 32, 32, generator=g) * 2 - 1
    return x, (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def _params(trainer, name):
    return [p.detach().clone() for p in trainer.nets[name].parameters()]


def _moved(before, trainer, name):
    return any(not torch.equal(a, b) for a, b in zip(before, trainer.nets[name].parameters(), strict=True))


def test_warmup_trains_the_guiding_network_only_then_the_gan_phase_trains_all():
    trainer = _trainer()
    x, x_tf = _batch(0)
    # the guiding loss of the first step, computed independently before the step changes anything
    C, C_EMA = copy.deepcopy(trainer.nets["C"]), copy.deepcopy(trainer.nets["C_EMA"])
    with torch.no_grad():
        queue = C_EMA(x_tf)["cont"]
        expected_iic = iic_loss(torch.softmax(C.logits(x), 1), torch.softmax(C.logits(x_tf), 1)).item()
        expected_moco = contrastive_loss(C.style(x), C_EMA.style(x_tf), queue).item()

    before = {n: _params(trainer, n) for n in trainer.nets}
    out = trainer.step(x, x_tf)
    assert set(out) == {"c_loss", "moco", "iic"}
    assert out["iic"] == pytest.approx(expected_iic, abs=1e-5)
    assert out["moco"] == pytest.approx(expected_moco, rel=1e-4)
    assert out["c_loss"] == pytest.approx(out["moco"] + 5 * out["iic"], rel=1e-5)
    assert _moved(before["C"], trainer, "C") and _moved(before["C_EMA"], trainer, "C_EMA")
    for name in ("G", "D", "G_EMA"):
        assert not _moved(before[name], trainer, name), name
    assert trainer.queue.shape == (2 * B, 8)  # filled from the first batch, then this batch's keys appended

    before = {n: _params(trainer, n) for n in trainer.nets}
    out = trainer.step(*_batch(1))
    assert trainer.phase() == "gan"
    assert {"d_loss", "d_adv", "d_gp", "g_loss", "g_adv", "g_imgrec", "g_stycont"} <= set(out)
    assert all(torch.isfinite(torch.tensor(v)) for v in out.values())
    assert out["c_loss"] == pytest.approx(0.1 * (out["moco"] + 5 * out["iic"]), rel=1e-4)
    assert out["g_loss"] == pytest.approx(out["g_adv"] + 0.1 * out["g_imgrec"] + 0.01 * out["g_stycont"], rel=1e-4)
    assert out["d_loss"] == pytest.approx(out["d_adv"] + out["d_gp"], rel=1e-5)
    for name in ("G", "D", "C"):
        assert _moved(before[name], trainer, name), name
    assert not _moved(before["G_EMA"], trainer, "G_EMA")  # EMA of G starts at ema_start = 2
    # the end of an "epoch" (2 iterations): C_EMA takes C's batch-norm statistics
    for (name, a), b in zip(trainer.nets["C_EMA"].named_buffers(), trainer.nets["C"].buffers(), strict=True):
        assert torch.equal(a, b), name

    g_before = _params(trainer, "G")
    trainer.step(*_batch(2))  # iteration 2: G_EMA is reset to G, then averaged towards the updated G
    g_after = list(trainer.nets["G"].parameters())
    for old, new, ema in zip(g_before, g_after, trainer.nets["G_EMA"].parameters(), strict=True):
        torch.testing.assert_close(ema, 0.999 * old + 0.001 * new.detach(), atol=1e-6, rtol=0)
    assert sum(trainer.pop_cluster_sizes()) == 3 * B and sum(trainer.pop_cluster_sizes()) == 0


def test_labelled_batches_use_cross_entropy():
    trainer = _trainer()
    out = trainer.step(*_batch(0), y=torch.tensor([0, 1, 2, 0]))
    assert "ce" in out and "iic" not in out and out["ce"] > 0


def test_resume_from_state_dict_gives_the_same_next_steps():
    a = _trainer()
    for i in range(2):
        a.step(*_batch(i))
    state = copy.deepcopy(a.state_dict())
    b = _trainer(seed=5)  # other initial weights and permutation generator: everything must come from state
    b.load_state_dict(state)
    for i in (2, 3):
        out_a, out_b = a.step(*_batch(i)), b.step(*_batch(i))
        assert out_a == out_b
    for name in a.nets:
        for (k, pa), pb in zip(a.nets[name].state_dict().items(), b.nets[name].state_dict().values(), strict=True):
            assert torch.equal(pa, pb), f"{name}.{k}"


def test_domain_styles_average_the_style_codes_per_pseudo_domain():
    trainer = _trainer()
    C = trainer.nets["C_EMA"].eval()
    x = torch.rand(12, 3, 32, 32) * 2 - 1
    styles, counts = domain_styles(C, x, k=3, batch_size=5)
    with torch.no_grad():
        out = C(x)
    domains = out["disc"].argmax(1)
    assert counts.tolist() == torch.bincount(domains, minlength=3).tolist()
    for d in range(3):
        if counts[d]:
            torch.testing.assert_close(styles[d], out["cont"][domains == d].mean(0), atol=1e-5, rtol=1e-5)
        else:
            assert torch.equal(styles[d], torch.zeros(8))
    # domains from another net (official: C assigns, C_EMA gives the codes)
    other = trainer.nets["C"].eval()
    with torch.no_grad():
        other_domains = other(x)["disc"].argmax(1)
    _, counts = domain_styles(C, x, k=3, assign_with=other)
    assert counts.tolist() == torch.bincount(other_domains, minlength=3).tolist()
