"""The runner end to end on digits, in a few steps: stored run, artifacts, report, payback, Ctrl-C."""

import importlib
import json

import pytest
import torch

from lowcarb.models import DigitsCNN
from lowcarb.pipeline import load_recipe, recipe_from_dict, run_recipe
from lowcarb.pipeline.context import RunContext
from lowcarb.pipeline.registry import StageConfig, register_stage
from lowcarb.report.stored import load_run
from lowcarb.store.runstore import RunStore

FAST = ["train.max_steps=3", "train.batch_size=16", "evaluation.inferences=64"]


class ShrinkConfig(StageConfig):
    channels: tuple[int, int] = (4, 8)
    hidden_dim: int = 16


@register_stage("test-shrink", ShrinkConfig)
def shrink(ctx: RunContext, cfg: ShrinkConfig) -> RunContext:
    """Replace the CNN with a narrower one (a model-changing stage, as a technique would be)."""
    before = sum(p.numel() for p in ctx.model.parameters())
    ctx.model = DigitsCNN(ctx.data.feature_shape, ctx.data.num_labels, cfg.channels, cfg.hidden_dim, 0.0)
    ctx.note(params_before=before, params_after=sum(p.numel() for p in ctx.model.parameters()))
    return ctx


@register_stage("test-interrupt", changes_model=False)
def interrupt(ctx: RunContext, cfg: StageConfig) -> RunContext:
    """Acts as if the user pressed Ctrl-C in the middle of this stage."""
    raise KeyboardInterrupt


@register_stage("test-crash", changes_model=False)
def crash(ctx: RunContext, cfg: StageConfig) -> RunContext:
    """A stage with a bug."""
    raise RuntimeError("boom in a stage")


@register_stage("test-forgets-return", changes_model=False)
def forgets(ctx: RunContext, cfg: StageConfig):
    """Returns nothing, a common slip in a new stage."""


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs.db")


def test_default_recipe_end_to_end(tmp_path, store):
    threads = torch.get_num_threads()
    result = run_recipe(load_recipe(None, FAST), out_dir=tmp_path / "out", quiet=True, store=store)
    assert result.status == "completed", result.error
    assert torch.get_num_threads() == threads  # the recipe's thread count does not leak

    folder = result.artifacts_dir
    assert folder == tmp_path / "out" / result.run_id
    # Stages: setup window, train, evaluate (the evaluate directly after train is its evaluation);
    # every later model-changing stage is followed by an evaluation of its model.
    labels = [s["label"] for s in result.run["stages"]]
    assert labels[:3] == ["setup", "train", "evaluate"]
    records = result.run["stages"]
    for i, record in enumerate(records):
        if record["changes_model"]:
            assert records[i + 1]["name"] == "evaluate"
            assert records[i + 1]["model_version"] == record["model_version"]
            assert records[i + 1]["metrics"]["size_bytes"] > 0
    train, evaluate = records[1:3]
    assert train["summary"]["steps"] == 3
    assert train["model_version"] == 1 and evaluate["model_version"] == 1
    metrics = evaluate["metrics"]
    final = [r for r in records if r["metrics"]][-1]["metrics"]
    for key in ("dev_accuracy", "test_accuracy", "test_macro_f1", "latency_b1_p50_ms",
                "latency_b32_p95_ms", "params", "size_bytes", "flops_per_example",
                "per1k_energy_j", "per1k_operational_g", "per1k_embodied_g"):
        assert metrics[key] is not None, key
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["per1k_total_g"] == pytest.approx(
        metrics["per1k_operational_g"] + metrics["per1k_embodied_g"]
    )
    assert train["footprint"]["energy_j"] > 0 and train["footprint"]["closed"]

    # Artifacts: metrics.json (the same run), a model folder that reloads, the reports.
    stored = json.loads((folder / "metrics.json").read_text())
    assert stored["status"] == "completed" and stored["id"] == result.run_id
    assert result.run["model"]["reloads"] is True
    module, _, name = result.run["model"]["load_with"].rpartition(".")
    handle = getattr(importlib.import_module(module), name)(folder / "model")
    assert handle.family == "cnn"
    assert list((folder / "model").glob("*.safetensors"))
    html = (folder / "report.html").read_text()
    for section in ('id="models"', 'id="co2-per-stage"', 'id="tradeoff"', 'id="payback"',
                    'id="ledger"', 'id="notes"', 'id="recipe"', "data:image/png;base64,"):
        assert section in html
    assert "## Payback" in (folder / "report.md").read_text()

    # The store holds the same run: status, stage results, footprints, artifacts folder.
    record = store.get_run(result.run_id)
    assert record.status == "completed" and record.kind == "recipe"
    assert record.artifacts_dir == str(folder.resolve())
    again = load_run(store, result.run_id)
    assert [s["label"] for s in again["stages"]] == labels
    assert again["stages"][2]["metrics"] == metrics
    assert again["stages"][-1]["metrics"] == final
    names = {f["name"] for f in store.footprints(result.run_id)}
    assert {"setup", "train", "evaluate"} <= names


