"""The committed benchmarks/results/*.json: each parses, has the five keys, each claim the four,
`met` is what the value and target give (the comparison of benchmarks/_common.py), no smoke or
busy-machine command, and RESULTS.md's claims table is what summarize.py writes from them now.
Each check is also run on a doctored copy in tmp_path, so it is shown to fail."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
RESULTS = BENCHMARKS / "results"
FILES = sorted(RESULTS.glob("*.json"))


def load(name: str) -> ModuleType:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))  # summarize and the scripts import `_common` by name
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


common = load("_common")
summarize = load("summarize")


def test_there_are_committed_results_files():
    assert len(FILES) >= 10, "the checks below would pass over an empty folder"


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_committed_results_file_is_well_formed(path):
    data = json.loads(path.read_text())
    assert common.results_file_problems(data) == []
    assert set(common.RESULTS_KEYS) <= set(data)
    assert data["claims"], f"{path.name} claims nothing"
    for c in data["claims"]:
        assert set(common.CLAIM_KEYS) <= set(c)
        # the rule: `met` is null exactly for a figure reported without a target; a claim whose
        # value could not be measured (null) is unmet, not null
        assert (c["met"] is None) == (c["target"] is None), c
        if c["target"] is not None and c["value"] is None:
            assert c["met"] is False, c
        assert c["met"] == common.met_for(c["value"], c["target"])
    assert common.smoke_flags_in(data["command"]) == []


def results_md_table(md: Path) -> str:
    return summarize.split_markers(md.read_text(), md)[1]


def test_results_md_claims_table_is_what_summarize_writes_now():
    assert results_md_table(BENCHMARKS / "RESULTS.md") == summarize.claims_table(RESULTS), (
        "RESULTS.md's claims table drifted from the results files: run "
        "`python benchmarks/summarize.py --write`"
    )


# --- the same checks on doctored copies: each must catch what was done


@pytest.fixture
def sample() -> dict:
    return json.loads((RESULTS / "earlybert_minilm.json").read_text())


def first_claim_with_target(data: dict) -> dict:
    return next(c for c in data["claims"] if c["target"] is not None)


def doctor_flip_met(data):
    c = first_claim_with_target(data)
    c["met"] = not c["met"]


def doctor_met_typed_for_unmeasured(data):
    c = first_claim_with_target(data)
    c["value"], c["met"] = None, True


def doctor_met_null_with_target(data):
    first_claim_with_target(data)["met"] = None


def doctor_met_on_reported(data):
    next(c for c in data["claims"] if c["target"] is None)["met"] = True


def doctor_smoke_command(data):
    data["command"] = "python benchmarks/earlybert_minilm.py --n 64 --allow-load"


def doctor_quick_command(data):
    data["command"] = "python benchmarks/compress_minilm.py --quick"


def doctor_dev_limit_command(data):
    data["command"] = "python benchmarks/distill_minilm.py --dev-limit=32"


def doctor_drop_machine(data):
    del data["machine"]


def doctor_drop_claim_target(data):
    del data["claims"][0]["target"]


def doctor_bad_target(data):
    first_claim_with_target(data)["target"] = "at most 0.75"


DOCTORS = [
    (doctor_flip_met, "met is"),
    (doctor_met_typed_for_unmeasured, "met is True"),
    (doctor_met_null_with_target, "met is None"),
    (doctor_met_on_reported, "gives None"),
    (doctor_smoke_command, "--allow-load"),
    (doctor_quick_command, "--quick"),
    (doctor_dev_limit_command, "--dev-limit"),
    (doctor_drop_machine, "no 'machine'"),
    (doctor_drop_claim_target, "lacks ['target']"),
    (doctor_bad_target, "does not start with"),
]


@pytest.mark.parametrize(("doctor", "said"), DOCTORS, ids=[d.__name__ for d, _ in DOCTORS])
def test_a_doctored_copy_is_caught(tmp_path, sample, doctor, said):
    doctor(sample)
    copy = tmp_path / "earlybert_minilm.json"
    copy.write_text(json.dumps(sample))
    problems = common.results_file_problems(json.loads(copy.read_text()))
    assert len(problems) == 1 and said in problems[0], problems


def test_a_results_file_that_is_not_an_object_is_caught():
    assert common.results_file_problems([1, 2]) == ["a results file is a JSON object, not list"]


def test_a_drifted_claims_table_is_caught(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(RESULTS, results, ignore=shutil.ignore_patterns("*.png", "*.md"))
    md = tmp_path / "RESULTS.md"
    shutil.copy(BENCHMARKS / "RESULTS.md", md)
    assert results_md_table(md) == summarize.claims_table(results)  # the copy agrees, as main does
    path = results / "earlybert_minilm.json"
    data = json.loads(path.read_text())
    data["claims"][0]["value"] = 0.5  # a new run's figure, table not regenerated
    path.write_text(json.dumps(data))
    assert results_md_table(md) != summarize.claims_table(results)
