"""The `distill` stage on task: causal-lm, in real recipe runs on a tiny random Llama (4 blocks)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lowcarb.adapt.lora import lora_layers
from lowcarb.compress.distill import spread_layers
from lowcarb.models import load_model
from lowcarb.pipeline import load_recipe, recipe_from_dict, run_recipe
from lowcarb.pipeline.recipe import read_recipe_file
from lowcarb.pipeline.stages import distill_lm
from lowcarb.store.runstore import RunStore
from lowcarb.train.generation import greedy_generate, left_pad
from tests.lm_tiny import save_tiny_llama

REPO = Path(__file__).resolve().parents[3]
FAST_EVAL = {"generated_tokens": 8, "timing_new_tokens": 2, "max_new_tokens": 3, "generation_batch_sizes": [1],
             "generation_repeats": 1}  # fmt: skip
PROMPTS = [[5, 9, 33, 7], [12, 44, 3]]


@pytest.fixture(scope="module")
def llama4(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("llama4"), layers=4)


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lm-rows") / "train.jsonl"
    data = [{"prompt": f"the film {i} is", "response": "great" if i % 2 else "awful"} for i in range(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in data))
    return path


def _run(folder: Path, rows: Path, tmp_path: Path, stages: list, lr: float = 1e-3):
    recipe = recipe_from_dict({
        "name": "tiny-distill-lm", "task": "causal-lm", "model": {"name": str(folder)},
        "data": {"train": str(rows), "dev": str(rows), "test_fraction": 0.0, "max_length": 64},
        "train": {"max_steps": 2, "batch_size": 4, "lr": lr}, "evaluation": FAST_EVAL, "report": "none",
        "stages": stages,
    })  # fmt: skip
    return run_recipe(recipe, out_dir=tmp_path / "out", quiet=True, store=RunStore(tmp_path / "runs.db"))


def _records(result) -> dict:
    return {r["label"]: r for r in result.run["stages"]}


class Spy:
    """Wraps distill_causal_lm: the teacher's and the student's weights as the stage hands them
    over (before training), and the student object (the run's final model)."""

    def __init__(self, monkeypatch):
        self.real = distill_lm.distill_causal_lm
        monkeypatch.setattr(distill_lm, "distill_causal_lm", self)

    def __call__(self, student, teacher, *args, **kwargs):
        self.student, self.teacher, self.method = student, teacher, args[1]
        self.student_before = {k: v.clone() for k, v in student.state_dict().items()}
        self.teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
        return self.real(student, teacher, *args, **kwargs)


def _block(state: dict, i: int) -> dict:
    prefix = f"model.layers.{i}."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def test_spread_layers_keeps_the_first_and_last_block_evenly_spaced():
    assert spread_layers(15, 30) == (0, 2, 4, 6, 8, 10, 12, 14, 17, 19, 21, 23, 25, 27, 29)
    assert spread_layers(2, 4) == (0, 3) and spread_layers(4, 4) == (0, 1, 2, 3)
    assert spread_layers(1, 4) == (3,)
    with pytest.raises(ValueError, match="cannot keep 5 of 4"):
        spread_layers(5, 4)


def test_the_student_keeps_the_chosen_teacher_blocks_and_trains_with_kd(llama4, rows, tmp_path, monkeypatch):
    spy = Spy(monkeypatch)
    result = _run(llama4, rows, tmp_path, [{"distill": {"layers": 2, "temperature": 2.0, "alpha": 0.5}}])
    assert result.status == "completed", result.error
    records = _records(result)
    assert list(records) == ["setup", "distill", "distill:evaluate"]
    notes = records["distill"]["summary"]
    assert notes["teacher_layers"] == [0, 3] and notes["student_blocks"] == 2 and notes["teacher_blocks"] == 4
    assert notes["method"] == "LogitKD" and notes["steps"] == 2
    assert notes["teacher_forward_examples"] == 8  # 2 steps x batch 4, the teacher run on every batch
    assert notes["params_after"] < notes["params_before"]
    assert math.isfinite(notes["stages"][0]["train_loss"]) and notes["stages"][0]["train_loss"] > 0
    # before training: student block i is teacher block [0, 3][i]; embeddings and norm copied
    for student_i, teacher_i in enumerate((0, 3)):
        before, source = _block(spy.student_before, student_i), _block(spy.teacher_state, teacher_i)
        assert before.keys() == source.keys() and all(torch.equal(before[k], source[k]) for k in source)
    assert torch.equal(spy.student_before["model.norm.weight"], spy.teacher_state["model.norm.weight"])
    assert f"model.layers.{2}.mlp.up_proj.weight" not in spy.student_before
    # one KD step moved the student's weights away from the teacher's
    after = spy.student.state_dict()
    assert not torch.equal(after["model.layers.1.mlp.up_proj.weight"], spy.teacher_state["model.layers.3.mlp.up_proj.weight"])
    metrics = records["distill:evaluate"]["metrics"]
    assert metrics["dev_perplexity"] > 1.0 and metrics["gen_b1_decode_tokens_per_s"] > 0


def test_the_saved_student_is_a_smaller_llama_that_reloads_to_the_same_greedy_tokens(llama4, rows, tmp_path, monkeypatch):
    spy = Spy(monkeypatch)
    result = _run(llama4, rows, tmp_path, [{"distill": {"layers": [1, 2], "max_steps": 3}}])
    assert result.status == "completed", result.error
    folder = Path(result.run["model"]["path"])
    assert result.run["model"]["reloads"], result.run["model"]
    config = json.loads((folder / "config.json").read_text())
    assert config["num_hidden_layers"] == 2 and config["architectures"] == ["LlamaForCausalLM"]
    reloaded = load_model(folder).model.eval()
    assert len(reloaded.model.layers) == 2
    pad = int(load_model(folder).tokenizer.pad_token_id)
    prompts = left_pad(PROMPTS, pad_id=pad)
    kwargs = {"eos_token_id": None, "pad_token_id": pad}
    trained = spy.student.eval()
    assert torch.equal(greedy_generate(reloaded, prompts, 8, **kwargs), greedy_generate(trained, prompts, 8, **kwargs))
    assert _records(result)["distill"]["summary"]["teacher_layers"] == [1, 2]


def test_a_fraction_of_the_blocks_and_the_hard_label_baseline(llama4, rows, tmp_path):
    result = _run(llama4, rows, tmp_path, [{"distill": {"layers": 0.75, "method": "hard"}}])
    assert result.status == "completed", result.error
    notes = _records(result)["distill"]["summary"]
    assert notes["teacher_layers"] == [0, 2, 3]  # 3 of 4: spread_layers(3, 4)
    assert notes["method"] == "HardLabels" and notes["teacher_forward_examples"] == 0 and notes["steps"] == 2


def test_unmerged_lora_adapters_are_merged_into_the_teacher_first(llama4, rows, tmp_path, monkeypatch):
    spy = Spy(monkeypatch)
    result = _run(llama4, rows, tmp_path, [{"lora": {"r": 2, "merge": False, "save_adapter": "none"}},
                                           {"distill": {"layers": 2}}])  # fmt: skip
    assert result.status == "completed", result.error
    notes = _records(result)["distill"]["summary"]
    assert notes["teacher"] == "the model so far (LoRA adapters merged)"
    assert not lora_layers(spy.teacher) and not lora_layers(spy.student)
    # the student starts from the merged weights (base + B A x scaling), which now train in full
    assert torch.equal(_block(spy.student_before, 1)["self_attn.q_proj.weight"],
                       _block(spy.teacher_state, 3)["self_attn.q_proj.weight"])  # fmt: skip
    assert all(p.requires_grad for p in spy.student.parameters())
    base = load_model(llama4).model.state_dict()["model.layers.3.self_attn.q_proj.weight"]
    assert not torch.equal(base, _block(spy.teacher_state, 3)["self_attn.q_proj.weight"])


@pytest.mark.parametrize(("settings", "named"), [
    ({"method": "minilm"}, "method: minilm"),
    ({"method": "xtremedistil"}, "method: xtremedistil"),
    ({"hidden_size": 16}, "hidden_size"),
    ({"teacher": "some/folder", "student_from": "model"}, "teacher, student_from"),
    ({"relation_heads": 2}, "relation_heads"),
])  # fmt: skip
def test_encoder_only_options_fail_in_one_line_before_any_work(llama4, rows, tmp_path, settings, named):
    result = _run(llama4, rows, tmp_path, ["evaluate", {"distill": {"layers": 2, **settings}}])
    assert result.status == "failed"
    assert f"distill: {named} does not apply to task causal-lm" in result.error
    assert "\n" not in result.error.strip()
    assert [r["label"] for r in result.run["stages"]] in ([], ["setup"])  # not even the evaluate ran


def test_a_block_list_the_teacher_lacks_fails_before_any_work(llama4, rows, tmp_path):
    result = _run(llama4, rows, tmp_path, ["train", {"distill": {"layers": [0, 7]}}])
    assert result.status == "failed" and "layers [0, 7] must name distinct teacher blocks 0..3" in result.error
    assert [r["label"] for r in result.run["stages"]] in ([], ["setup"])


@pytest.mark.parametrize("before", [{"quantize": {"mode": "weight_only"}}, {"lowrank": {"param_ratio": 0.5}}])
def test_distilling_a_quantized_or_factorized_model_is_refused_before_any_work(llama4, rows, tmp_path, before):
    result = _run(llama4, rows, tmp_path, [before, {"distill": {"layers": 2}}])
    assert result.status == "failed" and f"distill comes after {next(iter(before))}" in result.error
    assert "put distill before the stages that quantize" in result.error and "\n" not in result.error
    assert [r["label"] for r in result.run["stages"]] in ([], ["setup"])


def test_a_model_carrying_factors_is_refused_as_a_teacher_even_with_lora_on_it(llama4, rows, tmp_path):
    # the transform log holds lowrank and LoRA: merging the LoRA away would leave the student a
    # log naming the teacher's blocks, so the stage refuses it (the run-time guard behind the check)
    from lowcarb.adapt import lora
    from lowcarb.compress import lowrank
    from lowcarb.errors import ConfigError
    from lowcarb.models import ModelConfig
    from lowcarb.models.causal_lm import build_causal_lm

    model = build_causal_lm(ModelConfig(name=str(llama4)), seed=0).model
    lowrank.apply(model, lowrank.LowRankConfig(param_ratio=0.5, targets=("*.gate_proj",)))
    lora.apply(model, lora.LoraConfig(r=2, alpha=4, target_modules=("q_proj",)))

    ctx = SimpleNamespace(model=model)  # teacher_of reads only ctx.model
    with pytest.raises(ConfigError, match="carries LowRankConfig"):
        distill_lm.teacher_of(ctx)


def test_distillation_honours_gradient_checkpointing(llama4, rows, tmp_path, monkeypatch):
    import contextlib

    seen = []
    real = distill_lm.gradient_checkpointing

    @contextlib.contextmanager
    def recording(model, enabled):
        with real(model, enabled):
            seen.append((enabled, bool(model.is_activation_checkpointing)))
            yield

    monkeypatch.setattr(distill_lm, "gradient_checkpointing", recording)
    recipe_train = {"max_steps": 2, "batch_size": 4, "lr": 1e-3, "gradient_checkpointing": True}
    recipe = recipe_from_dict({
        "name": "tiny-distill-lm", "task": "causal-lm", "model": {"name": str(llama4)},
        "data": {"train": str(rows), "dev": str(rows), "test_fraction": 0.0, "max_length": 64},
        "train": recipe_train, "evaluation": FAST_EVAL, "report": "none", "stages": [{"distill": {"layers": 2}}],
    })  # fmt: skip
    result = run_recipe(recipe, out_dir=tmp_path / "out", quiet=True, store=RunStore(tmp_path / "runs.db"))
    assert result.status == "completed", result.error
    assert seen == [(True, True)]


def test_the_llm_compress_recipe_validates_offline():
    recipe = load_recipe(REPO / "recipes" / "llm-compress.yaml")
    assert recipe.task == "causal-lm" and str(recipe.model.name) == "smollm2-135m"
    assert recipe.data.train is None  # the generated task
    names = [s.name for s in recipe.stages]
    assert names[0] == "evaluate" and names[-1] == "evaluate"
    assert names.index("lora") < names.index("distill") < names.index("lowrank") < names.index("quantize")
    distill = next(s.config for s in recipe.stages if s.name == "distill")
    assert distill.layers == 0.8 and distill.method == "kd"  # SmolLM2: 30 -> 24 blocks
    quantize = next(s.config for s in recipe.stages if s.name == "quantize")
    assert quantize.mode == "weight_only" and quantize.compute_dtype == "bfloat16"


def test_the_llm_compress_chain_runs_end_to_end_on_a_tiny_llama(llama4, rows, tmp_path):
    raw = read_recipe_file(REPO / "recipes" / "llm-compress.yaml")
    raw["model"] = {"name": str(llama4)}
    raw["data"] = {"train": str(rows), "test_fraction": 0.25, "max_length": 64, "seed": 0}
    raw["train"] = {**raw["train"], "max_steps": 2, "batch_size": 4}
    raw["evaluation"] = {**raw["evaluation"], **FAST_EVAL}
    raw["report"] = "none"
    for stage in raw["stages"]:
        settings = next(iter(stage.values())) if isinstance(stage, dict) else None
        if isinstance(settings, dict) and "max_steps" in settings:
            settings["max_steps"] = 2
    recipe = recipe_from_dict(raw)
    result = run_recipe(recipe, out_dir=tmp_path / "out", quiet=True, store=RunStore(tmp_path / "runs.db"))
    assert result.status == "completed", result.error
    records = _records(result)
    labels = [s.label for s in recipe.stages]
    assert set(labels) <= set(records)
    assert records["distill"]["summary"]["teacher_layers"] == [0, 2, 3]  # layers: 0.8 of 4 blocks
    assert records["lowrank"]["summary"]["transform"] == "lowrank"
    assert records["quantize"]["summary"]["kernel"] == "int8pack_mm"
    # evaluation.splits: [test]: the evaluations the runner adds after a stage score test only
    auto = records["lora:evaluate"]["metrics"]
    assert any(k.startswith("test_") for k in auto) and not any(k.startswith("dev_") for k in auto)
    final = records[labels[-1]]["metrics"]
    first = records[labels[0]]["metrics"]
    assert final["size_bytes"] < first["size_bytes"]
    assert result.run["model"]["reloads"], result.run["model"]


def test_kd_tokens_all_reaches_the_objective_and_the_notes(llama4, rows, tmp_path, monkeypatch):
    spy = Spy(monkeypatch)
    result = _run(llama4, rows, tmp_path, [{"distill": {"layers": 2, "kd_tokens": "all"}}])
    assert result.status == "completed", result.error
    assert spy.method.tokens == "all" and spy.method.alpha == 0.5
    assert _records(result)["distill"]["summary"]["kd_tokens"] == "all"
    default = _run(llama4, rows, tmp_path / "default", [{"distill": {"layers": 2}}])
    assert default.status == "completed", default.error
    assert spy.method.tokens == distill_lm.KD_TOKENS_DEFAULT
    assert _records(default)["distill"]["summary"]["kd_tokens"] == distill_lm.KD_TOKENS_DEFAULT


def test_kd_tokens_with_the_hard_label_baseline_fails_before_any_work(llama4, rows, tmp_path):
    result = _run(llama4, rows, tmp_path, ["evaluate", {"distill": {"layers": 2, "method": "hard", "kd_tokens": "all"}}])
    assert result.status == "failed" and "method: hard has no KD term" in result.error
    assert [r["label"] for r in result.run["stages"]] in ([], ["setup"])


def test_a_temperature_with_the_hard_label_baseline_fails_before_any_work(llama4, rows, tmp_path):
    result = _run(llama4, rows, tmp_path, ["evaluate", {"distill": {"layers": 2, "method": "hard", "temperature": 4.0}}])
    assert result.status == "failed" and "distill: method hard does not use temperature" in result.error
    assert [r["label"] for r in result.run["stages"]] in ([], ["setup"])


def test_kd_tokens_is_refused_for_a_classifier():
    from lowcarb.errors import ConfigError
    from lowcarb.pipeline.stages.distill import DistillStageConfig

    ctx = SimpleNamespace(recipe=SimpleNamespace(task="text-classification"))
    with pytest.raises(ConfigError, match="kd_tokens applies to task causal-lm"):
        distill_lm.check_distill(ctx, DistillStageConfig(kd_tokens="all"))
    distill_lm.check_distill(ctx, DistillStageConfig())  # the default says nothing: accepted
