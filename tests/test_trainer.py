"""The training step: loss terms, parity with a step written the official way, EMA, resume, precision."""

import copy
import io
import itertools

import pytest
import torch
import torch.nn.functional as F

from ugatit_cli.errors import UserError
from ugatit_cli.families.ugatit import LIN, AdaLIN, losses
from ugatit_cli.families.ugatit.trainer import SAMPLE_ROWS
from ugatit_cli.train import TrainConfig, Trainer

SIZE = 32


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**overrides) -> TrainConfig:
    settings = {"size": SIZE, "ch": 4, "n_res": 1, "light": True, "batch_size": 2, "iterations": 100}
    return TrainConfig(**{**settings, **overrides})


def make_trainer(seed: int = 0, **overrides) -> Trainer:
    torch.manual_seed(seed)
    return Trainer(tiny(**overrides))


def batches(n: int, batch_size: int = 2, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(batch_size, 3, SIZE, SIZE, generator=g) * 2 - 1,
             torch.rand(batch_size, 3, SIZE, SIZE, generator=g) * 2 - 1) for _ in range(n)]


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


# --- the loss terms against the formulas written out by hand ------------------------------------------------

def test_loss_terms_equal_the_official_formulas_by_hand():
    trainer = make_trainer()
    nets = trainer.nets
    (real_a, real_b), = batches(1)
    with torch.no_grad():
        fake_A2B, cam_A2B, _ = nets["genA2B"](real_a)
        fake_B2A, cam_B2A, _ = nets["genB2A"](real_b)
        fake_A2A, cam_A2A, _ = nets["genB2A"](real_a)
        fake_B2B, cam_B2B, _ = nets["genA2B"](real_b)
        fake_A2B2A = nets["genB2A"](fake_A2B)[0]
        fake_B2A2B = nets["genA2B"](fake_B2A)[0]
        judge = {"GA": ("disGA", real_a, fake_B2A), "LA": ("disLA", real_a, fake_B2A),
                 "GB": ("disGB", real_b, fake_A2B), "LB": ("disLB", real_b, fake_A2B)}
        real_out = {k: nets[d](r)[:2] for k, (d, r, _) in judge.items()}
        fake_out = {k: nets[d](f)[:2] for k, (d, _, f) in judge.items()}

    d = losses.discriminator_terms(real_out, fake_out)
    d.update(losses.discriminator_loss(d, adv_weight=2.0))
    images = {"fake_A2B2A": fake_A2B2A, "fake_B2A2B": fake_B2A2B, "fake_A2A": fake_A2A, "fake_B2B": fake_B2B}
    cams = {"fake_A2B": cam_A2B, "fake_B2A": cam_B2A, "fake_A2A": cam_A2A, "fake_B2B": cam_B2B}
    g = losses.generator_terms(fake_out, real_a, real_b, images, cams)
    g.update(losses.generator_loss(g, adv_weight=2.0, cycle_weight=3.0, identity_weight=5.0, cam_weight=7.0))

    def sq(x, target):  # least squares, by hand
        return ((x - target) ** 2).sum() / x.numel()

    def bce(x, target):  # BCE with logits, by hand: -[t log s(x) + (1 - t) log(1 - s(x))]
        s = 1 / (1 + torch.exp(-x))
        return -(target * torch.log(s) + (1 - target) * torch.log(1 - s)).mean()

    hand = {}
    for k in ("GA", "LA", "GB", "LB"):
        (rl, rc), (fl, fc) = real_out[k], fake_out[k]
        hand[f"d_adv_{k}"] = sq(rl, 1) + sq(fl, 0)
        hand[f"d_adv_cam_{k}"] = sq(rc, 1) + sq(fc, 0)
        hand[f"g_adv_{k}"] = sq(fl, 1)
        hand[f"g_adv_cam_{k}"] = sq(fc, 1)
    hand["g_cycle_A"] = (fake_A2B2A - real_a).abs().mean()
    hand["g_cycle_B"] = (fake_B2A2B - real_b).abs().mean()
    hand["g_identity_A"] = (fake_A2A - real_a).abs().mean()
    hand["g_identity_B"] = (fake_B2B - real_b).abs().mean()
    hand["g_cam_A"] = bce(cam_B2A, 1) + bce(cam_A2A, 0)  # translated into A: "source" 1; identity: 0
    hand["g_cam_B"] = bce(cam_A2B, 1) + bce(cam_B2B, 0)
    for dom in "AB":
        d_adv, g_adv = (hand[f"{p}_adv_G{dom}"] + hand[f"{p}_adv_cam_G{dom}"] + hand[f"{p}_adv_L{dom}"]
                        + hand[f"{p}_adv_cam_L{dom}"] for p in "dg")
        hand[f"d_loss_{dom}"] = 2.0 * d_adv
        hand[f"g_loss_{dom}"] = (2.0 * g_adv + 3.0 * hand[f"g_cycle_{dom}"] + 5.0 * hand[f"g_identity_{dom}"]
                                 + 7.0 * hand[f"g_cam_{dom}"])
    hand["d_loss"] = hand["d_loss_A"] + hand["d_loss_B"]
    hand["g_loss"] = hand["g_loss_A"] + hand["g_loss_B"]

    ours = {**d, **g}
    assert set(ours) == set(hand)
    for key, value in hand.items():
        assert rel(ours[key].item(), value.item()) < 1e-5, key
    assert hand["g_cam_A"] > 0 and hand["g_cycle_B"] > 0  # the comparison is not between zeros