def test_model_changing_stage_is_evaluated_and_gets_a_payback_line(tmp_path, store):
    recipe = recipe_from_dict(
        {"stages": ["train", "test-shrink"], "threads": 1}, overrides=FAST
    )
    result = run_recipe(recipe, out_dir=tmp_path, quiet=True, store=store)
    assert result.status == "completed", result.error
    labels = [s["label"] for s in result.run["stages"]]
    # No evaluate stage in the recipe: the runner evaluates after each model-changing stage.
    assert labels == ["setup", "train", "train:evaluate", "test-shrink", "test-shrink:evaluate"]
    by_label = {s["label"]: s for s in result.run["stages"]}
    assert by_label["test-shrink"]["summary"]["params_after"] < by_label["test-shrink"]["summary"]["params_before"]
    assert by_label["test-shrink:evaluate"]["metrics"]["params"] == by_label["test-shrink"]["summary"]["params_after"]

    from lowcarb.report.summary import model_rows, paybacks

    rows = model_rows(result.run)
    assert [r.label for r in rows] == ["train", "test-shrink"]
    (line,) = paybacks(rows)
    spent = by_label["test-shrink"]["footprint"]["total_g"]
    assert line.spent_g == pytest.approx(spent)
    before = by_label["train:evaluate"]["metrics"]["per1k_total_g"]
    after = by_label["test-shrink:evaluate"]["metrics"]["per1k_total_g"]
    assert line.saved_g_per_million == pytest.approx((before - after) * 1000)
    html = (result.artifacts_dir / "report.html").read_text()
    assert 'id="payback-lines"' in html and "test-shrink: spent" in html


def test_interrupted_run_keeps_finished_stages(tmp_path, store):
    recipe = recipe_from_dict({"stages": ["train", "evaluate", "test-interrupt", "train"]},
                              overrides=FAST)
    result = run_recipe(recipe, out_dir=tmp_path, quiet=True, store=store)
    assert result.status == "interrupted"
    statuses = [(s["label"], s["status"]) for s in result.run["stages"]]
    assert statuses == [("setup", "completed"), ("train", "completed"),
                        ("evaluate", "completed"), ("test-interrupt", "interrupted")]
    assert store.get_run(result.run_id).status == "interrupted"
    stored = load_run(store, result.run_id)
    assert [s["status"] for s in stored["stages"]] == [s for _, s in statuses]
    assert stored["stages"][2]["metrics"]["test_accuracy"] is not None
    # The interrupted stage's ledger window is kept too (it cost something).
    assert stored["stages"][3]["footprint"]["duration_s"] >= 0
    # A report of the finished part is written; no final model for an unfinished run.
    assert "interrupted" in (result.artifacts_dir / "report.html").read_text()
    assert not (result.artifacts_dir / "model").exists()


