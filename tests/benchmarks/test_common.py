"""benchmarks/_common.py: smoke and busy-machine runs never write into benchmarks/results/, and the
target text claim() writes parses back to the comparison it made."""

from __future__ import annotations

import argparse
import json

import pytest

from tests.benchmarks.test_results_files import load

common = load("_common")


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    results, smoke = tmp_path / "results", tmp_path / "results" / "smoke"
    monkeypatch.setattr(common, "RESULTS_DIR", results)
    monkeypatch.setattr(common, "SMOKE_DIR", smoke)
    monkeypatch.setattr(common, "machine_info", lambda: {"cpu": "test"})
    return results, smoke


CLAIMS = [{"id": "x.ratio", "value": 0.5, "target": "<= 0.75", "met": True}]


def test_a_full_run_writes_into_results(dirs):
    results, smoke = dirs
    args = argparse.Namespace(quick=False, allow_load=False, dev_limit=None, seeds="0,1,2")
    path = common.write_results("x", {"a": 1}, CLAIMS, command="python x.py --seeds 0,1,2",
                                load={"allow_load": False}, args=args)  # fmt: skip
    assert path == results / "x.json"
    data = json.loads(path.read_text())
    assert "smoke" not in data and data["claims"] == CLAIMS
    assert not smoke.exists()


@pytest.mark.parametrize(
    ("args", "command", "load", "reason"),
    [
        (argparse.Namespace(smoke=True), "python x.py --smoke", None, "--smoke"),
        # parsed arguments catch what the command line hides (an abbreviation argparse accepts)
        (argparse.Namespace(quick=True), "python x.py --qu", None, "--quick"),
        (argparse.Namespace(dev_limit=32), "python x.py", None, "--dev-limit"),
        (argparse.Namespace(max_dev=8), "python x.py", None, "--max-dev"),
        (argparse.Namespace(trial_max_steps=4), "python x.py --trial-max", None, "--trial-max-steps"),
        (argparse.Namespace(allow_load=True), "python x.py --allow", None, "--allow-load"),
        # no parsed arguments (a script without argparse): the command line still counts
        (None, "python x.py --n 64 --allow-load", None, "--allow-load"),
        (None, "python x.py --dev-limit=8", None, "--dev-limit"),
        # the quiet-machine record says the check was overridden
        (None, "python x.py", {"allow_load": True, "busy": False}, "--allow-load"),
    ],
)
def test_a_smoke_or_busy_run_writes_into_smoke(dirs, capsys, args, command, load, reason):
    results, smoke = dirs
    path = common.write_results("x", {"a": 1}, CLAIMS, command=command, load=load, args=args)
    assert path == smoke / "x.json"
    assert not (results / "x.json").exists()
    assert reason in json.loads(path.read_text())["smoke"]
    err = capsys.readouterr().err
    assert str(path) in err and "smoke run" in err


