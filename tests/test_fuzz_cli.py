"""Every verb against hostile and careless inputs, each in a process of its own (issue 19).

For every case of the table: a non-zero exit, one line from lowcarb on stderr, no traceback,
and afterwards, over all cases: no stored run left `running`, no temporary file left behind, every
report.html complete and every metrics.json valid JSON. Runs that must succeed with hostile names
(rich markup, HTML, control characters) are listed, shown, compared, reported and exported.
SIGTERM and SIGHUP mark a run interrupted; a full disk under --out fails it with one line.

The cases run through tests/_fuzz_driver.py: one interpreter imports torch and lowcarb once and
forks a child per case, so ~60 separate processes cost about what three cold starts would.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lowcarb.cli import build_parser
from lowcarb.files import TEMPORARY_PREFIX
from lowcarb.models import (
    ByteTokenizer,
    DigitsCNN,
    ModelConfig,
    ModelHandle,
    TextTransformer,
    save_model,
)

ROOT = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).with_name("_fuzz_driver.py")
# Tiny budgets: a run trains 2 steps and times latency briefly.
FAST = [
    "--quiet",
    "--set", "train.max_steps=2",
    "--set", "evaluation.inferences=16",
    "--set", "evaluation.latency_batch_sizes=[1]",
    "--set", "evaluation.latency_budget_s=0.1",
]
TINY_TEXT = [
    "--set", "model.name=transformer", "--set", "model.d_model=16", "--set", "model.num_heads=2",
    "--set", "model.num_layers=1", "--set", "model.ffn_dim=32", "--set", "model.max_length=32",
]
# As a YAML double-quoted value (\e is ESC): rich markup, a hyperlink, HTML and a clear-screen code.
HOSTILE_NAME = '"[/bold] x [link=https://evil.example]y[/link] <script>z</script> \\e[2J"'

BILLION_LAUGHS = "\n".join(
    ["name: &a0 lol"]
    + [f"l{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    + ["description: *a9"]
)


def _write(path: Path, text: str | bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(path)


def _table(rows: list[str]) -> str:
    return "\n".join(rows) + "\n"


def _good_rows(n: int = 60) -> list[str]:
    return [f"{'great fun' if i % 2 else 'dull and slow'} film {i},{'pos' if i % 2 else 'neg'}" for i in range(n)]


def _models(folder: Path) -> dict[str, str]:
    """Saved model folders: good ones, and copies damaged or edited as a user might."""
    torch.manual_seed(0)
    cnn = DigitsCNN((1, 8, 8), 10, (4, 8), 16, 0.0)
    good = save_model(ModelHandle(cnn, None, "image", "cnn", ModelConfig(name="cnn", channels=(4, 8), hidden_dim=16),
                                  10, tuple(str(i) for i in range(10)), (1, 8, 8)), folder / "cnn")
    text = TextTransformer(vocab_size=ByteTokenizer().vocab_size, num_labels=2, d_model=16, num_layers=1,
                           num_heads=2, ffn_dim=32, max_length=32, dropout=0.0, pad_token_id=ByteTokenizer().pad_token_id)
    text_folder = save_model(
        ModelHandle(text, ByteTokenizer(), "text", "transformer",
                    ModelConfig(name="transformer", d_model=16, num_layers=1, num_heads=2, ffn_dim=32, max_length=32),
                    2, ("neg", "pos")),
        folder / "text",
    )
    out = {"cnn": str(good), "text": str(text_folder)}
    for name, edit in (("labels", {"num_labels": -1}), ("huge", {"hidden_dim": 10**8})):
        copy = folder / f"cnn-{name}"
        shutil.copytree(good, copy)
        description = json.loads((copy / "lowcarb_model.json").read_text())
        if "hidden_dim" in edit:
            description["config"]["hidden_dim"] = edit["hidden_dim"]
        else:
            description.update(edit)
        (copy / "lowcarb_model.json").write_text(json.dumps(description))
        out[name] = str(copy)
    truncated = folder / "cnn-truncated"
    shutil.copytree(good, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    out["truncated"] = str(truncated)
    # A Hugging Face folder someone assembled by hand: config and weights, no tokenizer files.
    from transformers import BertConfig, BertForSequenceClassification

    bert = BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=32))
    bert.save_pretrained(folder / "bert-no-tokenizer", safe_serialization=True)
    out["no_tokenizer"] = str(folder / "bert-no-tokenizer")
    return out


def _cases(base: Path) -> tuple[list[dict], dict[str, str]]:
    """(the error cases, the hostile-but-legal cases' ids by purpose). Files are written here."""
    work = base / "work"
    work.mkdir()
    f = {
        "laughs": _write(work / "laughs.yaml", BILLION_LAUGHS),
        "deep": _write(work / "deep.yaml", "description: " + "[" * 5000 + "]" * 5000 + "\n"),
        "dupkeys": _write(work / "dupkeys.yaml", "train:\n  epochs: 1\n  epochs: 3\n"),
        "epochs_big": _write(work / "epochs_big.yaml", "train: {epochs: 1e20}\n"),
        "epochs_true": _write(work / "epochs_true.yaml", "train: {epochs: true}\n"),
        "batches": _write(work / "batches.yaml", "evaluation: {latency_batch_sizes: [0, -1]}\n"),
        "binary": _write(work / "binary.yaml", b"\xff\xfe\x00name: x\x00\x81"),
        "huge": _write(work / "huge.yaml", "description: '" + "x" * (2 << 20) + "'\n"),
        "invalid": _write(work / "invalid.yaml", "train:\n  epochs: 1\n bad: [\n"),
        "not_mapping": _write(work / "list.yaml", "- train\n- evaluate\n"),
        "good_csv": _write(work / "good.csv", _table(["text,label", *_good_rows()])),
        "dup_header": _write(work / "dup.csv", _table(["text,label,label", *[r + ",x" for r in _good_rows()]])),
        "one_class": _write(work / "one.csv", _table(["text,label", *[f"text {i},pos" for i in range(40)]])),
        "nan_label": _write(work / "nan.csv", _table(["text,label", *_good_rows(), "broken row,nan"])),
        "empty_label": _write(work / "empty.csv", _table(["text,label", *_good_rows(), "broken row,"])),
        "extra_fields": _write(work / "extra.csv", _table(["text,label", *_good_rows(), "a, b,pos"])),
        "broken_quote": _write(work / "quote.csv", _table(["text,label", *_good_rows(), '"never closed,pos'])),
        "a_file": _write(work / "a-file", "not a folder\n"),
        "plain": _write(work / "plain.yaml", "name: plain\n"),
        "corpus": _write(work / "corpus.txt", "".join(f"a small line of text number {i}\n" for i in range(50))),
        "mutransfer": _write(work / "mut.yaml", "mutransfer:\n  text: corpus.txt\n  model: {base_width: 8, "
                             "depth: 1, n_heads: 2, max_len: 16}\n  proxy_width: 8\n  target_width: 16\n"
                             "  log2_lrs: [-6]\n  train: {steps: 2, batch_size: 2, seq_len: 8}\n"),
        "mutransfer_old": _write(work / "mut-old.yaml", "text: corpus.txt\nproxy_width: 8\ntarget_width: 16\n"),
        "search_recipe": str(shutil.copy(ROOT / "recipes" / "search-digits.yaml", work / "search.yaml")),
        "nonbert": _write(work / "nonbert.yaml", "model: {name: transformer, d_model: 16, num_heads: 2, "
                          "num_layers: 1, ffn_dim: 32}\ndata: {train: good.csv}\nstages: [train, autodistil]\n"),
    }
    (work / "a-folder.yaml").mkdir()
    f["folder"] = str(work / "a-folder.yaml")
    quoted = work / "quoted.tsv"
    with quoted.open("w", newline="") as handle:
        import csv

        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(["text", "label"])
        writer.writerows([(f'line {i}\n"second" line', "ab"[i % 2]) for i in range(40)])
    m = _models(base / "models")
    text_run = [*FAST, *TINY_TEXT]
    unwritable = "/proc/lowcarb-fuzz/out"

    cases: list[tuple[str, list[str]]] = []
    for verb in ("run", "search", "autodistil", "parsec", "mutransfer"):
        extra = ["--flops-budget", "0.5"] if verb == "autodistil" else []
        for name in ("laughs", "deep", "dupkeys", "epochs_big", "epochs_true", "batches", "binary",
                     "huge", "invalid", "not_mapping", "folder"):
            if verb in ("parsec", "mutransfer") and name in ("epochs_big", "epochs_true", "batches"):
                continue  # settings those verbs do not read
            cases.append((f"{verb}-recipe-{name}", [verb, f[name], *extra]))
        cases.append((f"{verb}-recipe-missing", [verb, str(work / "nope.yaml"), *extra]))
    cases += [
        ("run-recipe-dev-zero", ["run", "/dev/zero"]),
        ("run-set-empty-name", ["run", "--set", "model.name=", *FAST]),
        ("run-set-no-equals", ["run", "--set", "train.epochs", *FAST]),
        ("run-set-laughs", ["run", "--set", "description=[" * 40 + "]" * 40, *FAST]),
        ("run-out-is-a-file", ["run", *FAST, "--out", f["a_file"]]),
        ("run-out-under-a-file", ["run", *FAST, "--out", f["a_file"] + "/sub"]),
        ("run-out-unwritable", ["run", *FAST, "--out", unwritable]),
        ("search-out-is-a-file", ["search", f["search_recipe"], "--out", f["a_file"], "--n-trials", "1"]),
        ("search-no-section", ["search", f["plain"]]),
        ("run-data-missing", ["run", *text_run, "--set", "data.train=missing.csv"]),
        ("run-data-dup-header", ["run", *text_run, "--set", f"data.train={f['dup_header']}"]),
        ("run-data-one-class", ["run", *text_run, "--set", f"data.train={f['one_class']}"]),
        ("run-data-nan-label", ["run", *text_run, "--set", f"data.train={f['nan_label']}"]),
        ("run-data-empty-label", ["run", *text_run, "--set", f"data.train={f['empty_label']}"]),
        ("run-data-extra-fields", ["run", *text_run, "--set", f"data.train={f['extra_fields']}"]),
        ("run-data-broken-quote", ["run", *text_run, "--set", f"data.train={f['broken_quote']}"]),
        ("run-model-no-tokenizer", ["run", *FAST, "--set", f"model.name={m['no_tokenizer']}",
                                    "--set", f"data.train={f['good_csv']}"]),
        ("run-autodistil-non-bert", ["run", f["nonbert"], *FAST]),
        ("autodistil-budget-zero", ["autodistil", f["nonbert"], "--flops-budget", "0"]),
        ("export-onnx-num-labels", ["export-onnx", m["labels"], str(work / "m.onnx")]),
        ("export-onnx-103-gb", ["export-onnx", m["huge"], str(work / "m.onnx")]),
        ("export-onnx-truncated", ["export-onnx", m["truncated"], str(work / "m.onnx")]),
        ("export-onnx-seq-len", ["export-onnx", m["text"], str(work / "m.onnx"), "--seq-len", "100000"]),
        ("export-onnx-out-unwritable", ["export-onnx", m["cnn"], unwritable + "/m.onnx"]),
        ("export-onnx-not-onnx", ["export-onnx", m["cnn"], str(work / "m.bin")]),
        ("export-onnx-missing-model", ["export-onnx", str(work / "no-model"), str(work / "m.onnx")]),
        ("measure-units-inf", ["measure", "--unit", "sample", "--units", "inf", "--", "true"]),
        ("measure-units-nan", ["measure", "--unit", "sample", "--units", "nan", "--", "true"]),
        ("measure-pue-inf", ["measure", "--pue", "inf", "--", "true"]),
        ("measure-no-command", ["measure"]),
        ("runs-limit-zero", ["runs", "--limit", "0"]),
        ("runs-store-is-not-a-store", ["runs", "--store", f["good_csv"]]),
        ("show-unknown", ["show", "zzzzzzzz"]),
        ("export-unknown", ["export", "zzzzzzzz"]),
        ("export-out-unwritable", ["export", "--out", unwritable + "/x.json"]),
        ("regions-unknown", ["regions", "Atlantis-on-Sea"]),
        ("report-unknown", ["report", "zzzzzzzz"]),
        ("report-out-unwritable", ["report", "@ID:good-run", "--out", unwritable + "/r.html"]),
        ("report-out-is-a-folder", ["report", "@ID:good-run", "--out", str(work)]),
        ("compare-unknown", ["compare", "zzzzzzzz", "yyyyyyyy"]),
        ("compare-out-is-a-file", ["compare", "@ID:good-run", "@ID:good-run", "--out", f["a_file"]]),
        ("mup-bad-widths", ["mup", "coord-check", "mlp", "--widths", "32,x"]),
        ("mup-out-is-a-file", ["mup", "coord-check", "mlp", "--widths", "8,16", "--steps", "1",
                               "--out", f["a_file"]]),
        ("mup-lr-inf", ["mup", "coord-check", "mlp", "--lr", "inf"]),
        ("parsec-out-is-a-file", ["parsec", "--iterations", "1", "--top", "1", "--epochs", "1",
                                  "--out", f["a_file"]]),
        ("parsec-text-space-on-digits", ["parsec", "--space", "text", "--iterations", "1"]),
        ("mutransfer-out-unwritable", ["mutransfer", f["mutransfer"], "--out", unwritable + "/m.json"]),
        ("mutransfer-out-is-a-folder", ["mutransfer", f["mutransfer"], "--out", str(work)]),
        ("mutransfer-old-format", ["mutransfer", f["mutransfer_old"]]),
        ("mutransfer-no-section", ["mutransfer", f["plain"]]),
        ("mutransfer-text-missing", ["mutransfer", f["mutransfer"], "--set", "mutransfer.text=nope.txt"]),
        ("unknown-flag", ["run", "--no-such-flag"]),
    ]
    legal = [
        ("good-run", ["run", *FAST, "--set", "stages=[train]"]),
        ("hostile-name-run", ["run", *FAST, "--set", "stages=[train]", "--set", f"name={HOSTILE_NAME}"]),
        ("hostile-runs", ["runs"]),
        ("hostile-show", ["show", "@ID:hostile-name-run"]),
        ("hostile-report-md", ["report", "@ID:hostile-name-run", "--format", "md", "--out", str(work / "h.md")]),
        ("hostile-report-html", ["report", "@ID:hostile-name-run", "--out", str(work / "h.html")]),
        ("hostile-compare", ["compare", "@ID:hostile-name-run", "@ID:good-run", "--out", str(work / "cmp")]),
        ("hostile-export", ["export", "@ID:hostile-name-run"]),
        ("quoted-tsv-run", ["run", *text_run, "--set", f"data.train={quoted}", "--set", "stages=[train]"]),
    ]
    signals = [
        ("sigterm-run", "SIGTERM"),
        ("sighup-run", "SIGHUP"),
    ]
    table = []
    for case_id, argv in legal[:2]:  # the runs later cases refer to come first
        table.append({"id": case_id, "argv": argv, "cwd": str(work), "timeout_s": 240, "legal": True})
    for case_id, argv in cases:
        table.append({"id": case_id, "argv": argv, "cwd": str(work), "timeout_s": 240})
    for case_id, argv in legal[2:]:
        table.append({"id": case_id, "argv": argv, "cwd": str(work), "timeout_s": 240, "legal": True})
    table.append({
        "id": "sigterm-measure", "cwd": str(work), "timeout_s": 60, "signal": "SIGTERM",
        "signal_after": "child started",  # printed by the measured command itself
        "argv": ["measure", "--name", "sleeper", "--", "sh", "-c", "echo child started; sleep 30"],
    })
    table.append({
        "id": "sigterm-search", "cwd": str(work), "timeout_s": 240, "signal": "SIGTERM",
        "signal_after": "trial   0",  # during the second trial
        "argv": ["search", f["search_recipe"], "--n-trials", "4", "--set", "train.epochs=20",
                 "--set", "evaluation.inferences=16", "--set", "evaluation.latency_batch_sizes=[1]",
                 "--set", "evaluation.latency_budget_s=0.1"],
    })
    for case_id, sig in signals:
        table.append({
            "id": case_id, "cwd": str(work), "timeout_s": 240, "signal": sig, "signal_after": "done setup",
            # long enough to be signalled while training (about 800 steps on digits)
            "argv": ["run", "--set", "train.epochs=20", "--set", "evaluation.inferences=16",
                     "--set", "evaluation.latency_batch_sizes=[1]", "--set", "evaluation.latency_budget_s=0.1"],
        })
    table.append({"id": "full-disk-run", "cwd": str(work), "timeout_s": 240, "full_disk": str(base / "full"),
                  "argv": ["run", *FAST, "--set", "stages=[train]", "--out", str(base / "full")]})
    return table, f


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    table, _ = _cases(base)
    home = base / "home"
    home.mkdir()
    cases_file, results_file = base / "cases.json", base / "results" / "results.json"
    results_file.parent.mkdir()
    cases_file.write_text(json.dumps(table))
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "LOWCARB_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "COLUMNS": "200",
    }
    env.pop("LOWCARB_STORE", None)
    subprocess.run([sys.executable, str(DRIVER), str(cases_file), str(results_file)], env=env, check=True,
                   timeout=1800)
    results = {r["id"]: r for r in json.loads(results_file.read_text())}
    return {"base": base, "home": home, "table": table, "results": results}


