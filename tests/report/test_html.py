"""The HTML report is self-contained and has every section; markdown and compare forms too."""

import base64
import re

from lowcarb.report import compare_rows, render_compare_html, render_html, render_markdown

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def embedded_pngs(html: str) -> dict[str, bytes]:
    found = re.findall(r'<img id="([^"]+)"[^>]*src="data:image/png;base64,([^"]+)"', html)
    return {img_id: base64.b64decode(data) for img_id, data in found}


def test_html_has_all_sections_and_real_images(two_model_run):
    html = render_html(two_model_run)
    for section in ("summary", "models", "co2-per-stage", "tradeoff", "payback", "ledger", "notes",
                    "recipe"):
        assert f'<section id="{section}">' in html
    images = embedded_pngs(html)
    assert set(images) == {"co2-per-stage-plot", "tradeoff-plot"}
    for png in images.values():
        assert png.startswith(PNG_MAGIC) and len(png) > 5000
    # Self-contained: nothing fetched from elsewhere.
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert "shrink: spent 60 mg CO2e, saves 3 g per million inferences" in html
    table = html[html.index('id="model-table"'):]
    assert table.index(">train<") < table.index(">shrink<")
    assert "93.00%" in table and "40 k" in table


def test_html_escapes_names(two_model_run):
    run = dict(two_model_run, name="<script>alert(1)</script>")
    html = render_html(run)
    assert "<script>alert" not in html and "&lt;script&gt;" in html


def test_empty_or_failed_run_still_renders():
    run = {"id": "x", "name": "n", "status": "failed", "error": "ValueError: bad", "stages": []}
    html = render_html(run)
    assert "error: ValueError: bad" in html and "No model was evaluated" in html
    assert "No model was evaluated" in render_markdown(run)


def test_markdown_form(two_model_run):
    md = render_markdown(two_model_run)
    assert md.startswith("# lowcarb report: demo")
    assert "| model (after stage) | test accuracy |" in md
    assert "Pareto front (test accuracy against CO2e per 1,000 inferences): train, shrink" in md
    assert "- shrink: spent 60 mg CO2e" in md
    assert "## Ledger: every window" in md
    assert "- **shrink**: params_before: 40000; params_after: 10000; ratio: 0.25" in md


def test_compare_side_by_side(two_model_run):
    other = dict(two_model_run, id="ffff0000", stages=two_model_run["stages"][:3])
    headers, body = compare_rows(other, two_model_run)
    rows = {r[0]: r for r in body}
    assert rows["final model"][1:3] == ["train", "shrink"]
    assert rows["accuracy"][3] == "-2.00 points"
    assert rows["CO2e / 1k inf."][3] == "0.25x"
    assert rows["params"][3] == "0.25x"
    html = render_compare_html(other, two_model_run, (headers, body))
    assert 'id="compare-table"' in html


def test_final_model_line(two_model_run):
    run = dict(two_model_run, model={"path": "out/model", "load_with": "lowcarb.models.load_model",
                                     "reloads": True, "reload_error": None})
    assert "reload it with lowcarb.models.load_model(folder)" in render_html(run)
    broken = dict(run, model={"path": "out/model", "reloads": False, "reload_error": "KeyError: x"})
    assert "reloading it failed: KeyError: x" in render_markdown(broken)


def test_compare_says_where_each_final_model_was_measured(two_model_run):
    import copy

    gpu = copy.deepcopy(two_model_run)
    gpu["stages"][4]["metrics"].update(device="cuda:0", device_name="NVIDIA H100", precision="bf16", threads=1)
    cpu = copy.deepcopy(two_model_run)
    cpu["stages"][4]["metrics"].update(device="cpu", device_name="AMD EPYC", precision="fp32", threads=1)
    rows = {r[0]: r for r in compare_rows(cpu, gpu)[1]}
    assert rows["measured on"] == ["measured on", "cpu (AMD EPYC), fp32, 1 thread(s)",
                                   "cuda:0 (NVIDIA H100), bf16, 1 thread(s)", "differs"]
    assert {r[0]: r for r in compare_rows(cpu, cpu)[1]}["measured on"][3] == "same"
    assert {r[0]: r for r in compare_rows(two_model_run, two_model_run)[1]}["measured on"][1] == "-"
