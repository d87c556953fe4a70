"""The env's oracle behind oat's oracle contract (sail-sg/oat), without oat installed.

oat's actors call an oracle through ``PreferenceOracleBase.compare(inputs, candidates_A,
candidates_B, batch_size=4, return_probs=False, disable_tqdm=False) ->
(list[float | bool], metric)``: for each input, whether candidate A is preferred to B.
:class:`EnvOracle` answers it from an env's training oracle (its annotators, flips and
biases), **charging every comparison to the env's ledger**.

**All or nothing.** Every item of a call is checked first (each input one of the env's
train prompts, each candidate a response of the env, the three sequences of one length),
then the whole call is charged **once** and labelled in **one** oracle call: a bad item
anywhere, or a call past the budget (:class:`~rlhf_env.QueryBudgetExceeded`, also when
another thread spent the budget meanwhile), charges nothing and returns nothing.
``batch_size`` is checked and kept for the contract (oat's remote oracles send that many
pairs per request); the env's oracle labels the call in one batch, so it does not change
the labels or their cost.

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

from rlhf_env.errors import InvalidActionError, InvalidArgumentError
from rlhf_env.instance import as_column, check_positive_int, short
from rlhf_env.judging import instance_of  # the instance behind an env (no gold access)

__all__ = ["EnvOracle"]


class EnvOracle:
    """oat's ``compare`` over an env's charged oracle; see the module docstring.

    Args:
        env: an env made by :func:`rlhf_env.make` with preference feedback.
        seed: an int >= 0; seeds the generator the oracle draws its labels from.
    """

    def __init__(self, env: Any, seed: int = 0) -> None:
        seed = check_positive_int("EnvOracle's seed", seed, minimum=0)
        self.instance = instance_of(env)
        if self.instance.feedback != "preference":
            raise InvalidArgumentError("EnvOracle compares pairs: make the env with "
                                       "feedback='preference'")
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 0x0A7]))

    def _check(self, inputs: list[Any], a: list[Any], b: list[Any]) -> None:
        """Refuse the call, naming the first bad item, unless every item is valid."""
        inst = self.instance
        for i, p in enumerate(inputs):
            if not isinstance(p, str):
                raise InvalidArgumentError(
                    f"compare's inputs[{i}] must be a str (one of the env's train prompts), "
                    f"got {type(p).__name__} {short(p)}")
            if inst.train_prompt_index(p) is None:
                raise InvalidArgumentError(
                    f"compare's inputs[{i}] {short(p)} is not one of the env's "
                    f"{len(inst.train_prompts)} train prompts (env.unwrapped.train_prompts): "
                    "the oracle labels pairs for those only")
        for name, column in (("candidates_A", a), ("candidates_B", b)):
            for i, r in enumerate(column):
                if not isinstance(r, str):
                    raise InvalidArgumentError(
                        f"compare's {name}[{i}] must be a str (a response), got "
                        f"{type(r).__name__} {short(r)}")
                try:
                    inst.check_responses([r])
                except InvalidActionError as e:
                    raise InvalidArgumentError(f"compare's {name}[{i}]: {e}") from e

    def compare(self, inputs: Sequence[str], candidates_A: Sequence[str],  # noqa: N803
                candidates_B: Sequence[str], batch_size: int = 4,  # noqa: N803
                return_probs: bool = False, disable_tqdm: bool = False
                ) -> tuple[list[float | bool], dict[str, Any]]:
        # -- check the whole call: nothing is charged before every item passes ---------------
        ps = as_column(inputs, "compare's inputs")
        a = as_column(candidates_A, "compare's candidates_A")
        b = as_column(candidates_B, "compare's candidates_B")
        n = len(ps)
        if not (n == len(a) == len(b)):
            raise InvalidArgumentError(
                f"compare got {n} inputs, {len(a)} A and {len(b)} B candidates: one pair per "
                "input")
        check_positive_int("batch_size", batch_size)
        for name, flag in (("return_probs", return_probs), ("disable_tqdm", disable_tqdm)):
            if not isinstance(flag, (bool, np.bool_)):
                raise InvalidArgumentError(f"{name} must be a bool, got {short(flag)}")
        self._check(ps, a, b)
        # -- one charge, one oracle call: the ledger refuses the whole call or counts it all --
        out: list[float | bool] = []
        ties = 0
        if n:
            labels = self.instance.label(ps, a, b, self.rng)
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
