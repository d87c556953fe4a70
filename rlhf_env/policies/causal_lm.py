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

import dataclasses
import json
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
    load_base_state,
    load_causal_lm,
    read_model_state,
    resolve_device,
    resolve_dtype,
)
from rlhf_env.lm.scoring import Scorer, nucleus_log_probs
from rlhf_env.policies.base import CONFIG_NAME, Policy, register_policy_class
from rlhf_env.progress import log

__all__ = ["CausalLMPolicy", "SampledSequence"]


@dataclasses.dataclass(frozen=True)
class SampledSequence:
    """One sampled response, with the tokens that were drawn.

    Attributes:
        text: the decoded response (the stop token not included).
        context_ids: the prompt's tokens as the sampler fed them to the model.
        token_ids: the response tokens drawn, in order; ends with the stop token drawn iff
            ``finished``.
        finished: whether a stop token was drawn (False: cut at ``max_new_tokens``).
        log_probs: log q of each drawn token under the distribution it was drawn from.
        temperature, top_p: that distribution's settings (relative to the policy).
        exact: whether ``log_probs`` are the policy's own float computation (the hf
            backend), so they may stand in for a scoring pass.
    """

    text: str
    context_ids: tuple[int, ...]
    token_ids: tuple[int, ...]
    finished: bool
    log_probs: tuple[float, ...] = ()
    temperature: float = 1.0
    top_p: float = 1.0
    exact: bool = False

    @property
    def log_prob(self) -> float:
        """The sum of :attr:`log_probs`: log q(tokens | context)."""
        return float(sum(self.log_probs))


@register_policy_class
class CausalLMPolicy(Policy):
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

    # -- copies and adapters -----------------------------------------------------------------
    def _twin(self, model: nn.Module) -> CausalLMPolicy:
        """A policy over ``model`` with this policy's tokenizer and settings."""
        return CausalLMPolicy(model, self.tokenizer, source=self.source, **self.config())

    def trainable_copy(self, *, lora: Any = None, seed: int = 0) -> CausalLMPolicy:
        """A trainable policy equal to this one, dropout off.

        Without ``lora`` (and for a policy without an adapter): a deep copy of the model.
        With ``lora`` (:class:`~rlhf_env.lm.lora.LoraSettings` or a dict of its fields), or
        when this policy is itself an adapter: a new adapter over the *same* base model
        (A drawn from ``seed``, B = 0, so it starts equal to this policy; an adapter policy's
        copy starts from its adapter's values), the base frozen.
        """
        if lora is None and self.adapter is None:
            twin = super().trainable_copy()
            assert isinstance(twin, CausalLMPolicy)
            disable_dropout(twin.model)
            return twin.train()
        from rlhf_env.lm.lora import AdapterSlot, LoraSettings

        if isinstance(lora, dict):
            lora = LoraSettings(**lora)
        if self.adapter is not None:
            slot = AdapterSlot.of(self.model)
            assert slot is not None
            if lora is not None and lora != slot.settings:
                raise InvalidArgumentError(
                    f"this policy is a LoRA adapter with {slot.settings.to_dict()}; its copies "
                    f"keep those settings, got {lora.to_dict()}")
            weights = {k: v.detach().clone() for k, v in self.adapter.items()}
        else:
            slot = AdapterSlot.attach(self.model, lora)
            weights = slot.new_weights(torch.Generator().manual_seed(int(seed)))
        for p in self.parameters():  # the base stays pi0
            p.requires_grad_(False)
        disable_dropout(self.model)
        twin = self._twin(self.model)
        twin.adapter = nn.ParameterDict({k: nn.Parameter(v) for k, v in weights.items()})
        return twin.train()

    def __deepcopy__(self, memo: dict[int, Any]) -> CausalLMPolicy:
        """A deep copy without the sampling engine (a copy makes its own on first use)."""
        import copy as _copy

        cls = type(self)
        twin = cls.__new__(cls)
        memo[id(self)] = twin
        for k, v in self.__dict__.items():
            if k not in ("_engine", "scorer"):
                twin.__dict__[k] = _copy.deepcopy(v, memo)
        twin.__dict__["_engine"] = None
        twin.scorer = Scorer(twin.model, twin.encoder.pad_id, twin.activate)
        return twin

    def copy(self, *, frozen: bool = False) -> CausalLMPolicy:
        """A copy; an adapter policy's copy shares the base model and copies the adapter."""
        if self.adapter is None:
            twin = super().copy(frozen=frozen)
            assert isinstance(twin, CausalLMPolicy)
            return twin
        twin = self._twin(self.model)
        twin.adapter = nn.ParameterDict({k: nn.Parameter(v.detach().clone(),
                                                         requires_grad=v.requires_grad)
                                         for k, v in self.adapter.items()})
        twin.train(self.training)
        return twin.freeze() if frozen else twin

    def base_policy(self) -> CausalLMPolicy:
        """The base model without any adapter (pi0 for an adapter trained from pi0), as a
        frozen policy over the same weights."""
        return self._twin(self.model).freeze()

    def merged(self) -> CausalLMPolicy:
        """A plain policy whose weights are the base with this adapter merged in (W + alpha/r
        B A): what to export or hand to tools that do not know LoRA. A policy without an
        adapter returns a frozen deep copy."""
        if self.adapter is None:
            return self.copy(frozen=True)
        import copy as _copy

        from rlhf_env.lm.lora import AdapterSlot

        slot = AdapterSlot.of(self.model)
        assert slot is not None
        state = slot.merged_state_dict(self.model, self.adapter)
        with torch.random.fork_rng(devices=[]):
            fresh = type(self.model)(_copy.deepcopy(self.model.config))
        fresh.load_state_dict(state, strict=True)
        fresh.generation_config = _copy.deepcopy(self.model.generation_config)
        fresh.to(device=self.device, dtype=next(iter(state.values())).dtype)
        return self._twin(fresh).freeze()

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
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed response log-probs (terminator included) and the response lengths in tokens.

        Responses to the same prompt share one copy of it (prefix sharing).
        ``max_length`` / ``max_prompt_length`` cut the pairs (default: the policy's).
        Returns ``(logp, n_tokens)``, each of shape ``(n,)``; ``logp`` is differentiable.
        """
        if len(prompts) != len(responses):
            raise InvalidArgumentError(
                f"log_prob got {len(prompts)} prompts and {len(responses)} responses")
        pairs = [self._split(p, r, max_length, max_prompt_length)
                 for p, r in zip(prompts, responses)]
        lens = torch.tensor([len(r) for _, r in pairs], dtype=torch.long, device=self.device)
        (logp,) = self.scorer.score(pairs, [self._log_q()], batch_size=self.batch_size)
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
            logp = self.log_prob(list(prompts) * 2, list(chosen) + list(rejected))
            lens = [torch.tensor([len(self._split(p, r)[1]) for p, r in zip(prompts, side)],
                                 dtype=torch.long, device=self.device)
                    for side in (chosen, rejected)]
            return logp[:n], lens[0], logp[n:], lens[1]
        logp, lens = self.token_log_probs(list(prompts) * 2, list(chosen) + list(rejected),
                                          max_length=max_length,
                                          max_prompt_length=max_prompt_length)
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

    def sample_log_probs(self, prompts: Sequence[Prompt], samples: Sequence[SampledSequence]
                         ) -> torch.Tensor:
        """:meth:`log_prob` of the samples' texts, taken from the samples themselves where
        they are exactly that (drawn from this policy as it is by the hf backend, finished,
        and re-encoding to the drawn tokens) and scored otherwise. No gradient."""
        out = torch.zeros(len(samples), dtype=torch.float64)
        todo = []
        for i, (p, s) in enumerate(zip(prompts, samples)):
            own = (s.exact and s.finished and s.temperature == 1.0 and s.top_p >= 1.0
                   and self.top_p >= 1.0 and list(s.token_ids) == self._split(p, s.text)[1])
            if own:
                out[i] = s.log_prob
            else:
                todo.append(i)
        if todo:
            with torch.no_grad():
                lp = self.log_prob([prompts[i] for i in todo], [samples[i].text for i in todo])
            out[todo] = lp.double().cpu()
        return out

    def _token_pairs(self, contexts: Sequence[Sequence[int]],
                     responses: Sequence[Sequence[int]], temperature: float
                     ) -> list[tuple[list[int], list[int]]]:
        if len(contexts) != len(responses):
            raise InvalidArgumentError(
                f"got {len(contexts)} contexts and {len(responses)} responses")
        if temperature < 0:
            raise InvalidArgumentError(f"temperature must be >= 0, got {temperature!r}")
        pairs = []
        for ctx, resp in zip(contexts, responses):
            ctx, resp = list(ctx) or [self.bos_id], list(resp)
            if len(resp) >= self.max_length:
                raise InvalidArgumentError(
                    f"a response of {len(resp)} tokens does not fit the context of "
                    f"{self.max_length} tokens")
            ctx, _ = self.encoder.truncate_prompt(ctx, self.max_length - len(resp))
            pairs.append((ctx, resp))
        return pairs

    @torch.no_grad()
    def score_samples(
        self,
        reference: CausalLMPolicy | None,
        contexts: Sequence[Sequence[int]],
        responses: Sequence[Sequence[int]],
        *,
        temperature: float = 1.0,
        top_p: float | None = None,
    ) -> dict[str, torch.Tensor]:
        """Exactly the given tokens, scored with one forward pass of this policy and one of
        ``reference`` (the n samples of a prompt after one copy of it).

        Returns float64 ``(n,)`` tensors: ``log_q``, log q(response | context) with q this
        policy at ``temperature`` and ``top_p`` (None: its default), the distribution
        :meth:`sample` draws from; with a reference also ``log_p0`` (the reference as it
        samples: its temperature, its top-p) and ``kl``, the exact per-token KL summed along
        each response: the sum over its drawn prefixes s_t of KL(q(.|s_t) || p0(.|s_t)),
        each a sum over the vocabulary, whose expectation over y ~ q is KL(q || p0) of the
        response distributions (by the chain rule), with far less variance than the
        log-ratio's. -inf / +inf where a token or q's mass is outside a support.
        """
        top_p = self.top_p if top_p is None else float(top_p)
        pairs = self._token_pairs(contexts, responses, temperature)
        t_q = self.temperature * temperature
        was_training = self.model.training
        self.model.eval()
        try:
            if reference is None:
                (log_q,) = self.scorer.score(pairs, [self._log_q(temperature, top_p)],
                                             batch_size=self.batch_size, dtype=torch.float64)
                return {"log_q": log_q.cpu()}
            t_p, ref_top_p = reference.temperature, reference.top_p

            def lq(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                return nucleus_log_probs(x.float(), t_q, top_p).gather(-1, t)[:, 0]

            def lp(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                return nucleus_log_probs(y.float(), t_p, ref_top_p).gather(-1, t)[:, 0]

            def kl(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                a = nucleus_log_probs(x.float(), t_q, top_p)
                b = nucleus_log_probs(y.float(), t_p, ref_top_p)
                q = a.exp()
                return torch.where(q > 0, q * (a - b), torch.zeros_like(q)).sum(-1)

            log_q, log_p0, tok_kl = self.scorer.score(
                pairs, [lq, lp, kl], batch_size=self.batch_size, others=[reference.scorer],
                dtype=torch.float64)
            return {"log_q": log_q.cpu(), "log_p0": log_p0.cpu(), "kl": tok_kl.cpu()}
        finally:
            self.model.train(was_training)

    def sequence_log_probs(self, contexts: Sequence[Sequence[int]],
                           responses: Sequence[Sequence[int]], *, temperature: float = 1.0,
                           top_p: float | None = None) -> torch.Tensor:
        """log q(response tokens | context tokens), summed over exactly the given tokens, q
        as in :meth:`score_samples`; float64 ``(n,)``, no gradient. No stop token is added
        and nothing is re-encoded: pass the ``context_ids`` and ``token_ids`` of
        :meth:`sample_sequences` to score what was drawn."""
        return self.score_samples(None, contexts, responses, temperature=temperature,
                                  top_p=top_p)["log_q"]

    def token_kl(self, reference: CausalLMPolicy, contexts: Sequence[Sequence[int]],
                 responses: Sequence[Sequence[int]], *, temperature: float = 1.0,
                 top_p: float | None = None) -> torch.Tensor:
        """The exact per-token KL summed along each sampled response (see
        :meth:`score_samples`, which gives it with the log-probs from the same passes)."""
        return self.score_samples(reference, contexts, responses, temperature=temperature,
                                  top_p=top_p)["kl"]

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

    def save(self, path: str | Path) -> Path:
        """Write the policy into folder ``path``: ``policy.json``, and the model (safetensors)
        and tokenizer under ``model/`` — or, for a LoRA adapter, the adapter alone under
        ``adapter/`` (peft's format), with the base model's source in ``policy.json``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta: dict[str, Any] = {"class": type(self).__name__, "config": self.config()}
        if self.adapter is not None:
            from rlhf_env.lm.lora import AdapterSlot, base_fingerprint

            slot = AdapterSlot.of(self.model)
            assert slot is not None
            slot.save(self.adapter, path / "adapter", self.source)
            meta["adapter"] = {"base": self.source, "lora": slot.settings.to_dict(),
                               "base_model_type": self.model.config.model_type,
                               "base_fingerprint": base_fingerprint(self.model)}
        else:
            from rlhf_env.progress import quiet_transformers

            with quiet_transformers():
                self.model.save_pretrained(path / "model", safe_serialization=True)
                self.tokenizer.save_pretrained(path / "model")
            meta["source"] = self.source
        (path / CONFIG_NAME).write_text(json.dumps(meta, indent=1))
        return path

    @classmethod
    def load_folder(cls, path: Path, config: dict[str, Any], base: Policy | None = None
                    ) -> CausalLMPolicy:
        meta = json.loads((path / CONFIG_NAME).read_text())
        adapter = meta.get("adapter")
        if adapter is None:
            from rlhf_env.progress import quiet_transformers

            with quiet_transformers():
                return cls(str(path / "model"), source=meta.get("source") or str(path / "model"),
                           **config)
        if base is None:
            where = adapter.get("base")
            if not where:
                raise DataError(
                    f"{path} holds a LoRA adapter whose base model was built in memory (no "
                    "source recorded): load it with load_policy(path, base=<the base policy>)")
            base = cls(where, **config)
        if not isinstance(base, CausalLMPolicy):
            raise DataError(f"the LoRA adapter in {path} needs a CausalLMPolicy base, got "
                            f"{type(base).__name__}")
        from rlhf_env.lm.lora import base_fingerprint

        want = adapter.get("base_fingerprint")
        if want is not None and base_fingerprint(base.model) != want:
            raise DataError(
                f"the LoRA adapter in {path} was trained on another base model (fingerprint "
                f"{want}, recorded source {adapter.get('base')!r}); this base is a "
                f"{base.model.config.model_type!r} model with fingerprint "
                f"{base_fingerprint(base.model)}")
        return base.with_adapter(path / "adapter")

    def with_adapter(self, folder: str | Path, *, trainable: bool = False) -> CausalLMPolicy:
        """A policy of this base model with the LoRA adapter saved in ``folder`` (ours or
        peft's format), sharing this policy's weights; frozen unless ``trainable``."""
        from rlhf_env.lm.lora import AdapterSlot, read_settings

        folder = Path(folder)
        settings = read_settings(folder)
        slot = AdapterSlot.of(self.model)
        if slot is None:
            slot = AdapterSlot.attach(self.model, settings)
        weights = slot.load(folder)
        twin = self._twin(self.model)
        twin.adapter = nn.ParameterDict({k: nn.Parameter(v, requires_grad=trainable)
                                         for k, v in weights.items()})
        return twin.train() if trainable else twin.freeze()

    def load_weights(self, path: str | Path) -> CausalLMPolicy:
        """Load the weights a :meth:`save` of the same architecture wrote into this policy.

        Strict: a missing, unexpected or misshapen tensor is a :class:`DataError` naming it,
        and so is another architecture. Sharded saves and transformers' key conversions are
        read by ``from_pretrained``. An adapter folder loads into this policy's adapter.
        """
        path = Path(path)
        meta_file = path / CONFIG_NAME
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        if meta.get("adapter") is not None or (path / "adapter").is_dir():
            if self.adapter is None:
                raise DataError(f"{path} holds a LoRA adapter; this policy has none (use "
                                "with_adapter or load_policy(path, base=...))")
            from rlhf_env.lm.lora import AdapterSlot

            slot = AdapterSlot.of(self.model)
            assert slot is not None
            loaded = slot.load(path / "adapter")
            with torch.no_grad():
                for k, v in loaded.items():
                    self.adapter[k].copy_(v)
        else:
            load_base_state(self.model, read_model_state(path / "model",
                                                         self.model.config.model_type), path)
        self._lp_cache.clear()
        return self
