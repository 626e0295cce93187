"""The `autodistil` stage in a real (tiny) recipe run: tiny BERT teacher, small text table."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from lowcarb.models import load_minilm_tokenizer
from lowcarb.pipeline import recipe_from_dict, run_recipe
from lowcarb.search.autodistil import SubnetConfig, subnet_flops
from lowcarb.store.runstore import RunStore

WORDS = ["good", "great", "fine", "bad", "awful", "poor", "movie", "plot", "the", "a"]


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("autodistil-stage")
    g = torch.Generator().manual_seed(0)
    rows = ["text\tlabel"]
    for _ in range(64):
        words = [WORDS[i] for i in torch.randint(0, len(WORDS), (5,), generator=g).tolist()]
        label = int(sum(w in ("good", "great", "fine") for w in words)
                    >= sum(w in ("bad", "awful", "poor") for w in words))
        rows.append(f"{' '.join(words)}\t{label}")
    (root / "train.tsv").write_text("\n".join(rows) + "\n")
    (root / "dev.tsv").write_text("\n".join(rows[:17]) + "\n")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2)
    BertForSequenceClassification(config).save_pretrained(root / "tiny-bert")
    load_minilm_tokenizer().save_pretrained(root / "tiny-bert")
    return root


def _recipe(root, stages):
    return recipe_from_dict({
        "name": "tiny-autodistil",
        "model": {"name": str(root / "tiny-bert")},
        "data": {"train": str(root / "train.tsv"), "dev": str(root / "dev.tsv"), "test_fraction": 0.0,
                 "max_length": 16},
        "train": {"epochs": 1, "batch_size": 16, "lr": 1.0e-3, "seed": 0, "quiet": True},
        "evaluation": {"threads": 1, "latency_batch_sizes": [1], "inferences": 10},
        "report": "none",
        "stages": stages,
    })


def test_autodistil_stage_replaces_the_model_with_a_searched_student(tiny_setup, tmp_path):
    stages = [{"autodistil": {"flops_budget": 0.5, "steps_per_subspace": 2, "score_batches": 1}}]
    result = run_recipe(_recipe(tiny_setup, stages), out_dir=tmp_path, quiet=True,
                        store=RunStore(tmp_path / "runs.db"))
    assert result.status == "completed", result.error
    record = next(s for s in result.run["stages"] if s["name"] == "autodistil" and not s.get("auto"))
    notes = record["summary"]
    assert notes["student_flops"] <= notes["budget_flops"] == pytest.approx(0.5 * notes["teacher_flops"])
    assert all(c["flops"] <= notes["budget_flops"] for c in notes["candidates"])
    assert sum(c["chosen"] for c in notes["candidates"]) == 1
    assert notes["params_after"] < notes["params_before"]
    assert notes["steps"] == 4  # fine-tuned on the whole training split: 64 texts / 16
    assert record["footprint"]["energy_j"] > 0
    # The evaluated model is the extracted student, and its FLOPs are the configuration's.
    chosen = next(c for c in notes["candidates"] if c["chosen"])
    config = SubnetConfig(chosen["num_layers"], chosen["hidden_size"], chosen["num_heads"],
                          chosen["intermediate_size"])
    assert notes["student_flops"] == subnet_flops(config, 16)
    # The extracted student is a plain Hugging Face BERT: the runner's save reloads it.
    assert result.run["model"]["reloads"], result.run["model"]["reload_error"]
    folder = result.artifacts_dir / "autodistil"
    assert (folder / "candidates.png").stat().st_size > 0
    assert json.loads((folder / "search.json").read_text())["chosen"]["student"] == notes["student"]
    assert notes["student"] in (folder / "candidates.md").read_text()
    # The common search result: the chosen trial is the student, the windows are the cost, and
    # the run's report shows the same search section every search writes.
    search = notes["search"]
    assert search["method"] == "autodistil"
    assert search["trials"][search["chosen"]]["params"]["student"] == notes["student"]
    # By default one search per sub-space count (2 and 3); the lowest held-out loss chose.
    assert sorted(notes["partitions"]) == ["2", "3"]
    assert notes["student_score"] == min(p["score"] for p in notes["partitions"].values())
    assert notes["partitions"][str(notes["chosen_subspace_count"])]["student"] == notes["student"]
    assert len(search["trials"]) == sum(p["candidates"] for p in notes["partitions"].values())
    assert len(notes["candidates"]) == notes["partitions"][str(notes["chosen_subspace_count"])]["candidates"]
    assert {r["subspace_count"] for r in notes["supernets"]} == {2, 3}
    names = [w["name"] for w in search["total"]["windows"]]
    chosen_k = notes["chosen_subspace_count"]
    other_k = 5 - chosen_k  # 2 or 3: the chosen search's windows come first
    assert [n for n in names if n.startswith("autodistil search")] == [
        f"autodistil search (K={chosen_k})", f"autodistil search (K={other_k})"]
    assert all(n.startswith(("autodistil supernet", "autodistil search")) for n in names)
    assert search["total"]["energy_j"] == pytest.approx(sum(w["energy_j"] for w in search["total"]["windows"]))
    assert 'id="search-trials"' in (folder / "search.html").read_text()
    from lowcarb.report import render_html

    assert "Search (AutoDistil student search)" in render_html(result.run)


def test_autodistil_stage_with_one_subspace_count_runs_one_search(tiny_setup, tmp_path):
    stages = [{"autodistil": {"flops_budget": 0.5, "steps_per_subspace": 2, "score_batches": 1,
                              "subspaces": 3, "finetune": "none"}}]
    result = run_recipe(_recipe(tiny_setup, stages), out_dir=tmp_path, quiet=True,
                        store=RunStore(tmp_path / "runs.db"))
    assert result.status == "completed", result.error
    notes = next(s for s in result.run["stages"] if s["name"] == "autodistil")["summary"]
    assert notes["chosen_subspace_count"] == 3 and list(notes["partitions"]) == ["3"]
    names = [w["name"] for w in notes["search"]["total"]["windows"]]
    assert names[-1] == "autodistil search (K=3)" and all(n.startswith("autodistil supernet") for n in names[:-1])


def test_autodistil_stage_rejects_image_data(tmp_path):
    recipe = recipe_from_dict({"model": {"name": "cnn"}, "data": {}, "report": "none",
                               "train": {"epochs": 1, "quiet": True},
                               "stages": [{"autodistil": {"flops_budget": 0.5}}]})
    result = run_recipe(recipe, out_dir=tmp_path, quiet=True, store=RunStore(tmp_path / "runs.db"))
    assert result.status == "failed" and "needs text data" in result.error


def test_autodistil_stage_settings_are_checked():
    with pytest.raises(ValueError, match="flops_budget"):
        recipe_from_dict({"model": {"name": "cnn"}, "data": {},
                          "stages": [{"autodistil": {"flops_budget": -1}}]})
    for bad in ([], [2, 0], 0):
        with pytest.raises(ValueError, match="subspaces"):
            recipe_from_dict({"model": {"name": "cnn"}, "data": {},
                              "stages": [{"autodistil": {"subspaces": bad}}]})
    with pytest.raises(ValueError, match="finetune"):
        recipe_from_dict({"model": {"name": "cnn"}, "data": {},
                          "stages": [{"autodistil": {"finetune": "maybe"}}]})
