"""TUNIT settings: the architecture (what a model folder's ``config.json`` holds) and the training recipe.

Defaults are those of the official code (clovaai/tunit ``main.py``, ``train/train_unsupervised.py``,
``tools/ops.py``); the official argument name is given where ours differs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from ...errors import UserError

#: official ``main.py``: 200 epochs of ``--iters`` 1000 iterations
OFFICIAL_ITERATIONS = 200_000
#: official ``args.separated`` (65 of 200 epochs, unsupervised mode): the guiding network trains alone first
OFFICIAL_WARMUP_FRACTION = 65 / 200
#: official ``args.ema_start`` = separated + 1 epoch: G_EMA is reset to G, then averaged every iteration
OFFICIAL_EMA_DELAY_FRACTION = 1 / 200
#: official ``--iters``: C_EMA takes C's batch-norm statistics at the end of every such "epoch"
OFFICIAL_EPOCH_ITERATIONS = 1000


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def default_nf(size: int) -> int:
    """Base width of the generator and discriminator: 64 below 256 px, 32 from 256 px (official)."""
    return 64 if size < 256 else 32


@dataclass
class TunitConfig:
    """Architecture of one TUNIT model: generator, guiding network and multi-task discriminator.

    - ``size``: training image side (official ``--img_size``, default 128); a power of two >= 32, since the
      discriminator ends in a 4x4 convolution on a ``size / 2**(log2(size) - 2)`` = 4 px map and the
      guiding network (VGG11) halves the image five times.
    - ``k``: number of pseudo-domains (official ``--output_k``, default 10), >= 2.
    - ``sty_dim``: style code length (official ``--sty_dim``, default 128).
    - ``nf``: base width; None means the official rule (:func:`default_nf`).
    - ``n_res``: residual blocks in the content encoder and in the decoder (official 2).
    """

    size: int = 128
    k: int = 10
    sty_dim: int = 128
    nf: int | None = None
    n_res: int = 2

    def __post_init__(self) -> None:
        self.validate()

    # -- derived sizes --

    @property
    def width(self) -> int:
        """The base width actually used (``nf`` or the official rule)."""
        return self.nf if self.nf is not None else default_nf(self.size)

    @property
    def n_downs(self) -> int:
        """Stride-2 convolutions of the content encoder: ``log2(size / 16)`` (official ``s0 = 16``)."""
        return int(math.log2(self.size // 16))

    @property
    def content_channels(self) -> int:
        """Channels of the content code: ``width * 2**n_downs`` (512 at 128 px)."""
        return self.width * 2**self.n_downs

    @property
    def content_stride(self) -> int:
        """Inputs must be a multiple of this to come back at the same size (``2**n_downs``)."""
        return 2**self.n_downs

    # -- checks --

    def validate(self) -> None:
        """ValueError naming the field for values the networks cannot be built with."""
        for name in ("size", "k", "sty_dim", "n_res"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if not _is_power_of_two(self.size) or self.size < 32:
            raise ValueError(f"size must be a power of two >= 32 (the discriminator ends on a 4 px map), "
                             f"got {self.size}")
        if self.size > 1024:
            raise ValueError(f"size must be <= 1024, got {self.size}")
        if not 2 <= self.k <= 1000:
            raise ValueError(f"k (pseudo-domains) must be in [2, 1000], got {self.k}")
        if not 1 <= self.sty_dim <= 4096:
            raise ValueError(f"sty_dim must be in [1, 4096], got {self.sty_dim}")
        if not 0 <= self.n_res <= 16:
            raise ValueError(f"n_res must be in [0, 16], got {self.n_res}")
        if self.nf is not None and (not isinstance(self.nf, int) or not 1 <= self.nf <= 1024):
            raise ValueError(f"nf must be an integer in [1, 1024], got {self.nf!r}")

    # -- config.json --

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TunitConfig:
        """Build from ``config.json`` (unknown keys ignored); ValueError for values it rejects."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def default_size(self) -> int:
        return self.size

    def check_size(self, size: int | None) -> int:
        """``size`` if the networks run at it (None: the training size); UserError with the rule otherwise.

        The generator needs a multiple of ``2**n_downs``; the guiding network at least 32 px.
        """
        if size is None:
            return self.size
        if size < 32 or size % self.content_stride:
            raise UserError(f"--size {size} does not fit this TUNIT model: use a multiple of "
                            f"{self.content_stride} that is at least 32 (it was trained at {self.size})")
        return size


