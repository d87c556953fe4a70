"""The env's oracle behind oat's oracle contract (sail-sg/oat), without oat installed.

oat's actors call an oracle through ``PreferenceOracleBase.compare(inputs, candidates_A,
candidates_B, batch_size=4, return_probs=False, disable_tqdm=False) ->
(list[float | bool], metric)``: for each input, whether candidate A is preferred to B.
:class:`EnvOracle` answers it from an env's training oracle (its annotators, flips and
biases), **charging every comparison to the env's ledger** (a call past the budget raises
:class:`~rlhf_env.QueryBudgetExceeded`; nothing of that call is charged), in calls of
``batch_size`` pairs.

``return_probs=True`` returns the drawn label as a float (1.0, 0.0, or 0.5 for a tie), not
a probability: the oracle's exact choice probability is computed from the gold reward,
which only the judge may see, and handing it out would give gold information for free.
``metric`` reports the queries this call charged and the ledger's counts. oat is not a
dependency: the contract is tested directly (its signature and semantics).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rlhf_env.errors import InvalidArgumentError
from rlhf_env.judging import instance_of  # the instance behind an env (no gold access)

__all__ = ["EnvOracle"]


class EnvOracle:
    """oat's ``compare`` over an env's charged oracle; see the module docstring.

    Args:
        env: an env made by :func:`rlhf_env.make` with preference feedback.
        seed: seeds the generator the oracle draws its labels from.
    """

    def __init__(self, env: Any, seed: int = 0) -> None:
        self.instance = instance_of(env)
        if self.instance.feedback != "preference":
            raise InvalidArgumentError("EnvOracle compares pairs: make the env with "
                                       "feedback='preference'")
        self.rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x0A7]))

    def compare(self, inputs: Sequence[str], candidates_A: Sequence[str],  # noqa: N803
                candidates_B: Sequence[str], batch_size: int = 4,  # noqa: N803
                return_probs: bool = False, disable_tqdm: bool = False
                ) -> tuple[list[float | bool], dict[str, Any]]:
        n = len(inputs)
        if not (n == len(candidates_A) == len(candidates_B)):
            raise InvalidArgumentError(
                f"compare got {n} inputs, {len(candidates_A)} A and {len(candidates_B)} B "
                "candidates: one pair per input")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if n > self.instance.queries_left:  # all or nothing: refuse before the first chunk
            from rlhf_env.errors import QueryBudgetExceeded

            raise QueryBudgetExceeded(self.instance.queries_used, self.instance.query_budget, n)
        out: list[float | bool] = []
        ties = 0
        for start in range(0, n, batch_size):
            sl = slice(start, start + batch_size)
            labels = self.instance.label(list(inputs[sl]), list(candidates_A[sl]),
                                         list(candidates_B[sl]), self.rng)
            for pref, tie in zip(labels.preference, labels.tie):
                ties += bool(tie)
                if return_probs:
                    out.append(0.5 if tie else float(pref))
                else:
                    out.append(bool(pref))  # a tie keeps A, as the shown order
        metric = {"oracle/queries": n, "oracle/ties": ties,
                  "oracle/queries_used": self.instance.queries_used,
                  "oracle/queries_left": self.instance.queries_left}
        return out, metric
