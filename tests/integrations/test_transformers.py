"""LowcarbCallback drives a real Hugging Face Trainer on a tiny BERT for a few steps."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from lowcarb.integrations.transformers import LowcarbCallback
from lowcarb.measure import CarbonConfig
from lowcarb.store import RunStore

SEQ = 8


class Tiny(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(n)
        self.ids = torch.randint(1, 50, (n, SEQ), generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(SEQ, dtype=torch.long),
                "labels": self.labels[i]}


def _trainer(tmp_path, callback, **overrides) -> Trainer:
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16, num_labels=2,
    ))
    settings = dict(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, per_device_eval_batch_size=4,
        num_train_epochs=2, eval_strategy="epoch", save_strategy="no", logging_steps=1,
        report_to=[], use_cpu=True, disable_tqdm=True, include_num_input_tokens_seen=True,
    )
    args = TrainingArguments(**{**settings, **overrides})
    return Trainer(model=model, args=args, train_dataset=Tiny(10), eval_dataset=Tiny(6),
                   callbacks=[callback])


@pytest.fixture
def config(tmp_path):
    return CarbonConfig(intensity_g_per_kwh=300.0, powercap_root=str(tmp_path / "none"),
                        sample_interval_s=0.05)


def test_windows_for_train_epochs_and_evaluations(tmp_path, config):
    store = RunStore(tmp_path / "runs.db")
    callback = LowcarbCallback(config=config, store=store)
    trainer = _trainer(tmp_path, callback)
    trainer.train()

    (run,) = store.list_runs()
    assert (run.kind, run.name, run.status) == ("track", "train", "completed")
    fps = store.footprints(run.run_id)
    names = [f["name"] for f in fps]
    # 10 samples, batch 4: 3 steps per epoch; the last batch holds 2 samples
    assert names == ["train epoch 1", "train evaluate", "train epoch 2", "train evaluate", "train"]
    train = fps[-1]
    assert all(f["parent"] == train["id"] for f in fps[:-1]) and train["parent"] is None
    assert [f["units"] for f in fps] == [10.0, 6.0, 10.0, 6.0, 20.0]
    assert train["unit"] == "sample" and train["energy_j"] > 0
    assert train["energy_j"] >= sum(f["energy_j"] for f in fps[:-1]) * 0.5  # the epochs are inside

    totals = trainer.state.log_history[-1]
    assert totals["lowcarb_run_id"] == run.run_id and totals["step"] == trainer.state.global_step == 6
    assert totals["lowcarb_total_g"] == pytest.approx(train["total_g"])
    assert totals["lowcarb_samples"] == 20.0
    assert totals["lowcarb_g_per_sample"] == pytest.approx(train["total_g"] / 20)
    assert totals["lowcarb_tokens"] == 20 * SEQ
    assert totals["lowcarb_g_per_token"] == pytest.approx(train["total_g"] / (20 * SEQ))
    assert store.run_totals(run.run_id)["total_g"] == pytest.approx(train["total_g"])


def test_max_steps_counts_only_the_steps_taken_and_evaluate_alone(tmp_path, config):
    store = RunStore(tmp_path / "runs.db")
    callback = LowcarbCallback("fine-tune", config=config, store=store)
    trainer = _trainer(tmp_path, callback, max_steps=2, eval_strategy="no")
    trainer.train()
    trainer.evaluate()  # outside train(): its own run, opened at its first batch
    train_run, eval_run = sorted(store.list_runs(), key=lambda r: r.started_at)
    assert [(f["name"], f["units"]) for f in store.footprints(train_run.run_id)] == [
        ("fine-tune epoch 1", 8.0), ("fine-tune", 8.0)]
    assert [(f["name"], f["units"]) for f in store.footprints(eval_run.run_id)] == [
        ("fine-tune evaluate", 6.0)]
    assert trainer.state.log_history[-2]["lowcarb_samples"] == 8.0
