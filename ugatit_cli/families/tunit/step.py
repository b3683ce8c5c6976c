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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
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


class TunitTrainer:
    """The five official networks (``G``, ``D``, ``C``, ``G_EMA``, ``C_EMA`` in :attr:`nets`), their
    optimisers, the contrastive queue and :meth:`step`.

    Seed torch's global generator before constructing (initial weights); the reference permutation of each
    step comes from the trainer's own generator (seeded with ``hyper.seed``, kept in :meth:`state_dict`).
    """

    def __init__(self, hyper: TunitHyperParams, device: str | torch.device = "cpu"):
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
        self.queue = torch.zeros(0, self.config.sty_dim, device=self.device)
        self.iteration = 0
        self.rng = torch.Generator().manual_seed(hyper.seed)
        self.cluster_counts = torch.zeros(self.config.k, dtype=torch.long)

    # -- phases --

    @property
    def gan_phase(self) -> bool:
        return self.iteration >= self.hyper.warmup

    def phase(self) -> str:
        return "gan" if self.gan_phase else "warmup"

    @torch.no_grad()
    def init_queue(self, x_tf: torch.Tensor) -> None:
        """Fill the queue with C_EMA's style codes of a batch of augmented images (official
        ``initialize_queue``: one batch, C_EMA in training mode)."""
        self.queue = enqueue(self.queue, self.nets["C_EMA"](x_tf.to(self.device))["cont"], self.hyper.queue_size)

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
        q_cont = C.style(x_org)
        k_cont = C_EMA.style(x_tf).detach()
        q_logit = C.logits(x_org)
        k_logit = C.logits(x_tf)
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
        self.cluster_counts += torch.bincount(q_logit.detach().argmax(1).cpu(), minlength=self.config.k)

        # 2. GAN phase
        if gan:
            with torch.no_grad():
                y_org = y if y is not None else C.logits(x_org).argmax(1)
                y_ref = y_org[ref_idx]
                s_ref = C.style(x_ref)
                x_fake = G.decode(G.cnt_encoder(x_org), s_ref)
            x_ref = x_ref.detach().requires_grad_()
            d_real = D(x_ref, y_ref)
            d_fake = D(x_fake, y_ref)
            d_adv = d_hinge_real(d_real) + d_hinge_fake(d_fake)
            d_gp = h.w_gp * r1_penalty(d_real, x_ref)
            d_loss = d_adv + d_gp
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()

            s_src = C.style(x_org)
            s_ref = C.style(x_ref)
            content = G.cnt_encoder(x_org)
            x_fake = G.decode(content, s_ref)
            x_rec = G.decode(content, s_src)
            D.requires_grad_(False)  # D's gradients from g_loss are never used (the official code discards them)
            try:
                g_adv = g_adversarial(D(x_fake, y_ref)) + g_adversarial(D(x_rec, y_org))
            finally:
                D.requires_grad_(True)
            g_imgrec = reconstruction_loss(x_rec, x_org)
            s_fake = C.style(x_fake)
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
        self.queue = enqueue(self.queue, k_cont, h.queue_size)
        if gan and self.iteration >= h.ema_from:
            ema_update(G_EMA, G, h.ema_beta)
        ema_update(C_EMA, C, h.ema_beta)
        self.iteration += 1
        if self.iteration % h.epoch_iterations == 0:
            copy_buffers(G_EMA, G)
            copy_buffers(C_EMA, C)
        return out

    def pop_cluster_sizes(self) -> list[int]:
        """How many training images C assigned to each pseudo-domain since the last call."""
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
            "queue": self.queue.detach().cpu(),
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
        self.queue = state["queue"].to(self.device)
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
