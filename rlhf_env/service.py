"""The oracle as a service: the instance's oracle, its ledger and the judge in one place,
and env views elsewhere that reach them only through the service's labelling methods.

:class:`OracleService` makes the env (so it holds the gold reward, theta* and the optimum)
and answers four kinds of calls: :meth:`~OracleService.public` (a picklable snapshot of
what agents may know), :meth:`~OracleService.settle` (label or score a batch, charged to
its ledger), :meth:`~OracleService.counts`, and :meth:`~OracleService.evaluate`. A
process that calls :func:`connect` with a client of the service gets an
:class:`~rlhf_env.core.RLHFEnv` whose instance carries no oracle and no judge: its ledger
(:class:`ServiceLedger`) forwards each batch, with the state of the env's oracle
generator, and takes back the answers and the advanced generator, so the labels are the
ones an in-process env would give, and every view of the service charges one ledger.

The transport is not this module's business: a *client* is any object with the service's
methods (e.g. the zoo wraps a Ray actor handle, :mod:`agents.zoo.distributed`). Nothing
here imports Ray.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rlhf_env.errors import RLHFEnvError
from rlhf_env.oracles import Labels, Oracle, QueryLedger
from rlhf_env.oracles.ledger import DurableLedger

__all__ = ["PublicInstance", "OracleService", "ServiceLedger", "connect"]


@dataclasses.dataclass
class PublicInstance:
    """What agents may know about an instance, as plain picklable data."""

    name: str
    kind: str
    setting: str
    feedback: str
    eta: float
    seed: int | None
    query_budget: int
    train_prompts: tuple[str, ...]
    eval_prompts: tuple[str, ...]
    reference: Any
    offline_dataset: Any
    response_space: Any
    max_prompt_length: int
    catalog: Any
    features: Any
    oracle_config: dict[str, Any]


class OracleService:
    """Holds one env — its instance, oracle, ledger and judge — and answers remote views.

    Args:
        env_id: a registered env id.
        env_kwargs: keyword arguments to :func:`rlhf_env.make` (not ``ledger``).
        ledger_path: an SQLite file for a :class:`DurableLedger` (None: in memory).
    """

    def __init__(self, env_id: str, env_kwargs: dict[str, Any] | None = None,
                 ledger_path: str | None = None,
                 identity: dict[str, Any] | None = None, token: str | None = None) -> None:
        import rlhf_env

        self.ledger = DurableLedger(ledger_path, identity=identity) if ledger_path else None
        kwargs = dict(env_kwargs or {})
        if self.ledger is not None:
            kwargs["ledger"] = self.ledger
        self.env = rlhf_env.make(env_id, **kwargs)
        self.instance = self.env.unwrapped.instance
        self._token = token
        if token is not None:  # evaluate and diagnose answer only with the token
            self.instance.ledger.seal(token)

    def _judged(self, token: str | None) -> Any:
        import contextlib

        from rlhf_env.judging import unsealed

        return unsealed(self.env, token) if self._token is not None else contextlib.nullcontext()

    # -- the durable record ---------------------------------------------------------------
    def open_ledger(self, command: str = "") -> int:
        """Open the durable ledger and start a session; returns the session id."""
        if self.ledger is None:
            return 0
        self.ledger.open()
        return self.ledger.begin_session(command=command)

    def end_session(self, status: str) -> None:
        if self.ledger is not None:
            self.ledger.end_session(status, self._token)

    def sessions(self) -> list[dict[str, Any]]:
        return self.ledger.sessions() if self.ledger is not None else []

    # -- what views call -------------------------------------------------------------------
    def public(self) -> PublicInstance:
        inst = self.instance
        return PublicInstance(
            name=inst.name, kind=inst.kind, setting=inst.setting, feedback=inst.feedback,
            eta=inst.eta, seed=inst.seed, query_budget=inst.query_budget,
            train_prompts=inst.train_prompts, eval_prompts=inst.eval_prompts,
            reference=inst.reference, offline_dataset=inst.offline_dataset,
            response_space=inst.response_space, max_prompt_length=inst.max_prompt_length,
            catalog=inst.catalog if inst.exact else None,
            features=inst.features if inst.kind == "linear" else None,
            oracle_config=inst.oracle_config)

    def settle(self, kind: str, prompts: list[str], responses: list[list[str]],
               rng_state: dict[str, Any] | None) -> tuple[Any, dict[str, Any] | None]:
        """Label (``kind="label"``) or score a batch through the instance (checked and
        charged); returns the answers and the oracle generator's state after the call."""
        rng = None
        if rng_state is not None:
            rng = np.random.Generator(np.random.PCG64())
            rng.bit_generator.state = rng_state
        if kind == "label":
            answers = self.instance.label(prompts, responses[0], responses[1], rng)
        else:
            answers = self.instance.score(prompts, responses[0])
        return answers, None if rng is None else rng.bit_generator.state

    def counts(self) -> dict[str, int]:
        """The ledger's ``used``, ``budget``, ``available`` and ``replayed`` queries."""
        ledger = self.instance.ledger
        return {"used": ledger.used, "budget": ledger.budget, "available": ledger.available,
                "replayed": getattr(ledger, "replayed", 0)}

    def evaluate(self, policy: Any, options: dict[str, Any] | None = None,
                 token: str | None = None) -> dict[str, float]:
        """:func:`rlhf_env.evaluate` of ``policy`` here, where the judge is (a sealed service:
        only with its token, which the zoo's harness holds and the agent's env view does not)."""
        from rlhf_env.evaluation import evaluate

        with self._judged(token):
            return evaluate(policy, self.env, **(options or {}))

    def diagnose(self, reward_fn: Any, policy: Any, token: str | None = None) -> dict[str, float]:
        """The learned reward's proxy reward on ``policy`` and its agreement with gold."""
        from rlhf_env.diagnostics import reward_diagnostics

        with self._judged(token):
            return reward_diagnostics(reward_fn, policy, self.env)


