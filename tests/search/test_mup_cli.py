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


def test_mutransfer_verb(tmp_path, capsys):
    (tmp_path / "text.txt").write_text(
        "\n".join(["the cat sat on the mat", "a dog ate a hat"] * 40)
    )
    (tmp_path / "r.yaml").write_text(
        "text: text.txt\n"
        "model: {base_width: 8, n_heads: 2, max_len: 16}\n"
        "proxy_width: 8\ntarget_width: 16\nlog2_lrs: [-7, -5]\n"
        "train: {steps: 8, batch_size: 4, seq_len: 8, eval_windows: 8}\n"
        "verify_octaves: [1]\n"
    )
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
        "text: t.txt\nmodel: {base_width: 8, n_heads: 2}\nproxy_width: 8\ntarget_width: 16\n"
        "log2_lrs: [-6]\nlearning_rate: 3\n"
    )
    assert main(["mutransfer", str(tmp_path / "r.yaml")]) == 2
    assert "learning_rate" in capsys.readouterr().err
