"""CausalLMPolicy, the tiny-model builders and the reward-model oracle, on tiny models."""

import os
import time

import numpy as np
import pytest
import torch

from rlhf_env.errors import DataError
from rlhf_env.lm.cache import cache_root
from rlhf_env.lm.reward_model import RewardModel
from rlhf_env.models.tiny import (
    TinyLMConfig,
    build_tiny_lm,
    byte_tokenizer,
    cached_tiny_lm,
    load_tiny_lm,
    sft,
    train_reward_model,
)
from rlhf_env.policies import CausalLMPolicy, load_policy


@pytest.fixture(scope="module")
def policy():
    return CausalLMPolicy(build_tiny_lm(TinyLMConfig(seed=1)), byte_tokenizer(), max_length=128,
                          max_new_tokens=12)


def hand_log_prob(model, ids, start):
    """sum_{t >= start} log p(ids[t] | ids[:t]) by a direct forward pass on one sequence."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    return sum(float(logp[t - 1, ids[t]]) for t in range(start, len(ids)))


def test_byte_tokenizer_round_trips_unicode():
    tok = byte_tokenizer()
    text = "Human: héllo — “quotes” 😀\n\nAssistant: ok"
    ids = tok(text)["input_ids"]
    assert len(ids) == len(text.encode("utf-8"))
    assert tok.decode(ids) == text
    assert tok.eos_token_id == tok.pad_token_id == 256


def test_log_prob_equals_hand_computation(policy):
    tok = policy.tokenizer
    prompt, response = "sort b a =", " a b"
    ids = tok(prompt)["input_ids"] + tok(response)["input_ids"] + [tok.eos_token_id]
    expect = hand_log_prob(policy.model, ids, len(tok(prompt)["input_ids"]))
    got = policy.log_prob([prompt], [response])
    assert got.requires_grad
    assert got[0].item() == pytest.approx(expect, abs=1e-4)
    # an empty response is scored as exactly one EOS (pad == eos must not hide it)
    ids = tok(prompt)["input_ids"] + [tok.eos_token_id]
    assert policy.log_prob([prompt], [""])[0].item() == pytest.approx(
        hand_log_prob(policy.model, ids, len(ids) - 1), abs=1e-4)


def test_log_prob_at_a_merging_token_boundary():
    """A BPE tokenizer where the prompt's last character merges with the response's first."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=60, special_tokens=["[UNK]", "</s>"],
                                  initial_alphabet=list("abcxyz"))
    raw.train_from_iterator(["xab ab abab cab xyab"] * 50, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="</s>", pad_token="</s>")
    prompt, response = "xa", "b c"
    p_ids, f_ids = tok(prompt)["input_ids"], tok(prompt + response)["input_ids"]
    k = next(i for i, (a, b) in enumerate(zip(p_ids, f_ids)) if a != b)
    assert k < len(p_ids), "the test needs a merge across the boundary"
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_layer=1, n_embd=32, n_head=2,
                                       n_positions=64, eos_token_id=tok.eos_token_id,
                                       bos_token_id=tok.eos_token_id,
                                       pad_token_id=tok.eos_token_id)).eval()
    pol = CausalLMPolicy(model, tok, max_length=64)
    context = f_ids[:k] or [tok.eos_token_id]  # no BOS: EOS stands in, as in GPT-2
    ids = context + f_ids[k:] + [tok.eos_token_id]
    expect = hand_log_prob(model, ids, len(context))
    assert pol.log_prob([prompt], [response])[0].item() == pytest.approx(expect, abs=1e-4)


def test_log_prob_is_batch_and_padding_invariant(policy):
    prompts = ["max 3 7 =", "sort d c b a e f =", "x"]
    responses = [" 7", " a b c d e f ok ok", ""]
    together = policy.log_prob(prompts, responses).detach()
    alone = torch.cat([policy.log_prob([p], [r]).detach() for p, r in zip(prompts, responses)])
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=0)


def test_sampling_seeded_padding_invariant_and_stops(policy):
    prompts = ["rev a b =", "count a : a b a b c d e ="]
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    a = policy.sample(prompts, n=3, generator=g(0))
    assert a == policy.sample(prompts, n=3, generator=g(0))
    assert a != policy.sample(prompts, n=3, generator=g(1))
    assert [len(row) for row in a] == [3, 3]
    # left padding does not change what a prompt generates (greedy, alone vs batched)
    batched = policy.sample(prompts, n=1, temperature=0)
    alone = [policy.sample([p], n=1, temperature=0)[0] for p in prompts]
    assert batched == alone
    for row in policy.sample(prompts, n=8, generator=g(2), max_new_tokens=5):
        for text in row:
            assert "<|endoftext|>" not in text
            assert len(text) <= 5  # one byte token decodes to at most one character


