"""A causal-LM recipe end to end on a tiny Llama: train, LoRA, evaluate, report, reload; errors."""

import json
from pathlib import Path

import pytest
import torch

from lowcarb.pipeline import load_recipe, recipe_from_dict, run_recipe
from lowcarb.store.runstore import RunStore

REPO = Path(__file__).resolve().parents[2]
FAST_EVAL = {"generated_tokens": 16, "timing_new_tokens": 3, "max_new_tokens": 4, "generation_batch_sizes": [1, 2]}


def _data(tmp_path):
    rows = [{"prompt": f"the film {i} is", "response": "great" if i % 2 else "awful"} for i in range(12)]
    chats = [{"messages": [{"role": "user", "content": f"film {i}?"}, {"role": "assistant", "content": "ok"}]}
             for i in range(4)]  # fmt: skip
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chats))
    return tmp_path / "train.jsonl", tmp_path / "dev.jsonl"


def _recipe(folder, train, dev, stages):
    return recipe_from_dict({
        "name": "tiny-lm", "task": "causal-lm", "model": {"name": str(folder)}, "device": "cpu",
        "data": {"train": str(train), "dev": str(dev), "test_fraction": 0.25, "max_length": 64},
        "train": {"max_steps": 2, "batch_size": 4, "lr": 1e-3}, "evaluation": FAST_EVAL, "stages": stages,
    })  # fmt: skip


def test_causal_lm_recipe_trains_evaluates_reports_and_reloads(tiny_llama_folder, tmp_path):
    train, dev = _data(tmp_path)
    recipe = _recipe(tiny_llama_folder, train, dev, ["evaluate", "train", {"lora": {"r": 2}}])
    result = run_recipe(recipe, out_dir=tmp_path / "out", quiet=True, store=RunStore(tmp_path / "runs.db"))
    assert result.status == "completed", result.error
    records = {r["label"]: r for r in result.run["stages"]}
    assert list(records) == ["setup", "evaluate", "train", "train:evaluate", "lora", "lora:evaluate"]
    assert records["setup"]["summary"]["task"] == "causal-lm"
    for label in ("train", "lora"):
        summary = records[label]["summary"]
        assert summary["steps"] == 2 and summary["train_tokens"] > 0
        assert summary["j_per_1k_train_tokens"] > 0 and summary["peak_memory_bytes"] > 0
    assert records["lora"]["summary"]["modules_changed"][0].endswith("q_proj")  # the LLM default targets
    adapter = json.loads((result.artifacts_dir / "adapter" / "adapter_config.json").read_text())
    assert adapter["task_type"] == "CAUSAL_LM" and adapter["peft_type"] == "LORA"
    metrics = records["lora:evaluate"]["metrics"]
    for key in ("dev_perplexity", "dev_exact_match", "test_perplexity", "gen_b1_ttft_ms",
                "gen_b2_decode_tokens_per_s", "per1k_tokens_energy_j", "per1k_tokens_total_g", "size_bytes"):
        assert metrics[key] is not None, key
    assert metrics["dev_accuracy"] == metrics["dev_exact_match"] and metrics["dev_answered"] == 4
    assert metrics["tokens_measured"] == 18  # ceil(16 / (2 x 3)) calls x 2 rows x 3 tokens
    assert result.run["model"]["reloads"], result.run["model"]
    report = (result.artifacts_dir / "report.md").read_text()
    assert "per million generated tokens" in report and "decode tok/s b=2" in report
    assert "Training cost per token" in report
    html = (result.artifacts_dir / "report.html").read_text()
    assert 'id="training-table"' in html and "first token b=1" in html


def test_gguf_weights_carry_their_note_into_the_report(tiny_gguf, tmp_path):
    train, dev = _data(tmp_path)
    result = run_recipe(_recipe(tiny_gguf, train, dev, [{"evaluate": {"splits": ["dev"]}}]),
                        out_dir=tmp_path / "out", quiet=True, store=RunStore(tmp_path / "runs.db"))  # fmt: skip
    assert result.status == "completed", result.error
    assert "converted from the GGUF file" in result.run["stages"][0]["summary"]["weights_note"]
    assert "converted from the GGUF file" in (result.artifacts_dir / "report.md").read_text()


