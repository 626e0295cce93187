"""FLOPs per example of a forward pass, counted by torch.utils.flop_counter."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from lowcarb.train.batches import Batch, batch_size_of, model_device, model_inputs, to_device
from lowcarb.train.size import quantized_weights


@torch.inference_mode()
def flops_per_example(model: nn.Module, example_batch: Batch) -> float:
    """Forward FLOPs (a multiply-add counts 2) divided by the batch size.

    Counts matrix multiplies, convolutions and attention; element-wise ops are not counted, as in
    most published FLOP figures. For text the figure depends on the padded length of the batch.
    """
    was_training = model.training
    model.eval()
    inputs = model_inputs(to_device(example_batch, model_device(model)))
    # FlopCounterMode does not see torch.ao's quantized kernels: count those from their shapes.
    quantized_flops = [0]

    def count_quantized(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        weight = module.weight()
        if weight.dim() == 2:  # Linear: 2 * in * out per row of the input
            rows = output.numel() // weight.shape[0]
            quantized_flops[0] += 2 * weight.shape[0] * weight.shape[1] * rows
        else:  # ConvNd: 2 * (in/groups * kernel) per output element
            quantized_flops[0] += 2 * output.numel() * (weight.numel() // weight.shape[0])

    handles = [m.register_forward_hook(count_quantized) for m, _ in quantized_weights(model)]
    try:
        # The fused CPU attention kernel is invisible to FlopCounterMode; the math backend does the
        # same products as visible matmuls, so attention's 4*T^2*d term is counted.
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    total = counter.get_total_flops() + quantized_flops[0]
    return total / batch_size_of(example_batch)
