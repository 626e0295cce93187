"""Files lowcarb writes: always to a temporary name next to the target, then renamed over it.

A full disk, a killed process or a read-only folder must never leave a half-written report, an
empty `metrics.json` or a stray `.tmp` file behind: readers see the old file or the new one,
nothing in between. Every OSError comes out as one `PathError` that names the path and says what
to do ("No space left on device: free some space or choose another --out").

    write_text(folder / "report.html", html)
    write_json(folder / "metrics.json", run)
    with replace_folder(out / "model") as tmp:      # a folder written as a whole (a model)
        model.save_pretrained(tmp)
    check_writable_folder(out, "--out")             # before any work starts
    with path_errors(path, "read"):                 # any other OSError -> PathError naming path
        ...

This module imports nothing of lowcarb but `lowcarb.errors`, so every package may use it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lowcarb.errors import PathError

__all__ = [
    "TEMPORARY_PREFIX",
    "check_writable_folder",
    "finite_or_none",
    "os_error_of",
    "os_error_message",
    "path_errors",
    "replace_file",
    "replace_folder",
    "temporary_name",
    "write_bytes",
    "write_json",
    "write_text",
]

# What to do about the usual errors; the OS's own text says what happened.
_ADVICE = {
    errno.ENOSPC: "free some space or write somewhere else",
    errno.EDQUOT: "free some space or write somewhere else",
    errno.EFBIG: "the file is larger than this process may write (ulimit -f); write somewhere else",
    errno.EROFS: "the file system is read-only; choose another folder",
    errno.EACCES: "you have no permission there; choose another folder or fix its permissions",
    errno.EPERM: "you have no permission there; choose another folder or fix its permissions",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
    errno.EISDIR: "it is a folder; give a file name",
    errno.EEXIST: "something is already there; choose another path",
    errno.ENAMETOOLONG: "the name is too long; choose a shorter path",
    errno.ENOENT: "it does not exist; check the path",
}


def os_error_message(exc: OSError, path: str | Path, action: str = "write") -> str:
    """One line: `cannot write PATH: No space left on device; free some space or ...`."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    advice = _ADVICE.get(exc.errno or 0)
    return f"cannot {action} {path}: {reason}" + (f"; {advice}" if advice else "")


# How Rust's I/O errors read once a library (safetensors, tokenizers) passes them on as its own
# exception type: "I/O error: No space left on device (os error 28)".
_RUST_IO_ERROR = re.compile(r"\(os error (\d+)\)")


def os_error_of(exc: BaseException) -> OSError | None:
    """The operating-system error behind `exc`: itself, one in its cause chain, or the errno a
    native library wrote into its message. None when it is not an I/O error."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        found = _RUST_IO_ERROR.search(str(seen))
        if found:
            code = int(found.group(1))
            return OSError(code, os.strerror(code))
        seen = seen.__cause__ or seen.__context__
    return None


@contextlib.contextmanager
def path_errors(path: str | Path, action: str = "write") -> Iterator[None]:
    """Turn an OSError raised inside the block (or a native library's I/O error that carries an
    errno) into a PathError naming `path` (one line)."""
    try:
        yield
    except PathError:
        raise
    except Exception as exc:
        error = os_error_of(exc)
        if error is None:
            raise
        raise PathError(os_error_message(error, path, action)) from exc


TEMPORARY_PREFIX = ".tmp-"


def temporary_name(path: Path) -> Path:
    """A hidden, unique sibling of `path` (same folder, so the rename is atomic), ending like
    `path` (writers such as matplotlib choose the format by the suffix)."""
    return path.with_name(f"{TEMPORARY_PREFIX}{secrets.token_hex(4)}-{path.name}")


def _fsync_folder(folder: Path) -> None:
    # The rename is durable only once the folder's entry is on disk; some systems cannot do it.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically; the folder must exist. Returns `path`."""
    path = Path(path)
    tmp = temporary_name(path)
    with path_errors(path):
        # O_EXCL: never follow or reuse someone else's file; 0o666 lets the umask decide the mode.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
    _fsync_folder(path.parent)
    return path


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically (see `write_bytes`)."""
    return write_bytes(path, text.encode(encoding))


def _reject_non_finite(value: Any, where: str = "") -> None:
    """JSON has no Infinity or NaN; Python would write them anyway and other readers choke."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where or 'value'} is {value!r}; JSON has no infinities or NaN")
    if isinstance(value, dict):
        for key, item in value.items():
            _reject_non_finite(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _reject_non_finite(item, f"{where}[{index}]")


def finite_or_none(value: Any) -> Any:
    """A copy of `value` with every infinite or NaN float replaced by None (JSON null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    return value


def write_json(
    path: str | Path, payload: Any, *, indent: int | None = 2, non_finite: str = "error"
) -> Path:
    """Write `payload` as standard JSON atomically.

    JSON has no Infinity or NaN (Python would write them anyway, and other readers choke):
    `non_finite="error"` raises a ValueError naming the field, `"null"` writes them as null.
    Values JSON cannot hold (paths, dates) are written as their `str()`.
    """
    if non_finite == "null":
        payload = finite_or_none(payload)
    elif non_finite == "error":
        _reject_non_finite(payload)
    else:
        raise ValueError(f"non_finite must be 'error' or 'null', got {non_finite!r}")
    text = json.dumps(payload, indent=indent, default=str, allow_nan=False)
    return write_text(path, text + "\n")


@contextlib.contextmanager
def replace_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file name next to `path`; when the block ends cleanly, it becomes `path`.

    For writers that take a file name (safetensors, matplotlib, onnx): they write the temporary
    name, and a failure deletes it, leaving any previous `path` as it was.
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        with path_errors(path):
            yield tmp
            os.replace(tmp, path)
        _fsync_folder(path.parent)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


@contextlib.contextmanager
def replace_folder(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder next to `path`; when the block ends cleanly, it becomes `path`.

    An existing folder at `path` is replaced only then (moved aside, the new one renamed in, the
    old one deleted), so a failed save keeps the previous model and never leaves half of one.
    """
    path = Path(path)
    tmp = temporary_name(path)
    with path_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    try:
        with path_errors(path):
            yield tmp
            if path.exists():
                old = temporary_name(path)
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        _fsync_folder(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def check_writable_folder(path: str | Path, what: str = "output folder") -> Path:
    """Check before any work starts that files can be written in `path` (made if missing).

    Creates the folder (a run would anyway) and writes and removes a probe file, which catches
    read-only mounts and permissions that `os.access` misreports (root, ACLs, network mounts).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PathError(f"{what} {path} is a file, not a folder; give a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = temporary_name(path / "probe")
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise PathError(f"{what}: " + os_error_message(exc, path, "write in")) from exc
    return path
