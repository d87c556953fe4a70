"""Oracles: the Oracle protocol, Bradley-Terry over any reward, reward-model oracles,
presets by name, and the ledger that charges every call."""

from rlhf_env.oracles.base import Labels, Oracle, OracleContext, RewardFn, sigmoid
from rlhf_env.oracles.bradley_terry import BradleyTerry, RewardModelOracle
from rlhf_env.oracles.ledger import QueryLedger
from rlhf_env.oracles.presets import PRESETS, list_presets, make_oracle

__all__ = ["Oracle", "OracleContext", "Labels", "RewardFn", "sigmoid", "BradleyTerry",
           "RewardModelOracle", "QueryLedger", "PRESETS", "list_presets", "make_oracle"]
