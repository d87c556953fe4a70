"""rlhf_env: RLHF as a reverse-KL regularized contextual bandit, in Gymnasium.

    import rlhf_env
    env = rlhf_env.make("LinearBT-v0", setting="hybrid", seed=0)
    report = rlhf_env.evaluate(env.unwrapped.reference, env)
    pi_star = rlhf_env.judge(env).optimal_policy()   # the privileged side: evaluation only

Importing the package registers the env ids (with Gymnasium too, as
``rlhf_env/<id>``) and loads no transformers or datasets code.
"""

from rlhf_env.core import RLHFEnv, RLHFVectorEnv
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
from rlhf_env.evaluation import evaluate
from rlhf_env.instance import ProblemInstance
from rlhf_env.judging import Judge, judge
from rlhf_env.oracles import BradleyTerry, Oracle, QueryLedger
from rlhf_env.policies import Catalog, LogLinearPolicy, Policy, TabularPolicy, load_policy
from rlhf_env.registration import EnvSpec, list_envs, make, make_vec, register, spec

__version__ = "0.2.0"

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
    "TinyInstruct-v0",
    "rlhf_env.envs.tiny_instruct:TinyInstructEnv",
    description="Synthetic instructions (sort/rev/max/count), a tiny LM pi0, a gold reward program.",
)
register(
    "HH-RLHF-v0",
    "rlhf_env.envs.hh_rlhf:HHRLHFEnv",
    description="Anthropic HH-RLHF dialogues; hub or local data; reference LM and gold RM.",
)
