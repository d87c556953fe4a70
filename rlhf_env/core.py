"""The KL-regularized contextual bandit as a Gymnasium environment.

A *problem instance* is built once per ``make``: train and evaluation
prompts, the reference policy pi0, the gold preference oracle, the KL
coefficient eta, the offline dataset and the query ledger. :class:`RLHFEnv`
is a one-step episodic view of it and :class:`RLHFVectorEnv` a batched view
of the same instance: both charge the same ledger, and a vector step scores
its whole batch in one oracle call.

Randomness: ``reset(seed=s)`` seeds two streams derived from ``s``, one for
the prompts the env draws and one for the oracle's coin flips. Single and
vector views derive them the same way and draw them in the same order, so
for a seed and a sequence of actions they give the same prompts and the
same preferences. An env made with ``make(..., seed=s)`` that is first reset
without a seed uses ``s``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from rlhf_env.errors import (
    InvalidActionError,
    InvalidArgumentError,
    RLHFEnvError,
)
from rlhf_env.oracles import BradleyTerryOracle, QueryLedger
from rlhf_env.policies import Policy
from rlhf_env.spaces import UnicodeText

__all__ = ["RLHFEnv", "RLHFVectorEnv", "SETTINGS", "FEEDBACK", "check_seed", "resolve_setting"]

SETTINGS = ("offline", "online", "hybrid")
FEEDBACK = ("preference", "reward")
Setting = Literal["offline", "online", "hybrid"]
Feedback = Literal["preference", "reward"]


def check_seed(seed: Any, name: str = "seed") -> int | None:
    """Return ``seed`` as an int (or None); raise :class:`InvalidArgumentError` otherwise."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidArgumentError(f"{name} must be a non-negative int or None, got {seed!r}")
    return int(seed)


def resolve_setting(
    setting: Any, query_budget: Any, default_budget: int
) -> tuple[str, int]:
    """Validate ``setting`` and return ``(setting, query_budget)``.

    Offline has a budget of 0; online and hybrid use ``query_budget`` or the
    env's default. An explicit budget > 0 with ``setting="offline"`` is an error.
    """
    if setting not in SETTINGS:
        raise InvalidArgumentError(f"setting must be one of {SETTINGS}, got {setting!r}")
    if query_budget is not None and (
        isinstance(query_budget, bool)
        or not isinstance(query_budget, (int, np.integer))
        or query_budget < 0
    ):
        raise InvalidArgumentError(
            f"query_budget must be a non-negative int, got {query_budget!r}"
        )
    if setting == "offline":
        if query_budget:
            raise InvalidArgumentError(
                f"setting='offline' has no oracle queries, but query_budget={query_budget} was "
                "given; use setting='hybrid' for offline data plus queries"
            )
        return setting, 0
    return setting, default_budget if query_budget is None else int(query_budget)


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """The prompt stream and the oracle stream for an episode seed."""
    prompt_ss, oracle_ss = np.random.SeedSequence([seed, 0x5EED]).spawn(2)
    return np.random.Generator(np.random.PCG64(prompt_ss)), np.random.default_rng(oracle_ss)


