"""Build a student from a teacher: by selecting layers, or as a smaller configuration.

- `select_layers(teacher, layers=(1, 3, 5))`: a copy of the teacher that keeps only those blocks
  (embeddings, pooler and head are copied too); each kept block computes exactly what the teacher's
  block computes on the same input.
- `build_student(teacher, StudentConfig(...))`: a Hugging Face model of the teacher's class with
  fewer layers, a narrower width, fewer heads or a smaller FFN, initialised fresh or by truncating
  the teacher's tensors (the leading rows/columns of every matrix).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn

from lowcarb.compress.distill.capture import encoder_layers
from lowcarb.compress.distill.losses import uniform_layer_map
from lowcarb.models.surgery import count_parameters
from lowcarb.models.transformer import TextTransformer
from lowcarb.train.batches import model_device


@dataclass(frozen=True)
class StudentSummary:
    """What building a student did: parameters before/after and which teacher blocks it kept."""

    params_before: int
    params_after: int
    teacher_layers: tuple[int, ...]
    init: str
    modules_changed: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _resolve_layers(
    teacher_layers: int, layers: Sequence[int] | None, num_layers: int | None
) -> tuple[int, ...]:
    if layers is None:
        if num_layers is None:
            raise ValueError("give either the teacher `layers` to keep or a `num_layers` count")
        return uniform_layer_map(num_layers, teacher_layers)
    chosen = tuple(int(i) for i in layers)
    if not chosen:
        raise ValueError("`layers` is empty: a student needs at least one layer")
    if num_layers is not None and num_layers != len(chosen):
        raise ValueError(f"num_layers={num_layers} but {len(chosen)} layers were named: {chosen}")
    if len(chosen) > teacher_layers:
        raise ValueError(
            f"cannot select {len(chosen)} layers from a teacher with {teacher_layers}: a student "
            "may not have more layers than its teacher"
        )
    bad = [i for i in chosen if not 0 <= i < teacher_layers]
    if bad:
        raise ValueError(
            f"teacher layers {bad} do not exist: the teacher has layers 0..{teacher_layers - 1}"
        )
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"layers {chosen} name a teacher layer twice; name each layer once")
    return chosen


def spread_layers(count: int, total: int) -> tuple[int, ...]:
    """`count` of `total` blocks (0-based), evenly spaced with the first and the last kept:
    15 of 30 -> (0, 2, 4, 6, 8, 10, 12, 14, 17, 19, 21, 23, 25, 27, 29). A decoder LLM's bottom
    block turns token embeddings into what every later block reads and its top block feeds the
    vocabulary head, so a shallower student keeps both (uniform_layer_map, TinyBERT's map for
    encoders, drops the bottom block)."""
    if not 1 <= count <= total:
        raise ValueError(
            f"cannot keep {count} of {total} blocks: a student has between 1 and {total} blocks"
        )
    if count == 1:
        return (total - 1,)
    return tuple(round(i * (total - 1) / (count - 1)) for i in range(count))


# Per-block lists in Hugging Face configs (Qwen2/3, Mistral, Gemma: sliding or full attention per
# block); they must follow the kept blocks, or save_pretrained's validation refuses the config and
# a kept block would read another block's attention type.
_PER_LAYER_CONFIG = ("layer_types", "mlp_layer_types")


def _set_layer_count(model: nn.Module, owner: nn.Module, chosen: Sequence[int], total: int) -> None:
    count = len(chosen)
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "num_hidden_layers"):
        config.num_hidden_layers = count
    for attr in _PER_LAYER_CONFIG:
        values = getattr(config, attr, None) if config is not None else None
        if isinstance(values, (list, tuple)) and len(values) == total:
            setattr(config, attr, [values[i] for i in chosen])
    # nn.TransformerEncoder keeps its own num_layers next to the block list.
    for holder in (model, owner):
        for attr in ("num_layers", "n_layers", "depth"):
            if isinstance(getattr(holder, attr, None), int):
                setattr(holder, attr, count)


def select_layers(
    teacher: nn.Module, layers: Sequence[int] | None = None, *, num_layers: int | None = None
) -> tuple[nn.Module, StudentSummary]:
    """A student made of the teacher's blocks `layers` (0-based, bottom first), or `num_layers`
    evenly spaced blocks ending at the top one (6 -> 3 keeps 1, 3, 5). The teacher is not changed."""
    teacher_blocks = encoder_layers(teacher)
    chosen = _resolve_layers(len(teacher_blocks), layers, num_layers)
    student = copy.deepcopy(teacher)
    blocks = encoder_layers(student)
    kept = nn.ModuleList([blocks[i] for i in chosen])
    for new_index, block in enumerate(kept):
        # Hugging Face blocks carry their index for KV caches; keep it consistent.
        for module in block.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                setattr(module, "layer_idx", new_index)  # noqa: B010 - a plain int attribute, not a submodule
    owner, name = _parent_of(student, blocks)
    setattr(owner, name, kept)
    _set_layer_count(student, owner, chosen, len(teacher_blocks))
    summary = StudentSummary(
        params_before=count_parameters(teacher),
        params_after=count_parameters(student),
        teacher_layers=chosen,
        init="layer selection",
        modules_changed=(f"{_qualified_name(student, kept)}",),
    )
    return student, summary


def _parent_of(model: nn.Module, target: nn.Module) -> tuple[nn.Module, str]:
    for _, module in model.named_modules():
        for child_name, child in module.named_children():
            if child is target:
                return module, child_name
    raise ValueError("internal: could not find the block list inside the model")


def _qualified_name(model: nn.Module, target: nn.Module) -> str:
    for name, module in model.named_modules():
        if module is target:
            return name
    return "?"


@dataclass(frozen=True)
class StudentConfig:
    """A smaller Hugging Face student. None keeps the teacher's value.

    init: "truncated" copies the leading slices of the teacher's tensors (blocks chosen by
    `layers` or evenly spaced), "fresh" uses the model's own random initialisation.
    """

    num_layers: int | None = None
    hidden_size: int | None = None
    num_heads: int | None = None
    intermediate_size: int | None = None
    init: Literal["truncated", "fresh"] = "truncated"
    layers: tuple[int, ...] | None = None
    seed: int = 0


def build_student(teacher: nn.Module, config: StudentConfig) -> tuple[nn.Module, StudentSummary]:
    """A Hugging Face model of the teacher's class with the sizes in `config`."""
    if config.init not in ("truncated", "fresh"):
        raise ValueError(f"init must be 'truncated' or 'fresh', got {config.init!r}")
    if isinstance(teacher, TextTransformer):
        return _build_text_transformer_student(teacher, config)
    teacher_config = getattr(teacher, "config", None)
    if teacher_config is None or not hasattr(teacher_config, "num_hidden_layers"):
        raise ValueError(
            f"build_student needs a Hugging Face BERT-style teacher (with .config) or a "
            f"lowcarb TextTransformer; for {type(teacher).__name__} use select_layers, or build "
            "the smaller model yourself and distil into it"
        )
    t_layers = int(teacher_config.num_hidden_layers)
    t_width = int(teacher_config.hidden_size)
    t_heads = int(teacher_config.num_attention_heads)
    t_ffn = int(teacher_config.intermediate_size)
    chosen, width, heads, ffn = _student_sizes(config, t_layers, t_width, t_heads, t_ffn)
    student_config = copy.deepcopy(teacher_config)
    student_config.num_hidden_layers = len(chosen)
    student_config.hidden_size = width
    student_config.num_attention_heads = heads
    student_config.intermediate_size = ffn
    torch.manual_seed(config.seed)
    student = type(teacher)(student_config).to(model_device(teacher))  # where the teacher runs
    return _finish(student, teacher, chosen, config)


