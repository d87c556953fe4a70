"""The KL-regularized contextual bandit as Gymnasium environments: views over one instance.

``rlhf_env.make`` builds a :class:`~rlhf_env.instance.ProblemInstance` (the
prompts, pi0, eta, the setting, the offline data, the metered oracle) and
returns an :class:`RLHFEnv`, a one-step episodic view of it;
:meth:`RLHFEnv.make_vec` gives an :class:`RLHFVectorEnv`, a batched view of the
same instance whose step labels its whole batch in one oracle call. Every view
charges the instance's one ledger; neither reaches into the other.

Randomness: ``reset(seed=s)`` seeds two streams derived from ``s``, one for
the prompts the env draws and one for the oracle's coin flips. Single and
vector views derive them the same way and draw them in the same order, so
for a seed and a sequence of actions they give the same prompts and the
same preferences. An env made with ``make(..., seed=s)`` that is first reset
without a seed uses ``s``.

What the env does not expose: the gold reward, hidden parameters, the
optimal policy, the behaviour policies and unmetered labels. Those live in the
judge (:func:`rlhf_env.judge`); asking an env for them raises
:class:`~rlhf_env.errors.PrivilegedAttributeError` saying so.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from rlhf_env.errors import (
    InvalidActionError,
    InvalidArgumentError,
    PrivilegedAttributeError,
    RLHFEnvError,
)
from rlhf_env.instance import ProblemInstance, check_seed, short
from rlhf_env.judging import Judge, attach
from rlhf_env.spaces import UnicodeText

__all__ = ["RLHFEnv", "RLHFVectorEnv", "PublicParts", "PRIVILEGED"]

PRIVILEGED = {
    "theta_star": "rlhf_env.judge(env).theta_star",
    "gold_rewards": "rlhf_env.judge(env).reward_table() or .gold_rewards(prompts, responses)",
    "optimal_policy": "rlhf_env.judge(env).optimal_policy()",
    "behaviour_probs": "rlhf_env.judge(env).behaviour_probs()",
    "reward_table": "rlhf_env.judge(env).reward_table()",
    "reference_log_probs": "env.unwrapped.reference.log_probs_table()",
    "_oracle": "rlhf_env.judge(env).oracle",
    "_gold_reward": "rlhf_env.judge(env).gold_rewards(prompts, responses)",
    "_rewards": "rlhf_env.judge(env).reward_table()",
    "env": "env.unwrapped.instance (the problem's public parts)",
}
"""Names users reached before the judge existed -> where they live now."""


def _privileged(owner: str, name: str) -> PrivilegedAttributeError:
    return PrivilegedAttributeError(
        f"{owner} has no {name!r}: the gold reward, hidden parameters and the optimum are not "
        f"part of the env an agent holds. Evaluation and analysis code: {PRIVILEGED[name]}. "
        "Agents must learn from the public parts and from stepping the env.")


class PublicParts:
    """The problem's public parts, read from ``self.instance`` (single and vector views)."""

    instance: ProblemInstance

    @property
    def reference(self) -> Any:
        """The reference policy pi0 (frozen)."""
        return self.instance.reference

    @property
    def eta(self) -> float:
        """The KL coefficient of the objective."""
        return self.instance.eta

    @property
    def kind(self) -> str:
        """``"exact"``, ``"linear"`` or ``"sampled"``."""
        return self.instance.kind

    @property
    def offline_dataset(self) -> Any:
        """prompt/chosen/rejected pairs (``datasets.Dataset``), or None."""
        return self.instance.offline_dataset

    @property
    def train_prompts(self) -> tuple[str, ...]:
        return self.instance.train_prompts

    @property
    def eval_prompts(self) -> tuple[str, ...]:
        return self.instance.eval_prompts

    @property
    def setting(self) -> str:
        return self.instance.setting

    @property
    def feedback(self) -> str:
        return self.instance.feedback

    @property
    def ledger(self) -> Any:
        return self.instance.ledger

    @property
    def query_budget(self) -> int:
        return self.instance.query_budget

    @property
    def queries_used(self) -> int:
        return self.instance.queries_used

    @property
    def queries_left(self) -> int:
        return self.instance.queries_left

    @property
    def catalog(self) -> Any:
        """The candidate responses (exact and linear kinds)."""
        return self.instance.catalog

    @property
    def features(self) -> np.ndarray:
        """phi(x, a), ``(N, K, d)`` (linear kind)."""
        return self.instance.features

    @property
    def oracle_config(self) -> dict[str, Any]:
        return self.instance.oracle_config

    def __getattr__(self, name: str) -> Any:
        if name in PRIVILEGED:
            raise _privileged(type(self).__name__, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


class RLHFEnv(PublicParts, gym.Env[dict, Any]):
    """A one-step episodic view of a problem instance: a reverse-KL regularized bandit.

    The objective every agent is judged by is

        J(pi) = E_{x~d0} [ E_{a~pi(.|x)} r*(x, a) - eta * KL(pi(.|x) || pi0(.|x)) ]

    Env families subclass it: their ``__init__`` builds the instance and the judge and
    calls ``super().__init__(instance, judge)``. Public parts (on ``env.unwrapped``):
    ``instance`` and the properties of :class:`PublicParts`.

    Args:
        instance: the problem instance this env views.
        judge: its judge (given once, by the family that builds the instance).
    """

    metadata: dict[str, Any] = {"render_modes": []}
    kind: ClassVar[str] = "sampled"
    """The kind of instance this family builds (``exact``, ``linear`` or ``sampled``)."""

    def __init__(self, instance: ProblemInstance, judge: Judge | None = None) -> None:
        if judge is not None:
            attach(instance, judge)
        self.instance = instance
        rs = instance.response_space
        self.response_space = rs
        self.observation_space = spaces.Dict({"prompt": UnicodeText(instance.max_prompt_length)})
        self.action_space = spaces.Tuple((rs, rs)) if instance.feedback == "preference" else rs
        self._prompt_rng: np.random.Generator | None = None
        self._oracle_rng: np.random.Generator | None = None
        self._prompt_id: int | None = None

    def view(self) -> RLHFEnv:
        """Another single-step view of the same instance (same ledger, own episode state)."""
        twin = object.__new__(type(self))
        RLHFEnv.__init__(twin, self.instance)
        twin.spec = self.spec
        return twin

    # -- Gymnasium API ----------------------------------------------------------------------
    def _seed_streams(self, seed: Any) -> None:
        seed = check_seed(seed)
        if seed is None and self._prompt_rng is None:
            seed = self.instance.seed
        if seed is not None:
            super().reset(seed=seed)
            self._prompt_rng, self._oracle_rng = self.instance.streams(seed)
        elif self._prompt_rng is None:
            super().reset(seed=None)
            self._prompt_rng, self._oracle_rng = self.instance.streams(
                int(self.np_random.integers(2**62)))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, str], dict[str, Any]]:
        """Start an episode: draw a train prompt (or take ``options["prompt_id"]``, an index
        into the train prompts, or ``options["prompt"]``, one of them by its text)."""
        if options is not None and (not isinstance(options, dict) or set(options) - {
                "prompt_id", "prompt"} or len(options) > 1):
            raise InvalidArgumentError(
                f"reset options are {{'prompt_id': index}} or {{'prompt': text}} (one of the "
                f"train prompts), got {short(options)}")
        self._seed_streams(seed)
        assert self._prompt_rng is not None
        n = len(self.instance.train_prompts)
        pid = self.instance.draw_prompt_ids(self._prompt_rng)
        if options and "prompt" in options:
            text = options["prompt"]
            index = self.instance.train_prompt_index(text)
            if index is None:
                raise InvalidArgumentError(
                    f"options['prompt'] must be one of the env's train prompts, got {short(text)}")
            options = {"prompt_id": index}
        if options and "prompt_id" in options:
            pid = options["prompt_id"]
            if isinstance(pid, bool) or not isinstance(pid, (int, np.integer)) or not 0 <= pid < n:
                raise InvalidArgumentError(
                    f"options['prompt_id'] must be an int in [0, {n}), got {short(pid)}")
            pid = int(pid)
        self._prompt_id = pid
        return {"prompt": self.instance.train_prompts[pid]}, {"prompt_id": pid}

    def step(self, action: Any) -> tuple[dict[str, str], float, bool, bool, dict[str, Any]]:
        """Ask the oracle about ``action`` for the current prompt; the episode ends."""
        if self._prompt_id is None:
            raise RLHFEnvError("call reset() before step(): every episode is one step")
        pid = self._prompt_id
        prompt = self.instance.train_prompts[pid]
        assert self._oracle_rng is not None
        info: dict[str, Any] = {"prompt_id": pid}
        if self.instance.feedback == "preference":
            a1, a2 = _pair(action)
            labels = self.instance.label([prompt], [a1], [a2], self._oracle_rng)
            reward = float(labels.reward[0])
            info.update(preference=int(labels.preference[0]), chosen=labels.chosen[0],
                        rejected=labels.rejected[0], tie=bool(labels.tie[0]),
                        **{k: v[0] for k, v in labels.info.items()})
        else:
            if not isinstance(action, str):
                raise InvalidActionError(
                    "with feedback='reward' the action is one response (a str), got "
                    f"{type(action).__name__} {short(action)}")
            reward = float(self.instance.score([prompt], [action])[0])
        info["queries_used"] = self.instance.queries_used
        info["queries_left"] = self.instance.queries_left
        self._prompt_id = None
        return {"prompt": prompt}, reward, True, False, info

    def make_vec(self, num_envs: int) -> RLHFVectorEnv:
        """A native vector env over this same problem instance (and ledger)."""
        return RLHFVectorEnv(self.instance, num_envs, spec=self.spec)


