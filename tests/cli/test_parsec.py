"""`lowcarb parsec` end to end, tiny: digits with the cell CNN, a small text table with the text space."""

from __future__ import annotations

import json

import pytest

from lowcarb.cli import main


def test_parsec_verb_on_digits_writes_result_prior_and_a_stored_run(tmp_path, capsys):
    out = tmp_path / "p"
    store = tmp_path / "runs.db"
    args = [
        "parsec",
        "--space",
        "cnn",
        "--iterations",
        "2",
        "--samples",
        "2",
        "--top",
        "1",
        "--epochs",
        "1",
    ]
    code = main([*args, "--out", str(out), "--store", str(store)])
    text = capsys.readouterr().out
    assert code == 0, text
    result = json.loads((out / "result.json").read_text())
    assert result["method"] == "parsec" and result["evaluated"] == 4
    assert result["search_energy_j"] > 0 and result["retrain_energy_j"] > 0
    prior = json.loads((out / "prior.json").read_text())
    assert prior["space"] == "cnn"
    from lowcarb.store import RunStore

    runs = RunStore(store).list_runs()
    assert len(runs) == 1 and runs[0].kind == "search"
    names = [f["name"] for f in RunStore(store).footprints(runs[0].run_id)]
    assert names == ["parsec:search", "parsec:retrain"]
    # The saved prior warm-starts a weightless search.
    code = main(
        [
            "parsec",
            "--method",
            "weightless",
            "--score",
            "synflow",
            "--iterations",
            "1",
            "--samples",
            "2",
            "--top",
            "1",
            "--epochs",
            "1",
            "--warm-start",
            str(out / "prior.json"),
            "--out",
            str(tmp_path / "w"),
            "--store",
            str(store),
        ]
    )
    assert code == 0
    assert json.loads((tmp_path / "w" / "result.json").read_text())["score"] == "synflow"


def test_parsec_verb_text_space_on_a_table(tmp_path, capsys):
    rows = ["sentence\tlabel"] + [
        f"{'good fun' if i % 2 else 'dull and slow'} {i}\t{i % 2}" for i in range(40)
    ]
    (tmp_path / "train.tsv").write_text("\n".join(rows) + "\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: t\ndata:\n  train: {tmp_path / 'train.tsv'}\n  max_length: 32\n")
    code = main(
        [
            "parsec",
            str(recipe),
            "--space",
            "text",
            "--iterations",
            "2",
            "--samples",
            "2",
            "--top",
            "1",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    text = capsys.readouterr().out
    assert code == 0, text
    assert json.loads((tmp_path / "o" / "result.json").read_text())["space"] == "text"


def test_parsec_verb_errors_are_one_line(tmp_path, capsys):
    assert main(["parsec", "--space", "text", "--out", str(tmp_path)]) == 2
    assert "needs text data" in capsys.readouterr().err
    assert main(["parsec", "--iterations", "0"]) == 2
    assert "--iterations must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["parsec", "--space", "rnn"])


def test_parsec_reads_its_recipe_section_and_carbon_and_writes_the_search_report(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: arch\n"
        "carbon: {intensity_g_per_kwh: 555}\n"
        "parsec: {method: weightless, score: synflow, iterations: 1, samples: 2, top: 2, epochs: 1}\n"
    )
    out, store_path = tmp_path / "o", tmp_path / "s.db"
    # A flag overrides the section: one architecture retrained, not two.
    code = main(["parsec", str(recipe), "--top", "1", "--out", str(out), "--store", str(store_path)])
    text = capsys.readouterr().out
    assert code == 0, text
    result = json.loads((out / "result.json").read_text())
    assert result["method"] == "weightless" and result["score"] == "synflow"
    assert len(result["candidates"]) == 1
    summary = json.loads((out / "search.json").read_text())
    assert summary["method"] == "weightless" and summary["chosen"] == 0
    (trial,) = summary["trials"]
    assert trial["footprint"]["energy_j"] > 0  # its own retraining window, nested in the total
    assert trial["metrics"]["dev_accuracy"] == result["best"]["dev_accuracy"]
    assert [w["name"] for w in summary["total"]["windows"]] == ["weightless:search", "weightless:retrain"]
    assert 'id="search-pareto"' in (out / "search.html").read_text()
    from lowcarb.store import RunStore

    store = RunStore(store_path)
    (run,) = store.list_runs()
    assert run.settings["method"] == "weightless" and run.settings["parsec"]["top"] == 1
    fps = store.footprints(run.run_id)
    assert {fp["intensity_g_per_kwh"] for fp in fps} == {555}
    assert sum(fp["energy_j"] for fp in fps) == pytest.approx(summary["total"]["energy_j"])
