"""Training: the run (``train``: run folder, checkpoints, resume, signals, DDP, logging) shared by every model
family, and U-GAT-IT's ``TrainConfig`` and ``Trainer`` (the Python API's names; they live in the family)."""

from ..families.base import RunConfig
from ..families.ugatit.train_config import TrainConfig
from ..families.ugatit.trainer import Trainer
from .run import RunSummary, train

__all__ = ["RunConfig", "RunSummary", "TrainConfig", "Trainer", "train"]