def test_stages_that_do_not_support_causal_lm_are_rejected_before_the_run(tiny_llama_folder, tmp_path):
    train, dev = _data(tmp_path)
    with pytest.raises(ValueError, match=r"stages\[1\]: stage 'earlybird' does not support task 'causal-lm'"):
        _recipe(tiny_llama_folder, train, dev, ["train", "earlybird"])


def test_a_causal_lm_quantized_for_serving_is_evaluated_and_reloads_to_the_same_answers(tiny_llama_folder, tmp_path):
    train, dev = _data(tmp_path)
    stages = ["train", {"quantize": {"mode": "weight_only", "compute_dtype": "bfloat16"}}]
    result = run_recipe(_recipe(tiny_llama_folder, train, dev, stages), out_dir=tmp_path / "out", quiet=True,
                        store=RunStore(tmp_path / "runs.db"))  # fmt: skip
    assert result.status == "completed", result.error
    records = {r["label"]: r for r in result.run["stages"]}
    summary = records["quantize"]["summary"]
    assert summary["kernel"] == "int8pack_mm" and "lm_head" in summary["modules_changed"]
    metrics = records["quantize:evaluate"]["metrics"]
    assert metrics["dev_perplexity"] > 1.0 and metrics["gen_b1_decode_tokens_per_s"] > 0
    assert result.run["model"]["reloads"], result.run["model"]
    # the saved folder replays the transform log (the run checked its logits against the run's
    # model: "reloads"); greedy answers are deterministic across reloads
    from lowcarb.compress.saved import load_compressed
    from lowcarb.train.generation import greedy_generate, left_pad

    folder = Path(result.run["model"]["path"])
    reloaded = load_compressed(folder)
    assert reloaded.family == "causal-lm" and type(reloaded.model.lm_head).__name__ == "PackedInt8Linear"
    prompts = left_pad([[5, 9, 33, 7], [12, 44, 3]], pad_id=int(reloaded.tokenizer.pad_token_id))
    kwargs = {"eos_token_id": None, "pad_token_id": int(reloaded.tokenizer.pad_token_id)}
    twice = load_compressed(folder)
    assert torch.equal(greedy_generate(reloaded.model, prompts, 8, **kwargs), greedy_generate(twice.model, prompts, 8, **kwargs))


def test_quantize_modes_that_do_not_apply_to_a_causal_lm_fail_before_any_work(tiny_llama_folder, tmp_path):
    train, dev = _data(tmp_path)
    for settings, message in (({"mode": "static"}, "does not apply to task causal-lm"),
                              ({"mode": "dynamic", "onnx": True}, "onnx: true does not apply"),
                              ({"mode": "weight_only_int4", "group_size": 256}, "group_size 256 runs on CUDA only")):  # fmt: skip
        recipe = _recipe(tiny_llama_folder, train, dev, ["evaluate", {"quantize": settings}])
        result = run_recipe(recipe, out_dir=tmp_path / "out", quiet=True, store=RunStore(tmp_path / "runs.db"))
        assert result.status == "failed" and message in str(result.error)
        assert [r["label"] for r in result.run["stages"]] in ([], ["setup"])


def test_a_classifier_name_with_causal_lm_is_rejected():
    with pytest.raises(ValueError, match="model.name: 'minilm' is a classifier"):
        recipe_from_dict({"task": "causal-lm", "model": {"name": "minilm"}})
    with pytest.raises(ValueError, match="task"):
        recipe_from_dict({"task": "translation"})


def test_early_stopping_is_refused_for_causal_lm(tiny_llama_folder, tmp_path):
    train, dev = _data(tmp_path)
    recipe = recipe_from_dict({
        "task": "causal-lm", "model": {"name": str(tiny_llama_folder)},
        "data": {"train": str(train), "dev": str(dev), "test_fraction": 0.0, "max_length": 64},
        "train": {"max_steps": 1, "early_stopping_patience": 2}, "stages": ["train"],
    })  # fmt: skip
    result = run_recipe(recipe, out_dir=tmp_path / "out", quiet=True, store=RunStore(tmp_path / "runs.db"))
    assert result.status == "failed" and "early_stopping_patience is not supported" in result.error


