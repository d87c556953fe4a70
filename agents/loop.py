"""The Agent base class: it owns ``learn()``, as stable-baselines3's base class owns its loop.

``learn()`` runs rounds t = start, ..., R − 1 of

1. **collect** (:meth:`Agent.collect`): the round's new labelled pairs, paid for through
   :attr:`Agent.collector` (the one place an agent pays); None for a round that asks
   nothing (offline agents). With a checkpoint folder the pairs are written as soon as
   they are paid for, and a resumed round reads them back instead of asking again.
2. **fit** (:meth:`Agent.fit`): update :attr:`Agent.policy` from the data; returns the
   round's metrics.
3. **checkpoint**: the policy after the round, then the round marked complete.
4. **log**: ``train/iteration`` (one point per round), ``oracle/queries_used``,
   ``train/pairs`` and the round's metrics, at ``global_step``.
5. **callback** ``callback(agent, info)``; returning False stops after the round.

An agent implements what differs: :meth:`n_rounds`, :meth:`setup`, :meth:`collect`,
:meth:`fit`, and, if it keeps state beyond its policy and data, :meth:`state` /
:meth:`load_state`. An agent that cannot continue from a checkpoint sets
``resumable = False`` and refuses ``resume_from`` with a clear error.

``global_step`` counts the policy updates the agent has made so far: one per
optimiser step of a gradient-trained policy, one per closed-form refit, one per PPO
update (a rollout and its epochs). It never goes back across a resume and is the x axis
of every TensorBoard scalar the agent writes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from agents.base import RUNTIME_KEYS, AgentConfig, RunLogger
from agents.checkpoint import Checkpointer
from agents.collect import Collector
from agents.data import PreferenceData
from agents.hyperparams import resolve_entries, split_run_keys
from rlhf_env.errors import InvalidArgumentError
from rlhf_env.policies import FinitePolicy, Policy, TabularPolicy, is_registered, load_policy

__all__ = ["Agent", "Callback", "env_id_of"]

log = logging.getLogger("agents")

Callback = Callable[["Agent", dict[str, Any]], Any]
"""``callback(agent, info)``, called after each round; return False to stop early."""


def env_id_of(env: Any) -> str | None:
    """The registered id of ``env`` (``LinearBT-v0``), or None."""
    spec = getattr(env, "spec", None) or getattr(getattr(env, "unwrapped", None), "spec", None)
    env_id = getattr(spec, "id", None)
    if isinstance(env_id, str) and env_id.startswith("rlhf_env/"):
        env_id = env_id[len("rlhf_env/"):]
    return env_id


def _instance_of(env: Any) -> Any:
    inst = getattr(getattr(env, "unwrapped", env), "instance", env)
    if not hasattr(inst, "kind") or not hasattr(inst, "label"):
        raise InvalidArgumentError(
            f"agents learn on rlhf_env environments (rlhf_env.make), got {type(env).__name__}")
    return inst


class Agent:
    """Base class of every agent; see the module docstring.

    Args:
        env: an env made by :func:`rlhf_env.make` (or its ``unwrapped``, or a vector view).
        **hparams: overrides of the agent's hyperparameters, on top of
            ``zoo_configs/<agent>.yml`` (``default``, the env's kind, the env's id);
            an unknown name is an error.
    """

    name: ClassVar[str] = "agent"
    Config: ClassVar[type[AgentConfig]] = AgentConfig
    description: ClassVar[str] = ""
    resumable: ClassVar[bool] = True
    uses_offline_data: ClassVar[bool] = True
    """Whether the agent learns from the env's offline pairs (they count as labels it used)."""
    kinds: ClassVar[tuple[str, ...]] = ("exact", "linear", "sampled")
    """The env kinds the agent learns on, checked from an env id's spec before the env is
    built (:func:`check_kind`), so that a mismatch costs nothing."""
    relative_cost: ClassVar[float] = 1.0
    """A scheduling hint: a run's wall time relative to a typical agent's on the same env.
    Parallel leaderboards start the costliest runs first (so that no long run is left alone
    at the end); measured wall times of finished runs take precedence over it."""

    @classmethod
    def check_kind(cls, kind: str, env_name: str) -> None:
        """Refuse an env of a kind this agent does not learn on (from its spec's kind)."""
        if kind not in cls.kinds:
            raise InvalidArgumentError(
                f"agent {cls.name!r} learns on {' or '.join(cls.kinds)} envs; {env_name} is a "
                f"{kind} env")

    def __init__(self, env: Any, **hparams: Any) -> None:
        self.env = env
        self.instance = _instance_of(env)
        self.check_kind(self.instance.kind, self.instance.name)
        self.env_id = env_id_of(env)
        valid = [k for k in [*self.Config.field_names(), *self.Config.ALIASES]
                 if k not in RUNTIME_KEYS]
        yaml_values, _ = split_run_keys(resolve_entries(
            self.name, self.env_id, self.instance.kind, valid=valid))
        self.config = self.Config.from_dict(
            {**self.Config.canonical(yaml_values), **self.Config.canonical(hparams)},
            source=f"zoo_configs/{self.name}.yml or the keyword arguments")
        self.config.check_env(self.instance)
        self.validate()
        self.policy: Policy = self.instance.reference
        self.logger = RunLogger(self.config.tensorboard_log, self.config.run_name)
        self.collector = Collector(self.instance)
        self.data = PreferenceData()  # the pairs this agent paid for, round by round
        # the reward model the agent learned and optimises (a reward function), if it has
        # one: the zoo reports its agreement with the gold reward and the proxy reward
        self.reward_model: Any = None
        self.global_step = 0
        self.start_round = 0  # the first round this learn() runs (> 0 when resumed)

    # -- what an agent implements ----------------------------------------------------------
    def validate(self) -> None:
        """Refuse an env this agent cannot learn on (before anything is paid); default: none."""

    def n_rounds(self) -> int:
        """How many rounds ``learn`` runs (default 1)."""
        return 1

    def setup(self) -> None:
        """Prepare before the first round to run (fresh or resumed): data, reward models."""

    def collect(self, t: int) -> PreferenceData | None:
        """Round ``t``'s new labelled pairs, paid through ``self.collector`` (None: none)."""
        return None

    def fit(self, t: int, new: PreferenceData | None) -> dict[str, float]:
        """Update ``self.policy`` after round ``t``'s collection; return the round's metrics,
        named with their group (``train/...``, ``oracle/...``), logged once per round."""
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """JSON-serialisable state to checkpoint beyond the policy and the data."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""

    def finish(self) -> None:
        """After the last round (e.g. the final policy of an algorithm that returns one)."""

    # -- helpers -----------------------------------------------------------------------------
    @property
    def offline(self) -> PreferenceData:
        """The env's offline pairs (empty in the online setting)."""
        return PreferenceData.from_dataset(self.instance.offline_dataset)

    def generator(self, *tags: int) -> torch.Generator:
        """A torch generator seeded by (seed, *tags): reproducible across resumes."""
        ss = np.random.SeedSequence([self.config.seed, *tags])
        return torch.Generator().manual_seed(int(ss.generate_state(1, np.uint64)[0] >> 1))

    def seed_for(self, *tags: int) -> int:
        """An int seed derived from (seed, *tags)."""
        ss = np.random.SeedSequence([self.config.seed, *tags])
        return int(ss.generate_state(1, np.uint32)[0])

    @property
    def offline_labels_used(self) -> int:
        """Offline pairs this agent learns from (0 when it ignores the offline data)."""
        ds = self.instance.offline_dataset
        return len(ds) if self.uses_offline_data and ds is not None else 0

    @property
    def queries_spent(self) -> int:
        """Labels this agent paid for (in this session)."""
        return self.collector.spent

    @property
    def progress_disabled(self) -> bool | None:
        p = self.config.progress
        return None if p is None else not p

    # -- the loop ------------------------------------------------------------------------------
    def learn(self, callback: Callback | None = None,
              resume_from: str | Path | None = None) -> Agent:
        """Run the rounds; returns self. See the module docstring."""
        if resume_from is not None and not self.resumable:
            raise InvalidArgumentError(
                f"agent {self.name!r} cannot resume from a checkpoint ({type(self).__name__}."
                "resumable is False): run it again from the start")
        folder = resume_from or self.config.checkpoint_dir
        ckpt = Checkpointer(folder) if folder else None
        start = 0
        if resume_from is not None:
            ckpt = Checkpointer.for_resume(resume_from)
            start = self._restore(ckpt)
        self.start_round = start
        self.setup()
        rounds = self.n_rounds()
        selector = self._selector
        bar = tqdm(range(start, rounds), desc=self.name, initial=start, total=rounds,
                   disable=self.progress_disabled if rounds > 1 else True, leave=False)
        for t in bar:
            new = ckpt.load_pairs(t) if ckpt else None  # paid for before an interruption
            if new is None:
                new = self.collect(t)
                if new is not None and ckpt is not None:
                    ckpt.save_pairs(t, new)
            paid_now = new is not None
            if new is not None and selector is not None:
                new = selector.split(t, new)[0]  # the held-out share is never trained on
            if new is not None:
                self.data.add(new)
            metrics = self.fit(t, new)
            if selector is not None:
                score, chosen = selector.update(t, self.policy)
                metrics = {**metrics, "train/holdout_loglik": score,
                           "train/selected_round": float(selector.best_round)}
                if chosen and ckpt is not None:
                    ckpt.save_selected(self.savable_policy())
            if ckpt is not None:
                paid = sorted({*ckpt.state().get("paid_rounds", []), *([t] if paid_now
                                                                         else [])})
                ckpt.complete(t, self.savable_policy(), global_step=self.global_step,
                              agent_state=self.state(), identity=self.identity(),
                              paid_rounds=paid, queries_used=self.instance.queries_used,
                              **({} if selector is None else selector.state()))
            self.logger.log({"train/iteration": t, "train/pairs": len(self.data),
                             "oracle/queries_used": self.instance.queries_used, **metrics},
                            self.global_step)
            bar.set_postfix(queries=self.instance.queries_used)
            log.info("%s round %d/%d: %d pairs paid so far, %d queries used", self.name, t + 1,
                     rounds, len(self.data), self.instance.queries_used)
            info = {"iteration": t, "pairs": len(self.data), **metrics}
            if callback is not None and callback(self, info) is False:
                break
        bar.close()
        self.finish()
        if selector is not None:  # finish() may change the policy: the last iterate
            selector.update(rounds, self.policy)
            log.info("%s returns round %d's policy (best held-out log-likelihood of %d pairs)",
                     self.name, selector.best_round, len(selector.held))
            self.logger.log({"train/selected_round": float(selector.best_round)},
                            self.global_step)
            self.policy = selector.best
        self.logger.close()
        return self

    @property
    def _selector(self) -> Any:
        """The :class:`~agents.select.IterateSelector` when ``select_iterate="holdout"``
        (made on first use; a resume refills it in :meth:`_restore`)."""
        if self.config.select_iterate != "holdout":
            return None
        if getattr(self, "_selector_obj", None) is None:
            from agents.select import IterateSelector

            scale = getattr(self.config, "beta", None) or self.instance.eta
            self._selector_obj = IterateSelector(self.instance.reference,
                                                 fraction=self.config.holdout_fraction,
                                                 scale=float(scale), seed=self.config.seed)
        return self._selector_obj

    def identity(self) -> dict[str, Any]:
        """What a checkpoint of this agent is bound to: its name, seed and the instance's
        fingerprint (:meth:`~rlhf_env.instance.ProblemInstance.fingerprint`)."""
        return {"agent": self.name, "seed": self.config.seed,
                "instance": self.instance.fingerprint()}

    def _restore(self, ckpt: Checkpointer) -> int:
        """Load the data of the completed rounds, the last policy and the agent's state,
        after checking that the checkpoint is this run's and complete."""
        from rlhf_env.errors import DataError

        state = ckpt.state()
        done = int(state.get("completed", 0))
        saved = state.get("identity")
        if done and saved is not None and saved != self.identity():
            diff = sorted(k for k in self.identity() if saved.get(k) != self.identity()[k])
            raise DataError(
                f"{ckpt.folder} is the checkpoint of another run ("
                + ", ".join(f"{k} {saved.get(k)!r} != {self.identity()[k]!r}" for k in diff)
                + "): resume only the run that wrote it")
        if done and saved is None:
            raise DataError(f"{ckpt.folder}/state.json names no run: it was not written for this "
                            "run (or by an older version); start again")
        paid = set(state.get("paid_rounds", []))
        for t in range(done):
            pairs = ckpt.load_pairs(t)
            if pairs is None and t in paid:
                raise DataError(
                    f"round {t}'s pairs were paid for, but {ckpt.folder}/iter_{t:03d}/pairs.parquet "
                    "is missing: the round cannot be trained on as it was. Restore the file, or "
                    "delete the rounds from it on (a zoo run answers their labels again from "
                    "the ledger)")
            if pairs is not None:
                selector = self._selector
                self.data.add(pairs if selector is None else selector.split(t, pairs)[0])
        durable = hasattr(self.instance.ledger, "path")  # an in-memory ledger starts afresh
        if durable and int(state.get("queries_used", 0)) > self.instance.queries_used:
            raise DataError(
                f"{ckpt.folder} recorded {state['queries_used']} paid queries, but the env's "
                f"ledger holds {self.instance.queries_used}: the ledger was lost or replaced")
        if done:
            self.global_step = int(state.get("global_step", 0))
            self.policy = ckpt.load_policy(done - 1, base=self.instance.reference)
            self.load_state(state.get("agent_state", {}))
            selector = self._selector
            if selector is not None and state.get("selected_round") is not None:
                selector.best = ckpt.load_selected(base=self.instance.reference)
                selector.best_round = int(state["selected_round"])
        return done

    # -- persistence -------------------------------------------------------------------------
    def savable_policy(self) -> Policy:
        """The policy in a form :func:`rlhf_env.policies.load_policy` can rebuild."""
        policy = self.policy
        if isinstance(policy, FinitePolicy) and not is_registered(type(policy)):
            return TabularPolicy.from_policy(policy)  # the same distribution, loadable
        return policy

    def save(self, path: str | Path) -> Path:
        """Save the policy (safetensors) and the hyperparameters (JSON) in folder ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.savable_policy().save(path / "policy")
        meta = {"agent": self.name, "config": self.config.to_dict(),
                "global_step": self.global_step, "queries_spent": self.queries_spent}
        (path / "agent.json").write_text(json.dumps(meta, indent=1, default=str))
        return path

    @classmethod
    def load(cls, path: str | Path, env: Any) -> Agent:
        """Rebuild an agent saved by :meth:`save` on ``env`` (its policy restored, not retrained)."""
        from agents.base import AGENTS

        path = Path(path)
        meta = json.loads((path / "agent.json").read_text())
        agent_cls = AGENTS.get(meta["agent"], cls)
        agent = agent_cls(env, **meta["config"])
        agent.policy = load_policy(path / "policy", base=agent.instance.reference)
        agent.global_step = meta.get("global_step", 0)
        return agent
