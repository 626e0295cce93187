"""A weight-sharing BERT supernet: every student of a sub-space is a leading slice of its weights.

The supernet has the largest configuration of its sub-space. `set_active(SubnetConfig)` picks a
student: the first `num_layers` blocks, the first `hidden_size` units of every hidden vector (word,
position and type embeddings, LayerNorms, pooler), the first `hidden_size` outputs of Q, K, V
(split into `num_heads` heads of hidden_size / num_heads), and the first `intermediate_size` FFN
neurons. Slicing is done by `SlicedLinear` / `SlicedLayerNorm` at forward time, so one set of
weights trains every student. The forward pass is the Hugging Face BERT forward (post-LayerNorm,
exact GELU, absolute positions), and parameter names are Hugging Face's, so `extract` can copy the
slices into a plain `BertForSequenceClassification` that computes the same outputs.

Initialisation (`Supernet.from_teacher`): the leading slices of the teacher's tensors, supernet
block i from teacher block `uniform_layer_map(L, L_teacher)[i]` (evenly spaced, ending at the top
block: 4 of 6 -> 0, 2, 3, 5). The largest student of the top sub-space is the teacher itself.
"""

from __future__ import annotations

import copy
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lowcarb.compress.distill.losses import uniform_layer_map
from lowcarb.compress.distill.students import truncate_into
from lowcarb.errors import DataError, ModelError
from lowcarb.search.autodistil.space import SubnetConfig, TeacherShape
from lowcarb.train.batches import model_device


class SlicedLinear(nn.Linear):
    """A Linear that reads as many inputs as it is given and writes its first `active_out`
    outputs (weight[:active_out, :in], bias[:active_out])."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features)
        self.active_out = out_features

    def forward(self, x: Tensor) -> Tensor:
        width = x.shape[-1]
        bias = self.bias[: self.active_out] if self.bias is not None else None
        return F.linear(x, self.weight[: self.active_out, :width], bias)


class SlicedLayerNorm(nn.LayerNorm):
    """LayerNorm over the given (leading) units, with the matching slice of its gain and bias."""

    def forward(self, x: Tensor) -> Tensor:
        width = x.shape[-1]
        return F.layer_norm(x, (width,), self.weight[:width], self.bias[:width], self.eps)


class _Embeddings(nn.Module):
    def __init__(self, vocab: int, positions: int, types: int, hidden: int, eps: float, p: float) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.position_embeddings = nn.Embedding(positions, hidden)
        self.token_type_embeddings = nn.Embedding(types, hidden)
        self.LayerNorm = SlicedLayerNorm(hidden, eps=eps)
        self.dropout = nn.Dropout(p)
        self.active_hidden = hidden

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None) -> Tensor:
        h = self.active_hidden
        length = input_ids.shape[1]
        if length > self.position_embeddings.num_embeddings:
            raise DataError(
                f"input of {length} tokens is longer than the {self.position_embeddings.num_embeddings} "
                "positions the teacher knows; truncate the text (data.max_length)"
            )
        positions = torch.arange(length, device=input_ids.device)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = (
            F.embedding(input_ids, self.word_embeddings.weight[:, :h])
            + F.embedding(positions, self.position_embeddings.weight[:, :h])[None]
            + F.embedding(token_type_ids, self.token_type_embeddings.weight[:, :h])
        )
        return self.dropout(self.LayerNorm(x))


class _SelfAttention(nn.Module):
    def __init__(self, hidden: int, p: float) -> None:
        super().__init__()
        self.query = SlicedLinear(hidden, hidden)
        self.key = SlicedLinear(hidden, hidden)
        self.value = SlicedLinear(hidden, hidden)
        self.p = p
        self.num_heads = 1

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        batch, length, _ = x.shape
        q, k, v = self.query(x), self.key(x), self.value(x)
        width = q.shape[-1]
        heads = self.num_heads
        q, k, v = (t.view(batch, length, heads, width // heads).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.p if self.training else 0.0
        )
        return out.transpose(1, 2).reshape(batch, length, width)


class _Output(nn.Module):
    """dense -> dropout -> LayerNorm(x + residual): Hugging Face's BertSelfOutput / BertOutput."""

    def __init__(self, inner: int, hidden: int, eps: float, p: float) -> None:
        super().__init__()
        self.dense = SlicedLinear(inner, hidden)
        self.LayerNorm = SlicedLayerNorm(hidden, eps=eps)
        self.dropout = nn.Dropout(p)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class _Attention(nn.Module):
    def __init__(self, hidden: int, eps: float, p_attn: float, p: float) -> None:
        super().__init__()
        self.self = _SelfAttention(hidden, p_attn)
        self.output = _Output(hidden, hidden, eps, p)


class _Intermediate(nn.Module):
    def __init__(self, hidden: int, ffn: int) -> None:
        super().__init__()
        self.dense = SlicedLinear(hidden, ffn)


class _Block(nn.Module):
    def __init__(self, hidden: int, ffn: int, eps: float, p_attn: float, p: float) -> None:
        super().__init__()
        self.attention = _Attention(hidden, eps, p_attn, p)
        self.intermediate = _Intermediate(hidden, ffn)
        self.output = _Output(ffn, hidden, eps, p)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        attended = self.attention.output(self.attention.self(x, mask), x)
        return self.output(F.gelu(self.intermediate.dense(attended)), attended)


class _Encoder(nn.Module):
    def __init__(self, blocks: list[_Block]) -> None:
        super().__init__()
        self.layer = nn.ModuleList(blocks)


