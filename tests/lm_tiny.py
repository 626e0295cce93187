"""Tiny causal LMs for tests: a random Llama and a random GPT-2 saved to folders, and a tiny GGUF
written with the gguf package's writer, all sharing one byte-level BPE tokenizer trained here.

Built in a few seconds, no download; the tests load them through lowcarb's own loading code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)
CORPUS = [
    "Rewrite the date 2031-04-07 in the format Month D, YYYY. Answer with the date only.",
    "April 7, 2031", "07/04/2031", "7 April 2031", "the film is great", "the film is awful",
    "positive", "negative", "hello world", "What is the capital of France? Paris.",
] * 4  # fmt: skip
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def tiny_tokenizer(chat_template: bool = True, pad: bool = True):
    """A byte-level BPE tokenizer (~300 tokens) as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    core.train_from_iterator(CORPUS, trainer)
    kwargs = {"eos_token": "<|im_end|>", "bos_token": "<|im_start|>"}
    if pad:
        kwargs["pad_token"] = "<|endoftext|>"
    tok = PreTrainedTokenizerFast(tokenizer_object=core, **kwargs)
    if chat_template:
        tok.chat_template = CHATML
    return tok


def save_tiny_llama(folder: Path, seed: int = 0, tie: bool = True, layers: int = 2) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        tie_word_embeddings=tie, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, architectures=["LlamaForCausalLM"],
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def save_tiny_gpt2(folder: Path, seed: int = 0) -> Path:
    """GPT-2 with no padding token and no chat template (prompts are written as plain text)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = tiny_tokenizer(chat_template=False, pad=False)
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=128,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, architectures=["GPT2LMHeadModel"],
    )  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def _permute_for_gguf(weight: np.ndarray, heads: int) -> np.ndarray:
    # llama.cpp stores Q and K rows interleaved for its rotary kernel (convert_hf_to_gguf's
    # permute); transformers undoes it when it reads a llama GGUF.
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def write_tiny_gguf(llama_folder: Path, path: Path) -> Path:
    """The tiny Llama of `llama_folder` as a GGUF file (F32 tensors, gpt2-style BPE tokenizer)."""
    import gguf
    from transformers import AutoTokenizer, LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(llama_folder)
    tok = AutoTokenizer.from_pretrained(llama_folder)
    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    vocab = tok.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [" ".join(m) if isinstance(m, (tuple, list)) else m for m in _merges(tok)]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in SPECIALS else gguf.TokenType.NORMAL for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tok.bos_token_id)
    writer.add_eos_token_id(tok.eos_token_id)
    writer.add_pad_token_id(tok.pad_token_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML)
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        writer.add_tensor(f"blk.{i}.attn_norm.weight", state[p + "input_layernorm.weight"])
        writer.add_tensor(f"blk.{i}.attn_q.weight", _permute_for_gguf(state[p + "self_attn.q_proj.weight"], heads))
        writer.add_tensor(f"blk.{i}.attn_k.weight", _permute_for_gguf(state[p + "self_attn.k_proj.weight"], kv_heads))
        writer.add_tensor(f"blk.{i}.attn_v.weight", state[p + "self_attn.v_proj.weight"])
        writer.add_tensor(f"blk.{i}.attn_output.weight", state[p + "self_attn.o_proj.weight"])
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", state[p + "post_attention_layernorm.weight"])
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", state[p + "mlp.gate_proj.weight"])
        writer.add_tensor(f"blk.{i}.ffn_up.weight", state[p + "mlp.up_proj.weight"])
        writer.add_tensor(f"blk.{i}.ffn_down.weight", state[p + "mlp.down_proj.weight"])
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _merges(tok) -> list[str]:
    import json

    model = json.loads(tok.backend_tokenizer.to_str())["model"]
    return model["merges"]


# ---------------------------------------------------------------------------------------------
# fixtures (registered for the whole suite by tests/conftest.py's pytest_plugins)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_llama_folder(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_gpt2_folder(tmp_path_factory) -> Path:
    return save_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory, tiny_llama_folder) -> Path:
    return write_tiny_gguf(tiny_llama_folder, tmp_path_factory.mktemp("tiny-gguf") / "tiny-llama.F32.gguf")


@pytest.fixture(scope="session")
def tiny_tok():
    return tiny_tokenizer()