@dataclass
class TunitHyperParams:
    """The training recipe (official ``main.py`` defaults; ``--p-semi`` 0 is the unsupervised mode).

    Loss weights: the guiding loss is ``contrastive + w_iic * IIC`` (official constant 5.0), multiplied by
    ``w_guide_gan`` (official 0.1) once the GAN phase starts. The generator loss is
    ``w_adv * (adv(translation) + adv(reconstruction)) + w_rec * L1 + w_vec * style contrastive``; the
    discriminator's is hinge + ``w_gp`` * R1.

    Phases, in iterations: the first ``warmup_iterations`` train the guiding network alone (official 65 of
    200 epochs); at ``ema_start`` G_EMA is reset to G and averaged from then on (official: one epoch later).
    None scales the official fractions to ``iterations``.
    """

    # architecture
    size: int = 128
    k: int = 10  # official output_k
    sty_dim: int = 128
    nf: int | None = None
    n_res: int = 2

    # schedule
    iterations: int = OFFICIAL_ITERATIONS
    batch_size: int = 32
    warmup_iterations: int | None = None  # official args.separated (in epochs of 1000 iterations)
    ema_start: int | None = None  # official args.ema_start
    epoch_iterations: int = OFFICIAL_EPOCH_ITERATIONS  # official --iters
    p_semi: float = 0.0  # share of labelled images (needs class subfolders); 0 = unsupervised

    # guiding network (official constants in train_unsupervised.py / ops.py)
    queue_size: int = 1024  # negatives of the contrastive loss (dequeue_data K)
    temperature: float = 0.07
    w_iic: float = 5.0
    w_guide_gan: float = 0.1
    lr_c: float = 1e-4  # Adam
    weight_decay_c: float = 1e-3  # official: weight_decay=0.001 for C's Adam

    # generator and discriminator
    w_adv: float = 1.0
    w_rec: float = 0.1
    w_vec: float = 0.01  # style contrastive loss of G
    w_gp: float = 10.0  # R1 on real images
    lr_g: float = 1e-4  # RMSprop
    lr_d: float = 1e-4  # RMSprop
    weight_decay: float = 1e-4  # RMSprop weight decay of G and D
    ema_beta: float = 0.999  # G_EMA and C_EMA

    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def model_config(self) -> TunitConfig:
        return TunitConfig(size=self.size, k=self.k, sty_dim=self.sty_dim, nf=self.nf, n_res=self.n_res)

    @property
    def warmup(self) -> int:
        """Iterations of the guiding-network-only phase."""
        if self.warmup_iterations is not None:
            return self.warmup_iterations
        return round(self.iterations * OFFICIAL_WARMUP_FRACTION)

    @property
    def ema_from(self) -> int:
        """Iteration at which G_EMA is reset to G and starts averaging."""
        if self.ema_start is not None:
            return self.ema_start
        return self.warmup + round(self.iterations * OFFICIAL_EMA_DELAY_FRACTION)

    def validate(self) -> None:
        """ValueError naming the field for an impossible value."""
        self.model_config()  # architecture rules
        positive_ints = ("iterations", "batch_size", "epoch_iterations", "queue_size")
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2 (references are the batch shuffled, and IIC needs a joint "
                             "distribution over several images)")
        for name in ("warmup_iterations", "ema_start"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.ema_from < self.warmup:
            raise ValueError(f"ema_start ({self.ema_from}) must not come before the end of the warm-up "
                             f"({self.warmup})")
        if not 0.0 <= self.p_semi <= 1.0:
            raise ValueError(f"p_semi must be in [0, 1], got {self.p_semi}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.ema_beta < 1.0:
            raise ValueError(f"ema_beta must be in [0, 1), got {self.ema_beta}")
        for name in ("w_iic", "w_guide_gan", "w_adv", "w_rec", "w_vec", "w_gp", "weight_decay",
                     "weight_decay_c"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr_c", "lr_g", "lr_d"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TunitHyperParams:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
