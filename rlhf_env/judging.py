"""The judge: the privileged side of a problem instance.

The gold reward r*, the hidden parameters (theta* of a linear env), the
optimal policy, the behaviour policies that made the offline data, and the
training oracle without the ledger. Evaluation, tests, benchmarks and
analysis code ask for it explicitly::

    j = rlhf_env.judge(env)          # env, env.unwrapped, a vector env or the instance
    j.gold_rewards(prompts, responses)
    j.optimal_policy()               # exact envs
    j.theta_star                     # linear envs

The env an agent holds (``env``, ``env.unwrapped``, the vector env) exposes
none of this, and nothing under ``agents/`` imports this module (a test walks
their imports). Python cannot stop a determined cheat; this stops accidents and
makes any reach visible in review.

**Sealed runs.** The zoo seals every run's ledger (:meth:`QueryLedger.seal`) and opens a
session on it while the agent learns. The run's own judge then answers only inside
:func:`unsealed` with the run's token. And while such a run is in progress in a process
(:func:`rlhf_env.oracles.ledger.runs_in_progress`), outside :func:`unsealed`:

* no other judge answers either, and
* no new problem instance can be made unless it is charged to a sealed ledger (an env
  made from the live env's ``spec`` shares the run's ledger, and so is allowed).

Otherwise ``rlhf_env.make(id, seed=s)`` would give the agent a twin of its own instance:
the same gold reward and theta*, a judge that answers, a fresh offline dataset and a fresh
query budget, none of it charged to the run. The seal holds within one process only: an
agent that starts another Python process can build the same instance there.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from rlhf_env.errors import InvalidArgumentError, PrivilegedAttributeError, RLHFEnvError
from rlhf_env.instance import ProblemInstance
from rlhf_env.oracles import Oracle, RewardFn
from rlhf_env.oracles.base import finite_rewards
from rlhf_env.policies import TabularPolicy
from rlhf_env.policies.closed_forms import gibbs_log_probs

__all__ = ["Judge", "judge", "attach", "instance_of", "unsealed", "refuse_during_a_run"]

_JUDGES: weakref.WeakKeyDictionary[ProblemInstance, Judge] = weakref.WeakKeyDictionary()


class Judge:
    """What evaluation knows about an instance and agents do not.

    Args:
        instance: the problem instance judged.
        gold_reward: r*(prompts, responses) -> float array, the clean gold reward.
        oracle: the training oracle (bound), for analysis without the ledger.
        reward_table: r* for every prompt and candidate, ``(N, K)`` (exact kinds).
        theta_star: the hidden reward parameter (linear kind).
        behaviours: name -> ``(N, K)`` behaviour policies of the offline data (exact kinds).
        behaviour: the name of the behaviour that made this instance's offline data.
    """

    def __init__(self, instance: ProblemInstance, *, gold_reward: RewardFn, oracle: Oracle,
                 reward_table: np.ndarray | None = None, theta_star: np.ndarray | None = None,
                 behaviours: dict[str, np.ndarray] | None = None,
                 behaviour: str | None = None) -> None:
        # the judge kept in _JUDGES refers to its instance weakly (a strong reference would keep
        # its own key alive); the one judge() hands out holds it (see hold())
        self._instance = weakref.ref(instance)
        self._holds: ProblemInstance | None = None
        self._gold = gold_reward
        self.oracle = oracle
        self._table = None if reward_table is None else np.asarray(reward_table, np.float64)
        self._theta = None if theta_star is None else np.asarray(theta_star, np.float64)
        self._behaviours = dict(behaviours or {})
        self.behaviour = behaviour
        self.cache: dict[Any, Any] = {}  # costly privileged estimates (e.g. a Monte Carlo J*)

    def hold(self) -> Judge:
        """A copy of this judge that keeps its instance alive for as long as it is kept."""
        twin = copy.copy(self)
        twin.keep(self.instance)
        return twin

    def keep(self, instance: ProblemInstance) -> None:
        """Keep ``instance`` (this judge's) alive with this judge."""
        if instance is not self.instance:
            raise RLHFEnvError("a judge keeps only its own instance")
        self._holds = instance

    @property
    def instance(self) -> ProblemInstance:
        """The instance judged."""
        inst = self._instance()
        if inst is None:
            raise RLHFEnvError("the instance of this judge no longer exists")
        return inst

    def gold_rewards(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """r*(x, a) for each pair, float64 ``(n,)``, outside the budget."""
        return finite_rewards(self._gold, prompts, responses)

    def reward_table(self) -> np.ndarray:
        """r*(x, a) for every prompt and candidate, ``(N, K)`` (a copy; exact kinds)."""
        if self._table is None:
            raise InvalidArgumentError(
                f"{self.instance.name} is a {self.instance.kind} env: it has no reward table")
        return self._table.copy()

    def optimal_policy(self) -> TabularPolicy:
        """The Gibbs policy pi* ∝ pi0 exp(r*/eta) (Xiong et al. 2024, Eq. (3)); exact kinds."""
        inst = self.instance
        log_ref = inst.reference.log_probs_table().detach().double().cpu().numpy()
        logp = gibbs_log_probs(log_ref, self.reward_table(), inst.eta)
        return TabularPolicy(inst.catalog, torch.from_numpy(logp))

    @property
    def theta_star(self) -> np.ndarray:
        """The hidden parameter of the linear reward r* = <theta*, phi> (a copy)."""
        if self._theta is None:
            raise InvalidArgumentError(f"{self.instance.name} is not a linear env: no theta*")
        return self._theta.copy()

    def behaviour_probs(self, name: str | None = None) -> np.ndarray:
        """A behaviour policy of the offline data, ``(N, K)`` probabilities (default: the
        one that made this instance's data)."""
        name = name or self.behaviour
        if name not in self._behaviours:
            raise InvalidArgumentError(
                f"no behaviour {name!r} on {self.instance.name}; known: {sorted(self._behaviours)}")
        return self._behaviours[name].copy()


def attach(instance: ProblemInstance, judge: Judge) -> None:
    """Record the judge of ``instance`` (once, when the env is made)."""
    if instance in _JUDGES:
        raise RLHFEnvError(f"{instance.name} already has a judge")
    if judge.instance is not instance:
        raise RLHFEnvError("the judge belongs to another instance")
    _JUDGES[instance] = judge


def instance_of(env: Any) -> ProblemInstance:
    """The problem instance behind an env, ``env.unwrapped``, a vector env or an instance."""
    if isinstance(env, ProblemInstance):
        return env
    inst = getattr(getattr(env, "unwrapped", env), "instance", None)
    if not isinstance(inst, ProblemInstance):
        raise InvalidArgumentError(
            f"{type(env).__name__} is not an rlhf_env environment (made by rlhf_env.make)")
    return inst


_OPEN = threading.local()  # per thread: the ledgers whose seal is open in this thread


@contextlib.contextmanager
def unsealed(env: Any, token: str) -> Iterator[None]:
    """Within: :func:`judge` (so :func:`rlhf_env.evaluate`, the diagnostics, the oracle
    report, J(pi*)) answers for ``env``'s sealed instance, in this thread only.

    The zoo seals every run's ledger with a fresh token (:meth:`QueryLedger.seal`) and
    evaluates inside this context; an agent, which runs outside it, gets a
    :class:`PrivilegedAttributeError` from any of those calls, as from any env re-made from
    the live env's spec (it shares the sealed ledger).
    """
    ledger = instance_of(env).ledger
    if not ledger.opens(token):
        raise PrivilegedAttributeError("that is not the token this env was sealed with")
    opened = getattr(_OPEN, "ledgers", None)
    if opened is None:
        opened = _OPEN.ledgers = []
    opened.append(ledger)
    try:
        yield
    finally:
        opened.remove(ledger)


def refuse_during_a_run(what: str) -> None:
    """Raise :class:`PrivilegedAttributeError` naming ``what`` when a sealed zoo run is in
    progress in this process and this thread is not inside :func:`unsealed` (the harness);
    see the module docstring."""
    if getattr(_OPEN, "ledgers", None):
        return
    from rlhf_env.oracles.ledger import runs_in_progress

    if runs_in_progress():
        raise PrivilegedAttributeError(
            f"{what}: a zoo run is in progress in this process, and while it lasts only its "
            "harness reaches a judge or makes a new instance (a fresh instance of the same id "
            "and seed would hold the run's gold reward and an uncharged budget). Make your "
            "envs and evaluate them before or after the run; inside it, use the views of the "
            "run's env (env.unwrapped.make_vec, or rlhf_env.make from its spec)")


def judge(env: Any) -> Judge:
    """The :class:`Judge` of the instance behind ``env`` (evaluation and analysis only).

    A sealed instance (a zoo run's) answers only inside :func:`unsealed`, and while a zoo
    run is in progress in this process no judge answers outside it (module docstring)."""
    inst = instance_of(env)
    if inst not in _JUDGES:
        raise RLHFEnvError(f"{inst.name} has no judge (it was not made by an rlhf_env env)")
    ledger = inst.ledger
    if getattr(ledger, "sealed", False) and not any(
            led is ledger for led in getattr(_OPEN, "ledgers", None) or ()):
        raise PrivilegedAttributeError(
            f"{inst.name} is sealed: it belongs to a zoo run, whose harness evaluates it; the "
            "judge (gold reward, evaluation, diagnostics, the oracle report) is not reachable "
            "from the agent's side. Make an env of your own to evaluate outside a run")
    refuse_during_a_run(f"the judge of {inst.name}")
    return _JUDGES[inst].hold()
