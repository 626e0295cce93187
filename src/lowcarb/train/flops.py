"""FLOPs per example of a forward pass, counted by torch.utils.flop_counter."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lowcarb.train.batches import Batch, batch_size_of, model_device, model_inputs, to_device


@torch.inference_mode()
def flops_per_example(model: nn.Module, example_batch: Batch) -> float:
    """Forward FLOPs (a multiply-add counts 2) divided by the batch size.

    Counts matrix multiplies, convolutions and attention; element-wise ops are not counted, as in
    most published FLOP figures. For text the figure depends on the padded length of the batch.
    """
    was_training = model.training
    model.eval()
    inputs = model_inputs(to_device(example_batch, model_device(model)))
    try:
        with FlopCounterMode(display=False) as counter:
            model(**inputs)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / batch_size_of(example_batch)
