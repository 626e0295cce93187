"""The causal-LM task lowcarb generates in code: rewriting dates between formats.

It needs no download and has exact answers, so exact match after greedy generation measures it
without a judge: "Rewrite the date 2031-04-07 in the format Month D, YYYY." -> "April 7, 2031".
Dates are drawn uniformly from 1950-2049 and the source and target formats differ; the same seed
gives the same rows on every machine (numpy's PCG64 generator). The splits are disjoint by date
and direction, so an exact match on dev or test is never a memorised training row.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from lowcarb.data.lm_rows import LMSplit, PromptResponse

MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
# name shown in the prompt -> how a date is written in it
FORMATS = {
    "YYYY-MM-DD": lambda d: f"{d.year:04d}-{d.month:02d}-{d.day:02d}",
    "DD/MM/YYYY": lambda d: f"{d.day:02d}/{d.month:02d}/{d.year:04d}",
    "D Month YYYY": lambda d: f"{d.day} {MONTHS[d.month - 1]} {d.year}",
    "Month D, YYYY": lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}",
}
GENERATED_NAME = "generated: date-format conversion"
# Rows per split; data.max_train_examples takes a smaller seeded subset of train.
GENERATED_SIZES = {"train": 2000, "dev": 100, "test": 100}
_FIRST = dt.date(1950, 1, 1).toordinal()
_LAST = dt.date(2049, 12, 31).toordinal()


def date_rows(n: int, seed: int) -> list[tuple[int, str, str]]:
    """`n` distinct (date ordinal, source format, target format) triples."""
    rng = np.random.default_rng(seed)
    names = list(FORMATS)
    seen: set[tuple[int, str, str]] = set()
    out: list[tuple[int, str, str]] = []
    while len(out) < n:
        day = int(rng.integers(_FIRST, _LAST + 1))
        src, dst = rng.choice(len(names), size=2, replace=False)
        key = (day, names[int(src)], names[int(dst)])
        if key not in seen:
            seen.add(key)
            out.append(key)
    return out


# A short instruction (it replaces a chat template's longer default system prompt).
SYSTEM = "You rewrite dates. Answer with the date only."


def as_row(key: tuple[int, str, str], where: str) -> PromptResponse:
    day, src, dst = key
    date = dt.date.fromordinal(day)
    prompt = f"Rewrite the date {FORMATS[src](date)} in the format {dst}."
    return PromptResponse(prompt, FORMATS[dst](date), where, SYSTEM)


def generated_splits(seed: int = 0) -> dict[str, LMSplit]:
    """Train, dev and test splits of the date task; disjoint, reproducible from `seed`."""
    total = sum(GENERATED_SIZES.values())
    keys = date_rows(total, seed)
    out: dict[str, LMSplit] = {}
    start = 0
    for name, size in GENERATED_SIZES.items():
        chunk = keys[start : start + size]
        start += size
        source = f"{GENERATED_NAME} ({name}, seed {seed})"
        out[name] = LMSplit(tuple(as_row(k, f"{source} row {i + 1}") for i, k in enumerate(chunk)), source)
    return out
