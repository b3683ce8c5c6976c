"""U-GAT-IT's training data: two unpaired domains in the official layout ``trainA/ trainB/ [testA/ testB/]``
(znxlwm/UGATIT-pytorch ``dataset.py``), read by the shared streams of :mod:`ugatit_cli.data.streams`."""

import os

from ...data.streams import TrainingData, scan_folders
from .family import DATA_LAYOUT, SAMPLE_FOLDERS, TRAIN_FOLDERS


def scan_training_data(data_dir: str | os.PathLike, threads: int | None = None) -> TrainingData:
    """Find and fully decode every image of ``trainA/`` (stream ``A``) and ``trainB/`` (``B``) once;
    unreadable ones are named in one warning and left out (see ``scan_folders``)."""
    return scan_folders(data_dir, TRAIN_FOLDERS, SAMPLE_FOLDERS, DATA_LAYOUT, threads)
