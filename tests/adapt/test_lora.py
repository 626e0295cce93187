"""LoRA invariants over a table of tiny models (PEFT-style): init == base, merge == unmerged, ..."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from lowcarb.adapt import lora
from lowcarb.adapt.lora import LoraConfig, LoraLayer


class TinyMixed(nn.Module):
    """Embedding -> Conv1d -> Linear, and an image path Conv2d -> Linear: every supported type."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.conv1 = nn.Conv1d(8, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 5, 3, stride=2, padding=1)
        self.fc = nn.Linear(6 + 5, 7)
        self.classifier = nn.Linear(7, 3)

    def forward(self, ids: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.emb(ids).transpose(1, 2)).mean(-1)  # (B, 6)
        g = self.conv2(image).mean((2, 3))  # (B, 5)
        return self.classifier(torch.relu(self.fc(torch.cat([h, g], -1))))


def tiny_bert() -> nn.Module:
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=24, max_position_embeddings=16, num_labels=2)
    return BertForSequenceClassification(cfg).eval()


def tiny_mixed() -> nn.Module:
    torch.manual_seed(0)
    return TinyMixed().eval()


def bert_inputs() -> dict:
    g = torch.Generator().manual_seed(1)
    return {"input_ids": torch.randint(0, 40, (3, 7), generator=g),
            "attention_mask": torch.ones(3, 7, dtype=torch.long)}


def mixed_inputs() -> dict:
    g = torch.Generator().manual_seed(1)
    return {"ids": torch.randint(0, 20, (3, 9), generator=g),
            "image": torch.randn(3, 3, 8, 8, generator=g)}


def out(model: nn.Module, inputs: dict) -> torch.Tensor:
    y = model(**inputs)
    return y.logits if hasattr(y, "logits") else y


CASES = [
    pytest.param(tiny_bert, bert_inputs, ("query", "value"), ("classifier",), id="bert-qv"),
    pytest.param(tiny_bert, bert_inputs, "all-linear", ("classifier",), id="bert-all-linear"),
    pytest.param(tiny_bert, bert_inputs, ("word_embeddings", "query"), (), id="bert-embedding"),
    pytest.param(tiny_mixed, mixed_inputs, ("emb", "conv1", "conv2", "fc"), ("classifier",),
                 id="mixed-all-types"),
]


def randomize_b(model: nn.Module) -> None:
    # B starts at zero; give it values so merge/unmerge checks are not trivially true.
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for layer in lora.lora_layers(model).values():
            for name, p in layer.adapter_parameters():
                if "B" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)


@pytest.mark.parametrize("make, inputs, targets, saved", CASES)
def test_wrapped_equals_base_at_init(make, inputs, targets, saved):
    base = make()
    wrapped = copy.deepcopy(base)
    lora.apply(wrapped, LoraConfig(r=4, alpha=8, target_modules=targets, modules_to_save=saved))
    x = inputs()
    assert torch.equal(out(base, x), out(wrapped, x))


@pytest.mark.parametrize("make, inputs, targets, saved", CASES)
def test_merged_equals_unmerged_and_unmerge_restores(make, inputs, targets, saved):
    model = make()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lora.apply(model, LoraConfig(r=4, alpha=8, target_modules=targets, modules_to_save=saved))
    randomize_b(model)
    x = inputs()
    unmerged = out(model, x)
    assert not torch.allclose(unmerged, out(make(), x), atol=1e-4), "adapter must change the output"
    lora.merge(model)
    assert torch.allclose(out(model, x), unmerged, atol=1e-5)
    lora.unmerge(model)
    assert torch.allclose(out(model, x), unmerged, atol=1e-5)
    for name, layer in lora.lora_layers(model).items():
        assert torch.allclose(layer.base_layer.weight, before[f"{name}.weight"], atol=1e-6)


