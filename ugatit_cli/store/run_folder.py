"""Run folders and their checkpoints: written atomically, the last K kept, loadable as a MODEL source.

A run folder::

    config.json                   the family and format version, the resolved settings ("train": run settings
                                  and the family's hyper-parameters), the networks built ("model"), the data
    checkpoints/latest            name of the newest checkpoint (replaced atomically)
    checkpoints/step_00001000/    <net>.safetensors per trainer network (+ ema_<net>), state.pt, config.json
    samples/A2B_00001000.png      sample grids (samples.py)
    log.jsonl                     every loss term (run.py)

``state.pt`` holds the optimisers, the GradScaler, the iteration and the RNG states: tensors and plain
containers only, read back with ``torch.load(weights_only=True)``. A checkpoint is written into a hidden
temporary folder, flushed to disk, then renamed, and only then does ``latest`` point to it: a process killed
at any moment leaves the previous checkpoint intact and in use.
"""

import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..core.files import atomic_file, atomic_folder
from ..core.safety import check_tensors, read_json_object, regular_file
from ..errors import UserError
from ..families.base import DEFAULT_FAMILY, Model, get_family
from ..families.model_folder import net_from_state

RUN_CONFIG = "config.json"
CHECKPOINTS = "checkpoints"
POINTER = "latest"
STATE = "state.pt"
LOCK_NAME = ".lock"  # held by the one process that trains in a run folder (core.safety.FolderLock)
FORMAT = "ugatit-cli training run"
_STEP = re.compile(r"^step_(\d+)$")


