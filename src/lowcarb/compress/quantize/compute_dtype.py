"""Weight-only quantization that computes in bfloat16 on the CPU (LLM decoding).

Measured on this machine (1 thread, SmolLM2-135M shapes, benchmarks/llm_serve.py's notes): the
CPU weight-only kernels are fast only with bfloat16 activations. A 1 x 576 @ 576 x 1536 product:
fp32 dense 0.097 ms; ``aten._weight_int8pack_mm`` 0.92 ms with fp32 activations but 0.077 ms with
bf16; torchao's int4 (tinygemm CPU) 1.8 ms with fp32 activations, 0.167 ms with bf16. torchao's
``Int8Tensor`` weight-only path converts the int8 weight to the activations' dtype on every call
(slower than fp32 at decode: 6.9 vs 18.8 tokens/s on SmolLM2, batch 1).

So ``compute_dtype="bfloat16"`` casts a quantized layer's input to bf16 and its output back to the
layer's original dtype: the rest of the model (norms, attention, softmax) stays as it was.

- int8 on CPU: ``PackedInt8Linear``, PyTorch's ``aten._weight_int8pack_mm`` (int8 weights, one
  scale per output row, bf16 activations; the kernel gpt-fast uses on CPU).
- int4 (and int8 on CUDA): torchao's tensor on bf16 weights, with hooks doing the casts.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor, nn

from lowcarb.compress.quantize.configs import COMPUTE_DTYPES

__all__ = ["PackedInt8Linear", "cast_around", "packed_int8", "tied_to_input_embedding", "torch_dtype"]

# The input width is padded to a multiple of 32: the AVX2 kernel of _weight_int8pack_mm steps
# through the input in blocks of 8 with aligned 16-byte loads, the AVX-512 one in blocks of 16
# with aligned 32-byte loads of bf16 rows (torch's aten/src/ATen/native/cpu/int8mm_kernel.cpp);
# 32 columns keep every row 64-byte aligned on both. Real hidden sizes (576, 1536, 4096) are
# multiples of 32 already; only odd widths such as low-rank factors get zero columns.
PACK_BLOCK = 32


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a config's ``compute_dtype`` (validated by the config)."""
    assert name in COMPUTE_DTYPES, name
    return getattr(torch, name)


class PackedInt8Linear(nn.Module):
    """A Linear with int8 weights (symmetric, one scale per output row) computed in ``compute``.

    Buffers ``weight_int8`` (out, in rounded up to a multiple of PACK_BLOCK) int8 and ``scales``
    (out,) in the compute dtype; ``bias`` in the output dtype. The output has the input's dtype.
    ``aten._weight_int8pack_mm`` reads the input dimension in aligned blocks (8 on AVX2, 16 on
    AVX-512) and crashes the process (SIGSEGV, torch 2.13 CPU) on other widths, such as a
    low-rank factor's rank (209 for SmolLM2's MLP at half the parameters): the weight gets zero
    columns up to the next multiple of PACK_BLOCK and the input zeros to match, which leave the
    product unchanged. ``counted_elsewhere`` marks a layer whose float weight is still in the
    model (a tied lm_head: the input embedding keeps it), so the parameter count counts it once.
    """

    weight_int8: Tensor
    scales: Tensor
    bias: Tensor | None

    def __init__(self, in_features: int, out_features: int, bias: bool, compute: torch.dtype,
                 out_dtype: torch.dtype = torch.float32) -> None:  # fmt: skip
        super().__init__()
        self.in_features, self.out_features, self.compute = in_features, out_features, compute
        self.counted_elsewhere = False
        self.padded_in = -(-in_features // PACK_BLOCK) * PACK_BLOCK
        self.register_buffer("weight_int8", torch.zeros(out_features, self.padded_in, dtype=torch.int8))
        self.register_buffer("scales", torch.ones(out_features, dtype=compute))
        self.register_buffer("bias", torch.zeros(out_features, dtype=out_dtype) if bias else None)

    @classmethod
    def from_linear(cls, layer: nn.Linear, per_channel: bool, compute: torch.dtype) -> PackedInt8Linear:
        w = layer.weight.detach().float()
        amax = w.abs().amax(dim=1) if per_channel else w.abs().max().expand(w.shape[0])
        scales = amax.clamp(min=1e-12) / 127.0
        out = cls(layer.in_features, layer.out_features, layer.bias is not None, compute, layer.weight.dtype)
        out.to(layer.weight.device)
        out.weight_int8[:, : layer.in_features].copy_(
            torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
        )
        out.scales.copy_(scales.to(compute))
        if layer.bias is not None and out.bias is not None:
            out.bias.copy_(layer.bias.detach())
        return out

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, self.in_features).to(self.compute)
        if self.padded_in != self.in_features:
            flat = nn.functional.pad(flat, (0, self.padded_in - self.in_features))
        y = torch.ops.aten._weight_int8pack_mm(flat, self.weight_int8, self.scales)
        y = y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        return y + self.bias.to(x.dtype) if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, compute={self.compute}"


def packed_int8(model: nn.Module, names: list[str], per_channel: bool, compute: torch.dtype) -> None:
    """Replace each named Linear by a PackedInt8Linear (CPU)."""
    from lowcarb.models.surgery import set_module

    for name in names:
        layer = cast(nn.Linear, model.get_submodule(name))
        packed = PackedInt8Linear.from_linear(layer, per_channel, compute)
        packed.counted_elsewhere = tied_to_input_embedding(model, layer)
        set_module(model, name, packed)


def tied_to_input_embedding(model: nn.Module, layer: nn.Module) -> bool:
    """Whether `layer` shares its weight with the model's input embedding (a tied lm_head)."""
    get = getattr(model, "get_input_embeddings", None)
    embedding = get() if callable(get) else None
    weight = getattr(embedding, "weight", None) if embedding is not None else None
    return weight is not None and weight is getattr(layer, "weight", None)


def cast_around(model: nn.Module, names: list[str], compute: torch.dtype) -> dict[str, torch.dtype]:
    """Convert each named Linear to ``compute`` and cast its input to it, its output back to the
    Linear's former dtype (hooks; the quantization is applied after). Returns the former dtypes."""
    former: dict[str, torch.dtype] = {}
    for name in names:
        layer = cast(nn.Linear, model.get_submodule(name))
        former[name] = out_dtype = layer.weight.dtype
        # Checked before the weight is replaced below (that breaks the tie).
        object.__setattr__(layer, "counted_elsewhere", tied_to_input_embedding(model, layer))
        # New parameters, not layer.to(): a tied lm_head shares its weight with the embedding,
        # which must keep its dtype (the tie is broken; the embedding stays as it was).
        layer.weight = nn.Parameter(layer.weight.detach().to(compute), requires_grad=False)
        if layer.bias is not None:
            layer.bias = nn.Parameter(layer.bias.detach().to(compute), requires_grad=False)

        def cast_in(_m: nn.Module, args: tuple[Any, ...], dtype: torch.dtype = compute) -> tuple[Any, ...]:
            return (args[0].to(dtype), *args[1:])

        def cast_out(_m: nn.Module, _args: Any, out: Tensor, dtype: torch.dtype = out_dtype) -> Tensor:
            return out.to(dtype)

        layer.register_forward_pre_hook(cast_in)
        layer.register_forward_hook(cast_out)
    return former
