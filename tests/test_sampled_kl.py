"""The Monte Carlo KL of language policies scores exactly the tokens that were sampled.

A sample cut at ``max_new_tokens`` drew no EOS, a sample of bytes that are not valid UTF-8
decodes to text that re-encodes to other tokens, and a sample at temperature T (or top-p)
comes from another distribution than the model's: the KL estimate must score what was
drawn, from the distribution it was drawn from. Reference values are direct forward passes
on one sequence at a time.
"""

import math

import numpy as np
import pytest
import torch

import rlhf_env
from rlhf_env.errors import InvalidArgumentError
from rlhf_env.lm.scoring import nucleus_log_probs
from rlhf_env.models.tiny import TinyLMConfig, build_tiny_lm, byte_tokenizer
from rlhf_env.policies import CausalLMPolicy, SampledBestOfN

PROMPTS = ["sort b a =", "rev abc =", "max 3 9 =", "count aab ="]


@pytest.fixture(scope="module")
def random_lm():
    """An untrained byte-level model: it samples bytes nearly uniformly, so its samples are
    mostly cut at max_new_tokens, often invalid UTF-8, and sometimes end with EOS."""
    return CausalLMPolicy(build_tiny_lm(TinyLMConfig(seed=1)), byte_tokenizer(), max_length=128,
                          max_new_tokens=40)


def hand_log_prob(model, ctx, tokens, temperature=1.0, top_p=1.0):
    """sum_t log q(tokens[t] | ctx + tokens[:t]) from one full forward pass, q at temperature
    and top_p (written out here: softmax, sort, keep while the mass before is < top_p)."""
    ids = list(ctx) + list(tokens)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    total = 0.0
    for t in range(len(ctx), len(ids)):
        p = torch.softmax(logits[t - 1] / temperature, -1)
        if top_p < 1:
            sp, order = p.sort(descending=True)
            keep = torch.zeros_like(p, dtype=torch.bool)
            keep[order[(sp.cumsum(0) - sp) < top_p]] = True
            p = torch.where(keep, p, torch.zeros_like(p))
            p = p / p.sum()
        total += math.log(float(p[ids[t]]))
    return total


def test_sampled_sequences_keep_what_was_drawn(random_lm):
    gen = torch.Generator().manual_seed(0)
    seqs = random_lm.sample_sequences(PROMPTS, n=8, generator=gen)
    texts = random_lm.sample(PROMPTS, n=8, generator=torch.Generator().manual_seed(0))
    assert [[s.text for s in row] for row in seqs] == texts  # the same draws
    flat = [s for row in seqs for s in row]
    eos = random_lm.eos_id
    truncated = [s for s in flat if not s.finished]
    finished = [s for s in flat if s.finished]
    assert truncated and finished  # the test covers both
    assert all(len(s.token_ids) == 40 and eos not in s.token_ids for s in truncated)
    assert all(s.token_ids[-1] == eos and eos not in s.token_ids[:-1] for s in finished)
    tok = random_lm.tokenizer
    # some samples are not valid UTF-8: their text re-encodes to other tokens
    assert any(tok(s.text)["input_ids"] != list(s.token_ids[:len(s.token_ids) - s.finished])
               for s in flat)
    got = random_lm.sequence_log_probs([s.context_ids for s in flat], [s.token_ids for s in flat])
    want = [hand_log_prob(random_lm.model, s.context_ids, s.token_ids) for s in flat]
    np.testing.assert_allclose(got.numpy(), want, atol=2e-3)
    # the text path scores a complete response (EOS added, the text re-encoded): not these
    text_lp = random_lm.log_prob([p for p in PROMPTS for _ in range(8)], [s.text for s in flat])
    assert np.abs(text_lp.detach().numpy() - np.array(want)).max() > 1.0


@pytest.mark.parametrize(("temperature", "top_p"), [(0.7, 1.0), (1.3, 0.9)])
def test_sequence_log_probs_under_the_sampling_distribution(random_lm, temperature, top_p):
    gen = torch.Generator().manual_seed(1)
    flat = [s for row in random_lm.sample_sequences(PROMPTS[:2], n=3, temperature=temperature,
                                                    top_p=top_p, generator=gen) for s in row]
    got = random_lm.sequence_log_probs([s.context_ids for s in flat], [s.token_ids for s in flat],
                                       temperature=temperature, top_p=top_p)
    want = [hand_log_prob(random_lm.model, s.context_ids, s.token_ids, temperature, top_p)
            for s in flat]
    np.testing.assert_allclose(got.numpy(), want, atol=2e-3)


def test_nucleus_hand_worked():
    """probs (0.5, 0.3, 0.2), top_p 0.6: mass before each is 0, 0.5, 0.8, so the first two are
    kept and renormalised to (0.625, 0.375, 0); temperature 0 puts everything on the argmax."""
    logits = torch.log(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))
    q = nucleus_log_probs(logits, 1.0, 0.6).exp()
    torch.testing.assert_close(q, torch.tensor([0.625, 0.375, 0.0], dtype=torch.float64))
    torch.testing.assert_close(nucleus_log_probs(logits, 1.0, 1.0).exp(), logits.exp())
    assert nucleus_log_probs(logits, 0.0, 1.0).tolist() == [0.0, -math.inf, -math.inf]


def exact_kl_estimate(policy, reference, env, n_prompts, n_samples, temperature=1.0, seed=0):
    """What sampled_metrics must report: its own draws (same generator), scored by hand."""
    prompts = list(env.unwrapped.eval_prompts[:n_prompts])
    gen = torch.Generator().manual_seed(seed)
    rows = policy.sample_sequences(prompts, n=n_samples, temperature=temperature, generator=gen)
    per_prompt = [np.mean([hand_log_prob(policy.model, s.context_ids, s.token_ids, temperature)
                           - hand_log_prob(reference.model, s.context_ids, s.token_ids)
                           for s in row]) for row in rows]
    return float(np.mean(per_prompt)), [s for row in rows for s in row]


