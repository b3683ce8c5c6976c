"""One TUNIT training iteration, as the official ``train/train_unsupervised.py`` runs it.

Per iteration, on a batch ``x_org`` (plain view) and ``x_tf`` (its IIC augmentation), references being
``x_org`` shuffled by a random permutation:

1. Guiding network C: ``moco = contrastive(C.style(x_org), C_EMA.style(x_tf), queue)``,
   ``iic = IIC(softmax C.logits(x_org), softmax C.logits(x_tf))`` (cross-entropy of both views against the
   labels instead when the batch is labelled, semi-supervised mode); ``c_loss = moco + 5 * iic``,
   times 0.1 in the GAN phase; Adam step.
2. GAN phase only (after the warm-up):
   - domains ``y_org = argmax C.logits(x_org)``, ``y_ref = y_org[perm]``; a translation made without
     gradients; D step on hinge(real ``x_ref``, fake) + 10 * R1(``x_ref``) (RMSprop);
   - G step: ``s_src = C.style(x_org)``, ``s_ref = C.style(x_ref)``, translation ``G(x_org, s_ref)`` and
     reconstruction ``G(x_org, s_src)``; ``g_loss = adv(translation, y_ref) + adv(reconstruction, y_org) +
     0.1 * L1(reconstruction, x_org) + 0.01 * contrastive(C.style(translation), C_EMA.style(x_ref), queue)``;
     its gradients update G (RMSprop) **and C** (a second Adam step).
3. The queue takes the keys of step 1 (the newest 1024 are kept); C_EMA <- EMA(C) every iteration and
   G_EMA <- EMA(G) from ``ema_start`` (when G_EMA is first reset to G). Only parameters are averaged; at
   the end of every ``epoch_iterations`` the EMA nets take the buffers (batch-norm statistics) of C and G.

Networks stay in training mode, so every guiding-network call uses batch statistics and updates the
running statistics in the official order of calls.

Several processes (``distributed=True``, under torchrun), as the official code runs them (``main.py``
``build_model``/``get_loader``, ``train/train_unsupervised.py``, ``tools/ops.py``): each rank trains on its own
shard with its own batch; batch norm keeps per-process batch statistics (no SyncBatchNorm); each rank keeps
its own queue, filled with its own keys (nothing gathered into it); IIC and the contrastive losses are computed
on the rank's batch; the gradients of C, D and G are averaged over the ranks before every optimiser step, so
the weights (and the EMA copies, updated from them) stay identical. Here the gradient averaging is DDP's, on
one forward pattern per backward (see :class:`TunitTrainer`); beyond the official code the ranks' running
batch-norm statistics are averaged after each iteration (they only matter in eval mode: samples, style codes,
exported models) and every rank holds every rank's queue, so that a checkpoint resumes each rank exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .config import TunitHyperParams
from .losses import (
    contrastive_loss,
    d_hinge_fake,
    d_hinge_real,
    enqueue,
    g_adversarial,
    iic_loss,
    r1_penalty,
    reconstruction_loss,
)
from .networks import build


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, beta: float) -> None:
    """``target = beta * target + (1 - beta) * source`` for every parameter (buffers untouched)."""
    src = dict(source.named_parameters())
    for name, p in target.named_parameters():
        p.lerp_(src[name].detach(), 1.0 - beta)


@torch.no_grad()
def copy_buffers(target: nn.Module, source: nn.Module) -> None:
    """Copy every buffer (batch-norm running statistics) of ``source`` into ``target``."""
    src = dict(source.named_buffers())
    for name, b in target.named_buffers():
        b.copy_(src[name])


class _GuidingLosses(nn.Module):
    """What the guiding step asks of C, as one forward: ``(C.style(x_org), C.logits(x_org), C.logits(x_tf))``
    in the official order of calls (every parameter of C is used)."""

    def __init__(self, guiding: nn.Module):
        super().__init__()
        self.net = guiding

    def forward(self, x_org: torch.Tensor, x_tf: torch.Tensor):
        return self.net.style(x_org), self.net.logits(x_org), self.net.logits(x_tf)


class _StyleCodes(nn.Module):
    """``C.style(x)`` with only the parameters it uses registered (features and the ``cont`` head), so that a
    DDP wrapper of it does not wait for gradients of the ``disc`` head, which the generator step never reaches."""

    def __init__(self, guiding: nn.Module):
        super().__init__()
        self.features, self.cont = guiding.features, guiding.cont
        object.__setattr__(self, "_guiding", guiding)  # not a submodule: its disc head stays out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._guiding.style(x)


class _Translations(nn.Module):
    """The generator step's use of G as one forward: ``(G.decode(c, s_ref), G.decode(c, s_src))`` with
    ``c = G.cnt_encoder(x)``."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.net = generator

    def forward(self, x: torch.Tensor, s_ref: torch.Tensor, s_src: torch.Tensor):
        content = self.net.cnt_encoder(x)
        return self.net.decode(content, s_ref), self.net.decode(content, s_src)