# --- a whole step against one written the official way -------------------------------------------------------

class OfficialStyleStep:
    """The official iteration, written plainly: both generators run for the D update and D's loss flows back
    through them; the G update runs them again with the discriminators collecting gradients; ``lr`` is
    lowered in place by ``lr / (iterations // 2)`` after the half; every rho is clamped afterwards."""

    def __init__(self, nets, cfg: TrainConfig):
        self.n, self.cfg = nets, cfg
        adam = {"lr": cfg.lr, "betas": (0.5, 0.999), "weight_decay": cfg.weight_decay}
        self.g_optim = torch.optim.Adam(itertools.chain(nets["genA2B"].parameters(), nets["genB2A"].parameters()),
                                        **adam)
        self.d_optim = torch.optim.Adam(itertools.chain(*(nets[k].parameters() for k in
                                                          ("disGA", "disGB", "disLA", "disLB"))), **adam)

    def __call__(self, step: int, real_a, real_b):
        n, cfg = self.n, self.cfg
        half = cfg.iterations // 2
        if cfg.decay and step > half:
            for optim in (self.g_optim, self.d_optim):
                optim.param_groups[0]["lr"] -= cfg.lr / half
        mse = lambda x, t: F.mse_loss(x, torch.full_like(x, t))  # noqa: E731

        self.d_optim.zero_grad()
        fake_A2B, fake_B2A = n["genA2B"](real_a)[0], n["genB2A"](real_b)[0]
        real = {k: n[f"dis{k}"](x) for k, x in (("GA", real_a), ("LA", real_a), ("GB", real_b), ("LB", real_b))}
        fake = {k: n[f"dis{k}"](x) for k, x in (("GA", fake_B2A), ("LA", fake_B2A), ("GB", fake_A2B), ("LB", fake_A2B))}
        d_part = {k: mse(real[k][0], 1) + mse(fake[k][0], 0) + mse(real[k][1], 1) + mse(fake[k][1], 0) for k in real}
        d_loss = cfg.adv_weight * (d_part["GA"] + d_part["LA"]) + cfg.adv_weight * (d_part["GB"] + d_part["LB"])
        d_loss.backward()
        self.d_optim.step()

        self.g_optim.zero_grad()
        fake_A2B, cam_A2B, _ = n["genA2B"](real_a)
        fake_B2A, cam_B2A, _ = n["genB2A"](real_b)
        fake_A2B2A, fake_B2A2B = n["genB2A"](fake_A2B)[0], n["genA2B"](fake_B2A)[0]
        fake_A2A, cam_A2A, _ = n["genB2A"](real_a)
        fake_B2B, cam_B2B, _ = n["genA2B"](real_b)
        fake = {k: n[f"dis{k}"](x) for k, x in (("GA", fake_B2A), ("LA", fake_B2A), ("GB", fake_A2B), ("LB", fake_A2B))}
        adv = {k: mse(fake[k][0], 1) + mse(fake[k][1], 1) for k in fake}
        bce = F.binary_cross_entropy_with_logits
        g_loss = 0
        for dom, cycled, same, real_x, cam_in, cam_same in (
                ("A", fake_A2B2A, fake_A2A, real_a, cam_B2A, cam_A2A),
                ("B", fake_B2A2B, fake_B2B, real_b, cam_A2B, cam_B2B)):
            g_loss = g_loss + (cfg.adv_weight * (adv[f"G{dom}"] + adv[f"L{dom}"])
                               + cfg.cycle_weight * F.l1_loss(cycled, real_x)
                               + cfg.identity_weight * F.l1_loss(same, real_x)
                               + cfg.cam_weight * (bce(cam_in, torch.ones_like(cam_in))
                                                   + bce(cam_same, torch.zeros_like(cam_same))))
        g_loss.backward()
        self.g_optim.step()
        for gen in (n["genA2B"], n["genB2A"]):
            for m in gen.modules():
                if isinstance(m, (AdaLIN, LIN)):
                    m.rho.data = m.rho.data.clamp(0, 1)
        return d_loss.item(), g_loss.item(), self.g_optim.param_groups[0]["lr"]


