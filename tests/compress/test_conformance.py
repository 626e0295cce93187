"""Every transform over a table of tiny models, as PEFT's tests run invariants over a table: it
applies, logs its config, saves and reloads (replaying the log on a fresh model) to equal outputs,
reports parameter counts consistent with the one counting rule, and refuses bad configs and models
it cannot take with a LowcarbError that says what was wrong."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

from lowcarb.adapt import lora
from lowcarb.compress import lowrank, quantize
from lowcarb.compress.distill import vocab
from lowcarb.compress.saved import load_transformed, save_transformed
from lowcarb.errors import LowcarbError
from lowcarb.models import MLP, DigitsCNN, TextTransformer
from lowcarb.models.surgery import count_parameters
from lowcarb.models.transforms import TransformSummary, transform_log
from lowcarb.prune import bert_structure, bn_channels, earlybird
from lowcarb.train.batches import logits_of

torch.set_num_threads(1)

# ---------------------------------------------------------------------------------------------
# the tiny models
# ---------------------------------------------------------------------------------------------


def _images(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"pixel_values": torch.rand(4, 1, 8, 8, generator=g) * 16}


def _tokens(vocab_size: int, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(4, 9, dtype=torch.long)
    mask[1, 6:] = 0
    return {"input_ids": torch.randint(1, vocab_size, (4, 9), generator=g), "attention_mask": mask}


def _cnn() -> nn.Module:
    net = DigitsCNN((1, 8, 8), num_labels=10, channels=(16, 32), hidden_dim=64)
    with torch.no_grad():  # BatchNorm statistics as after training
        for bn in bn_channels.bn_layers(net).values():
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(-1, 1)
    return net


def _bert() -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=32, num_labels=3,
    )  # fmt: skip
    return BertForSequenceClassification(config)


def _llama() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    return LlamaForCausalLM(config)


@dataclass(frozen=True)
class Tiny:
    name: str
    build: Callable[[], nn.Module]
    batch: Callable[[int], dict[str, torch.Tensor]]

    def model(self, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return self.build().eval()


MODELS = {
    t.name: t
    for t in (
        Tiny("cnn", _cnn, _images),
        Tiny("mlp", lambda: MLP((1, 8, 8), 10, hidden_dim=64), _images),
        Tiny("transformer", lambda: TextTransformer(
            vocab_size=64, num_labels=3, d_model=32, num_layers=2, num_heads=2, ffn_dim=64,
            max_length=16, dropout=0.0, pad_token_id=0), lambda s: _tokens(64, s)),
        Tiny("bert", _bert, lambda s: _tokens(64, s)),
        Tiny("llama", _llama, lambda s: _tokens(128, s)),
    )
}  # fmt: skip

# ---------------------------------------------------------------------------------------------
# the transforms: how to build a config for a model, and which models a transform takes
# ---------------------------------------------------------------------------------------------


def _linears(model: nn.Module, n: int = 2) -> tuple[str, ...]:
    return tuple(name for name, m in model.named_modules() if type(m) is nn.Linear)[:n]


def _ticket(model: nn.Module) -> earlybird.EarlyBirdTicket:
    if bert_structure.is_bert_like(model):
        layers = bert_structure.find_layers(model)
        heads = torch.ones(len(layers), 2, dtype=torch.bool)
        heads[0, 1] = False  # layers of different widths
        ffn = torch.rand(len(layers), 64, generator=torch.Generator().manual_seed(0)) > 0.5
        ffn[:, 0] = True
        masks = {"heads": heads, "ffn": ffn}
    elif bn_channels.has_bn_channels(model):
        masks = bn_channels.masks(model, 0.5)
    else:  # a model early-bird cannot prune: apply must refuse it
        masks = {"channels": torch.ones(4, dtype=torch.bool)}
    return earlybird.EarlyBirdTicket(masks=masks, stop_step=1, stopped_early=True, steps_per_epoch=1)


def _apply_lora(model: nn.Module, merged: bool) -> TransformSummary:
    summary = lora.apply(model, lora.LoraConfig(r=2, alpha=4, target_modules=_linears(model)))
    with torch.no_grad():  # B starts at zero: give the adapters something to carry
        for layer in lora.lora_layers(model).values():
            layer.lora_B.weight.normal_(0, 0.1)
    if merged:
        lora.merge(model)
    return summary


def _calibration(tiny: Tiny) -> list[dict[str, torch.Tensor]]:
    return [tiny.batch(seed) for seed in (11, 12)]


@dataclass(frozen=True)
class Transform:
    name: str
    apply: Callable[[nn.Module, Tiny], TransformSummary]
    models: tuple[str, ...]  # the tiny models it takes; the others must be refused clearly
    atol: float = 0.0  # reload tolerance (0: bit-identical)


ALL = tuple(MODELS)
TRANSFORMS = {
    t.name: t
    for t in (
        Transform("lowrank", lambda m, t: lowrank.apply(
            m, lowrank.LowRankConfig(param_ratio=None, rank=2)), ALL),
        Transform("lora", lambda m, t: _apply_lora(m, merged=False), ALL),
        Transform("lora_merged", lambda m, t: _apply_lora(m, merged=True), ALL),
        Transform("earlybird", lambda m, t: earlybird.apply(m, _ticket(m)), ("cnn", "bert")),
        Transform("vocab", lambda m, t: vocab.apply(
            m, vocab.VocabConfig(keep=tuple(range(1, 40)), bits=8)), ("transformer", "bert")),
        Transform("vocab_int4", lambda m, t: vocab.apply(
            m, vocab.VocabConfig(keep=tuple(range(1, 40)), bits=4, group_size=16)), ("transformer", "bert")),
        Transform("dynamic_int8", lambda m, t: quantize.quantize_(m, quantize.DynamicInt8()), ALL),
        Transform("dynamic_int8_torchao", lambda m, t: quantize.quantize_(
            m, quantize.DynamicInt8(library="torchao")), ALL),
        Transform("smoothquant", lambda m, t: quantize.quantize_(
            m, quantize.DynamicInt8(smooth_alpha=0.5), calibration=_calibration(t)), ALL),
        Transform("weight_only_int8", lambda m, t: quantize.quantize_(m, quantize.WeightOnlyInt8()), ALL),
        Transform("weight_only_int4", lambda m, t: quantize.quantize_(m, quantize.WeightOnlyInt4()), ALL),
        Transform("weight_only_int8_bf16", lambda m, t: quantize.quantize_(
            m, quantize.WeightOnlyInt8(compute_dtype="bfloat16")), ALL),
        Transform("weight_only_int4_bf16", lambda m, t: quantize.quantize_(
            m, quantize.WeightOnlyInt4(compute_dtype="bfloat16")), ALL),
        Transform("static_int8", lambda m, t: quantize.quantize_(
            m, quantize.StaticInt8(), calibration=_calibration(t)), ("cnn", "mlp")),
        Transform("static_int8_torchao", lambda m, t: quantize.quantize_(
            m, quantize.StaticInt8(library="torchao"), calibration=_calibration(t)), ALL),
    )
}  # fmt: skip

CASES = [(t, m) for t in TRANSFORMS for m in ALL]


def _out(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.inference_mode():
        return logits_of(model(**batch)).float()


@pytest.mark.parametrize(("transform", "tiny"), CASES)
def test_transform_conformance(transform: str, tiny: str, tmp_path):
    spec, model_spec = TRANSFORMS[transform], MODELS[tiny]
    model = model_spec.model(seed=0)
    if tiny not in spec.models:
        # A model the transform cannot take: one clear user error, and the model is untouched.
        before = copy.deepcopy(model.state_dict())
        with pytest.raises(LowcarbError):
            spec.apply(model, model_spec)
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
        assert transform_log(model) == ()
        return
    params_before = count_parameters(model)
    summary = spec.apply(model, model_spec)
    out = summary.model if summary.model is not None else model

    # applies: one summary type, counts by the one rule, the config logged last
    assert isinstance(summary, TransformSummary)
    assert summary.params_before == params_before
    assert summary.params_after == count_parameters(out)
    assert summary.modules_changed
    json.dumps(summary.to_dict())  # JSON-able, for the run record
    assert transform_log(out)[-1].config == summary.config

    # saves and reloads onto a fresh model with other weights, to the same outputs
    batch = model_spec.batch(1)
    save_transformed(out, tmp_path / "m")
    fresh = load_transformed(model_spec.model(seed=5), tmp_path / "m")
    expected, got = _out(out, batch), _out(fresh, batch)
    assert torch.allclose(got, expected, atol=spec.atol, rtol=0), (got - expected).abs().max()
    assert count_parameters(fresh) == count_parameters(out)
    assert [r.config for r in transform_log(fresh)] == [r.config for r in transform_log(out)]


@pytest.mark.parametrize("tiny", ["cnn", "bert"])
def test_a_chain_reloads_in_the_order_it_was_applied(tiny: str, tmp_path):
    # pruning, then factorizing, then int8: the replay follows the log, whatever the order
    model_spec = MODELS[tiny]
    model = model_spec.model(seed=0)
    earlybird.apply(model, _ticket(model))
    lowrank.apply(model, lowrank.LowRankConfig(param_ratio=None, rank=2))
    _apply_lora(model, merged=False)
    summary = quantize.quantize_(model, quantize.WeightOnlyInt8())
    names = [type(r.config).__name__ for r in transform_log(summary.model)]
    assert names == ["EarlyBirdTicket", "LowRankConfig", "LoraConfig", "WeightOnlyInt8"]
    save_transformed(summary.model, tmp_path / "m")
    fresh = load_transformed(model_spec.model(seed=9), tmp_path / "m")
    batch = model_spec.batch(2)
    assert torch.equal(_out(fresh, batch), _out(summary.model, batch))


def test_merging_and_unloading_lora_leaves_a_plain_model_with_no_record():
    model = MODELS["mlp"].model()
    _apply_lora(model, merged=False)
    plain = lora.merge_and_unload(model)
    assert transform_log(plain) == ()


BAD_CONFIGS = [
    (lambda: lowrank.LowRankConfig(param_ratio=1.5), "param_ratio must be in (0, 1]"),
    (lambda: lora.LoraConfig(r=0), "LoRA rank r must be a positive integer"),
    (lambda: earlybird.EarlyBirdConfig(head_prune_ratio=1.0), "head_prune_ratio must be in [0, 1)"),
    (lambda: vocab.VocabConfig(keep=()), "VocabConfig.keep is empty"),
    (lambda: quantize.DynamicInt8(library="onnx"), "unknown library 'onnx'"),
    (lambda: quantize.DynamicInt8(smooth_alpha=2.0), "smooth_alpha must be in [0, 1]"),
    (lambda: quantize.WeightOnlyInt8(targets=()), "targets is empty"),
    (lambda: quantize.WeightOnlyInt4(group_size=100), "group_size must be one of"),
    (lambda: quantize.StaticInt8(calibration_batches=0), "calibration_batches must be at least 1"),
]


@pytest.mark.parametrize(("make", "message"), BAD_CONFIGS)
def test_bad_configs_are_refused_with_a_clear_error(make, message):
    with pytest.raises(LowcarbError) as err:
        make()
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("apply", "message"),
    [
        (lambda m: lowrank.apply(m, lowrank.LowRankConfig(targets=("*nothing*",))), "matches no"),
        (lambda m: lora.apply(m, lora.LoraConfig(target_modules=("nothing",))), "matches no module"),
        (lambda m: quantize.quantize_(m, quantize.DynamicInt8(exclude=("*",))), "leave no Linear"),
        (lambda m: quantize.quantize_(m, quantize.StaticInt8()), "needs calibration data"),
    ],
)
def test_a_selection_or_input_that_cannot_work_is_a_clear_error(apply, message):
    model = MODELS["mlp"].model()
    with pytest.raises(LowcarbError, match=message):
        apply(model)
    assert transform_log(model) == ()


def test_the_summary_keeps_its_details_apart_from_the_common_fields():
    summary = lowrank.apply(MODELS["mlp"].model(), lowrank.LowRankConfig(param_ratio=None, rank=2))
    flat: dict[str, Any] = summary.to_dict()
    assert flat["transform"] == "lowrank" and flat["config"]["rank"] == 2
    assert flat["ranks"] == summary["ranks"] and set(summary.details) <= set(flat)