def test_sampling_matches_log_prob_of_samples():
    """Draws follow the model: a tiny trained policy samples its modal answer with the
    frequency exp(log_prob) says."""
    pol = CausalLMPolicy(build_tiny_lm(TinyLMConfig(seed=2)), byte_tokenizer(), max_length=64,
                         max_new_tokens=6)
    sft(pol, ["q ="] * 32, [" a", " b", " a", " a"] * 8, steps=60, lr=3e-3)
    draws = pol.sample(["q ="], n=2000, generator=torch.Generator().manual_seed(0))[0]
    p_a = pol.log_prob(["q ="], [" a"]).exp().item()
    assert abs(draws.count(" a") / 2000 - p_a) < 4 * np.sqrt(p_a * (1 - p_a) / 2000) + 1e-3


def test_frozen_copy_caches_log_probs(policy):
    ref = policy.copy(frozen=True)
    assert not ref.model.training and not any(p.requires_grad for p in ref.parameters())
    first = ref.log_prob(["a", "b"], [" x", " y"])
    assert len(ref._lp_cache) == 2
    again = ref.log_prob(["b", "a"], [" y", " x"])
    torch.testing.assert_close(first.flip(0), again)
    torch.testing.assert_close(first, policy.log_prob(["a", "b"], [" x", " y"]).detach(),
                               atol=1e-5, rtol=0)


def test_truncation_is_counted_and_warned(caplog):
    pol = CausalLMPolicy(build_tiny_lm(TinyLMConfig(n_positions=16)), byte_tokenizer(),
                         max_length=16)
    with caplog.at_level("WARNING", logger="rlhf_env"):
        lp = pol.log_prob(["p" * 30], [" answer"])
    assert "exceeds the context of 16" in caplog.text
    assert pol.truncated == 1 and torch.isfinite(lp).all()


def test_save_load_roundtrip(policy, tmp_path):
    policy.save(tmp_path / "pol")
    back = load_policy(tmp_path / "pol")
    assert isinstance(back, CausalLMPolicy) and back.max_new_tokens == policy.max_new_tokens
    torch.testing.assert_close(back.log_prob(["a"], [" b"]).detach(),
                               policy.log_prob(["a"], [" b"]).detach())
    assert (tmp_path / "pol" / "model" / "model.safetensors").is_file()


def test_not_a_causal_lm_and_missing_path(tmp_path):
    from transformers import GPT2ForSequenceClassification

    from rlhf_env.models.tiny import _gpt2_config

    GPT2ForSequenceClassification(_gpt2_config(TinyLMConfig(), num_labels=1)).save_pretrained(
        tmp_path / "rm")
    byte_tokenizer().save_pretrained(tmp_path / "rm")
    with pytest.raises(DataError, match="not a causal language model"):
        CausalLMPolicy(str(tmp_path / "rm"))
    with pytest.raises(DataError, match="cannot load a causal LM from"):
        CausalLMPolicy(str(tmp_path / "nowhere"))


def test_reward_model_scores_batch_invariant_and_learns():
    prompts = ["q"] * 64
    chosen = [" good" + " x" * (i % 4) for i in range(64)]
    rejected = [" bad" + " x" * (i % 3) for i in range(64)]
    model, tok, losses = train_reward_model(prompts, chosen, rejected, TinyLMConfig(seed=3),
                                            steps=40, batch_size=16, lr=3e-3)
    assert losses[-1] < 0.2 < losses[0]
    rm = RewardModel(model, tok, batch_size=3)
    batch = rm(["q", "q", "q"], [" good x x x", " bad", " good"])
    alone = np.array([rm(["q"], [r])[0] for r in [" good x x x", " bad", " good"]])
    np.testing.assert_allclose(batch, alone, atol=1e-5)
    assert batch[0] > batch[1] and batch[2] > batch[1]


def test_tiny_models_are_cached_and_deterministic(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_ENV_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    cfg = TinyLMConfig(n_positions=32)
    args = (["a ="] * 8, [" b"] * 8)
    t = time.time()
    d1 = cached_tiny_lm("unit", cfg, *args, steps=5, batch_size=4)
    build = time.time() - t
    mtime = os.path.getmtime(d1 / "DONE")
    d2 = cached_tiny_lm("unit", cfg, *args, steps=5, batch_size=4)
    assert d1 == d2 and os.path.getmtime(d2 / "DONE") == mtime and build > 0
    d3 = cached_tiny_lm("unit", cfg, ["a ="] * 8, [" c"] * 8, steps=5, batch_size=4)
    assert d3 != d1
    # the same config and data rebuilt from scratch gives the same weights
    monkeypatch.setenv("RLHF_ENV_CACHE", str(tmp_path / "other"))
    d4 = cached_tiny_lm("unit", cfg, *args, steps=5, batch_size=4)
    a, b = load_tiny_lm(d1), load_tiny_lm(d4)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
