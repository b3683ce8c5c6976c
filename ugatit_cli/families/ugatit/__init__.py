"""U-GAT-IT: the networks, their configuration, training and importers of the official checkpoints, as one
model family (``FAMILY``). The networks (torch) are imported when first used, not with this package."""

from importlib import import_module
from typing import Any

from .config import UGATITConfig
from .family import FAMILY, UGATITFamily, UGATITModel

_NETWORKS = ("AdaLIN", "Discriminator", "Generator", "LIN", "build_discriminators", "clip_rho_")

__all__ = ["FAMILY", "UGATITConfig", "UGATITFamily", "UGATITModel", *_NETWORKS]


def __getattr__(name: str) -> Any:
    if name in _NETWORKS:
        return getattr(import_module(".networks", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