class RLHFEnv(gym.Env[dict, Any]):
    """Base class: a reverse-KL regularized contextual bandit with preference feedback.

    Subclasses build the problem instance in ``__init__`` and call
    :meth:`_setup`. The objective every agent is judged by is

        J(pi) = E_{x~d0} [ E_{a~pi(.|x)} r*(x, a) - eta * KL(pi(.|x) || pi0(.|x)) ]

    Public parts for agents (on ``env.unwrapped``): ``reference`` (pi0), ``eta``,
    ``offline_dataset``, ``train_prompts``, ``query_budget``, ``queries_used``,
    ``queries_left``, ``setting``, ``feedback``. Evaluation prompts
    (``eval_prompts``) and the gold reward are for :func:`rlhf_env.evaluate`.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    # -- construction ----------------------------------------------------------------------
    def _setup(
        self,
        *,
        train_prompts: Sequence[str],
        eval_prompts: Sequence[str],
        reference: Policy,
        oracle: BradleyTerryOracle,
        eta: float,
        setting: str,
        query_budget: int,
        offline_dataset: Any,
        feedback: str,
        seed: int | None,
        response_space: gym.spaces.Text,
        max_prompt_length: int,
    ) -> None:
        if feedback not in FEEDBACK:
            raise InvalidArgumentError(f"feedback must be one of {FEEDBACK}, got {feedback!r}")
        if not (isinstance(eta, (int, float)) and eta > 0):
            raise InvalidArgumentError(f"eta must be a positive number, got {eta!r}")
        self._train_prompts = tuple(train_prompts)
        self._eval_prompts = tuple(eval_prompts)
        self._reference = reference.freeze()
        self._oracle = oracle
        self._eta = float(eta)
        self._setting = setting
        self._ledger = QueryLedger(query_budget)
        self._offline_dataset = offline_dataset
        self._feedback = feedback
        self._make_seed = seed
        self.response_space = response_space
        self.observation_space = spaces.Dict({"prompt": UnicodeText(max_prompt_length)})
        if feedback == "preference":
            self.action_space = spaces.Tuple((response_space, response_space))
        else:
            self.action_space = response_space
        self._prompt_rng: np.random.Generator | None = None
        self._oracle_rng: np.random.Generator | None = None
        self._prompt_id: int | None = None

    # -- public parts for agents ------------------------------------------------------------
    @property
    def reference(self) -> Policy:
        """The reference policy pi0 (frozen)."""
        return self._reference

    @property
    def eta(self) -> float:
        """The KL coefficient eta of the objective (DPO's beta)."""
        return self._eta

    @property
    def offline_dataset(self) -> Any:
        """A ``datasets.Dataset`` with columns prompt/chosen/rejected, or None (online)."""
        return self._offline_dataset

    @property
    def train_prompts(self) -> tuple[str, ...]:
        """The prompts episodes are drawn from (uniformly)."""
        return self._train_prompts

    @property
    def eval_prompts(self) -> tuple[str, ...]:
        """Held-out prompts, for the evaluation harness."""
        return self._eval_prompts

    @property
    def setting(self) -> str:
        return self._setting

    @property
    def feedback(self) -> str:
        return self._feedback

    @property
    def ledger(self) -> QueryLedger:
        """The query ledger shared by every view of this problem instance."""
        return self._ledger

    @property
    def query_budget(self) -> int:
        return self._ledger.budget

    @property
    def queries_used(self) -> int:
        return self._ledger.used

    @property
    def queries_left(self) -> int:
        return self._ledger.left

    # -- privileged: evaluation only ----------------------------------------------------------
    def _gold_reward(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """r*(x, a), outside the budget. For the evaluation harness and tests, never agents."""
        return self._oracle.rewards(prompts, responses)

    # -- the oracle channel -----------------------------------------------------------------
    def _validate_responses(self, prompts: Sequence[str], responses: Sequence[Any]) -> None:
        """Raise :class:`InvalidActionError` if a response is not valid for its prompt."""
        for r in responses:
            if not isinstance(r, str):
                raise InvalidActionError(
                    f"a response must be a str, got {type(r).__name__} {r!r}"
                )

    def _check_pair(self, action: Any) -> tuple[str, str]:
        if isinstance(action, (str, bytes)) or not isinstance(action, (tuple, list)):
            raise InvalidActionError(
                f"with feedback='preference' the action is a pair (response_1, response_2) "
                f"of str, got {type(action).__name__} {action!r:.80}"
            )
        if len(action) != 2:
            raise InvalidActionError(
                f"the action must be a pair (response_1, response_2), got {len(action)} "
                f"element(s): {action!r:.80}"
            )
        return action[0], action[1]

    def _query(
        self,
        prompts: Sequence[str],
        responses_1: Sequence[str],
        responses_2: Sequence[str] | None,
        rng: np.random.Generator,
    ) -> dict[str, np.ndarray]:
        """Validate, charge the ledger and ask the oracle for one batch (one call)."""
        self._validate_responses(prompts, responses_1)
        if responses_2 is not None:
            self._validate_responses(prompts, responses_2)
        n = len(prompts)
        with self._ledger.charge(n):
            if responses_2 is None:
                reward = self._oracle.rewards(prompts, responses_1)
                out = {"reward": reward}
            else:
                y, _, _ = self._oracle.preferences(prompts, responses_1, responses_2, rng)
                first = y.astype(bool)
                chosen = np.where(first, np.array(responses_1, dtype=object),
                                  np.array(responses_2, dtype=object))
                rejected = np.where(first, np.array(responses_2, dtype=object),
                                    np.array(responses_1, dtype=object))
                out = {"reward": y.astype(np.float64), "preference": y,
                       "chosen": chosen, "rejected": rejected}
        return out

    # -- Gymnasium API ----------------------------------------------------------------------
    def _seed_streams(self, seed: Any) -> None:
        seed = check_seed(seed)
        if seed is None and self._prompt_rng is None:
            seed = self._make_seed
        if seed is not None:
            super().reset(seed=seed)
            self._prompt_rng, self._oracle_rng = _streams(seed)
        elif self._prompt_rng is None:
            super().reset(seed=None)
            self._prompt_rng, self._oracle_rng = _streams(int(self.np_random.integers(2**62)))

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, str], dict[str, Any]]:
        """Start an episode: draw a train prompt (or take ``options["prompt_id"]``)."""
        self._seed_streams(seed)
        assert self._prompt_rng is not None
        n = len(self._train_prompts)
        # prompts are drawn as floor(u * n) from doubles, so single and vector views
        # consume the prompt stream identically
        pid = int(self._prompt_rng.random() * n)
        if options and "prompt_id" in options:
            pid = options["prompt_id"]
            if isinstance(pid, bool) or not isinstance(pid, (int, np.integer)) or not 0 <= pid < n:
                raise InvalidArgumentError(
                    f"options['prompt_id'] must be an int in [0, {n}), got {pid!r}"
                )
            pid = int(pid)
        self._prompt_id = pid
        return {"prompt": self._train_prompts[pid]}, {"prompt_id": pid}

    def step(self, action: Any) -> tuple[dict[str, str], float, bool, bool, dict[str, Any]]:
        """Ask the oracle about ``action`` for the current prompt; the episode ends."""
        if self._prompt_id is None:
            raise RLHFEnvError("call reset() before step(): every episode is one step")
        pid = self._prompt_id
        prompt = self._train_prompts[pid]
        assert self._oracle_rng is not None
        if self._feedback == "preference":
            a1, a2 = self._check_pair(action)
            out = self._query([prompt], [a1], [a2], self._oracle_rng)
            info = {
                "prompt_id": pid,
                "preference": int(out["preference"][0]),
                "chosen": out["chosen"][0],
                "rejected": out["rejected"][0],
            }
        else:
            if not isinstance(action, str):
                raise InvalidActionError(
                    f"with feedback='reward' the action is one response (a str), got "
                    f"{type(action).__name__} {action!r:.80}"
                )
            out = self._query([prompt], [action], None, self._oracle_rng)
            info = {"prompt_id": pid}
        info["queries_used"] = self.queries_used
        info["queries_left"] = self.queries_left
        self._prompt_id = None
        return {"prompt": prompt}, float(out["reward"][0]), True, False, info

    def make_vec(self, num_envs: int) -> RLHFVectorEnv:
        """A native vector env over this same problem instance (and ledger)."""
        return RLHFVectorEnv(self, num_envs)


