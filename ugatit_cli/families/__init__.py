"""Model families: one folder per image-to-image system, plugged into the shared layers through
:mod:`ugatit_cli.families.base` (the interface and the registry)."""

from .base import Direction, Family, families, get_family, register_family

__all__ = ["Direction", "Family", "families", "get_family", "register_family"]