def _error_lines(stderr: str) -> list[str]:
    """What lowcarb said on stderr, less its one-line warnings (a busy machine, skipped rows)."""
    return [line for line in stderr.splitlines() if line.strip() and ": warning: " not in line]


def test_every_verb_has_hostile_cases(fuzz):
    verbs = set(build_parser()._subparsers._group_actions[0].choices)  # noqa: SLF001
    covered = {case["argv"][0] for case in fuzz["table"] if not case.get("legal")}
    assert verbs <= covered, f"add fuzz cases for {sorted(verbs - covered)}"
    errors = [c for c in fuzz["table"] if not c.get("legal") and "signal" not in c and "full_disk" not in c]
    assert len(errors) >= 100  # the count reported in the issue note comes from here


def test_each_bad_input_is_one_line_without_a_traceback(fuzz):
    problems = []
    for case in fuzz["table"]:
        if case.get("legal") or "signal" in case or "full_disk" in case:
            continue
        r = fuzz["results"][case["id"]]
        lines = _error_lines(r["stderr"])
        shown = f"{case['id']}: rc {r['rc']}, {r['seconds']:.1f} s, stderr {r['stderr'][-600:]!r}"
        failed_cleanly = not r["timed_out"] and 0 < r["rc"] < 98
        no_traceback = "Traceback" not in r["stderr"] + r["stdout"] and "bug in lowcarb" not in r["stderr"]
        one_line = len(lines) == 1 and re.match(r"lowcarb[ a-z-]*: error: ", lines[0]) and "\x1b" not in lines[0]
        if not (failed_cleanly and no_traceback and one_line):
            problems.append(shown)
    assert not problems, "\n".join(problems)


