"""Turn a MODEL argument into generators: registered name, local folder or checkpoint, or Hub repo id.

Each local format is recognised by one entry in ``LOCAL_SOURCES`` (a predicate and a loader), tried in
order; everything that is not a local path or a registered name is treated as a Hub repo id.
"""

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .devices import select_device
from .errors import UserError
from .hub import (
    DIRECTIONS,
    UGATITModel,
    assume_training_size,
    check_direction,
    generator_from_state,
    hub_errors,
    hub_reachable,
    is_model_folder,
)
from .importers.official_pytorch import GENERATOR_NAMES, load_official_checkpoint
from .importers.tf_checkpoint import is_tf_checkpoint
from .importers.tf_convert import load_tf_checkpoint
from .model import Generator
from .registry import MODELS
from .train.checkpoint import is_run_or_checkpoint, load_run_model

_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass(frozen=True)
class LocalSource:
    """One local model format: ``matches(path)`` recognises it, ``load(path, directions)`` reads it."""

    kind: str
    matches: Callable[[Path], bool]
    load: Callable[[Path, Sequence[str]], UGATITModel]


def _load_model_folder(path: Path, directions: Sequence[str]) -> UGATITModel:
    try:
        return UGATITModel.from_pretrained(str(path), directions=tuple(directions))
    except ValueError as exc:  # config.json with values our config rejects
        raise UserError(f"{path}: invalid config.json ({exc})") from None


def _load_official_pytorch(path: Path, directions: Sequence[str]) -> UGATITModel:
    config, states = load_official_checkpoint(path)
    generators = {}
    for direction in directions:
        name = GENERATOR_NAMES[direction]
        if name not in states:
            raise UserError(f"{path}: checkpoint has no {name} (direction {direction})")
        generators[direction] = generator_from_state(config, states[name], origin=f"{path} [{name}]")
    source = (f"Converted from the official U-GAT-IT PyTorch checkpoint `{path.name}` (znxlwm/UGATIT-pytorch); "
              "hyper-parameters read from its tensor shapes.")
    model = UGATITModel(config, generators, card={"source": source})
    return assume_training_size(model, str(path)) if config.light else model


LOCAL_SOURCES: list[LocalSource] = [
    LocalSource("model folder", is_model_folder, _load_model_folder),
    LocalSource("official PyTorch checkpoint", lambda p: p.is_file() and p.suffix == ".pt", _load_official_pytorch),
    LocalSource("official TensorFlow checkpoint (folder, prefix, .index, .data or checkpoint file)", is_tf_checkpoint,
                load_tf_checkpoint),
    LocalSource("ugatit train run folder or checkpoint", is_run_or_checkpoint, load_run_model),
]


def resolve_model(
    source: str | os.PathLike, directions: Sequence[str] = DIRECTIONS, revision: str | None = None
) -> UGATITModel:
    """Load the generators for ``directions`` from any supported MODEL source."""
    directions = tuple(check_direction(d) for d in directions)
    text = str(source)
    if text in MODELS:
        return MODELS[text].resolve(directions, revision)
    path = Path(text).expanduser()
    if path.exists() or is_tf_checkpoint(path):  # a TF checkpoint is often named by its prefix, not a file
        for local in LOCAL_SOURCES:
            if local.matches(path):
                return local.load(path, directions)
        kinds = ", ".join(s.kind for s in LOCAL_SOURCES)
        raise UserError(f"{path}: not a recognised model (expected one of: {kinds})")
    if _REPO_ID.match(text) and not text.startswith((".", "/")):
        with hub_errors(text, revision):  # a dead network: the cache only, at once, not ~30 s of retries
            return UGATITModel.from_pretrained(text, directions=directions, revision=revision,
                                               local_files_only=not hub_reachable())
    names = ", ".join(sorted(MODELS))
    raise UserError(f"{text}: no such file, registered model ({names}) or Hub repo id (user/name)")


def load_generator(
    source: str | os.PathLike, direction: str = "a2b", device: str | torch.device = "cpu",
    revision: str | None = None,
) -> Generator:
    """The generator for one direction, in eval mode on ``device`` (``"auto"`` picks the best one).

    Calling it on a ``B x 3 x H x W`` tensor in [-1, 1] returns ``(image, cam_logit, heatmap)`` like the
    official PyTorch ``ResnetGenerator.forward``.
    """
    model = resolve_model(source, (direction,), revision)
    target = select_device(device) if isinstance(device, str) else device
    return model.generators[direction].to(target).eval()