def test_evaluate_kl_scores_the_sampled_tokens(tiny_env, random_lm):
    ref = tiny_env.unwrapped.reference
    kw = {"n_prompts": 4, "n_samples": 4, "best_of_n": ()}
    m = rlhf_env.evaluate(random_lm, tiny_env, **kw)
    want, flat = exact_kl_estimate(random_lm, ref, tiny_env, 4, 4)
    assert any(not s.finished for s in flat)  # truncated samples are in the estimate
    assert m["kl_log_ratio"] == pytest.approx(want, abs=2e-3)
    # the exact per-token KL estimates the same KL (both unbiased: see
    # test_per_token_kl_is_exactly_the_sequence_kl_in_expectation). Its spread is not always
    # smaller: on this near-uniform model response lengths (EOS or the 40-token cut) dominate
    assert m["kl"] == pytest.approx(want, rel=0.05)
    # pi0 against itself: exactly 0 at temperature 1
    same = rlhf_env.evaluate(ref, tiny_env, **kw)
    assert same["kl"] == 0.0 and same["kl_log_ratio"] == 0.0


def test_evaluate_at_a_temperature_reports_the_tempered_policys_kl(tiny_env):
    """pi0 sampled at T = 0.7 is not pi0: the KL is E_{y~pi0_T} log pi0_T(y) / pi0(y) > 0
    (the estimator that scored both at T = 1 reported 0)."""
    ref = tiny_env.unwrapped.reference
    kw = {"n_prompts": 4, "n_samples": 4, "best_of_n": ()}
    m = rlhf_env.evaluate(ref, tiny_env, temperature=0.7, **kw)
    want, _ = exact_kl_estimate(ref, ref, tiny_env, 4, 4, temperature=0.7)
    assert want > 0.05
    assert m["kl_log_ratio"] == pytest.approx(want, abs=2e-3)
    assert m["kl"] > 0.05


def test_evaluate_refuses_temperature_where_it_cannot_score_it(tiny_env):
    ref = tiny_env.unwrapped.reference
    bon = SampledBestOfN(ref, lambda p, r: np.zeros(len(p)), 2)
    with pytest.raises(InvalidArgumentError, match="temperature=0.7"):
        rlhf_env.evaluate(bon, tiny_env, temperature=0.7, n_prompts=2, n_samples=1, best_of_n=())
    with pytest.raises(InvalidArgumentError, match="top_p=0.9"):
        rlhf_env.evaluate(bon, tiny_env, top_p=0.9, n_prompts=2, n_samples=1, best_of_n=())


def _four_token_policy(seed: int, **kw):
    """A GPT-2 over a vocabulary of a, b, c and an end token: small enough to enumerate
    every response of up to 3 tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"a": 0, "b": 1, "c": 2, "<e>": 3}, unk_token="<e>"))
    raw.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    raw.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<e>", pad_token="<e>")
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=4, n_positions=16, n_embd=16, n_layer=1,
                                       n_head=2, bos_token_id=3, eos_token_id=3,
                                       pad_token_id=3))
    with torch.no_grad():  # a peaked, far-from-uniform model
        model.lm_head.weight.mul_(8)
    return CausalLMPolicy(model, tok, max_new_tokens=3, **kw).freeze()


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 1.0), (1.0, 0.8)])
def test_per_token_kl_is_exactly_the_sequence_kl_in_expectation(temperature, top_p):
    """Enumerate every response (stop at once, after 1 or 2 tokens, or cut at 3): the KL of
    the two response distributions, by brute force from unpadded forward passes, equals the
    q-weighted mean of the per-token KL estimator, and its variance is below the log-ratio's."""
    import itertools

    pi, pi0 = _four_token_policy(1), _four_token_policy(2)
    ctx = tuple(pi.encode("ab"))
    outcomes = [(3,)] + [(x, 3) for x in range(3)] + [(x, y, 3) for x in range(3)
                                                     for y in range(3)]
    outcomes += list(itertools.product(range(3), repeat=3))
    def hand(y):  # -inf outside the nucleus
        try:
            return hand_log_prob(pi.model, ctx, y, temperature, top_p)
        except ValueError:
            return -np.inf

    lq = np.array([hand(y) for y in outcomes])
    lp = np.array([hand_log_prob(pi0.model, ctx, y) for y in outcomes])
    q = np.exp(lq)
    assert q.sum() == pytest.approx(1.0, abs=1e-7)  # float32 logits
    lq, on = np.where(q > 0, lq, 0.0), q > 0  # outside top-p's support: weight 0
    exact = float(np.sum(q * (lq - lp)))
    est = pi.token_kl(pi0, [ctx] * len(outcomes), outcomes, temperature=temperature,
                      top_p=top_p).numpy()
    assert float(np.sum(q * est)) == pytest.approx(exact, rel=1e-5, abs=1e-7)
    var_token = float(np.sum(q * (est - exact) ** 2))
    var_ratio = float(np.sum(q * (lq - lp - exact) ** 2))
    assert var_token < var_ratio
    # and evaluate() reports it: the same estimator on the policy's own samples
    lr = pi.sequence_log_probs([ctx] * len(outcomes), outcomes, temperature=temperature,
                               top_p=top_p).numpy()
    np.testing.assert_allclose(lr[on], lq[on], atol=1e-5)
    assert np.all(np.isneginf(lr[~on]))
