"""Causal-LM data: reading rows, errors naming file/line/field, response-only labels, splits."""

import json

import pytest

from lowcarb.data import DataConfig
from lowcarb.data.lm import load_lm_data
from lowcarb.data.lm_encode import IGNORE_INDEX, assistant_spans, encode_split
from lowcarb.data.lm_generated import GENERATED_SIZES, generated_splits
from lowcarb.data.lm_rows import Chat, LMSplit, PlainText, PromptResponse, read_lm_file
from lowcarb.errors import DataError
from tests.lm_tiny import tiny_tokenizer


def _jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _targets(example):
    return [t for t in example.labels if t != IGNORE_INDEX]


# --- reading ---------------------------------------------------------------------------------


def test_reads_the_three_kinds_of_rows(tmp_path):
    pairs = read_lm_file(_jsonl(tmp_path / "p.jsonl", [{"prompt": "a", "response": "b", "id": 1}]))
    chats = read_lm_file(_jsonl(tmp_path / "c.jsonl", [{"messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]))  # fmt: skip
    (tmp_path / "t.txt").write_text("first line\n\n  \nsecond line\n")
    texts = read_lm_file(tmp_path / "t.txt")
    (tmp_path / "t.csv").write_text('prompt,response\n"multi\nline",yes\n')
    table = read_lm_file(tmp_path / "t.csv")
    assert pairs.rows == (PromptResponse("a", "b", f"{tmp_path / 'p.jsonl'}:1"),)
    assert chats.rows[0].messages == (("user", "hi"), ("assistant", "hello"))
    assert chats.rows[0].reference == "hello"
    assert [r.text for r in texts.rows] == ["first line", "second line"]
    assert texts.rows[1].where.endswith("t.txt:4")
    assert table.rows == (PromptResponse("multi\nline", "yes", f"{tmp_path / 't.csv'}:3"),)


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", r"bad.jsonl:2: not valid JSON"),
        ('["a list"]', r"bad.jsonl:2: expected a JSON object, got list"),
        ('{"prompt": "p"}', r"bad.jsonl:2: field 'response' is missing"),
        ('{"prompt": "p", "response": 3}', r"bad.jsonl:2: field 'response' must be a string, got a number"),
        ('{"prompt": "p", "response": "  "}', r"bad.jsonl:2: field 'response' is empty"),
        ('{"messages": []}', r"bad.jsonl:2: field 'messages' must be a non-empty list"),
        ('{"messages": [{"role": "bot", "content": "x"}]}', r"bad.jsonl:2: field 'messages\[0\].role'"),
        ('{"messages": [{"role": "user", "content": null}]}', r"'messages\[0\].content' must be a string, got null"),
        ('{"messages": [{"role": "user", "content": "x"}]}', r"bad.jsonl:2: .*no assistant message"),
        ('{"text": "plain"}', r"bad.jsonl:2: a text row in a file of prompt/response rows"),
        ('{"question": "q"}', r"bad.jsonl:2: no 'messages', no 'prompt'/'response' and no 'text' field"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path, line, message):
    path = _jsonl(tmp_path / "bad.jsonl", ['{"prompt": "ok", "response": "fine"}', line])
    with pytest.raises(DataError, match=message):
        read_lm_file(path)


def test_bad_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_lm_file(tmp_path / "missing.jsonl")
    (tmp_path / "x.parquet").write_bytes(b"")
    with pytest.raises(DataError, match="unsupported file type"):
        read_lm_file(tmp_path / "x.parquet")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no rows"):
        read_lm_file(tmp_path / "empty.jsonl")
    (tmp_path / "cols.csv").write_text("question,answer\nq,a\n")
    with pytest.raises(DataError, match="no column 'text'"):
        read_lm_file(tmp_path / "cols.csv")


# --- labels on the response tokens only ------------------------------------------------------


def test_plain_pair_teaches_the_response_and_end_of_sequence_only():
    tok = tiny_tokenizer(chat_template=False)
    split = LMSplit((PromptResponse("the film is", " great", "x:1"),))
    (ex,) = encode_split(split, tok, max_length=64, prompt_format="auto").examples
    prompt = tok("the film is")["input_ids"]
    response = tok(" great", add_special_tokens=False)["input_ids"]
    assert list(ex.input_ids) == prompt + response + [tok.eos_token_id]
    assert list(ex.labels) == [IGNORE_INDEX] * len(prompt) + response + [tok.eos_token_id]
    assert list(ex.prompt_ids) == prompt and ex.reference == " great"


def test_chat_template_teaches_every_assistant_turn_and_its_end_marker():
    tok = tiny_tokenizer()
    chat = Chat((("system", "be brief"), ("user", "hi"), ("assistant", "hello world"),
                 ("user", "and?"), ("assistant", "positive")), "x:1")  # fmt: skip
    (ex,) = encode_split(LMSplit((chat,)), tok, max_length=256).examples
    taught = tok.decode(_targets(ex))
    assert taught == "hello world<|im_end|>\npositive<|im_end|>\n"
    # The generation prompt is everything before the last answer, ending with the assistant header.
    assert tok.decode(list(ex.prompt_ids)).endswith("and?<|im_end|>\n<|im_start|>assistant\n")
    assert ex.reference == "positive"
    full, spans = assistant_spans(tok, chat)
    assert [full[a:b] for a, b in spans] == ["hello world<|im_end|>\n", "positive<|im_end|>\n"]


def test_pairs_go_through_the_chat_template_when_there_is_one():
    tok = tiny_tokenizer()
    split = LMSplit((PromptResponse("hello", "positive", "x:1"),))
    (chat,) = encode_split(split, tok, 128, "auto").examples
    (plain,) = encode_split(split, tok, 128, "plain").examples
    assert tok.decode(_targets(chat)) == "positive<|im_end|>\n"
    assert tok.decode(list(chat.input_ids)).startswith("<|im_start|>user\nhello")
    assert tok.decode(_targets(plain)) == "positive<|im_end|>"
    with pytest.raises(DataError, match="no chat template"):
        encode_split(split, tiny_tokenizer(chat_template=False), 128, "chat")
    with pytest.raises(DataError, match="need a tokenizer with a chat template"):
        encode_split(LMSplit((Chat((("user", "a"), ("assistant", "b"))),)), tiny_tokenizer(chat_template=False), 128)


def test_a_system_instruction_is_a_system_turn_or_a_line_before_the_prompt(tmp_path):
    path = _jsonl(tmp_path / "s.jsonl", [{"system": "Be brief.", "prompt": "hello", "response": "hi"}])
    split = read_lm_file(path)
    assert split.rows[0].system == "Be brief."
    (chat,) = encode_split(split, tiny_tokenizer(), 128).examples
    assert tiny_tokenizer().decode(list(chat.prompt_ids)).startswith("<|im_start|>system\nBe brief.<|im_end|>")
    plain_tok = tiny_tokenizer(chat_template=False)
    (plain,) = encode_split(split, plain_tok, 128).examples
    assert plain_tok.decode(list(plain.prompt_ids)) == "Be brief.\nhello"
    bad = _jsonl(tmp_path / "b.jsonl", [{"system": 1, "prompt": "p", "response": "r"}])
    with pytest.raises(DataError, match="b.jsonl:1: field 'system' must be a string"):
        read_lm_file(bad)


def test_plain_text_is_learned_in_full_and_cut_into_windows():
    tok = tiny_tokenizer()
    text = "hello world " * 30
    (row,) = [PlainText(text, "t.txt:1")]
    examples = encode_split(LMSplit((row,)), tok, max_length=16).examples
    ids = tok(text)["input_ids"] + [tok.eos_token_id]
    assert [t for e in examples for t in e.input_ids] == ids[: sum(len(e.input_ids) for e in examples)]
    assert all(e.labels == e.input_ids and len(e.input_ids) <= 16 for e in examples)
    assert all(e.prompt_ids is None for e in examples)


def test_rows_whose_response_does_not_fit_are_dropped_and_counted():
    tok = tiny_tokenizer(chat_template=False)
    long_prompt = PromptResponse("hello world " * 20, "yes", "x:1")
    short = PromptResponse("hi", "yes", "x:2")
    encoded = encode_split(LMSplit((long_prompt, short)), tok, max_length=8)
    assert encoded.truncated == 1 and encoded.dropped == 1 and len(encoded) == 1
    with pytest.raises(DataError, match="raise data.max_length"):
        encode_split(LMSplit((long_prompt,)), tok, max_length=8)


# --- bundles, splits, batches ----------------------------------------------------------------


def test_generated_task_is_seeded_disjoint_and_exact():
    a, b, c = generated_splits(0), generated_splits(0), generated_splits(1)
    assert a["train"].rows == b["train"].rows and a["train"].rows != c["train"].rows
    assert {k: len(v) for k, v in a.items()} == GENERATED_SIZES
    prompts = {name: {r.prompt for r in split.rows} for name, split in a.items()}
    assert not prompts["train"] & prompts["test"] and not prompts["dev"] & prompts["test"]
    row = a["test"].rows[0]
    assert row.prompt.startswith("Rewrite the date") and row.response.strip() == row.response


def test_load_splits_files_with_a_seed(tmp_path):
    rows = [{"prompt": f"p{i}", "response": f"r{i}"} for i in range(50)]
    path = _jsonl(tmp_path / "train.jsonl", rows)
    config = DataConfig(train=path, dev_fraction=0.2, test_fraction=0.1, seed=3, max_length=32)
    one, two = load_lm_data(config), load_lm_data(config)
    assert one.sizes() == {"train": 35, "dev": 10, "test": 5}
    assert one.dev.rows == two.dev.rows
    seen = [r.prompt for split in (one.train, one.dev, one.test) for r in split.rows]
    assert sorted(seen) == sorted(r["prompt"] for r in rows)
    capped = load_lm_data(DataConfig(train=path, max_train_examples=7, max_length=32))
    assert len(capped.train) == 7


def test_loader_batches_pad_right_and_bucket_by_length(tmp_path):
    tok = tiny_tokenizer(chat_template=False)
    rows = [{"prompt": "hello " * (1 + i % 7), "response": "yes"} for i in range(40)]
    bundle = load_lm_data(DataConfig(train=_jsonl(tmp_path / "t.jsonl", rows), max_length=64))
    batches = list(bundle.loader("train", 8, shuffle=True, tokenizer=tok, seed=0))
    padded = sum(int((b["attention_mask"] == 0).sum()) for b in batches)
    unbucketed = list(bundle.loader("train", 8, shuffle=True, tokenizer=tok, seed=0, group_by_length=False))
    assert padded < sum(int((b["attention_mask"] == 0).sum()) for b in unbucketed)
    batch = batches[0]
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    pads = batch["attention_mask"] == 0
    assert (batch["labels"][pads] == IGNORE_INDEX).all() and (batch["input_ids"][pads] == tok.pad_token_id).all()
    # Right padding: every row's real tokens come first.
    assert (batch["attention_mask"].diff(dim=1) <= 0).all()
    assert bundle.encoded("train", tok) is bundle.encoded("train", tok)  # tokenized once