def test_hostile_recipes_fail_fast_and_print_no_expanded_values(fuzz):
    for case_id, r in fuzz["results"].items():
        if "recipe-laughs" in case_id or "recipe-deep" in case_id or "recipe-huge" in case_id:
            assert r["seconds"] < 30, (case_id, r["seconds"])
            assert len(r["stderr"]) < 600 and "lol, lol" not in r["stderr"], case_id


def test_each_message_names_what_was_wrong(fuzz):
    r = fuzz["results"]
    expect = {
        "run-recipe-dupkeys": "appears twice",
        "run-recipe-epochs_big": "train.epochs: expected an integer",
        "run-recipe-epochs_true": "train.epochs: expected an integer",
        "run-recipe-batches": "latency_batch_sizes[0]",
        "run-recipe-laughs": "aliases",
        "run-recipe-deep": "nested more than",
        "run-set-empty-name": "model.name: needs a value",
        "run-out-is-a-file": "a-file is a file, not a folder",
        "run-out-unwritable": "/proc/lowcarb-fuzz/out",
        "run-data-dup-header": "dup.csv:1: column 'label' appears twice",
        "run-data-one-class": "at least two classes",
        "run-data-nan-label": "nan.csv:62: no label",
        "run-data-empty-label": "empty.csv:62: no label",
        "run-data-extra-fields": "extra.csv:62: 3 fields, the header has 2",
        "run-data-broken-quote": "quote.csv: line 62",
        "run-model-no-tokenizer": "has no tokenizer files",
        "run-autodistil-non-bert": "BERT-style",
        "export-onnx-num-labels": "num_labels must be a whole number >= 1, got -1",
        "export-onnx-103-gb": "GB as float32",
        "export-onnx-truncated": "model.safetensors is damaged or truncated",
        "export-onnx-seq-len": "at most 32",
        "export-onnx-out-unwritable": "/proc/lowcarb-fuzz/out",
        "measure-units-inf": "expected a finite number, got 'inf'",
        "report-out-unwritable": "/proc/lowcarb-fuzz/out",
        "compare-out-is-a-file": "a-file is a file, not a folder",
        "mup-out-is-a-file": "a-file",
        "parsec-out-is-a-file": "a-file",
        "mutransfer-out-unwritable": "/proc/lowcarb-fuzz/out",
        "mutransfer-old-format": "mutransfer:` section",
        "search-out-is-a-file": "a-file",
    }
    wrong = {k: r[k]["stderr"] for k, v in expect.items() if v not in r[k]["stderr"]}
    assert not wrong, wrong


