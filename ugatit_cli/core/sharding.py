"""Splitting one translation over many processes: ``torchrun --nproc_per_node=N -m ugatit_cli translate ...``.

Every process sees the same inputs, sorts them by path and keeps those whose position ``i`` has
``i % WORLD_SIZE == RANK`` (round-robin: shards differ in size by at most one image and each holds images
from the whole folder, so no rank gets all the large ones). The union of the shards is every input and no
two shards share one, whatever the order the filesystem lists them in. Outputs that exist are skipped as
in a single process, so rerunning the same command after a crash finishes what is left. No process group
is needed: the ranks never talk to each other, so a rank that dies stops nobody else.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from ..errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This process's part of the inputs: ``rank`` of ``world_size`` (0 of 1 outside torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def take(self, items: Sequence[T]) -> list[T]:
        """The items at positions ``rank``, ``rank + world_size``, ... of ``items`` (already sorted)."""
        return list(items[self.rank::self.world_size])

    def to_dict(self) -> dict[str, int]:
        return {"rank": self.rank, "world_size": self.world_size}


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise UserError(f"environment variable {name}={text!r} is not an integer") from None


def shard_from_env() -> Shard:
    """The shard torchrun's variables describe (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); one shard
    otherwise. UserError for values that cannot be a rank."""
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise UserError(f"RANK={rank} and WORLD_SIZE={world_size} do not describe a process of a torchrun job")
    return Shard(rank, world_size, local_rank)


def device_for_shard(spec: str, shard: Shard) -> str:
    """Under torchrun, ``auto`` and ``cuda`` mean this process's own GPU (``cuda:LOCAL_RANK``) when there
    are GPUs; any other device, and a single process, keep the user's choice."""
    if shard.world_size == 1 or spec not in ("auto", "cuda"):
        return spec
    import torch

    if not torch.cuda.is_available():
        return spec
    return f"cuda:{shard.local_rank % torch.cuda.device_count()}"
