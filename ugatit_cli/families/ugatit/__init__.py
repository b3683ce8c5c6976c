"""The U-GAT-IT networks and their configuration. No file or network IO happens in this package."""

from .config import UGATITConfig
from .networks import LIN, AdaLIN, Discriminator, Generator, build_discriminators, clip_rho_

__all__ = ["AdaLIN", "Discriminator", "Generator", "LIN", "UGATITConfig", "build_discriminators", "clip_rho_"]
