"""pix2pixHD (Wang et al., CVPR 2018; official code NVIDIA/pix2pixHD) as a model family: label maps to photos.

Importing this package imports no torch (``ugatit --help`` lists every family's options); the networks,
losses, data and trainer modules import it when used.
"""

from .config import Pix2PixHDConfig, Pix2PixHDTrainConfig
from .family import FAMILY, Pix2PixHDFamily, Pix2PixHDModel

__all__ = ["FAMILY", "Pix2PixHDConfig", "Pix2PixHDFamily", "Pix2PixHDModel", "Pix2PixHDTrainConfig"]