@pytest.mark.parametrize("batch_size", [1, 2])
def test_step_equals_the_official_way_through_the_lr_decay_and_rho_clipping(batch_size):
    steps = 6
    trainer = make_trainer(iterations=steps, batch_size=batch_size)  # decay over steps 4..6, lr 0 at the last
    reference = OfficialStyleStep({k: copy.deepcopy(v) for k, v in trainer.nets.items()}, trainer.config)
    lrs = []
    for step, (a, b) in enumerate(batches(steps, batch_size), start=1):
        out = trainer.step(a, b)
        d_ref, g_ref, lr_ref = reference(step, a, b)
        assert rel(out["d_loss"], d_ref) < 1e-4 and rel(out["g_loss"], g_ref) < 1e-4, step
        assert out["lr"] == pytest.approx(lr_ref, abs=1e-12)
        lrs.append(out["lr"])
    assert lrs == pytest.approx([1e-4, 1e-4, 1e-4, 2e-4 / 3, 1e-4 / 3, 0.0], abs=1e-12)
    assert trainer.iteration == steps
    rhos = [m.rho for m in trainer.nets["genA2B"].modules() if isinstance(m, (AdaLIN, LIN))]
    assert all(0 <= r.min() and r.max() <= 1 for r in rhos)
    assert any((r == 0).any() for r in rhos)  # LIN rho starts at 0 and was pushed below: clipped
    ref_rhos = [m.rho for m in reference.n["genA2B"].modules() if isinstance(m, (AdaLIN, LIN))]
    for ours, ref in zip(rhos, ref_rhos, strict=True):
        torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


def test_lr_schedule_never_goes_below_zero():
    trainer = make_trainer(iterations=5)  # odd: the official subtraction would end at -lr/2
    assert [trainer.lr_at(s) for s in range(1, 6)] == pytest.approx([1e-4, 1e-4, 5e-5, 0.0, 0.0])
    assert make_trainer(iterations=5, decay=False).lr_at(5) == 1e-4


# --- loading, EMA, resuming ----------------------------------------------------------------------------------

def test_load_official_checkpoint_all_six_networks(tmp_path):
    source = make_trainer(seed=7)
    path = tmp_path / "selfie_params_0001000.pt"
    torch.save({name: net.state_dict() for name, net in source.nets.items()}, path)  # the official layout
    trainer = make_trainer(seed=0, ema=0.9)
    trainer.load_official(path)
    for name, net in source.nets.items():
        for key, value in net.state_dict().items():
            assert torch.equal(trainer.nets[name].state_dict()[key], value), (name, key)
    assert torch.equal(trainer.ema["genA2B"].UpBlock2[2].weight, source.nets["genA2B"].UpBlock2[2].weight)

    with pytest.raises(UserError, match="does not fit"):
        Trainer(tiny(ch=8)).load_official(path)
    partial = tmp_path / "gen_only_params_0000001.pt"
    torch.save({"genA2B": source.nets["genA2B"].state_dict()}, partial)
    with pytest.raises(UserError, match="lacks genB2A"):
        trainer.load_official(partial)


