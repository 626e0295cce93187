"""Operations initialised once and shared by the candidates of a training-free search.

A space's builder asks `part(key, factory)` for each module it needs, keyed as the PARSEC weight
store keys them (decision, choice, position). Outside `shared_init(...)` that is `factory()`: a
fresh module, as PARSEC and retraining need. Inside it, every key's module is made once, under a
seed derived from the search seed and the key alone, and every candidate that makes that choice
there gets the same module: a candidate is then assembled, not built and initialised anew, and
its training-free score stays a function of the candidate, not of the order candidates came in.
"""

from __future__ import annotations

import contextlib
import contextvars
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar, cast

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


@dataclass
class SharedInit:
    """Modules initialised once per weight-store key, shared by every architecture built inside
    `shared_init(...)`. A training-free search scores many candidates at initialisation: building
    and initialising every candidate's modules anew was a third of the cost of scoring one. Each
    key's module is initialised under a seed derived from `seed` and the key alone, so a
    candidate's score stays a function of the candidate (not of the order candidates came in)."""

    seed: int = 0
    modules: dict[str, nn.Module] = field(default_factory=dict)


_SHARED_INIT: contextvars.ContextVar[SharedInit | None] = contextvars.ContextVar(
    "lowcarb_parsec_shared_init", default=None
)


@contextlib.contextmanager
def shared_init(shared: SharedInit) -> Iterator[SharedInit]:
    """Inside the block, `part(key, factory)` returns `shared`'s module for the key."""
    token = _SHARED_INIT.set(shared)
    try:
        yield shared
    finally:
        _SHARED_INIT.reset(token)


def part(key: str, factory: Callable[[], M]) -> M:
    """The module for weight-store key `key`, as a space's builder makes it: `factory()` (fresh,
    the default), or inside `shared_init` the key's shared module, made once under its own seed."""
    shared = _SHARED_INIT.get()
    if shared is None:
        return factory()
    if key not in shared.modules:
        # Only the CPU generator is forked, so only it is seeded: torch.manual_seed would also
        # reseed (and not restore) every accelerator's generator, and on a machine without one
        # it queues a lazy CUDA call with a captured stack: the largest overhead in a profile of
        # scoring candidates.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(shared.seed * 1_000_003 + zlib.crc32(key.encode()))
            shared.modules[key] = factory()
    return cast(M, shared.modules[key])  # made by this key's factory
