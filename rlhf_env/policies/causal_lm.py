"""A policy over any Hugging Face causal language model.

pi(response | prompt) is the model's probability of the response's tokens
followed by one EOS. Pitfalls handled here (see DESIGN.md):

* the prompt/response token boundary: the prompt and prompt+response are
  tokenized, and the response's tokens are what follows their common prefix,
  so a response whose first characters merge with the prompt's last token is
  scored on the merged token;
* masks come from lengths, never from ``token == pad_id`` (pad may equal EOS);
* exactly one EOS ends every scored response; sampling stops at the first;
* left padding for generation, with position ids counted from the first real
  token; the prompt is encoded once and its cache repeated for ``n`` samples;
* frozen copies are in eval mode and cache their log-probs per (prompt,
  response), so reference log-probs over a dataset are computed once.

``log_prob(prompt, response)`` is the probability of a *complete* response (its
text re-encoded, then EOS). A sample is not always that: one cut at
``max_new_tokens`` drew no EOS, and one whose bytes are not valid UTF-8 decodes to
text (with U+FFFD) that re-encodes to other tokens. For estimates over samples
(the Monte Carlo KL) use :meth:`CausalLMPolicy.sample_sequences`, which keeps
the tokens drawn, and :meth:`CausalLMPolicy.sequence_log_probs`, which scores
exactly those tokens under the distribution they were drawn from (temperature,
top-p).

Sampling draws only from the ``torch.Generator`` it is given.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rlhf_env.errors import DataError, InvalidArgumentError
from rlhf_env.lm.loading import (  # noqa: F401  (re-exported: their home before the split)
    load_causal_lm,
    pretrained_kwargs,
    resolve_device,
    resolve_dtype,
)
from rlhf_env.policies.base import CONFIG_NAME, Policy, register_policy_class
from rlhf_env.progress import log

__all__ = ["CausalLMPolicy", "SampledSequence", "nucleus_mask", "nucleus_log_probs",
           "load_causal_lm", "pretrained_kwargs", "resolve_device", "resolve_dtype"]


@dataclasses.dataclass(frozen=True)
class SampledSequence:
    """One sampled response, with the tokens that were drawn.

    Attributes:
        text: the decoded response (EOS not included).
        context_ids: the prompt's tokens as the sampler fed them to the model.
        token_ids: the response tokens drawn, in order; ends with EOS iff ``finished``.
        finished: whether EOS was drawn (False: cut at ``max_new_tokens``).
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


