"""The architecture prior p(alpha | pi): one independent categorical per decision.

pi is held as logits (pi_d = softmax(theta_d)) so that the score-function update stays a plain
gradient step and probabilities never leave the simplex. The update is PARSEC's empirical-Bayes /
Monte-Carlo EM step: for normalised importance weights w_k over K sampled architectures,

    grad_theta_d  sum_k w_k log p(alpha_k | pi) = sum_k w_k onehot(alpha_k,d) - pi_d

(the sum of w_k is 1, so this is the weighted choice frequency minus the current probability).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from lowcarb.errors import ConfigError
from lowcarb.files import path_errors, write_json
from lowcarb.search.parsec.space import Architecture, Choice, Space

PRIOR_FORMAT = "lowcarb.parsec.prior/1"


class Prior:
    """Independent categoricals over a space's decisions (uniform unless `logits` are given)."""

    def __init__(self, space: Space, logits: Mapping[str, torch.Tensor] | None = None) -> None:
        self.space = space
        self.logits: dict[str, torch.Tensor] = {}
        for d in space.decisions:
            given = None if logits is None else logits.get(d.name)
            if given is None:
                self.logits[d.name] = torch.zeros(len(d.choices), dtype=torch.float64)
            else:
                t = torch.as_tensor(given, dtype=torch.float64).clone()
                if t.shape != (len(d.choices),):
                    raise ValueError(
                        f"logits for decision {d.name!r} have shape {tuple(t.shape)}, expected ({len(d.choices)},)"
                    )
                self.logits[d.name] = t

    def probs(self, name: str) -> torch.Tensor:
        return torch.softmax(self.logits[name], dim=0)

    def sample(self, generator: torch.Generator) -> Architecture:
        arch: Architecture = {}
        for d in self.space.decisions:
            i = int(torch.multinomial(self.probs(d.name), 1, generator=generator))
            arch[d.name] = d.choices[i]
        return arch

    def log_prob(self, arch: Mapping[str, Choice]) -> float:
        total = 0.0
        for d in self.space.decisions:
            total += float(torch.log_softmax(self.logits[d.name], dim=0)[d.index(arch[d.name])])
        return total

    def most_probable(self) -> Architecture:
        return {
            d.name: d.choices[int(torch.argmax(self.logits[d.name]))] for d in self.space.decisions
        }

    def entropy_nats(self) -> float:
        total = 0.0
        for d in self.space.decisions:
            p = self.probs(d.name)
            total -= float((p * torch.log(p.clamp_min(1e-300))).sum())
        return total

    def update(
        self, archs: Sequence[Mapping[str, Choice]], weights: Sequence[float], lr: float
    ) -> None:
        """One score-function step: theta_d += lr * (sum_k w_k onehot(alpha_k,d) - pi_d)."""
        if len(archs) != len(weights) or not archs:
            raise ValueError(
                f"update needs one weight per architecture, got {len(archs)} and {len(weights)}"
            )
        w = torch.as_tensor(list(weights), dtype=torch.float64)
        if torch.any(w < 0) or not math.isclose(float(w.sum()), 1.0, rel_tol=1e-6):
            raise ValueError(f"importance weights must be >= 0 and sum to 1, got {w.tolist()}")
        for d in self.space.decisions:
            freq = torch.zeros(len(d.choices), dtype=torch.float64)
            for a, wk in zip(archs, w, strict=True):
                freq[d.index(a[d.name])] += wk
            self.logits[d.name] += lr * (freq - self.probs(d.name))

    # ---- files: the learnt pi warm-starts a larger search -----------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PRIOR_FORMAT,
            "space": self.space.name,
            "decisions": {
                d.name: {
                    "choices": list(d.choices),
                    "logits": self.logits[d.name].tolist(),
                    "probs": self.probs(d.name).tolist(),
                }
                for d in self.space.decisions
            },
        }

    def save(self, path: str | Path) -> Path:
        """Write pi as JSON (atomically: a warm start never reads half a file)."""
        path = Path(path)
        with path_errors(path.parent):
            path.parent.mkdir(parents=True, exist_ok=True)
        return write_json(path, self.to_dict(), indent=1)

    @classmethod
    def load(cls, path: str | Path, space: Space) -> Prior:
        """Read a saved pi for `space`. Decisions the file lacks start uniform (a larger space
        warm-started from a smaller one); a decision whose choices differ is an error."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(
                f"no saved prior at {path}; run a PARSEC search first (it writes prior.json)"
            ) from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not a saved prior (invalid JSON: {exc})") from None
        if not isinstance(raw, dict) or raw.get("format") != PRIOR_FORMAT:
            raise ConfigError(
                f"{path} is not a lowcarb PARSEC prior (expected format {PRIOR_FORMAT!r})"
            )
        if raw.get("space") != space.name:
            raise ConfigError(
                f"{path} holds a prior for space {raw.get('space')!r}, not {space.name!r}"
            )
        logits: dict[str, torch.Tensor] = {}
        for name, entry in raw["decisions"].items():
            if name not in space.names:
                continue  # a decision of the proxy space that the larger space dropped
            d = space.decision(name)
            if list(d.choices) != list(entry["choices"]):
                raise ConfigError(
                    f"{path}: decision {name!r} has choices {entry['choices']} in the file but "
                    f"{list(d.choices)} in the space; warm-start needs the same choices"
                )
            logits[name] = torch.tensor(entry["logits"], dtype=torch.float64)
        return cls(space, logits)
