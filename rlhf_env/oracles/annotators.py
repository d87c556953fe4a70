"""Simulated annotators: labellers with the noise and biases of real ones, and label flips.

Two parts, both :class:`~rlhf_env.oracles.Oracle` objects that an env takes as ``oracle=``
(and that compose with every other oracle through the one protocol):

* :class:`SimulatedAnnotators` — a pool of :class:`Annotator` s over the env's gold reward;
  each query is answered by one annotator drawn from the pool, and the step's ``info``
  says which (``info["annotator"]``, its index in the pool), as a labelling interface would.
* :class:`LabelFlips` — wraps any oracle and replaces each of its labels, with probability
  ``2p``, by a fair coin: AlpacaFarm's label noise in AlpacaEval's mixture form.

One annotator answers "is the first shown response better?" for a pair with gold rewards
r1, r2 and lengths l1, l2 (the env's length unit: words) in four steps:

1. **position habit** — with probability ``position_rate`` it answers "the first" unread;
2. **length habit** — otherwise, when l1 != l2, with probability ``length_rate`` it answers
   "the longer";
3. **tie** — otherwise, when ``|r1 - r2| < tie_margin``, it answers "about the same";
4. **judgement** — otherwise "the first" with probability (Bradley-Terry with logit shifts)

       sigmoid((r1 - r2) / temperature + position_logit + length_logit * (l1 - l2)).

   ``temperature=0`` is the noiseless argmax (Gao et al. 2023), the T -> 0 limit: the
   larger reward wins, and equal rewards go to sigmoid(position_logit + length_logit *
   (l1 - l2)) (a fair coin without biases).

Biases are thus written either as logit shifts (steps 4: ``position_logit`` per pair,
``length_logit`` per unit of length difference) or as habit rates (steps 1-2), which
:meth:`Annotator.calibrated` sets so that P(first chosen) on swapped pairs and P(longer
chosen) at equal gold reward are exactly given target probabilities, on any pairs.

A tie's step reward is 0.5 (:attr:`Labels.reward`) and ``info["tie"]`` is True; offline
datasets drop ties (:func:`rlhf_env.data.pairs.pairs_dataset`).

Randomness: every label call draws from the env's generator only (a fixed block of
uniforms per pair, whatever the parameters), so an env's runs are reproducible from its
seed. AlpacaEval instead seeds each flip on the pair's text, so asking twice about the same
pair gives the same answer there; here two queries of one pair are independent draws.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from rlhf_env.errors import InvalidArgumentError
from rlhf_env.oracles.base import (
    Choice,
    Labels,
    LengthFn,
    Oracle,
    OracleContext,
    RewardFn,
    finite_rewards,
    sigmoid,
    word_count,
)

__all__ = ["Annotator", "SimulatedAnnotators", "LabelFlips"]


def _number(name: str, value: Any) -> float:
    """``value`` as a finite float, or :class:`InvalidArgumentError` naming it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating)) or not math.isfinite(value):
        raise InvalidArgumentError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _in_range(name: str, value: Any, low: float, high: float, *, high_open: bool = False,
              what: str = "") -> float:
    """``value`` as a float in [low, high] (or [low, high)), or an error naming it."""
    x = _number(name, value)
    if not (low <= x and (x < high if high_open else x <= high)):
        interval = f"[{low:g}, {high:g}{')' if high_open else ']'}"
        raise InvalidArgumentError(f"{name} must be in {interval}{what}, got {value!r}")
    return x


