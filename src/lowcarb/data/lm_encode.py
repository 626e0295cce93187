"""Rows -> token ids with labels on the response tokens only, and the batches a causal LM reads.

A training batch is `{"input_ids", "attention_mask", "labels"}` (B, T), padded on the right;
`labels` is -100 (ignored by the loss) on prompt tokens, template tokens around user turns, and
padding, and the token id on every token the model should learn: a response and the
end-of-sequence token after it, every assistant turn of a conversation (with the template's
end-of-turn marker, so the model learns to stop), or every token of plain text.

Prompt/response rows are written either through the tokenizer's chat template (as a user turn and
an assistant turn) or as plain text: the prompt's tokens, then the response's tokens, then
end-of-sequence (`data.prompt_format`: `auto` uses the chat template when the tokenizer has one).
Prompt and response are tokenized separately and joined, so the prompt the model is trained on is
token for token the prompt greedy generation starts from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lowcarb.data.lm_rows import Chat, LMRow, LMSplit, PlainText, PromptResponse
from lowcarb.errors import DataError

IGNORE_INDEX = -100
PROMPT_FORMATS = ("auto", "chat", "plain")


@dataclass(frozen=True)
class EncodedExample:
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]  # IGNORE_INDEX where the model is not taught
    # What greedy generation starts from and should produce, for rows that end with a response.
    prompt_ids: tuple[int, ...] | None = None
    reference: str | None = None

    @property
    def target_tokens(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


@dataclass(frozen=True)
class EncodedSplit:
    examples: tuple[EncodedExample, ...]
    source: str
    truncated: int = 0  # rows cut at max_length
    dropped: int = 0  # rows with no response token left within max_length (not used)

    def __len__(self) -> int:
        return len(self.examples)


def uses_chat_template(tokenizer: Any, prompt_format: str) -> bool:
    """Whether prompt/response rows go through the tokenizer's chat template."""
    if prompt_format not in PROMPT_FORMATS:
        raise DataError(f"data.prompt_format must be one of {list(PROMPT_FORMATS)}, got {prompt_format!r}")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if prompt_format == "chat" and not has_template:
        raise DataError(
            "data.prompt_format is 'chat' but the tokenizer has no chat template; use 'plain' or "
            "'auto', or a model whose tokenizer_config has a chat_template"
        )
    return has_template and prompt_format != "plain"


def render_chat(tokenizer: Any, messages: Sequence[tuple[str, str]], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        [{"role": role, "content": content} for role, content in messages],
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
    )


def encode_split(split: LMSplit, tokenizer: Any, max_length: int, prompt_format: str = "auto") -> EncodedSplit:
    """Tokenize every row of `split` (batched per kind: fast tokenizers encode lists in parallel)."""
    if max_length < 2:
        raise DataError(f"data.max_length must be >= 2 for a causal LM, got {max_length}")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError("the tokenizer has no end-of-sequence token; a causal LM needs one to learn to stop")
    rows = list(split.rows)
    chat = uses_chat_template(tokenizer, prompt_format)
    if rows and isinstance(rows[0], Chat) and not getattr(tokenizer, "chat_template", None):
        raise DataError(
            f"{split.source}: rows with 'messages' need a tokenizer with a chat template, and this "
            "model's has none; write {prompt, response} rows instead"
        )
    if rows and isinstance(rows[0], PlainText):
        pieces = _encode_texts(rows, tokenizer, max_length, eos)  # type: ignore[arg-type]
        return EncodedSplit(tuple(pieces), split.source)
    if rows and isinstance(rows[0], PromptResponse) and not chat:
        full = [_encode_plain_pair(r, p, q, eos) for r, p, q in _pair_ids(rows, tokenizer)]  # type: ignore[arg-type]
    else:
        full = _encode_chats([_as_chat(r) for r in rows], tokenizer)
    examples, truncated, dropped = [], 0, 0
    for ex in full:
        if len(ex.input_ids) > max_length:
            truncated += 1
            ex = EncodedExample(ex.input_ids[:max_length], ex.labels[:max_length], ex.prompt_ids, ex.reference)
            if ex.target_tokens == 0:
                dropped += 1
                continue
        examples.append(ex)
    if not examples:
        raise DataError(
            f"{split.source}: no row keeps a response token within data.max_length={max_length}; "
            "raise data.max_length"
        )
    return EncodedSplit(tuple(examples), split.source, truncated, dropped)