def test_the_llm_lora_recipe_validates_offline():
    recipe = load_recipe(REPO / "recipes" / "llm-lora.yaml")
    assert recipe.task == "causal-lm" and str(recipe.model.name) == "smollm2-135m"
    assert recipe.data.train is None  # the generated task
    assert [s.name for s in recipe.stages][:2] == ["evaluate", "lora"]


def _as_if_from_q4_gguf(monkeypatch, folder):
    """The tiny Llama, with the provenance note a Q4_1 GGUF gives (no 4-bit file needed)."""
    from lowcarb.models import causal_lm
    from lowcarb.models.gguf import GgufSource

    note = GgufSource("tiny.Q4_1.gguf", 1, {"Q4_1": 14, "F32": 5}).note()
    monkeypatch.setattr(causal_lm, "resolve_causal_lm", lambda name: (Path(folder), note))


def test_int4_at_group_32_after_fine_tuning_a_q4_gguf_is_warned_before_the_run(tiny_llama_folder, tmp_path, monkeypatch):
    from lowcarb.errors import LowcarbWarning

    _as_if_from_q4_gguf(monkeypatch, tiny_llama_folder)
    train, dev = _data(tmp_path)
    stages = [{"train": {"max_steps": 1}}, {"quantize": {"mode": "weight_only_int4"}}]
    recipe = _recipe(tiny_llama_folder, train, dev, stages)
    with pytest.warns(LowcarbWarning, match="set group_size: 64") as caught:
        result = run_recipe(recipe, out_dir=tmp_path / "out", quiet=True, store=RunStore(tmp_path / "runs.db"))
    assert result.status == "completed", result.error
    assert "Q4_1" in str(caught[0].message)
    records = {r["label"]: r for r in result.run["stages"]}
    assert "rounded back to the file's values" in records["quantize"]["summary"]["weights_note"]
    assert "set group_size: 64" in (result.artifacts_dir / "report.md").read_text()


def test_int4_grid_warning_only_where_it_applies(tiny_llama_folder, tmp_path, monkeypatch):
    import warnings

    from lowcarb.errors import LowcarbWarning

    _as_if_from_q4_gguf(monkeypatch, tiny_llama_folder)
    train, dev = _data(tmp_path)
    gguf = tmp_path / "tiny.Q4_1.gguf"
    gguf.write_bytes(b"")  # the name says "loaded from the file"; resolve_causal_lm is replaced
    cases = [
        (str(gguf), [{"quantize": {"mode": "weight_only_int4"}}]),  # the file as loaded: gs32 reproduces it
        (str(tiny_llama_folder), [{"train": {"max_steps": 1}}, {"quantize": {"mode": "weight_only_int4", "group_size": 64}}]),
        (str(tiny_llama_folder), [{"train": {"max_steps": 1}}, {"quantize": {"mode": "weight_only"}}]),
    ]
    for name, stages in cases:
        recipe = _recipe(name, train, dev, stages)
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message="int4 with group_size", category=LowcarbWarning)
            result = run_recipe(recipe, out_dir=tmp_path / "out", quiet=True, store=RunStore(tmp_path / "runs.db"))
        assert result.status == "completed", (name, stages, result.error)
        (quantized,) = [r for r in result.run["stages"] if r["label"] == "quantize"]
        assert "group_size: 64" not in quantized["summary"].get("weights_note", "")
    # a saved folder that came from a Q4 GGUF was fine-tuned in an earlier run: warned without a train stage
    with pytest.warns(LowcarbWarning, match="group_size 32"):
        recipe = _recipe(tiny_llama_folder, train, dev, [{"quantize": {"mode": "weight_only_int4"}}])
        run_recipe(recipe, out_dir=tmp_path / "out", quiet=True, store=RunStore(tmp_path / "runs.db"))
