"""Runs `lowcarb` command lines, each in a process of its own, for tests/test_fuzz_cli.py.

    python tests/_fuzz_driver.py cases.json results.json

The heavy imports (torch, transformers, lowcarb) happen once here; each case then runs in a
child forked from this process (a real separate process: its own exit status, file descriptors,
signal handlers and resource limits), with stdout and stderr going to files. A case is
{"id", "argv", "cwd", "timeout_s"} and optionally:
- "full_disk": a folder that the child sees as a full disk: a 48 KiB tmpfs mounted there in a
  mount namespace of its own (root, or unprivileged user namespaces), else (where neither is
  allowed) RLIMIT_FSIZE at 100 KB, where writes past it fail with EFBIG;
- "signal": "SIGTERM" | "SIGHUP", sent once "signal_after" appears in the child's stdout;
- "@ID:<case id>" in argv: the run id the earlier case printed ("lowcarb run <id> (...)").
Its result is {"id", "rc", "stdout", "stderr", "seconds", "timed_out", "disk"}.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import re
import resource
import signal
import sys
import time
import traceback

CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
MS_REC, MS_PRIVATE = 0x4000, 0x40000


def _mount_small_tmpfs(folder: str) -> str:
    """A 48 KiB tmpfs at `folder`, private to this process; 'fsize' when that is not allowed."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(CLONE_NEWNS) != 0:
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
            return _fsize_limit()
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"{uid} {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"{gid} {gid} 1")
    # Private propagation first, so the mount never shows outside this process.
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return _fsize_limit()
    os.makedirs(folder, exist_ok=True)
    if libc.mount(b"none", folder.encode(), b"tmpfs", 0, b"size=48k") != 0:
        return _fsize_limit()
    return "tmpfs"


def _fsize_limit() -> str:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
    return "fsize"


def _describe_folder(folder: str, into: str) -> None:
    """Every file under `folder`: its size, and whether a report/metrics file is whole."""
    found = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(parent, name)
            with open(path, "rb") as handle:
                data = handle.read()
            whole = True
            if name.endswith(".json"):
                try:
                    json.loads(data)
                except ValueError:
                    whole = False
            elif name.endswith(".html"):
                whole = data.rstrip().endswith(b"</html>")
            found[os.path.relpath(path, folder)] = {"bytes": len(data), "whole": whole}
    with open(into, "w", encoding="utf-8") as handle:
        json.dump(found, handle)


def _child(case: dict, out_path: str, err_path: str) -> None:
    code = 99
    try:
        os.chdir(case["cwd"])
        for fd, path in ((1, out_path), (2, err_path)):
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(handle, fd)
            os.close(handle)
        if case.get("full_disk"):
            print(f"disk: {_mount_small_tmpfs(case['full_disk'])}", file=sys.stderr, flush=True)
        from lowcarb.cli import main

        sys.argv = ["lowcarb", *case["argv"]]
        code = main(case["argv"])
        if case.get("full_disk"):  # the tmpfs vanishes with this process: say what it holds
            _describe_folder(case["full_disk"], err_path + ".files.json")
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # an escaped exception is what the fuzz test looks for: show it
        traceback.print_exc()
        code = 98
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed stream at exit: nothing more to say
                stream.flush()
        os._exit(code if isinstance(code, int) else 1)


def run_case(case: dict, folder: str) -> dict:
    out_path = os.path.join(folder, f"{case['id']}.out")
    err_path = os.path.join(folder, f"{case['id']}.err")
    start = time.monotonic()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _child(case, out_path, err_path)
    timed_out, status, signalled = False, 0, False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if case.get("signal") and not signalled and os.path.exists(out_path):
            with open(out_path, encoding="utf-8", errors="replace") as handle:
                if case["signal_after"] in handle.read():
                    os.kill(pid, getattr(signal, case["signal"]))
                    signalled = True
        if time.monotonic() - start > case.get("timeout_s", 60):
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            timed_out = True
            break
        time.sleep(0.02)
    rc = os.waitstatus_to_exitcode(status)
    with open(out_path, encoding="utf-8", errors="replace") as f_out, open(
        err_path, encoding="utf-8", errors="replace"
    ) as f_err:
        stdout, stderr = f_out.read(), f_err.read()
    disk, files = None, None
    if os.path.exists(err_path + ".files.json"):
        with open(err_path + ".files.json", encoding="utf-8") as handle:
            files = json.load(handle)
    if stderr.startswith("disk: "):  # the child's own note on how its disk was filled
        first, _, stderr = stderr.partition("\n")
        disk = first.removeprefix("disk: ")
    return {
        "disk": disk,
        "files": files,
        "signalled": signalled,
        "id": case["id"],
        "rc": rc,
        "stdout": stdout,
        "stderr": stderr,
        "seconds": time.monotonic() - start,
        "timed_out": timed_out,
    }


def _resolve(arg: str, printed_ids: dict[str, str]) -> str:
    if arg.startswith("@ID:"):
        return printed_ids.get(arg.removeprefix("@ID:"), "no-such-run")
    return arg


def main() -> None:
    cases_file, results_file = sys.argv[1], sys.argv[2]
    with open(cases_file, encoding="utf-8") as handle:
        cases = json.load(handle)
    # Imported once, before the children are forked (each would pay ~5-20 s otherwise).
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import lowcarb.cli  # noqa: F401
    import lowcarb.models  # noqa: F401
    import lowcarb.pipeline  # noqa: F401

    folder = os.path.dirname(os.path.abspath(results_file))
    results: list[dict] = []
    printed_ids: dict[str, str] = {}
    for case in cases:
        case = dict(case, argv=[_resolve(a, printed_ids) for a in case["argv"]])
        result = run_case(case, folder)
        found = re.search(r"lowcarb run ([0-9a-f]{8})", result["stdout"])
        if found:
            printed_ids[case["id"]] = found.group(1)
        results.append(result)
    with open(results_file, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
