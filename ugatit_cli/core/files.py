"""Writing files so that nothing half-written ever stands under the final name."""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import UserError


@contextmanager
def atomic_file(path: str | os.PathLike, *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on success rename it over ``path``, else delete it.

    ``durable`` flushes the file to disk before the rename, so that even a power cut leaves either the old
    file or the complete new one (checkpoints and their pointer need that; outputs a re-run recreates don't).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if durable:
            fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
def atomic_folder(output_dir: str | os.PathLike, *, overwrite: bool = False,
                  durable: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on success rename it to ``output_dir``.

    An interrupted write leaves no folder under the final name; ``overwrite`` replaces an existing one only
    after the new one is complete. A non-empty ``output_dir`` without ``overwrite`` is refused up front.
    ``durable`` flushes every file and the folders to disk before and after the rename (checkpoints need
    that: a power cut leaves the old folder or the complete new one).
    """
    output_dir = Path(output_dir)
    check_output_folder(output_dir, overwrite=overwrite)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", suffix=".tmp", dir=output_dir.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the result should be an ordinary folder
        yield tmp
        if durable:
            for child in tmp.iterdir():
                fsync(child)
            fsync(tmp)
        if output_dir.exists():
            old = output_dir.with_name(f".{output_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(output_dir, old)
            os.replace(tmp, output_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, output_dir)
        if durable:
            fsync(output_dir.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output_folder(output_dir: Path, *, overwrite: bool) -> None:
    """Refuse an output that is a file, or a non-empty folder unless ``overwrite``."""
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"{output_dir}: exists and is not a folder")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise UserError(f"{output_dir}: folder exists and is not empty (pass --overwrite to replace it)")
