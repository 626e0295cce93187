"""Model state as plain tensors + JSON: torch.ao int8 tensors, torchao subclasses, no pickles."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lowcarb.errors import ModelError
from lowcarb.models.state import decode_state, encode_state, is_subclass_tensor, load_state


def test_quantized_tensors_round_trip_exactly():
    q = torch.quantize_per_channel(torch.randn(4, 3), torch.rand(4) + 0.1, torch.zeros(4, dtype=torch.long), 0, torch.qint8)
    t = torch.quantize_per_tensor(torch.randn(5), 0.05, 3, torch.quint8)
    module = nn.Module()
    module.register_buffer("q", q)
    module.register_buffer("t", t)
    tensors, entries, versions = encode_state(module)
    assert all(not v.is_quantized for v in tensors.values())
    assert entries["q"]["kind"] == "qtensor_per_channel" and entries["t"]["kind"] == "qtensor_per_tensor"
    state = decode_state(entries, versions, tensors)
    assert torch.equal(state["q"].int_repr(), q.int_repr()) and torch.equal(state["t"].int_repr(), t.int_repr())
    assert state["t"].q_scale() == t.q_scale() and state["t"].q_zero_point() == 3


def test_torchao_weights_are_split_and_copied_back():
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    def quantized(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(16, 8))
        quantize_(model, Int8WeightOnlyConfig())
        return model

    source, target = quantized(0), quantized(1)
    assert is_subclass_tensor(source[0].weight) and not is_subclass_tensor(source[0].bias)
    tensors, entries, versions = encode_state(source)
    assert entries["0.weight"]["kind"] == "subclass" and "0.weight::qdata" in tensors
    load_state(target, entries, versions, tensors)
    x = torch.randn(3, 16)
    assert torch.equal(target(x), source(x))
    # a rebuilt model of another structure is refused, naming the entry
    with pytest.raises(ModelError, match="'0.weight' was saved as Int8Tensor"):
        load_state(nn.Sequential(nn.Linear(16, 8)), entries, versions, tensors)


def test_unknown_entries_are_refused():
    with pytest.raises(ModelError, match="not written by lowcarb"):
        decode_state({"x": {"kind": "pickle"}}, {}, {})
