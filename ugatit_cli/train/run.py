"""``ugatit train``: a training run in a run folder, resumable exactly, on one device or many (torchrun).

The run is the same for every model family: ``train()`` prepares everything that can fail on the user's
side (data, run folder, settings) before it creates a file, then loops: a batch from the family's loader,
one ``FamilyTrainer.train_step``, a JSONL log line, sample grids and a checkpoint now and then.
Ctrl-C (SIGINT) or SIGTERM finishes the current iteration, saves a checkpoint and returns.
Under ``torchrun`` every rank trains its own shard with DistributedDataParallel;
rank 0 alone scans the data and writes files.
"""

import atexit
import json
import math
import os
import random
import re
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors import SafetensorError

from .. import __version__
from ..core.devices import check_precision, select_device
from ..core.images import save_image_atomic
from ..core.nets import load_strict
from ..core.safety import FolderLock, check_number
from ..errors import ProcessingError, UserError
from ..families.base import FORMAT_VERSION, Family, RunConfig, dataclass_from_dict, get_family
from ..store import run_folder as ckpt
from ..store.hub_datasets import hub_data_dir, is_hub_dataset, parse_hub_dataset

# Settings a resumed run may change: they decide how long and how the run is watched, not what it computes
# (a longer --iterations with --decay moves the start of the learning-rate decay, which is announced).
RESUMABLE = frozenset({"iterations", "workers", "save_every", "keep_checkpoints", "sample_every", "log_every",
                       "compile"})
LOG_NAME = "log.jsonl"
SAMPLES = "samples"
DATA_NAME = "data.json"


@dataclass
class RunSummary:
    """What a call of ``train`` did."""

    run_dir: Path
    iteration: int  # completed iterations
    iterations: int  # the run's length
    interrupted: bool
    checkpoint: Path | None
    seconds: float
    losses: dict[str, float] = field(default_factory=dict)  # the last iteration's loss terms
    trainer: Any = field(default=None, repr=False)  # the Trainer, for Python users who go on with the networks

    def to_dict(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "iteration": self.iteration, "iterations": self.iterations,
                "interrupted": self.interrupted, "checkpoint": str(self.checkpoint) if self.checkpoint else None,
                "seconds": round(self.seconds, 3), "losses": self.losses}


# --- settings -----------------------------------------------------------------------------------------------


def _settings_names(family: Family) -> tuple[set[str], set[str]]:
    return {f.name for f in fields(RunConfig)}, {f.name for f in fields(family.hyper_params)}


def _overrides(config: Any, family: Family) -> dict[str, Any]:
    if config is None:
        return {}
    if is_dataclass(config) and not isinstance(config, type):  # TrainConfig, or any flat dataclass of settings
        return asdict(config)
    run_names, hyper_names = _settings_names(family)
    unknown = sorted(set(config) - run_names - hyper_names)
    if unknown:
        raise UserError(f"unknown training setting(s) for --arch {family.name}: {', '.join(unknown)}")
    return dict(config)


def defaults(family: Family) -> dict[str, Any]:
    """The flat settings of a new run of ``family`` before any option: the shared run defaults with the
    family's changes, and the family's hyper-parameters."""
    return {**asdict(RunConfig()), **family.run_defaults, **asdict(family.hyper_params())}


def resolve_config(family: Family, config: Any, saved: Mapping[str, Any] | None = None,
                   run_dir: Path | None = None) -> tuple[RunConfig, Any]:
    """The settings of a run as (RunConfig, the family's hyper-parameters): ``config`` (a flat dataclass such
    as TrainConfig, or a mapping of the settings to change) over the defaults, or over ``saved`` when
    resuming, where only the ``RESUMABLE`` settings may differ."""
    overrides = _overrides(config, family)
    if saved is None:
        flat = {**defaults(family), **overrides}
    else:
        differ = [f"{k} (run: {saved.get(k)!r}, now: {v!r})" for k, v in overrides.items()
                  if k not in RESUMABLE | family.resumable_settings and saved.get(k) != v]
        if differ:
            raise UserError(f"{run_dir}: --resume with settings that differ from the run's: {'; '.join(differ)}. "
                            f"Resume without them, or start a new run with another --output")
        flat = {**defaults(family), **saved, **overrides}
    _check_numbers(flat)
    run, hyper = dataclass_from_dict(RunConfig, flat), dataclass_from_dict(family.hyper_params, flat)
    run.check()
    try:
        family.model_config_for(hyper)
    except ValueError as exc:
        raise UserError(f"invalid network settings: {exc}") from None
    return run, hyper


