"""The evaluation every causal LM of a run gets: quality per split, then serving cost per token.

Flat metrics (the report's LM columns; lowcarb.report.lm):

- quality, for each split: `<split>_loss` (mean NLL per response token, nats), `<split>_perplexity`,
  `<split>_tokens`, and where the rows end with a reference answer `<split>_exact_match` (also
  stored as `<split>_accuracy`, so payback lines and Pareto fronts read it like a classifier's
  accuracy), `<split>_answered`, `<split>_samples` (a few predictions, for the report);
- serving, with the KV cache at `threads` threads, for each generation batch size N:
  `gen_bN_ttft_ms` (time to first token, prompt included), `gen_bN_decode_tokens_per_s`,
  `gen_bN_prompt_tokens`; and the measured footprint of generating `generated_tokens` tokens at
  the largest batch size scaled to 1,000 tokens: `per1k_tokens_energy_j`, `_operational_g`,
  `_embodied_g`, `_total_g`, `per1k_tokens_method`, `per1k_tokens_batch_size`;
- `params`, `trainable_params`, `size_bytes`, `threads`, where it was measured (`device`,
  `device_name`, `precision`), the machine's load while timing (`latency_load_1m`,
  `latency_cores`, `latency_busy`, as classifiers record it), the medians' 95 % intervals
  (`gen_bN_ttft_low_ms` / `_high_ms`), and `weights_note` when the weights came from a quantized
  file (the quality figures are then those of the quantized model).

Any model the run produced goes through here: the functions it calls take only the module and
its tokenizer, so a LoRA-merged, quantized, distilled or factorized LLM is measured as the
original was.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from lowcarb.data.lm import LMBundle, SplitName
from lowcarb.pipeline.context import RunContext
from lowcarb.pipeline.tasks import EvaluationSettings
from lowcarb.train.batches import model_device
from lowcarb.train.device import device_name, precision_on
from lowcarb.train.generation import generation_footprint, time_generation
from lowcarb.train.lm_eval import exact_match, perplexity, prompt_batch
from lowcarb.train.size import count_parameters, size_on_disk_bytes


def _lm_parts(ctx: RunContext) -> tuple[nn.Module, Any, LMBundle]:
    """The model, its tokenizer and the text: a causal-LM run always loads all three."""
    if not isinstance(ctx.data, LMBundle) or ctx.tokenizer is None:
        raise TypeError(f"a causal-LM evaluation needs an LMBundle and a tokenizer, got "
                        f"{type(ctx.data).__name__} and {type(ctx.tokenizer).__name__}")
    return ctx.model, ctx.tokenizer, ctx.data


def evaluate_causal_lm(ctx: RunContext, settings: EvaluationSettings) -> dict[str, Any]:
    model, tokenizer, data = _lm_parts(ctx)
    batch_size = ctx.recipe.train.batch_size
    gen_batch = max(settings.generation_batch_sizes)
    precision = _precision(ctx)
    out: dict[str, Any] = {}
    for split in settings.splits:
        if split == "test" and data.test is None:
            continue
        loader = ctx.loader(split, batch_size=batch_size)
        quality = perplexity(model, loader, quiet=ctx.quiet, precision=precision)
        out.update({f"{split}_{k}": v for k, v in quality.items()})
        pairs = [(e.prompt_ids, e.reference) for e in data.encoded(split, tokenizer).examples
                 if e.prompt_ids is not None and e.reference is not None]
        if pairs:
            em = exact_match(
                model, tokenizer, [p for p, _ in pairs], [r for _, r in pairs],
                batch_size=gen_batch, max_new_tokens=settings.max_new_tokens, quiet=ctx.quiet,
                precision=precision,
            )  # fmt: skip
            out[f"{split}_exact_match"] = em["exact_match"]
            out[f"{split}_accuracy"] = em["exact_match"]
            out[f"{split}_answered"] = em["answered"]
            out[f"{split}_samples"] = em["samples"]
    out.update(serving_costs(ctx, settings))
    if ctx.handle.provenance:
        out["weights_note"] = ctx.handle.provenance
    return out


def _precision(ctx: RunContext) -> str:
    # A model that left the run's device (int8 served on the CPU) runs there in fp32.
    return precision_on(model_device(ctx.model), ctx.placement)


def serving_costs(ctx: RunContext, settings: EvaluationSettings) -> dict[str, Any]:
    """Size, generation timing at each batch size and the footprint of 1,000 generated tokens."""
    model, tokenizer, data = _lm_parts(ctx)
    device, precision = model_device(model), _precision(ctx)
    pad_id = int(tokenizer.pad_token_id)
    split: SplitName = "test" if data.test is not None else "dev"
    examples = data.encoded(split, tokenizer).examples
    # Rows with a prompt serve their prompt; plain-text rows serve their first half.
    prompts = [e.prompt_ids or e.input_ids[: max(2, len(e.input_ids) // 2)] for e in examples]
    out: dict[str, Any] = {
        "params": count_parameters(model),
        "trainable_params": count_parameters(model, trainable_only=True),
        "size_bytes": size_on_disk_bytes(model),
        "threads": settings.threads,
        "device": str(device),
        "device_name": ctx.placement.name if device == ctx.placement.device else device_name(device),
        "precision": precision,
    }
    busiest = None
    for size in settings.generation_batch_sizes:
        timing = time_generation(
            model, prompt_batch(prompts, size, pad_id), new_tokens=settings.timing_new_tokens,
            repeats=settings.generation_repeats, threads=settings.threads, pad_token_id=pad_id,
            precision=precision,
        )  # fmt: skip
        out[f"gen_b{size}_ttft_ms"] = timing.ttft_p50_ms
        out[f"gen_b{size}_ttft_low_ms"], out[f"gen_b{size}_ttft_high_ms"] = timing.ttft_interval_ms
        out[f"gen_b{size}_decode_tokens_per_s"] = timing.decode_tokens_per_s
        low, high = timing.decode_interval_tokens_per_s
        out[f"gen_b{size}_decode_low_tokens_per_s"], out[f"gen_b{size}_decode_high_tokens_per_s"] = low, high
        out[f"gen_b{size}_prompt_tokens"] = timing.prompt_tokens
        out[f"gen_b{size}_repeats"] = timing.repeats
        if busiest is None or (timing.load.load_1m or 0.0) > (busiest.load_1m or 0.0):
            busiest = timing.load
    if busiest is not None:
        out["latency_load_1m"], out["latency_cores"], out["latency_busy"] = (
            busiest.load_1m, busiest.cores, busiest.busy,
        )  # fmt: skip
    size = max(settings.generation_batch_sizes)
    fp = generation_footprint(
        model, prompt_batch(prompts, size, pad_id), tokens=settings.generated_tokens,
        new_tokens=settings.timing_new_tokens, threads=settings.threads, pad_token_id=pad_id,
        carbon_config=ctx.carbon, name="generation", precision=precision,
    ).to_dict()  # fmt: skip
    generated = float(fp.get("units") or settings.generated_tokens)
    scale = 1000.0 / generated
    out["per1k_tokens_energy_j"] = fp["energy_j"] * scale
    out["per1k_tokens_operational_g"] = fp["operational_g"] * scale
    out["per1k_tokens_embodied_g"] = fp["embodied_g"] * scale
    out["per1k_tokens_total_g"] = out["per1k_tokens_operational_g"] + out["per1k_tokens_embodied_g"]
    out["per1k_tokens_method"] = "; ".join(
        f"{name}: {comp['method']}" for name, comp in (fp.get("components") or {}).items()
    )
    out["per1k_tokens_batch_size"] = size
    out["tokens_measured"] = generated
    return out
