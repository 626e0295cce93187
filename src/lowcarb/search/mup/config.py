"""The typed configuration of a width-parametrized reference model."""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from lowcarb.errors import ConfigError

ModelKind = Literal["mlp", "lm", "encoder"]
Parametrization = Literal["mup", "sp"]
DepthScaling = Literal["none", "completep"]

MODEL_KINDS: tuple[str, ...] = ("mlp", "lm", "encoder")


@dataclass(frozen=True)
class MupModelConfig:
    """A reference model at one width, with the width it is compared against (the base).

    Heads: by default the number of heads is fixed (`n_heads`) and the head size grows with width,
    so muP scales attention logits by 1/d_head (as sqrt(base_d_head)/d_head, which equals
    1/sqrt(d_head) at the base width). Give `d_head` instead to fix the head size and let the
    number of heads grow; the attention scale then stays 1/sqrt(d_head).

    `depth_scaling="completep"` multiplies every residual branch by base_depth/depth (CompleteP,
    Dey et al. 2025, alpha = 1), so that hyperparameters also transfer across depth.
    """

    kind: ModelKind = "lm"
    width: int = 64
    base_width: int = 32
    parametrization: Parametrization = "mup"
    depth: int = 2
    base_depth: int | None = None
    depth_scaling: DepthScaling = "none"
    n_heads: int | None = 4
    d_head: int | None = None
    mlp_ratio: int = 4
    init_std: float = 1.0
    output_mult: float = 1.0
    readout_zero_init: bool = True
    query_zero_init: bool = True
    vocab_size: int = 96
    max_len: int = 64
    num_labels: int = 2
    d_in: int = 16

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ConfigError(f"unknown model kind {self.kind!r}; use one of {MODEL_KINDS}")
        if self.parametrization not in ("mup", "sp"):
            raise ConfigError(f"parametrization must be 'mup' or 'sp', not {self.parametrization!r}")
        if self.depth_scaling not in ("none", "completep"):
            raise ConfigError(
                f"depth_scaling must be 'none' or 'completep', not {self.depth_scaling!r}"
            )
        if self.base_width < 1 or self.depth < 1:
            raise ConfigError("base_width and depth must be positive")
        if self.width < self.base_width:
            raise ConfigError(
                f"width {self.width} is smaller than the base width {self.base_width}; muP scales "
                "up from the base, so pick a base width no larger than the smallest model"
            )
        if self.base_depth is not None and self.base_depth < 1:
            raise ConfigError("base_depth must be positive")
        if self.init_std <= 0 or self.output_mult <= 0:
            raise ConfigError("init_std and output_mult must be positive")
        if self.kind == "mlp" and self.depth_scaling != "none":
            raise ConfigError(
                "depth_scaling='completep' scales residual branches; the MLP has none "
                "(use kind='lm' or 'encoder')"
            )
        if self.kind != "mlp":
            if (self.n_heads is None) == (self.d_head is None):
                raise ConfigError(
                    "give exactly one of n_heads (head size grows) or d_head (heads grow)"
                )
            name, per = ("n_heads", self.n_heads) if self.n_heads else ("d_head", self.d_head or 0)
            if per < 1:
                raise ConfigError(f"{name} must be positive")
            for w in (self.width, self.base_width):
                if w % per:
                    raise ConfigError(
                        f"width {w} is not divisible by {name}={per}; "
                        "pick widths that are multiples of it"
                    )

    @property
    def width_mult(self) -> float:
        return self.width / self.base_width

    @property
    def depth_mult(self) -> float:
        return self.depth / (self.base_depth or self.depth)

    def heads(self, width: int | None = None) -> tuple[int, int]:
        """(number of heads, head size) at `width` (default: this config's width)."""
        w = self.width if width is None else width
        if self.n_heads is not None:
            return self.n_heads, w // self.n_heads
        assert self.d_head is not None
        return w // self.d_head, self.d_head

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> MupModelConfig:
        reject_unknown(cls, raw, "model")
        return cls(**raw)


def reject_unknown(cls: type, raw: dict[str, Any], what: str) -> None:
    """A ConfigError naming the keys of `raw` that are not fields of the dataclass `cls`."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"unknown {what} setting(s) {unknown}{did_you_mean(unknown, known)}; "
            f"known: {sorted(known)}"
        )


def did_you_mean(unknown: list[str], known: set[str]) -> str:
    """` (did you mean 'x'?)` for the closest known name to the unknown keys ('' when none is
    close): the same hint the recipe's top-level keys get."""
    for key in unknown:
        close = difflib.get_close_matches(str(key), sorted(known), n=1)
        if close:
            return f" (did you mean {close[0]!r} for {str(key)!r}?)"
    return ""