#: Real-valued settings of any family that must be >= 0 (learning rates, loss weights, weight decays,
#: temperatures), and those that must lie in [0, 1) (Adam/RMSprop betas, EMA decays, shares).
_NON_NEGATIVE = re.compile(r"^(lr(_\w+)?|\w+_weight|weight_decay(_\w+)?|w_\w+|lambda_\w+|temperature)$")
_UNIT = re.compile(r"^(beta\d|ema|ema_beta|p_\w+)$")


def _check_numbers(flat: Mapping[str, Any]) -> None:
    """Every real-valued setting finite (NaN passes any comparison) and in its range, for every family,
    before anything is written. UserError names the option."""
    try:
        for name, value in flat.items():
            if isinstance(value, bool) or not isinstance(value, float | int):
                continue
            option = f"--{name.replace('_', '-')}"
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{option} must be a finite number, got {value!r}")
            if _NON_NEGATIVE.match(name):
                check_number(option, value, 0.0)
            elif _UNIT.match(name):  # betas and decays in [0, 1), shares in [0, 1]
                check_number(option, value, 0.0, 1.0 if name.startswith("p_") else 0.999999999)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def flat_settings(run: RunConfig, hyper: Any) -> dict[str, Any]:
    """What a run folder's config.json records as ``train``."""
    return {**asdict(run), **asdict(hyper)}


# --- processes ----------------------------------------------------------------------------------------------


@dataclass
class _Ranks:
    """This process's place in a distributed run (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _device_and_ranks(spec: str) -> tuple[torch.device, _Ranks]:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), or one the
    caller initialised: NCCL with one GPU per local rank on CUDA, gloo on the CPU."""
    if dist.is_available() and dist.is_initialized():
        ranks = _Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
        ranks = _Ranks(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    else:
        return select_device(spec), _Ranks()
    device = select_device(spec)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise UserError(f"distributed training runs on CUDA (NCCL) or the CPU (gloo), not {device.type}")
    if not dist.is_initialized():
        # kept for the life of the process, so that a second train() call (e.g. a resume) joins the same group
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(dist.destroy_process_group)
    return device, ranks


def _share(ranks: _Ranks, value: Any) -> Any:
    """Rank 0's ``value`` on every rank."""
    if not ranks.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@contextmanager
def _stop_requests() -> Iterator[dict[str, bool]]:
    """SIGINT/SIGTERM set a flag the loop checks after each iteration; a second Ctrl-C stops at once."""
    flag = {"stop": False}
    previous = {}

    def request(signum, _frame):
        flag["stop"] = True
        signal.signal(signum, previous[signum])

    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, request)
    except ValueError:  # not the main thread: signals stay with the caller
        pass
    try:
        yield flag
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# --- the run folder -----------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """What rank 0 decided before training; shared with the other ranks."""

    run_dir: Path
    family: str
    config: dict[str, Any]
    data: Any  # the family's TrainingData (picklable: it travels to the other ranks)
    checkpoint: str | None
    init_from: str | None


def _family_of_run(run_dir: Path, arch: str | None) -> tuple[Family, dict[str, Any]]:
    saved = ckpt.read_run_config(run_dir)
    family = ckpt.run_family(saved)
    if arch is not None and arch != family.name:
        raise UserError(f"{run_dir}: the run trains --arch {family.name}, not {arch}; resume without --arch")
    return family, saved