def test_crash_marks_run_failed_with_error_and_traceback(tmp_path, store):
    recipe = recipe_from_dict({"stages": ["test-crash"]}, overrides=FAST)
    result = run_recipe(recipe, out_dir=tmp_path, quiet=True, store=store)
    assert result.status == "failed"
    assert result.error == "RuntimeError: boom in a stage"
    assert "boom in a stage" in (result.artifacts_dir / "error.txt").read_text()
    assert store.get_run(result.run_id).status == "failed"
    assert store.get_run(result.run_id).metrics["error"] == result.error


def test_stage_that_forgets_to_return_ctx_is_named(tmp_path, store):
    recipe = recipe_from_dict({"stages": ["test-forgets-return"]}, overrides=FAST)
    result = run_recipe(recipe, out_dir=tmp_path, quiet=True, store=store)
    assert result.status == "failed"
    assert "stage 'test-forgets-return'" in result.error and "must return the RunContext" in result.error


def test_bad_data_path_fails_with_the_path(tmp_path, store):
    recipe = recipe_from_dict(
        {"model": {"name": "transformer"}, "data": {"train": str(tmp_path / "missing.csv")}}
    )
    result = run_recipe(recipe, out_dir=tmp_path, quiet=True, store=store)
    assert result.status == "failed"
    assert "missing.csv" in result.error


def test_text_table_with_string_labels_end_to_end(tmp_path, store):
    table = tmp_path / "reviews.csv"
    lines = ["review,stars"] + [
        f"{'great fun' if i % 2 else 'dull and slow'} {i},{'good' if i % 2 else 'bad'}"
        for i in range(60)
    ]
    table.write_text("\n".join(lines) + "\n")
    recipe = recipe_from_dict(
        {
            "model": {"name": "transformer", "d_model": 16, "num_layers": 1, "num_heads": 2,
                      "ffn_dim": 32, "max_length": 32},
            "data": {"train": str(table), "text_column": "review", "label_column": "stars"},
            "threads": 1,
            "evaluation": {"latency_batch_sizes": [1, 4]},
        },
        overrides=FAST,
    )
    result = run_recipe(recipe, out_dir=tmp_path, quiet=True, store=store)
    assert result.status == "completed", result.error
    metrics = result.run["stages"][-1]["metrics"]
    assert metrics["test_examples"] == 6 and metrics["dev_examples"] == 6
    assert metrics["latency_b4_batch_size"] == 4 and metrics["latency_b4_p95_ms"] > 0
    assert "latency_b32_p50_ms" not in metrics
    model_dir = result.artifacts_dir / "model"
    assert result.run["model"]["reloads"] is True
    labels = json.loads((model_dir / "label_map.json").read_text())
    assert "good" in json.dumps(labels) and "bad" in json.dumps(labels)


@register_stage("test-where", changes_model=False)
def where(ctx: RunContext, cfg: StageConfig) -> RunContext:
    """Records what a stage sees of the run's placement."""
    loader = ctx.loader("train", 8)
    ctx.note(
        ctx_device=str(ctx.device),
        model_device=str(next(ctx.model.parameters()).device),
        train_precision=ctx.train_config().precision,
        pin_memory=loader.pin_memory,
    )
    return ctx


def test_the_run_records_where_it_ran_and_how_latency_was_timed(tmp_path, store):
    overrides = [*FAST, "device=cpu", "precision=bf16", "stages=[test-where, train, evaluate]"]
    result = run_recipe(load_recipe(None, overrides), out_dir=tmp_path, quiet=True, store=store)
    assert result.status == "completed", result.error
    stored = json.loads((result.artifacts_dir / "metrics.json").read_text())
    assert stored["placement"]["device"] == "cpu" and stored["placement"]["precision"] == "bf16"
    assert stored["placement"]["device_requested"] == "cpu" and stored["placement"]["device_name"]
    seen = result.run["stages"][1]["summary"]
    assert seen == {"ctx_device": "cpu", "model_device": "cpu", "train_precision": "bf16",
                    "pin_memory": False}
    metrics = result.run["stages"][-1]["metrics"]
    assert metrics["device"] == "cpu" and metrics["precision"] == "bf16"
    for batch in ("b1", "b32"):
        low, p50, high = (metrics[f"latency_{batch}_{k}"] for k in ("p50_low_ms", "p50_ms", "p50_high_ms"))
        assert 0 < low <= p50 <= high
        assert metrics[f"latency_{batch}_repeats"] >= 3
    assert isinstance(metrics["latency_busy"], bool) and metrics["latency_cores"] >= 1
    assert "Computed on cpu" in (result.artifacts_dir / "report.md").read_text()