class TunitTrainer:
    """The five official networks (``G``, ``D``, ``C``, ``G_EMA``, ``C_EMA`` in :attr:`nets`), their
    optimisers, the contrastive queue and :meth:`step`.

    Seed torch's global generator before constructing (initial weights); the reference permutation of each
    step comes from the trainer's own generator (seeded with ``hyper.seed``, the same on every rank, kept in
    :meth:`state_dict`).

    ``distributed=True`` (under torchrun; the process group must be initialised): what each backward reaches
    runs in DistributedDataParallel, which averages its gradients over the ranks. A DDP wrapper must see a
    gradient for each of its parameters in every backward that follows one of its forwards, so each wrapper
    covers exactly what one loss uses: the guiding loss (all of C), the style codes of the generator loss (C's
    features and ``cont`` head; its ``disc`` head gets no gradient there), the generator (cnt_encoder, decoder
    and MLP, one forward) and D (real and fake, the R1 term's second-order graph included; R1's first gradient
    is taken with respect to the images only, so it does not trigger DDP's reduction). D in the generator loss,
    the no-grad translations and the EMA nets run unwrapped. No ``find_unused_parameters``: every wrapped
    parameter gets a gradient, and G and D are not called at all during the warm-up, so no rank waits for them.
    The wrappers are built at the first step (so after any loading: DDP copies rank 0's weights when built).
    """

    def __init__(self, hyper: TunitHyperParams, device: str | torch.device = "cpu", distributed: bool = False):
        self.hyper = hyper
        self.config = hyper.model_config()
        self.device = torch.device(device)
        self.nets: dict[str, nn.Module] = {}
        for name in ("C", "C_EMA", "D", "G", "G_EMA"):
            self.nets[name] = build(self.config, name).to(self.device).train()
        # official build_model: C_EMA starts as a copy of C (G_EMA is reset to G at ema_start)
        self.nets["C_EMA"].load_state_dict(self.nets["C"].state_dict())
        for name in ("C_EMA", "G_EMA"):
            self.nets[name].requires_grad_(False)
        self.opt_c = torch.optim.Adam(self.nets["C"].parameters(), hyper.lr_c, weight_decay=hyper.weight_decay_c)
        self.opt_d = torch.optim.RMSprop(self.nets["D"].parameters(), hyper.lr_d, weight_decay=hyper.weight_decay)
        self.opt_g = torch.optim.RMSprop(self.nets["G"].parameters(), hyper.lr_g, weight_decay=hyper.weight_decay)
        self.distributed = distributed
        if distributed and not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("distributed training needs torch.distributed.init_process_group() first")
        self.rank = dist.get_rank() if distributed else 0
        self.world_size = dist.get_world_size() if distributed else 1
        #: every rank's queue (each rank's losses use its own, ``queues[rank]``)
        self.queues = [torch.zeros(0, self.config.sty_dim, device=self.device) for _ in range(self.world_size)]
        self._run: dict[str, nn.Module] = {}
        self.iteration = 0
        self.rng = torch.Generator().manual_seed(hyper.seed)
        self.cluster_counts = torch.zeros(self.config.k, dtype=torch.long)

    # -- phases --

    @property
    def gan_phase(self) -> bool:
        return self.iteration >= self.hyper.warmup

    def phase(self) -> str:
        return "gan" if self.gan_phase else "warmup"

    @property
    def queue(self) -> torch.Tensor:
        """This rank's queue of negative keys (N x sty_dim, newest last)."""
        return self.queues[self.rank]

    @queue.setter
    def queue(self, value: torch.Tensor) -> None:
        self.queues[self.rank] = value

    @torch.no_grad()
    def init_queue(self, x_tf: torch.Tensor) -> None:
        """Fill the queue with C_EMA's style codes of a batch of augmented images (official
        ``initialize_queue``: one batch, C_EMA in training mode; each rank its own batch)."""
        self._enqueue(self.nets["C_EMA"](x_tf.to(self.device))["cont"])

    def _enqueue(self, keys: torch.Tensor) -> None:
        """Every rank's queue takes that rank's ``keys`` (all ranks' keys are gathered: same-shaped batches)."""
        keys = keys.detach()
        every = [keys]
        if self.distributed:
            every = [torch.empty_like(keys) for _ in range(self.world_size)]
            dist.all_gather(every, keys.contiguous())
        self.queues = [enqueue(q, k, self.hyper.queue_size) for q, k in zip(self.queues, every, strict=True)]

    def _runners(self) -> dict[str, nn.Module]:
        """What :meth:`step` calls for the losses that train (in DDP when distributed); built once."""
        if not self._run:
            from ...core.nets import wrap_for_training

            views = {"guide": _GuidingLosses(self.nets["C"]), "style": _StyleCodes(self.nets["C"]),
                     "translate": _Translations(self.nets["G"]), "D": self.nets["D"]}
            self._run = {name: wrap_for_training(view, self.device, distributed=self.distributed, compile=False,
                                                 sync_buffers=False) for name, view in views.items()}
        return self._run

    @torch.no_grad()
    def _sync_ranks(self, counts: torch.Tensor) -> torch.Tensor:
        """Distributed: the ranks' running batch-norm statistics (of C and C_EMA) averaged, ``counts`` summed
        over the ranks (returned)."""
        if not self.distributed:
            return counts
        buffers = [b for n in ("C", "C_EMA") for b in self.nets[n].buffers() if b.is_floating_point()]
        flat = torch.cat([b.flatten() for b in buffers])
        dist.all_reduce(flat)
        flat /= self.world_size
        for b, v in zip(buffers, flat.split([b.numel() for b in buffers]), strict=True):
            b.copy_(v.view_as(b))
        dist.all_reduce(counts)
        return counts

    # -- one iteration --

    def step(self, x_org: torch.Tensor, x_tf: torch.Tensor, y: torch.Tensor | None = None,
             ref_idx: torch.Tensor | None = None) -> dict[str, float]:
        """One iteration on ``x_org``/``x_tf`` (B x 3 x size x size in [-1, 1]); ``y`` (B labels) makes it a
        labelled (semi-supervised) batch; ``ref_idx`` (a permutation of B) fixes the references.

        Returns the loss terms as floats (official names in comments): ``c_loss`` (C/LOSS), ``moco``
        (C/MOCO), ``iic`` (C/IID) or ``ce``; in the GAN phase also ``d_loss`` (D/LOSS), ``d_adv``, ``d_gp``,
        ``g_loss`` (G/LOSS), ``g_adv``, ``g_imgrec``, ``g_stycont``.
        """
        h = self.hyper
        G, D, C, G_EMA, C_EMA = (self.nets[n] for n in ("G", "D", "C", "G_EMA", "C_EMA"))
        run = self._runners()
        x_org = x_org.to(self.device)
        x_tf = x_tf.to(self.device)
        batch = x_org.shape[0]
        if ref_idx is None:
            ref_idx = torch.randperm(batch, generator=self.rng)
        ref_idx = ref_idx.to(self.device)
        if self.queue.shape[0] == 0:
            self.init_queue(x_tf)
        gan = self.gan_phase
        if gan and self.iteration == h.ema_from:
            G_EMA.load_state_dict(G.state_dict())
        x_ref = x_org[ref_idx]
        out: dict[str, float] = {}

        # 1. guiding network
        q_cont, q_logit, k_logit = run["guide"](x_org, x_tf)
        k_cont = C_EMA.style(x_tf).detach()
        moco = contrastive_loss(q_cont, k_cont, self.queue, h.temperature)
        if y is not None:
            y = y.to(self.device)
            cls = F.cross_entropy(q_logit, y) + F.cross_entropy(k_logit, y)
            out["ce"] = cls.item()
        else:
            cls = iic_loss(F.softmax(q_logit, 1), F.softmax(k_logit, 1))
            out["iic"] = cls.item()
        c_loss = moco + h.w_iic * cls
        if gan:
            c_loss = h.w_guide_gan * c_loss
        self.opt_c.zero_grad(set_to_none=True)
        c_loss.backward()
        self.opt_c.step()
        out["c_loss"] = c_loss.item()
        out["moco"] = moco.item()
        counts = torch.bincount(q_logit.detach().argmax(1), minlength=self.config.k)

        # 2. GAN phase
        if gan:
            with torch.no_grad():
                y_org = y if y is not None else C.logits(x_org).argmax(1)
                y_ref = y_org[ref_idx]
                s_ref = C.style(x_ref)
                x_fake = G.decode(G.cnt_encoder(x_org), s_ref)
            x_ref = x_ref.detach().requires_grad_()
            d_real = run["D"](x_ref, y_ref)
            d_fake = run["D"](x_fake, y_ref)
            d_adv = d_hinge_real(d_real) + d_hinge_fake(d_fake)
            d_gp = h.w_gp * r1_penalty(d_real, x_ref)
            d_loss = d_adv + d_gp
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()

            s_src = run["style"](x_org)
            s_ref = run["style"](x_ref)
            x_fake, x_rec = run["translate"](x_org, s_ref, s_src)
            D.requires_grad_(False)  # D's gradients from g_loss are never used (the official code discards them)
            try:
                g_adv = g_adversarial(D(x_fake, y_ref)) + g_adversarial(D(x_rec, y_org))
            finally:
                D.requires_grad_(True)
            g_imgrec = reconstruction_loss(x_rec, x_org)
            s_fake = run["style"](x_fake)
            s_ref_ema = C_EMA.style(x_ref)
            g_sty = contrastive_loss(s_fake, s_ref_ema, self.queue, h.temperature)
            g_loss = h.w_adv * g_adv + h.w_rec * g_imgrec + h.w_vec * g_sty
            self.opt_g.zero_grad(set_to_none=True)
            self.opt_c.zero_grad(set_to_none=True)
            g_loss.backward()
            self.opt_c.step()
            self.opt_g.step()
            out.update(d_loss=d_loss.item(), d_adv=d_adv.item(), d_gp=d_gp.item(), g_loss=g_loss.item(),
                       g_adv=g_adv.item(), g_imgrec=g_imgrec.item(), g_stycont=g_sty.item())

        # 3. queue and moving averages
        self._enqueue(k_cont)
        self.cluster_counts += self._sync_ranks(counts).cpu()
        if gan and self.iteration >= h.ema_from:
            ema_update(G_EMA, G, h.ema_beta)
        ema_update(C_EMA, C, h.ema_beta)
        self.iteration += 1
        if self.iteration % h.epoch_iterations == 0:
            copy_buffers(G_EMA, G)
            copy_buffers(C_EMA, C)
        return out

    def pop_cluster_sizes(self) -> list[int]:
        """How many training images C assigned to each pseudo-domain since the last call (all ranks')."""
        sizes = self.cluster_counts.tolist()
        self.cluster_counts.zero_()
        return sizes

    # -- state --

    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`load_state_dict` needs for an exact resume (tensors and plain containers)."""
        return {
            "iteration": self.iteration,
            "nets": {n: m.state_dict() for n, m in self.nets.items() if n not in ("G_EMA", "C_EMA")},
            "ema": {n: self.nets[n].state_dict() for n in ("G_EMA", "C_EMA")},
            "opt": {"C": self.opt_c.state_dict(), "D": self.opt_d.state_dict(), "G": self.opt_g.state_dict()},
            # this rank's queue (N x sty_dim); distributed: every rank's (world_size x N x sty_dim)
            "queue": torch.stack(self.queues).cpu() if self.distributed else self.queue.detach().cpu(),
            "rng": self.rng.get_state(),
            "cluster_counts": self.cluster_counts.clone(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.iteration = int(state["iteration"])
        for n, s in {**state["nets"], **state["ema"]}.items():
            self.nets[n].load_state_dict(s)
        self.opt_c.load_state_dict(state["opt"]["C"])
        self.opt_d.load_state_dict(state["opt"]["D"])
        self.opt_g.load_state_dict(state["opt"]["G"])
        queue = state["queue"].to(self.device)
        # a run resumed on another number of processes: rank r takes the saved queue r (modulo their number)
        saved = list(queue) if queue.dim() == 3 else [queue]
        self.queues = [saved[r % len(saved)] for r in range(self.world_size)]
        self.rng.set_state(state["rng"])
        self.cluster_counts = state["cluster_counts"].clone()


@torch.no_grad()
def domain_styles(guiding: nn.Module, images, k: int, batch_size: int = 64,
                  assign_with: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-domain mean style codes (for ``translate --domain k``): assign each image of ``images`` (an
    iterable of B x 3 x H x W batches in [-1, 1], or one tensor) to ``argmax`` of the guiding network's
    logits and average its style codes per domain (official ``validateUN`` "AVG", which assigns with C and
    takes the codes from C_EMA: pass C as ``assign_with``). The networks should be in eval mode.
    Returns ``(styles K x sty_dim, counts K)``; a domain no image fell into has a zero code and count 0.
    """
    if isinstance(images, torch.Tensor):
        images = images.split(batch_size)
    device = next(guiding.parameters()).device
    total = None
    counts = torch.zeros(k, dtype=torch.long)
    for x in images:
        x = x.to(device)
        out = guiding(x)
        logits = out["disc"] if assign_with is None else assign_with(x)["disc"]
        s, d = out["cont"].float().cpu(), logits.argmax(1).cpu()
        if total is None:
            total = torch.zeros(k, s.shape[1])
        total.index_add_(0, d, s)
        counts += torch.bincount(d, minlength=k)
    if total is None:
        raise ValueError("no images to compute domain styles from")
    return total / counts.clamp_min(1).unsqueeze(1).float(), counts
