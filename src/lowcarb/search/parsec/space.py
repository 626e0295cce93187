"""Declarative architecture spaces: named categorical decisions mapped to a concrete PyTorch model.

    space = cnn_space(CnnSpaceConfig(channels=16, nodes=3))
    arch = space.uniform_sample(generator)        # {"cell.node0.in0": 0, "cell.node0.op0": "conv3x3", ...}
    built = space.build(arch)                     # Built(model, parts)

`built.parts` maps a weight-store key to the module built for it. A key names the decision, the
choice taken and the position (cell or layer) the module sits at, so the PARSEC weight store can
share one set of weights per (decision, choice, position) between every architecture that makes
that choice there, while only the sampled architecture's modules exist at any one time.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import torch
from torch import nn

from lowcarb.errors import ConfigError
from lowcarb.search.parsec.shared_init import part

Choice = str | int
Architecture = dict[str, Choice]


@dataclass(frozen=True)
class Decision:
    """One categorical choice: a name and the values it can take (strings or integers)."""

    name: str
    choices: tuple[Choice, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"a decision needs a non-empty string name, got {self.name!r}")
        if not isinstance(self.choices, tuple) or len(self.choices) < 1:
            raise ConfigError(
                f"decision {self.name!r} needs a non-empty tuple of choices, got {self.choices!r}"
            )
        for c in self.choices:
            if isinstance(c, bool) or not isinstance(c, (str, int)):
                raise ConfigError(
                    f"decision {self.name!r}: choices must be strings or integers, got {c!r} "
                    f"({type(c).__name__})"
                )
        if len(set(self.choices)) != len(self.choices):
            raise ConfigError(f"decision {self.name!r} lists a choice twice: {self.choices!r}")

    def index(self, choice: Choice) -> int:
        try:
            return self.choices.index(choice)
        except ValueError:
            raise ConfigError(
                f"{choice!r} is not a choice of decision {self.name!r}; choose one of {list(self.choices)}"
            ) from None


@dataclass
class Built:
    """A concrete model and the modules that make it up, keyed for the weight store."""

    model: nn.Module
    parts: dict[str, nn.Module]


@dataclass(frozen=True)
class Space:
    """A sequence of decisions and a builder that turns one choice per decision into a model.

    `build_fn(arch) -> Built` must create only the modules the architecture uses.
    `input_kind` is the data the models read ("image" or "text").
    """

    name: str
    decisions: tuple[Decision, ...]
    build_fn: Callable[[Architecture], Built] = field(repr=False)
    input_kind: str = "image"
    settings: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.decisions:
            raise ConfigError(f"space {self.name!r} has no decisions; give at least one Decision")
        for d in self.decisions:
            if not isinstance(d, Decision):
                raise ConfigError(
                    f"space {self.name!r}: decisions must be Decision(name, choices), got {d!r}"
                )
        names = [d.name for d in self.decisions]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"space {self.name!r} names a decision twice: {dupes}")
        if self.input_kind not in ("image", "text"):
            raise ConfigError(
                f"space {self.name!r}: input_kind must be 'image' or 'text', got {self.input_kind!r}"
            )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.decisions)

    def decision(self, name: str) -> Decision:
        for d in self.decisions:
            if d.name == name:
                return d
        raise ConfigError(f"space {self.name!r} has no decision {name!r}; it has {list(self.names)}")

    def validate(self, arch: Mapping[str, Choice]) -> Architecture:
        """The architecture as a plain dict in decision order; errors name what is missing or wrong."""
        missing = [n for n in self.names if n not in arch]
        extra = sorted(set(arch) - set(self.names))
        if missing or extra:
            raise ConfigError(
                f"architecture does not match space {self.name!r}: missing {missing}, unknown {extra}"
            )
        out: Architecture = {}
        for d in self.decisions:
            d.index(arch[d.name])  # raises with the allowed choices
            out[d.name] = arch[d.name]
        return out

    def build(self, arch: Mapping[str, Choice]) -> Built:
        return self.build_fn(self.validate(arch))

    def on(self, device: torch.device | str) -> Space:
        """The same space, its models built on `device` (the run's: the searches and the
        retraining then run there, reading the device from each model)."""
        build = self.build_fn

        def build_on(arch: Architecture) -> Built:
            built = build(arch)
            built.model.to(device)  # the parts are its submodules: they move with it
            return built

        return replace(self, build_fn=build_on)

    def uniform_sample(self, generator: torch.Generator) -> Architecture:
        idx = [
            int(torch.randint(len(d.choices), (1,), generator=generator)) for d in self.decisions
        ]
        return {d.name: d.choices[i] for d, i in zip(self.decisions, idx, strict=True)}

    def size(self) -> int:
        n = 1
        for d in self.decisions:
            n *= len(d.choices)
        return n


def arch_key(arch: Mapping[str, Choice]) -> str:
    """A stable one-line name for an architecture (used to deduplicate and in reports)."""
    return ",".join(f"{k}={v}" for k, v in arch.items())


# ---------------------------------------------------------------------------------------------
# The cell CNN space (DARTS/ENAS-style micro cell, small enough for 8x8 digits on a CPU)
# ---------------------------------------------------------------------------------------------

CNN_OPS: tuple[str, ...] = (
    "conv3x3",
    "conv5x5",
    "sepconv3x3",
    "maxpool3x3",
    "avgpool3x3",
    "identity",
    "zero",
)


class Zero(nn.Module):
    """The 'no edge' operation: zeros of the input's shape (no parameters, no gradient path)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def cnn_op(name: str, channels: int) -> nn.Module:
    """One edge operation; channels in == channels out and the spatial size is kept."""
    c = channels
    if name in ("conv3x3", "conv5x5"):
        k = 3 if name == "conv3x3" else 5
        # ReLU-conv-BN (DARTS order): the cell sums edges, so each edge ends normalised.
        return nn.Sequential(
            nn.ReLU(), nn.Conv2d(c, c, k, padding=k // 2, bias=False), nn.BatchNorm2d(c)
        )
    if name == "sepconv3x3":
        return nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False),  # depthwise
            nn.Conv2d(c, c, 1, bias=False),  # pointwise
            nn.BatchNorm2d(c),
        )
    if name == "maxpool3x3":
        return nn.MaxPool2d(3, stride=1, padding=1)
    if name == "avgpool3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    if name == "identity":
        return nn.Identity()
    if name == "zero":
        return Zero()
    raise ConfigError(f"unknown CNN operation {name!r}; choose one of {list(CNN_OPS)}")