def test_a_gpu_that_is_not_there_stops_the_run_before_it_starts(tmp_path, store, monkeypatch):
    from lowcarb.errors import DeviceError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="use device cpu, or auto"):
        run_recipe(load_recipe(None, [*FAST, "device=cuda"]), out_dir=tmp_path / "out", store=store)
    assert store.list_runs() == [] and not (tmp_path / "out").exists()


# --- hostile conditions (issue 19): bad --out, signals, a full disk, checks before training ----

import errno  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402

from lowcarb import files  # noqa: E402
from lowcarb.errors import ModelError, PathError  # noqa: E402

DISK = {"full": False}


@register_stage("test-sigterm", changes_model=False)
def send_sigterm(ctx: RunContext, cfg: StageConfig) -> RunContext:
    """What `timeout`, Slurm or `docker stop` do to a running stage."""
    os.kill(os.getpid(), signal.SIGTERM)
    return ctx


@register_stage("test-sighup", changes_model=False)
def send_sighup(ctx: RunContext, cfg: StageConfig) -> RunContext:
    """What closing the terminal does."""
    os.kill(os.getpid(), signal.SIGHUP)
    return ctx


@register_stage("test-disk-fills", changes_model=False)
def disk_fills(ctx: RunContext, cfg: StageConfig) -> RunContext:
    """From here on, every write lowcarb makes finds the disk full."""
    DISK["full"] = True
    return ctx


def _refuse_train(ctx: RunContext, cfg: StageConfig) -> None:
    raise ModelError("test-picky: this model is not one I can work on")


@register_stage("test-picky", changes_model=False, check=_refuse_train)
def picky(ctx: RunContext, cfg: StageConfig) -> RunContext:
    """A stage with an up-front check that always refuses."""
    return ctx


@pytest.fixture
def full_disk(monkeypatch):
    real_write = os.write
    DISK["full"] = False

    def write(fd, data):
        if DISK["full"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(files.os, "write", write)
    yield
    DISK["full"] = False


def _no_temporaries(folder):
    return [str(p) for p in folder.rglob("*") if p.name.startswith(files.TEMPORARY_PREFIX)]


@pytest.mark.parametrize("bad", ["a-file", "a-file/sub", "/proc/lowcarb-out"])
def test_unwritable_out_is_one_line_before_the_run_is_recorded(tmp_path, store, bad):
    (tmp_path / "a-file").write_text("not a folder")
    out = bad if bad.startswith("/") else tmp_path / bad
    with pytest.raises(PathError) as err:
        run_recipe(load_recipe(None, FAST), out_dir=out, quiet=True, store=store)
    assert str(out) in str(err.value) and "\n" not in str(err.value)
    assert store.list_runs() == []


@pytest.mark.parametrize("stage, name", [("test-sigterm", "SIGTERM"), ("test-sighup", "SIGHUP")])
def test_sigterm_and_sighup_mark_the_run_interrupted(tmp_path, store, stage, name):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)
    recipe = recipe_from_dict({"stages": ["train", stage, "train"]}, overrides=FAST)
    result = run_recipe(recipe, out_dir=tmp_path, quiet=True, store=store)
    assert result.status == "interrupted"
    assert name in result.error
    assert store.get_run(result.run_id).status == "interrupted"
    statuses = {s["label"]: s["status"] for s in result.run["stages"]}
    assert statuses == {"setup": "completed", "train": "completed", "train:evaluate": "completed",
                        stage: "interrupted"}
    assert (result.artifacts_dir / "report.html").exists()
    # The handlers are the caller's again afterwards.
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)) == before


