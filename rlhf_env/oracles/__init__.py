"""Oracles: the Oracle protocol, Bradley-Terry over any reward, reward-model oracles,
simulated annotators (pools, biases, ties, label flips), presets by name, the oracle
report, and the ledger that charges every call."""

from rlhf_env.oracles.annotators import Annotator, LabelFlips, SimulatedAnnotators
from rlhf_env.oracles.base import Choice, Labels, Oracle, OracleContext, RewardFn, sigmoid
from rlhf_env.oracles.bradley_terry import BradleyTerry, RewardModelOracle
from rlhf_env.oracles.ledger import DurableLedger, QueryLedger
from rlhf_env.oracles.presets import PRESET_INFO, PRESETS, list_presets, make_oracle
from rlhf_env.oracles.reporting import OracleReport, report, report_pairs

__all__ = ["Oracle", "OracleContext", "Labels", "RewardFn", "sigmoid", "BradleyTerry",
           "RewardModelOracle", "QueryLedger", "DurableLedger", "PRESETS", "list_presets", "make_oracle",
           "Choice", "Annotator", "SimulatedAnnotators", "LabelFlips", "PRESET_INFO",
           "OracleReport", "report", "report_pairs"]