@pytest.mark.parametrize("make, inputs, targets, saved", CASES)
def test_merge_and_unload_gives_plain_model(make, inputs, targets, saved):
    model = make()
    lora.apply(model, LoraConfig(r=4, alpha=8, target_modules=targets, modules_to_save=saved))
    randomize_b(model)
    x = inputs()
    expected = out(model, x)
    plain = lora.merge_and_unload(model)
    assert not lora.lora_layers(plain)
    assert not any("lora" in k for k in plain.state_dict())
    assert set(plain.state_dict()) == set(make().state_dict())
    assert torch.allclose(out(plain, x), expected, atol=1e-5)


@pytest.mark.parametrize("make, inputs, targets, saved", CASES)
def test_only_adapters_and_saved_modules_get_gradients(make, inputs, targets, saved):
    model = make().train()
    summary = lora.apply(model, LoraConfig(r=4, alpha=8, target_modules=targets,
                                           modules_to_save=saved))
    randomize_b(model)
    out(model, inputs()).sum().backward()
    for name, p in model.named_parameters():
        is_adapter = ".lora_" in name
        is_saved = any(name.startswith(s + ".") for s in summary["modules_to_save"])
        if is_adapter or is_saved:
            assert p.requires_grad, name
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name
    assert summary["trainable_params"] == lora.trainable_parameters(model)
    saved_params = sum(p.numel() for s in summary["modules_to_save"]
                       for p in model.get_submodule(s).parameters())
    assert summary["trainable_params"] == summary["adapter_params"] + saved_params


def test_adapter_parameter_count_matches_formula():
    model = tiny_bert()
    summary = lora.apply(model, LoraConfig(r=4, alpha=8, target_modules=("query", "value")))
    # 2 layers x 2 modules x r x (in + out) with in = out = hidden 16.
    assert summary["adapter_params"] == 2 * 2 * 4 * (16 + 16)
    assert summary.params_after == summary.params_before + summary["adapter_params"]
    assert len(summary.modules_changed) == 4


def test_all_linear_skips_classifier():
    model = tiny_bert()
    summary = lora.apply(model, LoraConfig(target_modules="all-linear",
                                           modules_to_save=("classifier",)))
    assert "classifier" not in summary.modules_changed
    assert isinstance(model.classifier, nn.Linear)
    # q, k, v, attention output, intermediate, output per layer, plus the pooler.
    assert len(summary.modules_changed) == 2 * 6 + 1


def test_scaling_plain_and_rslora():
    assert LoraConfig(r=16, alpha=32).scaling == pytest.approx(2.0)
    assert LoraConfig(r=16, alpha=32, use_rslora=True).scaling == pytest.approx(8.0)
    model = tiny_bert()
    lora.apply(model, LoraConfig(r=16, alpha=32, use_rslora=True, target_modules=("query",)))
    layer = next(iter(lora.lora_layers(model).values()))
    assert layer.scaling == pytest.approx(8.0)


def test_glob_patterns():
    model = tiny_bert()
    summary = lora.apply(model, LoraConfig(target_modules=("*.layer.1.attention.self.query",)))
    assert summary.modules_changed == ["bert.encoder.layer.1.attention.self.query"]


@pytest.mark.parametrize("kwargs, message", [
    ({"r": 0}, "rank r must be a positive integer"),
    ({"r": -2}, "rank r must be a positive integer"),
    ({"alpha": 0}, "alpha must be > 0"),
    ({"alpha": -1.0}, "alpha must be > 0"),
    ({"dropout": 1.0}, "dropout"),
    ({"target_modules": ()}, "target_modules is empty"),
])
def test_bad_config_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LoraConfig(**kwargs)


def test_pattern_matching_nothing_lists_modules():
    model = tiny_bert()
    with pytest.raises(ValueError, match="matches no module") as err:
        lora.apply(model, LoraConfig(target_modules=("q_proj",)))
    assert "attention.self.query" in str(err.value)
    # A failed apply leaves the model untouched.
    assert not lora.lora_layers(model)
    assert all(p.requires_grad for p in model.parameters())


