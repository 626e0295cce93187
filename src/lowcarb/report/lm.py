"""What a report shows for causal language models: quality and serving cost per generated token,
and training cost per training token. Reads the flat metrics of lowcarb.pipeline.lm_evaluation
and the summaries of training stages (lowcarb.train.causal_lm); trains nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from lowcarb.report.formatting import fmt_bytes, fmt_j, fmt_num, fmt_pct, number
from lowcarb.report.summary import ModelRow, Run, cost_cells

_GEN_KEY = re.compile(r"^gen_b(\d+)_ttft_ms$")


def lm_split(rows: Sequence[ModelRow]) -> str:
    """The split the quality columns show: test where every row has it, else dev."""
    if rows and all(number(r.metrics.get("test_perplexity")) is not None for r in rows):
        return "test"
    return "dev"


def generation_batch_sizes(rows: Sequence[ModelRow]) -> list[int]:
    sizes = {int(m.group(1)) for r in rows for k in r.metrics if (m := _GEN_KEY.match(k))}
    return sorted(sizes)


def lm_model_table(rows: Sequence[ModelRow]) -> tuple[list[str], list[list[str]]]:
    """One row per evaluated LM: exact match, perplexity, time to first token and decode rate at
    each generation batch size, size, energy and CO2e per 1,000 generated tokens, stage cost."""
    split = lm_split(rows)
    sizes = generation_batch_sizes(rows)
    headers = [
        "model (after stage)",
        f"{split} exact match",
        f"{split} perplexity",
        *[h for n in sizes for h in (f"first token b={n}", f"decode tok/s b={n}")],
        "params",
        "size",
        "energy / 1k tok.",
        "CO2e op. / 1k tok.",
        "CO2e emb. / 1k tok.",
        "stage energy",
        "stage CO2e op. + emb.",
    ]
    body = []
    for r in rows:
        m = r.metrics
        ppl = number(m.get(f"{split}_perplexity"))
        timing = []
        for n in sizes:
            ttft = number(m.get(f"gen_b{n}_ttft_ms"))
            rate = number(m.get(f"gen_b{n}_decode_tokens_per_s"))
            timing += ["-" if ttft is None else f"{ttft:.3g} ms", "-" if rate is None else f"{rate:.3g}"]
        body.append(
            [
                r.label,
                fmt_pct(number(m.get(f"{split}_exact_match"))),
                "-" if ppl is None else f"{ppl:.4g}",
                *timing,
                fmt_num(number(m.get("params"))),
                fmt_bytes(number(m.get("size_bytes"))),
                *cost_cells(r, "per1k_tokens"),
            ]
        )
    return headers, body


def serving_sentence(rows: Sequence[ModelRow]) -> str:
    """How the LM columns were measured (for the text above the table)."""
    batch = next((m for r in rows if (m := r.metrics.get("per1k_tokens_batch_size"))), None)
    threads = next((m for r in rows if (m := r.metrics.get("threads"))), None)
    return (
        f"Quality on {lm_split(rows)}: exact match of greedy answers after normalisation, and "
        "perplexity of the reference responses. Serving: greedy generation with the KV cache at "
        f"{threads} thread(s); first-token time includes the prompt; energy and CO2e per 1,000 "
        f"generated tokens measured at batch {batch}. Stage columns are the cost of producing "
        "each model."
    )


def weights_notes(run: Run) -> list[str]:
    """Caveats on where weights came from (a quantized GGUF), for every place with quality figures."""
    notes: list[str] = []
    for record in run.get("stages") or []:
        for where in (record.get("summary") or {}, record.get("metrics") or {}):
            note = where.get("weights_note")
            if note and str(note) not in notes:
                notes.append(str(note))
    return notes


def training_rows(run: Run) -> tuple[list[str], list[list[str]]]:
    """Training stages of a causal LM: tokens, tokens/s, joules per 1,000 training tokens, peak memory."""
    headers = ["stage", "training tokens", "tokens / s", "energy / 1k training tok.", "peak memory", "measured by"]
    body = []
    for record in run.get("stages") or []:
        summary: Mapping[str, Any] = record.get("summary") or {}
        if "train_tokens" not in summary:
            continue
        j = number(summary.get("j_per_1k_train_tokens"))
        rate = number(summary.get("tokens_per_s"))
        peak = number(summary.get("peak_memory_bytes"))
        checkpointing = " (gradient checkpointing)" if summary.get("gradient_checkpointing") else ""
        body.append(
            [
                str(record.get("label", "?")),
                fmt_num(number(summary.get("train_tokens"))),
                "-" if rate is None else f"{rate:.4g}",
                fmt_j(j),
                fmt_bytes(peak) + checkpointing,
                str(summary.get("peak_memory_method", "")),
            ]
        )
    return headers, body
