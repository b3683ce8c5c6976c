"""``ugatit train``: a training run in a run folder, resumable exactly, on one device or many (torchrun).

``train()`` prepares everything that can fail on the user's side (data, run folder, settings) before it
creates a file, then loops: a batch pair from the data streams, one ``Trainer.step``, a JSONL log line, a
sample grid and a checkpoint now and then. Ctrl-C (SIGINT) or SIGTERM finishes the current iteration, saves a
checkpoint and returns. Under ``torchrun`` every rank trains its own shard with DistributedDataParallel;
rank 0 alone scans the data and writes files.
"""

import atexit
import json
import math
import os
import random
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .. import __version__
from ..devices import check_precision, select_device
from ..errors import UserError
from . import checkpoint as ckpt
from .config import TrainConfig
from .data import TrainingStreams, list_images, sample_images, scan_training_data, training_loader

# Settings a resumed run may change: they decide how long and how the run is watched, not what it computes
# (a longer --iterations with --decay moves the start of the learning-rate decay, which is announced).
RESUMABLE = frozenset({"iterations", "workers", "save_every", "keep_checkpoints", "sample_every", "log_every",
                       "compile"})
SAMPLE_COUNT = 5  # official: train_sample_num / test_sample_num
LOG_NAME = "log.jsonl"
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


def _overrides(config: TrainConfig | Mapping[str, Any] | None) -> dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, TrainConfig):
        return config.to_dict()
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise UserError(f"unknown training setting(s): {', '.join(unknown)}")
    return dict(config)


def resolve_config(config: TrainConfig | Mapping[str, Any] | None, saved: Mapping[str, Any] | None = None,
                   run_dir: Path | None = None) -> TrainConfig:
    """The settings of a run: ``config`` (a TrainConfig, or a mapping of the settings to change) over the
    defaults, or over ``saved`` when resuming, where only the ``RESUMABLE`` settings may differ."""
    overrides = _overrides(config)
    if saved is None:
        resolved = TrainConfig.from_dict({**TrainConfig().to_dict(), **overrides})
    else:
        differ = [f"{k} (run: {saved.get(k)!r}, now: {v!r})" for k, v in overrides.items()
                  if k not in RESUMABLE and saved.get(k) != v]
        if differ:
            raise UserError(f"{run_dir}: --resume with settings that differ from the run's: {'; '.join(differ)}. "
                            f"Resume without them, or start a new run with another --output")
        resolved = TrainConfig.from_dict({**TrainConfig().to_dict(), **saved, **overrides})
    _check(resolved)
    return resolved


def _check(config: TrainConfig) -> None:
    for name in ("iterations", "batch_size", "save_every", "sample_every", "log_every", "keep_checkpoints"):
        if getattr(config, name) < 1:
            raise UserError(f"{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}")
    if config.workers < 0:
        raise UserError(f"--workers must be >= 0, got {config.workers}")
    if config.seed < 0:
        raise UserError(f"--seed must be >= 0, got {config.seed}")
    try:
        config.model_config()
    except ValueError as exc:
        raise UserError(f"invalid network settings: {exc}") from None


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
    config: dict[str, Any]
    files: dict[str, list[Any]]  # per stream: absolute paths (str), or a Hub dataset's images
    test: dict[str, Any]  # per stream: a test folder (str), a list of a Hub dataset's images, or None
    checkpoint: str | None
    init_from: str | None


def _scan(data_dir, data_options: Mapping[str, Any]):
    """(training data, its root as recorded, its name for the default run folder): a local folder, or a Hub
    dataset (``hf://datasets/OWNER/NAME``) read by :mod:`ugatit_cli.hub_datasets`."""
    from ..hub_datasets import is_hub_dataset, parse_hub_dataset, scan_hub_dataset

    if is_hub_dataset(data_dir):
        spec = parse_hub_dataset(data_dir)
        data = scan_hub_dataset(spec, **data_options)
        return data, data.root, spec.repo_id.split("/")[1]
    if data_options:
        raise UserError(f"{', '.join(data_options)}: only for Hub datasets (hf://datasets/OWNER/NAME)")
    data = scan_training_data(data_dir)
    return data, str(data.root.resolve()), Path(data_dir).resolve().name


