"""Your own problem instance: prompts, a reference policy and a gold reward, as an env."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rlhf_env.core import RLHFEnv, check_seed, resolve_setting
from rlhf_env.errors import DataError, InvalidArgumentError
from rlhf_env.oracles import BradleyTerryOracle
from rlhf_env.policies import Policy
from rlhf_env.spaces import UnicodeText

__all__ = ["PromptsEnv"]


class PromptsEnv(RLHFEnv):
    r"""A KL-regularized preference bandit over prompts, a reference and a gold reward you give.

    ## Description
    The objective is J(pi) = E_x [E_{a~pi} r*(x, a) − eta · KL(pi(.|x) || pi0(.|x))]
    over ``eval_prompts``; agents learn from ``train_prompts``, an offline
    dataset and/or a Bradley-Terry oracle over ``reward`` with a query budget.

    Register it as an id of your own::

        rlhf_env.register("MyTask-v0", "rlhf_env.envs.custom:PromptsEnv",
                          kwargs={"train_prompts": [...], "eval_prompts": [...],
                                  "reference": "path/or/hub-id", "reward": my_reward})

    ## Arguments
    * ``train_prompts``, ``eval_prompts``: disjoint sequences of strings.
    * ``reference``: pi0: a :class:`~rlhf_env.policies.Policy`, or a hub id / local path of a
      causal LM (loaded as :class:`~rlhf_env.policies.CausalLMPolicy`).
    * ``reward``: the gold reward: ``r(prompts, responses) -> array``, or a hub id / local
      path of a sequence-classification reward model.
    * ``setting`` / ``query_budget`` / ``eta`` / ``seed`` / ``feedback``: as for every env.
    * ``offline_dataset``: a ``datasets.Dataset`` (``prompt``, ``chosen``, ``rejected``); when
      ``None`` in the offline and hybrid settings, ``n_offline`` pairs of pi0 samples on the
      train prompts are labelled by the oracle (default 256).
    * ``bt_temperature``: the oracle's temperature; ``max_new_tokens``, ``device``, ``dtype``:
      for a reference loaded from a path.

    ## Version History
    * v0: first version.
    """

    def __init__(
        self,
        *,
        train_prompts: Sequence[str],
        eval_prompts: Sequence[str],
        reference: Policy | str,
        reward: Callable[[Sequence[str], Sequence[str]], np.ndarray] | str,
        setting: str = "hybrid",
        query_budget: int | None = None,
        eta: float = 0.1,
        seed: int | None = 0,
        feedback: str = "preference",
        offline_dataset: Any = None,
        n_offline: int | None = None,
        bt_temperature: float = 1.0,
        max_new_tokens: int = 64,
        device: str | None = None,
        dtype: str | None = None,
    ) -> None:
        seed = check_seed(seed)
        setting, budget = resolve_setting(setting, query_budget, default_budget=1024)
        train, evals = [str(p) for p in train_prompts], [str(p) for p in eval_prompts]
        if not train or not evals:
            raise InvalidArgumentError("train_prompts and eval_prompts must both be non-empty")
        if set(train) & set(evals):
            raise InvalidArgumentError(
                f"{len(set(train) & set(evals))} prompts are both train and eval prompts")
        if isinstance(reference, str):
            from rlhf_env.policies.causal_lm import CausalLMPolicy

            reference = CausalLMPolicy(reference, device=device, dtype=dtype,
                                       max_new_tokens=max_new_tokens)
        if not isinstance(reference, Policy):
            raise InvalidArgumentError(
                f"reference must be a Policy or a model path/hub id, got {type(reference).__name__}")
        if isinstance(reward, str):
            from rlhf_env.lm.reward_model import RewardModel

            reward = RewardModel(reward, device=device)
        if not callable(reward):
            raise InvalidArgumentError("reward must be callable r(prompts, responses) or a path")
        self._reward = reward
        oracle = BradleyTerryOracle(self._reward_fn, temperature=bt_temperature)
        rng = np.random.default_rng(np.random.SeedSequence([0 if seed is None else seed, 0xC057]))
        offline = None
        if setting != "online":
            if offline_dataset is None:
                from rlhf_env.envs.tiny_instruct import _offline_pairs

                offline = _offline_pairs(reference.freeze(), oracle, train, n_offline or 256, rng)
            else:
                missing = {"prompt", "chosen", "rejected"} - set(offline_dataset.column_names)
                if missing:
                    raise DataError(f"offline_dataset lacks the column(s) {sorted(missing)}")
                offline = offline_dataset.select_columns(["prompt", "chosen", "rejected"])
        elif offline_dataset is not None:
            raise InvalidArgumentError("setting='online' has no offline data; drop offline_dataset")
        self._setup(
            train_prompts=train, eval_prompts=evals, reference=reference, oracle=oracle, eta=eta,
            setting=setting, query_budget=budget, offline_dataset=offline, feedback=feedback,
            seed=seed, response_space=UnicodeText(4096),
            max_prompt_length=max(len(p) for p in train + evals),
        )

    def _reward_fn(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return np.asarray(self._reward(list(prompts), list(responses)), dtype=np.float64)
