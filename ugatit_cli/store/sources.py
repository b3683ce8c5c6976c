"""Turn a MODEL argument into a loaded model: registered name, local folder or checkpoint, or Hub repo id.

Local formats are tried in order: a model folder (any family; ``config.json`` names it), a training run
folder or checkpoint (any family), then every family's importers of official checkpoints
(``Family.sources``: a predicate and a loader each). Everything that is not a local path or a registered
name is treated as a Hub repo id.
"""

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..core.devices import select_device
from ..errors import ProcessingError, UserError
from ..families.base import Family, LocalSource, Model, families, get_family
from ..families.model_folder import (
    folder_family,
    hub_errors,
    hub_reachable,
    is_hub_repo_id,
    looks_local,
    read_model_folder,
)
from .registry import registered_models
from .run_folder import is_run_or_checkpoint, load_run_model, read_run_config, run_family


def _load_model_folder(path: Path, directions: Sequence[str] | None) -> Model:
    return read_model_folder(path, directions)


def _is_model_folder(path: Path) -> bool:
    return folder_family(path) is not None


def local_sources() -> list[LocalSource]:
    """The local formats, in the order they are tried."""
    shared = [LocalSource("model folder", _is_model_folder, _load_model_folder),
              LocalSource("ugatit train run folder or checkpoint", is_run_or_checkpoint, load_run_model)]
    return shared + [source for family in families().values() for source in family.sources]


def resolve_model(
    source: str | os.PathLike, directions: Sequence[str] | None = None, revision: str | None = None
) -> Model:
    """Load the networks for ``directions`` (None: every direction the model's family has, or its one way)
    from any supported MODEL source. UserError (exit 2: nothing could start) when the source cannot be
    found or read, whatever the reader raised (a corrupt checkpoint is no partial failure)."""
    try:
        return _resolve(source, directions, revision)
    except ProcessingError as exc:
        raise UserError(str(exc)) from None


def _resolve(source: str | os.PathLike, directions: Sequence[str] | None, revision: str | None) -> Model:
    directions = None if directions is None else tuple(directions)
    if directions:  # a direction no family has is wrong whatever the source: say so before looking for it
        known = [d for family in families().values() for d in family.directions]
        for direction in directions:
            if direction not in known:
                raise UserError(f"unknown direction {direction!r}; expected {' or '.join(dict.fromkeys(known))}")
    text = str(source)
    named = registered_models()
    if text in named:
        return named[text].resolve(get_family(named[text].family).keys_for(directions), revision)
    path = Path(text).expanduser()
    sources = local_sources()
    # a path, or a name a family's reader recognises without it existing (a TF checkpoint's prefix)
    if path.exists() or any(local.matches(path) for local in sources):
        for local in sources:
            if local.matches(path):
                return _checked(local.load(path, directions), directions)
        kinds = ", ".join(s.kind for s in sources)
        raise UserError(f"{path}: not a recognised model (expected one of: {kinds})")
    if looks_local(text):  # a mistyped path, not a Hub repo id: say so instead of blaming the network
        raise UserError(f"{text}: no such file or folder")
    if is_hub_repo_id(text):
        with hub_errors(text, revision):  # a dead network: the cache only, at once, not ~30 s of retries
            return _checked(read_model_folder(text, directions, revision=revision,
                                              local_files_only=not hub_reachable()), directions)
    names = ", ".join(sorted(named))
    raise UserError(f"{text}: no such file, registered model ({names}) or Hub repo id (user/name)")


def _checked(model: Model, directions: Sequence[str] | None) -> Model:
    """A loader that read every direction it was asked for: nothing to check but that it read some."""
    if not model.nets:
        raise UserError("the model holds no network")
    return model


def load_generator(
    source: str | os.PathLike, direction: str | None = None, device: str | torch.device = "cpu",
    revision: str | None = None,
) -> torch.nn.Module:
    """The generator for one direction (None: the family's default, U-GAT-IT's ``a2b``; families without
    directions: their first network), in eval mode on ``device`` (``"auto"`` picks the best one).

    Calling it returns what the family's network returns; for U-GAT-IT, on a ``B x 3 x H x W`` tensor in
    [-1, 1], the image, attention logit and heatmap of the official PyTorch ``ResnetGenerator.forward``.
    """
    if direction is None:  # the family's default, known without loading for all but Hub repos
        family = peek_family(source)
        direction = family.default_direction if family is not None else None
    model = resolve_model(source, None if direction is None else (direction,), revision)
    key = direction or model.family.default_direction or next(iter(model.nets))
    if key not in model.nets:  # a model with every network loaded
        key = model.family.keys_for((key,))[0]
    target = select_device(device) if isinstance(device, str) else device
    return model.nets[key].to(target).eval()


def peek_family(source: str | os.PathLike) -> Family | None:
    """The family of a MODEL source without loading its weights (None for a Hub repo id, whose config.json
    is read when the model is loaded). UserError for nothing; an unrecognised source is ``resolve_model``'s
    to report."""
    text = str(source)
    named = registered_models()
    if text in named:
        return get_family(named[text].family)
    path = Path(text).expanduser()
    if not path.exists():
        return None
    found = folder_family(path)
    if found is not None:
        return found
    if is_run_or_checkpoint(path):
        return run_family(read_run_config(path))
    for family in families().values():
        if any(local.matches(path) for local in family.sources):
            return family
    return None
