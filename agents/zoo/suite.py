"""A diagnostic suite for preference learners: families of instances that each vary one
property, every agent paired by seed (``rlhf-zoo suite``).

In the manner of bsuite (Osband et al., ICLR 2020, "Behaviour Suite for Reinforcement
Learning"): a *family* is an exact env with one keyword varied over a grid (pi0's mass on
the responses pi* plays, the share of theta* hidden from pi0's data, the penalty of an
uncovered trap, annotator noise, the label budget, eta, the dimension); each family probes
one *capability*. Every agent runs on every cell and seed **in the online setting at equal
labels** (no offline pairs: the query budget is every label an agent gets, so a design
baseline and an adaptive learner see the same number of labels), and the report gives

* per agent and capability, the mean normalized score over the capability's cells and
  seeds (in [0, 1] for a policy between pi0 and pi*; the bar plot ``capabilities.png``);
* per cell, each agent's per-seed difference to a named ``baseline`` (default: the uniform
  design, ``mle_gibbs_uniform``) with its 95% t-interval (``heatmaps.png``: rows agents,
  columns grid points, colour the mean difference, a mark where the interval excludes 0);
* per cell, each agent's paired difference to the **best design baseline of that cell**
  (the non-adaptive agent of :data:`DESIGNS` with the highest mean there, chosen on the same
  seeds, which favours the baseline) and a verdict per agent: never significantly below it
  on any cell, and significantly above it on at least one family (issue 20, item 3).

Runs are ordinary zoo runs (resumable, reused when finished) under
``RUNS_DIR/<family>/<key>=<value>/``; the tables and plots go to ``--out``, written into a
temporary folder and moved into place under a lock, as leaderboards are. The exact agents
take about half a second a run, so one process runs the small grid of 8 agents in ~8 minutes; with
``--workers N`` each cell is a leaderboard of its own on a local Ray instance (started per
cell, a few seconds each).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.zoo.stats import paired

__all__ = ["Family", "FAMILIES", "SMALL", "DESIGNS", "DEFAULT_AGENTS", "plan", "run_suite",
           "summarise", "write_suite"]

log = logging.getLogger("agents")


@dataclass(frozen=True)
class Family:
    """One env, one keyword varied over ``grid`` (``key="oracle"``: an oracle preset)."""

    env_id: str
    key: str
    grid: tuple[Any, ...]
    capability: str
    about: str

    def cells(self) -> list[tuple[str, dict[str, Any], str | None]]:
        """``(label, env kwargs, oracle)`` per grid point."""
        out = []
        for v in self.grid:
            if self.key == "oracle":
                out.append((f"oracle={v}", {}, str(v)))
            else:
                out.append((f"{self.key}={v}", {self.key: v}, None))
        return out


FAMILIES: dict[str, Family] = {
    "exploration": Family("LinearBT-Explore-v0", "rare_mass", (0.002, 0.01, 0.2), "exploration",
                          "pi0's mass on the rare responses pi* plays"),
    "hidden": Family("LinearBT-Explore-v0", "hidden_share", (0.5, 0.8, 0.95), "exploration",
                     "the share of theta* in directions only rare responses touch"),
    "coverage": Family("LinearBT-Coverage-v0", "trap_penalty", (1.0, 3.0, 6.0),
                       "coverage robustness", "the penalty of traps along an uncovered direction"),
    "noise": Family("LinearBT-v0", "oracle", ("gao-argmax", "bt", "coste-flip25"),
                    "noise robustness", "annotator noise: argmax, Bradley-Terry, BT + 25% flips"),
    "budget": Family("LinearBT-v0", "query_budget", (128, 512, 2048), "label efficiency",
                     "the labels an agent gets"),
    "eta": Family("LinearBT-v0", "eta", (0.25, 1.0, 4.0), "KL control",
                  "the KL weight of the objective"),
    "dimension": Family("LinearBT-v0", "dim", (4, 16, 64), "scaling",
                        "the feature dimension (theta* and the features)"),
    "alignment": Family("LinearBT-v0", "reference_alignment", (-0.5, 0.25, 0.9), "exploration",
                        "the cosine between pi0's direction and theta*"),
}
SMALL = ("exploration", "coverage", "noise", "budget")
"""The default families: one per capability the paper's claims are about."""

DESIGNS = ("mle_gibbs_pi0", "mle_gibbs_uniform", "mle_gibbs_design", "pessimistic_gibbs_pi0",
           "pessimistic_gibbs_uniform", "pessimistic_gibbs_design")
"""Non-adaptive agents: the whole budget on pairs fixed before the first label."""

