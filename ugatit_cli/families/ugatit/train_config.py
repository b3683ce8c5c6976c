"""U-GAT-IT's training hyper-parameters (``UGATITHyperParams``: the ``ugatit train`` options of its help
panel) and ``TrainConfig``, the flat dataclass of the Python API: the run settings plus the hyper-parameters,
defaults equal to the paper's and the official code's."""

from dataclasses import asdict, dataclass, fields
from typing import Any

from ..base import RunConfig, dataclass_from_dict, option
from .config import UGATITConfig

#: U-GAT-IT's changes to the shared run defaults (official main.py: iteration 1M, batch_size 1, print_freq
#: and save_freq 1000)
RUN_DEFAULTS = {"iterations": 1_000_000, "batch_size": 1}


@dataclass
class UGATITHyperParams:
    """Networks (official: img_size, ch, n_res, light; the discriminators are 7 global / 5 local layers) and
    the optimisation (official names in comments)."""

    size: int = option(256, help="Image size in pixels (official img_size).")
    ch: int = option(64, help="Base channel count.")
    n_res: int = option(4, help="Residual blocks.")
    light: bool = option(False, help="The light model.", flag="--light", negative="--full")
    lr: float = option(1e-4, help="Adam learning rate.")
    beta1: float = option(0.5, help="Adam beta1.")
    beta2: float = option(0.999, help="Adam beta2.")
    weight_decay: float = option(1e-4, help="Adam's L2 term, as the official code passes it.")
    adv_weight: float = option(1.0, help="Weight of the adversarial losses.")
    cycle_weight: float = option(10.0, help="Weight of the cycle losses.")
    identity_weight: float = option(10.0, help="Weight of the identity losses.")
    cam_weight: float = option(1000.0, help="Weight of the CAM losses.")
    decay: bool = option(True, help="Lower the learning rate linearly to 0 over the second half (official "
                                    "decay_flag).", negative="--no-decay")

    def model_config(self) -> UGATITConfig:
        """The architecture these settings train (discriminator depth lowered for small images)."""
        return UGATITConfig(img_size=self.size, ch=self.ch, n_res=self.n_res, light=self.light)


@dataclass
class TrainConfig:
    """What ``ugatit train`` runs. Defaults reproduce the official PyTorch ``main.py`` / the paper.

    The first block defines the networks, the second the optimisation (official names in comments), the
    third what is beyond the official recipe (off by default), the last how the run is kept and watched.
    The fields are those of :class:`UGATITHyperParams` and :class:`~ugatit_cli.families.base.RunConfig`
    (``split``/``combine`` convert; a test keeps them in step).
    """

    # networks (official: img_size, ch, n_res, light; the discriminators are 7 global / 5 local layers)
    size: int = 256
    ch: int = 64
    n_res: int = 4
    light: bool = False

    # optimisation
    iterations: int = 1_000_000  # official: iteration
    batch_size: int = 1
    lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999
    weight_decay: float = 1e-4  # Adam's L2 term, as the official code passes it
    adv_weight: float = 1.0
    cycle_weight: float = 10.0
    identity_weight: float = 10.0
    cam_weight: float = 1000.0
    decay: bool = True  # official decay_flag: lr falls linearly to 0 over the second half
    seed: int = 0

    # beyond the official recipe
    ema: float | None = None  # decay of an exponential moving average of both generators, e.g. 0.999
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; GradScaler for fp16)
    compile: bool = False  # torch.compile the networks

    # the run
    workers: int = 2  # data-loading worker processes
    save_every: int = 1000  # iterations between checkpoints
    keep_checkpoints: int = 3  # the last K checkpoints are kept
    sample_every: int = 1000  # iterations between sample grids (official print_freq)
    log_every: int = 10  # iterations between JSONL log lines

    def model_config(self) -> UGATITConfig:
        """The architecture these settings train (discriminator depth lowered for small images)."""
        return UGATITConfig(img_size=self.size, ch=self.ch, n_res=self.n_res, light=self.light)

    def split(self) -> tuple[RunConfig, UGATITHyperParams]:
        data = self.to_dict()
        return dataclass_from_dict(RunConfig, data), dataclass_from_dict(UGATITHyperParams, data)

    @classmethod
    def combine(cls, run: RunConfig, hyper: UGATITHyperParams) -> "TrainConfig":
        return cls(**asdict(run), **asdict(hyper))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