def test_no_run_is_left_running_and_no_file_half_written(fuzz):
    from lowcarb.store import RunStore

    store = RunStore(fuzz["home"] / "runs.db")
    runs = store.list_runs(limit=1000)
    assert runs, "the legal runs were stored"
    assert [r.run_id for r in runs if r.status == "running"] == []
    leftovers = [str(p) for p in fuzz["base"].rglob("*") if p.name.startswith(TEMPORARY_PREFIX)]
    assert leftovers == []
    for report in fuzz["base"].rglob("report.html"):
        assert report.read_text().rstrip().endswith("</html>"), report
    def non_standard(constant: str) -> None:
        raise AssertionError(f"{constant} in a JSON file")

    for metrics in fuzz["base"].rglob("metrics.json"):
        json.loads(metrics.read_text(), parse_constant=non_standard)  # whole, standard JSON


def test_hostile_names_are_listed_shown_compared_and_reported(fuzz):
    r = fuzz["results"]
    for case in fuzz["table"]:
        if case.get("legal"):
            result = r[case["id"]]
            assert result["rc"] == 0 and "Traceback" not in result["stderr"], (case["id"], result["stderr"][-800:])
    assert "[/bold] x [link=https://evil.example]y[/link]" in r["hostile-runs"]["stdout"]
    assert "\x1b[2J" not in r["hostile-runs"]["stdout"] + r["hostile-show"]["stdout"]
    assert "\\x1b[2J" in r["hostile-show"]["stdout"]  # shown, inert
    work = fuzz["base"] / "work"
    md = (work / "h.md").read_text()
    assert "<script>" not in md and "\\[/bold\\] x" in md
    assert "<script>z" not in (work / "h.html").read_text()
    compared = list((work / "cmp").glob("compare-*.md"))
    assert compared and "<script>" not in compared[0].read_text()


