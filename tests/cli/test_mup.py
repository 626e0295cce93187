"""`lowcarb mup coord-check` and `lowcarb mutransfer` end to end, tiny."""

from __future__ import annotations

import json

import pytest

from lowcarb.cli import main


def test_coord_check_verb_writes_plot_and_passes(tmp_path, capsys):
    out = tmp_path / "cc"
    code = main(
        ["mup", "coord-check", "mlp", "--widths", "16,32,64", "--steps", "3", "--out", str(out)]
    )
    text = capsys.readouterr().out
    assert code == 0, text
    assert "muP  pass" in text and "SP   fail" in text
    assert (out / "coord_check.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((out / "coord_check.json").read_text())
    assert saved["passed"] is True and saved["config"]["widths"] == [16, 32, 64]


def test_coord_check_verb_fails_with_an_impossible_tolerance(tmp_path, capsys):
    code = main(
        [
            "mup",
            "coord-check",
            "mlp",
            "--widths",
            "16,32",
            "--steps",
            "2",
            "--tolerance",
            "1e-9",
            "--seeds",
            "0",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 1
    assert "muP  fail" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["mup", "coord-check", "mlp", "--widths", "32,a"], "comma-separated integers"),
        (
            ["mup", "coord-check", "mlp", "--widths", "32,64", "--base-width", "64"],
            "below the base width",
        ),
        (["mutransfer", "missing.yaml"], "no recipe"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


TINY_RECIPE = (
    "name: tiny-transfer\n"
    "mutransfer:\n"
    "  text: text.txt\n"
    "  model: {base_width: 8, n_heads: 2, max_len: 16}\n"
    "  proxy_width: 8\n  target_width: 16\n  log2_lrs: [-7, -5]\n"
    "  train: {steps: 8, batch_size: 4, seq_len: 8, eval_windows: 8}\n"
    "  verify_octaves: [1]\n"
)


def test_mutransfer_verb(tmp_path, capsys):
    (tmp_path / "text.txt").write_text(
        "\n".join(["the cat sat on the mat", "a dog ate a hat"] * 40)
    )
    (tmp_path / "r.yaml").write_text(TINY_RECIPE)
    out = tmp_path / "res.json"
    assert main(["mutransfer", str(tmp_path / "r.yaml"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "proxy" in text and "transfer" in text and "extrapolated" in text
    res = json.loads(out.read_text())
    assert res["target_width"] == 16 and len(res["trials"]) == 4
    assert res["tuning_energy_ratio"] > 0


def test_mutransfer_recipe_with_unknown_setting(tmp_path, capsys):
    (tmp_path / "t.txt").write_text("abc\n" * 50)
    (tmp_path / "r.yaml").write_text(
        "mutransfer:\n  text: t.txt\n  model: {base_width: 8, n_heads: 2}\n  proxy_width: 8\n"
        "  target_width: 16\n  log2_lrs: [-6]\n  learning_rate: 3\n"
    )
    assert main(["mutransfer", str(tmp_path / "r.yaml")]) == 2
    assert "learning_rate" in capsys.readouterr().err


def test_mutransfer_is_a_stored_search_measured_with_the_recipe_carbon(tmp_path, capsys):
    (tmp_path / "text.txt").write_text("\n".join(["the cat sat on the mat", "a dog ate a hat"] * 40))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(TINY_RECIPE + "carbon: {intensity_g_per_kwh: 777, pue: 1.2}\n")
    runs = tmp_path / "runs"
    store_path = tmp_path / "s.db"
    args = ["mutransfer", str(recipe), "--out", str(tmp_path / "r.json"), "--runs", str(runs)]
    assert main([*args, "--store", str(store_path)]) == 0
    capsys.readouterr()
    from lowcarb.store import RunStore

    store = RunStore(store_path)
    (run,) = store.list_runs()
    assert run.kind == "search" and run.name == "tiny-transfer" and run.status == "completed"
    assert run.settings["method"] == "mutransfer"
    footprints = store.footprints(run.run_id)
    assert len(footprints) == 4  # every trial ran in its own window: 2 proxy, transfer, verify
    assert {fp["intensity_g_per_kwh"] for fp in footprints} == {777}
    assert {fp["pue"] for fp in footprints} == {1.2}
    summary = json.loads((runs / run.run_id / "search.json").read_text())
    assert summary["method"] == "mutransfer" and len(summary["trials"]) == 4
    assert summary["trials"][summary["chosen"]]["params"]["stage"] == "transfer"
    assert summary["total"]["energy_j"] == pytest.approx(sum(fp["energy_j"] for fp in footprints))
    assert 'id="search-trials"' in (runs / run.run_id / "search.html").read_text()


def test_mutransfer_old_recipe_format_says_how_to_convert(tmp_path, capsys):
    (tmp_path / "t.txt").write_text("abc\n" * 50)
    (tmp_path / "r.yaml").write_text(
        "text: t.txt\nmodel: {base_width: 8, n_heads: 2}\nproxy_width: 8\ntarget_width: 16\n"
        "log2_lrs: [-6]\n"
    )
    assert main(["mutransfer", str(tmp_path / "r.yaml")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "`mutransfer:` section" in err and "indent text, model, proxy_width" in err


def test_mutransfer_recipe_without_the_section(tmp_path, capsys):
    (tmp_path / "r.yaml").write_text("name: x\n")
    assert main(["mutransfer", str(tmp_path / "r.yaml")]) == 2
    assert "no mutransfer: section" in capsys.readouterr().err
