"""TUNIT in the shared run (``ugatit train --arch tunit``): the seeded batches of each iteration, and the trainer
the run drives (:class:`~ugatit_cli.families.tunit.step.TunitTrainer` plus what a run folder needs: checkpoint
layout, sample grids, cluster sizes in the log, per-domain style codes).

Checkpoint layout (``checkpoints/step_N/``): ``C``, ``D``, ``G`` (the trained networks), ``ema_C``, ``ema_G``
(C_EMA, G_EMA) and ``ema_styles`` (the per-domain mean style codes of C_EMA over the training images, computed
when the checkpoint is written); ``state.pt`` holds the optimisers, the contrastive queue, the reference
permutation generator and the cluster counts. A model loaded from a run uses G_EMA, C_EMA and those codes.

Style codes: every training image (at most :data:`STYLE_IMAGES`, evenly spaced in name order) through the
official test transform (as ``translate`` reads images: Pillow's bilinear resize), C_EMA in eval mode;
each image goes to ``argmax`` of C_EMA's logits and the codes are averaged per domain. (The official "AVG"
assigns with C; we assign with C_EMA, the network a model folder keeps, so that ``ugatit cluster`` and
``--domain k`` mean the same domain k.)

Semi-supervised (``--p-semi`` p > 0, class subfolders): a seeded share p of the images (at least one per
class) is labelled; iteration k is a labelled batch (cross-entropy instead of IIC) when ``floor((k + 1) p) >
floor(k p)`` (a share p of the iterations), drawn from the labelled images; other iterations are unlabelled
batches from all images. (Our schedule, not the official semi-supervised loader's.)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ...errors import ProcessingError, UserError
from .config import TunitHyperParams
from .data import TunitData, load_rgb, training_pair
from .step import TunitTrainer

#: most training images the style codes of a checkpoint are computed from
STYLE_IMAGES = 5000
STYLE_BATCH = 64
SAMPLE_SOURCES = 4
SAMPLE_REFERENCES = 4


def _rng(*parts: int) -> np.random.Generator:
    return np.random.default_rng([int(p) for p in parts])


class TunitBatches(torch.utils.data.Dataset):
    """Item ``k`` is the batch of iteration ``k`` on this rank: ``{"x_org", "x_tf"}`` (B x 3 x size x size in
    [-1, 1]) and ``"y"`` (B class indices) for a labelled batch.

    Every epoch is a permutation of the images seeded from (seed, epoch); each sample's views come from the seed
    (seed, epoch, position), so a resumed run sees the same batches whatever the number of workers. With
    ``world_size`` ranks rank ``r`` takes positions ``r, r + world_size, ...``. Only full batches are used: the
    official loader keeps the last, smaller batch of an epoch (``main.py`` ``get_loader``: ``drop_last=False``);
    we leave it out so that every iteration's batch statistics, IIC joint and reference shuffle see the same
    batch size (a deviation, not a fact of the official code).
    """

    def __init__(self, data: TunitData, hyper: TunitHyperParams, rank: int = 0, world_size: int = 1):
        self.data, self.hyper = data, hyper
        self.size, self.batch_size, self.seed = hyper.size, hyper.batch_size, hyper.seed
        self.rank, self.world_size = rank, world_size
        n = len(data.files)
        self.per_rank = n // world_size
        self.batches_per_epoch = self.per_rank // self.batch_size
        if self.batches_per_epoch < 1:
            raise UserError(f"{data.root}: {n} images make no full batch of {self.batch_size} per process; lower "
                            f"--batch-size")
        self.labelled = labelled_subset(data, hyper.p_semi, hyper.seed) if hyper.p_semi > 0 else []

    def __len__(self) -> int:  # iterations are unbounded; a sampler picks them
        return 2**62

    def is_labelled(self, iteration: int) -> bool:
        p = self.hyper.p_semi
        return p > 0 and math.floor((iteration + 1) * p) > math.floor(iteration * p)

    def _pair(self, index: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        files = self.data.files
        for offset in range(len(files)):  # a file that went bad during the run: the next one, deterministically
            i = (index + offset) % len(files)
            try:
                return training_pair(load_rgb(self.data.path(i)), self.size, seed)
            except ProcessingError as exc:
                warnings.warn(f"skipping {exc}", stacklevel=2)
        raise UserError(f"{self.data.root}: no training image can be read any more")

    def __getitem__(self, iteration: int) -> dict[str, torch.Tensor]:
        iteration = int(iteration)
        if self.is_labelled(iteration):
            rng = _rng(self.seed, 1, iteration, self.rank)
            picks = rng.choice(self.labelled, self.batch_size, replace=len(self.labelled) < self.batch_size)
            seeds = rng.integers(0, 2**31, self.batch_size)
            pairs = [self._pair(int(i), int(s)) for i, s in zip(picks, seeds, strict=True)]
            y = torch.tensor([self.data.labels[int(i)] for i in picks])
            return {"x_org": torch.stack([a for a, _ in pairs]), "x_tf": torch.stack([b for _, b in pairs]), "y": y}
        epoch, batch = divmod(iteration, self.batches_per_epoch)
        order = _rng(self.seed, 0, epoch).permutation(len(self.data.files))
        mine = range(self.rank, self.per_rank * self.world_size, self.world_size)
        positions = mine[batch * self.batch_size:(batch + 1) * self.batch_size]
        pairs = [self._pair(int(order[p]), int(_rng(self.seed, 0, epoch, p).integers(0, 2**31))) for p in positions]
        return {"x_org": torch.stack([a for a, _ in pairs]), "x_tf": torch.stack([b for _, b in pairs])}


def labelled_subset(data: TunitData, p_semi: float, seed: int) -> list[int]:
    """Indices of the labelled images: a seeded share ``p_semi`` of each class, at least one per class."""
    if data.labels is None:
        raise UserError(f"{data.root}: --p-semi needs the images in class subfolders (two or more)")
    labels = np.asarray(data.labels)
    chosen: list[int] = []
    for c in range(len(data.classes)):
        members = np.flatnonzero(labels == c)
        count = max(1, round(p_semi * len(members)))
        chosen += sorted(_rng(seed, 2, c).permutation(members)[:count].tolist())
    return chosen


@torch.no_grad()
def compute_domain_styles(guiding: torch.nn.Module, data: TunitData, size: int, k: int,
                          limit: int = STYLE_IMAGES) -> tuple[torch.Tensor, torch.Tensor]:
    """``(styles K x sty_dim, counts K)`` of ``guiding`` (put in eval mode for the call) over the training
    images (at most ``limit``, evenly spaced); unreadable images are passed over."""
    from ...core.images import BadImageError, pixels_to_tensor
    from .inference import read_pixels
    from .step import domain_styles

    n = len(data.files)
    indices = range(n) if n <= limit else np.linspace(0, n - 1, limit).round().astype(int).tolist()
    device = next(guiding.parameters()).device

    def batches():
        chunk = []
        for i in indices:
            try:
                chunk.append(read_pixels(data.path(int(i)), size))
            except BadImageError:
                continue
            if len(chunk) == STYLE_BATCH:
                yield pixels_to_tensor(torch.from_numpy(np.stack(chunk))).to(device)
                chunk = []
        if chunk:
            yield pixels_to_tensor(torch.from_numpy(np.stack(chunk))).to(device)

    was_training = guiding.training
    guiding.eval()
    try:
        return domain_styles(guiding, batches(), k)
    finally:
        guiding.train(was_training)


class TunitRunTrainer:
    """The shared run's FamilyTrainer for TUNIT (see the module docstring for the checkpoint layout)."""

    def __init__(self, hyper: TunitHyperParams, device: torch.device, log_every: int = 10,
                 distributed: bool = False):
        self.hyper = hyper
        self.config = hyper.model_config()
        self.core = TunitTrainer(hyper, device, distributed=distributed)
        self.nets = {name: self.core.nets[name] for name in ("C", "D", "G")}
        self.ema = {"C": self.core.nets["C_EMA"], "G": self.core.nets["G_EMA"]}
        self.log_every = log_every
        self.data: TunitData | None = None

    @property
    def iteration(self) -> int:
        return self.core.iteration

    def train_step(self, batch: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        out = self.core.step(batch["x_org"], batch["x_tf"], batch.get("y"))
        first = ("g_loss", "d_loss") if "g_loss" in out else ("c_loss", "moco")
        losses: dict[str, Any] = {key: out[key] for key in first}
        losses.update(out)
        if self.core.iteration % self.log_every == 0:
            losses["cluster_sizes"] = self.core.pop_cluster_sizes()  # C's argmax since the last log line
        return losses

    # -- samples and style codes --

    def domain_styles(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.data is None:  # no data attached (a Python caller driving the trainer itself)
            return torch.zeros(self.config.k, self.config.sty_dim), torch.zeros(self.config.k, dtype=torch.long)
        return compute_domain_styles(self.core.nets["C_EMA"], self.data, self.config.size, self.config.k)

    @torch.no_grad()
    def sample_grids(self, batch: torch.Tensor) -> dict[str, Any]:
        """``reference``: sources (top row) in the style of each reference (left column); ``domains``: the
        sources (top row) in each pseudo-domain's mean style, a row per domain; G_EMA and C_EMA in eval mode."""
        from PIL import Image

        from .samples import domain_grid, reference_grid

        g, c = self.core.nets["G_EMA"], self.core.nets["C_EMA"]
        modes = g.training, c.training
        g.eval()
        c.eval()
        try:
            device = next(g.parameters()).device
            batch = batch.to(device)
            sources, references = batch[:SAMPLE_SOURCES], batch[SAMPLE_SOURCES:]
            grids = {}
            if len(references):
                grids["reference"] = reference_grid(g, c, sources, references)
            styles, counts = self.domain_styles()
            known = [i for i, n in enumerate(counts.tolist()) if n > 0]
            if known:
                grids["domains"] = domain_grid(g, sources, styles[known].to(device))
        finally:
            g.train(modes[0])
            c.train(modes[1])
        return {name: Image.fromarray(grid.permute(1, 2, 0).numpy()) for name, grid in grids.items()}

    # -- state --

    def state_dict(self) -> dict[str, Any]:
        state = self.core.state_dict()
        styles, counts = self.domain_styles()
        return {
            "iteration": state["iteration"],
            "nets": dict(state["nets"]),
            "ema": {"C": state["ema"]["C_EMA"], "G": state["ema"]["G_EMA"],
                    "styles": {"styles": styles, "counts": counts}},
            "opt": state["opt"],
            "queue": state["queue"],
            "reference_rng": state["rng"],  # "rng" is the run's (every rank's torch and Python states)
            "cluster_counts": state["cluster_counts"],
        }

    def load_state_dict(self, state: Mapping[str, Any], source: str = "checkpoint") -> None:
        ema = state.get("ema") or {}
        if "C" not in ema or "G" not in ema or "reference_rng" not in state:
            raise UserError(f"{source}: not a checkpoint of a TUNIT run")
        core = {"iteration": state["iteration"], "nets": state["nets"],
                "ema": {"C_EMA": ema["C"], "G_EMA": ema["G"]}, "opt": state["opt"], "queue": state["queue"],
                "rng": state["reference_rng"], "cluster_counts": state["cluster_counts"]}
        try:
            self.core.load_state_dict(core)
        except (RuntimeError, KeyError, ValueError) as exc:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            reason = lines[1] if len(lines) > 1 else lines[0] if lines else type(exc).__name__
            raise UserError(f"{source}: does not fit these TUNIT settings ({reason})") from None

    def load_official(self, path) -> None:
        """Start from an official ``model_N.ckpt``: every network (G, G_EMA, C, C_EMA, D); fresh optimisers."""
        from .official import NET_NAMES, load_official

        config, nets, _ = load_official(path, nets=NET_NAMES)
        shape = lambda c: (c.size, c.k, c.sty_dim, c.width, c.n_res)  # noqa: E731
        if shape(config) != shape(self.config):
            raise UserError(f"{path}: the checkpoint is a {config.size} px, K={config.k}, sty_dim={config.sty_dim}, "
                            f"nf={config.width} model; train with --size {config.size} --k {config.k} --sty-dim "
                            f"{config.sty_dim} --nf {config.width} --n-res {config.n_res}")
        for name, net in nets.items():
            self.core.nets[name].load_state_dict(net.state_dict())
