"""Weight-only int8/int4 computed in bfloat16 on a tiny Llama with a tied lm_head (LLM serving)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lowcarb.compress import quantize
from lowcarb.compress.quantize.compute_dtype import PackedInt8Linear
from lowcarb.compress.saved import load_transformed, save_transformed
from lowcarb.errors import ConfigError
from lowcarb.models.surgery import count_parameters
from lowcarb.train.generation import greedy_generate, left_pad


def _llama(seed: int = 0) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=160, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        tie_word_embeddings=True, pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def _prompts() -> dict[str, torch.Tensor]:
    return left_pad([[5, 9, 33, 7], [12, 44, 3, 90, 21, 8]], pad_id=0)


def _logits(model: nn.Module) -> torch.Tensor:
    with torch.inference_mode():
        return model(**_prompts()).logits.float()


def test_packed_int8_linear_is_the_dequantized_matmul_in_bf16():
    torch.manual_seed(0)
    layer = nn.Linear(64, 48, bias=True)
    packed = PackedInt8Linear.from_linear(layer, per_channel=True, compute=torch.bfloat16)
    x = torch.randn(3, 5, 64)
    dequant = packed.weight_int8.float() * packed.scales.float()[:, None]
    expected = (x.bfloat16().float() @ dequant.t()) + layer.bias.detach()
    got = packed(x)
    assert got.dtype == torch.float32 and got.shape == (3, 5, 48)
    assert torch.allclose(got, expected, atol=0.05, rtol=0.02), (got - expected).abs().max()
    # int8 codes use the full symmetric range row by row
    assert int(packed.weight_int8.abs().amax(dim=1).min()) == 127


@pytest.mark.parametrize("in_features", [10, 209])  # 209: SmolLM2's MLP rank at param_ratio 0.5
def test_packed_int8_linear_pads_an_input_width_the_kernel_cannot_take(in_features):
    # _weight_int8pack_mm crashes the process on an input width that is not a multiple of 8 (AVX2)
    # or 16 (AVX-512): the weight is padded to a multiple of 32 columns, the parameter count is not
    torch.manual_seed(0)
    layer = nn.Linear(in_features, 24, bias=False)
    packed = PackedInt8Linear.from_linear(layer, per_channel=True, compute=torch.bfloat16)
    assert packed.weight_int8.shape == (24, -(-in_features // 32) * 32)
    assert packed.weight_int8.shape[1] % 32 == 0 and packed.weight_int8.shape[1] - in_features < 32
    assert count_parameters(packed) == 24 * in_features
    assert not packed.weight_int8[:, in_features:].any()
    x = torch.randn(2, 3, in_features)
    dequant = packed.weight_int8[:, :in_features].float() * packed.scales.float()[:, None]
    got = packed(x)
    assert got.shape == (2, 3, 24)
    assert torch.allclose(got, x.bfloat16().float() @ dequant.t(), atol=0.05, rtol=0.02)
    assert torch.allclose(got, layer(x), atol=0.1, rtol=0.05)


@pytest.mark.parametrize(
    ("config", "kind"),
    [(quantize.WeightOnlyInt8(compute_dtype="bfloat16"), PackedInt8Linear),
     (quantize.WeightOnlyInt4(group_size=32, compute_dtype="bfloat16"), nn.Linear)],
)  # fmt: skip
def test_tied_lm_head_is_quantized_and_the_embedding_keeps_fp32(config, kind):
    model = _llama()
    embedding = model.model.embed_tokens.weight.detach().clone()
    reference = _logits(model)
    summary = quantize.quantize_(model, config)
    assert "lm_head" in summary.modules_changed
    assert isinstance(model.lm_head, kind)
    # the embedding the lm_head was tied to is untouched (same dtype, same values)
    assert model.model.embed_tokens.weight.dtype == torch.float32
    assert torch.equal(model.model.embed_tokens.weight, embedding)
    got = _logits(model)
    assert got.dtype == torch.float32
    rel = float((got - reference).norm() / reference.norm())
    assert rel < (0.03 if kind is PackedInt8Linear else 0.15), rel
    assert summary.details["linear_size_ratio"] > (3.0 if kind is PackedInt8Linear else 4.0)


@pytest.mark.parametrize(
    "config",
    [quantize.WeightOnlyInt8(compute_dtype="bfloat16"), quantize.WeightOnlyInt4(compute_dtype="bfloat16")],
)
def test_a_saved_bf16_weight_only_llm_reloads_to_identical_greedy_outputs(config, tmp_path):
    model = _llama()
    quantize.quantize_(model, config)
    kwargs = {"eos_token_id": None, "pad_token_id": 0}
    before = greedy_generate(model, _prompts(), 12, **kwargs)
    save_transformed(model, tmp_path / "q")
    fresh = load_transformed(_llama(seed=7), tmp_path / "q")
    after = greedy_generate(fresh, _prompts(), 12, **kwargs)
    assert before.shape == (2, 12)
    assert torch.equal(before, after)
    assert torch.equal(_logits(fresh), _logits(model))


def test_an_unknown_compute_dtype_is_a_config_error():
    with pytest.raises(ConfigError, match="compute_dtype must be one of"):
        quantize.WeightOnlyInt8(compute_dtype="float16")
    with pytest.raises(ConfigError, match="compute_dtype must be one of"):
        quantize.WeightOnlyInt4(compute_dtype="int8")



@pytest.mark.parametrize(
    "config", [quantize.WeightOnlyInt8(compute_dtype="bfloat16"), quantize.WeightOnlyInt4(group_size=32, compute_dtype="bfloat16")]
)  # fmt: skip
def test_quantizing_a_tied_lm_head_does_not_count_its_weights_twice(config, tmp_path):
    # The head is quantized apart from the input embedding (the embedding keeps its float weight):
    # the model still has the parameters it had, before and after a save and reload.
    model = _llama()
    before = count_parameters(model)
    quantize.quantize_(model, config)
    assert count_parameters(model) == before
    save_transformed(model, tmp_path / "q")
    assert count_parameters(load_transformed(_llama(seed=7), tmp_path / "q")) == before