def _prepare(data_dir, config, output, resume: bool, init_from, device: torch.device,
             ranks: _Ranks, say, data_options: Mapping[str, Any] | None = None) -> _Plan:
    """Everything that can fail on the user's side, checked before a single file is written."""
    data, data_root, data_name = _scan(data_dir, data_options or {})
    run_dir = Path(output) if output is not None else Path("runs") / data_name
    if resume and init_from is not None:
        raise UserError("--resume and --init-from exclude each other: a resumed run continues its own weights")
    checkpoint = None
    if resume:
        if not run_dir.is_dir():
            raise UserError(f"{run_dir}: no such run folder to resume (drop --resume to start a new run)")
        saved = ckpt.read_run_config(run_dir)
        resolved = resolve_config(config, saved.get("train", {}), run_dir)
        if saved.get("world_size", 1) != ranks.world_size:
            say(f"[yellow]warning:[/] the run was started with {saved.get('world_size', 1)} process(es), now "
                f"{ranks.world_size}: the data order (and the total batch size) differ from an uninterrupted run")
        if resolved.decay and resolved.iterations != saved["train"]["iterations"]:
            say(f"note: --iterations changed from {saved['train']['iterations']} to {resolved.iterations}: "
                f"the learning rate decays over the new second half")
        recorded = _read_json(run_dir / DATA_NAME)
        if recorded and recorded.get("train") != data.relative():
            say("[yellow]warning:[/] the training images differ from the run's start: the data order changes")
        checkpoint = ckpt.latest_checkpoint(run_dir)
        if checkpoint is None:
            say(f"{run_dir}: no checkpoint yet; starting from iteration 0")
    else:
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            raise UserError(f"{run_dir}: already exists and is not empty; pass --resume to continue that run, "
                            f"or choose another --output")
        resolved = resolve_config(config)
        if init_from is not None:
            _check_init_source(Path(init_from))
    check_precision(resolved.precision, device)

    run_config = {"format": ckpt.FORMAT, "ugatit_cli": __version__, "train": resolved.to_dict(),
                  "model": resolved.model_config().to_dict(), "data_dir": data_root,
                  "data_name": data_name, "world_size": ranks.world_size}
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt.write_json_atomic(run_dir / ckpt.RUN_CONFIG, run_config)
    if not resume or not (run_dir / DATA_NAME).is_file():
        ckpt.write_json_atomic(run_dir / DATA_NAME, {"root": data_root, "train": data.relative(),
                                                     **({"options": dict(data_options)} if data_options else {})})
    return _Plan(run_dir, run_config,
                 {s: [p if hasattr(p, "open_rgb") else str(p) for p in files] for s, files in data.train.items()},
                 {s: p if isinstance(p, list) or p is None else str(p) for s, p in data.test.items()},
                 str(checkpoint) if checkpoint else None, str(init_from) if init_from is not None else None)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _check_init_source(path: Path) -> None:
    if not path.exists():
        raise UserError(f"{path}: --init-from: no such file or folder")
    if not (path.is_file() and path.suffix == ".pt") and not ckpt.is_run_or_checkpoint(path):
        raise UserError(f"{path}: --init-from takes an official U-GAT-IT checkpoint (*_params_*.pt) or a "
                        f"ugatit-cli run folder or checkpoint")


