"""The judge sealed for real (issue 22): inside a zoo run, every documented route to gold
information refuses the agent — rlhf_env.evaluate, rlhf_env.judge, the oracle report, the
diagnostics, J(pi*), an env re-made from the live env's spec, a twin made from the id and
options — while the harness's own evaluations go through; and the zoo's evaluations never
land in the agent's logger."""

from __future__ import annotations

import numpy as np
import pytest

import rlhf_env
from agents.zoo import cli
from rlhf_env.errors import PrivilegedAttributeError

LEAKS = {
    "evaluate": lambda a: rlhf_env.evaluate(a.policy, a.env),
    "judge": lambda a: rlhf_env.judge(a.env),
    "judge of the instance": lambda a: rlhf_env.judge(a.instance),
    "oracle report": lambda a: rlhf_env.oracles.report(a.env, n_draws=2),
    "report pairs": lambda a: rlhf_env.oracles.report_pairs(a.env),
    "rm agreement": lambda a: __import__("rlhf_env.diagnostics").diagnostics
    .reward_model_agreement(lambda p, r: np.zeros(len(p)), a.env),
    "J(pi*)": lambda a: __import__("rlhf_env.optimum").optimum.optimal_objective(a.env),
    "re-made from the spec": lambda a: rlhf_env.judge(rlhf_env.make(
        a.env.spec.id.split("/")[-1], **a.env.spec.kwargs)),
    # a twin: the same id and options without the run's ledger (the same gold reward, a
    # judge of its own, free offline labels, a fresh budget) is refused while the run lasts
    "a twin's judge": lambda a: rlhf_env.judge(rlhf_env.make(
        a.env.spec.id.split("/")[-1], **_without_ledger(a.env.spec.kwargs))),
    "a twin's budget": lambda a: rlhf_env.make(
        a.env.spec.id.split("/")[-1], **_without_ledger(a.env.spec.kwargs)).unwrapped
    .offline_dataset,
    "a twin of the class": lambda a: type(a.env.unwrapped)(
        **_without_ledger(a.env.spec.kwargs)),
    "a report of the id": lambda a: rlhf_env.oracles.report(
        a.env.spec.id.split("/")[-1], env_kwargs=_without_ledger(a.env.spec.kwargs)),
}


def _without_ledger(kwargs):
    return {k: v for k, v in kwargs.items() if k != "ledger"}


def test_inside_a_zoo_run_every_gold_route_refuses_the_agent(tmp_path, monkeypatch):
    from agents.algorithms.dpo import DPOAgent

    tried: dict[str, str] = {}
    fit = DPOAgent.fit

    def peeking_fit(self, t, new):
        for name, leak in LEAKS.items():
            try:
                leak(self)
                tried[name] = "answered"
            except PrivilegedAttributeError:
                tried[name] = "refused"
        history = [k for row in self.logger.history for k in row]
        tried["eval in the agent's logger"] = str(any(k.startswith("eval/") for k in history))
        return fit(self, t, new)

    monkeypatch.setattr(DPOAgent, "fit", peeking_fit)
    assert cli.main(["train", "--env", "TinyInstruct-v0", "--agent", "dpo", "--runs-dir",
                     str(tmp_path), "--env-kwargs", "size=small", "n_train_prompts=32",
                     "n_eval_prompts=4", "n_offline=16", "--hyperparams", "num_train_epochs=1",
                     "eval={n_samples: 1, best_of_n: []}"]) == 0
    assert tried == {**{k: "refused" for k in LEAKS}, "eval in the agent's logger": "False"}
    e = (tmp_path / "TinyInstruct-v0" / "dpo" / "seed0" / "eval.json")
    assert e.is_file()  # the harness's own evaluation went through
    from rlhf_env.oracles.ledger import runs_in_progress

    assert runs_in_progress() == []  # and after the run, envs are made and judged again
    assert rlhf_env.judge(rlhf_env.make("LinearBT-v0")).theta_star.shape == (16,)


def test_outside_a_run_the_judge_answers_and_a_seal_needs_its_token():
    from rlhf_env.judging import unsealed

    env = rlhf_env.make("LinearBT-v0", seed=0)
    assert rlhf_env.evaluate(env.unwrapped.reference, env)["normalized_score"] == 0.0
    env.unwrapped.instance.ledger.seal("t" * 32)
    with pytest.raises(PrivilegedAttributeError):
        rlhf_env.evaluate(env.unwrapped.reference, env)
    with pytest.raises(PrivilegedAttributeError):
        with unsealed(env, "wrong" * 8):
            pass
    with unsealed(env, "t" * 32):
        assert rlhf_env.evaluate(env.unwrapped.reference, env)["normalized_score"] == 0.0
