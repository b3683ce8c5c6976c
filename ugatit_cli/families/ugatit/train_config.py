"""Every training hyper-parameter in one dataclass; the defaults are the paper's and the official code's."""

from dataclasses import asdict, dataclass, fields
from typing import Any

from . import UGATITConfig


@dataclass
class TrainConfig:
    """What ``ugatit train`` runs. Defaults reproduce the official PyTorch ``main.py`` / the paper.

    The first block defines the networks, the second the optimisation (official names in comments), the
    third what is beyond the official recipe (off by default), the last how the run is kept and watched.
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
