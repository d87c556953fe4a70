"""The env inside other people's trainers: TRL's own trainers run a few steps with the env's
oracle as reward_funcs (the ledger counts exactly the trainer's oracle calls), its datasets
feed DPOTrainer, and oat's compare contract is honoured (oat itself is not installed)."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest

import rlhf_env
from rlhf_env.errors import InvalidArgumentError, QueryBudgetExceeded

trl = pytest.importorskip("trl")

SMALL = {"size": "small", "n_train_prompts": 16, "n_eval_prompts": 4}


def _env(**kw):
    return rlhf_env.make("TinyInstruct-v0", **{**SMALL, "n_offline": 0, "setting": "online",
                                              **kw})


def _model_and_tokenizer(env):
    pi0 = env.unwrapped.reference
    model = pi0.trainable_copy().model
    tok = pi0.tokenizer
    tok.padding_side = "left"
    return model, tok


def _prompt_dataset(env, n=8):
    import datasets

    return datasets.Dataset.from_dict({"prompt": list(env.unwrapped.instance.train_prompts[:n])})


def _common_args():
    return dict(output_dir="/tmp/rlhf_env_trl", use_cpu=True, bf16=False, report_to=[],
                logging_steps=1, save_strategy="no", seed=0, learning_rate=1e-4)


def test_grpo_trains_on_the_env_oracle_and_pays_each_completion_once():
    from trl import GRPOConfig, GRPOTrainer

    from rlhf_env.integrations.trl import reward_function

    env = _env(feedback="reward", query_budget=64)
    model, tok = _model_and_tokenizer(env)
    f = reward_function(env)
    args = GRPOConfig(**_common_args(), per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=8, max_steps=2, gradient_accumulation_steps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = GRPOTrainer(model=model, reward_funcs=[f], args=args,
                              train_dataset=_prompt_dataset(env), processing_class=tok)
        trainer.train()
    inst = env.unwrapped.instance
    assert f.calls >= 2 and inst.queries_used == f.queries == 4 * f.calls


def test_online_dpo_labels_each_pair_once():
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    from rlhf_env.integrations.trl import pairwise_reward_function

    env = _env(query_budget=64)
    model, tok = _model_and_tokenizer(env)
    f = pairwise_reward_function(env)
    args = OnlineDPOConfig(**_common_args(), per_device_train_batch_size=2, max_new_tokens=8,
                           max_steps=2, max_length=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = OnlineDPOTrainer(model=model, reward_funcs=f, args=args,
                                   train_dataset=_prompt_dataset(env), processing_class=tok)
        trainer.train()
    assert f.calls == 2 and env.unwrapped.instance.queries_used == f.queries == 4


def test_dpo_trainer_reads_the_env_data():
    from trl import DPOConfig, DPOTrainer

    from rlhf_env.integrations.trl import to_trl_dataset

    env = rlhf_env.make("TinyInstruct-v0", **SMALL, n_offline=8)
    ds = to_trl_dataset(env)
    assert len(ds) == 8 and set(ds["source"]) == {"offline"} and ds["oracle"][0] == "bt"
    assert ds["env_prompt"] == ds["prompt"]  # a raw-text pi0: text columns
    model, tok = _model_and_tokenizer(env)
    tok.padding_side = "right"
    args = DPOConfig(**_common_args(), per_device_train_batch_size=4, max_steps=1,
                     max_length=64, beta=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        DPOTrainer(model=model, args=args, train_dataset=ds.select_columns(
            ["prompt", "chosen", "rejected"]), processing_class=tok).train()


def test_a_run_folders_ledger_becomes_a_dataset(tmp_path):
    from agents.zoo.cli import main
    from rlhf_env.integrations.trl import to_trl_dataset

    assert main(["train", "--env", "LinearBT-v0", "--agent", "iterative_dpo", "--runs-dir",
                 str(tmp_path), "--hyperparams", "iterations=2", "--env-kwargs",
                 "query_budget=32"]) == 0
    ds = to_trl_dataset(tmp_path / "LinearBT-v0" / "iterative_dpo" / "seed0")
    assert len(ds) == 32 - sum(ds["chosen"][i] == ds["rejected"][i] for i in range(len(ds)))
    assert set(ds["source"]) == {"queried"}


def test_grpo_groups_label_every_pair_and_rank_by_wins():
    from rlhf_env.integrations.trl import pairwise_reward_function

    env = _env(query_budget=12)
    f = pairwise_reward_function(env, mode="group", group_size=3)
    p = env.unwrapped.instance.train_prompts[0]
    scores = f([p] * 3 + [p] * 3, ["a", "b", "c", "a", "a", "b"])
    assert env.unwrapped.instance.queries_used == 6 and len(scores) == 6
    assert sum(scores[:3]) == pytest.approx(1.5) and all(0 <= s <= 1 for s in scores)


BAD = {
    "odd count": (dict(), ["p"] * 3, ["a", "b", "c"]),
    "pairs of other prompts": (dict(), ["p", "q"], ["a", "b"]),
    "group does not divide": (dict(mode="group", group_size=4), ["p"] * 6, ["a"] * 6),
    "a completion that is not text": (dict(), ["p", "p"], [3, "b"]),
    "mode": (dict(mode="tournament"), ["p", "p"], ["a", "b"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_calls_are_refused_before_paying(case):
    from rlhf_env.integrations.trl import pairwise_reward_function

    env = _env(query_budget=12)
    kw, prompts, completions = BAD[case]
    with pytest.raises(InvalidArgumentError):
        pairwise_reward_function(env, **kw)(prompts=prompts, completions=completions)
    assert env.unwrapped.instance.queries_used == 0


def test_reward_function_needs_reward_feedback():
    from rlhf_env.integrations.trl import reward_function

    with pytest.raises(InvalidArgumentError, match="feedback='reward'"):
        reward_function(_env(query_budget=4))


def test_a_step_past_the_budget_raises_inside_the_trainer():
    from rlhf_env.integrations.trl import reward_function

    env = _env(feedback="reward", query_budget=3)
    f = reward_function(env)
    p = env.unwrapped.instance.train_prompts[0]
    f(prompts=[p, p], completions=["a", "b"])
    with pytest.raises(QueryBudgetExceeded):
        f(prompts=[p, p], completions=["a", "b"])
    assert env.unwrapped.instance.queries_used == 2


def test_oat_compare_contract():
    from rlhf_env.integrations.oat import EnvOracle

    params = list(inspect.signature(EnvOracle.compare).parameters)
    assert params == ["self", "inputs", "candidates_A", "candidates_B", "batch_size",
                      "return_probs", "disable_tqdm"]
    env = rlhf_env.make("LinearBT-v0", setting="online", query_budget=10)
    oracle = EnvOracle(env)
    p = list(env.unwrapped.instance.train_prompts[:5])
    wins, metric = oracle.compare(p, ["response-0"] * 5, ["response-1"] * 5, batch_size=2)
    assert len(wins) == 5 and all(isinstance(w, bool) for w in wins)
    assert metric["oracle/queries"] == 5 and env.unwrapped.instance.queries_used == 5
    probs, _ = oracle.compare(p[:2], ["response-0"] * 2, ["response-1"] * 2, return_probs=True)
    assert all(v in (0.0, 0.5, 1.0) for v in probs)  # drawn labels, never gold probabilities
    with pytest.raises(QueryBudgetExceeded):  # 3 left, 4 asked: nothing charged
        oracle.compare(p[:4], ["response-0"] * 4, ["response-1"] * 4)
    assert env.unwrapped.instance.queries_used == 7
    assert np.mean([oracle.compare([p[0]], ["response-0"], ["response-1"])[0][0]
                    for _ in range(3)]) >= 0


# -- any checkpoint on the leaderboard --------------------------------------------------------
TINY = ["--env", "TinyInstruct-v0", "--env-kwargs", "size=small", "n_train_prompts=64",
        "n_eval_prompts=16", "n_offline=32"]


def test_an_external_checkpoint_is_evaluated_with_pi0s_settings_and_listed(tmp_path, capsys):
    from agents.zoo.cli import main
    from agents.zoo.external import load_external_policy

    env = rlhf_env.make("TinyInstruct-v0", size="small", n_train_prompts=64, n_eval_prompts=16,
                        n_offline=32)
    pi0 = env.unwrapped.reference
    mine = pi0.trainable_copy()
    mine.model.save_pretrained(tmp_path / "hf")  # as TRL leaves a model: a plain HF folder
    mine.tokenizer.save_pretrained(tmp_path / "hf")
    loaded = load_external_policy(tmp_path / "hf", pi0)
    assert loaded.max_new_tokens == pi0.max_new_tokens == 16  # not CausalLMPolicy's 64
    runs = tmp_path / "runs"
    assert main(["eval", "--model", str(tmp_path / "hf"), *TINY, "--seeds", "1", "--name",
                 "mine", "--labels", "100", "--runs-dir", str(runs), "--eval-kwargs",
                 "n_samples=1", "best_of_n=[]"]) == 0
    f = runs / "TinyInstruct-v0" / "external" / "mine" / "seed0" / "eval.json"
    assert f.is_file()
    assert main(["leaderboard", *TINY, "--agents", "reference", "--seeds", "1",
                 "--include-external", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "external:mine" in out
    # an adapter on pi0 loads onto it
    pytest.importorskip("peft")
    from rlhf_env.lm.lora import LoraSettings

    lora = pi0.trainable_copy(lora=LoraSettings(r=2))
    lora.save(tmp_path / "lora")
    assert load_external_policy(tmp_path / "lora" / "adapter", pi0).model is pi0.model


def test_a_checkpoint_with_another_tokenizer_is_refused(tmp_path):
    from agents.zoo.external import load_external_policy
    from tests._lm_matrix import build_model

    env = rlhf_env.make("TinyInstruct-v0", size="small", n_train_prompts=64, n_eval_prompts=16,
                        n_offline=32)
    model, tok = build_model("gpt2")
    model.save_pretrained(tmp_path / "other")
    tok.save_pretrained(tmp_path / "other")
    with pytest.raises(InvalidArgumentError, match="tokenizer"):
        load_external_policy(tmp_path / "other", env.unwrapped.reference)
