"""A tokenizer-free baseline: UTF-8 bytes are the tokens (no vocabulary to build or ship)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

PAD_ID = 0
CLS_ID = 1
BYTE_OFFSET = 2  # byte b has id b + 2
VOCAB_SIZE = 256 + BYTE_OFFSET


class ByteTokenizer:
    """Called like a Hugging Face tokenizer, so loaders treat both the same way."""

    vocab_size = VOCAB_SIZE
    pad_token_id = PAD_ID

    def encode(self, text: str, max_length: int) -> list[int]:
        # A leading [CLS]-like id gives every sequence at least one token (empty text is legal).
        ids = [CLS_ID] + [b + BYTE_OFFSET for b in text.encode("utf-8")]
        return ids[:max_length]

    def __call__(
        self,
        texts: str | Sequence[str],
        padding: bool = True,
        truncation: bool = True,
        max_length: int = 128,
        return_tensors: str = "pt",
    ) -> dict[str, torch.Tensor]:
        if return_tensors != "pt":
            raise ValueError(f"ByteTokenizer returns torch tensors only (return_tensors='pt'), got {return_tensors!r}")
        if isinstance(texts, str):
            texts = [texts]
        limit = max_length if truncation else 1 << 30
        encoded = [self.encode(t, limit) for t in texts]
        width = max(len(e) for e in encoded) if padding else None
        if width is None and len({len(e) for e in encoded}) > 1:
            raise ValueError("texts of different lengths need padding=True")
        width = width or len(encoded[0])
        input_ids = torch.full((len(encoded), width), PAD_ID, dtype=torch.long)
        attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, ids in enumerate(encoded):
            input_ids[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def decode(self, ids: Sequence[int]) -> str:
        data = bytes(i - BYTE_OFFSET for i in ids if i >= BYTE_OFFSET)
        return data.decode("utf-8", errors="replace")
