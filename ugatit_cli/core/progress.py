"""Rich progress for long work, on stderr so stdout stays clean for ``--json`` and pipes."""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

_ENABLED: ContextVar[bool] = ContextVar("ugatit_cli_progress", default=True)


@contextmanager
def progress_disabled() -> Iterator[None]:
    """Silence every progress display inside, also those of loaders that take no ``show_progress``."""
    token = _ENABLED.set(False)
    try:
        yield
    finally:
        _ENABLED.reset(token)


@contextmanager
def byte_progress(description: str, total: int, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A progress bar in bytes; yields ``advance(n_bytes)``. Disabled, it yields a no-op."""
    if not (enabled and _ENABLED.get()):
        yield lambda _: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


@contextmanager
def step_progress(total: int, enabled: bool = True) -> Iterator[Callable[[str], None]]:
    """Numbered step lines with elapsed time, on stderr; yields ``step(description)``.

    Lines, not a live bar: a step may show its own byte progress bar (a TF checkpoint being read), and Rich
    allows one live display at a time.
    """
    if not (enabled and _ENABLED.get()):
        yield lambda _: None
        return
    console = Console(stderr=True)
    start = time.perf_counter()
    done = 0

    def step(description: str) -> None:
        nonlocal done
        done += 1
        console.print(f"[dim]\\[{done}/{total} {time.perf_counter() - start:6.1f}s][/dim] {description}",
                      highlight=False)

    yield step


class _RateColumn(ProgressColumn):
    """Items per second, e.g. ``3.1 images/s``."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        # the rate of items done, not of items failed (a run where everything fails has no rate)
        done, elapsed = task.fields.get("done"), task.elapsed
        if done is not None:
            speed = done / elapsed if done and elapsed else None
        else:
            speed = task.finished_speed or task.speed
        return Text(f"{speed:.2f} {self.unit}/s" if speed else f"- {self.unit}/s", style="progress.data.speed")


@contextmanager
def count_progress(description: str, total: int, unit: str = "items",
                   enabled: bool = True) -> Iterator[Callable[..., None]]:
    """A progress bar over ``total`` items with the rate of those done; yields ``advance(done=True)``
    (thread-safe; ``done=False`` for an item that failed). Disabled: a no-op."""
    if not (enabled and _ENABLED.get()):
        yield lambda done=True: None
        return
    import threading

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _RateColumn(unit),
               TimeElapsedColumn(), TimeRemainingColumn())
    lock = threading.Lock()
    counts = {"done": 0}
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(description, total=total, done=0)

        def advance(done: bool = True) -> None:
            with lock:
                counts["done"] += bool(done)
                progress.update(task, advance=1, done=counts["done"])

        yield advance
