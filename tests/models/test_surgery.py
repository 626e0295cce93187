"""Model surgery: batch fields, module replacement, selection errors, the one parameter count."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lowcarb.errors import ConfigError
from lowcarb.models.surgery import (
    WithoutLabels,
    batch_from_spec,
    batch_spec,
    call_args,
    count_parameters,
    keep_ordinary_path,
    read_directly,
    select_modules,
    set_module,
    without_labels,
)


def test_batches_as_call_arguments():
    x = torch.zeros(2, 3)
    assert call_args({"input_ids": x, "labels": x}) == ((), {"input_ids": x})
    assert call_args((x, torch.ones(2)))[0][0] is x
    assert call_args(x) == ((x,), {})
    assert without_labels({"a": 1, "labels": 2}) == {"a": 1}
    assert list(WithoutLabels([{"a": 1, "labels": 2}])) == [{"a": 1}] and len(WithoutLabels([1])) == 1


def test_batch_spec_round_trip_keeps_shapes_and_dtypes():
    batch = {"input_ids": torch.ones(2, 5, dtype=torch.long), "labels": torch.zeros(2)}
    spec = batch_spec(batch)
    assert spec == {"input_ids": {"shape": [2, 5], "dtype": "int64"}}
    again = batch_from_spec(spec)
    assert again["input_ids"].shape == (2, 5) and again["input_ids"].dtype == torch.long
    image = batch_from_spec(batch_spec(torch.ones(3, 1, 8, 8)))  # a positional tensor
    assert image.shape == (3, 1, 8, 8)


def test_set_module_and_selection_errors_list_the_candidates():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Sequential(nn.Linear(2, 2)))
    set_module(model, "2.0", nn.Identity())
    assert isinstance(model[2][0], nn.Identity)
    candidates = {"0": model[0], "1": model[1]}
    assert select_modules(candidates, ("*",), ("1",), "Linear") == ["0"]
    with pytest.raises(ConfigError, match="matches no Linear module; Linear modules are: 0, 1"):
        select_modules(candidates, ("x*",), (), "Linear")
    with pytest.raises(ConfigError, match="leave no Linear; candidates are: 0, 1"):
        select_modules(candidates, ("*",), ("*",), "Linear", listed_as="candidates are")
    with pytest.raises(ConfigError, match="has no Linear modules"):
        select_modules({}, ("*",), (), "Linear")


def test_one_parameter_count_tied_weights_once_int8_buffers_included():
    emb = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = emb.weight  # tied
    model = nn.ModuleDict({"emb": emb, "head": head})
    assert count_parameters(model) == 40
    model.head.register_buffer("weight_int8", torch.zeros(5, dtype=torch.int8))
    assert count_parameters(model) == 45
    emb.weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 0


def test_replaced_encoder_linears_turn_the_fused_path_off():
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True).eval()
    encoder = nn.Sequential(layer)
    keep_ordinary_path(encoder)
    assert layer.activation_relu_or_gelu  # untouched: plain Linears may take the fused kernel
    set_module(encoder, "0.linear1", nn.Sequential(nn.Linear(8, 16)))
    assert layer.activation_relu_or_gelu == 0
    with torch.inference_mode():
        assert encoder(torch.randn(2, 3, 8)).shape == (2, 3, 8)
    assert read_directly(encoder) == {"0.self_attn.out_proj"}


def test_count_parameters_counts_a_module_marked_counted_elsewhere_once():
    # a tied head quantized apart keeps its own copy; it is counted with the embedding it was tied to
    embedding, head = nn.Embedding(10, 4), nn.Linear(4, 10, bias=False)
    model = nn.Sequential(embedding, head)
    assert count_parameters(model) == 40 + 40
    head.counted_elsewhere = True
    assert count_parameters(model) == 40
