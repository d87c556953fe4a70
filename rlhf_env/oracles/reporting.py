"""The oracle report: label a fixed set of pairs with an oracle and measure it.

``report(env, "alpacafarm")`` (or ``rlhf-env oracle-report <env-id> --oracle alpacafarm``)
draws a fixed set of response pairs on the env's prompts (pi0's samples on a language env,
every pair of candidates on an exact env), shows each pair in both orders ``n_draws`` times
to the oracle, and measures

==============================  ====================================================
``gold_agreement``              P(the response with the larger gold reward is chosen),
                                over pairs of unequal gold reward
``inter_annotator_agreement``   P(two independent queries of one pair, each with its
                                own annotator draw, give the same answer)
``first_chosen``                P(the first-shown response is chosen), pairs swapped
``longer_chosen``               P(the longer response is chosen) at equal gold reward
``tie_rate``                    P(a tie)
==============================  ====================================================

(a tie counts as half a choice). Each measurement is printed beside its **target**: the
exact expectation of that statistic under the oracle's own model
(:meth:`Oracle.choice_probabilities`) on the very pairs labelled, with the binomial
standard error of the measurement under that model; and beside the preset's **nominal**
value where it promises one on any pairs (:data:`~rlhf_env.oracles.presets.PRESET_INFO`).
A statistic is "within" when |measured - target| <= z standard errors.

"At equal gold reward": the pairs of different length whose gold rewards are exactly
equal when there are at least ``n_equal`` of them (TinyInstruct's graded program ties
often), otherwise the ``n_equal`` different-length pairs with the smallest gap (a reward
model rarely ties exactly); the report says which gap it used. The nominal P(longer) of a
preset holds at a gap of exactly 0; the target is exact at any gap.

The gold side comes from the judge (:func:`rlhf_env.judge`), and the oracle is called
directly, never through the env: the report charges nothing to the env's query ledger.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from rlhf_env.errors import InvalidArgumentError
from rlhf_env.oracles.base import Choice, Oracle, OracleContext, RewardFn, word_count
from rlhf_env.oracles.presets import PRESET_INFO, make_oracle

__all__ = ["STATISTICS", "PairSet", "Statistic", "OracleReport", "report_pairs", "report"]

STATISTICS: dict[str, str] = {
    "gold_agreement": "agreement with the gold preference",
    "inter_annotator_agreement": "inter-annotator agreement",
    "first_chosen": "P(first chosen), pairs swapped",
    "longer_chosen": "P(longer chosen), equal gold reward",
    "tie_rate": "tie rate",
}
"""Statistic key -> its name in the printed report."""


class _CachedReward:
    """A reward function that asks the wrapped one once per distinct (prompt, response)."""

    def __init__(self, fn: RewardFn) -> None:
        self.fn = fn
        self.cache: dict[tuple[str, str], float] = {}

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        keys = list(zip(prompts, responses))
        missing = list(dict.fromkeys(k for k in keys if k not in self.cache))
        if missing:
            values = np.asarray(self.fn([k[0] for k in missing], [k[1] for k in missing]),
                                dtype=np.float64).reshape(-1)
            self.cache.update(zip(missing, values.tolist()))
        return np.array([self.cache[k] for k in keys], dtype=np.float64)


@dataclasses.dataclass(frozen=True)
class PairSet:
    """A fixed set of response pairs with their gold rewards (the judge's) and lengths.

    Attributes:
        prompts, responses_1, responses_2: the pairs (two different responses each).
        gold_1, gold_2: ``(n,)`` gold rewards r*(x, a1), r*(x, a2).
        length_1, length_2: ``(n,)`` lengths in words.
        n_prompts: how many prompts the pairs come from.
        source: how the pairs were made, for the printed report.
    """

    prompts: tuple[str, ...]
    responses_1: tuple[str, ...]
    responses_2: tuple[str, ...]
    gold_1: np.ndarray
    gold_2: np.ndarray
    length_1: np.ndarray
    length_2: np.ndarray
    n_prompts: int
    source: str

    def __len__(self) -> int:
        return len(self.prompts)


@dataclasses.dataclass(frozen=True)
class Statistic:
    """One measured statistic of an oracle.

    Attributes:
        key: the statistic (a key of :data:`STATISTICS`).
        measured: the measured frequency (NaN when no label qualifies).
        stderr: its binomial standard error under the oracle's model (empirical when the
            oracle states no probabilities).
        target: the exact expectation under the oracle's model on these pairs (None when
            the oracle states no probabilities).
        nominal: the preset's promised value on any pairs, or None.
        n_labels: the labels it averages.
        within: |measured - target| <= z * stderr (None without a target or labels).
    """

    key: str
    measured: float
    stderr: float
    target: float | None
    nominal: float | None
    n_labels: int
    within: bool | None


@dataclasses.dataclass(frozen=True)
class OracleReport:
    """The measured statistics of one oracle on one env's fixed pairs (:func:`report`).

    Attributes:
        env: the env's name.
        oracle: the oracle's config.
        preset: the preset's name, or None for an oracle object.
        statistics: key -> :class:`Statistic`, in the order of :data:`STATISTICS`.
        n_pairs, n_prompts, n_draws: the pairs, their prompts, labels per pair and order.
        n_equal_pairs, equal_gap: the pairs behind ``longer_chosen`` and their largest
            gold-reward gap (0.0: exactly equal).
        z: the tolerance in standard errors.
        pairs_source: how the pairs were made.
        seed: the report's seed.
        oracle_repr: the oracle, as printed.
    """

    env: str
    oracle: dict[str, Any]
    preset: str | None
    statistics: dict[str, Statistic]
    n_pairs: int
    n_prompts: int
    n_draws: int
    n_equal_pairs: int
    equal_gap: float
    z: float
    pairs_source: str
    seed: int
    oracle_repr: str = ""

    @property
    def ok(self) -> bool:
        """Every statistic with a target is within its tolerance."""
        return all(s.within is not False for s in self.statistics.values())

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the report."""
        out = dataclasses.asdict(self)
        out["ok"] = self.ok
        return out

    def format(self) -> str:
        """The report as printed: a header and a Markdown table, measured beside target."""
        name = self.preset or self.oracle.get("name", "oracle")
        n_labels = 2 * self.n_pairs * self.n_draws
        lines = [
            f"Oracle report: {name} on {self.env} (seed {self.seed})",
            f"oracle: {self.oracle_repr}",
        ]
        if self.preset in PRESET_INFO:
            lines.append(f"source: {PRESET_INFO[self.preset].source}")
        lines += [
            f"pairs: {self.n_pairs} {self.pairs_source} on {self.n_prompts} prompts, each "
            f"shown in both orders, {self.n_draws} labels per order ({n_labels:,} labels; "
            "none charged to the env's ledger)",
            "",
            f"| statistic | measured | s.e. | target | nominal | within {self.z:g} s.e. |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for key, s in self.statistics.items():
            label = STATISTICS[key]
            if key == "longer_chosen":
                gap = "= 0" if self.equal_gap == 0 else f"<= {self.equal_gap:.3g}"
                label += f" ({self.n_equal_pairs} pairs, |gap| {gap})"
            elif key == "gold_agreement":
                label += f" ({s.n_labels // max(2 * self.n_draws, 1)} pairs)"
            within = {True: "yes", False: "NO", None: "-"}[s.within]
            nominal = _fmt(s.nominal)
            if key == "longer_chosen" and s.nominal is not None and self.equal_gap > 0:
                nominal += "*"
            lines.append(
                f"| {label} | {_fmt(s.measured)} | {_fmt(s.stderr)} | {_fmt(s.target)} | "
                f"{nominal} | {within} |")
        lines += [
            "",
            "target: the exact expectation under the oracle's own model on these pairs; "
            "nominal: the value the preset promises on any pairs (P(longer): at exactly "
            "equal gold reward).",
        ]
        if self.equal_gap > 0 and self.statistics["longer_chosen"].nominal is not None:
            lines.append(f"* fewer than {self.n_equal_pairs} different-length pairs tie "
                         "exactly in gold reward, so these are the nearest ones: the nominal "
                         "P(longer) need not hold on them; the target is exact.")
        if self.preset in PRESET_INFO and PRESET_INFO[self.preset].published:
            pub = ", ".join(f"{k} {v:g}" for k, v in PRESET_INFO[self.preset].published.items())
            lines.append(f"published, measured on the source's own data (context only): {pub}")
        return "\n".join(lines)


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isnan(x):
        return "n/a"
    return f"{x:.4f}"


def _resolve_env(env: Any, env_kwargs: dict[str, Any] | None) -> Any:
    if isinstance(env, str):
        from rlhf_env.registration import make

        return make(env, **(env_kwargs or {}))
    if env_kwargs:
        raise InvalidArgumentError("env_kwargs is for an env id; this env is already made")
    return env


def report_pairs(env: Any, *, n_prompts: int = 64, n_samples: int = 4, max_pairs: int = 512,
                 seed: int = 0) -> PairSet:
    """The fixed pairs a report labels, with the judge's gold rewards.

    Prompts: the env's held-out evaluation prompts, then its train prompts, up to
    ``n_prompts``. Responses: on an exact env every candidate; otherwise ``n_samples``
    samples of pi0 per prompt (seeded by ``seed``). Pairs: every two different responses
    of one prompt, at most ``max_pairs`` (a seeded subset).

    Returns:
        A :class:`PairSet`.
    """
    import torch

    from rlhf_env.judging import instance_of, judge

    for name, value in (("n_prompts", n_prompts), ("n_samples", n_samples),
                        ("max_pairs", max_pairs)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InvalidArgumentError(f"{name} must be an int >= 1, got {value!r}")
    inst = instance_of(env)
    prompts = list(dict.fromkeys(inst.eval_prompts + inst.train_prompts))[:n_prompts]
    if inst.exact:
        candidates = [list(inst.catalog.responses) for _ in prompts]
        source = "pairs of candidates"
    else:
        gen = torch.Generator().manual_seed(int(seed))
        candidates = inst.reference.sample(prompts, n=n_samples, generator=gen)
        source = f"pairs of pi0 samples ({n_samples} per prompt)"
    px, r1, r2 = [], [], []
    for p, cands in zip(prompts, candidates):
        distinct = list(dict.fromkeys(cands))
        for i in range(len(distinct)):
            for j in range(i + 1, len(distinct)):
                px.append(p)
                r1.append(distinct[i])
                r2.append(distinct[j])
    if not px:
        raise InvalidArgumentError(
            f"{inst.name}: pi0's {n_samples} samples were identical on every prompt; "
            "ask for more samples (n_samples) or prompts (n_prompts)")
    if len(px) > max_pairs:
        keep = np.sort(np.random.default_rng([seed, 0x9A1]).permutation(len(px))[:max_pairs])
        px, r1, r2 = ([v[i] for i in keep] for v in (px, r1, r2))
    gold = _CachedReward(judge(inst).gold_rewards)
    return PairSet(tuple(px), tuple(r1), tuple(r2), gold(px, r1), gold(px, r2),
                   word_count(r1), word_count(r2), len(prompts), source)


def report(env: Any, oracle: Any = None, *, pairs: PairSet | None = None, n_prompts: int = 64,
           n_samples: int = 4, n_draws: int = 200, n_equal: int = 16, seed: int = 0,
           z: float = 4.0, env_kwargs: dict[str, Any] | None = None) -> OracleReport:
    """Measure an oracle on a fixed set of pairs of an env; see the module docstring.

    Args:
        env: an env made by :func:`rlhf_env.make` (or its instance), or an env id.
        oracle: a preset name, an :class:`Oracle`, or None (the env's own training oracle).
        pairs: the pairs to label (default: :func:`report_pairs` with ``n_prompts``,
            ``n_samples`` and ``seed``); pass the same set to compare oracles.
        n_draws: labels per pair and order (even: inter-annotator agreement pairs them up).
        n_equal: the fewest pairs behind "P(longer chosen) at equal gold reward".
        seed: seeds the pairs (pi0's samples) and the oracle's draws.
        z: the tolerance, in standard errors.
        env_kwargs: keyword arguments of :func:`rlhf_env.make` when ``env`` is an id.

    Returns:
        An :class:`OracleReport` (``print(r.format())`` prints the table).
    """
    from rlhf_env.judging import instance_of, judge

    if isinstance(n_draws, bool) or not isinstance(n_draws, (int, np.integer)) or n_draws < 2:
        raise InvalidArgumentError(f"n_draws must be an int >= 2, got {n_draws!r}")
    if isinstance(n_equal, bool) or not isinstance(n_equal, (int, np.integer)) or n_equal < 1:
        raise InvalidArgumentError(f"n_equal must be an int >= 1, got {n_equal!r}")
    if isinstance(z, bool) or not isinstance(z, (int, float)) or not (0 < z < math.inf):
        raise InvalidArgumentError(f"z must be a finite number > 0, got {z!r}")
    chosen_oracle = None if oracle is None else make_oracle(oracle)  # a bad name fails first
    env = _resolve_env(env, env_kwargs)
    inst = instance_of(env)
    j = judge(inst)
    preset = oracle if isinstance(oracle, str) else None
    if pairs is None:
        pairs = report_pairs(inst, n_prompts=n_prompts, n_samples=n_samples, seed=seed)
    base: Oracle = j.oracle if chosen_oracle is None else chosen_oracle
    bound = base.bind(OracleContext(_CachedReward(j.gold_rewards), name=inst.name))

    # ---- rows: every pair in both orders; n_draws labels per row ---------------------------
    n, d = len(pairs), int(n_draws)
    order = np.tile([0, 1], n)  # row 2i: (a, b); row 2i+1: (b, a)
    idx = np.repeat(np.arange(n), 2)
    a, b = np.array(pairs.responses_1, dtype=object), np.array(pairs.responses_2, dtype=object)
    x1 = np.where(order == 0, a[idx], b[idx])
    x2 = np.where(order == 0, b[idx], a[idx])
    g1 = np.where(order == 0, pairs.gold_1[idx], pairs.gold_2[idx])
    g2 = np.where(order == 0, pairs.gold_2[idx], pairs.gold_1[idx])
    l1 = np.where(order == 0, pairs.length_1[idx], pairs.length_2[idx])
    l2 = np.where(order == 0, pairs.length_2[idx], pairs.length_1[idx])
    row_prompts = [pairs.prompts[i] for i in idx]

    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x0AC1E]))
    labels = bound.label([p for p in row_prompts for _ in range(d)],
                         [str(x) for x in x1 for _ in range(d)],
                         [str(x) for x in x2 for _ in range(d)], rng)
    tie = labels.tie.reshape(-1, d)
    first = labels.preference.reshape(-1, d).astype(bool) & ~tie
    s_first = np.where(tie, 0.5, first.astype(np.float64))  # (rows, d)
    outcome = np.where(tie, 2, np.where(first, 0, 1))

    choice: Choice | None = bound.choice_probabilities(row_prompts, list(x1), list(x2))
    if choice is not None:
        pf, pt = choice.first, choice.tie
        ps = choice.second
        e_first = pf + 0.5 * pt
        v_first = pf + 0.25 * pt - e_first**2
    else:
        pf = pt = ps = e_first = v_first = None

    # ---- the pairs at equal gold reward ----------------------------------------------------
    gap = np.abs(pairs.gold_1 - pairs.gold_2)
    differ = np.flatnonzero(pairs.length_1 != pairs.length_2)
    exact = differ[gap[differ] == 0]
    if len(exact) >= n_equal:
        chosen_pairs = exact
    else:
        chosen_pairs = differ[np.argsort(gap[differ], kind="stable")[:n_equal]]
    equal_rows = np.zeros(2 * n, dtype=bool)
    equal_rows[2 * chosen_pairs] = True
    equal_rows[2 * chosen_pairs + 1] = True
    equal_gap = float(gap[chosen_pairs].max()) if len(chosen_pairs) else 0.0

    # ---- the statistics ----------------------------------------------------------------------
    info = PRESET_INFO.get(preset) if preset else None
    nominal = info.nominal if info else {}
    first_better = g1 > g2
    longer_first = l1 > l2
    stats: dict[str, Statistic] = {}

    def add(key: str, scores: np.ndarray, rows: np.ndarray, e_row: np.ndarray | None,
            v_row: np.ndarray | None) -> None:
        k = scores.shape[1]
        count = int(rows.sum()) * k
        if count == 0:
            stats[key] = Statistic(key, math.nan, math.nan, None, nominal.get(key), 0, None)
            return
        measured = float(scores[rows].mean())
        if e_row is None or v_row is None:
            stderr = float(scores[rows].std() / math.sqrt(count))
            stats[key] = Statistic(key, measured, stderr, None, nominal.get(key), count, None)
            return
        target = float(e_row[rows].mean())
        stderr = float(math.sqrt(max(float(v_row[rows].sum()), 0.0) * k) / count)
        within = abs(measured - target) <= z * stderr + 1e-9
        stats[key] = Statistic(key, measured, stderr, target, nominal.get(key), count,
                               bool(within))

    def oriented(toward_first: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        scores = np.where(toward_first[:, None], s_first, 1.0 - s_first)
        e = None if e_first is None else np.where(toward_first, e_first, 1.0 - e_first)
        return scores, e

    scores, e = oriented(first_better)
    add("gold_agreement", scores, g1 != g2, e, v_first)
    m = d // 2
    agree = (outcome[:, 0:2 * m:2] == outcome[:, 1:2 * m:2]).astype(np.float64)
    if pf is not None and pt is not None and ps is not None:
        q = pf**2 + ps**2 + pt**2
        add("inter_annotator_agreement", agree, np.ones(2 * n, dtype=bool), q, q * (1 - q))
    else:
        add("inter_annotator_agreement", agree, np.ones(2 * n, dtype=bool), None, None)
    add("first_chosen", s_first, np.ones(2 * n, dtype=bool), e_first, v_first)
    scores, e = oriented(longer_first)
    add("longer_chosen", scores, equal_rows, e, v_first)
    add("tie_rate", tie.astype(np.float64), np.ones(2 * n, dtype=bool), pt,
        None if pt is None else pt * (1 - pt))

    return OracleReport(
        env=inst.name, oracle=bound.config(), preset=preset, statistics=stats, n_pairs=n,
        n_prompts=pairs.n_prompts, n_draws=d, n_equal_pairs=len(chosen_pairs),
        equal_gap=equal_gap, z=float(z), pairs_source=pairs.source, seed=int(seed),
        oracle_repr=repr(base))