def test_unsupported_module_type_rejected():
    model = tiny_bert()
    with pytest.raises(ValueError, match="cannot wrap"):
        lora.apply(model, LoraConfig(target_modules=("LayerNorm",)))


def test_modules_to_save_matching_nothing_rejected():
    with pytest.raises(ValueError, match="modules_to_save"):
        lora.apply(tiny_bert(), LoraConfig(modules_to_save=("score",)))


def test_double_apply_and_merge_without_adapters_rejected():
    model = tiny_bert()
    with pytest.raises(ValueError, match="no LoRA adapters"):
        lora.merge(model)
    lora.apply(model, LoraConfig())
    with pytest.raises(ValueError, match="already has LoRA"):
        lora.apply(model, LoraConfig())


def test_grouped_conv_rejected():
    with pytest.raises(ValueError, match="grouped"):
        LoraLayer(nn.Conv2d(4, 4, 3, groups=2), 2, 4.0, 0.0, False)


def test_dropout_only_in_training():
    model = tiny_bert()
    lora.apply(model, LoraConfig(r=4, alpha=8, dropout=0.5, target_modules=("query",)))
    randomize_b(model)
    x = bert_inputs()
    # tiny_bert() is in eval mode and the new wrappers follow it: no dropout noise.
    assert torch.equal(out(model, x), out(model, x))
    layer = next(iter(lora.lora_layers(model).values()))
    assert not layer.training and isinstance(layer.lora_dropout, torch.nn.Dropout)


def _plain_delta(layer: LoraLayer, x: torch.Tensor) -> torch.Tensor:
    """The update as two nn.Linear calls compute it: the reference for the fast path."""
    return layer.base_layer(x) + layer.lora_B(layer.lora_A(x)) * layer.scaling


@pytest.mark.parametrize("shape", [(5, 6), (2, 3, 6)], ids=["2-d", "3-d"])
def test_linear_fast_path_matches_the_plain_computation_and_its_gradients(shape):
    torch.manual_seed(0)
    layer = LoraLayer(nn.Linear(6, 4), r=3, alpha=6.0, dropout=0.0, use_rslora=False)
    nn.init.normal_(layer.lora_B.weight)
    layer.base_layer.weight.requires_grad_(True)  # the base's gradient must flow too
    x = torch.randn(shape, requires_grad=True)
    params = [x, layer.lora_A.weight, layer.lora_B.weight, layer.base_layer.weight]
    fast = layer(x)
    plain = _plain_delta(layer, x)
    assert fast.shape == plain.shape
    assert torch.allclose(fast, plain, atol=1e-6)
    g = torch.randn_like(fast)
    grads_fast = torch.autograd.grad(fast, params, g)
    grads_plain = torch.autograd.grad(plain, params, g)
    for got, want in zip(grads_fast, grads_plain, strict=True):
        assert got.shape == want.shape and torch.allclose(got, want, atol=1e-5)


def test_linear_fast_path_passes_gradcheck_in_float64():
    g = torch.Generator().manual_seed(0)
    y, x = torch.randn(5, 4, generator=g), torch.randn(5, 6, generator=g)
    a, b = torch.randn(3, 6, generator=g), torch.randn(4, 3, generator=g)
    inputs = tuple(t.double().requires_grad_() for t in (y, x, a, b))
    assert torch.autograd.gradcheck(lambda *t: lora._LinearDelta.apply(*t, 0.7), inputs)


