"""An interrupt hidden behind a library's failing clean-up is still an interrupt."""

from __future__ import annotations

import signal

import pytest

from lowcarb.interrupts import Terminated, interrupt_behind


def _optuna_like_cleanup(interrupt: KeyboardInterrupt) -> None:
    # What Optuna 4's _run_trial does when interrupted inside its try: its finally block reads a
    # local the try never assigned, so an UnboundLocalError replaces the interrupt.
    try:
        raise interrupt
    finally:
        state = None
        if state.value:  # type: ignore[attr-defined]  # AttributeError, context = the interrupt
            pass


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt(), Terminated(signal.SIGTERM)])
def test_the_interrupt_behind_a_failing_cleanup_is_found(interrupt):
    with pytest.raises(AttributeError) as info:
        _optuna_like_cleanup(interrupt)
    assert interrupt_behind(info.value) is interrupt


def test_an_error_with_no_interrupt_behind_it_is_left_alone():
    try:
        try:
            raise ValueError("first")
        except ValueError as first:
            raise RuntimeError("second") from first
    except RuntimeError as exc:
        assert interrupt_behind(exc) is None


def test_a_cycle_in_the_context_chain_ends():
    a, b = ValueError("a"), ValueError("b")
    a.__context__, b.__context__ = b, a
    assert interrupt_behind(a) is None


def test_the_cli_reports_an_interrupt_hidden_behind_a_library_error(monkeypatch, capsys):
    from lowcarb import cli

    def handler(args):
        _optuna_like_cleanup(Terminated(signal.SIGTERM))

    parser = cli.build_parser()
    real_parse = parser.parse_args

    def parse(argv=None):
        ns = real_parse(["runs"])
        ns.handler = handler
        return ns

    monkeypatch.setattr(parser, "parse_args", parse)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    assert cli.main([]) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip() == "lowcarb runs: stopped by SIGTERM"
