"""Oracle presets by name: what ``oracle="..."`` means when an env is made.

Each preset is a function that builds a fresh (unbound) oracle; its docstring cites the
source and states the target statistics that :func:`rlhf_env.oracles.report` checks.
Targets are of two kinds:

* **fixed** — a value the preset's model gives on *any* set of pairs (listed in
  :data:`PRESET_INFO` as ``nominal``); e.g. P(first chosen) = 0.52 for ``"human-like"``.
  "P(longer chosen)" is fixed at *exactly* equal gold reward only.
* **expected** — a statistic that depends on the pairs' reward gaps (agreement with the
  gold preference, inter-annotator agreement, ...): the report computes its exact
  expectation under the preset's model on the very pairs it labels, and compares.

The statistics (ties count as half a choice; every pair is shown in both orders):
``gold_agreement`` (P(the gold-better response chosen), pairs of unequal gold reward),
``inter_annotator_agreement`` (P(two independent queries of a pair give the same answer)),
``first_chosen`` (P(the first-shown chosen)), ``longer_chosen`` (P(the longer chosen) at
equal gold reward) and ``tie_rate``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from rlhf_env.errors import InvalidArgumentError, closest
from rlhf_env.oracles.annotators import Annotator, LabelFlips, SimulatedAnnotators
from rlhf_env.oracles.base import Oracle
from rlhf_env.oracles.bradley_terry import BradleyTerry

__all__ = ["PRESETS", "PRESET_INFO", "PresetInfo", "make_oracle", "list_presets",
           "ALPACAFARM_POOL"]

PRESETS: dict[str, Callable[[], Oracle]] = {}
"""Preset name -> a function that builds the (unbound) oracle."""


@dataclasses.dataclass(frozen=True)
class PresetInfo:
    """What a preset promises.

    Attributes:
        source: the published setup it follows (short citation).
        nominal: statistic -> the value it has on any pairs (fixed targets).
        published: statistic -> the published value it is modelled on, for context only
            (not checkable on our envs: it was measured on other data).
    """

    source: str
    nominal: dict[str, float]
    published: dict[str, float] = dataclasses.field(default_factory=dict)


PRESET_INFO: dict[str, PresetInfo] = {}
"""Preset name -> its :class:`PresetInfo`."""


def _preset(name: str, source: str, nominal: dict[str, float],
            published: dict[str, float] | None = None
            ) -> Callable[[Callable[[], Oracle]], Callable[[], Oracle]]:
    def register(build: Callable[[], Oracle]) -> Callable[[], Oracle]:
        PRESETS[name] = build
        PRESET_INFO[name] = PresetInfo(source, dict(nominal), dict(published or {}))
        return build

    return register


@_preset("bt", "Bradley-Terry over the gold reward (Xiong et al. 2024, §2)",
         {"first_chosen": 0.5, "longer_chosen": 0.5, "tie_rate": 0.0})
def bt() -> Oracle:
    """The default: Bradley-Terry labels over the gold reward at temperature 1.

    P(a1 > a2 | x) = sigmoid(r*(x, a1) - r*(x, a2)) — the preference model of Xiong et al.
    (2024, arXiv 2312.11456, §2) under which DPO's beta equals the env's eta. Exactly
    today's :class:`BradleyTerry` (same draws, same labels, same results).

    Targets: fixed — P(first chosen) 0.5, P(longer chosen at equal gold reward) 0.5, tie
    rate 0; expected — agreement with gold and inter-annotator agreement (they depend on
    the reward gaps).
    """
    return BradleyTerry()


@_preset("gao-argmax", "Gao et al. 2023 (arXiv 2210.10760): noiseless argmax of a gold RM",
         {"gold_agreement": 1.0, "first_chosen": 0.5, "longer_chosen": 0.5, "tie_rate": 0.0})
def gao_argmax() -> Oracle:
    """Noiseless labels: the response with the larger gold reward wins.

    Gao, Schulman and Hilton, "Scaling Laws for Reward Model Overoptimization" (ICML 2023,
    arXiv 2210.10760) label their synthetic preference data with the argmax of a gold
    reward model, no noise. Equal rewards are broken by a fair coin.

    Targets: fixed — agreement with gold 1.0 (pairs of unequal reward), P(first chosen)
    0.5, P(longer chosen at equal gold reward) 0.5, tie rate 0; expected —
    inter-annotator agreement (1 on unequal pairs, 0.5 on equal ones).
    """
    return BradleyTerry(deterministic=True)


@_preset("coste-flip25", "Coste et al. 2024 (arXiv 2310.02743): Gao's argmax + 25% label noise",
         {"gold_agreement": 0.75, "first_chosen": 0.5, "longer_chosen": 0.5, "tie_rate": 0.0})
def coste_flip25() -> Oracle:
    """Gao's noiseless argmax with 25 % of the labels flipped.

    Coste, Anwar, Kirk and Krueger, "Reward Model Ensembles Help Mitigate
    Overoptimization" (ICLR 2024, arXiv 2310.02743) extend Gao et al.'s gold-RM setup with
    25 % label noise, "to better mirror real-world conditions" (human agreement is 60-75 %).
    Written as :class:`LabelFlips` (p = 0.25) over the argmax: on strict labels a fair coin
    at rate 2p is the same distribution as a flip at rate p.

    Targets: fixed — agreement with gold 0.75 (pairs of unequal reward), P(first chosen)
    0.5, P(longer chosen at equal gold reward) 0.5, tie rate 0; expected —
    inter-annotator agreement (0.75² + 0.25² = 0.625 on unequal pairs, 0.5 on equal ones).
    """
    return LabelFlips(BradleyTerry(deterministic=True), 0.25)


ALPACAFARM_POOL: tuple[Annotator, ...] = tuple(
    Annotator(temperature=t, position_logit=b, length_rate=q, name=f"sim-{i:02d}")
    for i, (t, b, q) in enumerate([
        # temperature, position logit, length habit rate
        (0.50, 0.00, 0.20), (0.60, 0.20, 0.35), (0.71, -0.12, 0.25), (0.84, 0.08, 0.45),
        (1.00, 0.28, 0.15), (1.19, -0.04, 0.30), (1.41, 0.16, 0.40), (1.68, -0.16, 0.20),
        (2.00, 0.04, 0.35), (0.55, 0.24, 0.30), (0.77, -0.08, 0.15), (1.09, 0.12, 0.25),
        (1.54, 0.00, 0.40),
    ]))
"""The 13 annotators of the ``"alpacafarm"`` preset (a stylised pool; see its docstring)."""


@_preset("alpacafarm", "AlpacaFarm (Dubois et al. 2023, arXiv 2305.14387): a pool of 13 "
         "annotators + 25% label flips (AlpacaEval's p_label_flip)",
         {"tie_rate": 0.0},
         {"human_agreement": 0.65, "inter_annotator_agreement": 0.66})
def alpacafarm() -> Oracle:
    """A pool of 13 simulated annotators, one per query, plus 25 % label flips.

    AlpacaFarm (Dubois et al., NeurIPS 2023, arXiv 2305.14387) simulates human feedback with
    a pool of 13 differently prompted LLM annotators (``annotator_pool_v0``) and, for
    training labels only, a 25 % label flip, implemented in AlpacaEval as a mixture with a
    fair coin at rate 2p seeded on the inputs (``PairwiseAnnotator(p_label_flip=0.25)``).
    The simulator agrees with humans 65 % of the time; humans with each other 66 %.
    Reward over-optimisation appeared there only with this annotator variability.

    Our pool (:data:`ALPACAFARM_POOL`) is stylised: 13 annotators over the gold reward whose
    temperatures span 0.5-2 and whose biases span what AlpacaEval's evaluator table
    (``src/alpaca_eval/evaluators_configs/README.md``) reports for LLM annotators:
    P(prefer first) 0.46-0.57 (position logits -0.16..+0.28) and a preference for the
    longer output (length habit rates 0.15-0.45: 0.575-0.725 at equal reward, before flips).

    Targets: fixed — tie rate 0; expected — all others (they depend on the reward and
    length gaps). Published (AlpacaFarm, for context, not checkable here): 65 % agreement
    with humans, 66 % between humans.
    """
    return LabelFlips(SimulatedAnnotators(ALPACAFARM_POOL), 0.25)


@_preset("human-like", "AlpacaEval's evaluator table, row 'humans' "
         "(tatsu-lab/alpaca_eval, src/alpaca_eval/evaluators_configs/README.md)",
         {"first_chosen": 0.52, "longer_chosen": 0.64, "tie_rate": 0.0},
         {"inter_annotator_agreement": 0.657, "prefer_lists": 0.60})
def human_like() -> Oracle:
    """One annotator with the position and length biases of AlpacaEval's human labellers.

    AlpacaEval's table of evaluators (``src/alpaca_eval/evaluators_configs/README.md``, row
    ``humans``, 2.5k cross-annotations): humans agree with each other 65.7 % of the time,
    prefer the longer output with probability 0.64 and the first-shown with 0.52 (and the
    one with lists 0.60, which these envs cannot express). Here: Bradley-Terry over the gold
    reward at temperature 1 with habit rates calibrated (:meth:`Annotator.calibrated`) so
    that P(first chosen) = 0.52 and P(longer chosen at equal gold reward) = 0.64 exactly.

    Targets: fixed — P(first chosen) 0.52, P(longer chosen at equal gold reward) 0.64, tie
    rate 0; expected — agreement with gold and inter-annotator agreement (pair-dependent;
    the humans' 65.7 % was measured on AlpacaEval's pairs, not ours).
    """
    return SimulatedAnnotators(Annotator.calibrated(first=0.52, longer=0.64, name="human-like"))


def list_presets() -> list[str]:
    """The preset names, sorted."""
    return sorted(PRESETS)


def make_oracle(spec: Any = None) -> Oracle:
    """The oracle ``spec`` names: a preset name, an :class:`Oracle`, an :class:`Annotator`
    (a pool of one), or None (``"bt"``)."""
    if spec is None:
        spec = "bt"
    if isinstance(spec, Oracle):
        return spec
    if isinstance(spec, Annotator):
        return SimulatedAnnotators(spec)
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise InvalidArgumentError(
                f"unknown oracle preset {spec!r}.{closest(spec, PRESETS)} Presets: "
                f"{', '.join(list_presets())}; or pass an rlhf_env.oracles.Oracle object.")
        return PRESETS[spec]()
    raise InvalidArgumentError(
        f"oracle must be a preset name ({', '.join(list_presets())}) or an "
        f"rlhf_env.oracles.Oracle, got {type(spec).__name__} {spec!r:.80}")
