"""Writing files so that nothing half-written ever stands under the final name."""

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .safety import honour_umask, temp_prefix


@contextmanager
def atomic_file(path: str | os.PathLike, *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on success rename it over ``path``, else delete it.

    The temporary name is ``.NAME.ugatit-PID-RANDOM.tmp`` (``safety.remove_stale_temporaries`` recognises
    it), and the file gets the mode the umask gives ordinary files.

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
        honour_umask(tmp)  # mkstemp (and safetensors) make it 0600; the result should be an ordinary file
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
