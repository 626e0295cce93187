"""Quality of a causal LM: perplexity on held-out responses, exact match of greedy answers.

    perplexity(model, bundle.loader("dev", 8, tokenizer=tok))     # {"loss", "perplexity", "tokens"}
    exact_match(model, tok, prompts, references)                  # {"exact_match", "answered", ...}

Perplexity is exp(mean negative log-likelihood per labelled token), the labelled tokens being the
responses (and the end-of-turn token after each): the model is scored on what it should say, not
on the prompt it was given.

Exact match generates greedily from each prompt until end-of-sequence (or the longest reference
plus a margin) and compares after `normalize_answer`: Unicode NFKC, case folded, whitespace
collapsed, surrounding whitespace, quotes and final punctuation stripped. When a reference is one
line, only the first non-empty line of the answer counts (a model that answers and then keeps
talking still answered).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from lowcarb.train.batches import Batch, model_device, to_device
from lowcarb.train.causal_lm import token_nll_sum
from lowcarb.train.device import autocast
from lowcarb.train.generation import greedy_generate, left_pad
from lowcarb.train.progress import progress_bar

_STRIP = " \t\n\r\"'`.,;:!?"
# Tokens generated beyond the longest reference before an answer is cut (it is wrong by then).
ANSWER_MARGIN_TOKENS = 8


def normalize_answer(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return re.sub(r"\s+", " ", text).strip(_STRIP)


def answers_match(prediction: str, reference: str) -> bool:
    if "\n" not in reference.strip():
        lines = [line for line in prediction.splitlines() if line.strip()]
        prediction = lines[0] if lines else ""
    return normalize_answer(prediction) == normalize_answer(reference)


@torch.inference_mode()
def perplexity(
    model: nn.Module, loader: Iterable[Batch], *, quiet: bool = True, precision: str = "fp32"
) -> dict[str, float]:
    """Mean NLL per labelled token (nats), its exp, and the token count."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    nll, tokens = 0.0, 0
    try:
        with progress_bar(quiet) as bar:
            task = bar.add_task("perplexity", total=len(loader) if hasattr(loader, "__len__") else None, status="")  # type: ignore[arg-type]
            for batch in loader:
                with autocast(device, precision):
                    total, count = token_nll_sum(model, to_device(batch, device))
                nll += total
                tokens += count
                bar.update(task, advance=1)
    finally:
        model.train(was_training)
    if tokens == 0:
        raise ValueError("perplexity of no labelled tokens is undefined; check the split has responses")
    loss = nll / tokens
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": tokens}


@torch.inference_mode()
def exact_match(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    references: Sequence[str],
    *,
    batch_size: int = 8,
    max_new_tokens: int = 64,
    keep_examples: int = 5,
    quiet: bool = True,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Share of prompts whose greedy answer matches its reference (token-id prompts)."""
    if len(prompts) != len(references):
        raise ValueError(f"{len(prompts)} prompts but {len(references)} references")
    if not prompts:
        return {"exact_match": None, "answered": 0, "samples": []}
    ref_tokens = max(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in references)
    budget = max(1, min(max_new_tokens, ref_tokens + ANSWER_MARGIN_TOKENS))
    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    eos_id = tokenizer.eos_token_id
    # Similar prompt lengths share a batch (less left padding); results go back in input order.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    predictions: dict[int, str] = {}
    with progress_bar(quiet) as bar:
        task = bar.add_task("exact match", total=len(order), status="")
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = left_pad([prompts[i] for i in chunk], pad_id)
            new = greedy_generate(
                model, batch, budget, eos_token_id=eos_id, pad_token_id=pad_id, precision=precision
            )
            for i, row in zip(chunk, new.tolist(), strict=True):
                if eos_id is not None and eos_id in row:
                    row = row[: row.index(eos_id)]
                predictions[i] = tokenizer.decode(row, skip_special_tokens=True)
            bar.update(task, advance=len(chunk))
    hits = [answers_match(predictions[i], ref) for i, ref in enumerate(references)]
    samples = [
        {"reference": references[i], "prediction": predictions[i], "match": hits[i]}
        for i in range(min(keep_examples, len(references)))
    ]
    return {
        "exact_match": sum(hits) / len(hits),
        "answered": len(hits),
        "max_new_tokens": budget,
        "samples": samples,
    }


def prompt_batch(prompts: Sequence[Sequence[int]], size: int, pad_id: int) -> Batch:
    """`size` prompts, left-padded; a shorter list is cycled (for timing a batch size)."""
    if not prompts:
        raise ValueError("no prompts to build a batch from; the split is empty")
    chosen = [prompts[i % len(prompts)] for i in range(size)]
    return left_pad(chosen, pad_id)


__all__ = ["answers_match", "exact_match", "normalize_answer", "perplexity", "prompt_batch"]
