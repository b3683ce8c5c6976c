"""Guards against hostile or unlucky inputs: what may be replaced, what may be read, what numbers to trust.

Every helper here answers one question before anything is allocated, read, replaced or deleted, and says
no with a :class:`~ugatit_cli.errors.UserError` whose one line names the file and the reason. torch is imported
only by the helpers that look at tensors (``ugatit --help`` imports no torch).
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ProcessingError, UserError

if TYPE_CHECKING:
    import torch

# --- file modes ---------------------------------------------------------------------------------------------


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back: the only portable way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: str | os.PathLike) -> None:
    """Give a file or folder made by ``tempfile.mkstemp``/``mkdtemp`` (0600/0700) the mode an ordinary
    ``open``/``mkdir`` would have given it: 0666 / 0777 minus the umask."""
    base = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, base & ~current_umask())


# --- what may be read -------------------------------------------------------------------------------------


def regular_file(path: str | os.PathLike, what: str = "file", error: type[UserError] = UserError) -> Path:
    """``path`` when it is a regular file (after following links); a device (``/dev/zero``), a FIFO or a
    socket would be read forever or block, so they are refused with one line."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a device, pipe or socket)"
        raise error(f"{path}: is {kind}; expected a {what}")
    return path


def read_json_object(path: str | os.PathLike, what: str = "configuration", max_bytes: int = 1 << 20
                     ) -> dict[str, Any]:
    """A small JSON file whose top level must be an object; anything else is one clear line."""
    path = regular_file(path, what)
    if path.stat().st_size > max_bytes:
        raise UserError(f"{path}: {path.stat().st_size} bytes is too large for a {what} file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable {what} ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a {what} must be a JSON object, not {type(data).__name__}")
    return data


# --- numbers read from files --------------------------------------------------------------------------------


def check_int(name: str, value: Any, low: int, high: int) -> int:
    """An integer (not a bool, not a string) in [low, high]; ValueError naming the setting otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def check_number(name: str, value: Any, low: float = -math.inf, high: float = math.inf, *,
                 low_open: bool = False) -> float:
    """A finite real number (not a bool) in [low, high] (``low_open``: (low, high])."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value > high or value < low or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be in {bracket}{low:g}, {high:g}], got {value:g}")
    return float(value)


# --- tensors read from files -------------------------------------------------------------------------------