class ServiceLedger(QueryLedger):
    """A ledger whose charges (and answers) happen in an :class:`OracleService`.

    Args:
        client: an object with the service's ``settle`` and ``counts`` methods.
    """

    def __init__(self, client: Any) -> None:
        super().__init__(int(client.counts()["budget"]))
        self.client = client

    @property
    def used(self) -> int:
        return int(self.client.counts()["used"])

    @property
    def left(self) -> int:
        counts = self.client.counts()
        return int(counts["budget"] - counts["used"])

    @property
    def available(self) -> int:
        return int(self.client.counts()["available"])

    def charge(self, n: int) -> Any:  # type: ignore[override]
        raise TypeError("a service ledger charges in the service: use settle()")

    def settle(self, kind: str, prompts: Sequence[str], responses: Sequence[Sequence[str]],
               ask: Callable[[], Any], rng: np.random.Generator | None = None,
               oracle: str = "") -> Any:
        answers, state = self.client.settle(kind, list(prompts), [list(r) for r in responses],
                                            None if rng is None else rng.bit_generator.state)
        if rng is not None and state is not None:
            rng.bit_generator.state = state
        return answers


class _ServiceOracle(Oracle):
    """Stands in for the oracle that lives in the service (the ledger answers, not it)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._config = dict(config)
        self.name = str(config.get("name", "service"))

    def label(self, prompts: Sequence[str], responses_1: Sequence[str],
              responses_2: Sequence[str], rng: np.random.Generator) -> Labels:
        raise RLHFEnvError("a service view labels through its ledger, never locally")

    def config(self) -> dict[str, Any]:
        return dict(self._config)


def connect(client: Any) -> Any:
    """An env view over the service that ``client`` reaches; it holds no oracle or judge."""
    import gymnasium as gym

    from rlhf_env.core import RLHFEnv
    from rlhf_env.instance import CommonArgs, ProblemInstance

    pub: PublicInstance = client.public()
    oracle = _ServiceOracle(pub.oracle_config)
    ledger = ServiceLedger(client)
    common = CommonArgs.check(setting=pub.setting, query_budget=pub.query_budget or None,
                              eta=pub.eta, seed=pub.seed, feedback=pub.feedback, oracle=oracle,
                              ledger=ledger, default_budget=pub.query_budget)
    instance = ProblemInstance(
        kind=pub.kind, common=common, oracle=oracle, train_prompts=pub.train_prompts,
        eval_prompts=pub.eval_prompts, reference=pub.reference,
        offline_dataset=pub.offline_dataset, response_space=pub.response_space,
        max_prompt_length=pub.max_prompt_length, catalog=pub.catalog, features=pub.features,
        name=pub.name)
    env = RLHFEnv(instance)
    gym_id = f"rlhf_env/{pub.name}"
    if gym_id in gym.registry:
        env.spec = gym.spec(gym_id)
    return env
