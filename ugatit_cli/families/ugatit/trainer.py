"""One U-GAT-IT training iteration, numerically the official PyTorch one, with less work.

The official loop (znxlwm/UGATIT-pytorch ``UGATIT.train``) runs both generators for the discriminator update,
back-propagates the discriminator loss through them (those gradients are then thrown away), runs them again
for the generator update and computes discriminator weight gradients there that are never used. Here:

- the generators run once per iteration: their graph serves the generator update, and detached copies of the
  translations feed the discriminator update (the generators do not change in between, so the images are
  the same ones the official code computes twice);
- the discriminators' weights do not require gradients during the generator update;
- optional autocast (bf16, or fp16 with a GradScaler), torch.compile of the generators, an EMA of the
  generators, and DistributedDataParallel.

Generator calls are not batched (real A and real B through one generator in one call): that measured slower
on the CPU. Each discriminator still runs on the real and the translated batch separately, in the official
order: every training-mode forward advances the spectral norm's power iteration, so merging them would
change the discriminator's normalised weights.
"""

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

from ...core.devices import autocast, check_precision
from ...core.nets import ema_copy, load_ema_state, load_strict, training_state, update_ema, wrap_for_training
from ...errors import UserError
from . import Generator, build_discriminators, clip_rho_, losses
from .importers.official_pytorch import NETWORK_NAMES, read_official_checkpoint
from .train_config import TrainConfig

GENERATOR_NAMES = ("genA2B", "genB2A")
DISCRIMINATOR_NAMES = ("disGA", "disGB", "disLA", "disLB")  # the official D_optim order
# The images and attention maps of a sample grid, one row per domain, in the official column order.
SAMPLE_ROWS = {
    "A": ("real_A", "fake_A2A_heatmap", "fake_A2A", "fake_A2B_heatmap", "fake_A2B", "fake_A2B2A_heatmap",
          "fake_A2B2A"),
    "B": ("real_B", "fake_B2B_heatmap", "fake_B2B", "fake_B2A_heatmap", "fake_B2A", "fake_B2A2B_heatmap",
          "fake_B2A2B"),
}


def _parameters(nets: dict[str, nn.Module], names: Iterable[str]) -> list[nn.Parameter]:
    return [p for name in names for p in nets[name].parameters()]


