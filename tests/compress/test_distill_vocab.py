"""Vocabulary pruning: exact on kept tokens, nearest/unk for dropped ones, int8 rows, smaller files."""

import pytest
import torch

from lowcarb.compress.distill import vocab
from lowcarb.compress.distill.vocab import CompactEmbedding, VocabConfig
from lowcarb.train import size_on_disk_bytes
from tests.compress.test_distill_losses import tiny_bert

KEEP = tuple(range(0, 30))  # tiny_bert has 60 tokens; keep the first half


def test_kept_tokens_give_exactly_the_same_model_output():
    model = tiny_bert()
    ids = torch.randint(1, 30, (3, 8))
    before = model(input_ids=ids).logits
    summary = vocab.apply(model, VocabConfig(keep=KEEP, unk_id=1))
    assert isinstance(model.bert.embeddings.word_embeddings, CompactEmbedding)
    assert torch.allclose(model(input_ids=ids).logits, before, atol=1e-6)
    assert summary["vocab_before"] == 60 and summary["vocab_after"] == 30
    assert summary.params_before - summary.params_after == 30 * 32


def test_dropped_tokens_map_to_the_nearest_kept_embedding_or_to_unk():
    model = tiny_bert()
    table = model.bert.embeddings.word_embeddings.weight.detach().clone()
    table[45] = table[7] * 3.0  # token 45 (dropped) points the same way as token 7 (kept)
    model.bert.embeddings.word_embeddings.weight.data.copy_(table)
    vocab.apply(model, VocabConfig(keep=KEEP, unknown="nearest"))
    emb = model.bert.embeddings.word_embeddings
    assert torch.equal(emb(torch.tensor([45])), table[7:8])
    model = tiny_bert()
    table = model.bert.embeddings.word_embeddings.weight.detach().clone()
    vocab.apply(model, VocabConfig(keep=KEEP, unk_id=3, unknown="unk"))
    assert torch.equal(model.bert.embeddings.word_embeddings(torch.tensor([45, 59])), table[[3, 3]])


def test_int8_rows_are_close_and_the_file_shrinks():
    model = tiny_bert()
    table = model.bert.embeddings.word_embeddings.weight.detach().clone()
    size_before = size_on_disk_bytes(model)
    summary = vocab.apply(model, VocabConfig(keep=KEEP, int8=True))
    got = model.bert.embeddings.word_embeddings(torch.arange(30))
    # Symmetric int8 per row: error at most half a step (scale / 2) per entry.
    step = table[:30].abs().amax(dim=1, keepdim=True) / 127
    assert ((got - table[:30]).abs() <= step / 2 + 1e-7).all()
    assert summary["table_bytes_after"] < summary["table_bytes_before"] / 2
    saved = size_before - size_on_disk_bytes(model)
    assert saved >= 60 * 32 * 4 - summary["table_bytes_after"] - 512  # allow safetensors headers


def test_token_ids_in_collects_the_texts_tokens_and_specials():
    from lowcarb.models import load_minilm_tokenizer

    tok = load_minilm_tokenizer()
    ids = vocab.token_ids_in(["a good movie", "bad"], tok)
    assert set(tok("a good movie bad")["input_ids"]) <= set(ids)
    assert tok.pad_token_id in ids and tok.unk_token_id in ids
    assert len(ids) < 15


def test_keep_first_adds_the_leading_vocabulary_ids():
    from lowcarb.models import load_minilm_tokenizer

    tok = load_minilm_tokenizer()
    texts = ["a thyroid movie"]
    plain = vocab.keep_for_texts(texts, tok)
    wide = vocab.keep_for_texts(texts, tok, keep_first=2100)
    assert set(range(2100)) <= set(wide.keep) and set(plain.keep) <= set(wide.keep)
    assert tok.convert_tokens_to_ids("thyroid") in wide.keep  # the text's own tokens stay
    assert list(wide.keep) == sorted(set(wide.keep))
    capped = vocab.keep_for_texts(texts, tok, keep_first=10**6)
    assert len(capped.keep) == tok.vocab_size
    with pytest.raises(ValueError, match="keep_first"):
        vocab.keep_for_texts(texts, tok, keep_first=-1)


def test_vocab_errors_are_clear():
    with pytest.raises(ValueError, match="empty"):
        VocabConfig(keep=())
    with pytest.raises(ValueError, match="unk_id"):
        VocabConfig(keep=(1,), unknown="unk")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        vocab.apply(tiny_bert(), VocabConfig(keep=(1, 999)))
    with pytest.raises(ValueError, match="word-embedding"):
        vocab.apply(torch.nn.Linear(2, 2), VocabConfig(keep=(1,)))


@pytest.mark.parametrize("int8", [False, True])
def test_a_pruned_state_dict_loads_into_a_restored_fresh_model(int8):
    model = tiny_bert()
    vocab.apply(model, VocabConfig(keep=KEEP, int8=int8))
    description = vocab.describe(model)
    fresh = vocab.restore(tiny_bert(seed=9), description)
    fresh.load_state_dict(model.state_dict())
    ids = torch.randint(1, 60, (2, 5))
    assert torch.equal(fresh(input_ids=ids).logits, model(input_ids=ids).logits)
    with pytest.raises(ValueError, match="no CompactEmbedding"):
        vocab.describe(tiny_bert())
