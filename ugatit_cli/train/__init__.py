"""Training U-GAT-IT: the hyper-parameters (``TrainConfig``), one training iteration (``Trainer``) and a whole
run in a run folder (``train``)."""

from ..families.ugatit.train_config import TrainConfig
from ..families.ugatit.trainer import Trainer
from .run import RunSummary, train

__all__ = ["RunSummary", "TrainConfig", "Trainer", "train"]
