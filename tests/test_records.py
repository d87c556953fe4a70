"""Nothing wrong ever reaches a table (issue 22): each corruption of a run's records the
audit tried — a foreign, edited, truncated or vanished ledger, a foreign checkpoint, a missing
pairs file, an edited eval.json or policy — is refused with the package's own error naming
the file; a failed leaderboard leaves the previous table. (write_pairs' kill window:
tests/test_durability.py.)"""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

from agents.zoo import cli
from rlhf_env.errors import DataError

LIN = "LinearBT-v0"
ARGS = ["--env", LIN, "--agent", "iterative_dpo", "--env-kwargs", "query_budget=64",
        "--hyperparams", "iterations=2", "eval_every=0"]


def _train(runs, seed=0, *extra):
    return cli.main(["train", *ARGS, "--seed", str(seed), "--runs-dir", str(runs), *extra])


def _run(runs, seed=0):
    return runs / LIN / "iterative_dpo" / f"seed{seed}"


@pytest.fixture
def two_runs(tmp_path):
    """Two finished runs (seeds 0 and 1) and a copy of seed 0 cut after its first round."""
    runs = tmp_path / "runs"
    assert _train(runs, 0) == 0 and _train(runs, 1) == 0
    return runs


def _interrupted(runs, seed=0):
    """Make the run look interrupted after round 0 (as a kill there leaves it)."""
    folder = _run(runs, seed)
    for name in ("eval.json", "agent.json"):
        (folder / name).unlink()
    shutil.rmtree(folder / "policy")
    state = json.loads((folder / "checkpoint" / "state.json").read_text())
    return folder, state


def _resume(runs, seed=0, capsys=None):
    code = _train(runs, seed, "--resume")
    err = capsys.readouterr().err if capsys else ""
    return code, err


def test_a_ledger_copied_from_another_seed_is_refused(two_runs, capsys):
    folder, _ = _interrupted(two_runs)
    for name in ("ledger.sqlite", "ledger.sqlite.seal"):
        shutil.copy(_run(two_runs, 1) / name, folder / name)
    code, err = _resume(two_runs, capsys=capsys)
    assert code == 1 and "another run" in err and "seed" in err


def test_an_edited_or_truncated_ledger_is_refused(two_runs, capsys):
    folder, _ = _interrupted(two_runs)
    db = sqlite3.connect(folder / "ledger.sqlite")
    db.execute("UPDATE queries SET answer = answer || ' ' WHERE batch = 1 AND i = 0")
    db.commit()
    db.close()
    code, err = _resume(two_runs, capsys=capsys)
    assert code == 1 and "edited" in err
    _train(two_runs, 2)  # a fresh run to cut
    folder, _ = _interrupted(two_runs, 2)
    db = sqlite3.connect(folder / "ledger.sqlite")
    db.execute("DELETE FROM queries WHERE batch = (SELECT MAX(id) FROM batches)")
    db.execute("DELETE FROM batches WHERE id = (SELECT MAX(id) FROM batches)")
    db.commit()
    db.close()
    code, err = _resume(two_runs, 2, capsys=capsys)
    assert code == 1 and ("edited" in err or "deleted" in err)


def test_a_ledger_deleted_after_labels_were_paid_is_refused(two_runs, capsys):
    folder, _ = _interrupted(two_runs)
    (folder / "ledger.sqlite").unlink()
    code, err = _resume(two_runs, capsys=capsys)
    assert code == 1 and "deleted or replaced" in err
    (folder / "ledger.sqlite.seal").unlink()  # both gone: the checkpoint still remembers
    code, err = _resume(two_runs, capsys=capsys)
    assert code == 1 and "lost or replaced" in err


def test_a_checkpoint_from_another_seed_is_refused(two_runs, capsys):
    folder, _ = _interrupted(two_runs)
    shutil.rmtree(folder / "checkpoint")
    shutil.copytree(_run(two_runs, 1) / "checkpoint", folder / "checkpoint")
    code, err = _resume(two_runs, capsys=capsys)
    assert code == 1 and "another run" in err


def test_resume_from_another_agents_checkpoint_is_refused(two_runs):
    import agents
    import rlhf_env

    env = rlhf_env.make(LIN, query_budget=64, seed=0)
    other = agents.make("dpo", env)
    with pytest.raises(DataError, match="another run"):
        other.learn(resume_from=_run(two_runs) / "checkpoint")


def test_a_missing_pairs_file_of_a_paid_round_is_refused(two_runs, capsys):
    folder, _ = _interrupted(two_runs)
    (folder / "checkpoint" / "iter_000" / "pairs.parquet").unlink()
    code, err = _resume(two_runs, capsys=capsys)
    assert code == 1 and "missing" in err


@pytest.mark.parametrize("what", ["edit eval.json", "nan in eval.json", "edit the policy",
                                  "edit config.yml"])
def test_edited_final_records_are_refused(two_runs, capsys, what):
    folder = _run(two_runs)
    if what == "edit eval.json":
        e = json.loads((folder / "eval.json").read_text())
        e["normalized_score"] = 9.9
        (folder / "eval.json").write_text(json.dumps(e))
    elif what == "nan in eval.json":
        text = (folder / "eval.json").read_text()
        (folder / "eval.json").write_text(text.replace('"kl": ', '"kl": NaN, "x": ', 1))
        rec = json.loads((folder / "RECORD.json").read_text())  # even with a fresh digest
        from agents.files import sha256_file

        rec["eval.json"] = sha256_file(folder / "eval.json")
        (folder / "RECORD.json").write_text(json.dumps(rec))
    elif what == "edit the policy":
        f = next((folder / "policy").glob("*.safetensors"))
        data = bytearray(f.read_bytes())
        data[-1] ^= 1
        f.write_bytes(bytes(data))
    else:
        text = (folder / "config.yml").read_text()
        (folder / "config.yml").write_text(text + "\n# edited\n")
    if what == "edit the policy":
        assert cli.main(["eval", str(folder)]) == 1
        assert "changed" in capsys.readouterr().err
        return
    from agents.zoo.run import read_eval

    if what == "edit config.yml":  # a resume reads the config first
        code, err = _resume(two_runs, capsys=capsys)
        assert code == 1 and "changed" in err
        return
    with pytest.raises(DataError, match="changed|finite"):
        read_eval(folder)  # what a leaderboard reads: refused, naming the file
    code, err = _resume(two_runs, capsys=capsys)  # a finished run answers from eval.json
    assert code == 1 and ("changed" in err or "finite" in err)


def test_a_failed_leaderboard_leaves_the_previous_table(two_runs, monkeypatch):
    from agents.zoo import leaderboard, plots
    from agents.zoo.run import read_eval

    out = two_runs / "board"
    results = {"iterative_dpo": [read_eval(_run(two_runs, s)) for s in (0, 1)]}
    leaderboard.write_leaderboard(LIN, results, out, runs=two_runs)
    before = (out / "leaderboard.md").read_text()
    (out / "mine.txt").write_text("a file of the user's")

    def broken(*a, **k):
        raise RuntimeError("a plot failed")

    monkeypatch.setattr(plots, "make_all", broken)
    with pytest.raises(RuntimeError):
        leaderboard.write_leaderboard(LIN, {"iterative_dpo": results["iterative_dpo"][:1]},
                                      out, runs=two_runs)
    assert (out / "leaderboard.md").read_text() == before
    assert (out / "mine.txt").is_file() and not list(two_runs.glob(".board.tmp-*"))
