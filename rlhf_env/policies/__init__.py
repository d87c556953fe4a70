"""Policies: the interface and its implementations."""

from rlhf_env.policies.base import Policy, load_policy, register_policy_class
from rlhf_env.policies.finite import Catalog, FinitePolicy, LogLinearPolicy, TabularPolicy

__all__ = [
    "Policy",
    "load_policy",
    "register_policy_class",
    "Catalog",
    "FinitePolicy",
    "TabularPolicy",
    "LogLinearPolicy",
]
