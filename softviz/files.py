"""Files written whole or not at all: write to a temporary sibling, then rename over the target."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike):
    """Yield a temporary path next to `path`; when the block succeeds it replaces `path` in one rename.

    If the block fails (or the process dies), `path` keeps its old content and the temporary file is removed.

        with atomic_file("run/checkpoint.pt") as tmp:
            torch.save(state, tmp)
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"cannot write the file {path}: it is a folder; give a file name")
    make_folder(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:  # read-only or special file systems
        raise ValueError(f"cannot write the file {path}: {err.strerror or err}") from None
    os.close(fd)
    try:
        yield tmp
        # mkstemp makes the file private (0600); give it the mode a plain open() would: the old file's, or the umask's
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _umask() -> int:
    """The process's umask, read without setting it (os.umask sets it, which races with other threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def make_folder(path: str | os.PathLike) -> Path:
    """Create `path` and its parents, or ValueError naming the path and the file that is in the way."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), path)
        raise ValueError(f"cannot create the folder {path}: {blocker} is a file, so nothing can be created "
                         "under it; choose another path") from None
    except PermissionError:
        raise ValueError(f"cannot create the folder {path}: permission denied; choose a writable path") from None
    return path