def _prepare(data_dir, config, output, resume: bool, init_from, device: torch.device,
             ranks: _Ranks, say, arch: str | None, data_options: Mapping[str, Any] | None = None,
             progress: bool = True, hold: list | None = None) -> _Plan:
    """Everything that can fail on the user's side, checked before a single file is written (a Hub dataset's
    images are written into the ``datasets`` cache, not the run folder). The run folder's lock (one training
    process per run folder, whatever the family) is appended to ``hold``; the caller releases it when the
    run ends."""
    hold = [] if hold is None else hold
    data_options = data_options or {}
    hub = is_hub_dataset(data_dir)
    data_name = parse_hub_dataset(data_dir).name if hub else Path(data_dir).resolve().name
    run_dir = Path(output) if output is not None else Path("runs") / data_name
    if resume and init_from is not None:
        raise UserError("--resume and --init-from exclude each other: a resumed run continues its own weights")
    _check_not_inside_a_run(run_dir, resume)
    if resume and not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run folder to resume (drop --resume to start a new run)")
    if resume:
        hold.append(FolderLock(run_dir, ckpt.LOCK_NAME, "ugatit train"))  # before reading what it may change
    family, saved = _family_of_run(run_dir, arch) if resume else (get_family(arch), None)
    if hub:
        if resume and not data_options:  # the run's own mapping of the dataset's columns
            data_options = saved.get("data_options") or {}
        # the settings decide the layout (pix2pixHD --label-nc 0: photo pairs); checked again below
        _, hyper = resolve_config(family, config, saved.get("train", {}) if resume else None, run_dir)
        folder = hub_data_dir(data_dir, family, hyper=hyper, **data_options, progress=progress)
        data_dir = str(data_dir)
    elif data_options:
        flags = {"split": "--split", "domain_columns": "--domain-column"}
        raise UserError(f"{', '.join(flags.get(k, k) for k in data_options)}: only for Hub datasets "
                        f"(hf://datasets/OWNER/NAME)")
    else:
        folder = Path(data_dir)
        data_dir = str(folder.resolve())
        if folder.exists() and not folder.is_dir():
            raise UserError(f"{folder}: is a file, not a data folder (DATA_DIR is the folder that holds the "
                            f"training images; see ugatit train --help)")
        if folder.is_dir() and run_dir.resolve().is_relative_to(folder.resolve()):
            # the run's samples (and a resumed run's checkpoints) would be read back as training images
            default = "" if output is not None else " (the default --output runs/NAME, from the current folder)"
            raise UserError(f"{run_dir}: is inside the data folder {folder}{default}; the run's own images would "
                            f"become training images: choose an --output outside it")
    data = family.scan_data(folder)
    checkpoint = None
    recorded = None  # data.json of the run being resumed
    if resume:
        run, hyper = resolve_config(family, config, saved.get("train", {}), run_dir)
        if saved.get("world_size", 1) != ranks.world_size:
            say(f"[yellow]warning:[/] the run was started with {saved.get('world_size', 1)} process(es), now "
                f"{ranks.world_size}: the data order (and the total batch size) differ from an uninterrupted run")
        started = saved["train"].get("iterations", run.iterations)
        # phases that derive from the length (runs of older versions did not record them): those of the run's
        # length when it started, so that a resume with another --iterations keeps the phases that have passed
        hyper = _with_schedule(family, replace(run, iterations=started), hyper)
        recorded = _read_json(run_dir / DATA_NAME)
        if recorded and recorded.get("root") != str(data.root.resolve()):
            say(f"[yellow]warning:[/] DATA_DIR {data.root.resolve()} is not the run's, {recorded.get('root')}: "
                f"config.json and data.json now record the new one (data.json lists the earlier ones)")
        if recorded and recorded.get("train") != data.relative():
            say("[yellow]warning:[/] the training images differ from the run's start: the data order changes")
        checkpoint = ckpt.latest_checkpoint(run_dir)
        done = int(checkpoint.name.removeprefix("step_")) if checkpoint is not None else 0
        if done > run.iterations:
            raise UserError(f"{run_dir}: already at iteration {done} of --iterations {run.iterations}; nothing to "
                            f"do (pass --iterations above {done} to train on)")
        _check_settings(family, run, hyper, run_dir)
        if run.iterations != started:  # said once the new length is known to work
            note = family.schedule_note(run, hyper)
            say(f"note: --iterations changed from {started} to {run.iterations}{f': {note}' if note else ''}")
        if checkpoint is None:
            say(f"{run_dir}: no checkpoint yet; starting from iteration 0")
    else:
        if run_dir.exists() and (not run_dir.is_dir() or _has_entries(run_dir)):
            raise UserError(f"{run_dir}: already exists and is not empty; pass --resume to continue that run, "
                            f"or choose another --output")
        run, hyper = resolve_config(family, config)
        hyper = _with_schedule(family, run, hyper)
        _check_settings(family, run, hyper)
        if init_from is not None:
            _check_init_source(family, Path(init_from))
    family.check_data(data, hyper)
    check_precision(run.precision, device)
    if not resume:
        run_dir.mkdir(parents=True, exist_ok=True)
        hold.append(FolderLock(run_dir, ckpt.LOCK_NAME, "ugatit train"))
        if _has_entries(run_dir):  # another new run got there first
            raise UserError(f"{run_dir}: another run started in this folder; choose another --output")

    run_config = {"format": ckpt.FORMAT, "family": family.name, "format_version": FORMAT_VERSION,
                  "ugatit_cli": __version__, "train": flat_settings(run, hyper),
                  "model": family.model_config_for(hyper).to_dict(), "data_dir": data_dir,
                  "data_name": data_name, "world_size": ranks.world_size,
                  **({"data_options": dict(data_options)} if data_options else {})}
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt.write_json_atomic(run_dir / ckpt.RUN_CONFIG, run_config)
    # data.json: the images the run trains on now, like config.json's data_dir; a resume on other data keeps
    # what the run trained on before under "earlier" (root and image count)
    record = {"root": str(data.root.resolve()), "train": data.relative()}
    if recorded and {k: recorded.get(k) for k in record} != record:
        before = {"root": recorded.get("root"), "images": _count(recorded.get("train"))}
        record["earlier"] = [*recorded.get("earlier", []), before]
    elif recorded:
        record = recorded
    if record != recorded:
        ckpt.write_json_atomic(run_dir / DATA_NAME, record)
    return _Plan(run_dir, family.name, run_config, data, str(checkpoint) if checkpoint else None,
                 str(init_from) if init_from is not None else None)


