"""The char-LM task and the muTransfer workflow, on a tiny corpus and tiny widths."""

from __future__ import annotations

import math

import pytest
import torch

from lowcarb.search.mup import MupModelConfig, build_model
from lowcarb.search.mup.charlm import (
    UNK,
    LMTrainConfig,
    build_corpus,
    evaluate_lm,
    read_texts,
    train_lm,
)
from lowcarb.search.mup.mutransfer import MutransferConfig, mutransfer

TEXTS = ["the cat sat on the mat", "a dog ate the hat", "the cat ate a rat"] * 30
TRAIN = LMTrainConfig(steps=12, batch_size=4, seq_len=8, eval_windows=16)
MODEL = MupModelConfig(kind="lm", width=8, base_width=8, n_heads=2, max_len=16)


@pytest.fixture(scope="module")
def corpus():
    return build_corpus(TEXTS, ["the rat sat on a cat!"] * 4)


def test_corpus_vocabulary_and_unknown_characters(corpus):
    assert corpus.vocab[0] == UNK
    assert "!" not in corpus.vocab  # only in the validation text
    assert int((corpus.val == 0).sum()) == 4  # each "!" became UNK
    assert corpus.train.dtype == torch.long and corpus.train.max() < corpus.vocab_size


def test_read_texts(tmp_path):
    tsv = tmp_path / "t.tsv"
    tsv.write_text("text\tlabel\nhello there\t1\nbye now\t0\n\t1\n")
    assert read_texts(tsv) == ["hello there", "bye now"]
    assert len(read_texts(tsv, limit=1, seed=3)) == 1
    with pytest.raises(ValueError, match="no column 'sentence'"):
        read_texts(tsv, column="sentence")
    txt = tmp_path / "t.txt"
    txt.write_text("one\n\ntwo\n")
    assert read_texts(txt) == ["one", "two"]
    with pytest.raises(FileNotFoundError):
        read_texts(tmp_path / "missing.txt")


def test_training_lowers_the_validation_loss(corpus):
    torch.manual_seed(0)
    model = build_model(MODEL.__class__(**{**MODEL.to_dict(), "vocab_size": corpus.vocab_size}))
    before = evaluate_lm(model, corpus, TRAIN)
    assert before == pytest.approx(math.log(corpus.vocab_size), rel=1e-4)  # zero readout: uniform
    out = train_lm(
        model, corpus, LMTrainConfig(lr=2**-5, steps=40, batch_size=8, seq_len=8, eval_windows=16)
    )
    assert not out.diverged and out.val_loss < before - 0.3


def test_divergence_is_reported_not_hidden(corpus):
    torch.manual_seed(0)
    cfg = MODEL.__class__(**{**MODEL.to_dict(), "vocab_size": corpus.vocab_size})
    out = train_lm(
        build_model(cfg),
        corpus,
        LMTrainConfig(lr=1e4, steps=30, batch_size=4, seq_len=8, optimizer="sgd"),
    )
    assert out.diverged and math.isinf(out.val_loss)


def test_mutransfer_runs_all_steps_and_accounts_energy(corpus):
    cfg = MutransferConfig(
        model=MODEL,
        proxy_width=8,
        target_width=16,
        log2_lrs=(-7.0, -5.0),
        train=TRAIN,
        verify_octaves=(-2.0, 0.0, 2.0),
    )
    seen = []
    result = mutransfer(corpus, cfg, progress=seen.append)
    stages = [t.stage for t in result.trials]
    assert stages == ["proxy", "proxy", "transfer", "verify", "verify"]
    assert seen == result.trials
    assert result.transferred.log2_lr in (-7.0, -5.0)
    proxy = [t for t in result.trials if t.stage == "proxy"]
    assert result.transferred == min(proxy, key=lambda t: t.val_loss).hp
    assert all(t.energy_j > 0 and t.cpu_time_s > 0 for t in result.trials)
    assert result.proxy_energy_j == pytest.approx(sum(t.energy_j for t in proxy))
    target = [t for t in result.trials if t.width == 16]
    assert result.direct_energy_basis.startswith("extrapolated")
    assert result.direct_energy_j == pytest.approx(sum(t.energy_j for t in target) / 3 * 2)
    assert result.tuning_energy_ratio == pytest.approx(
        result.proxy_energy_j / result.direct_energy_j
    )
    # The gap is measured against the best target run seen, which includes the transfer itself.
    assert result.loss_gap_pct >= 0.0
    d = result.to_dict()
    assert d["loss_gap_pct"] == result.loss_gap_pct and len(d["trials"]) == 5


def test_direct_sweep_is_measured_and_reuses_identical_runs(corpus):
    cfg = MutransferConfig(
        model=MODEL,
        proxy_width=8,
        target_width=16,
        log2_lrs=(-7.0, -5.0),
        train=TRAIN,
        verify_octaves=(),
        direct_sweep=True,
    )
    result = mutransfer(corpus, cfg)
    direct = [t for t in result.trials if t.stage == "direct"]
    assert len(direct) == 2
    reused = [t for t in direct if t.reused_from]
    assert len(reused) == 1 and reused[0].reused_from == "transfer" and reused[0].energy_j == 0
    transfer = result.trials[2]
    assert reused[0].val_loss == transfer.val_loss
    # The reused run's energy is still part of what a direct sweep costs.
    fresh = [t for t in direct if not t.reused_from][0]
    assert result.direct_energy_j == pytest.approx(fresh.energy_j + transfer.energy_j)
    assert result.direct_energy_basis.startswith("measured")


def test_mutransfer_settings_errors():
    with pytest.raises(ValueError, match="larger than the proxy"):
        MutransferConfig(model=MODEL, proxy_width=16, target_width=16, log2_lrs=(-6.0,))
    with pytest.raises(ValueError, match="kind 'lm'"):
        MutransferConfig(
            model=MupModelConfig(kind="mlp", width=8, base_width=8),
            proxy_width=8,
            target_width=16,
            log2_lrs=(-6.0,),
        )
    with pytest.raises(ValueError, match="below the base width"):
        MutransferConfig(model=MODEL, proxy_width=4, target_width=16, log2_lrs=(-6.0,))
    with pytest.raises(ValueError, match="at least one value"):
        MutransferConfig(model=MODEL, proxy_width=8, target_width=16, log2_lrs=())
