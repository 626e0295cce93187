"""The `lowrank` stage on a causal LM (a tiny random Llama): which layers it factorizes, the
full-rank identity, recovery by KD on the responses, save -> reload -> same greedy answers, and
the error for targets that name nothing."""

from __future__ import annotations

import contextlib
import copy
import json
import math

import pytest
import torch

from lowcarb.compress import lowrank
from lowcarb.compress.factorized import FactorizedLinear, factorized_modules
from lowcarb.compress.saved import load_compressed, save_compressed
from lowcarb.errors import ConfigError
from lowcarb.models import ModelConfig
from lowcarb.models.causal_lm import build_causal_lm
from lowcarb.models.surgery import set_module
from lowcarb.pipeline import recipe_from_dict, run_recipe
from lowcarb.pipeline.stages.lowrank import LowRankStageConfig
from lowcarb.pipeline.tasks import CAUSAL_LM
from lowcarb.store.runstore import RunStore
from lowcarb.train.generation import greedy_generate, left_pad

FAST_EVAL = {"generated_tokens": 8, "timing_new_tokens": 2, "max_new_tokens": 4, "generation_batch_sizes": [1]}
PROMPTS = [[5, 9, 33, 7], [12, 44, 3]]


def _handle(folder):
    return build_causal_lm(ModelConfig(name=str(folder)))


