"""FLOPs per example of a forward pass, counted by torch.utils.flop_counter."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from lowcarb.models.state import is_subclass_tensor
from lowcarb.models.surgery import quantized_weights
from lowcarb.train.batches import Batch, batch_size_of, model_device, model_inputs, to_device


def _int8_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module, torch.Tensor]]:
    """(name, module, weight) of every layer whose int8/int4 kernels FlopCounterMode may miss:
    torch.ao's quantized modules (packed weights) and Linears holding a torchao weight."""
    names = {id(m): n for n, m in model.named_modules()}
    for module, weight in quantized_weights(model):
        yield names[id(module)], module, weight
    for name, module in model.named_modules():
        linear_weight = getattr(module, "weight", None)
        if isinstance(module, nn.Linear) and is_subclass_tensor(linear_weight):
            yield name, module, linear_weight


@torch.inference_mode()
def flops_per_example(model: nn.Module, example_batch: Batch) -> float:
    """Forward FLOPs (a multiply-add counts 2) divided by the batch size.

    Counts matrix multiplies, convolutions and attention; element-wise ops are not counted, as in
    most published FLOP figures. For text the figure depends on the padded length of the batch.
    Quantized layers count the FLOPs of the product they compute, from their shapes: the counter
    does not see torch.ao's int8 kernels, and sees torchao's only on some paths.
    """
    was_training = model.training
    model.eval()
    inputs = model_inputs(to_device(example_batch, model_device(model)))
    layers = list(_int8_layers(model))
    by_shape = [0]

    def count(weight: torch.Tensor, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if weight.dim() == 2:  # Linear: 2 * in * out per row of the input
            rows = output.numel() // weight.shape[0]
            by_shape[0] += 2 * weight.shape[0] * weight.shape[1] * rows
        else:  # ConvNd: 2 * (in/groups * kernel) per output element
            by_shape[0] += 2 * output.numel() * (weight.numel() // weight.shape[0])

    handles = [module.register_forward_hook(functools.partial(count, weight))
               for _, module, weight in layers]
    try:
        # The fused CPU attention kernel is invisible to FlopCounterMode; the math backend does the
        # same products as visible matmuls, so attention's 4*T^2*d term is counted.
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    # What the counter did see inside those layers is replaced by the shape count (no double count).
    per_module = counter.get_flop_counts()
    root = type(model).__name__
    seen_inside = sum(
        sum(per_module.get(f"{root}.{name}", {}).values()) for name, _, _ in layers
    )
    total = counter.get_total_flops() - seen_inside + by_shape[0]
    return total / batch_size_of(example_batch)
