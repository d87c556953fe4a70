"""A policy over any Hugging Face causal language model: a facade over :mod:`rlhf_env.lm`
(prompts, loading, LoRA, scoring) and :mod:`rlhf_env.backends` (sampling).

pi(response | prompt) is the model's probability of the response's tokens followed by
the token that ends a response (:mod:`rlhf_env.lm.chat`: the chat template's end of turn,
else EOS), at the policy's ``temperature`` (1: the model as it is). What is handled where:

* **prompts** (:class:`~rlhf_env.lm.chat.PromptEncoder`): a string or chat messages, the
  tokenizer's chat template applied with the generation prompt unless
  ``chat_template=False``; the prompt/response token boundary from the common prefix of
  prompt and prompt+response; a prompt cut from the left keeps its head (counted in
  :attr:`CausalLMPolicy.truncated`); every id of ``generation_config.eos_token_id``, the
  tokenizer's EOS and the template's turn end stops a sample;
* **scoring** (:class:`~rlhf_env.lm.scoring.Scorer`): masks from lengths, never from
  ``token == pad_id``; logits of response positions only; float32 log-softmaxes in chunks;
  the responses of one prompt after **one copy of it** (a DPO pair's chosen and rejected,
  the n samples of a prompt), checked once per model against ordinary rows; frozen
  policies cache their log-probs per (prompt, response);
* **sampling** (:mod:`rlhf_env.backends`, ``backend="hf"`` by default): a sample carries
  the log-probs of its drawn tokens, so it is not scored again to know them;
* **each forward once**: :meth:`CausalLMPolicy.score_samples` gives a sample's log-prob
  under the policy, under the reference and the exact token KL from one pass of each;
* **dropout off** in every pass compared with pi0; **LoRA** (``trainable_copy(lora=...)``,
  peft) shares pi0's weights, and pi0 is the same model with the adapter disabled.

``log_prob(prompt, response)`` is the probability of a *complete* response (its text
re-encoded, then the terminator). A sample is not always that (one cut at
``max_new_tokens``, one ended by another stop id, bytes that are not valid UTF-8): for
estimates over samples use :meth:`CausalLMPolicy.sample_sequences`, which keeps the tokens
drawn, and :meth:`CausalLMPolicy.score_samples`, which scores exactly those tokens under
the distribution they were drawn from.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rlhf_env.backends.base import Generator, SamplingRequest, make_generator, resolve_backend
from rlhf_env.errors import DataError, InvalidArgumentError
from rlhf_env.lm.chat import Prompt, PromptEncoder, model_stop_ids, prompt_key
from rlhf_env.lm.loading import (
    disable_dropout,
    load_causal_lm,
    resolve_device,
    resolve_dtype,
)
from rlhf_env.lm.scoring import Scorer, nucleus_log_probs
from rlhf_env.policies.base import Policy, register_policy_class
from rlhf_env.policies.lm_copies import CopiesMixin
from rlhf_env.policies.lm_files import FilesMixin
from rlhf_env.policies.lm_samples import SampledSequence, SamplesMixin
from rlhf_env.progress import log

__all__ = ["CausalLMPolicy", "SampledSequence"]


@register_policy_class
class CausalLMPolicy(SamplesMixin, CopiesMixin, FilesMixin, Policy):
    """A :class:`Policy` over a ``transformers`` causal LM and its tokenizer.

    Args:
        model: a causal LM (``PreTrainedModel``), a hub id or a local path.
        tokenizer: its tokenizer (loaded with the model when ``model`` is a name).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"`` (default: the model's).
        dtype: ``"float32"``, ``"bfloat16"``, ``"float16"`` or a torch dtype (passed to
            ``from_pretrained`` when ``model`` is a name).
        device_map: passed to ``from_pretrained`` (e.g. ``"auto"``; accelerate places it).
        max_new_tokens: default cap on sampled response length (tokens, stop excluded).
        top_p: default nucleus sampling threshold (1.0 = off).
        temperature: the policy is softmax(logits / temperature): its samples and its
            log-probs (1.0: the model as it is; a model card's sampling temperature makes
            the policy what the card samples). ``sample(temperature=t)`` tempers it further.
        batch_size: sequences per forward pass in scoring and sampling.
        max_length: context length in tokens (default: the model's).
        max_prompt_length: prompts longer than this (tokens) are cut from the left,
            keeping their head (default: ``max_length - max_new_tokens`` when sampling;
            when scoring, as much as fits beside the response).
        chat_template: None (use the tokenizer's chat template when it has one), True
            (require one) or False (raw text: base models).
        gradient_checkpointing: recompute activations in backward.
        backend: what samples: ``"hf"`` (this model, in process: the default, reproducible
            on a CPU), ``"vllm"`` (a vLLM engine; :mod:`rlhf_env.backends.vllm`) or
            ``"auto"`` (vllm where installed).
        backend_options: keyword arguments of the backend (e.g. vLLM's ``dtype``).
        revision: the hub revision to load (a model given by name).
        allow_bin_weights: also load ``.bin`` (pickle) weights; safetensors only otherwise.
        source: where the weights come from (a path or hub id; set when ``model`` is a
            name), recorded in saved adapters so that they find their base.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        device_map: Any = None,
        max_new_tokens: int = 64,
        top_p: float = 1.0,
        temperature: float = 1.0,
        batch_size: int = 32,
        max_length: int | None = None,
        max_prompt_length: int | None = None,
        chat_template: bool | None = None,
        gradient_checkpointing: bool = False,
        backend: str = "hf",
        backend_options: dict[str, Any] | None = None,
        revision: str | None = None,
        allow_bin_weights: bool = False,
        source: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(backend, str):
            raise InvalidArgumentError(f"backend must be a name such as 'hf', got {backend!r}")
        if backend != "auto":
            resolve_backend(backend)  # a bad name or a missing package, before any loading
        if isinstance(model, (str, Path)):
            source = source or str(model)
            model, loaded_tok = load_causal_lm(model, revision=revision,
                                               allow_bin_weights=allow_bin_weights,
                                               dtype=dtype, device_map=device_map)
            tokenizer = tokenizer or loaded_tok
        if tokenizer is None:
            raise InvalidArgumentError("CausalLMPolicy needs the model's tokenizer")
        if not hasattr(model, "get_output_embeddings") or model.get_output_embeddings() is None:
            raise DataError(f"{type(model).__name__} is not a causal LM (it has no LM head)")
        if not 0 < top_p <= 1:
            raise InvalidArgumentError(f"top_p must be in (0, 1], got {top_p!r}")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
                0 < temperature <= 100):
            raise InvalidArgumentError(f"temperature must be a number in (0, 100], got "
                                       f"{temperature!r}")
        for name, value in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"{name} must be an int >= 1, got {value!r}")
        if backend_options is not None and not isinstance(backend_options, dict):
            raise InvalidArgumentError(f"backend_options must be a dict, got {backend_options!r}")
        if device_map is None:
            dev = resolve_device(device) if device is not None else next(model.parameters()).device
            model = model.to(device=dev, dtype=resolve_dtype(dtype))
        self.model = model
        self.tokenizer = tokenizer
        self.encoder = PromptEncoder(tokenizer, model_stop_ids(model, tokenizer),
                                     chat_template=chat_template)
        self.chat_template = chat_template
        self.max_new_tokens = int(max_new_tokens)
        self.top_p = float(top_p)
        self.temperature = float(temperature)
        self.batch_size = int(batch_size)
        cfg = model.config
        ctx = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        self.max_length = int(max_length or ctx or 2048)
        if max_prompt_length is not None and not 1 <= max_prompt_length < self.max_length:
            raise InvalidArgumentError(
                f"max_prompt_length must be in [1, max_length={self.max_length}), got "
                f"{max_prompt_length!r}")
        self.max_prompt_length = max_prompt_length
        self.source = source
        self.backend = backend
        self.backend_options = dict(backend_options or {})
        self._engine: Generator | None = None  # the sampling backend, made on first use
        self.gradient_checkpointing = False
        self.set_gradient_checkpointing(bool(gradient_checkpointing))
        self.adapter: nn.ParameterDict | None = None
        self.truncated = 0  # prompts or sequences cut to fit, for the record
        self.scorer = Scorer(model, self.encoder.pad_id, self.activate)
        self._lp_cache: dict[tuple[str, str], float] = {}
        self.train(model.training)

    # -- token ids ---------------------------------------------------------------------------
    @property
    def eos_id(self) -> int:
        """The token appended to a complete response when it is scored (the terminator)."""
        return self.encoder.terminator

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """Every id that ends a sampled response."""
        return self.encoder.stop_ids

    @property
    def pad_id(self) -> int:
        return self.encoder.pad_id

    @property
    def bos_id(self) -> int:
        return self.encoder.bos_id

    def encode(self, prompt: Prompt) -> list[int]:
        """The token ids of ``prompt`` as this policy feeds it to the model (chat template
        applied when used; not truncated)."""
        return self.encoder.prompt_ids(prompt)

    def prompt_ids(self, prompt: Prompt, limit: int | None = None) -> list[int]:
        """:meth:`encode` cut to ``limit`` tokens (default: ``max_prompt_length``), keeping
        the head (BOS, the template's opening); a cut is counted in ``truncated``."""
        ids = self.encode(prompt)
        limit = limit or self.max_prompt_length
        if limit is None:
            return ids
        cut_ids, cut = self.encoder.truncate_prompt(ids, limit)
        self._count_truncation(int(cut), len(ids), limit)
        return cut_ids

    def _count_truncation(self, cut: int, length: int, limit: int) -> None:
        if not cut:
            return
        self.truncated += cut
        if self.truncated == 1 or self.truncated % 1000 == 0:
            log.warning("a sequence of %d tokens exceeds the context of %d tokens; the prompt is "
                        "cut from the left, keeping its head (then the response from the "
                        "right). Cut so far: %d (policy.truncated)", length, limit,
                        self.truncated)

    def _split(self, prompt: Prompt, response: str, max_length: int | None = None,
               max_prompt_length: int | None = None) -> tuple[list[int], list[int]]:
        """Token ids of (context, response + terminator), truncated to fit."""
        ctx, resp = self.encoder.split(prompt, response)
        limit = min(max_length or self.max_length, self.max_length)
        length = len(ctx) + len(resp)
        ctx, resp, cut = self.encoder.fit(ctx, resp, max_length=limit,
                                          max_prompt_length=max_prompt_length
                                          or self.max_prompt_length)
        self._count_truncation(cut, length, limit)
        return ctx, resp

    # -- basics -------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, nn.Parameter]]:
        """This policy's parameters: the base model's and its own adapter's, never those of
        another adapter the shared base model's LoRA slot holds at the moment."""
        seen: set[int] = set()
        # the slot holds this policy's own adapter tensors when it is active: skip the slot's
        # names before removing duplicates, so that they are found under "adapter."
        for name, p in super().named_parameters(prefix, recurse, remove_duplicate=False):
            if ".lora_" in name or (remove_duplicate and id(p) in seen):
                continue
            seen.add(id(p))
            yield name, p

    def train(self, mode: bool = True) -> CausalLMPolicy:
        """Train mode for the policy; the model itself stays in eval mode (dropout off)
        unless gradient checkpointing, which only runs in train mode, needs it."""
        super().train(mode)
        if not (mode and self.gradient_checkpointing):
            self.model.eval()
        return self

    def freeze(self) -> CausalLMPolicy:
        super().freeze()
        self._lp_cache.clear()  # frozen from now on: log-probs never change, so remember them
        return self

    @property
    def frozen(self) -> bool:
        """No parameter takes gradients and the policy is in eval mode (log-probs are cached)."""
        return not self.training and not any(p.requires_grad for p in self.parameters())

    def set_gradient_checkpointing(self, on: bool = True) -> CausalLMPolicy:
        """Recompute activations in backward instead of keeping them (transformers'
        non-reentrant checkpointing; its layers need train mode, with dropout off)."""
        if on:
            disable_dropout(self.model)
            self.model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
        elif self.gradient_checkpointing:
            self.model.gradient_checkpointing_disable()
        self.gradient_checkpointing = bool(on)
        self.train(self.training)
        return self

    def activate(self) -> None:
        """Point the base model's LoRA slot at this policy's adapter (None: disabled)."""
        from rlhf_env.lm.lora import AdapterSlot

        slot = AdapterSlot.of(self.model)
        if slot is not None:
            slot.activate(self.adapter)

    @property
    def lora(self) -> Any:
        """The :class:`~rlhf_env.lm.lora.LoraSettings` of this policy's adapter, or None."""
        from rlhf_env.lm.lora import AdapterSlot

        slot = AdapterSlot.of(self.model)
        return slot.settings if slot is not None and self.adapter is not None else None

    # -- scoring -------------------------------------------------------------------------------
    def _log_q(self, temperature: float = 1.0, top_p: float = 1.0) -> Any:
        """Per-token log q(target) from logits: this policy tempered by ``temperature``."""
        t = self.temperature * temperature

        def fn(x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return nucleus_log_probs(x.float(), t, top_p).gather(-1, targets)[:, 0]
        return fn

    def token_log_probs(
        self, prompts: Sequence[Prompt], responses: Sequence[str], *,
        max_length: int | None = None, max_prompt_length: int | None = None,
        keys: Sequence[Any] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed response log-probs (terminator included) and the response lengths in tokens.

        Responses to the same prompt (and the same ``keys`` entry, when given) share one
        copy of it (prefix sharing).
        ``max_length`` / ``max_prompt_length`` cut the pairs (default: the policy's).
        Returns ``(logp, n_tokens)``, each of shape ``(n,)``; ``logp`` is differentiable.
        """
        if len(prompts) != len(responses):
            raise InvalidArgumentError(
                f"log_prob got {len(prompts)} prompts and {len(responses)} responses")
        pairs = [self._split(p, r, max_length, max_prompt_length)
                 for p, r in zip(prompts, responses)]
        lens = torch.tensor([len(r) for _, r in pairs], dtype=torch.long, device=self.device)
        (logp,) = self.scorer.score(pairs, [self._log_q()], batch_size=self.batch_size,
                                    keys=keys)
        return logp, lens

    def pair_log_probs(
        self, prompts: Sequence[Prompt], chosen: Sequence[str], rejected: Sequence[str], *,
        max_length: int | None = None, max_prompt_length: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`token_log_probs` of ``(prompts, chosen)`` and of ``(prompts, rejected)``,
        as ``(logp_chosen, n_chosen, logp_rejected, n_rejected)``: each pair's shared
        prompt is computed once (a pair costs ``P + C + R`` positions instead of
        ``2P + C + R``) where the model allows it. A frozen policy caches the results as
        :meth:`log_prob` does."""
        n = len(prompts)
        if not len(chosen) == len(rejected) == n:
            raise InvalidArgumentError(f"pair_log_probs got {n} prompts, {len(chosen)} chosen "
                                       f"and {len(rejected)} rejected responses")
        if self.frozen and max_length is None and max_prompt_length is None:
            sides = [[(prompt_key(p), r) for p, r in zip(prompts, side)]
                     for side in (chosen, rejected)]
            todo = [i for i in range(n) if sides[0][i] not in self._lp_cache
                    or sides[1][i] not in self._lp_cache]
            if todo:  # each pair its own tree, as when training: the same rounding
                with torch.no_grad():
                    lp, _ = self.token_log_probs(
                        [prompts[i] for i in todo] * 2,
                        [chosen[i] for i in todo] + [rejected[i] for i in todo],
                        keys=list(range(len(todo))) * 2)
                for k, i in enumerate(todo):
                    self._lp_cache[sides[0][i]] = float(lp[k])
                    self._lp_cache[sides[1][i]] = float(lp[len(todo) + k])
            logp = self.log_prob(list(prompts) * 2, list(chosen) + list(rejected))
            lens = [torch.tensor([len(self._split(p, r)[1]) for p, r in zip(prompts, side)],
                                 dtype=torch.long, device=self.device)
                    for side in (chosen, rejected)]
            return logp[:n], lens[0], logp[n:], lens[1]
        logp, lens = self.token_log_probs(list(prompts) * 2, list(chosen) + list(rejected),
                                          max_length=max_length,
                                          max_prompt_length=max_prompt_length,
                                          keys=list(range(n)) * 2)  # a pair, one tree
        return logp[:n], lens[:n], logp[n:], lens[n:]

    def log_prob(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> torch.Tensor:
        if not self.frozen:
            return self.token_log_probs(prompts, responses)[0]
        keys = [(prompt_key(p), r) for p, r in zip(prompts, responses)]
        todo = {k: (p, r) for k, p, r in zip(keys, prompts, responses) if k not in self._lp_cache}
        if todo:
            with torch.no_grad():
                lp = self.token_log_probs([p for p, _ in todo.values()],
                                          [r for _, r in todo.values()])[0]
            self._lp_cache.update(zip(todo, lp.tolist()))
        return torch.tensor([self._lp_cache[k] for k in keys], device=self.device)

    # -- sampling -------------------------------------------------------------------------------
    def sample(
        self,
        prompts: Sequence[Prompt],
        n: int = 1,
        temperature: float = 1.0,
        *,
        generator: torch.Generator | None = None,
        max_new_tokens: int | None = None,
        top_p: float | None = None,
    ) -> list[list[str]]:
        """Sample ``n`` responses per prompt; ``temperature=0`` is greedy decoding."""
        return [[seq.text for seq in row] for row in self.sample_sequences(
            prompts, n, temperature, generator=generator, max_new_tokens=max_new_tokens,
            top_p=top_p)]

    def use_backend(self, backend: str, **options: Any) -> CausalLMPolicy:
        """Sample with ``backend`` (its keyword arguments ``options``) from now on, and so
        do copies made from now on; returns self."""
        if not isinstance(backend, str):
            raise InvalidArgumentError(f"backend must be a name such as 'hf', got {backend!r}")
        if backend != "auto":
            resolve_backend(backend)
        self.backend, self.backend_options, self._engine = backend, dict(options), None
        return self

    def engine(self) -> Generator:
        """This policy's :class:`~rlhf_env.backends.Generator` (made on first use), with
        this policy's current weights."""
        if self._engine is None:
            self._engine = make_generator(self.backend, self, **self.backend_options)
        self._engine.sync(self)
        return self._engine

    def sample_sequences(
        self,
        prompts: Sequence[Prompt],
        n: int = 1,
        temperature: float = 1.0,
        *,
        generator: torch.Generator | None = None,
        max_new_tokens: int | None = None,
        top_p: float | None = None,
    ) -> list[list[SampledSequence]]:
        """As :meth:`sample` (the same draws for the same generator), keeping the tokens and
        their log-probs: ``len(prompts)`` lists of ``n`` :class:`SampledSequence`."""
        if temperature < 0:
            raise InvalidArgumentError(f"temperature must be >= 0, got {temperature!r}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidArgumentError(f"n must be an int >= 1, got {n!r}")
        max_new = self.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        top_p = self.top_p if top_p is None else float(top_p)
        limit = max(1, self.max_length - max_new)
        if self.max_prompt_length is not None:
            limit = min(limit, self.max_prompt_length)
        enc = [self.prompt_ids(p, limit) for p in prompts]
        engine = self.engine()
        draws = engine.generate(SamplingRequest(
            enc, n, self.temperature * temperature, top_p, max_new, tuple(self.stop_ids),
            self.batch_size, generator))
        out = []
        for ctx, row in zip(enc, draws):
            seqs = []
            for d in row:
                body = d.token_ids[:-1] if d.finished else d.token_ids
                text = self.tokenizer.decode(list(body), skip_special_tokens=False,
                                             clean_up_tokenization_spaces=False)
                seqs.append(SampledSequence(text, tuple(ctx), d.token_ids, d.finished,
                                            d.log_probs, temperature, top_p,
                                            engine.exact_log_probs))
            out.append(seqs)
        return out

    # -- persistence ----------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        cfg = {"max_new_tokens": self.max_new_tokens, "top_p": self.top_p,
               "batch_size": self.batch_size, "max_length": self.max_length,
               "max_prompt_length": self.max_prompt_length, "chat_template": self.chat_template,
               "gradient_checkpointing": self.gradient_checkpointing}
        if self.temperature != 1.0:
            cfg["temperature"] = self.temperature
        if self.backend != "hf":
            cfg.update(backend=self.backend, backend_options=self.backend_options)
        return cfg
