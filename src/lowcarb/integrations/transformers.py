"""Measure Hugging Face `Trainer` training in the carbon ledger: `LowcarbCallback`.

    trainer = Trainer(model, args, train_dataset=..., eval_dataset=...,
                      callbacks=[LowcarbCallback()])
    trainer.train()          # a run in the store; totals in trainer.state.log_history

Windows (saved in the run store like `lowcarb.track`'s): one for the whole `train()`, and nested in
it one per epoch and one per evaluation. Units are training samples, counted per process as
optimizer steps x per-device batch x gradient accumulation, capped per epoch by this process's
share of the training set (the last, partial batch of an epoch is not over-counted). Where the
Trainer counts input tokens (`include_num_input_tokens_seen`), the tokens and grams per token are
logged too. At the end the totals are appended to `trainer.state.log_history` (keys `lowcarb_*`)
and logged. In a distributed run (torchrun) every rank's windows join one run, grouped by
TORCHELASTIC_RUN_ID or LOWCARB_JOB; tokens are counted by rank 0 only (the Trainer gathers them).

If `train()` raises, the Trainer calls no callback: the open windows are never closed and the run
stays `running` in the store (`lowcarb runs` marks it "process gone" once the process has exited).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from lowcarb.measure.config import CarbonConfig
from lowcarb.measure.footprint import Footprint
from lowcarb.store.runstore import RunStore
from lowcarb.store.tracked import StoredWindow, active_run

logger = logging.getLogger(__name__)


class _Open:
    """An open ledger window and its footprint (closed by `close`)."""

    def __init__(self, window: StoredWindow) -> None:
        self.window = window
        self.footprint: Footprint = window.__enter__()

    def close(self, units: float | None = None) -> Footprint:
        if units is not None:
            self.footprint.units = units
        self.window.__exit__(None, None, None)
        return self.footprint


class LowcarbCallback(TrainerCallback):
    """Ledger windows around `Trainer.train()`, its epochs and its evaluations.

    name: the training window's name (epochs are "<name> epoch N", evaluations "<name> evaluate").
    config: the carbon settings (default: `lowcarb.load_carbon_config()`, i.e. environment and
        lowcarb.toml). store: the run store (default: `RunStore.default()`).
    """

    def __init__(
        self, name: str = "train", *, config: CarbonConfig | None = None, store: RunStore | None = None
    ) -> None:
        self.name = name
        self.config = config
        self.store = store
        self.train: _Open | None = None
        self.epoch: _Open | None = None
        self.evaluation: _Open | None = None
        self.run_id: str | None = None
        self.totals: dict[str, Any] = {}
        self._samples = 0.0
        self._epoch_steps = 0
        self._tokens_at_start = 0

    def _open(self, name: str, unit: str | None) -> _Open:
        return _Open(StoredWindow(name, unit=unit, config=self.config, store=self.store))

    # -- training ----------------------------------------------------------------------------
    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._samples, self._tokens_at_start = 0.0, state.num_input_tokens_seen or 0
        self.train = self._open(self.name, "sample")
        active = active_run()
        self.run_id = active[1] if active is not None else None

    def on_epoch_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._epoch_steps = 0
        number = int(math.floor(state.epoch or 0.0)) + 1
        self.epoch = self._open(f"{self.name} epoch {number}", "sample")

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._epoch_steps += 1
        if control.should_evaluate:  # the Trainer evaluates right after this step
            self._open_evaluation()

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.evaluation is not None:  # an evaluation cut short without on_evaluate
            self.evaluation.close()
            self.evaluation = None
        samples = self._epoch_samples(args, kwargs.get("train_dataloader"))
        self._samples += samples
        if self.epoch is not None:
            self.epoch.close(samples)
            self.epoch = None
        if control.should_evaluate:  # the Trainer evaluates right after the epoch
            self._open_evaluation()

    def _epoch_samples(self, args: TrainingArguments, loader: Any) -> float:
        per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps
        samples = float(self._epoch_steps * per_step)
        try:
            # This process's share of the training set: the last batch may be partial.
            share = math.ceil(len(loader.dataset) / max(1, args.world_size))
        except (AttributeError, TypeError):
            return samples  # an iterable dataset: no length, steps x batch it is
        return float(min(samples, share))

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        for name in ("evaluation", "epoch"):
            open_window = getattr(self, name)
            if open_window is not None:
                open_window.close()
                setattr(self, name, None)
        if self.train is None:
            return
        fp = self.train.close(self._samples)
        self.train = None
        self.totals = self._totals(fp, args, state)
        state.log_history.append({**self.totals, "step": state.global_step})
        logger.info("lowcarb: %s", self.totals)

    def _totals(self, fp: Footprint, args: TrainingArguments, state: TrainerState) -> dict[str, Any]:
        totals: dict[str, Any] = {
            "lowcarb_run_id": self.run_id,
            "lowcarb_energy_j": fp.energy_j,
            "lowcarb_operational_g": fp.operational_g,
            "lowcarb_embodied_g": fp.embodied_g,
            "lowcarb_total_g": fp.total_g,
            "lowcarb_samples": self._samples,
            "lowcarb_g_per_sample": fp.g_per_unit,
        }
        counting = args.include_num_input_tokens_seen not in ("no", False, None)
        if counting and state.is_world_process_zero:
            tokens = (state.num_input_tokens_seen or 0) - self._tokens_at_start
            totals["lowcarb_tokens"] = tokens
            totals["lowcarb_g_per_token"] = fp.total_g / tokens if tokens else None
        return totals

    # -- evaluation --------------------------------------------------------------------------
    def _open_evaluation(self) -> None:
        if self.evaluation is None:
            self.evaluation = self._open(f"{self.name} evaluate", "sample")

    def on_prediction_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        # `trainer.evaluate()` called by the user: no step or epoch announced it, so the window
        # opens at its first batch (the data loader's start-up before it is not counted).
        self._open_evaluation()

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._close_evaluation(kwargs.get("eval_dataloader"))

    def on_predict(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
        metrics: Any = None, **kwargs: Any,
    ) -> None:
        if self.evaluation is not None:
            self.evaluation.footprint.name = f"{self.name} predict"
        self._close_evaluation(None)

    def _close_evaluation(self, loader: Any) -> None:
        if self.evaluation is None:
            return
        try:
            samples: float | None = float(len(loader.dataset))
        except (AttributeError, TypeError):
            samples = None
        self.evaluation.close(samples)
        self.evaluation = None
