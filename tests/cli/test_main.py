"""`lowcarb.cli.main`: user errors are one line (exit 2); anything else is a bug with its traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

import lowcarb.measure
from lowcarb.cli import VERBS, build_parser, main
from lowcarb.errors import ConfigError, DataError, LowcarbError, MissingPathError, PathError


def _raise(exc: BaseException):
    def fn(*args, **kwargs):
        raise exc

    return fn


@pytest.mark.parametrize(
    "exc",
    [
        ConfigError("--x must be >= 1, got 0"),
        DataError("train.csv line 3: no label"),
        PathError("cannot write /x: read-only"),
        MissingPathError("no recipe at r.yaml"),
    ],
)
def test_a_user_error_is_one_line_with_exit_2(monkeypatch, capsys, exc):
    monkeypatch.setattr(lowcarb.measure, "search_regions", _raise(exc))
    assert main(["regions", "FR"]) == 2
    err = capsys.readouterr().err
    assert err == f"lowcarb regions: error: {exc}\n"


@pytest.mark.parametrize("exc", [ValueError("boom"), KeyError("boom"), FileNotFoundError("boom")])
def test_any_other_exception_is_a_bug_with_its_traceback(monkeypatch, capsys, exc):
    monkeypatch.setattr(lowcarb.measure, "search_regions", _raise(exc))
    assert main(["regions", "FR"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert f"{type(exc).__name__}: " in err and "boom" in err
    assert err.rstrip().splitlines()[-1].startswith("lowcarb regions: this is a bug in lowcarb")


def test_interrupt_exits_130(monkeypatch, capsys):
    monkeypatch.setattr(lowcarb.measure, "search_regions", _raise(KeyboardInterrupt()))
    assert main(["regions", "FR"]) == 130
    assert capsys.readouterr().err == "lowcarb regions: interrupted\n"


def test_the_family_keeps_the_builtin_bases():
    # `except ValueError` / `except FileNotFoundError` around library calls keep working.
    assert issubclass(ConfigError, ValueError) and issubclass(ConfigError, LowcarbError)
    assert issubclass(MissingPathError, FileNotFoundError) and issubclass(MissingPathError, PathError)


def test_no_verb_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "VERB" in capsys.readouterr().out


def test_every_verb_explains_itself():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "verb")
    assert len(sub.choices) >= len(VERBS)
    for name, verb in sub.choices.items():
        text = verb.format_help()
        assert verb.description, f"lowcarb {name} --help has no description"
        assert len(text.splitlines()) > 3, name
    helps = {a.dest: a.help for a in sub._choices_actions}
    assert all(helps.values()), helps


@pytest.mark.parametrize("module", ["lowcarb", "lowcarb.cli"])
def test_python_dash_m_runs_the_command(module):
    proc = subprocess.run(
        [sys.executable, "-m", module, "regions", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "grid intensities" in proc.stdout