@dataclass(frozen=True)
class CnnSpaceConfig:
    """A cell of `nodes` intermediate nodes, each summing two edges (input, operation) chosen
    from the earlier states; the same cell (different weights) is stacked `cells` times with a
    2x2 max-pool between cells; a conv stem before and global-average-pool + linear after."""

    input_shape: tuple[int, int, int] = (1, 8, 8)
    num_labels: int = 10
    channels: int = 16
    nodes: int = 3
    cells: int = 2
    ops: tuple[str, ...] = CNN_OPS

    def __post_init__(self) -> None:
        if self.channels < 1 or self.nodes < 1 or self.cells < 1 or self.num_labels < 2:
            raise ConfigError(
                f"CnnSpaceConfig needs channels, nodes, cells >= 1 and num_labels >= 2, got {self}"
            )
        unknown = [o for o in self.ops if o not in CNN_OPS]
        if unknown or not self.ops:
            raise ConfigError(f"CnnSpaceConfig.ops: unknown {unknown}; choose from {list(CNN_OPS)}")


class CellNet(nn.Module):
    """stem -> [cell -> pool] x cells -> global average pool -> linear."""

    def __init__(
        self,
        stem: nn.Module,
        cells: list[dict[str, nn.Module]],
        wiring: list[tuple[int, str, int, str]],
        head: nn.Module,
        pool_between: bool,
    ) -> None:
        super().__init__()
        self.stem = stem
        # ModuleDict keys may not contain '.', so edges are named node{i}_{j}.
        self.cells = nn.ModuleList(nn.ModuleDict(c) for c in cells)
        self.wiring = (
            wiring  # per node: (input state of edge 0, edge 0 name, input of edge 1, edge 1 name)
        )
        self.head = head
        self.pool = nn.MaxPool2d(2) if pool_between else nn.Identity()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.stem(pixel_values)  # (B, C, H, W)
        for i, module in enumerate(self.cells):
            cell = cast(nn.ModuleDict, module)  # built from ModuleDicts above
            states = [x]
            for in0, e0, in1, e1 in self.wiring:
                states.append(cell[e0](states[in0]) + cell[e1](states[in1]))
            x = sum(states[1:]) / len(self.wiring)  # mean of the intermediate nodes
            if i < len(self.cells) - 1:
                x = self.pool(x)
        return self.head(x)  # (B, num_labels)


def _cnn_decisions(cfg: CnnSpaceConfig) -> tuple[Decision, ...]:
    out: list[Decision] = []
    for i in range(cfg.nodes):
        # Node i may read the cell input (state 0) or any earlier node (states 1..i).
        inputs = tuple(range(i + 1))
        for j in (0, 1):
            out.append(Decision(f"node{i}.in{j}", inputs))
            out.append(Decision(f"node{i}.op{j}", tuple(cfg.ops)))
    return tuple(out)