DEFAULT_AGENTS = ("mle_gibbs_pi0", "mle_gibbs_uniform", "mle_gibbs_design",
                  "pessimistic_gibbs_design", "gshf_online", "thompson_gibbs",
                  "adaptive_design_gibbs")


def families(spec: str) -> list[str]:
    """``"small"`` (:data:`SMALL`), ``"all"`` or a comma-separated list of family names."""
    from rlhf_env.errors import InvalidArgumentError

    if spec == "small":
        return list(SMALL)
    if spec == "all":
        return list(FAMILIES)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in FAMILIES]
    if unknown or not names or len(set(names)) != len(names):
        raise InvalidArgumentError(f"--families {spec!r}: name each of {sorted(FAMILIES)} at most "
                                   f"once (or 'small', 'all'); unknown: {unknown}")
    return names


def plan(names: Sequence[str], agents: Sequence[str], seeds: Sequence[int]) -> list[tuple]:
    """``(family, cell label, RunConfig)`` of every run, resolved (and so checked) first;
    each agent is also built on each cell's first instance, so that one that cannot learn
    there (an offline agent: the suite runs online) is refused before any run starts."""
    import agents as zoo
    from agents.zoo.config import resolve
    from agents.zoo.run import make_env
    from rlhf_env.errors import InvalidArgumentError, RLHFEnvError

    jobs = []
    for fam in names:
        f = FAMILIES[fam]
        for label, kwargs, oracle in f.cells():
            for a in agents:
                cfgs = [resolve(a, f.env_id, s, env_kwargs=kwargs, setting="online",
                                oracle=oracle) for s in seeds]
                try:
                    zoo.get(a)(make_env(cfgs[0]), **cfgs[0].hyperparams, seed=cfgs[0].seed,
                               progress=False)
                except RLHFEnvError as e:
                    raise InvalidArgumentError(
                        f"agent {a} cannot run in the suite's {fam} family ({label}, online "
                        f"at equal labels): {e}") from e
                jobs += [(fam, label, cfg) for cfg in cfgs]
    return jobs


def run_suite(names: Sequence[str], agents: Sequence[str], seeds: Sequence[int], *,
              runs: str | Path = "runs/suite", overwrite: bool = False, workers: int = 1,
              progress: bool | None = None, command: str = ""
              ) -> tuple[dict[str, dict[str, dict[str, dict[int, float]]]], list[str]]:
    """Train (or reuse) every run; returns ``scores[family][cell][agent][seed]`` (normalized
    score) and the failures."""
    from agents.zoo.leaderboard import run_leaderboard

    scores: dict[str, dict[str, dict[str, dict[int, float]]]] = {}
    failures: list[str] = []
    cells = [(fam, c) for fam in names for c in FAMILIES[fam].cells()]
    start = time.perf_counter()
    for i, (fam, (label, kwargs, oracle)) in enumerate(cells, start=1):
        t = time.perf_counter()
        results, failed = run_leaderboard(
            FAMILIES[fam].env_id, agents, seeds, runs=Path(runs) / fam / label,
            env_kwargs=kwargs, setting="online", oracle=oracle, overwrite=overwrite,
            progress=progress, command=command, workers=workers)
        failures += [f"{fam} {label}: {f}" for f in failed]
        scores.setdefault(fam, {})[label] = {
            a: {r["seed"]: float(r["normalized_score"]) for r in rows}
            for a, rows in results.items()}
        log.info("[suite %d/%d] %s %s: %d runs in %.1f s (%.0f s so far)", i, len(cells), fam,
                 label, len(agents) * len(seeds), time.perf_counter() - t,
                 time.perf_counter() - start)
    return scores, failures


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def _significant(p: dict[str, Any]) -> int:
    """+1 / -1 where the 95% interval lies above / below 0, else 0."""
    if not (math.isfinite(p["low"]) and math.isfinite(p["high"])):
        return 0
    return 1 if p["low"] > 0 else -1 if p["high"] < 0 else 0


