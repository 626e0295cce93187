"""Why int4 weight-only loses the fine-tuning of SmolLM2-135M (benchmarks/llm_serve.py's int4 arm).

SmolLM2-135M-Instruct reaches lowcarb as a GGUF whose 210 decoder Linears are Q4_1: 4-bit codes
in blocks of 32 inputs, each block with its own scale and minimum. Dequantized to fp32, every
block holds at most 16 distinct values, its minimum and maximum among them. torchao's int4
weight-only (tinygemm, asymmetric, `group_size` inputs per scale and zero point) applied with
group size 32 chooses that same grid again, so it reproduces the shipped model almost exactly
(llm_serve's `llm.int4_ppl_increase_pct_as_shipped`). Fine-tuning (150 AdamW steps at 5e-5 with
warm-up and decay) moves a weight by a few thousandths, less than half a grid step, so
re-quantizing the fine-tuned model rounds most weights back onto their shipped codes and the
fine-tuning is lost.

This script measures that directly on the model llm_serve.py fine-tunes (same data, steps, lr
and seed, through the same function):
- per decoder Linear, with the int4 codes computed as tinygemm chooses them (min and max per group,
  15 steps between), in fp32: the share of weights whose group-32 code is unchanged by
  fine-tuning, and the share whose fine-tuning change exceeds half the shipped grid step;
- int4 with group sizes 32, 64 and 128 (64 and 128 span several Q4_1 blocks, so their grid is
  not the shipped one) on the fine-tuned model: perplexity and exact match on the first
  `--side-dev` dev rows, next to fp32 on the same rows, and how many of the 211 Linears (210 in
  the decoder blocks, and lm_head) each group size quantized (a Linear whose input size is not a
  multiple of the group size stays fp32: at 128 that is every projection reading the 576-wide
  hidden state).
All figures are reported (no target): they explain llm_serve's `llm.int4_ppl_increase_pct`.

    python benchmarks/llm_int4_grid.py              # ~15 min on an idle 2-core machine
    python benchmarks/llm_int4_grid.py --smoke      # tiny budgets (JSON in results/smoke/)

Options are llm_serve.py's (only the data, fine-tuning and `--side-dev` ones are used).
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import check_quiet_machine, reported, write_results  # noqa: E402

NAME = "llm_int4_grid"
GROUP_SIZES = (32, 64, 128)  # the sizes the CPU int4 kernel takes
Q4_1_BLOCK = 32  # inputs per Q4_1 block in the GGUF (ggml's QK4_1)


def int4_codes(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric 4-bit codes of `weight` (out x in) per `group_size` consecutive inputs, and each
    weight's step size: min and max of the group, (max - min) / 15 between codes, as tinygemm's
    int4 weight-only and GGUF's Q4_1 both choose them."""
    rows, cols = weight.shape
    groups = weight.float().reshape(rows, cols // group_size, group_size)
    low = groups.amin(dim=-1, keepdim=True)
    step = ((groups.amax(dim=-1, keepdim=True) - low) / 15).clamp_min(torch.finfo(torch.float32).tiny)
    codes = torch.round((groups - low) / step).clamp(0, 15)
    return codes.reshape(rows, cols), step.expand_as(groups).reshape(rows, cols)


def grid_figures(shipped: torch.nn.Module, tuned: torch.nn.Module) -> dict[str, Any]:
    """Per decoder Linear and in total: how many int4 group-32 codes fine-tuning changed, and how
    many weights moved by more than half their shipped grid step."""
    tuned_modules = dict(tuned.named_modules())
    layers: dict[str, dict[str, float]] = {}
    same = moved = total = 0
    for name, module in shipped.named_modules():
        if not isinstance(module, torch.nn.Linear) or ".layers." not in f".{name}":
            continue  # decoder blocks only: the tied lm_head / embedding is Q8_0 in the GGUF
        before, after = module.weight.detach(), tuned_modules[name].weight.detach()
        codes_before, step = int4_codes(before, Q4_1_BLOCK)
        codes_after, _ = int4_codes(after, Q4_1_BLOCK)
        n_same = int((codes_before == codes_after).sum())
        n_moved = int(((after.float() - before.float()).abs() > step / 2).sum())
        layers[name] = {"code_agreement_pct": 100 * n_same / before.numel(),
                        "moved_over_half_step_pct": 100 * n_moved / before.numel(),
                        "max_abs_change": float((after - before).abs().max()),
                        "median_step": float(step.median())}  # fmt: skip
        same, moved, total = same + n_same, moved + n_moved, total + before.numel()
    return {"linears": len(layers), "weights": total, "code_agreement_pct": 100 * same / total,
            "moved_over_half_step_pct": 100 * moved / total, "per_linear": layers}  # fmt: skip


def side_quality(model: torch.nn.Module, tok: Any, data: dict[str, Any], args: Any) -> dict[str, Any]:
    from llm_lora import accuracy, loader

    from lowcarb.train.lm_eval import perplexity

    ppl = perplexity(model, loader(data["dev_side"], tok, args, 0, shuffle=False))
    return {"side_perplexity": ppl["perplexity"], "side_tokens": ppl.get("tokens"),
            "side_exact_match": accuracy(model, tok, data["dev_side"], args)["accuracy"]}  # fmt: skip


def main() -> int:
    from llm_lora import build, data_description, sst2_rows
    from llm_serve import fine_tune, parse_args

    from lowcarb.compress.quantize import WeightOnlyInt4, quantize_

    args = parse_args(description=__doc__.splitlines()[0])
    load = check_quiet_machine(args.allow_load)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    data = sst2_rows(args)
    data["dev_side"] = type(data["dev"])(data["dev"].rows[: args.side_dev], "dev_side")
    shipped, _, _ = build("full")
    tuned, tok, tuning = fine_tune(args, data)
    grid = grid_figures(shipped, tuned)
    print(f"group-32 codes unchanged by fine-tuning: {grid['code_agreement_pct']:.3f} %", flush=True)
    del shipped
    arms = {"fp32": side_quality(tuned, tok, data, args)}
    for size in GROUP_SIZES:
        model = copy.deepcopy(tuned).eval()
        summary = quantize_(model, WeightOnlyInt4(group_size=size, compute_dtype="bfloat16"))
        # A Linear whose input size is not a multiple of the group size stays fp32 (576-input
        # projections at group 128): the arm's quality is only comparable with how much it quantized.
        arms[f"int4_gs{size}"] = {**side_quality(model, tok, data, args),
                                  "linears_quantized": len(summary.modules_changed),
                                  "linears_left_fp32": len(summary.details.get("skipped", {}))}  # fmt: skip
        print(f"int4 gs{size}: {arms[f'int4_gs{size}']}", flush=True)
        del model
    base = arms["fp32"]["side_perplexity"]
    figures = {"fine_tuning": tuning, "data": data_description(args, data), "side_dev_rows": len(data["dev_side"]),
               "threads": args.threads, "grid": grid, "arms": arms, "wall_s": time.perf_counter() - started}  # fmt: skip
    claims = [
        reported("llm.int4_gs32_code_agreement_pct", round(grid["code_agreement_pct"], 3)),
        reported("llm.finetune_moved_over_half_step_pct", round(grid["moved_over_half_step_pct"], 4)),
        reported("llm.fp32_side_dev_accuracy", arms["fp32"]["side_exact_match"]),
        *[reported(f"llm.int4_gs{s}_side_ppl_increase_pct", round((arms[f"int4_gs{s}"]["side_perplexity"] / base - 1) * 100, 3))
          for s in GROUP_SIZES],
        *[reported(f"llm.int4_gs{s}_side_dev_accuracy", arms[f"int4_gs{s}"]["side_exact_match"]) for s in GROUP_SIZES],
        *[reported(f"llm.int4_gs{s}_linears_quantized", arms[f"int4_gs{s}"]["linears_quantized"]) for s in GROUP_SIZES],
    ]  # fmt: skip
    path = write_results(NAME, figures, claims, load=load, args=args)
    print(json.dumps(claims, indent=2))
    print(f"wrote {path} after {figures['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