def cnn_space(cfg: CnnSpaceConfig | None = None) -> Space:
    """The cell CNN space (conv3x3, conv5x5, separable conv, max/avg pool, identity, zero)."""
    cfg = cfg or CnnSpaceConfig()
    c_in, h, w = cfg.input_shape
    # Keep the pools between cells from shrinking the image below 1x1.
    pool_between = min(h, w) >= 2 ** (cfg.cells - 1) * 2

    def build(arch: Architecture) -> Built:
        parts: dict[str, nn.Module] = {}
        stem = part("stem", lambda: nn.Sequential(
            nn.Conv2d(c_in, cfg.channels, 3, padding=1, bias=False), nn.BatchNorm2d(cfg.channels)
        ))  # fmt: skip
        parts["stem"] = stem
        cells: list[dict[str, nn.Module]] = []
        wiring: list[tuple[int, str, int, str]] = []
        for p in range(cfg.cells):
            cell: dict[str, nn.Module] = {}
            for i in range(cfg.nodes):
                for j in (0, 1):
                    op = str(arch[f"node{i}.op{j}"])
                    # Key: decision, choice, position. The edge's input choice does not change
                    # the op's weights (every state has the same shape), so it is not in the key.
                    key = f"cell{p}/node{i}.op{j}={op}"
                    module = part(key, functools.partial(cnn_op, op, cfg.channels))
                    cell[f"node{i}_{j}"] = module
                    parts[key] = module
            cells.append(cell)
        for i in range(cfg.nodes):
            wiring.append(
                (int(arch[f"node{i}.in0"]), f"node{i}_0", int(arch[f"node{i}.in1"]), f"node{i}_1")
            )
        head = part("head", lambda: nn.Sequential(
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(cfg.channels, cfg.num_labels),
        ))  # fmt: skip
        parts["head"] = head
        return Built(CellNet(stem, cells, wiring, head, pool_between), parts)

    return Space("cnn", _cnn_decisions(cfg), build, input_kind="image", settings=_settings(cfg))


# ---------------------------------------------------------------------------------------------
# The small text space (byte tokens; width, depth, mixer per layer, pooling)
# ---------------------------------------------------------------------------------------------

TEXT_MIXERS: tuple[str, ...] = ("conv3", "conv5", "attention2", "attention4")
TEXT_POOLINGS: tuple[str, ...] = ("mean", "max", "first")


@dataclass(frozen=True)
class TextSpaceConfig:
    """Token embedding of width `widths`, up to max(layers) residual blocks, each a mixer
    (1-D convolution of kernel 3 or 5, or self-attention with 2 or 4 heads) and a feed-forward,
    then pooling and a linear classifier. Vocabulary: lowcarb's byte tokenizer by default."""

    vocab_size: int = 258
    num_labels: int = 2
    widths: tuple[int, ...] = (32, 64)
    layers: tuple[int, ...] = (1, 2)
    mixers: tuple[str, ...] = TEXT_MIXERS
    poolings: tuple[str, ...] = TEXT_POOLINGS
    max_length: int = 128

    def __post_init__(self) -> None:
        if self.vocab_size < 2 or self.num_labels < 2 or self.max_length < 1:
            raise ConfigError(
                f"TextSpaceConfig needs vocab_size >= 2, num_labels >= 2, max_length >= 1, got {self}"
            )
        if not self.widths or any(w < 4 or w % 4 for w in self.widths):
            raise ConfigError(
                f"TextSpaceConfig.widths must be multiples of 4 (attention heads), got {self.widths}"
            )
        if not self.layers or any(n < 1 for n in self.layers):
            raise ConfigError(f"TextSpaceConfig.layers must be >= 1, got {self.layers}")
        bad = [m for m in self.mixers if m not in TEXT_MIXERS] + [
            p for p in self.poolings if p not in TEXT_POOLINGS
        ]
        if bad or not self.mixers or not self.poolings:
            raise ConfigError(
                f"TextSpaceConfig: unknown mixers/poolings {bad}; choose from {list(TEXT_MIXERS)} / {list(TEXT_POOLINGS)}"
            )


