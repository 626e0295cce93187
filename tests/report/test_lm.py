"""Reports of causal-LM runs: per-token columns, training per token, payback per generated token."""

import pytest
from rich.console import Console

from lowcarb.report import compare_rows, render_html, render_markdown
from lowcarb.report.lm import lm_model_table, training_rows, weights_notes
from lowcarb.report.summary import model_rows, paybacks
from lowcarb.report.terminal import final_table
from tests.report.conftest import footprint, record

NOTE = "weights dequantized from the GGUF file x.Q4_1.gguf: they went through Q4_1 (210 tensors) quantization"


def lm_metrics(em, ppl, per1k_tokens_g, decode_b1):
    return {
        "dev_exact_match": em + 0.01, "dev_accuracy": em + 0.01, "dev_perplexity": ppl * 1.1,
        "test_exact_match": em, "test_accuracy": em, "test_perplexity": ppl,
        "gen_b1_ttft_ms": 40.0, "gen_b1_decode_tokens_per_s": decode_b1,
        "gen_b8_ttft_ms": 90.0, "gen_b8_decode_tokens_per_s": decode_b1 * 6,
        "params": 134_515_008, "size_bytes": 538_000_000, "threads": 1, "per1k_tokens_batch_size": 8,
        "per1k_tokens_energy_j": per1k_tokens_g * 1000, "per1k_tokens_operational_g": per1k_tokens_g * 0.3,
        "per1k_tokens_embodied_g": per1k_tokens_g * 0.7, "per1k_tokens_total_g": per1k_tokens_g,
        "weights_note": NOTE,
    }  # fmt: skip


@pytest.fixture
def lm_run():
    lora = dict(record("lora", "lora", 1, True, footprint(900.0, 0.1, 0.3)), summary={
        "train_tokens": 40_000, "tokens_per_s": 250.0, "j_per_1k_train_tokens": 22.5,
        "peak_memory_bytes": 1_300_000_000, "peak_memory_method": "peak resident set (VmHWM)",
        "gradient_checkpointing": False})  # fmt: skip
    return {
        "id": "lm000001", "name": "llm", "status": "completed",
        "stages": [
            dict(record("setup", "setup", 0, False, footprint(1.0, 0.001, 0.002), auto=True),
                 summary={"task": "causal-lm", "weights_note": NOTE}),
            record("evaluate", "evaluate", 0, False, footprint(50.0, 0.01, 0.02), lm_metrics(0.02, 9.0, 0.004, 20.0)),
            lora,
            record("evaluate-2", "evaluate", 1, False, footprint(50.0, 0.01, 0.02), lm_metrics(0.91, 1.4, 0.002, 21.0)),
        ],
    }  # fmt: skip


def test_lm_rows_are_counted_per_generated_token(lm_run):
    rows = model_rows(lm_run)
    assert [r.unit for r in rows] == ["generated tokens"] * 2
    assert rows[1].per1k_total_g == 0.002 and rows[1].latency_ms == pytest.approx(1000 / 21.0)
    (line,) = paybacks(rows)
    assert line.unit == "generated tokens"
    # 0.004 -> 0.002 g per 1,000 tokens: 2 g per million tokens; 0.4 g spent -> 200,000 tokens.
    assert line.saved_g_per_million == pytest.approx(2.0)
    assert line.payback_inferences == pytest.approx(0.4 / 2e-6)
    assert "per million generated tokens" in line.sentence()
    assert "pays back after 200 thousand generated tokens" in line.sentence()
    assert "accuracy +89.00 points" in line.sentence()


def test_lm_table_and_training_table(lm_run):
    headers, body = lm_model_table(model_rows(lm_run))
    assert headers[1:3] == ["test exact match", "test perplexity"]
    assert "decode tok/s b=8" in headers and "energy / 1k tok." in headers
    assert body[1][1] == "91.00%" and body[1][2] == "1.4"
    t_headers, t_body = training_rows(lm_run)
    assert t_body == [["lora", "40 k", "250", "22.5 J", "1.3 GB", "peak resident set (VmHWM)"]]
    assert t_headers[3] == "energy / 1k training tok."
    assert weights_notes(lm_run) == [NOTE]


def test_every_form_shows_lm_columns_and_the_weights_note(lm_run):
    md = render_markdown(lm_run)
    html = render_html(lm_run)
    for text in (md, html):
        assert "first token b=1" in text and "per million generated tokens" in text
        assert "Q4_1 (210 tensors)" in text and "Training cost per token" in text
    assert 'id="generation-plot"' in html and 'id="tradeoff-plot"' in html
    console = Console(record=True, width=200)
    console.print(final_table(lm_run))
    printed = console.export_text()
    assert "test exact match" in printed and "decode tok/s b=1" in printed and "Q4_1" in printed


def test_compare_lists_per_token_lines(lm_run):
    other = dict(lm_run, id="lm000002")
    _, body = compare_rows(lm_run, other)
    labels = [row[0] for row in body]
    assert "test perplexity" in labels and "CO2e / 1k tok." in labels
    assert body[labels.index("decode tok/s b=1")][3] == "1x"