def _init_weights(trainer, path: Path) -> None:
    """Start from another run's newest checkpoint or an official checkpoint: all six networks, fresh optimisers."""
    if path.is_file():
        trainer.load_official(path)
        return
    folder = ckpt.checkpoint_folder(path)
    state = ckpt.load_checkpoint(folder)
    for name, net in trainer.nets.items():
        try:
            net.load_state_dict(state["nets"][name])
        except RuntimeError as exc:
            raise UserError(f"{folder}: {name} does not fit this run's network settings "
                            f"({str(exc).strip().splitlines()[-1].strip()})") from None
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

    def __init__(self, run_dir: Path, config: TrainConfig, start: int, enabled: bool, console):
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
                TimeRemainingColumn(), TextColumn("d_loss {task.fields[d_loss]}  g_loss {task.fields[g_loss]}"),
                console=console)
            self.task = self.progress.add_task("train", total=config.iterations, completed=start, speed="",
                                               d_loss="-", g_loss="-")
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
                    self.tensorboard.add_scalar(f"{'lr' if key == 'lr' else 'loss/' + key}", value, iteration)
        if self.progress is not None:
            self.progress.update(self.task, completed=iteration, speed=f"{self.speed or 0:.2f} it/s",
                                 d_loss=f"{losses['d_loss']:.4f}", g_loss=f"{losses['g_loss']:.4f}")
        elif self.plain and (now - self._printed >= self.PLAIN_EVERY_S or iteration == self.config.iterations):
            self._printed = now
            left = (self.config.iterations - iteration) / self.speed if self.speed else math.nan
            self.console.print(f"iteration {iteration}/{self.config.iterations}  {self.speed or 0:.2f} it/s  "
                               f"ETA {_duration(left)}  d_loss {losses['d_loss']:.4f}  g_loss {losses['g_loss']:.4f}",
                               highlight=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        if self.tensorboard is not None:
            self.tensorboard.close()
        self.log.close()


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-:--:--"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


# --- the loop -----------------------------------------------------------------------------------------------


def train(data_dir: str | os.PathLike, config: TrainConfig | Mapping[str, Any] | None = None, *,
          output: str | os.PathLike | None = None, resume: bool = False, init_from: str | os.PathLike | None = None,
          device: str = "auto", progress: bool = True, split: str | None = None,
          domain_columns: Sequence[str] = ()) -> RunSummary:
    """Train U-GAT-IT on ``data_dir`` (``trainA/ trainB/`` [``testA/ testB/``]) into the run folder ``output``
    (default ``runs/<data folder name>``).

    ``config`` is a TrainConfig or a mapping of the settings to change (from the defaults, or with
    ``resume=True`` from the run's own settings, of which only the ``RESUMABLE`` ones may change).
    ``init_from`` starts a new run from an official ``*_params_*.pt`` checkpoint or another run's newest
    checkpoint. Under torchrun every process calls this; the returned summary is the same on every rank.
    ``data_dir`` may also be a Hub dataset, ``hf://datasets/OWNER/NAME[@REVISION]``: ``split`` (default
    ``train``) and ``domain_columns`` (see :func:`ugatit_cli.hub_datasets.infer_mapping`) apply to it.
    """
    from rich.console import Console

    from .trainer import SAMPLE_ROWS, Trainer

    began = time.perf_counter()
    target, ranks = _device_and_ranks(device)
    console = Console(stderr=True)

    def say(message: str) -> None:
        if progress:
            console.print(message, highlight=False)

    plan = None
    if ranks.main:
        try:
            options = {k: v for k, v in (("split", split), ("domain_columns", tuple(domain_columns))) if v}
            plan = _prepare(data_dir, config, output, resume, init_from, target, ranks, say, options)
        except Exception as exc:
            _share(ranks, str(exc))  # the other ranks stop with the same message instead of waiting
            raise
    plan = _share(ranks, plan)
    if isinstance(plan, str):  # rank 0's error
        raise UserError(plan)
    try:
        return _run(plan, target, ranks, progress, console, say, began, Trainer, SAMPLE_ROWS)
    except UserError:
        if ranks.main and not resume:
            _remove_unstarted(plan.run_dir)
        raise


def _source(item: Any) -> Any:
    """A training image as the data streams take it: a Path for a file, the object itself otherwise."""
    return Path(item) if isinstance(item, str) else item


def _test_sources(test: Any) -> list[Any]:
    if test is None:
        return []
    return list(test) if isinstance(test, list) else list_images(Path(test))


def _remove_unstarted(run_dir: Path) -> None:
    """A new run that failed before its first iteration (e.g. --init-from weights that do not fit) leaves no
    folder behind that would block the corrected command."""
    if (run_dir / LOG_NAME).exists() or (run_dir / ckpt.CHECKPOINTS).exists():
        return
    for name in (ckpt.RUN_CONFIG, DATA_NAME):
        (run_dir / name).unlink(missing_ok=True)
    try:
        run_dir.rmdir()
    except OSError:  # something else is in it
        pass


def _run(plan: _Plan, device: torch.device, ranks: _Ranks, progress: bool, console, say, began: float,
         trainer_class, sample_rows) -> RunSummary:
    config = TrainConfig.from_dict(plan.config["train"])
    torch.manual_seed(config.seed)  # the networks' initial weights; DDP copies rank 0's to the others
    trainer = trainer_class(config, device, distributed=ranks.distributed)
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
    streams = TrainingStreams({s: [_source(p) for p in files] for s, files in plan.files.items()}, config.size,
                              config.batch_size, config.seed, ranks.rank, ranks.world_size)
    loader = training_loader(streams, start, max(start, config.iterations), config.workers,
                             pin_memory=device.type == "cuda")
    run_dir = plan.run_dir
    watch = samples = None
    if ranks.main:
        _trim_log(run_dir / LOG_NAME, start)
        # the same images every time, so that grids compare across iterations: the first training images,
        # then the first test images
        samples = {s: torch.cat([sample_images([_source(p) for p in plan.files[s]], config.size, SAMPLE_COUNT),
                                 sample_images(_test_sources(plan.test[s]), config.size, SAMPLE_COUNT)])
                   for s in ("A", "B")}
        watch = _Watch(run_dir, config, start, progress, console)
    if start >= config.iterations:
        say(f"{run_dir}: already trained for {start} of {config.iterations} iterations; "
            f"pass a larger --iterations to go on")

    def save() -> Path | None:
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
            for real_a, real_b in loader:
                losses = trainer.step(real_a, real_b)
                iteration = trainer.iteration
                if ranks.main:
                    watch.step(iteration, losses)
                    if iteration % config.sample_every == 0:
                        from .samples import write_samples

                        write_samples(run_dir / "samples", iteration, trainer.sample(samples["A"], samples["B"]),
                                      sample_rows)
                interrupted = _agree(stop["stop"], ranks, device)
                if iteration % config.save_every == 0 or iteration == config.iterations or interrupted:
                    save()
                    saved_at = iteration
                if interrupted:
                    break
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


def _agree(stop: bool, ranks: _Ranks, device: torch.device) -> bool:
    """Whether any rank was asked to stop: all ranks must leave the loop at the same iteration."""
    if not ranks.distributed:
        return stop
    flag = torch.tensor([1.0 if stop else 0.0], device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())

