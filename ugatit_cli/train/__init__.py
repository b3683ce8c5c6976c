"""Training U-GAT-IT: the hyper-parameters (``TrainConfig``), one training iteration (``Trainer``) and a whole
run in a run folder (``train``)."""

from .config import TrainConfig
from .run import RunSummary, train
from .trainer import Trainer

__all__ = ["RunSummary", "TrainConfig", "Trainer", "train"]