def test_sigterm_and_sighup_mark_the_run_interrupted(fuzz):
    from lowcarb.store import RunStore

    store = RunStore(fuzz["home"] / "runs.db")
    for case_id, name in (("sigterm-run", "SIGTERM"), ("sighup-run", "SIGHUP")):
        r = fuzz["results"][case_id]
        assert r["signalled"], f"{case_id}: the run ended before the signal ({r['stdout'][-300:]})"
        assert r["rc"] == 130, (case_id, r["stderr"])
        (line,) = _error_lines(r["stderr"])
        assert line.startswith("lowcarb run: interrupted by " + name), line
        run_id = re.search(r"run ([0-9a-f]{8})", line).group(1)
        assert store.get_run(run_id).status == "interrupted"


def test_sigterm_stops_measure_and_its_command(fuzz):
    from lowcarb.store import RunStore

    r = fuzz["results"]["sigterm-measure"]
    assert r["signalled"] and not r["timed_out"]
    assert r["seconds"] < 25, "the measured command got the signal too (it would sleep 30 s)"
    assert r["rc"] == 128 + 15, r["stderr"]
    (line,) = _error_lines(r["stderr"])
    assert line == "lowcarb measure: stopped by SIGTERM"
    (run,) = [x for x in RunStore(fuzz["home"] / "runs.db").list_runs(limit=1000) if x.name == "sleeper"]
    assert run.status == "interrupted"


