"""The diagnostic suite (agents/zoo/suite.py, ``rlhf-zoo suite``)."""

from __future__ import annotations

import json
import math

import pytest

from agents.zoo import suite
from agents.zoo.cli import main
from rlhf_env.errors import InvalidArgumentError


def test_family_names_are_checked():
    assert suite.families("small") == list(suite.SMALL)
    assert suite.families("all") == list(suite.FAMILIES)
    assert suite.families("coverage, noise") == ["coverage", "noise"]
    for bad in ("", "coverage,coverage", "explore"):
        with pytest.raises(InvalidArgumentError, match="--families"):
            suite.families(bad)


def test_every_cell_is_an_online_run_at_equal_labels():
    jobs = suite.plan(["noise", "budget"], ["mle_gibbs_uniform", "gshf_online"], [0, 1])
    assert len(jobs) == 2 * 3 * 2 * 2
    assert {cfg.setting for _, _, cfg in jobs} == {"online"}
    assert {cfg.oracle for fam, _, cfg in jobs if fam == "noise"} == {"gao-argmax", "bt",
                                                                     "coste-flip25"}
    budgets = {cfg.env_kwargs["query_budget"] for fam, _, cfg in jobs if fam == "budget"}
    assert budgets == {128, 512, 2048}


def test_summary_by_hand():
    """One cell: the uniform design (mean 0.6) beats the D-optimal one (0.5), so it is the
    cell's best design; GSHF - uniform = (0.1, 0.2, 0.2): mean 1/6, sd 0.057735, t(0.975, 2)
    = 4.302653, half-width 4.302653 * 0.057735 / sqrt(3) = 0.143422, so [0.023245, 0.310089]
    lies above 0 and the verdict holds."""
    scores = {"coverage": {"trap_penalty=1.0": {
        "mle_gibbs_uniform": {0: 0.5, 1: 0.6, 2: 0.7},
        "mle_gibbs_design": {0: 0.4, 1: 0.5, 2: 0.6},
        "gshf_online": {0: 0.6, 1: 0.8, 2: 0.9}}}}
    s = suite.summarise(scores, "mle_gibbs_design")
    row = s["cells"]["coverage"]["trap_penalty=1.0"]
    assert row["best_design"] == "mle_gibbs_uniform"
    p = row["agents"]["gshf_online"]["vs_best_design"]
    assert p["mean"] == pytest.approx(1 / 6)
    assert p["low"] == pytest.approx(0.023245, abs=1e-6)
    assert p["high"] == pytest.approx(0.310089, abs=1e-6)
    vb = row["agents"]["mle_gibbs_uniform"]["vs_baseline"]
    assert vb["mean"] == pytest.approx(0.1) and vb["ci95"] == pytest.approx(0.0, abs=1e-12)
    assert s["item3"] == {"gshf_online": {"cells": 1, "below": [], "above_families": ["coverage"],
                                          "holds": True}}
    assert s["capabilities"]["gshf_online"] == {"coverage robustness": pytest.approx(2.3 / 3)}
    # below the best design in one cell: the verdict fails, and says where
    scores["coverage"]["trap_penalty=3.0"] = {
        "mle_gibbs_uniform": {0: 0.9, 1: 0.9, 2: 0.95},
        "gshf_online": {0: 0.5, 1: 0.55, 2: 0.5}}
    v = suite.summarise(scores, "mle_gibbs_uniform")["item3"]["gshf_online"]
    assert v["below"] == ["coverage trap_penalty=3.0"] and not v["holds"]


def test_the_command_runs_and_writes_its_report(tmp_path, capsys):
    runs, out = tmp_path / "runs", tmp_path / "report"
    rc = main(["-q", "suite", "--families", "coverage", "--seeds", "2", "--agents",
               "mle_gibbs_uniform,gshf_online", "--runs-dir", str(runs), "--out", str(out)])
    assert rc == 0
    assert "gshf_online:" in capsys.readouterr().out
    report = json.loads((out / "suite.json").read_text())
    assert report["seeds"] == [0, 1] and set(report["cells"]) == {"coverage"}
    for label in ("trap_penalty=1.0", "trap_penalty=3.0", "trap_penalty=6.0"):
        cell = report["cells"]["coverage"][label]["agents"]
        assert set(cell) == {"mle_gibbs_uniform", "gshf_online"}
        assert all(math.isfinite(v) for v in cell["gshf_online"]["by_seed"].values())
        assert (runs / "coverage" / label / "LinearBT-Coverage-v0" / "gshf_online" /
                "seed1" / "eval.json").exists()
    md = (out / "suite.md").read_text()
    assert "## coverage" in md and "mle_gibbs_uniform" in md
    assert (out / "capabilities.png").stat().st_size > 0 and (out / "heatmaps.png").exists()
    # a second command reuses the finished runs and rewrites the same numbers
    assert main(["-q", "suite", "--families", "coverage", "--seeds", "2", "--agents",
                 "mle_gibbs_uniform,gshf_online", "--runs-dir", str(runs), "--out",
                 str(out)]) == 0
    again = json.loads((out / "suite.json").read_text())
    assert again["cells"] == report["cells"]


def test_bad_suite_arguments_are_refused_before_any_run(tmp_path, capsys):
    base = ["suite", "--families", "coverage", "--seeds", "1", "--runs-dir", str(tmp_path)]
    assert main([*base, "--agents", "gshf_online", "--baseline", "mle_gibbs_uniform"]) == 1
    assert "--baseline" in capsys.readouterr().err
    assert main([*base, "--agents", "gshf_online,gshf_online"]) == 1
    assert "named twice" in capsys.readouterr().err
    assert main([*base, "--agents", "dpo,mle_gibbs_uniform"]) == 1  # offline: cannot run online
    assert "agent dpo cannot run in the suite's coverage family" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