MAX_NUM_ENVS = 1 << 16
"""The most episodes a vector env steps at once."""


def _pair(action: Any) -> tuple[Any, Any]:
    if isinstance(action, (str, bytes)) or not isinstance(action, (tuple, list)):
        raise InvalidActionError(
            "with feedback='preference' the action is a pair (response_1, response_2) of str, "
            f"got {type(action).__name__} {short(action)}")
    if len(action) != 2:
        raise InvalidActionError(
            f"the action must be a pair (response_1, response_2), got {len(action)} "
            f"element(s): {short(action)}")
    return action[0], action[1]


class RLHFVectorEnv(PublicParts, VectorEnv):
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

    def __init__(self, instance: ProblemInstance, num_envs: int, spec: Any = None) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise InvalidArgumentError(f"num_envs must be a positive int, got {short(num_envs)}")
        if num_envs > MAX_NUM_ENVS:
            raise InvalidArgumentError(
                f"num_envs={num_envs} is above the limit of {MAX_NUM_ENVS} episodes per step (one "
                "oracle call labels them all); step in several batches instead")
        if not isinstance(instance, ProblemInstance):
            raise InvalidArgumentError(
                f"RLHFVectorEnv views a ProblemInstance, got {type(instance).__name__}; "
                "use env.unwrapped.make_vec(n) or rlhf_env.make_vec(id, n)")
        self.instance = instance
        self.num_envs = int(num_envs)
        view = RLHFEnv(instance)
        self.single_observation_space = view.observation_space
        self.single_action_space = view.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.action_space.seed(instance.seed)  # distinct sub-space streams from the start
        self.spec = spec
        self._prompt_rng: np.random.Generator | None = None
        self._oracle_rng: np.random.Generator | None = None
        self._prompt_ids: np.ndarray | None = None

    @property
    def unwrapped(self) -> RLHFVectorEnv:
        return self

    def _obs(self, ids: np.ndarray) -> dict[str, tuple[str, ...]]:
        prompts = self.instance.train_prompts
        return {"prompt": tuple(prompts[i] for i in ids)}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, tuple[str, ...]], dict[str, Any]]:
        """Draw ``num_envs`` train prompts (or take ``options["prompt_ids"]``)."""
        seed = check_seed(seed)
        if seed is None and self._prompt_rng is None:
            seed = self.instance.seed
        if seed is not None:
            self._np_random, self._np_random_seed = gym.utils.seeding.np_random(seed)
            self._prompt_rng, self._oracle_rng = self.instance.streams(seed)
        elif self._prompt_rng is None:
            self._prompt_rng, self._oracle_rng = self.instance.streams(
                int(self.np_random.integers(2**62)))
        ids = self.instance.draw_prompt_ids(self._prompt_rng, self.num_envs)
        if options and "prompt_ids" in options:
            ids = np.asarray(options["prompt_ids"])
            n = len(self.instance.train_prompts)
            if ids.shape != (self.num_envs,) or not np.issubdtype(ids.dtype, np.integer) or (
                ids.size and (ids.min() < 0 or ids.max() >= n)
            ):
                raise InvalidArgumentError(
                    f"options['prompt_ids'] must be {self.num_envs} ints in [0, {n}), "
                    f"got {short(options['prompt_ids'])}")
            ids = ids.astype(np.int64)
        self._prompt_ids = ids
        return self._obs(ids), {"prompt_id": ids.copy(), "_prompt_id": np.ones(len(ids), bool)}

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Label (or score) the whole batch in one oracle call, then draw the next prompts."""
        if self._prompt_ids is None:
            raise RLHFEnvError("call reset() before step()")
        ids = self._prompt_ids
        prompts = [self.instance.train_prompts[i] for i in ids]
        assert self._oracle_rng is not None
        final_info: dict[str, Any] = {"prompt_id": ids.copy()}
        if self.instance.feedback == "preference":
            a1, a2 = self._split(actions)
            labels = self.instance.label(prompts, a1, a2, self._oracle_rng)
            reward = labels.reward
            final_info.update(preference=labels.preference, chosen=labels.chosen,
                              rejected=labels.rejected, tie=labels.tie, **labels.info)
        else:
            reward = self.instance.score(prompts, self._as_batch(actions, "the actions"))
        final_info["queries_used"] = np.full(self.num_envs, self.instance.queries_used)
        final_info["queries_left"] = np.full(self.num_envs, self.instance.queries_left)
        mask = np.ones(self.num_envs, dtype=bool)
        final_obs = np.empty(self.num_envs, dtype=object)
        final_obs[:] = [{"prompt": p} for p in prompts]
        new_ids = self.instance.draw_prompt_ids(self._prompt_rng, self.num_envs)
        self._prompt_ids = new_ids
        info = {
            "prompt_id": new_ids.copy(), "_prompt_id": mask.copy(),
            "final_obs": final_obs, "_final_obs": mask.copy(),
            "final_info": final_info, "_final_info": mask.copy(),
        }
        return (self._obs(new_ids), np.asarray(reward, dtype=np.float64),
                np.ones(self.num_envs, dtype=bool), np.zeros(self.num_envs, dtype=bool), info)

    def _as_batch(self, seq: Any, what: str) -> list[str]:
        if isinstance(seq, (str, bytes)) or not isinstance(seq, (tuple, list, np.ndarray)):
            raise InvalidActionError(
                f"{what} must be a sequence of {self.num_envs} str, got "
                f"{type(seq).__name__} {short(seq)}")
        if len(seq) != self.num_envs:
            raise InvalidActionError(
                f"{what} must hold {self.num_envs} responses (one per env), got {len(seq)}")
        return list(seq)

    def _split(self, actions: Any) -> tuple[list[str], list[str]]:
        if isinstance(actions, (str, bytes)) or not isinstance(actions, (tuple, list)) or len(
                actions) != 2:
            raise InvalidActionError(
                "with feedback='preference' the batched action is (responses_1, responses_2), "
                f"two sequences of {self.num_envs} str; got {type(actions).__name__} "
                f"{short(actions)}")
        return (self._as_batch(actions[0], "responses_1"),
                self._as_batch(actions[1], "responses_2"))

