"""Writing files so that nothing half-written ever stands under the final name."""

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import ProcessingError, UserError
from .safety import check_replaceable, honour_umask, temp_prefix


@contextmanager
def atomic_file(path: str | os.PathLike, *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on success rename it over ``path``, else delete it.

    The temporary name is ``.NAME.ugatit-PID-RANDOM.tmp`` (``safety.remove_stale_temporaries`` recognises
    it), and the file gets the mode the umask gives ordinary files (mkstemp and safetensors make 0600).

    ``durable`` flushes the file to disk before the rename, so that even a power cut leaves either the old
    file or the complete new one (checkpoints and their pointer need that; outputs a re-run recreates don't).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        honour_umask(tmp)
        if durable:
            fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


#: The hidden file that marks a folder this tool wrote results into (``translate``, ``cluster``): a folder read
#: recursively never descends into such a subfolder, so earlier results are not read back as data.
OUTPUT_MARK = ".ugatit-output"


def mark_output_folder(folder: str | os.PathLike, command: str) -> bool:
    """Mark the existing ``folder`` as holding the results of ``command`` (see :data:`OUTPUT_MARK`), before they
    are written, when it holds nothing visible yet (a new folder) or is marked already. A folder that already
    holds other files (the user's own photos, given as ``--output``) is not marked: a later recursive read must
    still find them. Returns whether the folder is marked."""
    folder = Path(folder)
    mark = folder / OUTPUT_MARK
    if mark.is_file():
        return True
    with os.scandir(folder) as entries:
        if any(not entry.name.startswith(".") for entry in entries):
            return False
    try:
        with atomic_file(mark) as tmp:
            tmp.write_text(f"results of ugatit {command}: a folder read recursively leaves this one out; name it "
                           "to read it\n", encoding="utf-8")
    except OSError as exc:  # a read-only or someone else's folder: one line, not a traceback
        raise UserError(f"{folder}: cannot write in the output folder ({exc.strerror or exc})") from None
    return True


def walk_once(folder: str | os.PathLike, left_out: list[Path] | None = None
              ) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk(folder, followlinks=True)`` with hidden folders skipped, sorted, and every folder walked at
    most once: a link that loops (``ln -s . photos/self``) or two links to one folder add nothing.

    Subfolders holding this tool's results (:data:`OUTPUT_MARK`) are not walked either (``folder`` itself
    always is); each is appended to ``left_out`` when given.
    """
    visited: set[tuple[int, int]] = set()  # (device, inode) of each folder walked
    for root, dirs, files in os.walk(folder, followlinks=True):
        try:
            info = os.stat(root)
        except OSError:
            dirs[:] = []
            continue
        if (info.st_dev, info.st_ino) in visited:
            dirs[:] = []
            continue
        visited.add((info.st_dev, info.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        results = [d for d in dirs if (Path(root) / d / OUTPUT_MARK).is_file()]
        if left_out is not None:
            left_out += [Path(root) / d for d in results]
        dirs[:] = [d for d in dirs if d not in results]
        yield root, dirs, files


def results_folders(folder: str | os.PathLike) -> list[Path]:
    """The subfolders of ``folder`` that a recursive read leaves out: those holding this tool's results
    (:data:`OUTPUT_MARK`), outermost only, in walk order."""
    found: list[Path] = []
    for _ in walk_once(folder, found):
        pass
    return found


def fsync(path: str | os.PathLike) -> None:
    """Flush a file or folder to disk; filesystems that cannot fsync a folder are let be (renames stay atomic)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_folder(output_dir: str | os.PathLike, *, overwrite: bool = False, durable: bool = False,
                  protect: Iterable[str | os.PathLike] = (), own: Callable[[Path], bool] | None = None
                  ) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on success rename it to ``output_dir``.

    An interrupted write leaves no folder under the final name; ``overwrite`` replaces an existing one only
    after the new one is complete. A non-empty ``output_dir`` without ``overwrite`` is refused up front; with
    ``protect`` or ``own`` given, ``overwrite`` also refuses a folder that is or holds a protected path (the
    source), the current directory or home, or that holds an entry ``own`` does not recognise as this tool's
    (``safety.check_replaceable``). The old folder is moved into a fresh private temporary before it is
    deleted, so no sibling is ever touched. Every file and folder written gets the mode the umask gives.
    ``durable`` flushes every file and the folders to disk before and after the rename (checkpoints need
    that: a power cut leaves the old folder or the complete new one). A full or read-only disk is one
    ``ProcessingError`` line and changes nothing under ``output_dir``.
    """
    from safetensors import SafetensorError

    output_dir = Path(output_dir)
    guarded = bool(protect) or own is not None
    check_output_folder(output_dir, overwrite=overwrite, protect=protect, own=own, guarded=guarded)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(output_dir.name), suffix=".tmp", dir=output_dir.parent))
    try:
        yield tmp
        for path in [tmp, *tmp.rglob("*")]:  # mkdtemp and safetensors make them private: ordinary modes
            honour_umask(path)
        if durable:
            for child in tmp.iterdir():
                fsync(child)
            fsync(tmp)
        if output_dir.exists():
            if guarded:  # still ours, now?
                check_output_folder(output_dir, overwrite=overwrite, protect=protect, own=own, guarded=True)
            holder = Path(tempfile.mkdtemp(prefix=temp_prefix(output_dir.name), suffix=".tmp",
                                           dir=output_dir.parent))
            os.replace(output_dir, holder / "old")
            os.replace(tmp, output_dir)
            shutil.rmtree(holder, ignore_errors=True)
        else:
            os.replace(tmp, output_dir)
        if durable:
            fsync(output_dir.parent)
    except (OSError, SafetensorError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = getattr(exc, "strerror", None) or str(exc).replace("Error while serializing: ", "")
        raise ProcessingError(f"{output_dir}: cannot write ({reason}); nothing was changed there") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


#: Files ``ugatit export`` writes into a model folder, whatever the family: nothing else is ours there.
_OWN_MODEL_FILE = re.compile(r"^(config\.json|README\.md|[\w.-]+\.(safetensors|onnx|onnx\.data))$")


def is_own_model_file(path: Path) -> bool:
    """Whether ``path`` is a file ugatit-cli writes into a model folder (by name, as a plain file, not a link)."""
    return bool(_OWN_MODEL_FILE.match(path.name)) and path.is_file() and not path.is_symlink()


def check_output_folder(output_dir: Path, *, overwrite: bool, protect: Iterable[str | os.PathLike] = (),
                        own: Callable[[Path], bool] | None = None, guarded: bool = False) -> None:
    """Refuse an output that is a file, or a non-empty folder unless ``overwrite``; when ``guarded``, also a
    folder ``safety.check_replaceable`` refuses (the source, cwd, home, or entries ``own`` does not know)."""
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"{output_dir}: exists and is not a folder")
    if output_dir.is_dir() and any(output_dir.iterdir()):
        if not overwrite:
            raise UserError(f"{output_dir}: folder exists and is not empty (pass --overwrite to replace it)")
        if guarded:
            check_replaceable(output_dir, protect=protect, own=own)
    elif output_dir.exists() and guarded:
        check_replaceable(output_dir, protect=protect)
