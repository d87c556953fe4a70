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

from rlhf_env.envs import builtin_envs  # noqa: E402  (after the lazy attributes above)

for _entry in builtin_envs():
    register(_entry["id"], _entry["entry_point"], kwargs=_entry.get("kwargs"),
             description=_entry.get("description", ""))
del _entry
