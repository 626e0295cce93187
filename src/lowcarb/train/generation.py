"""Greedy generation with the KV cache: the outputs, their timing, and the energy per token.

Every causal LM lowcarb evaluates (as loaded, LoRA-merged, quantized, distilled, factorized) goes
through these functions, which call the model's own `generate` (Hugging Face's decoding loop:
prefill the prompt once, then one token per step reusing cached keys and values). A transform that
replaces Linear layers keeps the model a `generate`-capable Hugging Face model, so its figures
come from the same code path as the original's.

Timing (`time_generation`): a streamer receives each new token as it is chosen and reads a
`DeviceClock` (the device is synchronized before each read). Time to first token runs from the
call to the first new token (prompt prefill included); decode tokens per second counts the tokens
after the first over the time after the first, summed over the batch. Runs generate a fixed
number of tokens (`min_new_tokens = max_new_tokens`), so an early end-of-sequence cannot shorten
a measurement. The medians come with their 95 % interval and the machine's load while timing.
Forward passes run under the precision's autocast (`lowcarb.train.device`; nothing at fp32).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from lowcarb.errors import ModelError
from lowcarb.train.batches import Batch, model_device, to_device
from lowcarb.train.device import autocast
from lowcarb.train.latency import torch_threads
from lowcarb.train.timing import DeviceClock, MachineLoad, machine_load, median_interval


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> Batch:
    """Left-padded (B, T) input_ids and attention_mask: generation appends on the right, so every
    row's last position must be a real token."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if len(p):
            ids[i, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
            mask[i, width - len(p) :] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _generation_config(max_new_tokens: int, min_new_tokens: int, eos_token_id: int | None, pad_token_id: int) -> Any:
    from transformers import GenerationConfig

    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        do_sample=False,
        num_beams=1,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        use_cache=True,
    )


@torch.inference_mode()
def greedy_generate(
    model: nn.Module,
    prompts: Batch,
    max_new_tokens: int,
    *,
    eos_token_id: int | None,
    pad_token_id: int,
    min_new_tokens: int = 0,
    streamer: Any | None = None,
    precision: str = "fp32",
) -> torch.Tensor:
    """The new tokens (B, n <= max_new_tokens) after left-padded `prompts` (input_ids, attention_mask).

    Deterministic: argmax at every step. Rows that reached end-of-sequence are padded after it.
    """
    generate: Callable[..., Any] | None = getattr(model, "generate", None)
    if generate is None:
        raise ModelError(
            f"{type(model).__name__} has no generate(); greedy generation needs a Hugging Face "
            "causal LM (AutoModelForCausalLM, or a model lowcarb built from one)"
        )
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    was_training = model.training
    model.eval()
    device = model_device(model)
    inputs = to_device({k: prompts[k] for k in ("input_ids", "attention_mask")}, device)
    config = _generation_config(max_new_tokens, min_new_tokens, eos_token_id, pad_token_id)
    try:
        with autocast(device, precision):
            out = generate(**inputs, generation_config=config, streamer=streamer)
    finally:
        model.train(was_training)
    sequences = out if isinstance(out, torch.Tensor) else out.sequences
    return sequences[:, inputs["input_ids"].shape[1] :]


class TokenClock:
    """A `generate` streamer that timestamps every put: the prompt first, then each new token."""

    def __init__(self, device: torch.device) -> None:
        self.clock = DeviceClock(device)
        self.times: list[float] = []

    def put(self, value: torch.Tensor) -> None:
        self.times.append(self.clock.now())

    def end(self) -> None:
        return None


@dataclass(frozen=True)
class GenerationTiming:
    batch_size: int
    prompt_tokens: int  # padded prompt width
    new_tokens: int
    repeats: int
    threads: int
    ttft_p50_ms: float
    ttft_runs_ms: tuple[float, ...]
    decode_tokens_per_s: float  # median over runs, all rows of the batch counted
    decode_runs_tokens_per_s: tuple[float, ...]
    ttft_interval_ms: tuple[float, float]  # 95 % interval of the median (order statistics)
    decode_interval_tokens_per_s: tuple[float, float]
    load: MachineLoad
    device: str
    precision: str = "fp32"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["load"] = self.load.to_dict()
        return out