@dataclasses.dataclass(frozen=True)
class Annotator:
    """One simulated labeller: its temperature and its biases (see the module docstring).

    Args:
        temperature: the judgement's Bradley-Terry temperature, >= 0 (0: noiseless argmax).
        position_logit: logit shift toward the first-shown response (finite).
        length_logit: logit shift per unit of length difference l1 - l2 (finite; the env's
            length unit, words on language envs).
        position_rate: probability of answering "the first" without judging, in [0, 1).
        length_rate: probability of answering "the longer" without judging (lengths
            differ), in [0, 1).
        tie_margin: gold-reward gaps below this are ties, >= 0 (0: never a tie).
        name: a label for reports and configs.
    """

    temperature: float = 1.0
    position_logit: float = 0.0
    length_logit: float = 0.0
    position_rate: float = 0.0
    length_rate: float = 0.0
    tie_margin: float = 0.0
    name: str = ""

    def __post_init__(self) -> None:
        t = _number("temperature", self.temperature)
        if t < 0:
            raise InvalidArgumentError(
                f"temperature must be >= 0 (0: noiseless argmax), got {self.temperature!r}")
        checked = {
            "temperature": t,
            "position_logit": _number("position_logit", self.position_logit),
            "length_logit": _number("length_logit", self.length_logit),
            "position_rate": _in_range("position_rate", self.position_rate, 0.0, 1.0,
                                       high_open=True),
            "length_rate": _in_range("length_rate", self.length_rate, 0.0, 1.0,
                                     high_open=True),
            "tie_margin": _number("tie_margin", self.tie_margin),
        }
        if checked["tie_margin"] < 0:
            raise InvalidArgumentError(f"tie_margin must be >= 0, got {self.tie_margin!r}")
        if not isinstance(self.name, str):
            raise InvalidArgumentError(f"name must be a str, got {self.name!r}")
        for key, value in checked.items():
            object.__setattr__(self, key, value)

    @classmethod
    def calibrated(cls, *, first: float = 0.5, longer: float = 0.5, temperature: float = 1.0,
                   tie_margin: float = 0.0, name: str = "") -> Annotator:
        """An annotator whose habits hit target probabilities exactly, on any pairs.

        With habit rates q_pos = 2 * first - 1 and q_len = (2 * longer - 1) / (1 - q_pos)
        (and no logit shifts), over pairs shown in both orders

            P(first chosen)                        = 1/2 + q_pos / 2             = first
            P(longer chosen | equal gold reward)   = 1/2 + (1 - q_pos) q_len / 2 = longer

        (ties counted as half a choice), because the judgement alone is symmetric: it
        picks the first of (a, b) as often as the second of (b, a), and at equal reward it
        is a fair coin or a tie.

        Args:
            first: target P(first-shown chosen), in [0.5, 1).
            longer: target P(longer chosen) at equal gold reward, in [0.5, 1), with
                ``longer <= 1.5 - first`` (the length habit rate must stay below 1).
            temperature, tie_margin, name: as for :class:`Annotator`.

        Returns:
            The :class:`Annotator`.
        """
        f = _in_range("first", first, 0.5, 1.0, high_open=True,
                      what=" (a preference for the first-shown response)")
        g = _in_range("longer", longer, 0.5, 1.0, high_open=True,
                      what=" (a preference for the longer response)")
        q_pos = round(2 * f - 1, 12)  # 2 * 0.52 - 1 is 0.040000000000000036 in floats
        q_len = round((2 * g - 1) / (1 - q_pos), 12)
        if q_len >= 1:
            raise InvalidArgumentError(
                f"longer={longer!r} cannot be reached with first={first!r}: "
                f"longer must be below {1.5 - f:g}")
        return cls(temperature=temperature, position_rate=q_pos, length_rate=q_len,
                   tie_margin=tie_margin, name=name)

    # -- the model -------------------------------------------------------------------------------
    def judgement(self, dr: np.ndarray, dlen: np.ndarray) -> np.ndarray:
        """P(first | the annotator judges) (step 4), for reward gaps ``dr`` = r1 - r2 and
        length gaps ``dlen`` = l1 - l2, float64 ``(n,)``."""
        dr = np.asarray(dr, dtype=np.float64)
        shift = self.position_logit + self.length_logit * np.asarray(dlen, dtype=np.float64)
        if self.temperature == 0:
            return np.where(dr > 0, 1.0, np.where(dr < 0, 0.0, sigmoid(shift + 0 * dr)))
        return sigmoid(dr / self.temperature + shift)

    def probabilities(self, dr: np.ndarray, dlen: np.ndarray) -> Choice:
        """The exact answer probabilities for reward gaps ``dr`` and length gaps ``dlen``
        (steps 1-4 of the module docstring)."""
        dr = np.asarray(dr, dtype=np.float64)
        dlen = np.asarray(dlen, dtype=np.float64)
        q_pos = self.position_rate
        q_len = self.length_rate * (dlen != 0)
        judged = (1 - q_pos) * (1 - q_len)
        tie = np.abs(dr) < self.tie_margin
        first = (q_pos + (1 - q_pos) * q_len * (dlen > 0)
                 + judged * ~tie * self.judgement(dr, dlen))
        return Choice(first, judged * tie)

    def answer(self, dr: np.ndarray, dlen: np.ndarray, u: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """Answers drawn from uniforms ``u`` of shape ``(n, 3)`` (position habit, length
        habit, judgement): ``(first, tie)``, two bool arrays ``(n,)``."""
        dr = np.asarray(dr, dtype=np.float64)
        dlen = np.asarray(dlen, dtype=np.float64)
        by_position = u[:, 0] < self.position_rate
        by_length = ~by_position & (dlen != 0) & (u[:, 1] < self.length_rate)
        judged = ~by_position & ~by_length
        tie = judged & (np.abs(dr) < self.tie_margin)
        first = by_position | (by_length & (dlen > 0)) | (
            judged & ~tie & (u[:, 2] < self.judgement(dr, dlen)))
        return first, tie

    def config(self) -> dict[str, Any]:
        """The parameters, JSON-serialisable."""
        return dataclasses.asdict(self)


class SimulatedAnnotators(Oracle):
    """A pool of simulated annotators over the env's gold reward (or ``reward_fn``).

    Each query is answered by one annotator drawn from the pool (uniformly, or by
    ``weights``); ``Labels.info["annotator"]`` (and so the step's ``info``) holds its index
    in the pool. A pool of one is a single annotator with its temperature and biases.

    Args:
        pool: an :class:`Annotator` or a non-empty sequence of them.
        weights: how often each annotator is drawn (non-negative, finite, summing to > 0;
            default uniform), as AlpacaFarm draws one of its 13 annotators per query.
        reward_fn: label from this reward instead of the env's gold reward.

    Every call draws a block of 4 uniforms per pair from the env's generator (annotator,
    position habit, length habit, judgement) and calls the reward once for the batch.
    """

    name = "annotators"

    def __init__(self, pool: Annotator | Sequence[Annotator], *,
                 weights: Sequence[float] | None = None,
                 reward_fn: RewardFn | None = None) -> None:
        members = [pool] if isinstance(pool, Annotator) else pool
        if isinstance(members, (str, bytes)) or not isinstance(members, Sequence):
            raise InvalidArgumentError(
                f"pool must be an Annotator or a sequence of them, got {type(pool).__name__}")
        members = list(members)
        if not members:
            raise InvalidArgumentError(
                "the annotator pool is empty (size 0): give at least one Annotator")
        for i, a in enumerate(members):
            if not isinstance(a, Annotator):
                raise InvalidArgumentError(
                    f"pool[{i}] must be an rlhf_env.oracles.Annotator, got {type(a).__name__} "
                    f"{a!r:.60}")
        if weights is None:
            w = np.full(len(members), 1.0 / len(members))
        else:
            w_list = list(weights)
            if len(w_list) != len(members):
                raise InvalidArgumentError(
                    f"weights has {len(w_list)} entries for a pool of {len(members)}")
            w = np.array([_number(f"weights[{i}]", x) for i, x in enumerate(w_list)])
            if (w < 0).any() or w.sum() <= 0:
                raise InvalidArgumentError(
                    f"weights must be >= 0 with a positive sum, got {w_list!r}")
            w = w / w.sum()
        if reward_fn is not None and not callable(reward_fn):
            raise InvalidArgumentError("reward_fn must be callable r(prompts, responses)")
        self.pool: tuple[Annotator, ...] = tuple(members)
        self.weights = w
        self.reward_fn = reward_fn
        self.gold: RewardFn | None = None  # the env's gold reward, once bound
        self.length: LengthFn = word_count

    def bind(self, context: OracleContext) -> SimulatedAnnotators:
        bound = copy.copy(self)
        bound.length = context.length
        if self.reward_fn is None:
            bound.gold = context.reward
        return bound

    def gaps(self, prompts: Sequence[str], responses_1: Sequence[str],
             responses_2: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Reward gaps r1 - r2 and length gaps l1 - l2 of ``n`` pairs (one reward call)."""
        fn = self.reward_fn or self.gold
        if fn is None:
            raise InvalidArgumentError(
                f"{self!r:.80} has no reward function: pass it to an env (oracle=...), which "
                "binds it to the env's gold reward, or give reward_fn=")
        n = len(prompts)
        both = list(responses_1) + list(responses_2)
        r = finite_rewards(fn, list(prompts) * 2, both)
        lengths = np.asarray(self.length(both), dtype=np.float64)
        return r[:n] - r[n:], lengths[:n] - lengths[n:]

    def label(self, prompts: Sequence[str], responses_1: Sequence[str],
              responses_2: Sequence[str], rng: np.random.Generator) -> Labels:
        n = len(prompts)
        dr, dlen = self.gaps(prompts, responses_1, responses_2)
        u = rng.random((n, 4))  # annotator, position habit, length habit, judgement
        who = np.minimum(np.searchsorted(np.cumsum(self.weights), u[:, 0], side="right"),
                         len(self.pool) - 1).astype(np.int64)
        first = np.zeros(n, dtype=bool)
        tie = np.zeros(n, dtype=bool)
        for i, annotator in enumerate(self.pool):
            m = who == i
            if m.any():
                first[m], tie[m] = annotator.answer(dr[m], dlen[m], u[m, 1:])
        return Labels.from_answers(responses_1, responses_2, first, tie, annotator=who)

    def choice_probabilities(self, prompts: Sequence[str], responses_1: Sequence[str],
                             responses_2: Sequence[str]) -> Choice:
        """The pool's answer probabilities: the annotators' exact ones, averaged by weight."""
        dr, dlen = self.gaps(prompts, responses_1, responses_2)
        first = np.zeros(len(dr))
        tie = np.zeros(len(dr))
        for w, annotator in zip(self.weights, self.pool):
            c = annotator.probabilities(dr, dlen)
            first += w * c.first
            tie += w * c.tie
        return Choice(first, tie)

    def config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "pool": [a.config() for a in self.pool]}
        if not np.allclose(self.weights, 1.0 / len(self.pool)):
            out["weights"] = [float(x) for x in self.weights]
        if self.reward_fn is not None:
            out["reward_fn"] = getattr(self.reward_fn, "name", type(self.reward_fn).__name__)
        return out

    def __repr__(self) -> str:
        if len(self.pool) == 1:
            return f"SimulatedAnnotators({self.pool[0]!r})"
        return f"SimulatedAnnotators(<pool of {len(self.pool)}>)"


class LabelFlips(Oracle):
    """Label noise on any oracle: AlpacaFarm's flips in AlpacaEval's mixture form.

    Each label of ``oracle`` is kept with probability 1 - 2p and otherwise replaced by a
    fair coin (first or second, p each), so a strict label ends up flipped with probability
    exactly p: P'(first) = (1 - 2p) P(first) + p. A replaced tie becomes a strict label.
    This is AlpacaEval's ``p_label_flip`` (``PairwiseAnnotator``: a noisy preference drawn
    from {keep, 1, 2} with probabilities 1 - 2p, p, p); AlpacaFarm (Dubois et al. 2023)
    uses p = 0.25 on training labels only, as here: evaluation never sees the oracle.

    Args:
        oracle: the oracle whose labels are flipped (any :class:`Oracle`).
        p: the flip probability, in [0, 0.5] (0.5: every label a fair coin).

    Draws the base oracle's randomness first, then one uniform per pair. Reward feedback
    (:meth:`score`) is the base oracle's, unflipped.
    """

    name = "label-flips"

    def __init__(self, oracle: Oracle, p: float = 0.25) -> None:
        if not isinstance(oracle, Oracle):
            raise InvalidArgumentError(
                f"LabelFlips wraps an rlhf_env.oracles.Oracle, got {type(oracle).__name__} "
                f"{oracle!r:.60}")
        self.p = _in_range("p", p, 0.0, 0.5, what=" (the label-flip probability)")
        self.oracle = oracle

    def bind(self, context: OracleContext) -> LabelFlips:
        bound = copy.copy(self)
        bound.oracle = self.oracle.bind(context)
        return bound

    def label(self, prompts: Sequence[str], responses_1: Sequence[str],
              responses_2: Sequence[str], rng: np.random.Generator) -> Labels:
        labels = self.oracle.label(prompts, responses_1, responses_2, rng)
        u = rng.random(len(prompts))
        to_first = u < self.p
        noisy = u < 2 * self.p
        first = np.where(noisy, to_first, labels.preference.astype(bool))
        return Labels.from_answers(responses_1, responses_2, first, labels.tie & ~noisy,
                                   **labels.info)

    def choice_probabilities(self, prompts: Sequence[str], responses_1: Sequence[str],
                             responses_2: Sequence[str]) -> Choice | None:
        """(1 - 2p) times the base oracle's probabilities, plus p on each strict answer."""
        base = self.oracle.choice_probabilities(prompts, responses_1, responses_2)
        if base is None:
            return None
        keep = 1.0 - 2.0 * self.p
        return Choice(keep * base.first + self.p, keep * base.tie)

    # no score(): flips are noise on preferences, and rewards passed through would drop it

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "p": self.p, "oracle": self.oracle.config()}

    def __repr__(self) -> str:
        return f"LabelFlips({self.oracle!r}, p={self.p})"