def checkpoint_name(iteration: int) -> str:
    return f"step_{iteration:08d}"


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder, flush it to disk, then rename over ``path``."""
    with atomic_file(path, durable=True) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _cpu_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # contiguous() also turns channels_last weights back into the standard layout safetensors stores
    return {key: value.detach().cpu().contiguous() for key, value in state.items()}


def save_checkpoint(run_dir: Path, trainer_state: Mapping[str, Any], run_config: Mapping[str, Any],
                    extra: Mapping[str, Any], keep: int) -> Path:
    """Write ``trainer_state`` (``Trainer.state_dict()``) and ``extra`` (RNG states, ...) as checkpoint
    ``step_<iteration>``, point ``latest`` at it and delete all but the newest ``keep`` checkpoints."""
    folder = run_dir / CHECKPOINTS
    folder.mkdir(parents=True, exist_ok=True)
    iteration = int(trainer_state["iteration"])
    final = folder / checkpoint_name(iteration)
    # overwrite: the same iteration saved again (e.g. Ctrl-C right after a scheduled save)
    with atomic_folder(final, overwrite=True, durable=True) as tmp:
        for name, state in trainer_state["nets"].items():
            save_file(_cpu_state(state), str(tmp / f"{name}.safetensors"), metadata={"format": "pt"})
        for name, state in (trainer_state.get("ema") or {}).items():
            save_file(_cpu_state(state), str(tmp / f"ema_{name}.safetensors"), metadata={"format": "pt"})
        rest = {k: v for k, v in trainer_state.items() if k not in ("nets", "ema")}
        torch.save({**rest, "has_ema": trainer_state.get("ema") is not None, **extra}, tmp / STATE)
        (tmp / RUN_CONFIG).write_text(json.dumps({**run_config, "iteration": iteration}, indent=2, sort_keys=True))
    write_text_atomic(folder / POINTER, final.name + "\n")
    prune_checkpoints(run_dir, keep)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary folders of interrupted saves are not listed)."""
    folder = run_dir / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and _STEP.match(p.name) and (p / STATE).is_file()]
    return sorted(found, key=lambda p: int(_STEP.match(p.name).group(1)))


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints, and what interrupted saves and prunes left behind.

    Only the process holding the run folder's lock calls this (train/run.py), so no other process's save is
    in progress. Each old checkpoint is renamed to a hidden temporary first (one atomic step), then deleted:
    a kill mid-way leaves a temporary the next prune removes, never a half-deleted ``step_*`` folder. A
    ``step_*`` folder without its state.pt older than the newest complete checkpoint (what a kill during an
    older version's prune left) is removed too.
    """
    folder = run_dir / CHECKPOINTS
    for leftover in folder.glob(".step_*.tmp"):
        shutil.rmtree(leftover, ignore_errors=True)
    pointed = latest_checkpoint(run_dir)
    complete = list_checkpoints(run_dir)
    newest = int(_STEP.match(complete[-1].name).group(1)) if complete else -1
    broken = [p for p in folder.iterdir() if p.is_dir() and _STEP.match(p.name) and not (p / STATE).is_file()
              and int(_STEP.match(p.name).group(1)) < newest] if folder.is_dir() else []
    for old in [*broken, *complete[:-max(keep, 1)]]:
        if old == pointed:
            continue
        doomed = old.with_name(f".{old.name}.deleting.tmp")
        try:
            os.replace(old, doomed)
        except OSError:
            continue
        shutil.rmtree(doomed, ignore_errors=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint ``latest`` names; the newest complete one when the pointer is missing or stale."""
    folder = run_dir / CHECKPOINTS
    pointer = folder / POINTER
    if pointer.is_file():
        name = pointer.read_text(encoding="utf-8").strip()
        if _STEP.match(name) and (folder / name / STATE).is_file():
            return folder / name
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def read_run_config(path: Path) -> dict[str, Any]:
    """``config.json`` of a run folder or checkpoint; UserError when it is missing or not ours."""
    if not (path / RUN_CONFIG).exists():
        raise UserError(f"{path}: no {RUN_CONFIG}; not a ugatit-cli training run")
    data = read_json_object(path / RUN_CONFIG, "training run configuration")  # a regular file, an object
    if data.get("format") != FORMAT:
        raise UserError(f"{path / RUN_CONFIG}: not a ugatit-cli training run configuration")
    return data


def _load_net(path: Path) -> dict[str, torch.Tensor]:
    """One network's weights; a missing, non-regular, foreign or non-finite file is one UserError line."""
    if not path.exists():
        raise UserError(f"{path.parent}: checkpoint has no {path.name}")
    regular_file(path, "safetensors weights file")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable safetensors file ({exc})") from None
    return check_tensors(state, str(path), error=UserError)


def net_names(path: Path) -> list[str]:
    """The trainer networks a checkpoint holds (``<name>.safetensors``, EMA copies aside), sorted."""
    return sorted(p.stem for p in path.glob("*.safetensors") if not p.name.startswith("ema_"))


def load_checkpoint(path: Path, names: Sequence[str] | None = None) -> dict[str, Any]:
    """A checkpoint as ``FamilyTrainer.load_state_dict`` takes it, plus what ``save_checkpoint`` got as
    ``extra``. ``names``: the networks to read (default: every one it holds)."""
    try:
        state = torch.load(path / STATE, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: not a checkpoint (no {STATE})") from None
    except Exception as exc:  # any unpickling failure means the same thing to the user
        raise UserError(f"{path / STATE}: unreadable ({type(exc).__name__}: {exc})") from None
    state["nets"] = {name: _load_net(path / f"{name}.safetensors") for name in (names or net_names(path))}
    has_ema = state.pop("has_ema", False)
    state["ema"] = {p.stem[len("ema_"):]: _load_net(p) for p in sorted(path.glob("ema_*.safetensors"))} \
        if has_ema else None
    return state


def checkpoint_folder(path: Path) -> Path:
    """The checkpoint a path means: itself when it is one, else the run folder's newest."""
    if (path / STATE).is_file():
        return path
    newest = latest_checkpoint(path)
    if newest is None:
        raise UserError(f"{path}: the training run has no checkpoint yet")
    return newest


def is_run_or_checkpoint(path: Path) -> bool:
    """A training run folder or one of its checkpoints (recognised by the format tag in config.json)."""
    if not path.is_dir() or not (path / RUN_CONFIG).is_file():
        return False
    try:
        return json.loads((path / RUN_CONFIG).read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def run_family(config: Mapping[str, Any]):
    """The family of a run's config.json (runs of 0.1.0 name none: U-GAT-IT)."""
    return get_family(config.get("family") or DEFAULT_FAMILY)


def load_run_model(path: Path, directions: Sequence[str] | None = None) -> Model:
    """The networks ``directions`` need (the family's ``trained_nets``) from a run folder's newest checkpoint
    (or from one checkpoint), as a Model; the EMA copies when the run keeps them. ``card`` carries the
    training configuration for model cards."""
    folder = checkpoint_folder(path)
    config = read_run_config(folder)
    family = run_family(config)
    try:
        model_config = family.model_config.from_dict(config["model"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{folder / RUN_CONFIG}: invalid model configuration ({exc})") from None
    names = family.weight_files(model_config)
    keys = [k for k in family.keys_for(directions) if k in names]  # the networks this config has
    trained = family.trained_nets
    if directions is None:  # every network the checkpoint holds
        keys = [k for k in keys if any((folder / f"{prefix}{trained[k]}.safetensors").is_file()
                                       for prefix in ("", "ema_"))] or keys[:1]
    nets, ema = {}, False
    for key in keys:
        file = folder / f"ema_{trained[key]}.safetensors"  # the EMA copy where the run keeps one for this net
        if file.is_file():
            ema = True
        else:
            file = folder / f"{trained[key]}.safetensors"
        nets[key] = net_from_state(family, model_config, key, _load_net(file), origin=str(file))
    iteration = config.get("iteration", "?")
    source = (f"Trained with `ugatit train` (ugatit-cli) on `{config.get('data_name', 'unknown data')}` for "
              f"{iteration} iterations{' (EMA generators)' if ema else ''}; checkpoint `{folder.name}`.")
    loaded = f"checkpoint {folder.name} (iteration {iteration}) of {path}, {'EMA' if ema else 'raw'} networks"
    return Model(family, model_config, nets, card={"training": config.get("train", {}), "source": source,
                                                   "loaded": loaded})