def _finish(
    student: nn.Module, teacher: nn.Module, chosen: tuple[int, ...], config: StudentConfig
) -> tuple[nn.Module, StudentSummary]:
    """The built student initialised (truncated teacher tensors or fresh) and summarised."""
    if config.init == "truncated":
        truncate_into(student, teacher, chosen)
    student.train(teacher.training)
    summary = StudentSummary(
        params_before=count_parameters(teacher),
        params_after=count_parameters(student),
        teacher_layers=chosen,
        init=config.init,
        modules_changed=("all",),
    )
    return student, summary


def _student_sizes(
    config: StudentConfig, t_layers: int, t_width: int, t_heads: int, t_ffn: int
) -> tuple[tuple[int, ...], int, int, int]:
    """Teacher blocks to keep, width, heads and FFN size of the student, checked."""
    num_layers = config.num_layers
    if num_layers is None:
        num_layers = len(config.layers) if config.layers is not None else t_layers
    chosen = _resolve_layers(t_layers, config.layers, num_layers)
    width = config.hidden_size or t_width
    heads = config.num_heads or t_heads
    ffn = config.intermediate_size or t_ffn
    if width < 1 or heads < 1 or ffn < 1:
        raise ValueError(f"sizes must be positive: hidden {width}, heads {heads}, ffn {ffn}")
    if width % heads:
        raise ValueError(
            f"hidden size {width} is not divisible by {heads} heads: choose heads dividing the "
            f"width (for {width}: {[h for h in range(1, min(width, 64) + 1) if width % h == 0]})"
        )
    if config.init == "truncated" and (width > t_width or ffn > t_ffn):
        raise ValueError(
            f"truncated init needs a student no larger than the teacher (hidden {width} vs "
            f"{t_width}, ffn {ffn} vs {t_ffn}); use init='fresh' for a wider student"
        )
    return chosen, width, heads, ffn