def test_sigterm_during_a_search_is_one_line_and_ends_every_run(fuzz):
    r = fuzz["results"]["sigterm-search"]
    assert r["signalled"] and not r["timed_out"], r["stdout"][-500:]
    assert r["rc"] in (130, 143) and "Traceback" not in r["stderr"], r["stderr"][-2000:]
    lines = _error_lines(r["stderr"])
    assert len(lines) == 1 and lines[0].startswith("lowcarb search: "), r["stderr"]


def test_full_disk_is_one_line_and_leaves_nothing_half_written(fuzz):
    from lowcarb.store import RunStore

    r = fuzz["results"]["full-disk-run"]
    assert r["disk"] in ("tmpfs", "fsize")
    assert r["rc"] == 1 and "Traceback" not in r["stderr"], r["stderr"]
    (line,) = _error_lines(r["stderr"])
    reason = "No space left on device" if r["disk"] == "tmpfs" else "File too large"
    assert line.startswith("lowcarb run: error: ") and reason in line and str(fuzz["base"] / "full") in line, line
    run_id = re.search(r"run ([0-9a-f]{8}) marked failed", line).group(1)
    assert RunStore(fuzz["home"] / "runs.db").get_run(run_id).status == "failed"
    # What is on the full disk is whole: no temporary file, no cut report or metrics.json.
    files = r["files"] if r["disk"] == "tmpfs" else {
        str(p.relative_to(fuzz["base"] / "full")): {"bytes": p.stat().st_size, "whole": True}
        for p in (fuzz["base"] / "full").rglob("*") if p.is_file()
    }
    assert files is not None and files, "the run wrote its first files before the disk filled"
    assert not [name for name in files if Path(name).name.startswith(TEMPORARY_PREFIX)], files
    assert all(info["whole"] for info in files.values()), files
