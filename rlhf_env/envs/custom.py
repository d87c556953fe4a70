"""Your own problem instance: prompts, a reference policy and a gold reward, as an env."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rlhf_env.core import RLHFEnv
from rlhf_env.data.pairs import sample_reference_pairs
from rlhf_env.errors import DataError, InvalidArgumentError
from rlhf_env.instance import CommonArgs, ProblemInstance, check_positive_int
from rlhf_env.judging import Judge
from rlhf_env.oracles import OracleContext
from rlhf_env.policies import Policy
from rlhf_env.spaces import UnicodeText
from rlhf_env.threads import use_small_model_threads

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
    * ``setting`` / ``query_budget`` / ``eta`` / ``seed`` / ``feedback`` / ``oracle`` /
      ``ledger``: as for every env.
    * ``offline_dataset``: a ``datasets.Dataset`` (``prompt``, ``chosen``, ``rejected``); when
      ``None`` in the offline and hybrid settings, ``n_offline`` pairs of pi0 samples on the
      train prompts are labelled by the oracle (default 256).
    * ``max_new_tokens``, ``device``, ``dtype``: for a reference loaded from a path.

    ## Version History
    * v0: first version.
    """

    kind = "sampled"

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
        oracle: Any = "bt",
        ledger: Any = None,
        offline_dataset: Any = None,
        n_offline: int | None = None,
        max_new_tokens: int = 64,
        device: str | None = None,
        dtype: str | None = None,
    ) -> None:
        common = CommonArgs.check(setting=setting, query_budget=query_budget, eta=eta, seed=seed,
                                  feedback=feedback, oracle=oracle, ledger=ledger,
                                  default_budget=1024)
        if device in (None, "cpu"):
            use_small_model_threads()  # small models on a CPU: see rlhf_env.threads
        if isinstance(train_prompts, str) or isinstance(eval_prompts, str):
            raise InvalidArgumentError("train_prompts and eval_prompts are sequences of strings")
        train, evals = [str(p) for p in train_prompts], [str(p) for p in eval_prompts]
        if not train or not evals:
            raise InvalidArgumentError("train_prompts and eval_prompts must both be non-empty")
        if set(train) & set(evals):
            raise InvalidArgumentError(
                f"{len(set(train) & set(evals))} prompts are both train and eval prompts")
        if n_offline is not None:
            n_offline = check_positive_int("n_offline", n_offline, 0)
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

        def gold(prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
            return np.asarray(reward(list(prompts), list(responses)), dtype=np.float64)

        bound = common.bind_oracle(OracleContext(gold, name="PromptsEnv"))
        rng = common.instance_rng(0xC057)
        offline = None
        if common.setting != "online":
            if offline_dataset is None:
                offline = sample_reference_pairs(reference.freeze(), bound, train,
                                                 n_offline or 256, rng)
            else:
                missing = {"prompt", "chosen", "rejected"} - set(offline_dataset.column_names)
                if missing:
                    raise DataError(f"offline_dataset lacks the column(s) {sorted(missing)}")
                offline = offline_dataset.select_columns(["prompt", "chosen", "rejected"])
        elif offline_dataset is not None:
            raise InvalidArgumentError("setting='online' has no offline data; drop offline_dataset")
        instance = ProblemInstance(
            kind="sampled", common=common, oracle=bound, train_prompts=train, eval_prompts=evals,
            reference=reference, offline_dataset=offline, response_space=UnicodeText(4096),
            max_prompt_length=max(len(p) for p in train + evals), name="PromptsEnv")
        super().__init__(instance, Judge(instance, gold_reward=gold, oracle=bound))
