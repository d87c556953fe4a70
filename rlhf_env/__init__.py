"""rlhf_env: RLHF as a reverse-KL regularized contextual bandit, in Gymnasium.

    import rlhf_env
    env = rlhf_env.make("LinearBT-v0", setting="hybrid", seed=0)
    report = rlhf_env.evaluate(env.unwrapped.reference, env)
    pi_star = rlhf_env.judge(env).optimal_policy()   # the privileged side: evaluation only

Importing the package registers the env ids (with Gymnasium too, as
``rlhf_env/<id>``) and loads no torch, transformers or datasets code: the
attributes below that need them load on first use.
"""

import importlib
from typing import Any

from rlhf_env.errors import (
    DataError,
    InvalidActionError,
    InvalidArgumentError,
    InvalidKwargError,
    PrivilegedAttributeError,
    QueryBudgetExceeded,
    RLHFEnvError,
    UnknownEnvError,
)
from rlhf_env.registration import EnvSpec, list_envs, make, make_vec, register, spec

__version__ = "0.2.0"

_LAZY = {
    "RLHFEnv": "rlhf_env.core", "RLHFVectorEnv": "rlhf_env.core",
    "evaluate": "rlhf_env.evaluation", "ProblemInstance": "rlhf_env.instance",
    "Judge": "rlhf_env.judging", "judge": "rlhf_env.judging",
    "BradleyTerry": "rlhf_env.oracles", "Oracle": "rlhf_env.oracles",
    "QueryLedger": "rlhf_env.oracles", "Policy": "rlhf_env.policies",
    "Catalog": "rlhf_env.policies", "TabularPolicy": "rlhf_env.policies",
    "LogLinearPolicy": "rlhf_env.policies", "load_policy": "rlhf_env.policies",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rlhf_env' has no attribute {name!r}")

__all__ = [
    "make", "make_vec", "register", "spec", "list_envs", "EnvSpec", "evaluate", "judge",
    "Judge", "ProblemInstance", "RLHFEnv", "RLHFVectorEnv", "Oracle", "BradleyTerry",
    "QueryLedger", "Policy", "Catalog", "TabularPolicy", "LogLinearPolicy", "load_policy",
    "RLHFEnvError", "UnknownEnvError", "InvalidKwargError", "InvalidArgumentError",
    "InvalidActionError", "QueryBudgetExceeded", "DataError", "PrivilegedAttributeError",
]

register(
    "LinearBT-v0",
    "rlhf_env.envs.linear_bt:LinearBTEnv",
    description="Linear Bradley-Terry bandit, exactly solvable (Xiong et al. 2024, §2).",
)
register(
    "LinearBT-Narrow-v0",
    "rlhf_env.envs.linear_bt:LinearBTEnv",
    kwargs={"behaviour": "narrow"},
    description="LinearBT with narrow offline coverage: the data rarely play what pi* plays.",
)
register(
    "LinearBT-Explore-v0",
    "rlhf_env.envs.linear_bt_explore:LinearBTExploreEnv",
    description="LinearBT where pi* plays responses pi0 rarely samples: exploration decides.",
)
register(
    "LinearBT-Coverage-v0",
    "rlhf_env.envs.linear_bt_coverage:LinearBTCoverageEnv",
    description="LinearBT whose offline data never cover a trap direction: pessimism decides.",
)
register(
    "TinyInstruct-v0",
    "rlhf_env.envs.tiny_instruct:TinyInstructEnv",
    description="Synthetic instructions (sort/rev/max/count), a tiny LM pi0, a gold reward program.",
)
register(
    "HH-RLHF-v0",
    "rlhf_env.envs.hh_rlhf:HHRLHFEnv",
    description="Anthropic HH-RLHF dialogues; hub or local data; reference LM and gold RM.",
)
