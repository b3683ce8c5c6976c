"""pix2pixHD hyper-parameters under the official option names, with their official defaults.

Source: NVIDIA/pix2pixHD ``options/base_options.py`` and ``options/train_options.py``. Two differences, both
deliberate: the schedule counts iterations instead of epochs (``iterations`` = official
``niter + niter_decay``; ``niter_decay`` and ``niter_fix_global`` are iteration counts too), and the defaults
of what the official code reads from the command line only at test time (``resize_or_crop none``) are the
training ones here; :class:`Pix2PixHDConfig` is what a model needs to be rebuilt, :class:`Pix2PixHDTrainConfig`
adds what only training needs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

NET_G_CHOICES = ("global", "local")
NORM_CHOICES = ("instance", "batch")
RESIZE_OR_CROP_CHOICES = ("scale_width", "resize_and_crop", "crop", "scale_width_and_crop", "none")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass
class Pix2PixHDConfig:
    """What defines a pix2pixHD generator (and its feature encoder); it round-trips through ``config.json``.

    ``label_nc`` 0 means the input is an RGB image (``input_nc`` channels, official folders ``train_A/``)
    instead of a label map. Raises ``ValueError`` from :meth:`validate` (called on construction) for values the
    official networks cannot be built with.
    """

    label_nc: int = 35
    input_nc: int = 3  # channels of the input image when label_nc == 0
    output_nc: int = 3
    netG: str = "global"  # noqa: N815 (the official option name)
    ngf: int = 64
    n_downsample_global: int = 4
    n_blocks_global: int = 9
    n_local_enhancers: int = 1
    n_blocks_local: int = 3
    norm: str = "instance"
    no_instance: bool = False
    instance_feat: bool = False
    label_feat: bool = False
    feat_num: int = 3
    nef: int = 16
    n_downsample_E: int = 4  # noqa: N815
    n_clusters: int = 10

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for f in fields(self):  # types first: a config.json or opt.txt may hold "64", null or a list
            value = getattr(self, f.name)
            kind = {"int": int, "bool": bool, "str": str}.get(f.type)
            if kind is None:
                continue
            if (kind is int and (isinstance(value, bool) or not isinstance(value, int))) or \
                    (kind is not int and not isinstance(value, kind)):
                raise ValueError(f"{f.name} must be {'an integer' if kind is int else f'a {kind.__name__}'}, "
                                 f"got {value!r}")
        _check(self.netG in NET_G_CHOICES, f"netG must be one of {', '.join(NET_G_CHOICES)}, got {self.netG!r}")
        _check(self.norm in NORM_CHOICES, f"norm must be one of {', '.join(NORM_CHOICES)}, got {self.norm!r}")
        _check(0 <= self.label_nc <= 65536, f"label_nc must be in [0, 65536], got {self.label_nc}")
        _check(1 <= self.input_nc <= 64 and 1 <= self.output_nc <= 64,
               f"input_nc and output_nc must be in [1, 64], got {self.input_nc} and {self.output_nc}")
        _check(1 <= self.ngf <= 4096, f"ngf must be in [1, 4096], got {self.ngf}")
        # the widest layer, ngf * 2^n_downsample_global channels, bounded like ngf itself
        _check(self.ngf * 2 ** self.n_downsample_global <= 1 << 16,
               f"ngf * 2^n_downsample_global = {self.ngf * 2 ** self.n_downsample_global} channels is more than "
               f"any pix2pixHD generator has (at most 65536)")
        _check(0 <= self.n_downsample_global <= 8, f"n_downsample_global must be in [0, 8], "
                                                   f"got {self.n_downsample_global}")
        _check(0 <= self.n_blocks_global <= 64, f"n_blocks_global must be in [0, 64], got {self.n_blocks_global}")
        _check(1 <= self.n_local_enhancers <= 4, f"n_local_enhancers must be in [1, 4], "
                                                 f"got {self.n_local_enhancers}")
        _check(0 <= self.n_blocks_local <= 64, f"n_blocks_local must be in [0, 64], got {self.n_blocks_local}")
        _check(1 <= self.feat_num <= 64, f"feat_num must be in [1, 64], got {self.feat_num}")
        _check(1 <= self.nef <= 4096, f"nef must be in [1, 4096], got {self.nef}")
        _check(0 <= self.n_downsample_E <= 8, f"n_downsample_E must be in [0, 8], got {self.n_downsample_E}")
        _check(1 <= self.n_clusters <= 1000, f"n_clusters must be in [1, 1000], got {self.n_clusters}")
        _check(not (self.label_feat and self.label_nc == 0), "label_feat needs label maps (label_nc > 0)")

    # --- what the options imply (official pix2pixHD_model.initialize) ----------------------------------------

    @property
    def use_features(self) -> bool:
        """Official ``use_features``: the encoder's instance-wise features are part of G's input."""
        return self.instance_feat or self.label_feat

    @property
    def label_channels(self) -> int:
        """Channels of the encoded label input before the edge map: label_nc, or input_nc for RGB inputs."""
        return self.label_nc if self.label_nc != 0 else self.input_nc

    @property
    def netG_input_nc(self) -> int:  # noqa: N802
        """Channels G reads: one-hot labels (+1 edge map unless no_instance) (+feat_num with features)."""
        return self.label_channels + (0 if self.no_instance else 1) + (self.feat_num if self.use_features else 0)

    @property
    def size_multiple(self) -> int:
        """The side multiple the generator needs to return an image of its input's size.

        Official ``__make_power_2`` base: 2**n_downsample_global, times 2**n_local_enhancers for netG local
        (each stride-2 conv takes ceil(side / 2), each transposed conv doubles).
        """
        base = 2 ** self.n_downsample_global
        if self.netG == "local":
            base *= 2 ** self.n_local_enhancers
        return base

    def check_shape(self, height: int, width: int) -> None:
        """Raise ``ValueError`` unless (height, width) is a size the generator maps onto itself."""
        m = self.size_multiple
        if height < m or width < m or height % m or width % m:
            raise ValueError(f"{width}x{height} is not a size this generator can run at: both sides must be "
                             f"multiples of {m} (2^n_downsample_global"
                             f"{' x 2^n_local_enhancers' if self.netG == 'local' else ''})")

    def rounded_size(self, height: int, width: int) -> tuple[int, int]:
        """Official test-time sizing (``--resize_or_crop none``): each side to the nearest multiple.

        The official code rounds with Python's ``round`` on ``side / base`` (halves to even); a side that
        rounds to 0 cannot run and raises ``ValueError``.
        """
        m = self.size_multiple
        h, w = int(round(height / m) * m), int(round(width / m) * m)
        if h == 0 or w == 0:
            raise ValueError(f"{width}x{height} is too small: sides round to multiples of {m}, "
                             f"and at least one rounds to 0")
        return h, w

    def default_size(self) -> int:
        """0: with no ``--size`` each map runs at its own size, rounded to :attr:`size_multiple` (official test)."""
        return 0

    def check_size(self, size: int | None) -> int:
        """``--size`` (the width a map is scaled to; its height keeps the aspect ratio; both then rounded to the
        side multiple), or 0 for None. ``ValueError`` below half the multiple (it would round to 0)."""
        if size is None:
            return 0
        if size * 2 < self.size_multiple:
            raise ValueError(f"--size {size} is too small for this generator (sides are rounded to multiples of "
                             f"{self.size_multiple})")
        return size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Pix2PixHDConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Pix2PixHDTrainConfig:
    """Everything ``ugatit train --arch pix2pixhd`` runs, official names and defaults.

    ``iterations`` replaces the official epochs (``niter`` + ``niter_decay``): the learning rate stays at
    ``lr`` for ``iterations - niter_decay`` iterations and then falls linearly, as the official
    ``update_learning_rate`` does per epoch, to ``lr / niter_decay`` at the last iteration.
    ``niter_decay`` None means half of ``iterations`` (the official 100 + 100 split).
    """

    model: Pix2PixHDConfig = field(default_factory=Pix2PixHDConfig)

    # discriminators and losses (official train_options.py)
    num_D: int = 2  # noqa: N815
    n_layers_D: int = 3  # noqa: N815
    ndf: int = 64
    no_lsgan: bool = False
    lambda_feat: float = 10.0
    no_ganFeat_loss: bool = False  # noqa: N815
    no_vgg_loss: bool = False
    vgg_weights: str | None = None  # a local VGG19 state dict instead of torchvision's download

    # optimisation
    iterations: int = 200_000
    niter_decay: int | None = None
    niter_fix_global: int = 0
    batch_size: int = 1  # official batchSize
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999  # fixed in the official code

    # data (official base_dataset.py; load_size/fine_size are loadSize/fineSize)
    resize_or_crop: str = "scale_width"
    load_size: int = 1024
    fine_size: int = 512
    no_flip: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = Pix2PixHDConfig.from_dict(self.model)
        self.validate()

    def validate(self) -> None:
        self.model.validate()
        _check(1 <= self.num_D <= 8, f"num_D must be in [1, 8], got {self.num_D}")
        _check(1 <= self.n_layers_D <= 8, f"n_layers_D must be in [1, 8], got {self.n_layers_D}")
        _check(1 <= self.ndf <= 4096, f"ndf must be in [1, 4096], got {self.ndf}")
        _check(self.lambda_feat >= 0, f"lambda_feat must be >= 0, got {self.lambda_feat}")
        _check(self.iterations >= 1, f"iterations must be >= 1, got {self.iterations}")
        _check(self.niter_decay is None or 0 <= self.niter_decay <= self.iterations,
               f"niter_decay must be in [0, iterations={self.iterations}], got {self.niter_decay}")
        _check(0 <= self.niter_fix_global <= self.iterations,
               f"niter_fix_global must be in [0, iterations], got {self.niter_fix_global}")
        _check(self.niter_fix_global == 0 or self.model.netG == "local",
               "niter_fix_global only applies to netG local (it trains the local enhancer alone first)")
        _check(1 <= self.batch_size <= 4096, f"batch_size must be in [1, 4096], got {self.batch_size}")
        _check(self.lr > 0 and 0 <= self.beta1 < 1 and 0 <= self.beta2 < 1,
               f"need lr > 0 and betas in [0, 1), got lr={self.lr}, beta1={self.beta1}, beta2={self.beta2}")
        _check(self.resize_or_crop in RESIZE_OR_CROP_CHOICES,
               f"resize_or_crop must be one of {', '.join(RESIZE_OR_CROP_CHOICES)}, got {self.resize_or_crop!r}")
        _check(1 <= self.load_size <= 16384 and 1 <= self.fine_size <= 16384,
               f"load_size and fine_size must be in [1, 16384], got {self.load_size} and {self.fine_size}")
        if "crop" in self.resize_or_crop:
            m = self.model.size_multiple
            _check(self.fine_size % m == 0, f"fine_size {self.fine_size} must be a multiple of {m}, the side "
                                            f"multiple of this generator")
        if self.resize_or_crop == "resize_and_crop":
            _check(self.load_size >= self.fine_size,
                   f"load_size {self.load_size} must be >= fine_size {self.fine_size}")

    @property
    def decay_iterations(self) -> int:
        return self.iterations // 2 if self.niter_decay is None else self.niter_decay

    def lr_at(self, step: int) -> float:
        """The learning rate of iteration ``step`` (1-based).

        Official ``update_learning_rate``, one epoch = one iteration: ``lr`` for the first
        ``niter = iterations - niter_decay`` steps and step ``niter + 1``, then ``lr / niter_decay`` less at
        each further step, so the last step runs at ``lr / niter_decay``.
        """
        decay = self.decay_iterations
        niter = self.iterations - decay
        if decay == 0 or step <= niter + 1:
            return self.lr
        return max(0.0, self.lr * (1.0 - (step - niter - 1) / decay))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Pix2PixHDTrainConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if isinstance(values.get("model"), dict):
            values["model"] = Pix2PixHDConfig.from_dict(values["model"])
        return cls(**values)