def _data(tmp_path):
    rows = [{"prompt": f"the film {i} is", "response": "great" if i % 2 else "awful"} for i in range(12)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
    return tmp_path / "train.jsonl", tmp_path / "dev.jsonl"


def _run(folder, tmp_path, stages, **train):
    train_file, dev = _data(tmp_path)
    recipe = recipe_from_dict({
        "name": "tiny-lm-lowrank", "task": "causal-lm", "model": {"name": str(folder)},
        "data": {"train": str(train_file), "dev": str(dev), "test_fraction": 0.0, "max_length": 64},
        "train": {"max_steps": 2, "batch_size": 4, "lr": 1e-3, **train}, "evaluation": FAST_EVAL, "stages": stages,
    })  # fmt: skip
    return run_recipe(recipe, out_dir=tmp_path / "out", quiet=True, store=RunStore(tmp_path / "runs.db"))


def _greedy(model, tokenizer):
    pad = int(tokenizer.pad_token_id)
    return greedy_generate(model, left_pad(PROMPTS, pad_id=pad), 8, eos_token_id=None, pad_token_id=pad)


def test_a_causal_lm_factorizes_exactly_its_mlp_projections(tiny_llama_folder):
    model = _handle(tiny_llama_folder).model
    dense = {n: tuple(m.weight.shape) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    summary = lowrank.apply(model, LowRankStageConfig(param_ratio=0.5).technique(model, CAUSAL_LM))
    factorized = factorized_modules(model)
    mlp = sorted(n for n in dense if n.rsplit(".", 1)[-1] in ("gate_proj", "up_proj", "down_proj"))
    assert sorted(factorized) == mlp and len(mlp) == 3 * model.config.num_hidden_layers
    for name, module in factorized.items():
        out_features, in_features = dense[name]
        assert (module.out_features, module.in_features) == (out_features, in_features)
        assert module.u.weight.shape == (out_features, module.rank)
        assert module.v.weight.shape == (module.rank, in_features)
    # attention, the lm_head and the (tied) embedding stay dense and tied
    for name in dense:
        if name not in factorized:
            assert type(model.get_submodule(name)) is torch.nn.Linear, name
    assert model.lm_head.weight is model.model.embed_tokens.weight
    details = summary.details
    assert details["target_params_after"] <= 0.5 * details["target_params_before"]
    # within one rank step of the budget (each direction costs m + n = 96 parameters here)
    assert details["target_params_after"] >= 0.5 * details["target_params_before"] - 96 * len(mlp)


def test_the_lm_head_is_never_factorized_even_when_targets_say_everything(tiny_llama_folder):
    model = _handle(tiny_llama_folder).model
    lowrank.apply(model, LowRankStageConfig(param_ratio=0.5, targets=("*",)).technique(model, CAUSAL_LM))
    assert type(model.lm_head) is torch.nn.Linear and model.lm_head.weight is model.model.embed_tokens.weight
    assert factorized_modules(model)  # the blocks' projections were factorized
    with pytest.raises(ConfigError, match="leave no Linear"):
        lowrank.select_layers(model, LowRankStageConfig(targets=("lm_head",)).technique(model, CAUSAL_LM))


def test_full_rank_factors_of_the_mlp_give_the_dense_logits(tiny_llama_folder):
    model = _handle(tiny_llama_folder).model.eval()
    ids = torch.tensor([PROMPTS[0] * 3])
    with torch.no_grad():
        dense = model(input_ids=ids).logits
        # apply() keeps a layer dense where full rank would save nothing; the identity is checked
        # on the layers the stage targets, each factorized at full rank
        for name, layer in lowrank.select_layers(model, LowRankStageConfig().technique(model, CAUSAL_LM)).items():
            set_module(model, name, FactorizedLinear.from_dense(layer, min(layer.weight.shape)))
        factored = model(input_ids=ids).logits
    assert len(factorized_modules(model)) == 6
    torch.testing.assert_close(factored, dense, rtol=1e-4, atol=1e-5)


def test_a_factorized_llm_saves_and_reloads_to_identical_greedy_tokens(tiny_llama_folder, tmp_path):
    handle = _handle(tiny_llama_folder)
    lowrank.apply(handle.model, LowRankStageConfig(param_ratio=0.4).technique(handle.model, CAUSAL_LM))
    handle.model.eval()
    expected = _greedy(handle.model, handle.tokenizer)
    reloaded = load_compressed(save_compressed(handle, tmp_path / "model"))
    assert reloaded.family == "causal-lm" and len(factorized_modules(reloaded.model)) == 6
    assert type(reloaded.model.lm_head) is torch.nn.Linear
    assert torch.equal(_greedy(reloaded.model, reloaded.tokenizer), expected)


def test_the_stage_with_kd_recovery_runs_evaluates_and_reloads(tiny_llama_folder, tmp_path):
    result = _run(tiny_llama_folder, tmp_path, [{"lowrank": {"param_ratio": 0.5}}])
    assert result.status == "completed", result.error
    records = {r["label"]: r for r in result.run["stages"]}
    summary = records["lowrank"]["summary"]
    assert len(summary["ranks"]) == 6 and all(n.endswith(("gate_proj", "up_proj", "down_proj")) for n in summary["ranks"])
    assert summary["params_after"] < summary["params_before"]
    assert summary["recover_loss"] == "kd" and summary["recover_steps"] == 2
    assert summary["recover_teacher_forward_examples"] == 8  # 2 steps x batch 4, the teacher ran on each
    assert math.isfinite(summary["recover_train_loss"]) and summary["recover_train_loss"] > 0
    metrics = records["lowrank:evaluate"]["metrics"]
    assert metrics["dev_perplexity"] > 1.0 and metrics["gen_b1_decode_tokens_per_s"] > 0
    assert result.run["model"]["reloads"] is True, result.run["model"]
    assert len(factorized_modules(load_compressed(result.artifacts_dir / "model").model)) == 6


def test_kd_recovery_lowers_the_kd_loss_of_a_factorized_llm(tiny_llama_folder):
    from lowcarb.compress.distill import LogitKD, distill
    from lowcarb.compress.distill.causal_lm import causal_lm_kd_objective
    from lowcarb.train import TrainConfig

    handle = _handle(tiny_llama_folder)
    torch.manual_seed(0)
    with torch.no_grad():  # larger weights than the random init: a teacher with confident, varied logits
        for p in handle.model.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.15)
    teacher = copy.deepcopy(handle.model).eval()
    lowrank.apply(handle.model, LowRankStageConfig(param_ratio=0.3).technique(handle.model, CAUSAL_LM))
    ids = torch.tensor([PROMPTS[0] * 4, PROMPTS[1] * 4 + [3, 3, 3, 3]])
    labels = ids.clone()
    labels[:, :6] = -100  # the responses: what the KD term reads
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    objective = causal_lm_kd_objective(teacher, temperature=2.0, alpha=1.0)

    def kd_loss() -> float:
        handle.model.train()
        with torch.no_grad():
            return float(objective(handle.model, batch)[0])

    before = kd_loss()
    distill(handle.model, teacher, [batch], None, LogitKD(temperature=2.0, alpha=1.0),
            TrainConfig(max_steps=10, epochs=10, lr=1e-3, quiet=True),
            extra_loss=lowrank.frobenius_decay_loss(1e-4), param_groups=lowrank.param_groups(handle.model, 0.01))  # fmt: skip
    after = kd_loss()
    assert before > 0.01 and after < 0.8 * before, (before, after)


def test_ce_recovery_trains_on_the_responses(tiny_llama_folder, tmp_path):
    result = _run(tiny_llama_folder, tmp_path, ["evaluate", {"lowrank": {"rank": 4, "recover_loss": "ce",
                                                                         "decay": "weight"}}])  # fmt: skip
    assert result.status == "completed", result.error
    summary = next(r for r in result.run["stages"] if r["label"] == "lowrank")["summary"]
    assert set(summary["ranks"].values()) == {4} and summary["recover_loss"] == "ce"
    assert summary["recover_steps"] == 2 and math.isfinite(summary["recover_train_loss"])
    assert "recover_teacher_forward_examples" not in summary


def test_targets_that_match_nothing_fail_before_any_stage_with_one_line_naming_the_layers(tiny_llama_folder, tmp_path):
    result = _run(tiny_llama_folder, tmp_path, ["train", {"lowrank": {"targets": ["*.fc1"]}}])
    assert result.status == "failed"
    assert "target pattern '*.fc1' matches no Linear/Conv2d module" in result.error and "gate_proj" in result.error
    assert "\n" not in result.error
    assert [r["label"] for r in result.run["stages"]] in ([], ["setup"])  # nothing trained


def test_a_causal_lm_with_no_linear_layer_but_its_head_is_told_lowrank_does_not_apply(tiny_gpt2_folder, tmp_path):
    # GPT-2's MLP is transformers' Conv1D, not a Linear: only its lm_head is a candidate, and never
    # chosen, so setting targets cannot help: the error says the stage does not apply
    result = _run(tiny_gpt2_folder, tmp_path, [{"lowrank": {"param_ratio": 0.5}}])
    assert result.status == "failed"
    assert "GPT2LMHeadModel has no nn.Linear or Conv2d layer to factorize besides its output head" in result.error
    assert "remove the stage" in result.error and "\n" not in result.error
    assert [r["label"] for r in result.run["stages"]] in ([], ["setup"])


@pytest.mark.parametrize(
    ("before", "named"),
    [({"quantize": {"mode": "weight_only"}}, "after quantize"), ({"lora": {"r": 2, "merge": False}}, "lora with merge: false")],
)  # fmt: skip
def test_lowrank_after_quantize_or_unmerged_lora_fails_before_any_work(tiny_llama_folder, tmp_path, before, named):
    result = _run(tiny_llama_folder, tmp_path, [before, {"lowrank": {"param_ratio": 0.5}}])
    assert result.status == "failed" and named in result.error
    assert "factorize before quantizing" in result.error and "\n" not in result.error
    assert [r["label"] for r in result.run["stages"]] in ([], ["setup"])


def test_recovery_honours_gradient_checkpointing(tiny_llama_folder, tmp_path, monkeypatch):
    from lowcarb.pipeline.stages import lowrank as stage

    seen = []
    real = stage.gradient_checkpointing

    @contextlib.contextmanager
    def recording(model, enabled):
        with real(model, enabled):
            seen.append((enabled, bool(model.is_activation_checkpointing)))
            yield

    monkeypatch.setattr(stage, "gradient_checkpointing", recording)
    result = _run(tiny_llama_folder, tmp_path, [{"lowrank": {"param_ratio": 0.5}}], gradient_checkpointing=True)
    assert result.status == "completed", result.error
    assert seen == [(True, True)]  # switched on around the KD recovery (and off again after it)
    assert next(r for r in result.run["stages"] if r["label"] == "lowrank")["summary"]["recover_steps"] == 2
