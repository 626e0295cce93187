"""The `distill` stage inside real (tiny) recipe runs: a tiny BERT teacher on a small text table."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from lowcarb.models import load_minilm_tokenizer
from lowcarb.pipeline import recipe_from_dict, run_recipe
from lowcarb.store.runstore import RunStore

WORDS = ["good", "great", "fine", "bad", "awful", "poor", "movie", "plot", "the", "a"]


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill-stage")
    g = torch.Generator().manual_seed(0)
    rows = ["text\tlabel"]
    for _ in range(64):
        idx = torch.randint(0, len(WORDS), (5,), generator=g).tolist()
        words = [WORDS[i] for i in idx]
        label = int(sum(w in ("good", "great", "fine") for w in words) >= sum(w in ("bad", "awful", "poor") for w in words))
        rows.append(f"{' '.join(words)}\t{label}")
    (root / "train.tsv").write_text("\n".join(rows) + "\n")
    (root / "dev.tsv").write_text("\n".join(rows[:1] + rows[1:17]) + "\n")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2)
    model_dir = root / "tiny-bert"
    BertForSequenceClassification(config).save_pretrained(model_dir)
    load_minilm_tokenizer().save_pretrained(model_dir)
    (root / "extra.txt").write_text("good plot\nawful movie\nthe plot\n")
    return root


def run(root, tmp_path, stages):
    recipe = recipe_from_dict({
        "name": "tiny-distill",
        "model": {"name": str(root / "tiny-bert")},
        "data": {"train": str(root / "train.tsv"), "dev": str(root / "dev.tsv"), "test_fraction": 0.0,
                 "max_length": 16},
        "train": {"epochs": 1, "batch_size": 16, "lr": 1.0e-3, "seed": 0, "quiet": True},
        "evaluation": {"threads": 1, "latency_batch_sizes": [1], "inferences": 10},
        "report": "none",
        "stages": stages,
    })
    result = run_recipe(recipe, out_dir=tmp_path, quiet=True, store=RunStore(tmp_path / "runs.db"))
    assert result.status == "completed", result.error
    return result


def stage(result, name):
    return next(s for s in result.run["stages"] if s["name"] == name and not s.get("auto"))


@pytest.mark.parametrize("method", ["kd", "minilm"])
def test_distill_stage_replaces_the_model_with_a_layer_selected_student(tiny_setup, tmp_path, method):
    result = run(tiny_setup, tmp_path, ["train", {"distill": {"method": method, "num_layers": 2}}])
    record = stage(result, "distill")
    summary = record["summary"]
    assert summary["teacher_layers"] == [1, 3] and summary["method"] in ("LogitKD", "MiniLM")
    assert summary["params_after"] < summary["params_before"]
    assert summary["steps"] == 4 and summary["teacher_forward_examples"] == 64
    assert record["footprint"]["energy_j"] > 0  # the stage ran inside the ledger


def test_distill_stage_xtremedistil_with_a_smaller_config_and_unlabelled_text(tiny_setup, tmp_path):
    result = run(tiny_setup, tmp_path, [{"distill": {
        "method": "xtremedistil", "num_layers": 1, "hidden_size": 16, "num_heads": 2,
        "unlabelled": str(tiny_setup / "extra.txt"), "epochs": 2}}])
    summary = stage(result, "distill")["summary"]
    assert [s["name"] for s in summary["stages"]] == ["Representation", "Logits", "Labels"]
    assert summary["steps"] == 8 and summary["student_init"] == "truncated"


def test_distill_stage_settings_are_checked_at_the_edge():
    base = {"model": {"name": "cnn"}, "data": {}}
    with pytest.raises(ValueError, match="xtremedistil"):
        recipe_from_dict({**base, "stages": [{"distill": {"method": "kd", "unlabelled": "x.txt"}}]})
    with pytest.raises(ValueError, match="method"):
        recipe_from_dict({**base, "stages": [{"distill": {"method": "magic"}}]})


@pytest.mark.parametrize(("settings", "unread"), [
    ({"method": "hard", "temperature": 4.0}, "temperature"),
    ({"method": "xtremedistil", "alpha": 0.9}, "alpha"),
    ({"method": "kd", "relation_heads": 4, "teacher_layer": 2}, "relation_heads, teacher_layer"),
    ({"method": "tinybert", "minilm_version": 1}, "minilm_version"),
])  # fmt: skip
def test_a_loss_setting_the_method_ignores_fails_before_any_work(tiny_setup, tmp_path, settings, unread):
    recipe = recipe_from_dict({
        "name": "tiny-distill", "model": {"name": str(tiny_setup / "tiny-bert")},
        "data": {"train": str(tiny_setup / "train.tsv"), "dev": str(tiny_setup / "dev.tsv"),
                 "test_fraction": 0.0, "max_length": 16},
        "report": "none", "stages": ["train", {"distill": {"num_layers": 2, **settings}}],
    })  # fmt: skip
    result = run_recipe(recipe, out_dir=tmp_path, quiet=True, store=RunStore(tmp_path / "runs.db"))
    assert result.status == "failed"
    assert f"distill: method {settings['method']} does not use {unread} (" in result.error
    assert [r["label"] for r in result.run["stages"]] in ([], ["setup"])  # not even the train ran


def test_the_settings_a_method_reads_are_accepted():
    from types import SimpleNamespace

    from lowcarb.pipeline.stages.distill import DistillStageConfig
    from lowcarb.pipeline.stages.distill_lm import check_distill

    ctx = SimpleNamespace(recipe=SimpleNamespace(task="text-classification"))
    check_distill(ctx, DistillStageConfig(method="minilm", temperature=3.0, alpha=0.2, relation_heads=4,
                                          teacher_layer=-2, minilm_version=1))
    check_distill(ctx, DistillStageConfig(method="tinybert", temperature=3.0, alpha=0.2))
    check_distill(ctx, DistillStageConfig(method="hard"))  # defaults are never "set"


@pytest.mark.parametrize("bits", [8, 4])
def test_vocab_stage_keeps_the_training_tokens_in_int8_or_4_bits(tiny_setup, tmp_path, bits):
    result = run(tiny_setup, tmp_path, [{"distill": {"method": "kd", "num_layers": 1, "max_steps": 2}},
                                        {"vocab": {"bits": bits, "group_size": 16}}])
    record = stage(result, "vocab")
    summary = record["summary"]
    # The table keeps the ten words' tokens and the special tokens, far fewer than 30,522.
    assert summary["vocab_before"] == 30522 and 10 <= summary["vocab_after"] < 30
    assert summary["bits"] == bits
    # What remains is mostly the 30,522-entry int16 id map.
    assert summary["table_bytes_after"] < summary["table_bytes_before"] / 50
    evaluations = [s for s in result.run["stages"] if s.get("auto")]
    assert evaluations[-1]["metrics"]["dev_examples"] == 16  # the pruned model evaluates end to end
    assert result.run["model"]["reloads"], result.run["model"]


def test_compress_all_stages_chain_and_the_final_model_reloads(tiny_setup, tmp_path):
    result = run(tiny_setup, tmp_path, [
        {"distill": {"method": "kd", "num_layers": 2, "max_steps": 2}},
        {"lowrank": {"param_ratio": 0.5, "targets": ["*encoder*"], "max_steps": 2}},
        {"vocab": {"bits": 4, "group_size": 16}},
        {"quantize": {"mode": "dynamic"}},
    ])
    assert result.run["model"]["reloads"], result.run["model"]
    labels = [s["label"] for s in result.run["stages"] if not s.get("auto")]
    assert labels == ["distill", "lowrank", "vocab", "quantize"]


@pytest.mark.parametrize("name", ["distill-minilm.yaml", "compress-all.yaml"])
def test_shipped_distillation_recipes_validate(name):
    from pathlib import Path

    from lowcarb.pipeline import load_recipe

    path = Path(__file__).resolve().parents[3] / "recipes" / name
    recipe = load_recipe(path, ["data.train=train.tsv"])
    assert [s.name for s in recipe.stages][:2] == ["train", "distill"]


def test_distill_stage_takes_a_checkpoint_teacher(tiny_setup, tmp_path):
    teacher_dir = str(tiny_setup / "tiny-bert")
    result = run(tiny_setup, tmp_path, [
        {"distill": {"teacher": teacher_dir, "student_from": "model", "layers": [0, 3], "max_steps": 1}},
    ])
    summary = stage(result, "distill")["summary"]
    assert summary["teacher"] == teacher_dir and summary["teacher_layers"] == [0, 3]
    recipe = recipe_from_dict({
        "model": {"name": teacher_dir}, "data": {"train": str(tiny_setup / "train.tsv")},
        "report": "none", "stages": [{"distill": {"teacher": str(tiny_setup / "nope")}}],
    })
    failed = run_recipe(recipe, out_dir=tmp_path, quiet=True, store=RunStore(tmp_path / "r.db"))
    assert failed.status == "failed" and "does not exist" in failed.error


def test_distill_trains_the_students_trained_head_without_the_fresh_head_lr(tiny_setup, tmp_path, monkeypatch):
    import lowcarb.train.loop as loop

    seen = []
    real = loop.default_param_groups

    def spy(model, weight_decay, **kwargs):
        seen.append(kwargs.get("head_lr"))
        return real(model, weight_decay, **kwargs)

    monkeypatch.setattr(loop, "default_param_groups", spy)
    recipe = recipe_from_dict({
        "name": "tiny-distill-head-lr",
        "model": {"name": str(tiny_setup / "tiny-bert")},
        "data": {"train": str(tiny_setup / "train.tsv"), "dev": str(tiny_setup / "dev.tsv"),
                 "test_fraction": 0.0, "max_length": 16},
        "train": {"epochs": 1, "batch_size": 16, "lr": 1.0e-3, "head_lr": 5.0e-2, "seed": 0, "quiet": True},
        "evaluation": {"threads": 1, "latency_batch_sizes": [1], "inferences": 10},
        "report": "none",
        "stages": ["train", {"distill": {"method": "kd", "num_layers": 2}}],
    })
    result = run_recipe(recipe, out_dir=tmp_path, quiet=True, store=RunStore(tmp_path / "runs.db"))
    assert result.status == "completed", result.error
    # The train stage gives the fresh head its lr; the student's (trained) head gets none.
    assert seen == [5.0e-2, None]


def test_the_old_vocab_int8_key_names_its_replacement():
    from lowcarb.pipeline.stages.vocab import VocabStageConfig

    with pytest.raises(ValueError, match="replaced by vocab.bits.*bits: 8"):
        VocabStageConfig(int8=True)
    with pytest.raises(ValueError, match="group_size"):
        VocabStageConfig(bits=4, group_size=3)
    default = VocabStageConfig()  # the row storage benchmarks/sweeps/vocab_row_bits.py chose
    assert (default.bits, default.group_size) == (4, 128)