def summarise(scores: dict[str, dict[str, dict[str, dict[int, float]]]],
              baseline: str) -> dict[str, Any]:
    """Capability scores, paired differences per cell to ``baseline`` and to the cell's best
    design baseline, and item 3's verdict per agent."""
    agents = sorted({a for cells in scores.values() for c in cells.values() for a in c})
    caps: dict[str, dict[str, list[float]]] = {}
    cells_out: dict[str, dict[str, Any]] = {}
    for fam, cells in scores.items():
        cap = FAMILIES[fam].capability
        cells_out[fam] = {}
        for label, by_agent in cells.items():
            designs = [d for d in DESIGNS if by_agent.get(d)]
            best = max(designs, key=lambda d: _mean(list(by_agent[d].values())), default=None)
            row: dict[str, Any] = {"best_design": best, "agents": {}}
            for a, vals in by_agent.items():
                caps.setdefault(a, {}).setdefault(cap, []).extend(vals.values())
                entry = {"mean": _mean(list(vals.values())), "by_seed": vals}
                if baseline in by_agent and a != baseline:
                    entry["vs_baseline"] = paired(vals, by_agent[baseline])
                if best is not None and a != best:
                    entry["vs_best_design"] = paired(vals, by_agent[best])
                row["agents"][a] = entry
            cells_out[fam][label] = row
    verdict = {}
    for a in agents:
        if a in DESIGNS:
            continue
        signs = {(fam, label): _significant(row["agents"][a]["vs_best_design"])
                 for fam, cells in cells_out.items() for label, row in cells.items()
                 if "vs_best_design" in row["agents"].get(a, {})}
        below = sorted(f"{fam} {label}" for (fam, label), s in signs.items() if s < 0)
        above = sorted({fam for (fam, _), s in signs.items() if s > 0})
        verdict[a] = {"cells": len(signs), "below": below, "above_families": above,
                      "holds": bool(signs) and not below and bool(above)}
    capability = {a: {c: _mean(v) for c, v in sorted(d.items())} for a, d in caps.items()}
    return {"baseline": baseline, "capabilities": capability, "cells": cells_out,
            "item3": verdict}


def _fmt(p: dict[str, Any] | None) -> str:
    if p is None or not math.isfinite(p["mean"]):
        return "–"
    mark = {1: " ✓", -1: " ✗", 0: ""}[_significant(p)]
    return f"{p['mean']:+.3f} [{p['low']:+.3f}, {p['high']:+.3f}]{mark}"


def markdown(summary: dict[str, Any], seeds: Sequence[int], command: str, wall_s: float) -> str:
    from tabulate import tabulate

    base = summary["baseline"]
    caps = sorted({c for d in summary["capabilities"].values() for c in d})
    agents = sorted(summary["capabilities"],
                    key=lambda a: -_mean(list(summary["capabilities"][a].values())))
    lines = ["# Diagnostic suite", "",
             f"Seeds {list(seeds)}; every agent in the online setting at equal labels (the "
             "query budget is every label). Normalized score: 0 = pi0, 1 = pi*. Paired "
             "differences: mean per-seed difference with its 95% t-interval (✓ above 0, ✗ "
             f"below 0). Wall time {wall_s:.0f} s.", ""]
    if command:
        lines += ["Made by:", "", f"    {command}", ""]
    lines += ["## Capability scores (mean normalized score over the capability's cells and "
              "seeds)", "",
              tabulate([[a] + [f"{summary['capabilities'][a].get(c, float('nan')):.3f}"
                               for c in caps] for a in agents],
                       headers=["agent", *caps], tablefmt="github"), ""]
    lines += ["## Against the best design baseline of each cell (issue 20, item 3)", "",
              "The best design baseline of a cell is the non-adaptive agent with the highest "
              "mean there, picked on the same seeds (which favours it). 'holds': never "
              "significantly below it on any cell and significantly above it on at least one "
              "family.", ""]
    rows = [[a, "yes" if v["holds"] else "no", v["cells"], ", ".join(v["below"]) or "none",
             ", ".join(v["above_families"]) or "none"]
            for a, v in sorted(summary["item3"].items())]
    lines += [tabulate(rows, headers=["agent", "holds", "cells", "significantly below in",
                                      "significantly above in"], tablefmt="github"), ""]
    for fam, cells in summary["cells"].items():
        f = FAMILIES[fam]
        lines += [f"## {fam}: {f.env_id}, {f.about} ({f.capability})", ""]
        labels = list(cells)
        rows = []
        for a in agents:
            row = [a]
            for label in labels:
                e = cells[label]["agents"].get(a)
                row.append("–" if e is None else f"{e['mean']:.3f}")
            rows.append(row)
        lines += ["Mean normalized score:", "",
                  tabulate(rows, headers=["agent", *labels], tablefmt="github"), ""]
        rows = [[a] + [_fmt(cells[label]["agents"].get(a, {}).get("vs_baseline"))
                       for label in labels] for a in agents if a != base]
        lines += [f"Paired difference to {base}:", "",
                  tabulate(rows, headers=["agent", *labels], tablefmt="github"), ""]
        best = [f"{label}: {cells[label]['best_design']}" for label in labels]
        rows = [[a] + [_fmt(cells[label]["agents"].get(a, {}).get("vs_best_design"))
                       for label in labels] for a in agents if a in summary["item3"]]
        lines += [f"Paired difference to the cell's best design baseline ({'; '.join(best)}):",
                  "", tabulate(rows, headers=["agent", *labels], tablefmt="github"), ""]
    lines += ["![capabilities](capabilities.png)", "", "![heatmaps](heatmaps.png)", ""]
    return "\n".join(lines)