class _Pooler(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.dense = SlicedLinear(hidden, hidden)


class _Bert(nn.Module):
    def __init__(self, embeddings: _Embeddings, encoder: _Encoder, pooler: _Pooler) -> None:
        super().__init__()
        self.embeddings = embeddings
        self.encoder = encoder
        self.pooler = pooler


class Supernet(nn.Module):
    """A BERT sequence classifier whose active student is chosen with `set_active`.

    `model(input_ids, attention_mask, token_type_ids)` returns the active student's logits. The
    module layout (`bert.embeddings`, `bert.encoder.layer[i].attention.self.query`, ...) is Hugging
    Face's, so `lowcarb.compress.distill.capture.trace` records its Q/K/V like a BERT's.
    """

    def __init__(self, largest: SubnetConfig, hf_config: Any) -> None:
        super().__init__()
        if getattr(hf_config, "hidden_act", "gelu") != "gelu":
            raise ModelError(
                f"the supernet implements BERT with exact GELU; the teacher uses "
                f"{hf_config.hidden_act!r}: use a BERT/MiniLM teacher with hidden_act='gelu'"
            )
        if getattr(hf_config, "position_embedding_type", "absolute") != "absolute":
            raise ModelError("the supernet implements absolute position embeddings only")
        self.largest = largest
        self.hf_config = copy.deepcopy(hf_config)
        eps = float(getattr(hf_config, "layer_norm_eps", 1e-12))
        p = float(getattr(hf_config, "hidden_dropout_prob", 0.1))
        p_attn = float(getattr(hf_config, "attention_probs_dropout_prob", 0.1))
        h, f = largest.hidden_size, largest.intermediate_size
        self.bert = _Bert(
            _Embeddings(int(hf_config.vocab_size), int(hf_config.max_position_embeddings),
                        int(getattr(hf_config, "type_vocab_size", 2)), h, eps, p),
            _Encoder([_Block(h, f, eps, p_attn, p) for _ in range(largest.num_layers)]),
            _Pooler(h),
        )
        classifier_p = getattr(hf_config, "classifier_dropout", None)
        self.dropout = nn.Dropout(p if classifier_p is None else float(classifier_p))
        self.num_labels = int(getattr(hf_config, "num_labels", 2))
        self.classifier = nn.Linear(h, self.num_labels)
        self.active = largest
        self.set_active(largest)

    @property
    def base_model(self) -> nn.Module:
        return self.bert

    @classmethod
    def from_teacher(cls, teacher: nn.Module, largest: SubnetConfig) -> Supernet:
        """A supernet of size `largest` holding the leading slices of the teacher's weights."""
        shape = TeacherShape.of(teacher)
        if not largest.within(shape.config) or largest.num_layers > shape.num_layers:
            raise ValueError(
                f"supernet {largest.key} is larger than the teacher {shape.config.key}: every "
                "sub-space must fit under the teacher"
            )
        supernet = cls(largest, teacher.config).to(model_device(teacher))  # where the teacher runs
        truncate_into(supernet, teacher, uniform_layer_map(largest.num_layers, shape.num_layers))
        return supernet

    def set_active(self, config: SubnetConfig) -> None:
        """Make `config` the student that forward passes run; ValueError if it does not fit."""
        if not config.within(self.largest):
            raise ValueError(
                f"student {config.key} does not fit in this supernet ({self.largest.key}); "
                "pick a student of the supernet's sub-space"
            )
        self.active = config
        h, f = config.hidden_size, config.intermediate_size
        self.bert.embeddings.active_hidden = h
        blocks: Any = self.bert.encoder.layer  # BERT blocks (nn.Module attribute access is untyped)
        for block in blocks:
            attention = block.attention.self
            attention.num_heads = config.num_heads
            for linear in (attention.query, attention.key, attention.value,
                           block.attention.output.dense, block.output.dense):
                linear.active_out = h
            block.intermediate.dense.active_out = f
        self.bert.pooler.dense.active_out = h

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        **_: Any,
    ) -> Tensor:
        x = self.bert.embeddings(input_ids, token_type_ids)
        # Padded keys are masked out (True = attend), as Hugging Face's SDPA path does.
        mask = attention_mask.bool()[:, None, None, :] if attention_mask is not None else None
        for block in self.bert.encoder.layer[: self.active.num_layers]:
            x = block(x, mask)
        pooled = torch.tanh(self.bert.pooler.dense(x[:, 0]))
        h = self.active.hidden_size
        return F.linear(self.dropout(pooled), self.classifier.weight[:, :h], self.classifier.bias)


def extract(supernet: Supernet, config: SubnetConfig | None = None) -> nn.Module:
    """A standalone Hugging Face `BertForSequenceClassification` with the student's weights
    sliced out of the supernet (a copy: the supernet is not changed). It computes what the
    supernet computes with that student active, and saves with `save_pretrained`."""
    from transformers import BertForSequenceClassification

    config = config or supernet.active
    if not config.within(supernet.largest):
        raise ValueError(f"student {config.key} does not fit in the supernet ({supernet.largest.key})")
    hf_config = copy.deepcopy(supernet.hf_config)
    hf_config.num_hidden_layers = config.num_layers
    hf_config.hidden_size = config.hidden_size
    hf_config.num_attention_heads = config.num_heads
    hf_config.intermediate_size = config.intermediate_size
    hf_config.architectures = ["BertForSequenceClassification"]
    if hasattr(hf_config, "_attn_implementation"):
        hf_config._attn_implementation = "sdpa"
    student = BertForSequenceClassification(hf_config)
    # transformers types its .to() wrapper for PreTrainedModel only; it is nn.Module.to.
    cast(nn.Module, student).to(model_device(supernet))
    truncate_into(student, supernet, tuple(range(config.num_layers)))
    student.train(supernet.training)
    return student
