"""Training and evaluation: the fit loop, metrics, and serving costs.

    result = fit(model, train_loader, dev_loader, TrainConfig(epochs=2, lr=5e-5))
    metrics = evaluate(model, dev_loader)            # accuracy, macro_f1, loss
    costs = model_costs(model, batch_1, batch_32)    # params, size, FLOPs, latency, footprint

Device and precision are resolved once at the edge (`resolve_placement`); the loops read the
device from the model. `DeviceClock` / `time_repeats` are the synchronized clock every timing uses.
"""

from lowcarb.train.batches import forward, logits_of, model_inputs, set_seed
from lowcarb.train.config import TrainConfig
from lowcarb.train.costs import model_costs
from lowcarb.train.device import (
    Placement,
    autocast,
    grad_scaler,
    resolve_device,
    resolve_placement,
    resolve_precision,
    synchronize,
)
from lowcarb.train.evaluate import evaluate, macro_f1
from lowcarb.train.flops import flops_per_example
from lowcarb.train.footprint import inference_footprint
from lowcarb.train.latency import benchmark_latency, torch_threads
from lowcarb.train.loop import (
    FitResult,
    default_param_groups,
    fit,
    linear_warmup_decay,
    make_adamw,
)
from lowcarb.train.size import count_parameters, size_on_disk_bytes
from lowcarb.train.timing import (
    DeviceClock,
    MachineLoad,
    RepeatConfig,
    Timings,
    machine_load,
    time_repeats,
)

__all__ = [
    "DeviceClock",
    "FitResult",
    "MachineLoad",
    "Placement",
    "RepeatConfig",
    "Timings",
    "TrainConfig",
    "autocast",
    "benchmark_latency",
    "count_parameters",
    "default_param_groups",
    "evaluate",
    "fit",
    "flops_per_example",
    "forward",
    "grad_scaler",
    "inference_footprint",
    "linear_warmup_decay",
    "logits_of",
    "machine_load",
    "make_adamw",
    "macro_f1",
    "model_costs",
    "model_inputs",
    "resolve_device",
    "resolve_placement",
    "resolve_precision",
    "set_seed",
    "size_on_disk_bytes",
    "synchronize",
    "time_repeats",
    "torch_threads",
]