def test_ema_is_the_exponential_average_and_is_what_samples_use():
    trainer = make_trainer(ema=0.75)
    name = "genB2A"
    start = copy.deepcopy(trainer.nets[name].state_dict())
    (a1, b1), (a2, b2) = batches(2)
    trainer.step(a1, b1)
    live1 = copy.deepcopy(trainer.nets[name].state_dict())
    trainer.step(a2, b2)
    live2 = trainer.nets[name].state_dict()
    ema = trainer.ema[name].state_dict()
    for key in start:
        expected = 0.75 * (0.75 * start[key] + 0.25 * live1[key]) + 0.25 * live2[key]
        torch.testing.assert_close(ema[key], expected, rtol=1e-6, atol=1e-7)
    assert not torch.equal(ema["FC.0.weight"], live2["FC.0.weight"])

    sample = trainer.sample(a1, b1)
    assert trainer.generators() is trainer.ema
    with torch.no_grad():
        torch.testing.assert_close(sample["fake_B2A"], trainer.ema["genB2A"](b1)[0])
    for row in SAMPLE_ROWS.values():
        assert all(key in sample for key in row)
    assert sample["fake_A2B2A"].shape == (2, 3, SIZE, SIZE)
    assert sample["fake_A2B_heatmap"].shape == (2, 1, SIZE // 4, SIZE // 4)


def test_state_dict_round_trip_continues_identically():
    data = batches(5)
    first = make_trainer(seed=0, ema=0.9, iterations=8)
    for a, b in data[:2]:
        first.step(a, b)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = make_trainer(seed=3, ema=0.9, iterations=8)  # different initial weights: all must be replaced
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.iteration == 2

    for a, b in data[2:]:  # steps 3..5 cross into the decay (half = 4)
        assert resumed.step(a, b) == first.step(a, b)
    for name, net in first.nets.items():
        for key, value in net.state_dict().items():
            assert torch.equal(resumed.nets[name].state_dict()[key], value), (name, key)
    assert torch.equal(resumed.ema["genA2B"].FC[0].weight, first.ema["genA2B"].FC[0].weight)

    with pytest.raises(UserError, match="EMA"):
        make_trainer(iterations=8).load_state_dict(first.state_dict())


# --- precision, compile --------------------------------------------------------------------------------------

def test_bf16_autocast_step_on_cpu():
    trainer = make_trainer(precision="bf16")
    before = trainer.nets["genA2B"].FC[0].weight.detach().clone()
    out = trainer.step(*batches(1)[0])
    assert all(torch.isfinite(torch.tensor(v)) for v in out.values())
    weight = trainer.nets["genA2B"].FC[0].weight
    assert weight.dtype == torch.float32 and not torch.equal(weight, before)


def test_fp16_needs_a_gpu():
    with pytest.raises(UserError, match="fp16"):
        make_trainer(precision="fp16")


def test_compile_wraps_the_networks_step_uses():
    trainer = make_trainer(compile=True)
    for name in ("genA2B", "genB2A"):
        compiled = trainer._train_nets[name]
        assert compiled is not trainer.nets[name] and compiled._orig_mod is trainer.nets[name]  # OptimizedModule
    assert trainer._train_nets["disGA"] is trainer.nets["disGA"]  # see Trainer.__init__: not compiled
    plain = make_trainer()
    assert all(plain._train_nets[name] is net for name, net in plain.nets.items())


# --- it learns -----------------------------------------------------------------------------------------------

def squares(n: int, g: torch.Generator) -> torch.Tensor:
    """White rectangles on black: structure that survives the generators' instance norms."""
    images = -torch.ones(n, 3, SIZE, SIZE)
    for image in images:
        for _ in range(3):
            x, y, w, h = torch.randint(0, SIZE - 8, (4,), generator=g).tolist()
            image[:, y:y + 4 + h % 12, x:x + 4 + w % 12] = 1
    return images


def test_cycle_and_identity_losses_fall_on_a_learnable_toy_pair():
    """A: white rectangles on black; B: the same images inverted. The paper's loss weights, a larger lr."""
    trainer = make_trainer(lr=1e-3, iterations=10_000, batch_size=4)
    g = torch.Generator().manual_seed(5)
    history = []
    for _ in range(80):
        a = squares(4, g)
        out = trainer.step(a, -a)
        history.append(sum(out[k] for k in ("g_cycle_A", "g_cycle_B", "g_identity_A", "g_identity_B")) / 4)
    early, late = sum(history[:10]) / 10, sum(history[-10:]) / 10
    assert late < 0.6 * early, (early, late)  # measured: about 0.7 -> 0.25