def test_an_ignored_sighup_stays_ignored(tmp_path, store):
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        recipe = recipe_from_dict({"stages": ["test-sighup"]}, overrides=FAST)
        result = run_recipe(recipe, out_dir=tmp_path, quiet=True, store=store)
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert result.status == "completed", result.error


def test_full_disk_fails_the_run_with_the_path_and_leaves_no_half_files(tmp_path, store, full_disk):
    recipe = recipe_from_dict({"stages": ["train", "test-disk-fills", "train"]}, overrides=FAST)
    result = run_recipe(recipe, out_dir=tmp_path, quiet=True, store=store)
    assert result.status == "failed"
    assert "metrics.json" in result.error and "No space left on device" in result.error
    assert "\n" not in result.error and "Traceback" not in result.error
    assert store.get_run(result.run_id).status == "failed"
    assert _no_temporaries(tmp_path) == []
    # What was written before the disk filled is whole: metrics.json of the finished stages.
    written = json.loads((result.artifacts_dir / "metrics.json").read_text())
    assert [s["label"] for s in written["stages"]] == ["setup", "train", "train:evaluate"]
    assert not (result.artifacts_dir / "report.html").exists()
    assert not (result.artifacts_dir / "error.txt").exists()
    # The store keeps the stages that finished before the disk filled.
    stored = load_run(store, result.run_id)
    assert [s["status"] for s in stored["stages"]][:3] == ["completed"] * 3


def test_full_disk_while_saving_the_model_keeps_no_half_model(tmp_path, store, monkeypatch):
    # The runner saves through ctx.save_model (lowcarb.pipeline.context).
    import lowcarb.pipeline.context as runner

    def save_half(handle, folder):
        (folder / "model.safetensors").write_bytes(b"half a model")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(runner, "save_model", save_half)
    recipe = recipe_from_dict({"stages": ["train"]}, overrides=FAST)
    result = run_recipe(recipe, out_dir=tmp_path, quiet=True, store=store)
    assert result.status == "failed"
    assert result.error.startswith("saving the model failed: cannot write ")
    assert "model: No space left on device" in result.error
    assert not (result.artifacts_dir / "model").exists()
    assert sorted(p.name for p in result.artifacts_dir.iterdir()) == ["metrics.json", "report.html", "report.md"]
    assert store.get_run(result.run_id).status == "failed"


def test_an_interrupt_during_the_clean_up_still_ends_the_stored_run(tmp_path, store, monkeypatch):
    import lowcarb.pipeline.runner as runner

    def second_ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "write_reports", second_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(load_recipe(None, FAST), out_dir=tmp_path, quiet=True, store=store)
    (record,) = store.list_runs()
    assert record.status == "interrupted"


def test_stage_checks_run_before_any_stage(tmp_path, store):
    recipe = recipe_from_dict({"stages": ["train", "test-picky"]}, overrides=FAST)
    result = run_recipe(recipe, out_dir=tmp_path, quiet=True, store=store)
    assert result.status == "failed"
    assert result.error == "test-picky: this model is not one I can work on"
    assert [s["label"] for s in result.run["stages"]] == ["setup"]  # nothing was trained
    assert not (result.artifacts_dir / "error.txt").exists()  # a user's error, not a bug


def test_autodistil_on_a_non_bert_model_fails_before_training(tmp_path, store):
    table = tmp_path / "t.csv"
    table.write_text("text,label\n" + "".join(f"text {i},{i % 2}\n" for i in range(200)))
    recipe = recipe_from_dict(
        {
            "model": {"name": "transformer", "d_model": 16, "num_layers": 1, "num_heads": 2, "ffn_dim": 32},
            "data": {"train": str(table)},
            "stages": ["train", "autodistil"],
        },
        overrides=FAST,
    )
    result = run_recipe(recipe, out_dir=tmp_path, quiet=True, store=store)
    assert result.status == "failed"
    assert "autodistil" in result.error and "BERT-style" in result.error
    assert [s["label"] for s in result.run["stages"]] == ["setup"]
