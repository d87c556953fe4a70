"""Scoring what a :class:`~rlhf_env.policies.CausalLMPolicy` sampled: exactly the tokens
drawn, under the distribution they were drawn from, each forward once (the policy's and
the reference's log-probs and the exact token KL from one pass of each, the samples of a
prompt after one copy of it), or taken from the samples themselves where they are exact."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from rlhf_env.errors import InvalidArgumentError
from rlhf_env.lm.scoring import nucleus_log_probs

if TYPE_CHECKING:
    from rlhf_env.policies.causal_lm import CausalLMPolicy

__all__ = ["SampledSequence", "SamplesMixin"]


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


class SamplesMixin:
    """The sample-scoring methods of :class:`~rlhf_env.policies.CausalLMPolicy`."""

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