def _count(train: Any) -> int | None:
    """How many images a data.json ``train`` record lists (a list, or a mapping of streams to lists)."""
    if isinstance(train, list):
        return len(train)
    if isinstance(train, dict):
        return sum(len(v) for v in train.values() if isinstance(v, list))
    return None


def _with_schedule(family: Family, run: RunConfig, hyper: Any) -> Any:
    """``hyper`` with the settings left at None that derive from the length of ``run`` resolved (recorded in
    config.json, so that a resume with another --iterations keeps them)."""
    resolved = {k: v for k, v in family.resolved_schedule(run, hyper).items() if getattr(hyper, k) is None}
    return replace(hyper, **resolved) if resolved else hyper


def _check_settings(family: Family, run: RunConfig, hyper: Any, resumed: Path | None = None) -> None:
    """UserError for settings the family cannot train with (``Family.check_settings``; schedule resolved),
    naming the run folder ``resumed``."""
    try:
        family.check_settings(run, hyper, resumed is not None)
    except ValueError as exc:
        raise UserError(f"{resumed}: {exc}" if resumed is not None else f"invalid settings: {exc}") from None


def _has_entries(run_dir: Path) -> bool:
    """Whether a folder holds anything but our lock file."""
    return any(p.name != ckpt.LOCK_NAME for p in run_dir.iterdir())


def _check_not_inside_a_run(run_dir: Path, resume: bool) -> None:
    """A run folder is never a checkpoint, nor inside another run (its checkpoints would be rewritten)."""
    if (run_dir / ckpt.STATE).is_file():
        raise UserError(f"{run_dir}: is a checkpoint of a run, not a run folder; "
                        f"{'resume the run that holds it' if resume else 'choose another --output'}")
    for parent in run_dir.resolve().parents:
        if ckpt.is_run_or_checkpoint(parent):
            raise UserError(f"{run_dir}: is inside the training run {parent}; "
                            f"{'resume that run' if resume else 'choose an --output outside it'}")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _check_init_source(family: Family, path: Path) -> None:
    if not path.exists():
        raise UserError(f"{path}: --init-from: no such file or folder")
    if not family.can_init_from(path) and not ckpt.is_run_or_checkpoint(path):
        raise UserError(f"{path}: --init-from takes an official {family.title} checkpoint or a ugatit-cli run "
                        f"folder or checkpoint")


def _init_weights(trainer, path: Path) -> None:
    """Start from another run's newest checkpoint or an official checkpoint: every network, fresh optimisers."""
    if path.is_file():
        trainer.load_official(path)
        return
    folder = ckpt.checkpoint_folder(path)
    state = ckpt.load_checkpoint(folder, list(trainer.nets))
    for name, net in trainer.nets.items():
        load_strict(net, state["nets"][name], str(folder), name, verb="does not fit",
                    hint="this run's network settings")
    for name, ema in (trainer.ema or {}).items():
        ema.load_state_dict(trainer.nets[name].state_dict())