def _build_text_transformer_student(
    teacher: TextTransformer, config: StudentConfig
) -> tuple[nn.Module, StudentSummary]:
    block = teacher.encoder.layers[0]
    t_width = teacher.embed.embedding_dim
    chosen, width, heads, ffn = _student_sizes(
        config, len(teacher.encoder.layers), t_width, block.self_attn.num_heads, block.linear1.out_features
    )
    torch.manual_seed(config.seed)
    student = TextTransformer(
        vocab_size=teacher.embed.num_embeddings,
        num_labels=teacher.classifier.out_features,
        d_model=width,
        num_layers=len(chosen),
        num_heads=heads,
        ffn_dim=ffn,
        max_length=teacher.max_length,
        dropout=block.dropout.p,
        pad_token_id=teacher.embed.padding_idx if teacher.embed.padding_idx is not None else 0,
    ).to(model_device(teacher))  # the student trains where the teacher runs
    return _finish(student, teacher, chosen, config)


# Block indices in parameter names: Hugging Face "encoder.layer.3.", torch "encoder.layers.3.".
_LAYER_INDEX = re.compile(r"(encoder\.layers?\.)(\d+)(\.)")


def _leading_slice(tensor: torch.Tensor, shape: torch.Size, name: str) -> torch.Tensor:
    if name.endswith("in_proj_weight") or name.endswith("in_proj_bias"):
        # nn.MultiheadAttention stacks Q, K and V along dim 0: truncate each third on its own.
        parts = tensor.chunk(3, dim=0)
        third = torch.Size([shape[0] // 3, *shape[1:]])
        return torch.cat([p[tuple(slice(0, n) for n in third)] for p in parts], dim=0)
    return tensor[tuple(slice(0, n) for n in shape)]


def truncate_into(student: nn.Module, teacher: nn.Module, chosen: tuple[int, ...]) -> None:
    """Copy the leading slice of every teacher tensor into the student tensor of the same name,
    student block i reading teacher block chosen[i]."""
    source = teacher.state_dict()
    with torch.no_grad():
        for name, target in student.state_dict().items():
            teacher_name = _LAYER_INDEX.sub(
                lambda m: f"{m.group(1)}{chosen[int(m.group(2))]}{m.group(3)}", name
            )
            if teacher_name not in source:
                continue  # e.g. buffers the teacher lacks: keep the fresh value
            tensor = source[teacher_name]
            if tensor.dim() != target.dim() or any(
                s > t for s, t in zip(target.shape, tensor.shape, strict=True)
            ):
                raise ValueError(
                    f"cannot truncate teacher {teacher_name} {tuple(tensor.shape)} into student "
                    f"{name} {tuple(target.shape)}; use init='fresh'"
                )
            target.copy_(_leading_slice(tensor, target.shape, name))