class TextBlock(nn.Module):
    """Pre-norm residual block: x + mixer(LN(x)), then x + FFN(LN(x)); padding is masked."""

    def __init__(self, mixer: str, width: int) -> None:
        super().__init__()
        self.kind = mixer
        self.norm1 = nn.LayerNorm(width)
        if mixer.startswith("conv"):
            k = int(mixer[4:])
            self.mixer: nn.Module = nn.Conv1d(width, width, k, padding=k // 2)
        else:
            self.mixer = nn.MultiheadAttention(
                width, int(mixer[len("attention") :]), batch_first=True
            )
        self.norm2 = nn.LayerNorm(width)
        self.ffn = nn.Sequential(
            nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x) * mask.unsqueeze(-1)  # (B, T, D), padding zeroed
        if self.kind.startswith("conv"):
            h = self.mixer(h.transpose(1, 2)).transpose(1, 2)
        else:
            h, _ = self.mixer(h, h, h, key_padding_mask=~mask, need_weights=False)
        x = x + h
        return x + self.ffn(self.norm2(x))


class TextNet(nn.Module):
    def __init__(
        self,
        embed: nn.Embedding,
        position: nn.Embedding,
        blocks: list[nn.Module],
        pooling: str,
        head: nn.Module,
    ) -> None:
        super().__init__()
        self.embed, self.position = embed, position
        self.blocks = nn.ModuleList(blocks)
        self.pooling = pooling
        self.head = head

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any
    ) -> torch.Tensor:
        mask = (
            torch.ones_like(input_ids, dtype=torch.bool)
            if attention_mask is None
            else attention_mask.bool()
        )
        t = input_ids.shape[1]
        x = self.embed(input_ids) + self.position(
            torch.arange(t, device=input_ids.device)
        )  # (B, T, D)
        for block in self.blocks:
            x = block(x, mask)
        m = mask.unsqueeze(-1).to(x.dtype)
        if self.pooling == "mean":
            pooled = (x * m).sum(1) / m.sum(1).clamp_min(1.0)
        elif self.pooling == "max":
            pooled = x.masked_fill(m == 0, float("-inf")).amax(1)
        else:  # "first": the tokenizer's leading [CLS]-like token
            pooled = x[:, 0]
        return self.head(pooled)  # (B, num_labels)


def text_space(cfg: TextSpaceConfig | None = None) -> Space:
    """The small text space: embedding width, layers, per-layer mixer (conv kernel 3/5 or 2/4
    attention heads) and pooling. Layers beyond the chosen depth are not built."""
    cfg = cfg or TextSpaceConfig()
    decisions = [Decision("width", tuple(cfg.widths)), Decision("layers", tuple(cfg.layers))]
    decisions += [Decision(f"layer{i}.mixer", tuple(cfg.mixers)) for i in range(max(cfg.layers))]
    decisions.append(Decision("pooling", tuple(cfg.poolings)))

    def build(arch: Architecture) -> Built:
        width = int(arch["width"])
        parts: dict[str, nn.Module] = {}
        # Every module's shape depends on the width, so the width choice is part of every key.
        embed = part(f"width={width}/embed", lambda: nn.Embedding(cfg.vocab_size, width, padding_idx=0))
        position = part(f"width={width}/position", lambda: nn.Embedding(cfg.max_length, width))
        parts[f"width={width}/embed"] = embed
        parts[f"width={width}/position"] = position
        blocks: list[nn.Module] = []
        for i in range(int(arch["layers"])):
            mixer = str(arch[f"layer{i}.mixer"])
            key = f"width={width}/layer{i}.mixer={mixer}"
            block = part(key, functools.partial(TextBlock, mixer, width))
            parts[key] = block
            blocks.append(block)
        pooling = str(arch["pooling"])
        key = f"width={width}/head/pooling={pooling}"
        head = part(key, lambda: nn.Linear(width, cfg.num_labels))
        parts[key] = head
        return Built(TextNet(embed, position, blocks, pooling, head), parts)

    return Space("text", tuple(decisions), build, input_kind="text", settings=_settings(cfg))


def _settings(cfg: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}


SPACES: dict[str, Callable[..., Space]] = {"cnn": cnn_space, "text": text_space}


def make_space(
    decisions: Sequence[tuple[str, Sequence[Choice]]] | Mapping[str, Sequence[Choice]],
    build_fn: Callable[[Architecture], Built],
    name: str = "custom",
    input_kind: str = "image",
) -> Space:
    """A user space from `[(name, choices), ...]` (or a dict) and a builder."""
    items = list(decisions.items()) if isinstance(decisions, Mapping) else list(decisions)
    parsed: list[Decision] = []
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 2):
            raise ConfigError(f"a space decision is (name, choices), got {item!r}")
        dname, choices = item
        if isinstance(choices, (str, bytes)) or not isinstance(choices, Sequence):
            raise ConfigError(
                f"decision {dname!r}: choices must be a list or tuple, got {choices!r}"
            )
        parsed.append(Decision(dname, tuple(choices)))
    return Space(name, tuple(parsed), build_fn, input_kind=input_kind)
