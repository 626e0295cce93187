"""Models: small reference models (CNN, MLP, text transformer) and Hugging Face classifiers.

    handle = build_model(ModelConfig(name="minilm"), bundle)   # handle.model, handle.tokenizer
    save_model(handle, "out/model"); handle2 = load_model("out/model")
"""

from lowcarb.models.build import build_model, build_reference_model
from lowcarb.models.byte_tokenizer import ByteTokenizer
from lowcarb.models.cnn import DigitsCNN
from lowcarb.models.config import BUILTIN_MODELS, ModelConfig
from lowcarb.models.handle import ModelHandle
from lowcarb.models.hf import load_hf_classifier, load_minilm_tokenizer, minilm_folder
from lowcarb.models.mlp import MLP
from lowcarb.models.serialize import load_model, save_model
from lowcarb.models.transformer import TextTransformer

__all__ = [
    "BUILTIN_MODELS",
    "MLP",
    "ByteTokenizer",
    "DigitsCNN",
    "ModelConfig",
    "ModelHandle",
    "TextTransformer",
    "build_model",
    "build_reference_model",
    "load_hf_classifier",
    "load_minilm_tokenizer",
    "load_model",
    "minilm_folder",
    "save_model",
]