class RLHFVectorEnv(VectorEnv):
    """``num_envs`` one-step episodes at a time over one problem instance.

    Every sub-episode ends at every step, so the env resets in the same step
    (``AutoresetMode.SAME_STEP``): ``step`` returns the next batch of prompts,
    and the step's own results are in ``info["final_info"]`` (with the
    answered prompts in ``info["final_obs"]``), as Gymnasium specifies. No
    step is wasted on resets.

    Actions follow Gymnasium's batching of the single action space: with
    preference feedback, ``(responses_1, responses_2)``, two sequences of
    ``num_envs`` strings; with reward feedback, one sequence of strings.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, env: RLHFEnv, num_envs: int) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise InvalidArgumentError(f"num_envs must be a positive int, got {num_envs!r}")
        self.env = env.unwrapped if hasattr(env, "unwrapped") else env
        self.num_envs = int(num_envs)
        self.single_observation_space = self.env.observation_space
        self.single_action_space = self.env.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.spec = getattr(env, "spec", None)
        self._prompt_rng: np.random.Generator | None = None
        self._oracle_rng: np.random.Generator | None = None
        self._prompt_ids: np.ndarray | None = None

    @property
    def unwrapped(self) -> RLHFVectorEnv:
        return self

    def __getattr__(self, name: str) -> Any:
        # the public parts of the problem instance (reference, eta, ledger, ...)
        if name.startswith("_") or name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)

    def _draw(self) -> np.ndarray:
        assert self._prompt_rng is not None
        n = len(self.env.train_prompts)
        return (self._prompt_rng.random(self.num_envs) * n).astype(np.int64)

    def _obs(self, ids: np.ndarray) -> dict[str, tuple[str, ...]]:
        prompts = self.env.train_prompts
        return {"prompt": tuple(prompts[i] for i in ids)}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, tuple[str, ...]], dict[str, Any]]:
        """Draw ``num_envs`` train prompts (or take ``options["prompt_ids"]``)."""
        seed = check_seed(seed)
        if seed is None and self._prompt_rng is None:
            seed = self.env._make_seed
        if seed is not None:
            self._np_random, self._np_random_seed = gym.utils.seeding.np_random(seed)
            self._prompt_rng, self._oracle_rng = _streams(seed)
        elif self._prompt_rng is None:
            self._prompt_rng, self._oracle_rng = _streams(int(self.np_random.integers(2**62)))
        ids = self._draw()
        if options and "prompt_ids" in options:
            ids = np.asarray(options["prompt_ids"])
            n = len(self.env.train_prompts)
            if ids.shape != (self.num_envs,) or not np.issubdtype(ids.dtype, np.integer) or (
                ids.size and (ids.min() < 0 or ids.max() >= n)
            ):
                raise InvalidArgumentError(
                    f"options['prompt_ids'] must be {self.num_envs} ints in [0, {n}), "
                    f"got {options['prompt_ids']!r:.80}"
                )
            ids = ids.astype(np.int64)
        self._prompt_ids = ids
        return self._obs(ids), {"prompt_id": ids.copy(), "_prompt_id": np.ones(len(ids), bool)}

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Score the whole batch in one oracle call, then draw the next prompts."""
        if self._prompt_ids is None:
            raise RLHFEnvError("call reset() before step()")
        ids = self._prompt_ids
        prompts = [self.env.train_prompts[i] for i in ids]
        assert self._oracle_rng is not None
        if self.env.feedback == "preference":
            a1, a2 = self._split(actions)
            out = self.env._query(prompts, a1, a2, self._oracle_rng)
            final_info: dict[str, Any] = {
                "prompt_id": ids.copy(),
                "preference": out["preference"],
                "chosen": out["chosen"],
                "rejected": out["rejected"],
            }
        else:
            a1 = self._as_batch(actions, "the actions")
            out = self.env._query(prompts, a1, None, self._oracle_rng)
            final_info = {"prompt_id": ids.copy()}
        final_info["queries_used"] = np.full(self.num_envs, self.env.queries_used)
        final_info["queries_left"] = np.full(self.num_envs, self.env.queries_left)
        mask = np.ones(self.num_envs, dtype=bool)
        final_obs = np.empty(self.num_envs, dtype=object)
        final_obs[:] = [{"prompt": p} for p in prompts]
        new_ids = self._draw()
        self._prompt_ids = new_ids
        info = {
            "prompt_id": new_ids.copy(), "_prompt_id": mask.copy(),
            "final_obs": final_obs, "_final_obs": mask.copy(),
            "final_info": final_info, "_final_info": mask.copy(),
        }
        return (
            self._obs(new_ids),
            out["reward"].astype(np.float64),
            np.ones(self.num_envs, dtype=bool),
            np.zeros(self.num_envs, dtype=bool),
            info,
        )

    def _as_batch(self, seq: Any, what: str) -> list[str]:
        if isinstance(seq, (str, bytes)) or not isinstance(seq, (tuple, list, np.ndarray)):
            raise InvalidActionError(
                f"{what} must be a sequence of {self.num_envs} str, got "
                f"{type(seq).__name__} {seq!r:.80}"
            )
        if len(seq) != self.num_envs:
            raise InvalidActionError(
                f"{what} must hold {self.num_envs} responses (one per env), got {len(seq)}"
            )
        return list(seq)

    def _split(self, actions: Any) -> tuple[list[str], list[str]]:
        if isinstance(actions, (str, bytes)) or not isinstance(actions, (tuple, list)) or len(
            actions
        ) != 2:
            raise InvalidActionError(
                "with feedback='preference' the batched action is (responses_1, responses_2), "
                f"two sequences of {self.num_envs} str; got {type(actions).__name__} "
                f"{actions!r:.80}"
            )
        return (
            self._as_batch(actions[0], "responses_1"),
            self._as_batch(actions[1], "responses_2"),
        )
