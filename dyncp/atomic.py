"""Atomic file writes, the one way dyncp writes a result, log, checkpoint, audio or JSON file.

:func:`atomic_path` hands out a temporary file next to the target; when the ``with`` block ends
without an error the file is flushed to disk, given the permissions a plain ``open(path, "w")``
would give it (an existing target's mode, else ``0o666`` minus the umask), and renamed over the
target. A crash or Ctrl-C leaves the old file or the new one, never half of one, and no
temporary file. The permissions matter: ``tempfile.mkstemp`` creates files ``0600``, and a
report served by a web server then has dead audio players.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import OutputError


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc``); elsewhere by
    setting and restoring it."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync(path: str | Path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        if directory:       # some platforms cannot open a folder; the rename is still atomic
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """``with atomic_path("out/x.wav") as tmp: write(tmp)`` writes ``out/x.wav`` atomically.

    ``tmp`` is a hidden file in the target's folder with the target's suffix (writers that pick a
    format from the name still work). The folder is created when missing. With
    ``overwrite=False`` an existing target is never replaced, even when it appears while the
    file is being written (a hard link, not a rename, puts the file in place): OutputError.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                                    dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
    tmp = Path(name)
    try:
        yield tmp
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            mode = 0o666 & ~current_umask()
        os.chmod(tmp, mode)
        _fsync(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise OutputError(f"{path}: exists; not overwritten") from None
            except OSError:                 # no hard links here (FAT, some network shares)
                if path.exists():
                    raise OutputError(f"{path}: exists; not overwritten") from None
                os.replace(tmp, path)
            else:
                os.unlink(tmp)
        _fsync(path.parent, directory=True)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def check_writable(folder: str | Path) -> None:
    """Create ``folder`` when missing and write (then remove) an empty probe file in it:
    OutputError when either fails (a path component that is a file, no permission, a read-only
    file system). Lets a command refuse before it has spent time or written anything."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".dyncp-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"{folder}: output folder is not writable ({e.strerror or e})") from None


def write_bytes(path: str | Path, data: bytes, overwrite: bool = True) -> Path:
    with atomic_path(path, overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str, overwrite: bool = True) -> Path:
    """Write UTF-8 text atomically."""
    return write_bytes(path, text.encode("utf-8"), overwrite)


def write_json(path: str | Path, obj: Any, indent: int = 2) -> Path:
    """``json.dumps(obj, indent=indent)`` plus a final newline, written atomically."""
    return write_text(path, json.dumps(obj, indent=indent) + "\n")