def time_generation(
    model: nn.Module,
    prompts: Batch,
    *,
    new_tokens: int = 32,
    repeats: int = 5,
    warmup: int = 1,
    threads: int | None = 1,
    pad_token_id: int = 0,
    precision: str = "fp32",
) -> GenerationTiming:
    """Time to first token and decode tokens/s of greedy generation on `prompts`, at `threads`."""
    if new_tokens < 2:
        raise ValueError(f"new_tokens must be >= 2 to time decoding after the first token, got {new_tokens}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    device = model_device(model)
    batch = int(prompts["input_ids"].shape[0])
    ttft, rates = [], []
    load = machine_load()
    with torch_threads(threads):
        for i in range(warmup + repeats):
            clock = TokenClock(device)
            start = clock.clock.now()
            greedy_generate(
                model, prompts, new_tokens, eos_token_id=None, pad_token_id=pad_token_id,
                min_new_tokens=new_tokens, streamer=clock, precision=precision,
            )  # fmt: skip
            if i < warmup:
                continue
            stamps = clock.times[1:]  # times[0] is the prompt, before any model work
            if len(stamps) != new_tokens:
                raise ModelError(f"the model produced {len(stamps)} tokens, {new_tokens} were forced")
            ttft.append((stamps[0] - start) * 1000.0)
            decode_s = stamps[-1] - stamps[0]
            rates.append(batch * (new_tokens - 1) / decode_s if decode_s > 0 else math.inf)
    return GenerationTiming(
        batch_size=batch,
        prompt_tokens=int(prompts["input_ids"].shape[1]),
        new_tokens=new_tokens,
        repeats=repeats,
        threads=threads if threads is not None else torch.get_num_threads(),
        ttft_p50_ms=statistics.median(ttft),
        ttft_runs_ms=tuple(ttft),
        decode_tokens_per_s=statistics.median(rates),
        decode_runs_tokens_per_s=tuple(rates),
        ttft_interval_ms=median_interval(ttft),
        decode_interval_tokens_per_s=median_interval(rates),
        load=max((load, machine_load()), key=lambda m: m.load_1m or 0.0),
        device=str(device),
        precision=precision,
    )


def generation_footprint(
    model: nn.Module,
    prompts: Batch,
    *,
    tokens: int = 1000,
    new_tokens: int = 32,
    threads: int | None = 1,
    pad_token_id: int = 0,
    carbon_config: Any | None = None,
    name: str = "generation",
    precision: str = "fp32",
) -> Any:
    """Generate at least `tokens` new tokens (whole calls of `new_tokens` per row) inside
    `lowcarb.measure.track(name, unit="token")`; returns the window's Footprint (units = tokens
    actually generated, prompt tokens not counted)."""
    from lowcarb.measure import track  # train must not need the ledger to import

    if tokens < 1:
        raise ValueError(f"tokens must be >= 1, got {tokens}")
    batch = int(prompts["input_ids"].shape[0])
    calls = math.ceil(tokens / (batch * new_tokens))
    kwargs: dict[str, Any] = {"unit": "token", "units": calls * batch * new_tokens}
    if carbon_config is not None:
        kwargs["config"] = carbon_config
    clock = DeviceClock(model_device(model))
    with torch_threads(threads):
        clock.now()  # work queued before the window is not charged to it
        with track(name, **kwargs) as fp:
            for _ in range(calls):
                greedy_generate(
                    model, prompts, new_tokens, eos_token_id=None, pad_token_id=pad_token_id,
                    min_new_tokens=new_tokens, precision=precision,
                )  # fmt: skip
            clock.now()  # the window closes after the device has finished
    return fp