@register_policy_class
class CausalLMPolicy(Policy):
    """A :class:`Policy` over a ``transformers`` causal LM and its tokenizer.

    Args:
        model: a causal LM (``PreTrainedModel``), a hub id or a local path.
        tokenizer: its tokenizer (loaded with the model when ``model`` is a name).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"`` (default: the model's).
        dtype: ``"float32"``, ``"bfloat16"``, ``"float16"`` or a torch dtype.
        max_new_tokens: default cap on sampled response length (tokens, EOS excluded).
        top_p: default nucleus sampling threshold (1.0 = off).
        batch_size: sequences per forward pass in :meth:`log_prob` and :meth:`sample`.
        max_length: context length in tokens (default: the model's).
        revision: the hub revision to load (a model given by name).
        allow_bin_weights: also load ``.bin`` (pickle) weights; safetensors only otherwise.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        max_new_tokens: int = 64,
        top_p: float = 1.0,
        batch_size: int = 32,
        max_length: int | None = None,
        revision: str | None = None,
        allow_bin_weights: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(model, (str, Path)):
            model, loaded_tok = load_causal_lm(model, revision=revision,
                                               allow_bin_weights=allow_bin_weights)
            tokenizer = tokenizer or loaded_tok
        if tokenizer is None:
            raise InvalidArgumentError("CausalLMPolicy needs the model's tokenizer")
        if not hasattr(model, "get_output_embeddings") or model.get_output_embeddings() is None:
            raise DataError(f"{type(model).__name__} is not a causal LM (it has no LM head)")
        if tokenizer.eos_token_id is None:
            raise InvalidArgumentError("the tokenizer has no eos_token; set one before use")
        if not 0 < top_p <= 1:
            raise InvalidArgumentError(f"top_p must be in (0, 1], got {top_p!r}")
        dev = resolve_device(device) if device is not None else next(model.parameters()).device
        model = model.to(device=dev, dtype=resolve_dtype(dtype))
        self.model = model
        self.tokenizer = tokenizer
        self.eos_id = int(tokenizer.eos_token_id)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                          else tokenizer.eos_token_id)
        self.bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else self.eos_id
        self.max_new_tokens = int(max_new_tokens)
        self.top_p = float(top_p)
        self.batch_size = int(batch_size)
        cfg = model.config
        ctx = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        self.max_length = int(max_length or ctx or 2048)
        self.truncated = 0  # sequences truncated to fit the context, for the record
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._lp_cache: dict[tuple[str, str], float] = {}

    # -- basics -------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def freeze(self) -> CausalLMPolicy:
        super().freeze()
        self._lp_cache.clear()  # frozen from now on: log-probs never change, so remember them
        return self

    @property
    def frozen(self) -> bool:
        """No parameter takes gradients and the model is in eval mode (log-probs are cached)."""
        return not self.model.training and not any(p.requires_grad for p in self.parameters())

    def encode(self, text: str) -> list[int]:
        """The token ids of ``text`` as this policy encodes prompts."""
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def _split(self, prompt: str, response: str) -> tuple[list[int], list[int]]:
        """Token ids of (context, response + EOS), cut at the common prefix."""
        p_ids = self.encode(prompt)
        f_ids = self.encode(prompt + response)
        k = 0
        for a, b in zip(p_ids, f_ids):
            if a != b:
                break
            k += 1
        ctx, resp = f_ids[:k], f_ids[k:] + [self.eos_id]
        if not ctx:
            ctx = [self.bos_id]  # the first response token needs a context
        if len(ctx) + len(resp) > self.max_length:
            self.truncated += 1
            if self.truncated == 1 or self.truncated % 1000 == 0:
                log.warning(
                    "a prompt+response of %d tokens exceeds the context of %d; the prompt is cut "
                    "from the left (then the response from the right). Truncated so far: %d "
                    "(policy.truncated)", len(ctx) + len(resp), self.max_length, self.truncated)
            keep_ctx = max(1, self.max_length - len(resp))
            ctx = ctx[-keep_ctx:]
            resp = resp[: self.max_length - len(ctx)]
        return ctx, resp

    # -- log-probs ---------------------------------------------------------------------------
    def _forward_logits(self, ids: torch.Tensor, mask: torch.Tensor, **kw: Any) -> Any:
        return self.model(input_ids=ids, attention_mask=mask, **kw)

    def token_log_probs(
        self, prompts: Sequence[str], responses: Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed response log-probs (EOS included) and the response lengths in tokens.

        Returns ``(logp, n_tokens)``, each of shape ``(n,)``; ``logp`` is differentiable.
        """
        if len(prompts) != len(responses):
            raise InvalidArgumentError(
                f"log_prob got {len(prompts)} prompts and {len(responses)} responses"
            )
        pairs = [self._split(p, r) for p, r in zip(prompts, responses)]
        # batch sequences of similar length together (less padding), then restore the order
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        out, lens = [], []
        for i in range(0, len(order), self.batch_size):
            chunk = [pairs[j] for j in order[i : i + self.batch_size]]
            total = [len(c) + len(r) for c, r in chunk]
            width = max(total)
            ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            resp_mask = torch.zeros((len(chunk), width - 1), dtype=torch.bool)
            for j, (c, r) in enumerate(chunk):
                ids[j, : total[j]] = torch.tensor(c + r)
                mask[j, : total[j]] = 1
                # token t is predicted at position t - 1; response tokens start at len(c)
                resp_mask[j, len(c) - 1 : total[j] - 1] = True
            ids, mask, resp_mask = ids.to(self.device), mask.to(self.device), resp_mask.to(self.device)
            logits = self._forward_logits(ids, mask).logits[:, :-1].float()  # (b, t-1, V)
            target = ids[:, 1:]
            tok_lp = logits.gather(-1, target.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
            out.append((tok_lp * resp_mask).sum(-1))
            lens.append(resp_mask.sum(-1))
        if not out:
            return torch.zeros(0, device=self.device), torch.zeros(0, dtype=torch.long)
        inverse = torch.argsort(torch.tensor(order, device=self.device))
        return torch.cat(out)[inverse], torch.cat(lens)[inverse]

    def log_prob(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        if not self.frozen:
            return self.token_log_probs(prompts, responses)[0]
        keys = list(zip(prompts, responses))
        missing = list(dict.fromkeys(k for k in keys if k not in self._lp_cache))
        if missing:
            with torch.no_grad():
                lp = self.token_log_probs([k[0] for k in missing], [k[1] for k in missing])[0]
            self._lp_cache.update(zip(missing, lp.tolist()))
        return torch.tensor([self._lp_cache[k] for k in keys], device=self.device)

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
        ``top_p`` (None: this policy's default; see :func:`nucleus_log_probs`). No EOS is
        added and nothing is re-encoded: pass the ``context_ids`` and ``token_ids`` of
        :meth:`sample_sequences` to score what was drawn. A context longer than the model's
        window is cut from the left. Returns float64 ``(n,)`` (no gradient); -inf for a
        token outside q's support.
        """
        if len(contexts) != len(responses):
            raise InvalidArgumentError(
                f"sequence_log_probs got {len(contexts)} contexts and {len(responses)} responses")
        if temperature < 0:
            raise InvalidArgumentError(f"temperature must be >= 0, got {temperature!r}")
        top_p = self.top_p if top_p is None else float(top_p)
        pairs = []
        for ctx, resp in zip(contexts, responses):
            ctx, resp = list(ctx) or [self.bos_id], list(resp)
            if len(resp) >= self.max_length:
                raise InvalidArgumentError(
                    f"a response of {len(resp)} tokens does not fit the context of "
                    f"{self.max_length} tokens")
            pairs.append((ctx[-(self.max_length - len(resp)):], resp))
        out = torch.zeros(len(pairs), dtype=torch.float64)
        was_training = self.model.training
        self.model.eval()
        try:
            for i in range(0, len(pairs), self.batch_size):
                chunk = pairs[i : i + self.batch_size]
                total = [len(c) + len(r) for c, r in chunk]
                width = max(total)
                ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                resp_mask = torch.zeros((len(chunk), width - 1), dtype=torch.bool)
                for j, (c, r) in enumerate(chunk):
                    ids[j, : total[j]] = torch.tensor(c + r)
                    mask[j, : total[j]] = 1
                    resp_mask[j, len(c) - 1 : total[j] - 1] = True  # token t predicted at t - 1
                ids, mask = ids.to(self.device), mask.to(self.device)
                logits = self._forward_logits(ids, mask).logits[:, :-1].float()  # (b, t-1, V)
                lq = nucleus_log_probs(logits, temperature, top_p)
                tok = lq.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1).double().cpu()
                tok = torch.where(resp_mask, tok, torch.zeros_like(tok))
                out[i : i + len(chunk)] = tok.sum(-1)
        finally:
            self.model.train(was_training)
        return out

    # -- sampling -------------------------------------------------------------------------------
    def sample(
        self,
        prompts: Sequence[str],
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
        prompts: Sequence[str],
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
        prompts: list[str],
        n: int,
        temperature: float,
        generator: torch.Generator | None,
        max_new: int,
        top_p: float,
    ) -> list[list[SampledSequence]]:
        limit = max(1, self.max_length - max_new)
        enc = []
        for p in prompts:
            ids = self.encode(p) or [self.bos_id]
            if len(ids) > limit:
                self.truncated += 1
                ids = ids[-limit:]
            enc.append(ids)
        width = max(len(e) for e in enc)
        ids = torch.full((len(enc), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(enc), width), dtype=torch.long)
        for j, e in enumerate(enc):  # left padding
            ids[j, width - len(e) :] = torch.tensor(e)
            mask[j, width - len(e) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        cache = getattr(out, "cache", None) or out.past_key_values
        # encode each prompt once, then repeat its cache for the n samples
        cache.batch_repeat_interleave(n)
        logits = out.logits[:, -1].float().repeat_interleave(n, dim=0)
        mask = mask.repeat_interleave(n, dim=0)
        last_pos = pos[:, -1].repeat_interleave(n, dim=0)
        b = logits.shape[0]
        tokens = torch.full((b, max_new), self.pad_id, dtype=torch.long, device=self.device)
        done = torch.zeros(b, dtype=torch.bool, device=self.device)
        lengths = torch.full((b,), max_new, dtype=torch.long, device=self.device)
        for t in range(max_new):
            nxt = self._next_token(logits, temperature, top_p, generator)
            nxt = torch.where(done, torch.full_like(nxt, self.pad_id), nxt)
            tokens[:, t] = nxt
            newly = (nxt == self.eos_id) & ~done
            lengths = torch.where(newly, torch.full_like(lengths, t), lengths)
            done |= newly
            if bool(done.all()) or t == max_new - 1:
                break
            mask = torch.cat([mask, torch.ones((b, 1), dtype=mask.dtype, device=mask.device)], 1)
            last_pos = last_pos + 1
            out = self.model(input_ids=nxt[:, None], attention_mask=mask,
                             position_ids=last_pos[:, None], use_cache=True,
                             **{self._cache_kw: cache})
            cache = getattr(out, "cache", None) or out.past_key_values
            logits = out.logits[:, -1].float()
        seqs = []
        for j in range(b):
            drawn = tokens[j, : lengths[j]].tolist()
            finished = bool(done[j])
            text = self.tokenizer.decode(drawn, skip_special_tokens=False,
                                         clean_up_tokenization_spaces=False)
            seqs.append(SampledSequence(text, tuple(enc[j // n]),
                                        tuple(drawn + [self.eos_id] if finished else drawn),
                                        finished))
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
                "batch_size": self.batch_size, "max_length": self.max_length}

    def save(self, path: str | Path) -> Path:
        """Write the model (safetensors) and tokenizer under ``path/model`` plus ``policy.json``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path / "model", safe_serialization=True)
        self.tokenizer.save_pretrained(path / "model")
        meta = {"class": type(self).__name__, "config": self.config()}
        (path / CONFIG_NAME).write_text(json.dumps(meta, indent=1))
        return path

    @classmethod
    def load_folder(cls, path: Path, config: dict[str, Any]) -> CausalLMPolicy:
        return cls(str(path / "model"), **config)

    def load_weights(self, path: str | Path) -> CausalLMPolicy:
        from safetensors.torch import load_file

        state = load_file(str(Path(path) / "model" / "model.safetensors"))
        self.model.load_state_dict(state, strict=False)
        self._lp_cache.clear()
        return self
