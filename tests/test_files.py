"""Atomic writes: a failure at any point leaves the old file (or nothing), never half a file."""

import errno
import json
import os
import stat

import pytest

from lowcarb import files
from lowcarb.errors import LowcarbError, PathError


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(files.TEMPORARY_PREFIX))


@pytest.fixture
def disk_fills_after(monkeypatch):
    """os.write succeeds for `n` bytes in total, then fails as a full disk does (ENOSPC)."""

    def install(n):
        budget = {"left": n}
        real_write = os.write

        def write(fd, data):
            if budget["left"] <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            chunk = bytes(data[: budget["left"]])
            budget["left"] -= len(chunk)
            return real_write(fd, chunk)

        monkeypatch.setattr(files.os, "write", write)

    return install


def test_write_text_replaces_and_keeps_umask_mode(tmp_path):
    target = tmp_path / "report.html"
    files.write_text(target, "one")
    files.write_text(target, "two")
    assert target.read_text() == "two"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert _leftovers(tmp_path) == []


def test_full_disk_keeps_the_old_file_and_no_temporary(tmp_path, disk_fills_after):
    target = tmp_path / "metrics.json"
    files.write_json(target, {"status": "running"})
    disk_fills_after(10)
    with pytest.raises(PathError) as info:
        files.write_json(target, {"status": "completed", "stages": list(range(1000))})
    message = str(info.value)
    assert str(target) in message and "No space left on device" in message
    assert "\n" not in message
    assert json.loads(target.read_text()) == {"status": "running"}
    assert _leftovers(tmp_path) == []


def test_full_disk_on_a_new_file_leaves_nothing(tmp_path, disk_fills_after):
    disk_fills_after(0)
    with pytest.raises(PathError):
        files.write_text(tmp_path / "report.html", "<html>" * 1000)
    assert list(tmp_path.iterdir()) == []


def test_path_error_is_a_lowcarb_error_and_an_oserror(tmp_path):
    with pytest.raises(PathError) as info:
        files.write_text(tmp_path / "missing-folder" / "x.txt", "x")
    assert isinstance(info.value, LowcarbError) and isinstance(info.value, OSError)
    assert "missing-folder" in str(info.value)


def test_write_json_rejects_infinity_and_nan(tmp_path):
    with pytest.raises(ValueError, match=r"units.*inf"):
        files.write_json(tmp_path / "x.json", {"units": float("inf")})
    with pytest.raises(ValueError, match=r"rows\[1\]"):
        files.write_json(tmp_path / "x.json", {"rows": [1.0, float("nan")]})
    assert list(tmp_path.iterdir()) == []
    files.write_json(tmp_path / "x.json", {"p": tmp_path})  # a Path is written as its str()
    assert json.loads((tmp_path / "x.json").read_text()) == {"p": str(tmp_path)}


def test_replace_file_commits_only_on_success(tmp_path):
    target = tmp_path / "plot.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), files.replace_file(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer crashed")
    assert target.read_bytes() == b"old"
    with files.replace_file(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert _leftovers(tmp_path) == []


def test_replace_file_names_the_target_on_os_errors(tmp_path):
    target = tmp_path / "model.onnx"
    with pytest.raises(PathError, match="model.onnx: No space left"), files.replace_file(target):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_replace_folder_swaps_whole_folders(tmp_path):
    target = tmp_path / "model"
    with files.replace_folder(target) as tmp:
        (tmp / "a.bin").write_text("v1")
    assert (target / "a.bin").read_text() == "v1"
    with pytest.raises(PathError), files.replace_folder(target) as tmp:
        (tmp / "b.bin").write_text("half of v2")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert sorted(p.name for p in target.iterdir()) == ["a.bin"]
    with files.replace_folder(target) as tmp:
        (tmp / "c.bin").write_text("v3")
    assert sorted(p.name for p in target.iterdir()) == ["c.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_check_writable_folder(tmp_path):
    assert files.check_writable_folder(tmp_path / "new" / "out") == tmp_path / "new" / "out"
    assert list((tmp_path / "new" / "out").iterdir()) == []
    a_file = tmp_path / "passwd"
    a_file.write_text("x")
    with pytest.raises(PathError, match="is a file, not a folder"):
        files.check_writable_folder(a_file, "--out")
    with pytest.raises(PathError, match=r"--out: cannot write in .*passwd/sub: Not a directory"):
        files.check_writable_folder(a_file / "sub", "--out")


def test_check_writable_folder_on_a_read_only_file_system():
    # /proc cannot hold new files even for root; a chmod'ed folder would not stop root.
    with pytest.raises(PathError, match=r"cannot write in /proc/lowcarb-out"):
        files.check_writable_folder("/proc/lowcarb-out")


def test_os_error_message_is_one_line_with_advice(tmp_path):
    exc = OSError(errno.EROFS, os.strerror(errno.EROFS))
    message = files.os_error_message(exc, tmp_path / "r.html")
    assert message == f"cannot write {tmp_path / 'r.html'}: Read-only file system; the file system is read-only; choose another folder"


def test_write_json_can_write_non_finite_values_as_null(tmp_path):
    files.write_json(tmp_path / "m.json", {"a": [float("inf"), 1.5], "b": float("nan")}, non_finite="null")
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": [None, 1.5], "b": None}


def test_native_io_errors_with_an_errno_name_the_path(tmp_path):
    class SafetensorError(Exception):  # what safetensors raises for a Rust I/O error
        pass

    target = tmp_path / "model"
    with pytest.raises(PathError, match=r"model: No space left on device"), files.replace_folder(target):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert not target.exists()
    with pytest.raises(ValueError, match="not an I/O error"), files.path_errors(target):
        raise ValueError("not an I/O error")
    wrapped = RuntimeError("saving failed")
    wrapped.__cause__ = OSError(errno.EROFS, os.strerror(errno.EROFS))
    assert files.os_error_of(wrapped).errno == errno.EROFS
