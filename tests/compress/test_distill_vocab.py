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
    summary = vocab.apply(model, VocabConfig(keep=KEEP, bits=8))
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


@pytest.mark.parametrize("bits", [32, 8, 4])
def test_a_pruned_state_dict_loads_into_a_restored_fresh_model(bits):
    model = tiny_bert()
    vocab.apply(model, VocabConfig(keep=KEEP, bits=bits, group_size=16))
    description = vocab.describe(model)
    fresh = vocab.restore(tiny_bert(seed=9), description)
    fresh.load_state_dict(model.state_dict())
    ids = torch.randint(1, 60, (2, 5))
    assert torch.equal(fresh(input_ids=ids).logits, model(input_ids=ids).logits)
    with pytest.raises(ValueError, match="no CompactEmbedding"):
        vocab.describe(tiny_bert())


def test_a_model_saved_with_the_old_int8_flag_restores():
    model = tiny_bert()
    vocab.apply(model, VocabConfig(keep=KEEP, bits=8))
    old = {k: v for k, v in vocab.describe(model).items() if k not in ("bits", "group_size")}
    fresh = vocab.restore(tiny_bert(seed=9), old | {"int8": True})
    fresh.load_state_dict(model.state_dict())
    assert fresh.bert.embeddings.word_embeddings.bits == 8


def _four_bit(table, group_size):
    model = tiny_bert()
    model.bert.embeddings.word_embeddings.weight.data.copy_(table)
    summary = vocab.apply(model, VocabConfig(keep=KEEP, bits=4, group_size=group_size))
    emb = model.bert.embeddings.word_embeddings
    return emb, emb(torch.arange(30)), summary


def test_four_bit_rows_reproduce_representable_values_column_for_column():
    # Each group of 8 holds k * s for k in -7..7 with 7 * s reached: the codes are exact, so any
    # mix-up of the two nibbles, of the groups or of the rows would show.
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(-7, 8, (60, 32), generator=g).float()
    codes[:, ::8] = 7.0
    scales = 2.0 ** -torch.randint(2, 6, (60, 4), generator=g).float()
    table = (codes.unflatten(1, (4, 8)) * scales[..., None]).flatten(1)
    emb, got, summary = _four_bit(table, group_size=8)
    assert torch.equal(got, table[:30])
    assert emb.rows_int4.dtype == torch.uint8 and emb.rows_int4.shape == (30, 16)
    assert emb.group_scale.dtype == torch.float16 and emb.group_scale.shape == (30, 4)
    assert summary["bits"] == 4


def test_four_bit_rows_clip_no_worse_than_absmax_and_shrink_the_table():
    table = torch.randn(60, 32, generator=torch.Generator().manual_seed(1))
    table[3, 5] = 12.0  # an outlier: clipping pays off in its group
    _, got, summary = _four_bit(table, group_size=16)
    groups = table[:30].unflatten(1, (2, 16))
    absmax = (groups.abs().amax(-1, keepdim=True) / 7).half().float()
    naive = (torch.round(groups / absmax).clamp(-7, 7) * absmax).flatten(1)
    err, naive_err = ((got - table[:30]) ** 2).sum(), ((naive - table[:30]) ** 2).sum()
    assert err < naive_err  # the outlier's group is clipped, the others are no worse
    assert ((got - table[:30]).unflatten(1, (2, 16)) ** 2).sum(-1).le(
        ((naive - table[:30]).unflatten(1, (2, 16)) ** 2).sum(-1) + 1e-6).all()
    assert err / (table[:30] ** 2).sum() < 0.02  # 15 levels: about 1 % of the energy lost
    model8 = tiny_bert()
    eight = vocab.apply(model8, VocabConfig(keep=KEEP, bits=8))
    rows8 = eight["table_bytes_after"] - 60 * 2  # less the int16 id map
    rows4 = summary["table_bytes_after"] - 60 * 2
    assert rows4 == 30 * 16 + 30 * 2 * 2 and rows8 == 30 * 32 + 30 * 4


def test_four_bit_groups_shrink_to_a_divisor_of_the_width():
    model = tiny_bert()  # width 32
    vocab.apply(model, VocabConfig(keep=KEEP, bits=4, group_size=24))
    emb = model.bert.embeddings.word_embeddings
    assert emb.group_size == 16 and emb.group_scale.shape == (30, 2)
    fresh = vocab.restore(tiny_bert(seed=9), vocab.describe(model))
    fresh.load_state_dict(model.state_dict())  # the description carries the group used
    wide = tiny_bert()
    vocab.apply(wide, VocabConfig(keep=KEEP, bits=4, group_size=128))
    assert wide.bert.embeddings.word_embeddings.group_size == 32  # the whole row
    odd = torch.nn.Module()
    odd.embed = torch.nn.Embedding(10, 7)
    with pytest.raises(ValueError, match="width 7 is odd"):
        vocab.apply(odd, VocabConfig(keep=(1, 2), bits=4))
    prime = torch.nn.Module()
    prime.embed = torch.nn.Embedding(10, 2 * 97)  # only groups of 2 divide it: refused
    with pytest.raises(ValueError, match="no group of 16..128"):
        vocab.apply(prime, VocabConfig(keep=(1, 2), bits=4))
    with pytest.raises(ValueError, match="bits must be"):
        VocabConfig(keep=KEEP, bits=16)  # type: ignore[arg-type]


def test_four_bit_rows_are_packed_low_nibble_first_with_an_offset_of_eight():
    # The byte layout is what saved files hold: pinned, so that a swap made in both packing and
    # unpacking cannot pass unnoticed. One group of 16 entries, scale 1 (7 is reached).
    row = torch.tensor([[-7.0, 7.0, 0.0, 1.0, -1.0, 2.0] + [0.0] * 10])
    packed, scale = vocab._int4_rows(row, 16)
    assert packed[0, :3].tolist() == [1 | (15 << 4), 8 | (9 << 4), 7 | (10 << 4)]
    assert scale.tolist() == [[1.0]]


def test_a_saved_transform_log_with_the_old_int8_key_reads_back():
    from lowcarb.models.transforms import record_from_json

    old = {"transform": "vocab", "config": {"keep": [0, 1], "unk_id": None, "always": [],
                                            "unknown": "nearest", "int8": True},
           "structure": {"module": "bert.embeddings.word_embeddings", "vocab": 60, "rows": 2,
                         "dim": 32, "int8": True}}
    entry = record_from_json(old)
    assert entry.config.bits == 8 and entry.config.keep == (0, 1)
    assert record_from_json({**old, "config": {**old["config"], "int8": False}}).config.bits == 32


def test_quantized_rows_refuse_a_table_that_is_not_finite():
    model = tiny_bert()
    model.bert.embeddings.word_embeddings.weight.data[3, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        vocab.apply(model, VocabConfig(keep=KEEP, bits=4))
    vocab.apply(tiny_bert(), VocabConfig(keep=KEEP, bits=4))  # finite: fine


def test_four_bit_rows_refuse_entries_beyond_fp16_scales():
    model = tiny_bert()
    model.bert.embeddings.word_embeddings.weight.data[2, 0] = 1e6  # scale 1e6 / 7 > fp16's max
    with pytest.raises(ValueError, match="too large for an fp16 scale"):
        vocab.apply(model, VocabConfig(keep=KEEP, bits=4, group_size=16))
    vocab.apply(model, VocabConfig(keep=KEEP, bits=8))  # int8 rows keep fp32 scales
