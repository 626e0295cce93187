"""`lowcarb autodistil RECIPE --flops-budget F`: appends the stage, runs it, prints the student."""

from __future__ import annotations

import pytest
import torch
import yaml
from transformers import BertConfig, BertForSequenceClassification

from lowcarb.cli import main
from lowcarb.models import load_minilm_tokenizer

WORDS = ["good", "great", "bad", "awful", "movie", "the"]


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("autodistil-cli")
    g = torch.Generator().manual_seed(1)
    rows = ["text\tlabel"]
    for _ in range(48):
        words = [WORDS[i] for i in torch.randint(0, len(WORDS), (4,), generator=g).tolist()]
        rows.append(f"{' '.join(words)}\t{int(sum(w in ('good', 'great') for w in words) >= 1)}")
    (root / "train.tsv").write_text("\n".join(rows) + "\n")
    (root / "dev.tsv").write_text("\n".join(rows[:9]) + "\n")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2)
    BertForSequenceClassification(config).save_pretrained(root / "tiny-bert")
    load_minilm_tokenizer().save_pretrained(root / "tiny-bert")
    recipe = {
        "name": "tiny-autodistil-cli",
        "model": {"name": str(root / "tiny-bert")},
        "data": {"train": str(root / "train.tsv"), "dev": str(root / "dev.tsv"), "test_fraction": 0.0,
                 "max_length": 16},
        "train": {"epochs": 1, "batch_size": 16, "lr": 1.0e-3, "seed": 0, "quiet": True},
        "evaluation": {"threads": 1, "latency_batch_sizes": [1], "inferences": 5},
        "report": "none",
        "stages": ["evaluate"],
    }
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_cli_runs_the_search_and_prints_the_chosen_student(recipe_file, tmp_path, capsys):
    code = main(["autodistil", str(recipe_file), "--flops-budget", "0.4", "--steps", "2",
                 "--set", "stages.autodistil.score_batches=1", "--set", "stages.autodistil.finetune=none",
                 "--out", str(tmp_path), "--store", str(tmp_path / "runs.db"), "--quiet"])
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert code == 0, out
    assert "chosen student L" in out and "students searched with 2 and 3 sub-spaces" in out
    assert list(tmp_path.glob("*/autodistil/candidates.md"))


def test_cli_one_subspace_count_reaches_the_stage(recipe_file, tmp_path, capsys):
    code = main(["autodistil", str(recipe_file), "--flops-budget", "0.4", "--steps", "2", "--subspaces", "3",
                 "--set", "stages.autodistil.score_batches=1", "--set", "stages.autodistil.finetune=none",
                 "--out", str(tmp_path), "--store", str(tmp_path / "runs.db"), "--quiet"])
    out = " ".join(capsys.readouterr().out.split())
    assert code == 0, out
    assert "students searched with 3 sub-spaces; 3 sub-spaces chosen" in out


def test_cli_errors_are_one_line(recipe_file, tmp_path, capsys):
    assert main(["autodistil", str(recipe_file), "--flops-budget", "-1"]) == 2
    assert "--flops-budget must be > 0" in capsys.readouterr().err
    assert main(["autodistil", str(tmp_path / "missing.yaml"), "--flops-budget", "0.5"]) == 2
    assert "recipe file not found" in capsys.readouterr().err
    assert main(["autodistil", str(recipe_file), "--flops-budget", "0.5", "--steps", "0"]) == 2
    assert "--steps must be >= 1" in capsys.readouterr().err


def test_cli_subspace_counts_are_checked(recipe_file, capsys):
    for bad in ("0", "two", "2,0"):
        with pytest.raises(SystemExit) as exit_info:
            main(["autodistil", str(recipe_file), "--flops-budget", "0.5", "--subspaces", bad])
        assert exit_info.value.code == 2
        assert "--subspaces" in capsys.readouterr().err
