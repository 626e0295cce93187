import pytest
import torch

from lowcarb.data import DataConfig, load_data


@pytest.fixture(scope="session")
def digits():
    return load_data(DataConfig())


@pytest.fixture(scope="session")
def text_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text")
    path = folder / "train.tsv"
    rows = [(f"a {'great' if i % 2 else 'awful'} film number {i}", "pos" if i % 2 else "neg") for i in range(30)]
    path.write_text("text\tlabel\n" + "".join(f"{t}\t{lab}\n" for t, lab in rows))
    return load_data(DataConfig(train=path, max_length=32))


@pytest.fixture(scope="session")
def tiny_hf_folder(tmp_path_factory):
    """A tiny randomly initialised BERT classifier folder with MiniLM's tokenizer (no download)."""
    from transformers import BertConfig, BertForSequenceClassification

    from lowcarb.models import load_minilm_tokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    tok = load_minilm_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, num_labels=3,
    )
    BertForSequenceClassification(config).save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder
