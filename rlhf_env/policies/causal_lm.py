"""A policy over any Hugging Face causal language model.

pi(response | prompt) is the model's probability of the response's tokens followed by
the token that ends a response (see :mod:`rlhf_env.lm.chat`: the chat template's end of
turn, else EOS). Pitfalls handled here (see DESIGN.md):

* **prompts as the model was trained to read them**: a string or a list of chat
  messages; the tokenizer's chat template is applied (with the generation prompt) when
  it has one, unless ``chat_template=False``;
* **stop tokens**: sampling stops at any id of the model's
  ``generation_config.eos_token_id``, the tokenizer's EOS and the template's turn end;
* the prompt/response token boundary: the prompt and prompt+response are tokenized,
  and the response's tokens are what follows their common prefix;
* masks come from lengths, never from ``token == pad_id`` (pad may equal EOS);
* **truncation keeps the head**: a prompt cut from the left keeps its BOS and the
  template's opening (``max_prompt_length``; counted in :attr:`CausalLMPolicy.truncated`);
* **dropout off** in every pass compared with pi0 (trainable copies drop it, and the model
  stays in eval mode while it trains unless gradient checkpointing needs train mode);
* left padding with position ids counted from the first real token; the prompt is
  encoded once and its cache repeated for ``n`` samples; scoring asks the model for the
  logits of the response positions only (``logits_to_keep``) and takes log-softmaxes in
  float32 chunks of rows, never the whole batch's float32 logits at once;
* frozen policies cache their log-probs per (prompt, response), so reference log-probs
  over a dataset are computed once;
* a preference pair's prompt is computed once (:meth:`CausalLMPolicy.pair_log_probs`:
  chosen and rejected after one copy of it, pairs packed in rows, a 4-D mask), checked
  against two ordinary rows on each model's first batch;
* **LoRA** (``trainable_copy(lora=...)``, peft): the adapter policy shares pi0's weights
  (one copy in memory; :mod:`rlhf_env.lm.lora`), and pi0 is the same model with the
  adapter disabled.

``log_prob(prompt, response)`` is the probability of a *complete* response (its text
re-encoded, then the terminator). A sample is not always that: one cut at
``max_new_tokens`` drew no stop token, one that stopped on another stop id than the
terminator ended differently, and one whose bytes are not valid UTF-8 decodes to text
(with U+FFFD) that re-encodes to other tokens. For estimates over samples use
:meth:`CausalLMPolicy.sample_sequences`, which keeps the tokens drawn, and
:meth:`CausalLMPolicy.sequence_log_probs` / :meth:`CausalLMPolicy.token_kl`, which score
exactly those tokens under the distribution they were drawn from (temperature, top-p).

Sampling draws only from the ``torch.Generator`` it is given.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from rlhf_env.errors import DataError, InvalidArgumentError
from rlhf_env.lm.chat import Prompt, PromptEncoder, model_stop_ids, prompt_key
from rlhf_env.lm.loading import (  # noqa: F401  (re-exported: their home before the split)
    load_causal_lm,
    pretrained_kwargs,
    resolve_device,
    resolve_dtype,
)
from rlhf_env.policies.base import CONFIG_NAME, Policy, register_policy_class
from rlhf_env.progress import log

__all__ = ["CausalLMPolicy", "SampledSequence", "nucleus_mask", "nucleus_log_probs",
           "disable_dropout", "load_causal_lm", "pretrained_kwargs", "resolve_device",
           "resolve_dtype"]

# rows of float32 (tokens, vocab) log-softmax computed at once: 2**24 floats = 64 MB
_CHUNK_ELEMENTS = 1 << 24


@dataclasses.dataclass(frozen=True)
class SampledSequence:
    """One sampled response, with the tokens that were drawn.

    Attributes:
        text: the decoded response (the stop token not included).
        context_ids: the prompt's tokens as the sampler fed them to the model.
        token_ids: the response tokens drawn, in order; ends with the stop token drawn iff
            ``finished``.
        finished: whether a stop token was drawn (False: cut at ``max_new_tokens``).
    """

    text: str
    context_ids: tuple[int, ...]
    token_ids: tuple[int, ...]
    finished: bool


def nucleus_mask(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """The top-p nucleus over the last axis: the smallest set of most likely tokens whose
    mass reaches ``top_p`` (the top token always kept), as a bool mask shaped like ``probs``."""
    sorted_p, order = probs.sort(dim=-1, descending=True)
    keep = sorted_p.cumsum(-1) - sorted_p < top_p
    return torch.zeros_like(keep).scatter(-1, order, keep)


def nucleus_log_probs(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """log q(token) over the last axis, q the distribution :meth:`CausalLMPolicy.sample` draws
    from: softmax(logits / temperature) restricted to the top-p nucleus
    (:func:`nucleus_mask`) and renormalised; -inf outside it. ``temperature=0`` is greedy:
    0 at the argmax, -inf elsewhere. (A token at the nucleus boundary can fall on either
    side between the sampler's cached forward pass and a full one, by rounding.)"""
    if temperature == 0:
        top = logits.argmax(-1, keepdim=True)
        return torch.full_like(logits, -torch.inf).scatter(-1, top, 0.0)
    if top_p >= 1.0:
        return torch.log_softmax(logits / temperature, dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    kept = probs * nucleus_mask(probs, top_p)
    return torch.log(kept / kept.sum(-1, keepdim=True))


_DROPOUT_ATTRS = ("dropout", "attention_dropout", "attn_dropout", "hidden_dropout",
                  "activation_dropout", "resid_dropout", "embd_dropout", "dropout_p",
                  "attn_pdrop", "resid_pdrop", "embd_pdrop", "summary_first_dropout")


def disable_dropout(model: nn.Module) -> nn.Module:
    """Set every dropout of ``model`` to 0, in place; returns it.

    ``nn.Dropout`` modules get ``p = 0`` (as TRL's ``disable_dropout_in_model``), and the
    float rates that attention code applies functionally (OPT's ``self.dropout``,
    ``attention_dropout``, ...) are zeroed on the modules and in the config, so a model in
    train mode (gradient checkpointing) computes what it computes in eval mode.
    """
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        for name in _DROPOUT_ATTRS:
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)
    cfg = getattr(model, "config", None)
    for name in dir(cfg) if cfg is not None else ():
        if ("dropout" in name or name.endswith("pdrop")) and isinstance(
                getattr(cfg, name, None), float):
            setattr(cfg, name, 0.0)
    return model


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
        batch_size: sequences per forward pass in :meth:`log_prob` and :meth:`sample`.
        max_length: context length in tokens (default: the model's).
        max_prompt_length: prompts longer than this (tokens) are cut from the left,
            keeping their head (default: ``max_length - max_new_tokens`` when sampling;
            when scoring, as much as fits beside the response).
        chat_template: None (use the tokenizer's chat template when it has one), True
            (require one) or False (raw text: base models).
        gradient_checkpointing: recompute activations in backward (less memory, about a
            third more compute).
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
        batch_size: int = 32,
        max_length: int | None = None,
        max_prompt_length: int | None = None,
        chat_template: bool | None = None,
        gradient_checkpointing: bool = False,
        revision: str | None = None,
        allow_bin_weights: bool = False,
        source: str | None = None,
    ) -> None:
        super().__init__()
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
        for name, value in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"{name} must be an int >= 1, got {value!r}")
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
        self.gradient_checkpointing = False
        self.set_gradient_checkpointing(bool(gradient_checkpointing))
        self.adapter: nn.ParameterDict | None = None
        self.truncated = 0  # prompts or sequences cut to fit, for the record
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._keep_kw = "logits_to_keep" in params
        self._pos_kw = "position_ids" in params or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
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
        ids, cut = self.encoder.truncate_prompt(ids, limit)
        self._count_truncation(int(cut), len(self.encode(prompt)), limit)
        return ids

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
        twin = self._twin(self.model)
        return twin.freeze()

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
    def _chunks(self, pairs: list[tuple[list[int], list[int]]]) -> Iterator[list[int]]:
        """Index chunks of ``pairs`` for one forward pass each, similar lengths together."""
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        for i in range(0, len(order), self.batch_size):
            yield order[i : i + self.batch_size]

    def _response_logits(self, chunk: list[tuple[list[int], list[int]]]
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One forward pass over left-padded ``(context, response)`` rows.

        Returns ``(logits, targets, rows)``: the model's next-token logits at every response
        position, ``(N, V)`` in the model's dtype, the response token each predicts ``(N,)``
        and the row each belongs to ``(N,)``, N the chunk's response tokens.
        """
        logits, targets, rows, _ = self._tree_logits([(c, [r]) for c, r in chunk])
        return logits, targets, rows

    def _tree_logits(self, chunk: list[tuple[list[int], list[list[int]]]], *, pack: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One forward pass over trees ``(context, [response_1, ..., response_k])``.

        A tree with one response is an ordinary causal sequence. With several (a DPO pair's
        chosen and rejected after their shared prompt: prefix sharing, Wang et al. 2024,
        arXiv 2410.20305) each response attends to the context and to itself only and its
        position ids continue from the context's end, so it is scored as if it followed the
        context alone while the context is computed once. ``pack=True`` also puts several
        trees in one row (first fit, rows no wider than the longest tree), each attending
        to itself only: no padding beyond what the longest tree leaves. Rows are
        left-padded. Any tree structure beyond one response per row needs a 4-D mask
        (:meth:`shares_prefixes`). Returns ``(logits, targets, trees, segments)``, ``(N, V)``
        and ``(N,)`` each: logits at every response position, the token each predicts, the
        index of its tree in ``chunk`` and of its response within the tree.
        """
        self.activate()
        dev = self.device
        sizes = [len(c) + sum(len(r) for r in rs) for c, rs in chunk]
        width = max(sizes)
        rows: list[list[int]] = []  # tree indices per row
        if pack:
            room: list[int] = []
            for t in sorted(range(len(chunk)), key=lambda t: -sizes[t]):
                j = next((j for j, free in enumerate(room) if free >= sizes[t]), None)
                if j is None:
                    rows.append([t])
                    room.append(width - sizes[t])
                else:
                    rows[j].append(t)
                    room[j] -= sizes[t]
        else:
            rows = [[t] for t in range(len(chunk))]
        used = [sum(sizes[t] for t in row) for row in rows]
        # logits are needed from the first predicting position (a context's last) on
        keep_w = width - min(width - u + len(chunk[row[0]][0]) - 1 for u, row in zip(used, rows))
        tree = pack or any(len(rs) > 1 for _, rs in chunk)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        group = torch.full((len(rows), width), -1, dtype=torch.long)  # tree in row; -1 pad
        seg = torch.zeros((len(rows), width), dtype=torch.long)  # 0 context, s + 1 response s
        pos = torch.zeros((len(rows), width), dtype=torch.long)
        at, row_of, targets, trees, segs = [], [], [], [], []
        for j, row in enumerate(rows):
            o = width - used[j]
            for g, t in enumerate(row):
                c, rs = chunk[t]
                ids[j, o : o + sizes[t]] = torch.tensor(c + [x for r in rs for x in r])
                group[j, o : o + sizes[t]] = g
                pos[j, o : o + len(c)] = torch.arange(len(c))
                last_ctx, o = o + len(c) - 1, o + len(c)
                for s, r in enumerate(rs):
                    seg[j, o : o + len(r)] = s + 1
                    pos[j, o : o + len(r)] = torch.arange(len(c), len(c) + len(r))
                    # position t predicts token t + 1; each response's first token is
                    # predicted at the context's last position
                    at.extend([last_ctx] + list(range(o, o + len(r) - 1)))
                    row_of.extend([j] * len(r))
                    targets.extend(r)
                    trees.extend([t] * len(r))
                    segs.extend([s] * len(r))
                    o += len(r)
        if tree:
            gq, gk = group[:, :, None], group[:, None, :]
            sq, sk = seg[:, :, None], seg[:, None, :]
            allowed = (torch.ones(width, width, dtype=torch.bool).tril()[None] & (gk == gq)
                       & (gk >= 0) & ((sk == 0) | (sk == sq))) | torch.eye(width, dtype=torch.bool)
            mask: torch.Tensor = allowed[:, None].to(dev)
            if _attention(self.model) != "sdpa":  # eager adds the mask
                dtype = next(self.model.parameters()).dtype
                mask = torch.zeros(mask.shape, dtype=dtype, device=dev).masked_fill(
                    ~mask, torch.finfo(dtype).min)
        else:
            mask = (group >= 0).long().to(dev)
        kw: dict[str, Any] = {"logits_to_keep": keep_w} if self._keep_kw else {}
        if self._pos_kw:
            kw["position_ids"] = pos.to(dev)
        logits = self.model(input_ids=ids.to(dev), attention_mask=mask, use_cache=False,
                            **kw).logits
        tail = torch.tensor(at, dtype=torch.long) - (width - logits.shape[1])
        return (logits[torch.tensor(row_of, device=dev), tail.to(dev)],
                torch.tensor(targets, device=dev), torch.tensor(trees, device=dev),
                torch.tensor(segs, device=dev))

    def shares_prefixes(self, lengths: int) -> bool:
        """Whether :meth:`pair_log_probs` scores a pair's two responses in one row after
        their shared context (prefix sharing) on rows of up to ``lengths`` positions.

        It needs a 4-D mask (sdpa or eager attention), position ids, no ALiBi and no
        sliding window shorter than the row. The first time it is used on a model it is
        checked against the ordinary two-row pass on that batch (no gradient); a model whose
        results differ (by more than 1e-3 per token) falls back to the two-row pass, with a
        warning.
        """
        cfg = self.model.config
        if not self._pos_kw or _attention(self.model) not in ("sdpa", "eager"):
            return False
        if getattr(cfg, "alibi", False) or cfg.model_type in ("bloom", "mpt", "baichuan"):
            return False
        if getattr(cfg, "attention_chunk_size", None):
            return False
        window = getattr(cfg, "sliding_window", None)
        return not (isinstance(window, int) and 0 < window < lengths)

    @staticmethod
    def _rowwise(fn: Callable[..., torch.Tensor], *tensors: torch.Tensor) -> torch.Tensor:
        """``fn`` applied to float32 chunks of rows of ``tensors[0]`` (N, V) and the matching
        rows of the others; recomputed in backward instead of keeping float32 copies."""
        n, v = tensors[0].shape
        step = max(1, _CHUNK_ELEMENTS // max(1, v))
        out = []
        for s in range(0, n, step):
            part = [t[s : s + step] for t in tensors]
            if torch.is_grad_enabled() and any(t.requires_grad for t in part):
                out.append(checkpoint(fn, *part, use_reentrant=False))
            else:
                out.append(fn(*part))
        return torch.cat(out) if out else tensors[0].new_zeros(0, dtype=torch.float32)

    def token_log_probs(
        self, prompts: Sequence[Prompt], responses: Sequence[str], *,
        max_length: int | None = None, max_prompt_length: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed response log-probs (terminator included) and the response lengths in tokens.

        ``max_length`` / ``max_prompt_length`` cut the pairs (default: the policy's).
        Returns ``(logp, n_tokens)``, each of shape ``(n,)``; ``logp`` is differentiable.
        """
        if len(prompts) != len(responses):
            raise InvalidArgumentError(
                f"log_prob got {len(prompts)} prompts and {len(responses)} responses")
        pairs = [self._split(p, r, max_length, max_prompt_length)
                 for p, r in zip(prompts, responses)]
        out = torch.zeros(len(pairs), device=self.device)
        lens = torch.tensor([len(r) for _, r in pairs], dtype=torch.long, device=self.device)
        parts = []
        for idx in self._chunks(pairs):
            logits, targets, rows = self._response_logits([pairs[i] for i in idx])
            tok = self._rowwise(_gather_log_softmax, logits, targets[:, None])
            where = torch.tensor(idx, device=self.device)[rows]
            parts.append((where, tok))
        if parts:
            out = out.index_add(0, torch.cat([w for w, _ in parts]),
                                torch.cat([t for _, t in parts]).to(out.dtype))
        return out, lens

    def pair_log_probs(
        self, prompts: Sequence[Prompt], chosen: Sequence[str], rejected: Sequence[str], *,
        max_length: int | None = None, max_prompt_length: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`token_log_probs` of ``(prompts, chosen)`` and of ``(prompts, rejected)``,
        as ``(logp_chosen, n_chosen, logp_rejected, n_rejected)``, with each pair's shared
        prompt computed once where :meth:`shares_prefixes` allows it (the two contexts equal
        after truncation): a pair costs ``P + C + R`` positions instead of ``2P + C + R``.
        Otherwise, and for a pair whose contexts differ, two rows as ``token_log_probs``.
        A frozen policy caches the results as :meth:`log_prob` does.
        """
        n = len(prompts)
        if not len(chosen) == len(rejected) == n:
            raise InvalidArgumentError(f"pair_log_probs got {n} prompts, {len(chosen)} chosen "
                                       f"and {len(rejected)} rejected responses")
        cached = self.frozen and max_length is None and max_prompt_length is None
        if cached:
            keys = [[(prompt_key(p), r) for p, r in zip(prompts, side)]
                    for side in (chosen, rejected)]
            todo = [i for i in range(n)
                    if keys[0][i] not in self._lp_cache or keys[1][i] not in self._lp_cache]
            if todo:
                with torch.no_grad():
                    lc, _, lr, _ = self._pair_log_probs([prompts[i] for i in todo],
                                                        [chosen[i] for i in todo],
                                                        [rejected[i] for i in todo], None, None)
                self._lp_cache.update(zip([keys[0][i] for i in todo], lc.tolist()))
                self._lp_cache.update(zip([keys[1][i] for i in todo], lr.tolist()))
            lens = [torch.tensor([len(self._split(p, r)[1]) for p, r in zip(prompts, side)],
                                 dtype=torch.long, device=self.device)
                    for side in (chosen, rejected)]
            lp = [torch.tensor([self._lp_cache[k] for k in side], device=self.device)
                  for side in keys]
            return lp[0], lens[0], lp[1], lens[1]
        return self._pair_log_probs(prompts, chosen, rejected, max_length, max_prompt_length)

    def _pair_log_probs(self, prompts: Sequence[Prompt], chosen: Sequence[str],
                        rejected: Sequence[str], max_length: int | None,
                        max_prompt_length: int | None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        n = len(prompts)
        sides = [[self._split(p, r, max_length, max_prompt_length) for p, r in zip(prompts, side)]
                 for side in (chosen, rejected)]
        # a row: (context, responses, where each response's log-prob goes in out = (2n,))
        rows: list[tuple[list[int], list[list[int]], list[int]]] = []
        shared = [i for i in range(n) if sides[0][i][0] == sides[1][i][0]]
        # the farthest position of any tree: a 4-D mask must not hide a sliding window
        longest = max(len(c) + len(r) for side in sides for c, r in side) if n else 0
        if shared and self._may_share(longest):
            rows += [(sides[0][i][0], [sides[0][i][1], sides[1][i][1]], [i, n + i])
                     for i in shared]
        else:
            shared = []
        alone = sorted(set(range(n)) - set(shared))
        rows += [(sides[k][i][0], [sides[k][i][1]], [k * n + i]) for k in (0, 1) for i in alone]
        out = torch.zeros(2 * n, device=self.device)
        order = sorted(range(len(rows)), key=lambda j: len(rows[j][0]) + sum(map(len, rows[j][1])))
        for s in range(0, len(order), self.batch_size):
            chunk = [rows[j] for j in order[s : s + self.batch_size]]
            if any(len(rs) > 1 for _, rs, _ in chunk) and not self._sharing_checked() and (
                    not self._check_sharing(chunk)):
                return self._pair_log_probs_unshared(prompts, chosen, rejected, max_length,
                                                     max_prompt_length)
            logits, targets, r, g = self._tree_logits([(c, rs) for c, rs, _ in chunk],
                                                       pack=bool(shared))
            tok = self._rowwise(_gather_log_softmax, logits, targets[:, None])
            width = max(len(ds) for _, _, ds in chunk)
            table = torch.tensor([ds + [0] * (width - len(ds)) for _, _, ds in chunk],
                                 device=self.device)
            out = out.index_add(0, table[r, g], tok.to(out.dtype))
        lens = [torch.tensor([len(resp) for _, resp in side], dtype=torch.long,
                             device=self.device) for side in sides]
        return out[:n], lens[0], out[n:], lens[1]

    def _pair_log_probs_unshared(self, prompts, chosen, rejected, max_length, max_prompt_length
                                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        lc, nc = self.token_log_probs(prompts, chosen, max_length=max_length,
                                      max_prompt_length=max_prompt_length)
        lr, nr = self.token_log_probs(prompts, rejected, max_length=max_length,
                                      max_prompt_length=max_prompt_length)
        return lc, nc, lr, nr

    _SHARING = "_rlhf_env_prefix_sharing"  # the model's verdict, once checked

    def _may_share(self, lengths: int) -> bool:
        return self.model.__dict__.get(self._SHARING, True) and self.shares_prefixes(lengths)

    def _sharing_checked(self) -> bool:
        return self._SHARING in self.model.__dict__

    @torch.no_grad()
    def _check_sharing(self, chunk: list[tuple[list[int], list[list[int]], list[int]]]) -> bool:
        """Packed, prefix-shared rows against ordinary rows on (up to) four pairs of a
        batch; the verdict is kept on the model."""
        chunk = [row for row in chunk if len(row[1]) > 1][:4]
        logits, targets, r, g = self._tree_logits([(c, rs) for c, rs, _ in chunk], pack=True)
        tok = self._rowwise(_gather_log_softmax, logits, targets[:, None]).double()
        shared = torch.zeros(len(chunk), 2, dtype=torch.float64, device=self.device)
        shared.index_put_((r, g), tok, accumulate=True)
        plain = [(c, [resp]) for c, rs, _ in chunk for resp in rs]
        logits, targets, r, _ = self._tree_logits(plain)
        tok = self._rowwise(_gather_log_softmax, logits, targets[:, None]).double()
        rows = torch.zeros(len(plain), dtype=torch.float64, device=self.device).index_add(0, r, tok)
        n_tok = torch.tensor([len(resp) for _, rs, _ in chunk for resp in rs],
                             dtype=torch.float64, device=self.device)
        diff = float(((shared.reshape(-1) - rows).abs() / n_tok).max())
        ok = diff <= 1e-3
        if not ok:
            log.warning("%s: scoring a pair's responses after one shared prompt differs from "
                        "scoring them apart by %.2g per token; using two rows per pair",
                        type(self.model).__name__, diff)
        self.model.__dict__[self._SHARING] = ok
        return ok

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

    def _checked_token_pairs(self, contexts: Sequence[Sequence[int]],
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
    def sequence_log_probs(
        self,
        contexts: Sequence[Sequence[int]],
        responses: Sequence[Sequence[int]],
        *,
        temperature: float = 1.0,
        top_p: float | None = None,
    ) -> torch.Tensor:
        """log q(response tokens | context tokens), summed over exactly the given tokens.

        q is the distribution :meth:`sample` draws each token from at ``temperature`` and
        ``top_p`` (None: this policy's default; see :func:`nucleus_log_probs`). No stop
        token is added and nothing is re-encoded: pass the ``context_ids`` and ``token_ids``
        of :meth:`sample_sequences` to score what was drawn. A context longer than the
        model's window is cut from the left, keeping its head. Returns float64 ``(n,)`` (no
        gradient); -inf for a token outside q's support.
        """
        top_p = self.top_p if top_p is None else float(top_p)
        pairs = self._checked_token_pairs(contexts, responses, temperature)
        out = torch.zeros(len(pairs), dtype=torch.float64)
        was_training = self.model.training
        self.model.eval()
        try:
            def lq(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                return nucleus_log_probs(x.float(), temperature, top_p).gather(-1, t)[:, 0]

            for idx in self._chunks(pairs):
                logits, targets, rows = self._response_logits([pairs[i] for i in idx])
                tok = self._rowwise(lq, logits, targets[:, None]).double().cpu()
                out.index_add_(0, torch.tensor(idx)[rows.cpu()], tok)
        finally:
            self.model.train(was_training)
        return out

    @torch.no_grad()
    def token_kl(
        self,
        reference: CausalLMPolicy,
        contexts: Sequence[Sequence[int]],
        responses: Sequence[Sequence[int]],
        *,
        temperature: float = 1.0,
        top_p: float | None = None,
    ) -> torch.Tensor:
        """The exact per-token KL summed along each sampled response, float64 ``(n,)``.

        For a response y drawn from q (this policy at ``temperature``/``top_p``), the sum
        over its drawn prefixes s_t of KL(q(.|s_t) || p0(.|s_t)), p0 the ``reference`` at
        temperature 1 and its own top-p, each KL a sum over the whole vocabulary. By the
        chain rule its expectation over y ~ q is KL(q || p0) of the response distributions
        (responses cut at ``max_new_tokens`` included), as the log-ratio's is, with far
        less variance. +inf where q puts mass outside p0's support.
        """
        top_p = self.top_p if top_p is None else float(top_p)
        pairs = self._checked_token_pairs(contexts, responses, temperature)
        out = torch.zeros(len(pairs), dtype=torch.float64)
        ref_top_p = reference.top_p

        def kl(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            lq = nucleus_log_probs(x.float(), temperature, top_p)
            lp = nucleus_log_probs(y.float(), 1.0, ref_top_p)
            q = lq.exp()
            return torch.where(q > 0, q * (lq - lp), torch.zeros_like(q)).sum(-1)

        for idx in self._chunks(pairs):
            chunk = [pairs[i] for i in idx]
            lq_logits, _, rows = self._response_logits(chunk)
            lp_logits = reference._response_logits(chunk)[0]  # noqa: SLF001 - same class
            tok = self._rowwise(kl, lq_logits, lp_logits).double().cpu()
            out.index_add_(0, torch.tensor(idx)[rows.cpu()], tok)
        return out

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

    @torch.no_grad()
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
        """As :meth:`sample` (the same draws for the same generator), keeping the tokens:
        ``len(prompts)`` lists of ``n`` :class:`SampledSequence`."""
        if temperature < 0:
            raise InvalidArgumentError(f"temperature must be >= 0, got {temperature!r}")
        if n < 1:
            raise InvalidArgumentError(f"n must be >= 1, got {n!r}")
        max_new = self.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        top_p = self.top_p if top_p is None else float(top_p)
        was_training = self.model.training
        self.model.eval()
        try:
            per_batch = max(1, self.batch_size // n)
            out: list[list[SampledSequence]] = []
            for i in range(0, len(prompts), per_batch):
                out.extend(self._sample_batch(
                    list(prompts[i : i + per_batch]), n, temperature, generator, max_new, top_p
                ))
            return out
        finally:
            self.model.train(was_training)

    def _sample_batch(
        self,
        prompts: list[Prompt],
        n: int,
        temperature: float,
        generator: torch.Generator | None,
        max_new: int,
        top_p: float,
    ) -> list[list[SampledSequence]]:
        self.activate()
        limit = max(1, self.max_length - max_new)
        if self.max_prompt_length is not None:
            limit = min(limit, self.max_prompt_length)
        enc = [self.prompt_ids(p, limit) for p in prompts]
        width = max(len(e) for e in enc)
        ids = torch.full((len(enc), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(enc), width), dtype=torch.long)
        for j, e in enumerate(enc):  # left padding
            ids[j, width - len(e) :] = torch.tensor(e)
            mask[j, width - len(e) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        kw = {"logits_to_keep": 1} if self._keep_kw else {}
        pos_kw = (lambda p: {"position_ids": p}) if self._pos_kw else (lambda p: {})  # noqa: E731
        out = self.model(input_ids=ids, attention_mask=mask, use_cache=True, **pos_kw(pos), **kw)
        cache = getattr(out, "cache", None) or out.past_key_values
        # encode each prompt once, then repeat its cache for the n samples
        cache.batch_repeat_interleave(n)
        logits = out.logits[:, -1].float().repeat_interleave(n, dim=0)
        mask = mask.repeat_interleave(n, dim=0)
        last_pos = pos[:, -1].repeat_interleave(n, dim=0)
        b = logits.shape[0]
        stops = torch.tensor(self.stop_ids, device=self.device)
        tokens = torch.full((b, max_new), self.pad_id, dtype=torch.long, device=self.device)
        done = torch.zeros(b, dtype=torch.bool, device=self.device)
        lengths = torch.full((b,), max_new, dtype=torch.long, device=self.device)
        for t in range(max_new):
            nxt = self._next_token(logits, temperature, top_p, generator)
            nxt = torch.where(done, torch.full_like(nxt, self.pad_id), nxt)
            tokens[:, t] = nxt
            newly = torch.isin(nxt, stops) & ~done
            lengths = torch.where(newly, torch.full_like(lengths, t), lengths)
            done |= newly
            if bool(done.all()) or t == max_new - 1:
                break
            mask = torch.cat([mask, torch.ones((b, 1), dtype=mask.dtype, device=mask.device)], 1)
            last_pos = last_pos + 1
            out = self.model(input_ids=nxt[:, None], attention_mask=mask, use_cache=True,
                             **pos_kw(last_pos[:, None]), **{self._cache_kw: cache}, **kw)
            cache = getattr(out, "cache", None) or out.past_key_values
            logits = out.logits[:, -1].float()
        seqs = []
        tokens, done, lengths = tokens.cpu(), done.cpu(), lengths.cpu()
        for j in range(b):
            drawn = tokens[j, : lengths[j]].tolist()
            finished = bool(done[j])
            text = self.tokenizer.decode(drawn, skip_special_tokens=False,
                                         clean_up_tokenization_spaces=False)
            end = [int(tokens[j, lengths[j]])] if finished else []
            seqs.append(SampledSequence(text, tuple(enc[j // n]), tuple(drawn + end), finished))
        return [seqs[i * n : (i + 1) * n] for i in range(len(prompts))]

    @staticmethod
    def _next_token(
        logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
    ) -> torch.Tensor:
        if temperature == 0:
            return logits.argmax(-1)
        probs = torch.softmax(logits / temperature, dim=-1)
        if top_p < 1.0:
            probs = probs * nucleus_mask(probs, top_p)
        if generator is not None and generator.device != probs.device:
            return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(probs.device)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

    # -- persistence ----------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"max_new_tokens": self.max_new_tokens, "top_p": self.top_p,
                "batch_size": self.batch_size, "max_length": self.max_length,
                "max_prompt_length": self.max_prompt_length, "chat_template": self.chat_template,
                "gradient_checkpointing": self.gradient_checkpointing}

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
            self._load_base_state(self._read_model_state(path / "model"), path)
        self._lp_cache.clear()
        return self

    def _read_model_state(self, folder: Path) -> dict[str, torch.Tensor]:
        from transformers import AutoConfig, AutoModelForCausalLM

        from rlhf_env.progress import quiet_transformers

        if not folder.is_dir():
            raise DataError(f"no saved model at {folder}")
        cfg = AutoConfig.from_pretrained(str(folder))
        if cfg.model_type != self.model.config.model_type:
            raise DataError(f"{folder} holds a {cfg.model_type!r} model; this policy is a "
                            f"{self.model.config.model_type!r} model")
        with quiet_transformers():
            other, info = AutoModelForCausalLM.from_pretrained(
                str(folder), use_safetensors=True, output_loading_info=True)
        bad = {k: sorted(v) for k, v in info.items()
               if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
        if bad:
            raise DataError(f"the weights in {folder} do not match their config: "
                            + "; ".join(f"{k.replace('_', ' ')} {v[:5]}" for k, v in bad.items()))
        return other.state_dict()

    def _load_base_state(self, state: dict[str, torch.Tensor], where: Path) -> None:
        own = self.model.state_dict()
        names = {k.replace(".base_layer.", "."): k for k in own if ".lora_" not in k}
        missing, unexpected = sorted(set(names) - set(state)), sorted(set(state) - set(names))
        if missing or unexpected:
            raise DataError(
                f"the weights in {where} do not fit this policy's model: missing "
                f"{missing[:5]}{' ...' if len(missing) > 5 else ''}, unexpected "
                f"{unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        with torch.no_grad():
            for name, value in state.items():
                target = own[names[name]]
                if target.shape != value.shape:
                    raise DataError(f"the weights in {where}: {name} has shape "
                                    f"{tuple(value.shape)}, this model needs {tuple(target.shape)}")
                target.copy_(value.to(target.dtype))


def _attention(model: nn.Module) -> str | None:
    """The attention implementation transformers runs (``attn_implementation`` at load);
    transformers keeps it only in this underscored config field, which TRL reads too."""
    return getattr(model.config, "_attn_implementation", None)  # noqa: SLF001


def _gather_log_softmax(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] per row, in float32: ``(n, V), (n, 1) -> (n,)``."""
    x = logits.float()
    return x.gather(-1, targets)[:, 0] - x.logsumexp(-1)