def test_the_quiet_machine_record_says_whether_the_check_was_overridden(monkeypatch):
    monkeypatch.setattr(common.os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    assert common.check_quiet_machine(False)["allow_load"] is False
    assert common.check_quiet_machine(True)["allow_load"] is True
    monkeypatch.setattr(common.os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    with pytest.raises(SystemExit, match="--allow-load"):
        common.check_quiet_machine(False)


def test_smoke_dir_is_ignored_by_git_and_summarize():
    root = common.RESULTS_DIR.parents[1]
    assert "benchmarks/results/smoke/" in (root / ".gitignore").read_text().splitlines()
    assert common.SMOKE_DIR.parent == common.RESULTS_DIR  # summarize globs results/*.json only


@pytest.mark.parametrize(("value", "op", "target"), [(0.5, "<=", 0.75), (0.9, "<=", 0.75), (3, ">=", 4),
                                                     (True, "==", True), (None, ">=", 0.85), (1.0, "<", 1.0)])  # fmt: skip
def test_met_for_recomputes_what_claim_computed(value, op, target):
    c = common.claim("x", value, op, target)
    assert common.parse_target(c["target"]) == (op, target)
    assert common.met_for(c["value"], c["target"]) is c["met"]
    assert c["met"] is (value is not None and eval(f"{value!r} {op} {target!r}"))  # noqa: S307


def test_a_reported_figure_has_no_met():
    r = common.reported("x", 3.0)
    assert common.met_for(r["value"], r["target"]) is None and r["met"] is None
    with pytest.raises(ValueError, match="unknown comparison"):
        common.claim("x", 1, "=>", 2)


@pytest.mark.parametrize(
    ("argv", "starts"),
    [([], False), (["--allow-load"], True), (["--quick"], True), (["--dev-limit", "8"], True)],
)
def test_parse_and_check_lets_only_smoke_or_allow_load_runs_start_on_a_busy_machine(monkeypatch, argv, starts):
    monkeypatch.setattr(common.os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dev-limit", type=int, default=None)
    if not starts:
        with pytest.raises(SystemExit, match="load average 9.0"):
            common.parse_and_check(parser, argv)
        return
    args, load = common.parse_and_check(parser, argv)
    assert load["busy"] and load["allowed_busy"]
    # the record names only what the user overrode: a --quick run did not pass --allow-load
    assert load["allow_load"] is ("--allow-load" in argv)
    assert common.smoke_options(args)  # and write_results() sends its JSON to SMOKE_DIR


def test_parse_and_check_on_a_quiet_machine_records_the_load(monkeypatch):
    monkeypatch.setattr(common.os, "getloadavg", lambda: (0.2, 0.3, 0.4))
    args, load = common.parse_and_check(argparse.ArgumentParser(), [])
    assert args.allow_load is False
    assert load["before"] == {"1min": 0.2, "5min": 0.3, "15min": 0.4} and not load["busy"]
    assert load["allow_load"] is False and common.check_quiet_machine_for(args) == load


def test_recipe_defaults_reads_the_train_section_and_the_named_stage(tmp_path, monkeypatch):
    (tmp_path / "r.yaml").write_text(
        "name: r\ntrain:\n  lr: 1.0e-3\n  epochs: 3\nstages:\n  - lora:\n      r: 8\n"
        "      target_modules: all-linear\n  - evaluate\n"
    )
    monkeypatch.setattr(common, "RECIPES_DIR", tmp_path)
    train, stage = common.recipe_defaults("r", "lora")
    assert train == {"lr": 1e-3, "epochs": 3}
    assert stage == {"r": 8, "target_modules": "all-linear"}
    with pytest.raises(KeyError, match="no 'lowrank' stage"):
        common.recipe_defaults("r", "lowrank")


def test_the_lora_benchmark_measures_the_shipped_recipe():
    # The LoRA figures are the recipe's: lr, epoch cap, patience, head lr, targets and rank come
    # from the recipe file (--budget recipe, the default).
    train, stage = common.recipe_defaults("lora-minilm", "lora")
    lora_bench = load("lora_minilm")
    assert (train["lr"], train["epochs"]) == (lora_bench.LORA_LR, lora_bench.LORA_EPOCHS_CAP)
    assert (train["early_stopping_patience"], train["head_lr"]) == (lora_bench.PATIENCE, lora_bench.HEAD_LR)
    assert (stage["r"], stage["dropout"]) == (lora_bench.R, lora_bench.DROPOUT)
    assert lora_bench.lora_targets(lora_bench.LORA_TARGETS) == stage["target_modules"]


def test_cpu_id_reads_family_model_and_stepping_of_the_first_processor(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n"
                       "stepping\t: 1\n\nprocessor\t: 1\ncpu family\t: 25\nmodel\t\t: 1\nstepping\t: 0\n")
    real_path = common.Path
    monkeypatch.setattr(common, "Path", lambda p: real_path(cpuinfo) if p == "/proc/cpuinfo" else real_path(p))
    assert common.cpu_id() == "family 26 model 2 stepping 1"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: some ARM core\n")
    assert common.cpu_id() is None
    monkeypatch.setattr(common, "Path", lambda p: real_path(tmp_path / "absent"))
    assert common.cpu_id() is None


def test_the_lora_benchmark_trains_with_the_recipe_budget_or_the_fixed_one(monkeypatch):
    import argparse

    sst2 = load("_sst2")
    lora_bench = load("lora_minilm")
    asked = {}

    def fake_heldout(n, subset_n):
        asked.update(n=n, subset_n=subset_n)
        return sst2.TextSplit(("a fine film",), (1,), "held-out")

    monkeypatch.setattr(sst2, "heldout_split", fake_heldout)
    monkeypatch.setitem(__import__("sys").modules, "_sst2", sst2)
    args = argparse.Namespace(epochs=6, batch_size=32, lora_lr=1e-3, seed=1, budget="recipe", stop_n=7, n=64)
    tokenizer = lambda texts, **kw: {"input_ids": [[1] * 3 for _ in texts], "attention_mask": [[1] * 3 for _ in texts]}  # noqa: E731

    config, stop = lora_bench.training_budget(args, tokenizer)
    assert (config.epochs, config.early_stopping_patience, config.head_lr) == (6, lora_bench.PATIENCE, lora_bench.HEAD_LR)
    assert asked == {"n": 7, "subset_n": 64} and stop is not None and config.seed == 1

    args.budget, args.epochs = "fixed", 3
    config, stop = lora_bench.training_budget(args, tokenizer)
    assert stop is None and (config.epochs, config.early_stopping_patience, config.head_lr) == (3, None, None)