class Trainer:
    """The six U-GAT-IT networks, their two Adam optimisers and one training iteration at a time.

    Seed the global torch RNG before constructing: the networks are initialised from it. With
    ``distributed=True`` the process group must be initialised already; every rank builds its networks,
    DistributedDataParallel copies rank 0's weights to the others, and gradients are averaged across ranks.
    """

    def __init__(self, config: TrainConfig, device: str | torch.device = "cpu", *, distributed: bool = False):
        self.config = config
        self.device = torch.device(device)
        self.autocast_dtype = check_precision(config.precision, self.device)
        self.model_config = config.model_config()
        self.iteration = 0  # completed iterations; step() runs official step `iteration + 1`

        nets: dict[str, nn.Module] = {name: Generator(self.model_config) for name in GENERATOR_NAMES}
        discriminators = build_discriminators(self.model_config)
        nets.update({name: discriminators[name] for name in DISCRIMINATOR_NAMES})
        # Contiguous (NCHW), not channels_last: on the CPU, PyTorch 2.14's InstanceNorm2d backward gives wrong
        # input gradients for channels_last batches of one image (the cycle pass of a batch-1 run), and
        # channels_last measured no faster here.
        self.nets = {name: net.to(self.device).train() for name, net in nets.items()}
        self.ema: dict[str, nn.Module] | None = None
        if config.ema is not None:
            if not 0.0 <= config.ema < 1.0:
                raise UserError(f"--ema must be in [0, 1), got {config.ema}")
            self.ema = {name: ema_copy(self.nets[name]) for name in GENERATOR_NAMES}

        # Official: Adam with weight decay as its L2 term. PyTorch's default implementation, as the official
        # code runs it: the fused kernel saves ~1% of a step here but rounds differently, and GAN training
        # amplifies rounding (fp32 d_loss drifted 3e-5 from the official in 8 steps with it, 3e-6 without).
        adam = {"betas": (config.beta1, config.beta2), "weight_decay": config.weight_decay}
        self.g_optim = torch.optim.Adam(_parameters(self.nets, GENERATOR_NAMES), lr=config.lr, **adam)
        self.d_optim = torch.optim.Adam(_parameters(self.nets, DISCRIMINATOR_NAMES), lr=config.lr, **adam)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")

        # What step() calls: DDP wrappers for the networks being updated (gradients are averaged across ranks),
        # the plain discriminators for the generator update (nothing of theirs is updated there). Only the
        # generators are compiled: they are most of the work, and a compiled discriminator run twice before
        # one backward (real, then translated) trips over the spectral norm's in-place power-iteration update.
        self.distributed = distributed
        self._train_nets = {name: self._wrap(net, distributed, compile=name in GENERATOR_NAMES)
                            for name, net in self.nets.items()}
        self._judges = {name: self.nets[name] for name in DISCRIMINATOR_NAMES}

    # --- construction helpers -------------------------------------------------------------------------------

    def _wrap(self, net: nn.Module, distributed: bool, compile: bool) -> nn.Module:
        return wrap_for_training(net, self.device, distributed=distributed, compile=compile and self.config.compile)

    # --- the schedule -----------------------------------------------------------------------------------------

    def lr_at(self, step: int) -> float:
        """The learning rate of official step ``step`` (1-based): constant, then with ``decay`` lowered by
        ``lr / (iterations // 2)`` at every step after the half, reaching 0 at the last (never below 0)."""
        half = self.config.iterations // 2
        if not self.config.decay or half == 0 or step <= half:
            return self.config.lr
        return max(0.0, self.config.lr - self.config.lr / half * (step - half))

    # --- one iteration ----------------------------------------------------------------------------------------

    def _to_device(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self.device, non_blocking=True)

    def step(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, float]:
        """One official iteration on batches (N, 3, H, W) in [-1, 1]: discriminator update, generator update,
        rho clipping (then the EMA update). Returns ``d_loss``, ``g_loss``, every loss term and the ``lr``."""
        cfg, nets, run = self.config, self.nets, self._train_nets
        lr = self.lr_at(self.iteration + 1)
        for optim in (self.g_optim, self.d_optim):
            for group in optim.param_groups:
                group["lr"] = lr
        real_a, real_b = self._to_device(real_a), self._to_device(real_b)

        # The generators' first pass, kept for the generator update; the discriminators see detached copies.
        with autocast(self.device, self.autocast_dtype):
            fake_A2B, fake_A2B_cam, _ = run["genA2B"](real_a)
            fake_B2A, fake_B2A_cam, _ = run["genB2A"](real_b)
            fake_A2A, fake_A2A_cam, _ = run["genB2A"](real_a)
            fake_B2B, fake_B2B_cam, _ = run["genA2B"](real_b)

        # Discriminator update
        for name in DISCRIMINATOR_NAMES:
            nets[name].requires_grad_(True)
        self.d_optim.zero_grad(set_to_none=True)
        judged = {"GA": ("disGA", real_a, fake_B2A), "LA": ("disLA", real_a, fake_B2A),
                  "GB": ("disGB", real_b, fake_A2B), "LB": ("disLB", real_b, fake_A2B)}
        with autocast(self.device, self.autocast_dtype):
            real_out = {key: run[net](real)[:2] for key, (net, real, _) in judged.items()}
            fake_out = {key: run[net](fake.detach())[:2] for key, (net, _, fake) in judged.items()}
        d_terms = losses.discriminator_terms(real_out, fake_out)
        d_terms.update(losses.discriminator_loss(d_terms, cfg.adv_weight))
        self.scaler.scale(d_terms["d_loss"]).backward()
        self.scaler.step(self.d_optim)

        # Generator update: the discriminators judge without collecting weight gradients.
        for name in DISCRIMINATOR_NAMES:
            nets[name].requires_grad_(False)
        self.g_optim.zero_grad(set_to_none=True)
        with autocast(self.device, self.autocast_dtype):
            fake_A2B2A = run["genB2A"](fake_A2B)[0]
            fake_B2A2B = run["genA2B"](fake_B2A)[0]
            fake_out = {key: self._judges[net](fake)[:2] for key, (net, _, fake) in judged.items()}
        images = {"fake_A2B2A": fake_A2B2A, "fake_B2A2B": fake_B2A2B, "fake_A2A": fake_A2A, "fake_B2B": fake_B2B}
        cam_logits = {"fake_A2B": fake_A2B_cam, "fake_B2A": fake_B2A_cam, "fake_A2A": fake_A2A_cam,
                      "fake_B2B": fake_B2B_cam}
        g_terms = losses.generator_terms(fake_out, real_a, real_b, images, cam_logits)
        g_terms.update(losses.generator_loss(g_terms, cfg.adv_weight, cfg.cycle_weight, cfg.identity_weight,
                                             cfg.cam_weight))
        self.scaler.scale(g_terms["g_loss"]).backward()
        self.scaler.step(self.g_optim)
        self.scaler.update()
        for name in DISCRIMINATOR_NAMES:
            nets[name].requires_grad_(True)

        for name in GENERATOR_NAMES:
            clip_rho_(nets[name])
        self._update_ema()
        self.iteration += 1

        terms = {"d_loss": d_terms.pop("d_loss"), "g_loss": g_terms.pop("g_loss"), **d_terms, **g_terms}
        values = torch.stack([t.detach().double() for t in terms.values()]).tolist()  # one device sync
        return {**dict(zip(terms, values, strict=True)), "lr": lr}

    def _update_ema(self) -> None:
        """ema <- decay * ema + (1 - decay) * live, for every generator parameter (buffers are copied)."""
        if self.ema is not None:
            update_ema(self.ema, self.nets, self.config.ema)

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        """The family interface's step: ``batch`` is the loader's ``(real_A, real_B)``."""
        return self.step(*batch)

    # --- what the run needs around the steps ------------------------------------------------------------------

    def generators(self) -> dict[str, nn.Module]:
        """The generators to sample and export: the EMA ones when kept, else the trained ones."""
        return self.ema if self.ema is not None else {name: self.nets[name] for name in GENERATOR_NAMES}

    @torch.no_grad()
    def sample(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """Everything the official sample grid shows (see ``SAMPLE_ROWS``), float32 on the CPU: translations,
        identity mappings, cycles, and the generators' raw attention maps (N, 1, H/4, W/4)."""
        gens = self.generators()
        real_a, real_b = self._to_device(real_a), self._to_device(real_b)
        out = {"real_A": real_a, "real_B": real_b}
        for src, dst, real in (("A", "B", real_a), ("B", "A", real_b)):
            forward, backward = gens[f"gen{src}2{dst}"], gens[f"gen{dst}2{src}"]
            out[f"fake_{src}2{dst}"], _, out[f"fake_{src}2{dst}_heatmap"] = forward(real)
            out[f"fake_{src}2{dst}2{src}"], _, out[f"fake_{src}2{dst}2{src}_heatmap"] = backward(
                out[f"fake_{src}2{dst}"])
            out[f"fake_{src}2{src}"], _, out[f"fake_{src}2{src}_heatmap"] = backward(real)
        return {key: value.float().cpu().contiguous() for key, value in out.items()}

    def sample_grids(self, batch: Mapping[str, torch.Tensor]) -> dict[str, "Image.Image"]:
        """The official sample grids (``A2B``, ``B2A``) of the fixed images ``batch`` (``{"A": .., "B": ..}``,
        from ``Family.sample_batch``); a domain without images has no grid."""
        from .samples import GRID_NAMES, sample_grid

        outputs = self.sample(batch["A"], batch["B"])
        return {GRID_NAMES[domain]: sample_grid(outputs, rows) for domain, rows in SAMPLE_ROWS.items()
                if outputs[rows[0]].shape[0]}

    def load_official(self, path) -> None:
        """Start from an official ``*_params_*.pt`` checkpoint: all six networks (the EMA restarts from the
        loaded generators; the iteration and the optimiser states are left as they are)."""
        states = read_official_checkpoint(path)
        missing = [name for name in NETWORK_NAMES if name not in states]
        if missing:
            raise UserError(f"{path}: the checkpoint lacks {', '.join(missing)}; training needs all six networks")
        for name in NETWORK_NAMES:
            self._load_net(name, states[name], str(path))
        if self.ema is not None:
            self.ema = {name: ema_copy(self.nets[name]) for name in GENERATOR_NAMES}

    def _load_net(self, name: str, state: Mapping[str, torch.Tensor], source: str) -> None:
        cfg = self.config
        load_strict(self.nets[name], state, source, name, verb="does not fit",
                    hint=f"the training settings (size {cfg.size}, ch {cfg.ch}, n_res {cfg.n_res}, light {cfg.light})")

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs except the RNG: weights, EMA weights, both Adam states, the
        GradScaler state and the iteration (the learning rate follows from it). Tensors and plain containers."""
        return training_state(self.iteration, self.nets, self.ema, g_optim=self.g_optim, d_optim=self.d_optim,
                              scaler=self.scaler)

    def load_state_dict(self, state: dict[str, Any], source: str = "checkpoint") -> None:
        """Restore what ``state_dict`` returned; ``source`` names it in errors."""
        for name in NETWORK_NAMES:
            self._load_net(name, state["nets"][name], source)
        load_ema_state(self.ema, state, source, "EMA generators")
        self.g_optim.load_state_dict(state["g_optim"])
        self.d_optim.load_state_dict(state["d_optim"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