def _plots(summary: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from agents.zoo.plots import style

    caps = sorted({c for d in summary["capabilities"].values() for c in d})
    agents = sorted(summary["capabilities"])
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(caps) + 2) + 2.0, 4.2))
    w = 0.8 / len(agents)
    for i, a in enumerate(agents):
        vals = [summary["capabilities"][a].get(c, np.nan) for c in caps]
        ax.bar(np.arange(len(caps)) + (i - (len(agents) - 1) / 2) * w, vals, w, label=a,
               color=style(i)["color"], edgecolor="black", linewidth=0.4,
               hatch=["", "//", "..", "xx", "\\\\", "--"][(i // 10) % 6])
    ax.set_xticks(np.arange(len(caps)), caps)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.axhline(1, color="grey", linewidth=0.6, linestyle=":")
    ax.set_ylabel("mean normalized score (0 = pi0, 1 = pi*)")
    ax.set_title("Capability scores (online, equal labels)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    p1 = out / "capabilities.png"
    fig.savefig(p1, dpi=110)
    plt.close(fig)

    base = summary["baseline"]
    fams = list(summary["cells"])
    rows = [a for a in agents if a != base]
    fig, axes = plt.subplots(1, len(fams), figsize=(3.2 * len(fams) + 1.5, 0.42 * len(rows) + 1.8),
                             squeeze=False)
    diffs = [e.get("vs_baseline", {}).get("mean", np.nan) for cells in summary["cells"].values()
             for row in cells.values() for e in row["agents"].values()]
    lim = max(0.05, float(np.nanmax(np.abs(diffs))) if diffs else 0.05)
    im = None
    for k, fam in enumerate(fams):
        ax = axes[0, k]
        labels = list(summary["cells"][fam])
        m = np.full((len(rows), len(labels)), np.nan)
        for i, a in enumerate(rows):
            for j, label in enumerate(labels):
                p = summary["cells"][fam][label]["agents"].get(a, {}).get("vs_baseline")
                if p is None:
                    continue
                m[i, j] = p["mean"]
                mark = {1: "+", -1: "−", 0: ""}[_significant(p)]
                ax.text(j, i, f"{p['mean']:+.2f}{mark}", ha="center", va="center", fontsize=7,
                        color="white" if abs(p["mean"]) > 0.6 * lim else "black")
        im = ax.imshow(m, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
        ax.set_xticks(range(len(labels)), [lb.split("=", 1)[1] for lb in labels], fontsize=8)
        ax.set_xlabel(FAMILIES[fam].key, fontsize=8)
        ax.set_yticks(range(len(rows)), rows if k == 0 else [""] * len(rows), fontsize=8)
        ax.set_title(f"{fam}\n({FAMILIES[fam].env_id})", fontsize=8)
    if im is not None:
        fig.colorbar(im, ax=axes[0, :].tolist(), shrink=0.8,
                     label=f"paired difference to {base}")
    fig.suptitle(f"Normalized score minus {base}'s, paired by seed (+/−: 95% interval "
                 "excludes 0)", fontsize=9, y=1.0 + 0.25 / fig.get_figheight())
    p2 = out / "heatmaps.png"
    fig.savefig(p2, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return [p1, p2]


def write_suite(scores: dict[str, Any], out: str | Path, *, baseline: str,
                seeds: Sequence[int], command: str = "", wall_s: float = 0.0) -> dict[str, Any]:
    """``suite.md``, ``suite.json`` and the plots into ``out`` (atomically, under a lock)."""
    from agents.files import report_folder

    summary = summarise(scores, baseline)
    with report_folder(Path(out), last=("suite.json", "suite.md")) as tmp:
        _plots(summary, tmp)
        (tmp / "suite.json").write_text(json.dumps(
            {"seeds": list(seeds), "command": command, "wall_s": wall_s,
             "families": {f: {"env_id": FAMILIES[f].env_id, "key": FAMILIES[f].key,
                               "grid": list(FAMILIES[f].grid),
                               "capability": FAMILIES[f].capability} for f in scores},
             **summary}, indent=1, default=str))
        (tmp / "suite.md").write_text(markdown(summary, seeds, command, wall_s))
    return summary
