"""The one place an agent pays for labels.

:meth:`Collector.pairs` draws ``n`` train prompts through a vector view of the
instance (reset with the round's seed), asks the agent's ``propose`` function
for a pair of responses per prompt, and labels the batch in one vector step:
``n`` queries, one oracle call. Pairs the oracle calls a tie carry no
preference and are dropped (and counted in ``ties``); pairs of two identical
responses are kept in the data (and counted) but carry no preference either,
so the losses skip them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agents.data import PreferenceData
from rlhf_env.errors import InvalidArgumentError

__all__ = ["Collector", "Proposer", "check_budget"]

Proposer = Callable[[list[str]], tuple[list[str], list[str]]]
"""``propose(prompts) -> (responses_1, responses_2)``, one pair per prompt."""


class Collector:
    """Pays for labels through the env's vector view; counts what it paid.

    Args:
        instance: the problem instance (``env.unwrapped.instance``).
    """

    def __init__(self, instance: Any) -> None:
        self.instance = instance
        self.spent = 0
        self.ties = 0
        self._venvs: dict[int, Any] = {}

    def _venv(self, n: int) -> Any:
        from rlhf_env import RLHFVectorEnv

        if n not in self._venvs:
            self._venvs[n] = RLHFVectorEnv(self.instance, n)
        return self._venvs[n]

    def prompts(self, n: int, seed: int) -> list[str]:
        """The ``n`` train prompts a collection with ``seed`` would label (pays nothing)."""
        obs, _ = self._venv(n).reset(seed=seed)
        return list(obs["prompt"])

    def pairs(self, n: int, seed: int, propose: Proposer) -> PreferenceData:
        """Label ``n`` pairs: prompts drawn with ``seed``, responses from ``propose``."""
        venv = self._venv(n)
        obs, _ = venv.reset(seed=seed)
        prompts = list(obs["prompt"])
        a1, a2 = propose(prompts)
        _, _, _, _, info = venv.step((list(a1), list(a2)))
        final = info["final_info"]
        self.spent += n
        keep = [i for i in range(n) if not final["tie"][i]]
        self.ties += n - len(keep)
        return PreferenceData([prompts[i] for i in keep], [str(final["chosen"][i]) for i in keep],
                              [str(final["rejected"][i]) for i in keep])


def check_budget(agent: str, rounds: int, per_round: int, instance: Any) -> None:
    """Refuse (before anything is paid) a plan of ``rounds`` x ``per_round`` labels that the
    env's budget cannot pay for."""
    need, left = rounds * per_round, instance.ledger.available
    if per_round < 1 or need > left:
        raise InvalidArgumentError(
            f"{agent} plans {rounds} rounds x {per_round} labels = {need} queries, but "
            f"{left} of the env's {instance.query_budget} are left; make the env with "
            "setting='online' or 'hybrid' and a larger query_budget, or ask for fewer")
