"""One pix2pixHD training iteration, numerically the official one, with less work.

Official iteration (NVIDIA/pix2pixHD ``train.py`` + ``Pix2PixHDModel.forward``): G makes the fake; D judges the
detached fake (``D_fake``) and the real (``D_real``); D judges the fake again with the graph kept (``G_GAN``,
and feature matching against the detached real features); VGG compares fake and real (``G_VGG``). Then
``loss_G = G_GAN + G_GAN_Feat + G_VGG`` is back-propagated and G's Adam steps, then
``loss_D = 0.5 * (D_fake + D_real)`` is back-propagated and D's Adam steps. Both losses come from the same
forward pass (D's weights are those before its step).

What this step does differently, with the same values (float rounding aside):

- D runs twice per iteration instead of three times: its one pass over the fake keeps the graph to G; the
  generator loss is back-propagated only into G's parameters (``inputs=``), so D's weight gradients, which the
  official code computes there and throws away, are never computed; the discriminator loss is back-propagated
  only into D's parameters, which does not reach G (as the official ``detach`` does);
- the real image's VGG features are computed without a graph (the official code builds none either: VGG's
  weights are frozen and the real image needs no gradient) and instance norm runs as ``group_norm``;
- Adam runs as PyTorch's fused kernel (same formula, one pass over memory; see ``_adam``): with the
  official 182M-parameter generator at small sizes, the optimiser is most of an iteration;
- with ``niter_fix_global`` the global generator does not require gradients while only the local enhancer
  trains (the official code computes its gradients and leaves them out of the optimiser).

Schedule: Adam (lr 2e-4, betas (beta1 0.5, 0.999)) for G (+E) and D; ``lr`` constant, then a linear decay
(:meth:`Pix2PixHDTrainConfig.lr_at`); after ``niter_fix_global`` iterations G's optimiser is rebuilt over all of
G's parameters (fresh Adam state, as official ``update_fixed_params``).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ...core.devices import autocast, check_precision
from ...core.nets import load_ema_state, training_state, wrap_for_training
from ...errors import UserError
from .config import Pix2PixHDTrainConfig
from .data import encode_input
from .features import FeatureClusters
from .losses import VGG19Features, feature_matching_loss, gan_loss, vgg_loss
from .networks import build_discriminator, build_encoder, build_generator

LOSS_NAMES = ("G_GAN", "G_GAN_Feat", "G_VGG", "D_real", "D_fake")  # the official loss_names order


class Pix2PixHDTrainer:
    """netG, netD (and netE with features), their Adam optimisers, one iteration at a time.

    Seed the global torch RNG before constructing: the networks are initialised from it. ``vgg``: a
    :class:`VGG19Features` to use for the VGG loss; by default it is loaded from ``config.vgg_weights`` or
    torchvision's download (raises :class:`UserError` when neither works) unless ``no_vgg_loss``.

    With ``distributed=True`` (under torchrun; the process group must be initialised) the networks a step
    updates run in DistributedDataParallel: gradients are averaged across ranks, so every rank keeps the same
    weights. netG's wrapper is rebuilt when ``niter_fix_global`` ends (DDP fixes the parameters it syncs when
    it is built). With instance features ``nets["clusters"]`` holds the per-class centres, filled after the last
    iteration (:meth:`Pix2PixHDFamily.finish_training`); no step changes it.
    """

    def __init__(self, config: Pix2PixHDTrainConfig, device: str | torch.device = "cpu", *,
                 vgg: VGG19Features | None = None, precision: str = "fp32", ema: float | None = None,
                 distributed: bool = False):
        self.config = config
        self.model_config = config.model
        self.device = torch.device(device)
        self.autocast_dtype = check_precision(precision, self.device)
        self.iteration = 0
        mc = config.model
        nets: dict[str, nn.Module] = {
            "netG": build_generator(mc),
            "netD": build_discriminator(mc, config.ndf, config.n_layers_D, config.num_D,
                                        get_interm_feat=not config.no_ganFeat_loss),
        }
        if mc.use_features:
            nets["netE"] = build_encoder(mc)
            nets["clusters"] = FeatureClusters(mc.label_nc, mc.n_clusters, mc.feat_num)
        self.nets = {name: net.to(self.device).train() for name, net in nets.items()}
        self.distributed = distributed
        self._run: dict[str, nn.Module] = {}  # what a step calls: the nets, in DDP when distributed
        self._run_phase: bool | None = None  # global_fixed() of the netG wrapper in _run
        self.vgg: VGG19Features | None = None
        if not config.no_vgg_loss:
            self.vgg = (vgg or VGG19Features.pretrained(config.vgg_weights)).to(self.device).eval()
        if ema is not None and not 0.0 <= ema < 1.0:
            raise UserError(f"--ema must be in [0, 1), got {ema}")
        self.ema_decay = ema
        #: EMA copies by net name (the generator only), or None
        self.ema: dict[str, nn.Module] | None = None if ema is None else {"netG": self._ema_copy(self.nets["netG"])}
        self.g_optim = self._adam(self._g_parameters())
        self.d_optim = self._adam(self.nets["netD"].parameters())
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "fp16")

    def _adam(self, params) -> torch.optim.Adam:
        """Official Adam settings; the fused kernel where PyTorch has one (one pass over each parameter instead
        of one per arithmetic operation: 3-4x faster on the CPU; the same formula, rounded differently at the
        level of 1e-7 relative)."""
        fused = self.device.type in ("cpu", "cuda")
        return torch.optim.Adam(params, lr=self.config.lr, betas=(self.config.beta1, self.config.beta2),
                                fused=fused or None)

    @staticmethod
    def _ema_copy(net: nn.Module) -> nn.Module:
        ema = copy.deepcopy(net).eval()
        ema.requires_grad_(False)
        return ema

    # --- which parameters train -------------------------------------------------------------------------------

    def global_fixed(self, step: int | None = None) -> bool:
        """Whether iteration ``step`` (1-based; default the next) trains only the outermost local enhancer."""
        step = self.iteration + 1 if step is None else step
        return self.config.niter_fix_global > 0 and step <= self.config.niter_fix_global

    def _g_parameters(self, fixed: bool | None = None) -> list[nn.Parameter]:
        """Official optimizer_G parameters: the enhancer ``model{n_local_enhancers}*`` only while the global
        generator is fixed (``fixed``, default: for the next iteration), else all of G; plus E's."""
        net_g = self.nets["netG"]
        if self.global_fixed() if fixed is None else fixed:
            prefix = f"model{self.model_config.n_local_enhancers}"
            params = [p for name, p in net_g.named_parameters() if name.startswith(prefix)]
        else:
            params = list(net_g.parameters())
        if "netE" in self.nets:
            params += list(self.nets["netE"].parameters())
        return params

    def _set_trainable(self) -> list[nn.Parameter]:
        params = self._g_parameters()
        trainable = {id(p) for p in params}
        for p in self.nets["netG"].parameters():
            p.requires_grad_(id(p) in trainable)
        self._wrap()
        return params

    def _wrap(self) -> None:
        """Fill :attr:`_run` for the coming step: the plain nets, or DDP wrappers built for the parameters that
        train in this phase (netG's again when the phase changed)."""
        phase = self.global_fixed()
        if self._run and self._run_phase == phase:
            return
        names = [n for n in ("netG", "netD", "netE") if n in self.nets]
        rebuild = names if not self._run else ["netG"]
        for name in rebuild:
            self._run[name] = wrap_for_training(self.nets[name], self.device, distributed=self.distributed,
                                                compile=False)
        self._run_phase = phase

    # --- one iteration ----------------------------------------------------------------------------------------

    def generate(self, label: torch.Tensor, inst: torch.Tensor | None, image: torch.Tensor | None,
                 net_g: nn.Module | None = None, net_e: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(conditioning input, fake image) as the official ``forward``/``inference`` build them; the encoder
        reads ``image`` (and the label map instead of instances with ``label_feat``)."""
        mc = self.model_config
        input_label = encode_input(mc, label, inst)
        g_in = input_label
        if mc.use_features:
            if image is None:
                raise ValueError("a model with instance features needs the real image (or sampled features)")
            regions = label if mc.label_feat else inst
            g_in = torch.cat([input_label, (net_e or self.nets["netE"])(image, regions)], dim=1)
        return input_label, (net_g or self.nets["netG"])(g_in)

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One official iteration on ``batch`` (``label``, ``image``, ``inst`` as the data module gives them).

        Returns the official loss terms ``G_GAN G_GAN_Feat G_VGG D_real D_fake`` (0.0 for a disabled term), their
        totals ``g_loss`` and ``d_loss``, and the ``lr`` used.
        """
        cfg, nets = self.config, self.nets
        step = self.iteration + 1
        if self.config.niter_fix_global and step == self.config.niter_fix_global + 1:
            # official update_fixed_params: a fresh Adam over all of G (and E)
            self.g_optim = self._adam(self._g_parameters())
        g_params = self._set_trainable()
        d_params = list(nets["netD"].parameters())
        lr = cfg.lr_at(step)
        for optim in (self.g_optim, self.d_optim):
            for group in optim.param_groups:
                group["lr"] = lr
        label = batch["label"].to(self.device, non_blocking=True)
        real = batch["image"].to(self.device, non_blocking=True)
        inst = batch.get("inst")
        inst = inst.to(self.device, non_blocking=True) if inst is not None else None

        run = self._run
        with autocast(self.device, self.autocast_dtype):
            input_label, fake = self.generate(label, inst, real, run["netG"], run.get("netE"))
            pred_real = run["netD"](torch.cat([input_label, real], dim=1))
            pred_fake = run["netD"](torch.cat([input_label, fake], dim=1))
            terms = {
                "G_GAN": gan_loss(pred_fake, True, not cfg.no_lsgan),
                "D_real": gan_loss(pred_real, True, not cfg.no_lsgan),
                "D_fake": gan_loss(pred_fake, False, not cfg.no_lsgan),
            }
            zero = terms["G_GAN"].new_zeros(())
            terms["G_GAN_Feat"] = zero if cfg.no_ganFeat_loss else feature_matching_loss(
                pred_fake, pred_real, cfg.n_layers_D, cfg.num_D, cfg.lambda_feat)
            terms["G_VGG"] = zero if self.vgg is None else vgg_loss(self.vgg, fake.float(), real, cfg.lambda_feat)
        g_loss = terms["G_GAN"] + terms["G_GAN_Feat"] + terms["G_VGG"]
        d_loss = (terms["D_fake"] + terms["D_real"]) * 0.5

        self.g_optim.zero_grad(set_to_none=True)
        self.d_optim.zero_grad(set_to_none=True)
        self.scaler.scale(g_loss).backward(inputs=g_params, retain_graph=True)
        self.scaler.scale(d_loss).backward(inputs=d_params)
        self.scaler.step(self.g_optim)
        self.scaler.step(self.d_optim)
        self.scaler.update()
        self._update_ema()
        self.iteration = step

        ordered = {"g_loss": g_loss, "d_loss": d_loss, **{name: terms[name] for name in LOSS_NAMES}}
        values = torch.stack([t.detach().double() for t in ordered.values()]).tolist()  # one device sync
        return {**dict(zip(ordered, values, strict=True)), "lr": lr}

    train_step = step  # the name the shared run machinery calls

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema is None:
            return
        for name, average in self.ema.items():
            live = self.nets[name]
            torch._foreach_lerp_(list(average.parameters()), list(live.parameters()), 1.0 - self.ema_decay)
            for ema_buffer, buffer in zip(average.buffers(), live.buffers(), strict=True):
                ema_buffer.copy_(buffer)

    # --- what a run needs around the steps -------------------------------------------------------------------

    def generator(self) -> nn.Module:
        """The generator to sample and export: the EMA one when kept."""
        return self.ema["netG"] if self.ema is not None else self.nets["netG"]

    @torch.no_grad()
    def sample(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``generated`` for a batch (float32, CPU), with the generator in eval mode for the call."""
        net_g = self.generator()
        was_training = net_g.training
        net_g.eval()
        try:
            label = batch["label"].to(self.device)
            inst = batch.get("inst")
            inst = inst.to(self.device) if inst is not None else None
            image = batch.get("image")
            image = image.to(self.device) if image is not None else None
            _, fake = self.generate(label, inst, image, net_g)
        finally:
            net_g.train(was_training)
        return {"generated": fake.float().cpu()}

    def load_nets(self, states: dict[str, dict[str, torch.Tensor]], source: str) -> None:
        """Load ``netG``/``netD``/``netE`` state dicts (official key names) that are given; errors name
        ``source``. The EMA generator restarts from the loaded one."""
        for name, state in states.items():
            if name not in self.nets:
                raise UserError(f"{source}: has {name} but these training settings build no {name}")
            try:
                self.nets[name].load_state_dict(state)
            except RuntimeError as exc:
                lines = str(exc).strip().splitlines()
                reason = lines[1].strip() if len(lines) > 1 else (lines[0] if lines else "mismatch")
                raise UserError(f"{source}: {name} does not fit the training settings: {reason}") from None
        if self.ema is not None and "netG" in states:
            self.ema = {"netG": self._ema_copy(self.nets["netG"])}

    def load_official(self, path) -> None:
        """Start from official checkpoints (``--load_pretrain``): ``{epoch}_net_G.pth`` (a file or the
        ``latest``/highest one of a folder) and, beside it, ``{epoch}_net_D.pth`` and ``{epoch}_net_E.pth`` when
        they exist; each read with ``torch.load(weights_only=True)``. The optimisers are left as they are."""
        from .losses import load_weights_file
        from .official import find_generator_file, strip_module

        g_path = find_generator_file(path)
        states = {"netG": strip_module(load_weights_file(g_path, "pix2pixHD generator"))}
        for name, letter in (("netD", "D"), ("netE", "E")):
            other = g_path.with_name(g_path.name.replace("_net_G.pth", f"_net_{letter}.pth"))
            if name in self.nets and other.is_file():
                states[name] = strip_module(load_weights_file(other, f"pix2pixHD {name}"))
        self.load_nets(states, str(g_path))

    def sample_grids(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The sample grid of ``batch``: one row per image, label | generated | real (PIL image)."""
        from .visuals import sample_grid

        fake = self.sample(batch)["generated"]
        return {"samples": sample_grid(batch["label"], fake, batch.get("image"), self.model_config.label_nc)}

    def state_dict(self) -> dict[str, Any]:
        """Weights, EMA weights, both Adam states, the GradScaler and the iteration."""
        return training_state(self.iteration, self.nets, self.ema, g_optim=self.g_optim, d_optim=self.d_optim,
                              scaler=self.scaler)

    def load_state_dict(self, state: dict[str, Any], source: str = "checkpoint") -> None:
        self.load_nets(state["nets"], source)
        load_ema_state(self.ema, state, source, "an EMA generator")  # after load_nets, which refreshes the EMA copy
        self.iteration = int(state["iteration"])
        # G's optimiser holds the parameters of the phase the saved iteration ran in (niter_fix_global); step()
        # rebuilds it when the next iteration starts the other phase
        self.g_optim = self._adam(self._g_parameters(fixed=self.global_fixed(max(1, self.iteration))))
        self._run, self._run_phase = {}, None  # DDP wrappers are rebuilt (from these weights) at the next step
        self.g_optim.load_state_dict(state["g_optim"])
        self.d_optim.load_state_dict(state["d_optim"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