#: Wrappers that prefix every state_dict key: DataParallel/DistributedDataParallel (``module.``) and
#: torch.compile (``_orig_mod.``). Used by every family's readers of foreign checkpoints.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def strip_wrapper_prefixes(state: Mapping[str, Any]) -> dict[str, Any]:
    """A state_dict saved from a wrapped module (DataParallel, DDP, torch.compile) with the wrappers' key
    prefixes removed; other state_dicts come back unchanged."""
    state = dict(state)
    changed = True
    while changed and state:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(isinstance(k, str) and k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def check_tensors(state: Any, origin: str, error: type[UserError] = ProcessingError) -> dict[str, torch.Tensor]:
    """A mapping of names to real tensors: each holds its own bytes (no stride-0 or overlapping views that
    claim more elements than the file stored) and only finite values. Checked before anything is built
    from the shapes."""
    import torch

    if not isinstance(state, Mapping):
        raise error(f"{origin}: expected a mapping of tensor names to tensors, found {type(state).__name__}")
    for key, tensor in state.items():
        if not isinstance(key, str) or not isinstance(tensor, torch.Tensor):
            raise error(f"{origin}: entry {key!r} is {type(tensor).__name__}, not a tensor")
        if tensor.numel() and tensor.untyped_storage().nbytes() < _span_bytes(tensor):
            raise error(f"{origin}: tensor {key} claims shape {list(tensor.shape)} but stores only "
                        f"{tensor.untyped_storage().nbytes()} bytes")
        if tensor.is_floating_point() and not _all_finite(tensor):
            raise error(f"{origin}: tensor {key} holds NaN or infinite values (a diverged or corrupted model)")
    return dict(state)


#: Elements checked at a time: ``torch.isfinite`` makes temporaries as large as its input (an ``abs`` copy and
#: two masks), which for a 1 GB weight raised the peak memory of loading a model by 1.6 GB.
FINITE_CHUNK = 1 << 22


def _all_finite(tensor: torch.Tensor) -> bool:
    import torch

    flat = tensor.reshape(-1)  # a view of a stored (contiguous) tensor
    return all(bool(torch.isfinite(part).all()) for part in flat.split(FINITE_CHUNK))


def _span_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor's elements occupy in its storage when none overlap."""
    return tensor.numel() * tensor.element_size()


def shape_mismatch(expected: Mapping[str, torch.Size], found: Mapping[str, Iterable[int]]) -> str | None:
    """The first difference between the shapes a network needs and the shapes a file holds, or None."""
    missing = sorted(set(expected) - set(found))
    if missing:
        return f"missing {missing[0]}"
    unexpected = sorted(set(found) - set(expected))
    if unexpected:
        return f"unexpected {unexpected[0]}"
    for key, shape in expected.items():
        if tuple(found[key]) != tuple(shape):
            return f"{key} has shape {list(found[key])}, the configuration needs {list(shape)}"
    return None


def meta_shapes(build) -> dict[str, torch.Size]:
    """The state_dict shapes of the module ``build()`` makes, built on the meta device: no memory is
    allocated, so a hostile configuration cannot exhaust it."""
    import torch

    with torch.device("meta"):
        module = build()
    return {k: v.shape for k, v in module.state_dict().items()}


# --- what may be replaced or deleted -----------------------------------------------------------------------


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or child.is_relative_to(parent)


def check_replaceable(folder: Path, *, protect: Iterable[str | os.PathLike] = (), own=None) -> None:
    """Refuse to replace ``folder`` unless everything in it is provably this tool's output.

    Never replaced: a folder that is or contains a protected path (the source being read), the current
    directory, the home folder or the filesystem root. ``own(path) -> bool`` says whether one entry of the
    folder is a file this tool writes there; any other entry makes the folder someone else's.
    """
    target = folder.resolve()
    guarded = [(Path(p).expanduser().resolve(), "the source") for p in protect]
    guarded += [(Path.cwd().resolve(), "the current directory"), (Path.home().resolve(), "your home folder")]
    for path, what in guarded:
        if _inside(path, target):
            raise UserError(f"{folder}: refusing to replace it: it {'is' if path == target else 'contains'} "
                            f"{what} ({path}); choose another --output")
    if target == Path(target.anchor):
        raise UserError(f"{folder}: refusing to replace the filesystem root")
    if own is None or not folder.is_dir():
        return
    foreign = sorted(p.name for p in folder.iterdir() if not own(p))
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise UserError(f"{folder}: refusing to replace it: it holds {foreign[0]!r}{more}, which ugatit-cli did "
                        "not write; remove it yourself or choose another --output")


# --- our temporary files -----------------------------------------------------------------------------------

#: Temporary names this tool gives files and folders it is writing: ``.NAME.ugatit-PID-RANDOM.tmp``. The
#: pid lets a later run prove that a leftover is its own and that its writer is gone.
TEMP_TAG = "ugatit"
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.ugatit-(?P<pid>\d+)-[A-Za-z0-9_]+\.tmp$")


def temp_prefix(name: str) -> str:
    return f".{name}.{TEMP_TAG}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(folder: Path) -> int:
    """Delete this tool's temporary files in ``folder`` whose writing process no longer exists (a run killed
    by a signal it could not catch). Returns how many were removed; other files are never touched."""
    import shutil

    removed = 0
    try:
        entries = list(folder.iterdir())
    except OSError:
        return 0
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if not match or _alive(int(match.group("pid"))):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed += 1
        except OSError:
            pass
    return removed


# --- one process per folder ---------------------------------------------------------------------------------


class FolderLock:
    """An exclusive advisory lock (``fcntl.flock``) on ``folder/NAME``, held until ``release()``.

    The lock file holds the owner's pid so that a refusal can name it; the kernel drops the lock when the
    process dies, whatever kills it, so a stale lock never blocks a later run.
    """

    def __init__(self, folder: Path, name: str, what: str):
        self.path = folder / name
        self._fd: int | None = None
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; runs are not protected from each other there
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~current_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                owner = os.read(fd, 32).decode("ascii", "replace").strip()
            finally:
                os.close(fd)
            by = f" (pid {owner})" if owner.isdigit() else ""
            raise UserError(f"{folder}: in use by another {what}{by}; wait for it to finish or stop it first") \
                from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