def test_linear_fast_path_gives_way_under_autocast(monkeypatch):
    layer = LoraLayer(nn.Linear(6, 4), r=2, alpha=4.0, dropout=0.0, use_rslora=False)
    nn.init.normal_(layer.lora_B.weight)
    x = torch.randn(3, 6)
    used = []
    real = lora._LinearDelta.apply
    monkeypatch.setattr(lora._LinearDelta, "apply", lambda *a: used.append(1) or real(*a))
    layer(x)
    assert used == [1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert used == [1] and y.dtype == torch.bfloat16  # autocast cast the modules' own calls
    assert torch.allclose(y.float(), _plain_delta(layer, x), atol=0.1)
    layer.double()  # one dtype throughout again: the fast path
    layer(x.double())
    assert used == [1, 1]


def _counting_fast_path(monkeypatch) -> list[int]:
    used: list[int] = []
    real = lora._LinearDelta.apply
    monkeypatch.setattr(lora._LinearDelta, "apply", lambda *a: used.append(1) or real(*a))
    return used


def test_linear_fast_path_keeps_hooks_on_the_adapters_firing(monkeypatch):
    layer = LoraLayer(nn.Linear(6, 4), r=2, alpha=4.0, dropout=0.0, use_rslora=False)
    nn.init.normal_(layer.lora_B.weight)
    used = _counting_fast_path(monkeypatch)
    seen = []
    handle = layer.lora_A.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape))
    x = torch.randn(3, 6)
    assert torch.allclose(layer(x), _plain_delta(layer, x), atol=1e-6)
    assert used == [] and len(seen) == 2  # our call and the reference's: the module was called
    handle.remove()
    layer(x)
    assert used == [1]


def test_linear_fast_path_leaves_quantized_adapters_to_their_own_kernel(monkeypatch):
    from lowcarb.compress import quantize

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32))
    lora.apply(model, LoraConfig(r=4, target_modules=("0", "2")))
    randomize_b(model)
    x = torch.randn(5, 32)
    expected = model(x)
    used = _counting_fast_path(monkeypatch)
    quantized = quantize.quantize_(model, quantize.WeightOnlyInt8()).model
    got = quantized(x)  # lora_A and lora_B hold torchao weights now: their own kernel runs
    assert used == []
    assert torch.allclose(got, expected, atol=0.05 * float(expected.detach().abs().max()))


@pytest.mark.parametrize("frozen", ["lora_A", "lora_B"])
def test_linear_fast_path_with_one_factor_frozen(frozen):
    torch.manual_seed(0)
    layer = LoraLayer(nn.Linear(6, 4), r=3, alpha=6.0, dropout=0.0, use_rslora=False)
    nn.init.normal_(layer.lora_B.weight)
    getattr(layer, frozen).weight.requires_grad_(False)
    trained = layer.lora_B.weight if frozen == "lora_A" else layer.lora_A.weight
    x = torch.randn(2, 5, 6).transpose(0, 1)  # not contiguous
    g = torch.randn(5, 2, 4)
    (got,) = torch.autograd.grad(layer(x), [trained], g)
    (want,) = torch.autograd.grad(_plain_delta(layer, x), [trained], g)
    assert torch.allclose(got, want, atol=1e-5)


def test_linear_fast_path_with_dropout_drops_the_adapters_input_only():
    torch.manual_seed(0)
    layer = LoraLayer(nn.Linear(6, 4), r=3, alpha=6.0, dropout=0.5, use_rslora=False).train()
    nn.init.normal_(layer.lora_B.weight)
    x = torch.randn(4, 6)
    torch.manual_seed(1)
    got = layer(x)
    torch.manual_seed(1)
    want = layer.base_layer(x) + layer.lora_B(layer.lora_A(layer.lora_dropout(x))) * layer.scaling
    assert torch.allclose(got, want, atol=1e-6)


def test_linear_fast_path_refuses_second_order_gradients():
    # Its backward is computed without a graph: a second differentiation must raise, not return
    # a gradient that silently misses terms.
    layer = LoraLayer(nn.Linear(6, 4), r=3, alpha=6.0, dropout=0.0, use_rslora=False)
    nn.init.normal_(layer.lora_B.weight)
    x = torch.randn(3, 6, requires_grad=True)
    (grad_b,) = torch.autograd.grad(layer(x).square().sum(), [layer.lora_B.weight], create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad_b.square().sum().backward()