def _trim_log(path: Path, iteration: int) -> None:
    """Drop log lines past the checkpoint a run resumes from (a killed run had logged iterations it loses)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["iteration"] <= iteration:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a kill
    ckpt.write_text_atomic(path, "".join(f"{line}\n" for line in kept))


class _Watch:
    """Rank 0's view of the run: Rich progress on stderr (a plain line every half minute when stderr is a log
    file rather than a terminal), ``log.jsonl``, TensorBoard when it is installed."""

    PLAIN_EVERY_S = 30.0

    def __init__(self, run_dir: Path, config: RunConfig, start: int, enabled: bool, console):
        self.config, self.console = config, console
        self.log = (run_dir / LOG_NAME).open("a", encoding="utf-8")
        began = time.perf_counter()
        self.speed: float | None = None
        self.plain = enabled and not console.is_terminal
        self._printed = began
        self.tensorboard = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            pass
        else:
            self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start or None)
        self.progress = None
        if enabled and not self.plain:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[speed]}"),
                TimeRemainingColumn(), TextColumn("{task.fields[losses]}"), console=console)
            self.task = self.progress.add_task("train", total=config.iterations, completed=start, speed="",
                                               losses="")
            self.progress.start()
        self._last = (start, began)

    def step(self, iteration: int, losses: Mapping[str, float]) -> None:
        now = time.perf_counter()
        done, then = self._last
        if now > then:
            rate = (iteration - done) / (now - then)
            self.speed = rate if self.speed is None else 0.9 * self.speed + 0.1 * rate
        self._last = (iteration, now)
        if iteration % self.config.log_every == 0 or iteration == self.config.iterations:
            record = {"iteration": iteration, "time": round(time.time(), 3),
                      "it_per_s": round(self.speed, 4) if self.speed else None, **losses}
            self.log.write(json.dumps(record) + "\n")
            self.log.flush()
            if self.tensorboard is not None:
                for key, value in losses.items():
                    if not isinstance(value, (int, float)):  # e.g. a list of cluster sizes: log.jsonl only
                        continue
                    self.tensorboard.add_scalar(f"{'lr' if key == 'lr' else 'loss/' + key}", value, iteration)
        if self.progress is not None:
            self.progress.update(self.task, completed=iteration, speed=f"{self.speed or 0:.2f} it/s",
                                 losses=_headline(losses))
        elif self.plain and (now - self._printed >= self.PLAIN_EVERY_S or iteration == self.config.iterations):
            self._printed = now
            left = (self.config.iterations - iteration) / self.speed if self.speed else math.nan
            self.console.print(f"iteration {iteration}/{self.config.iterations}  {self.speed or 0:.2f} it/s  "
                               f"ETA {_duration(left)}  {_headline(losses)}", highlight=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        if self.tensorboard is not None:
            self.tensorboard.close()
        self.log.close()


def _headline(losses: Mapping[str, float]) -> str:
    """The first two loss terms (a family puts its total losses first), as the progress line shows them."""
    return "  ".join(f"{key} {value:.4f}" for key, value in list(losses.items())[:2])


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-:--:--"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


# --- the loop -----------------------------------------------------------------------------------------------


def train(data_dir: str | os.PathLike, config: Any = None, *, arch: str | None = None,
          output: str | os.PathLike | None = None, resume: bool = False, init_from: str | os.PathLike | None = None,
          device: str = "auto", progress: bool = True, split: str | None = None,
          domain_columns: Sequence[str] = ()) -> RunSummary:
    """Train a model of the family ``arch`` (default U-GAT-IT; a resumed run keeps its own) on ``data_dir``
    (the family's ``data_layout``) into the run folder ``output`` (default ``runs/<data folder name>``).

    ``data_dir`` may also be a Hub dataset, ``hf://datasets/OWNER/NAME[@REVISION]``, read with the
    ``datasets`` library (:mod:`ugatit_cli.store.hub_datasets`): ``split`` (default ``train``) and
    ``domain_columns`` (the ``--domain-column`` values; by default inferred from the column names) say what
    to train on; a resumed run reuses its own unless given.

    ``config`` is a flat dataclass of settings (U-GAT-IT: a TrainConfig) or a mapping of the settings to
    change: RunConfig's and the family's hyper-parameters (from the defaults, or with ``resume=True`` from
    the run's own settings, of which only the ``RESUMABLE`` ones may change). ``init_from`` starts a new run
    from an official checkpoint of the family or another run's newest checkpoint. Under torchrun every
    process calls this; the returned summary is the same on every rank.
    """
    from rich.console import Console

    began = time.perf_counter()
    target, ranks = _device_and_ranks(device)
    console = Console(stderr=True)

    def say(message: str) -> None:
        if progress:
            console.print(message, highlight=False)

    plan = None
    held: list[FolderLock] = []
    try:
        if ranks.main:
            try:
                options = {k: v for k, v in (("split", split), ("domain_columns", list(domain_columns))) if v}
                plan = _prepare(data_dir, config, output, resume, init_from, target, ranks, say, arch, options,
                                progress, held)
            except BaseException as exc:
                _share(ranks, str(exc))  # the other ranks stop with the same message instead of waiting
                if held and not resume:  # our lock file, and the folder if that leaves it empty
                    _remove_unstarted(held[0].path.parent)
                raise
        plan = _share(ranks, plan)
        if isinstance(plan, str):  # rank 0's error
            raise UserError(plan)
        try:
            return _run(plan, target, ranks, progress, console, say, began)
        except BaseException:  # whatever stopped a new run before its first checkpoint, it leaves no folder
            if ranks.main and not resume:
                _remove_unstarted(plan.run_dir)
            raise
    finally:
        for lock in held:
            lock.release()


def _remove_unstarted(run_dir: Path) -> None:
    """A new run that failed before its first checkpoint (bad settings, --init-from weights that do not fit,
    a divergence) leaves no folder behind that would block the corrected command. Only the files this run
    writes are removed, and the folder only when that leaves it empty."""
    import shutil

    if ckpt.list_checkpoints(run_dir):
        return
    for name in (ckpt.RUN_CONFIG, DATA_NAME, LOG_NAME, ckpt.LOCK_NAME):
        (run_dir / name).unlink(missing_ok=True)
    for name in (SAMPLES, "tensorboard", ckpt.CHECKPOINTS):
        shutil.rmtree(run_dir / name, ignore_errors=True)
    try:
        run_dir.rmdir()
    except OSError:  # something else is in it
        pass


def _run(plan: _Plan, device: torch.device, ranks: _Ranks, progress: bool, console, say,
         began: float) -> RunSummary:
    family = get_family(plan.family)
    config, hyper = resolve_config(family, plan.config["train"])
    torch.manual_seed(config.seed)  # the networks' initial weights; DDP copies rank 0's to the others
    trainer = family.trainer(config, hyper, device, ranks.distributed)
    family.attach_data(trainer, plan.data, hyper)
    restored = False
    if plan.checkpoint is not None:
        state = ckpt.load_checkpoint(Path(plan.checkpoint))
        trainer.load_state_dict(state, source=plan.checkpoint)
        rng = state.get("rng") or []
        if len(rng) == ranks.world_size:
            _set_rng_state(rng[ranks.rank], device)
            restored = True
        say(f"resuming {plan.run_dir} from {Path(plan.checkpoint).name} (iteration {trainer.iteration})")
    elif plan.init_from is not None:
        _init_weights(trainer, Path(plan.init_from))
        say(f"initial weights from {plan.init_from}")
    if not restored:
        torch.manual_seed(config.seed + ranks.rank)
        random.seed(config.seed + ranks.rank)

    start = trainer.iteration
    loader = family.loader(plan.data, config, hyper, start, max(start, config.iterations), ranks.rank,
                           ranks.world_size, device.type == "cuda")
    run_dir = plan.run_dir
    watch = samples = None
    if ranks.main:
        _trim_log(run_dir / LOG_NAME, start)
        samples = family.sample_batch(plan.data, hyper)
        watch = _Watch(run_dir, config, start, progress, console)
    if start >= config.iterations:
        say(f"{run_dir}: already trained for {start} of {config.iterations} iterations; "
            f"pass a larger --iterations to go on")

    def diverged(iteration: int, what: str) -> ProcessingError:
        newest = ckpt.latest_checkpoint(run_dir) if ranks.main else None
        kept = (f"the last finite checkpoint, {newest.name}, is kept" if newest
                else "no checkpoint had been written")
        lr = {k: v for k, v in plan.config["train"].items() if k.startswith("lr")}
        now = ", ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in lr.items())
        return ProcessingError(f"{run_dir}: training diverged at iteration {iteration} ({what}); stopped, {kept}. "
                               f"Try a lower learning rate{f' (now {now})' if now else ''}")

    def save() -> Path | None:
        # never a checkpoint with NaN/inf weights: it would rotate out the last good one (--keep)
        bad_net = _nonfinite_network(trainer)
        if _agree(bad_net is not None, ranks, device):
            raise diverged(trainer.iteration, f"{bad_net or 'a network'} has NaN or infinite weights")
        # every rank's RNG state goes into rank 0's checkpoint, so each rank resumes its own
        rng = [_rng_state(device)]
        if ranks.distributed:
            rng = [None] * ranks.world_size
            dist.all_gather_object(rng, _rng_state(device))
        if not ranks.main:
            return None
        return ckpt.save_checkpoint(run_dir, trainer.state_dict(), plan.config,
                                    {"rng": rng, "world_size": ranks.world_size}, config.keep_checkpoints)

    losses: dict[str, float] = {}
    saved_at = None
    interrupted = False
    try:
        with _stop_requests() as stop:
            for batch in loader:
                losses = trainer.train_step(batch)
                iteration = trainer.iteration
                bad = [f"{k} {v}" for k, v in losses.items()
                       if isinstance(v, (int, float)) and not math.isfinite(v)]  # lists (cluster sizes) aside
                if _agree(bool(bad), ranks, device):
                    more = f" and {len(bad) - 2} more" if len(bad) > 2 else ""
                    raise diverged(iteration, ", ".join(bad[:2]) + more if bad else "another process's losses "
                                   "are not finite")
                if ranks.main:
                    watch.step(iteration, losses)
                    if iteration % config.sample_every == 0 and samples is not None:
                        write_samples(run_dir / SAMPLES, iteration, trainer.sample_grids(samples))
                interrupted = _agree(stop["stop"], ranks, device)
                if iteration == config.iterations:
                    note = family.finish_training(trainer, plan.data, config, hyper, device, ranks.rank,
                                                  ranks.world_size)
                    if note:
                        say(note)
                if iteration % config.save_every == 0 or iteration == config.iterations or interrupted:
                    save()
                    saved_at = iteration
                if interrupted:
                    break
    except (OSError, SafetensorError, ProcessingError) as exc:  # a full or read-only disk: checkpoint, samples, log
        if isinstance(exc, ProcessingError) and "cannot write" not in str(exc):
            raise
        newest = ckpt.latest_checkpoint(run_dir) if ranks.main else None
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        kept = (f"the last checkpoint, {newest.name}, is intact; free some space and continue with --resume"
                if newest else "no checkpoint had been written")
        reason = getattr(exc, "strerror", None) or str(exc).replace("Error while serializing: ", "")
        raise ProcessingError(f"{run_dir}: cannot write{where} ({reason}); stopped, {kept}") from None
    finally:
        if watch is not None:
            watch.close()
        del loader  # stops the worker processes
    newest = ckpt.latest_checkpoint(run_dir) if ranks.main else None
    if ranks.main and saved_at is not None and interrupted:
        say(f"interrupted at iteration {trainer.iteration}; checkpoint saved to {newest}; "
            f"continue with --resume")
    return RunSummary(run_dir, trainer.iteration, config.iterations, interrupted, newest,
                      time.perf_counter() - began, losses, trainer)


def write_samples(folder: Path, iteration: int, grids: Mapping[str, Any]) -> list[Path]:
    """Write each grid as ``<name>_<iteration>.png`` atomically; returns their paths."""
    written = []
    for name, grid in grids.items():
        path = folder / f"{name}_{iteration:08d}.png"
        save_image_atomic(grid, path)
        written.append(path)
    return written


def _nonfinite_network(trainer) -> str | None:
    """The name of the first network (or EMA copy) of any family's trainer holding a NaN or infinite
    weight, or None."""
    nets = {**trainer.nets, **{f"ema_{k}": v for k, v in (getattr(trainer, "ema", None) or {}).items()}}
    for name, net in nets.items():
        for tensor in net.state_dict().values():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                return name
    return None


def _agree(stop: bool, ranks: _Ranks, device: torch.device) -> bool:
    """Whether any rank was asked to stop: all ranks must leave the loop at the same iteration."""
    if not ranks.distributed:
        return stop
    flag = torch.tensor([1.0 if stop else 0.0], device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())