def _as_chat(row: LMRow) -> Chat:
    if isinstance(row, Chat):
        return row
    assert isinstance(row, PromptResponse)
    system = (("system", row.system),) if row.system is not None else ()
    return Chat((*system, ("user", row.prompt), ("assistant", row.response)), row.where)


def _pair_ids(rows: list[PromptResponse], tokenizer: Any) -> list[tuple[PromptResponse, list[int], list[int]]]:
    texts = [r.prompt if r.system is None else f"{r.system}\n{r.prompt}" for r in rows]
    prompts = tokenizer(texts, add_special_tokens=True)["input_ids"]
    responses = tokenizer([r.response for r in rows], add_special_tokens=False)["input_ids"]
    return list(zip(rows, prompts, responses, strict=True))


def _encode_plain_pair(row: PromptResponse, prompt: list[int], response: list[int], eos: int) -> EncodedExample:
    target = [*response, eos]
    return EncodedExample(
        tuple(prompt) + tuple(target),
        (IGNORE_INDEX,) * len(prompt) + tuple(target),
        tuple(prompt) if prompt else None,  # nothing to condition generation on
        row.response if prompt else None,
    )


def assistant_spans(tokenizer: Any, chat: Chat) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character span of every assistant turn in it.

    A turn's span runs from the end of the conversation before it (rendered with the generation
    prompt, e.g. "<|im_start|>assistant\\n") to the end of the conversation including it, so it
    holds the turn's text and the template's end-of-turn marker.
    """
    messages = chat.messages
    full = render_chat(tokenizer, messages, add_generation_prompt=False)
    spans = []
    for i, (role, _) in enumerate(messages):
        if role != "assistant":
            continue
        before = render_chat(tokenizer, messages[:i], add_generation_prompt=True)
        upto = render_chat(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if not (upto.startswith(before) and full.startswith(upto)):
            raise DataError(
                f"{chat.where}: the chat template renders earlier turns differently once later "
                "turns follow, so the assistant's tokens cannot be located; use {prompt, response} "
                "rows with data.prompt_format: plain"
            )
        spans.append((len(before), len(upto)))
    return full, spans


def _encode_chats(chats: list[Chat], tokenizer: Any) -> list[EncodedExample]:
    rendered = [assistant_spans(tokenizer, c) for c in chats]
    try:
        encoded = tokenizer(
            [text for text, _ in rendered], add_special_tokens=False, return_offsets_mapping=True
        )
    except NotImplementedError:
        raise DataError(
            "chat-template data needs a fast tokenizer (one with a tokenizer.json); save the model's "
            "tokenizer with tokenizers installed, or use data.prompt_format: plain"
        ) from None
    out = []
    for chat, (_, spans), ids, offsets in zip(
        chats, rendered, encoded["input_ids"], encoded["offset_mapping"], strict=True
    ):
        labels = [IGNORE_INDEX] * len(ids)
        first_of_last = len(ids)
        for span_index, (lo, hi) in enumerate(spans):
            for j, (start, end) in enumerate(offsets):
                if end > start and lo <= start < hi:
                    labels[j] = ids[j]
                    if span_index == len(spans) - 1:
                        first_of_last = min(first_of_last, j)
        reference = chat.reference
        prompt = tuple(ids[:first_of_last]) if reference is not None else None
        out.append(EncodedExample(tuple(ids), tuple(labels), prompt, reference))
    return out


def _encode_texts(rows: list[PlainText], tokenizer: Any, max_length: int, eos: int) -> list[EncodedExample]:
    # Long documents are cut into consecutive windows (every token is learned once), not truncated.
    ids_list = tokenizer([r.text for r in rows], add_special_tokens=True)["input_ids"]
    out = []
    for ids in ids_list:
        ids = [*ids, eos]
        for start in range(0, len(ids), max_length):
            window = tuple(ids[start : start + max_length])
            if len(window) >= 2:  # a single token predicts nothing
                out.append(EncodedExample(window, window))
    return out


# ---------------------------------------------------------------------------------------------
# batches
# ---------------------------------------------------------------------------------------------


def collate_training(examples: Sequence[EncodedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded (B, T) input_ids / attention_mask / labels."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor(e.labels)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}

