"""The default backend: sampling with the policy's own ``transformers`` model, in process.

The loop is the one ``transformers.generate`` runs, written out so that it draws only from
the given ``torch.Generator`` (the same seed gives the same samples on a CPU) and returns
each drawn token's log-probability under the distribution it was drawn from. Each prompt
is encoded once and its cache repeated for its ``n`` samples. Prompts of very different
lengths are prefilled in groups of similar length rather than padded to the longest (on HH
prompts most prefilled positions were padding), then their caches are laid side by side;
the draws are the same as with one padded prefill, up to rounding.
"""

from __future__ import annotations

from typing import Any

import torch

from rlhf_env.backends.base import Draw, SamplingRequest
from rlhf_env.lm.scoring import Scorer, nucleus_log_probs, nucleus_mask

__all__ = ["HFGenerator", "next_token"]

# prefill in length groups when padding would be over this share of the prefilled positions
_PADDING_SHARE = 0.3
_MIN_WIDTH = 64  # ... and the longest prompt has at least this many tokens


def next_token(logits: torch.Tensor, temperature: float, top_p: float,
               generator: torch.Generator | None) -> torch.Tensor:
    """One draw per row of ``logits`` (float32) from softmax(logits / T) in the top-p
    nucleus; ``temperature=0`` is the argmax."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        probs = probs * nucleus_mask(probs, top_p)
    if generator is not None and generator.device != probs.device:
        return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(probs.device)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class HFGenerator:
    """Samples with a policy's model (a :class:`~rlhf_env.policies.CausalLMPolicy` or
    anything with ``model``, ``pad_id`` and ``activate``). It shares the policy's weights,
    so :meth:`sync` has nothing to hand over."""

    name = "hf"
    exact_log_probs = True

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    def sync(self, policy: Any) -> None:
        self.policy = policy

    def close(self) -> None:
        pass

    @torch.no_grad()
    def generate(self, request: SamplingRequest) -> list[list[Draw]]:
        model = self.policy.model
        was_training = model.training
        model.eval()
        try:
            per_batch = max(1, request.batch_size // request.n)
            out: list[list[Draw]] = []
            ctx = [list(c) for c in request.contexts]
            for i in range(0, len(ctx), per_batch):
                out.extend(self._batch(ctx[i : i + per_batch], request))
            return out
        finally:
            model.train(was_training)

    # -- one batch ---------------------------------------------------------------------------
    def _prefill(self, scorer: Scorer, enc: list[list[int]]
                 ) -> tuple[torch.Tensor, Any, torch.Tensor]:
        """The last position's logits (float32), the cache and the attention mask of
        left-padded prompts ``enc``."""
        model, dev = scorer.model, scorer.device
        width = max(len(e) for e in enc)
        mask = torch.zeros((len(enc), width), dtype=torch.long)
        for j, e in enumerate(enc):
            mask[j, width - len(e) :] = 1
        groups = self._groups(enc)
        parts = [self._forward(scorer, [enc[j] for j in g]) for g in groups]
        if len(parts) == 1:
            logits, cache = parts[0]
        else:
            merged = self._merge([p[1] for p in parts], groups, len(enc), width)
            if merged is None:  # a cache we cannot lay side by side: one padded prefill
                logits, cache = self._forward(scorer, enc)
            else:
                cache = merged
                logits = torch.empty((len(enc), parts[0][0].shape[-1]), device=dev)
                for g, (lg, _) in zip(groups, parts):
                    logits[torch.tensor(g, device=dev)] = lg
        del model
        return logits, cache, mask.to(dev)

    @staticmethod
    def _forward(scorer: Scorer, enc: list[list[int]]) -> tuple[torch.Tensor, Any]:
        width = max(len(e) for e in enc)
        ids = torch.full((len(enc), width), scorer.pad_id, dtype=torch.long)
        mask = torch.zeros((len(enc), width), dtype=torch.long)
        for j, e in enumerate(enc):  # left padding
            ids[j, width - len(e) :] = torch.tensor(e)
            mask[j, width - len(e) :] = 1
        dev = scorer.device
        ids, mask = ids.to(dev), mask.to(dev)
        kw: dict[str, Any] = {"logits_to_keep": 1} if scorer.keep_kw else {}
        if scorer.pos_kw:
            kw["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        out = scorer.model(input_ids=ids, attention_mask=mask, use_cache=True, **kw)
        return out.logits[:, -1].float(), getattr(out, "cache", None) or out.past_key_values

    @staticmethod
    def _groups(enc: list[list[int]]) -> list[list[int]]:
        """Rows to prefill together: all of them, unless padding would waste over
        :data:`_PADDING_SHARE` of a long batch; then runs of similar length."""
        lens = [len(e) for e in enc]
        width = max(lens)
        if width < _MIN_WIDTH or 1 - sum(lens) / (width * len(lens)) <= _PADDING_SHARE:
            return [list(range(len(enc)))]
        groups: list[list[int]] = []
        for j in sorted(range(len(enc)), key=lambda j: lens[j]):
            if groups and lens[j] <= 1.25 * lens[groups[-1][0]] + 8:
                groups[-1].append(j)
            else:
                groups.append([j])
        return groups

    @staticmethod
    def _merge(caches: list[Any], groups: list[list[int]], b: int, width: int) -> Any:
        """One cache for all rows: each group's keys and values right-aligned in a
        ``width``-wide left-padded batch, rows in their original order. None for caches
        other than plain full-attention ``DynamicCache`` layers."""
        from transformers.cache_utils import DynamicLayer

        layers = [getattr(c, "layers", None) for c in caches]
        if any(ls is None or any(type(x) is not DynamicLayer or x.keys is None for x in ls)
               for ls in layers):
            return None
        first = caches[0]
        for i, layer in enumerate(first.layers):
            merged = []
            for which in ("keys", "values"):
                t0 = getattr(layer, which)
                full = t0.new_zeros((b, t0.shape[1], width, t0.shape[3]))
                for g, ls in zip(groups, layers):
                    t = getattr(ls[i], which)
                    full[torch.tensor(g, device=t.device), :, width - t.shape[2] :] = t
                merged.append(full)
            layer.keys, layer.values = merged
        return first

    def _batch(self, enc: list[list[int]], req: SamplingRequest) -> list[list[Draw]]:
        policy, n = self.policy, req.n
        policy.activate()
        scorer: Scorer = policy.scorer
        dev = scorer.device
        logits, cache, mask = self._prefill(scorer, enc)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        # encode each prompt once, then repeat its cache for the n samples
        cache.batch_repeat_interleave(n)
        logits = logits.repeat_interleave(n, dim=0)
        mask = mask.repeat_interleave(n, dim=0)
        last_pos = pos[:, -1].repeat_interleave(n, dim=0)
        b, max_new = logits.shape[0], req.max_new_tokens
        stops = torch.tensor(req.stop_ids, device=dev)
        tokens = torch.full((b, max_new), scorer.pad_id, dtype=torch.long, device=dev)
        logq = torch.zeros((b, max_new), dtype=torch.float32, device=dev)
        done = torch.zeros(b, dtype=torch.bool, device=dev)
        lengths = torch.full((b,), max_new, dtype=torch.long, device=dev)
        kw: dict[str, Any] = {"logits_to_keep": 1} if scorer.keep_kw else {}
        for t in range(max_new):
            nxt = next_token(logits, req.temperature, req.top_p, req.generator)
            nxt = torch.where(done, torch.full_like(nxt, scorer.pad_id), nxt)
            tokens[:, t] = nxt
            logq[:, t] = nucleus_log_probs(logits, req.temperature, req.top_p).gather(
                -1, nxt[:, None])[:, 0]
            newly = torch.isin(nxt, stops) & ~done
            lengths = torch.where(newly, torch.full_like(lengths, t), lengths)
            done |= newly
            if bool(done.all()) or t == max_new - 1:
                break
            mask = torch.cat([mask, torch.ones((b, 1), dtype=mask.dtype, device=dev)], 1)
            last_pos = last_pos + 1
            step_kw = dict(kw)
            if scorer.pos_kw:
                step_kw["position_ids"] = last_pos[:, None]
            out = scorer.model(input_ids=nxt[:, None], attention_mask=mask, use_cache=True,
                               **step_kw, **{scorer.cache_kw: cache})
            cache = getattr(out, "cache", None) or out.past_key_values
            logits = out.logits[:, -1].float()
        tokens, done, lengths, logq = tokens.cpu(), done.cpu(), lengths.cpu(), logq.cpu()
        draws = []
        for j in range(b):
            k = int(lengths[j]) + int(done[j])  # the stop token drawn is kept
            draws.append(Draw(tuple(tokens[j, :k].tolist()), bool(done[j]),
                              tuple(logq[j, :k].tolist())))
        return [draws[i * n : (i + 1) * n] for i in range(len(enc))]
