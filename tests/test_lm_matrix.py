"""Every Hugging Face causal LM, as researchers run them: a matrix of real architectures and
real tokenizer shapes built from configs (tests/_lm_matrix.py), as Gymnasium tests every
env id. Each test runs for each architecture."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rlhf_env
from rlhf_env.errors import DataError, InvalidArgumentError
from rlhf_env.lm.lora import LoraSettings
from rlhf_env.lm.scoring import Scorer
from rlhf_env.policies import CausalLMPolicy, load_policy
from tests._lm_matrix import MATRIX, SHAPES, SLIDING, build_model, hh_prompts, policy, tokenizer

ARCHS = sorted(MATRIX)


@pytest.fixture(scope="module", params=ARCHS)
def arch(request):
    return request.param


def _hand_log_prob(model, ctx, resp):
    """sum_t log p(resp_t | ctx + resp_<t) from one unpadded forward pass (an oracle)."""
    ids = torch.tensor([list(ctx) + list(resp)])
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), -1)
    return float(sum(lp[len(ctx) - 1 + i, t] for i, t in enumerate(resp)))


# -- chat templates --------------------------------------------------------------------------

def test_the_chat_template_is_applied_to_messages_and_hh_dialogues(arch):
    pol = policy(arch)
    tok = pol.tokenizer
    msgs = [{"role": "user", "content": "How do I bake bread?"},
            {"role": "assistant", "content": "With flour."},
            {"role": "user", "content": "And then?"}]
    hh = "\n\nHuman: How do I bake bread?\n\nAssistant: With flour.\n\nHuman: And then?\n\nAssistant:"
    if SHAPES[MATRIX[arch]]["template"]:
        want = tok(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True),
                   add_special_tokens=False)["input_ids"]
        assert pol.encoder.use_template
        assert pol.encode(msgs) == want
        assert pol.encode(hh) == want  # HH's turns are read as messages
        raw = CausalLMPolicy(pol.model, tok, chat_template=False)
        assert raw.encode(hh) == tok(hh)["input_ids"]  # templates off: the text as it is
    else:
        assert not pol.encoder.use_template
        assert pol.encode(hh) == tok(hh)["input_ids"]
        with pytest.raises(InvalidArgumentError, match="no chat template"):
            CausalLMPolicy(pol.model, tok, chat_template=True)


def test_the_terminator_is_the_templates_end_of_turn(arch):
    pol = policy(arch)
    tok = pol.tokenizer
    expect = {"qwen": "<|im_end|>", "gemma": "<end_of_turn>", "llama": "</s>"}.get(
        MATRIX[arch], tok.eos_token)
    assert tok.convert_ids_to_tokens(pol.eos_id) == expect
    gen = pol.model.generation_config.eos_token_id
    for i in ([gen] if isinstance(gen, int) else gen):
        assert i in pol.stop_ids
    # log_prob scores the response's tokens and then that terminator
    prompt, response = hh_prompts(1)[0], " Sure, here you go."
    ctx, resp = pol.encoder.split(prompt, response)
    assert resp[-1] == pol.eos_id
    got = pol.log_prob([prompt], [response])[0].item()
    assert got == pytest.approx(_hand_log_prob(pol.model, ctx, resp), abs=1e-4)


# -- stop tokens -------------------------------------------------------------------------------

def test_sampling_stops_on_every_stop_id_as_generate_does(arch):
    pol = policy(arch)
    head = pol.model.get_output_embeddings()
    prompt = hh_prompts(1)[0]
    for stop in pol.stop_ids:
        bias = torch.zeros(head.weight.shape[0])
        bias[stop] = 1e4  # force this token
        hook = head.register_forward_hook(lambda m, i, o, b=bias: o + b.to(o.dtype))
        try:
            seqs = pol.sample_sequences([prompt], n=2, generator=torch.Generator().manual_seed(0))
            ids = torch.tensor([pol.encode(prompt)])
            gen = pol.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5,
                                     do_sample=False, eos_token_id=list(pol.stop_ids),
                                     pad_token_id=pol.pad_id)
        finally:
            hook.remove()
        assert gen.shape[1] - ids.shape[1] == 1  # HF generate stops after the one token
        for s in seqs[0]:
            assert s.finished and s.token_ids == (stop,) and s.text == ""


# -- truncation ------------------------------------------------------------------------------------

def test_truncation_keeps_bos_and_the_templates_head(arch):
    pol = policy(arch)
    long = hh_prompts(1)[0] + " more words" * 200 + "\n\nAssistant:"
    full = pol.encode(long)
    head = pol.encoder.head_length(full)
    if SHAPES[MATRIX[arch]]["add_bos"] or SHAPES[MATRIX[arch]]["template"]:
        assert head >= 1
    limit = head + 8
    cut = pol.prompt_ids(long, limit)
    assert len(cut) == limit and cut[:head] == full[:head] and cut[head:] == full[-8:]
    assert pol.truncated >= 1
    # sampling and scoring cut the same way
    short = CausalLMPolicy(pol.model, pol.tokenizer, max_prompt_length=limit, max_new_tokens=3)
    seq = short.sample_sequences([long], generator=torch.Generator().manual_seed(0))[0][0]
    assert list(seq.context_ids) == cut
    ctx, _ = short._split(long, " ok")
    assert ctx[:head] == full[:head] and len(ctx) <= limit
    # and PPO's token env starts every state with the head
    from agents.algorithms.ppo_lm import TokenEnv

    env = TokenEnv([long], pol.tokenizer, lambda t: pol.prompt_ids(t, limit), pol.eos_id,
                   len(pol.tokenizer), 4, limit, stop_ids=pol.stop_ids)
    obs, _ = env.reset(seed=0)
    assert [int(t) for t in obs if t >= 0][:head] == full[:head]


# -- scoring ---------------------------------------------------------------------------------------

def test_batched_log_probs_equal_single_ones_and_an_unpadded_pass(arch):
    pol = policy(arch, batch_size=4)
    prompts = hh_prompts(4)
    responses = [" Yes.", " I would not do that, it is dangerous.", "", " Maybe"]
    batch = pol.log_prob(prompts, responses)
    assert batch.requires_grad
    for i, (p, r) in enumerate(zip(prompts, responses)):
        alone = pol.log_prob([p], [r])[0].item()
        ctx, resp = pol._split(p, r)  # cut to the 256-token context as the policy cuts
        assert batch[i].item() == pytest.approx(alone, abs=2e-4)
        assert alone == pytest.approx(_hand_log_prob(pol.model, ctx, resp), abs=2e-4)


def test_pair_scoring_with_a_shared_prompt_equals_two_rows_with_gradients(arch):
    """DPO scores a pair's chosen and rejected after one copy of the prompt (prefix sharing,
    pairs packed into rows): values and gradients equal the two-row pass on every
    architecture, or the policy falls back to two rows (a sliding window shorter than a row).
    """
    pol = policy(arch, batch_size=3).trainable_copy()
    pol.model.__dict__.pop("_rlhf_env_prefix_sharing", None)  # checked afresh
    prompts = hh_prompts(5)
    chosen = [" Yes.", " I would not do that, it is dangerous.", "", " Maybe", " No, no."]
    rejected = [" No.", "", " Sure, here is how to do it step by step", " Maybe", " Ok"]
    lc, nc, lr, nr = pol.pair_log_probs(prompts, chosen, rejected)
    sharing = pol.model.__dict__.get("_rlhf_env_prefix_sharing")
    longest = max(len(c) + len(r) for p in prompts for x in chosen + rejected
                  for c, r in [pol._split(p, x)])
    assert sharing is (True if pol.scorer.shares_prefixes(longest) else None), arch
    (lc.sum() - 0.5 * lr.sum()).backward()
    shared = {n: p.grad.clone() for n, p in pol.named_parameters() if p.grad is not None}
    pol.model.zero_grad(set_to_none=True)
    (pc, mc), (pr, mr) = (pol.token_log_probs(prompts, chosen),
                          pol.token_log_probs(prompts, rejected))
    (pc.sum() - 0.5 * pr.sum()).backward()
    assert torch.equal(nc, mc) and torch.equal(nr, mr)
    assert torch.allclose(lc, pc, atol=2e-4) and torch.allclose(lr, pr, atol=2e-4)
    for n, p in pol.named_parameters():
        if p.grad is not None:
            assert torch.allclose(shared[n], p.grad, atol=1e-4, rtol=1e-3), (arch, n)


def test_pair_scoring_falls_back_when_the_check_fails(monkeypatch):
    """A model whose shared-prompt scores differ from its two-row scores (here: a broken
    mask) is caught on the first batch and scored in two rows from then on."""
    pol = policy("gpt2", batch_size=4)
    prompts, chosen, rejected = hh_prompts(3), [" Yes."] * 3, [" No way."] * 3
    plain = pol.token_log_probs(prompts, chosen)[0]
    real = Scorer.tree_logits

    def broken(self, chunk, pack=False):
        logits, *rest = real(self, chunk, pack=pack)
        if pack:  # the rejected responses' first-token logit raised by 1: a wrong score
            logits = logits + torch.nn.functional.one_hot(
                rest[0], logits.shape[-1]) * (rest[2] == 1)[:, None]
        return (logits, *rest)

    monkeypatch.setattr(Scorer, "tree_logits", broken)
    pol.model.__dict__.pop("_rlhf_env_prefix_sharing", None)  # a model built once, shared
    lc, _, lr, _ = pol.pair_log_probs(prompts, chosen, rejected)
    assert pol.model.__dict__.pop("_rlhf_env_prefix_sharing") is False
    assert torch.allclose(lc, plain, atol=1e-5)
    assert torch.allclose(lr, pol.token_log_probs(prompts, rejected)[0], atol=1e-5)


def test_dpo_training_with_shared_prompts_equals_training_without():
    """train_preferences takes the pair path (the verdict is recorded) and ends where the
    two-row path ends."""
    from agents.data import PreferenceData
    from agents.trainer import train_preferences

    prompts = hh_prompts(6)
    data = PreferenceData(prompts, [" yes", " sure", " ok then", " no", " fine", " why"],
                          [" no thanks", " never", " maybe", " yes", " ok", " because"])
    out = {}
    for share in (True, False):
        ref = policy("gpt2").freeze()
        ref.model.__dict__["_rlhf_env_prefix_sharing"] = share
        if share:
            ref.model.__dict__.pop("_rlhf_env_prefix_sharing")  # checked on first use
        pol = ref.trainable_copy(lora=LoraSettings(r=4, alpha=8))
        res = train_preferences(pol, ref, data, beta=0.1, learning_rate=1e-2, num_train_epochs=2,
                                per_device_train_batch_size=3)
        assert ref.model.__dict__["_rlhf_env_prefix_sharing"] is share
        out[share] = res.final_metrics
    for k in ("loss", "rewards/margins", "logps/chosen"):
        assert out[True][k] == pytest.approx(out[False][k], abs=1e-4), k


def test_sampled_tokens_score_as_drawn(arch):
    pol = policy(arch).freeze()
    prompts = hh_prompts(3)
    seqs = [s for row in pol.sample_sequences(prompts, n=2,
                                              generator=torch.Generator().manual_seed(1))
            for s in row]
    lp = pol.sequence_log_probs([s.context_ids for s in seqs], [s.token_ids for s in seqs])
    for s, v in zip(seqs, lp.tolist()):
        assert v == pytest.approx(_hand_log_prob(pol.model, s.context_ids, s.token_ids), abs=2e-4)


# -- dropout ---------------------------------------------------------------------------------------

def test_a_trainable_copy_has_dropout_off_so_dpo_starts_at_log_2(arch):
    from agents.data import PreferenceData
    from agents.trainer import train_preferences

    ref = policy(arch).freeze()
    pol = ref.trainable_copy()
    prompts = hh_prompts(4)
    data = PreferenceData(prompts, [" yes"] * 4, [" no thanks"] * 4)
    res = train_preferences(pol, ref, data, beta=0.1, learning_rate=1e-12, num_train_epochs=1,
                            per_device_train_batch_size=4, max_grad_norm=None)
    assert res.final_metrics["loss"] == pytest.approx(np.log(2), abs=1e-6)
    assert res.final_metrics["rewards/chosen"] == pytest.approx(0.0, abs=1e-6)


# -- save and load -----------------------------------------------------------------------------------

def test_save_load_round_trips_and_a_foreign_save_is_refused(arch, tmp_path):
    pol = policy(arch)
    prompts, responses = hh_prompts(2), [" ok", " no"]
    want = pol.log_prob(prompts, responses).detach()
    pol.save(tmp_path / "p")
    back = load_policy(tmp_path / "p")
    torch.testing.assert_close(back.log_prob(prompts, responses).detach(), want, atol=1e-5,
                               rtol=0)
    assert back.encode(prompts[0]) == pol.encode(prompts[0])
    other = policy("gpt2" if arch != "gpt2" else "llama")
    other.save(tmp_path / "other")
    with pytest.raises(DataError, match="model"):
        pol.copy().load_weights(tmp_path / "other")


def test_load_weights_refuses_a_save_with_a_missing_tensor(tmp_path):
    from safetensors.torch import load_file, save_file

    pol = policy("llama")
    pol.save(tmp_path / "p")
    f = tmp_path / "p" / "model" / "model.safetensors"
    state = load_file(str(f))
    del state[next(k for k in state if "layers.1" in k)]
    save_file(state, str(f), metadata={"format": "pt"})
    with pytest.raises(DataError, match="missing"):
        pol.copy().load_weights(tmp_path / "p")


def test_sharded_saves_load(tmp_path):
    pol = policy("qwen2")
    pol.model.save_pretrained(tmp_path / "p" / "model", max_shard_size="20KB")
    pol.tokenizer.save_pretrained(tmp_path / "p" / "model")
    assert len(list((tmp_path / "p" / "model").glob("model-*.safetensors"))) > 1
    fresh = CausalLMPolicy(build_model("qwen2", seed=1)[0], pol.tokenizer)
    fresh.load_weights(tmp_path / "p")
    p, r = hh_prompts(1), [" fine"]
    assert fresh.log_prob(p, r).item() == pytest.approx(pol.log_prob(p, r).item(), abs=1e-5)


# -- LoRA ------------------------------------------------------------------------------------------

def _unique_numel(*policies):
    seen, total = set(), 0
    for pol in policies:
        tensors = list(pol.model.state_dict().values()) + [p for p in pol.parameters()]
        for t in tensors:
            key = (t.untyped_storage().data_ptr(), t.shape)
            if key not in seen:
                seen.add(key)
                total += t.numel()
    return total


def test_lora_reference_is_the_adapter_disabled_model_with_one_copy(arch, tmp_path):
    peft = pytest.importorskip("peft")
    ref = policy(arch).freeze()
    base_numel = sum(p.numel() for p in ref.model.parameters())
    prompts, responses = hh_prompts(3), [" yes", " no way", " fine"]
    lp0 = ref.log_prob(prompts, responses).clone()
    pol = ref.trainable_copy(lora=LoraSettings(r=4, alpha=8, target_modules="all-linear"), seed=1)
    assert pol.model is ref.model  # one base in memory
    adapter = sum(p.numel() for p in pol.adapter.values())
    assert adapter > 0 and _unique_numel(ref, pol) <= base_numel + 2 * adapter
    assert all(not p.requires_grad for n, p in pol.named_parameters() if "adapter" not in n)
    torch.testing.assert_close(pol.log_prob(prompts, responses).detach(), lp0, atol=1e-6, rtol=0)
    opt = torch.optim.SGD([p for p in pol.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):  # B moves off zero
        opt.zero_grad()
        (-pol.log_prob(prompts, responses).sum()).backward()
        opt.step()
    moved = pol.log_prob(prompts, responses).detach()
    assert (moved - lp0).abs().max() > 1e-3
    ref._lp_cache.clear()
    torch.testing.assert_close(ref.log_prob(prompts, responses), lp0, atol=1e-6, rtol=0)
    # saved in peft's format: peft's own PeftModel gives the same logits (an independent
    # implementation of the adapter)
    pol.save(tmp_path / "lora")
    back = load_policy(tmp_path / "lora", base=ref)
    torch.testing.assert_close(back.log_prob(prompts, responses), moved, atol=1e-5, rtol=0)
    fresh = policy(arch).model
    fresh.load_state_dict({k.replace(".base_layer.", "."): v
                           for k, v in ref.model.state_dict().items() if ".lora_" not in k})
    peft_model = peft.PeftModel.from_pretrained(fresh, str(tmp_path / "lora" / "adapter"))
    via_peft = CausalLMPolicy(peft_model.merge_and_unload(), ref.tokenizer).freeze()
    torch.testing.assert_close(via_peft.log_prob(prompts, responses), moved, atol=1e-4, rtol=0)
    merged = pol.merged()
    assert merged.adapter is None and merged.model is not ref.model
    torch.testing.assert_close(merged.log_prob(prompts, responses), moved, atol=1e-4, rtol=0)


def test_an_adapter_for_another_base_is_refused(tmp_path):
    pytest.importorskip("peft")
    a = policy("llama").freeze().trainable_copy(lora=LoraSettings(r=2))
    a.save(tmp_path / "a")
    other = policy("qwen2").freeze()
    with pytest.raises(DataError):
        load_policy(tmp_path / "a", base=other)


# -- the agents, end to end ----------------------------------------------------------------------------

def _gold(prompts, responses):
    """A gold reward a tiny model can move: shorter non-empty answers with vowels win."""
    return np.array([sum(c in "aeiou" for c in r) / 4 - abs(len(r) - 12) / 12 for r in responses])


def _env(arch, **kw):
    from rlhf_env.envs.custom import PromptsEnv

    ref = policy(arch, max_new_tokens=5)
    prompts = hh_prompts(12, max_chars=200)
    return PromptsEnv(train_prompts=prompts[:8], eval_prompts=prompts[8:], reference=ref,
                      reward=_gold, setting="hybrid", query_budget=16, n_offline=8, seed=0, **kw)


AGENT_RUNS = {
    "dpo": {"num_train_epochs": 1, "per_device_train_batch_size": 4, "learning_rate": 1e-3},
    "iterative_dpo": {"iterations": 2, "n_samples": 2, "num_train_epochs": 1,
                      "per_device_train_batch_size": 4, "lora": {"r": 4}},
    "best_of_n": {"n": 2, "reward_model": {"steps": 4, "batch_size": 4}},
    "rso": {"n_candidates": 2, "n_accepted": 2, "n_prompts": 4, "num_train_epochs": 1,
            "reward_model": {"steps": 4, "batch_size": 4}},
}
PPO_RUN = {"iterations": 1, "timesteps_per_iteration": 16, "n_envs": 2, "n_steps": 8,
           "batch_size": 8, "n_epochs": 1, "max_new_tokens": 4,
           "reward_model": {"steps": 4, "batch_size": 4}}


@pytest.mark.parametrize("name", sorted(AGENT_RUNS))
def test_every_agent_runs_end_to_end_on_every_architecture(arch, name):
    import agents

    env = _env(arch)
    kw = dict(AGENT_RUNS[name], progress=False)
    if "lora" in kw:
        pytest.importorskip("peft")
    agent = agents.make(name, env, **kw).learn()
    assert agent.instance.queries_used <= 16
    ev = rlhf_env.evaluate(agent.policy, env, n_samples=2, best_of_n=())
    assert all(np.isfinite(ev[k]) for k in ("gold_reward", "kl", "objective", "win_rate"))


@pytest.mark.parametrize("rollout", ["cached", "per_state"])
def test_ppo_runs_both_rollouts_or_refuses_before_paying(arch, rollout):
    import agents

    env = _env(arch)
    kw = dict(PPO_RUN, progress=False, rollout=rollout)
    if rollout == "cached" and arch in SLIDING:
        with pytest.raises(InvalidArgumentError, match="per_state"):
            agents.make("ppo", env, **kw)
        assert env.unwrapped.instance.queries_used == 0
        assert agents.make("ppo", env, **{**kw, "rollout": "auto"}).rollout == "per_state"
        return
    agent = agents.make("ppo", env, **kw).learn()
    assert agent.model.score_calls >= 1
    ev = rlhf_env.evaluate(agent.policy, env, n_samples=2, best_of_n=())
    assert np.isfinite(ev["objective"])


def test_tokenizers_have_the_shapes_they_claim():
    assert tokenizer("gpt2").pad_token is None and tokenizer("gpt2").bos_token == "<|endoftext|>"
    assert tokenizer("llama")("hi")["input_ids"][0] == tokenizer("llama").bos_token_id
    assert tokenizer("qwen").bos_token is None
    assert tokenizer("opt")("hi")["input_ids"][0] == tokenizer("opt").eos_token_id
    assert tokenizer("gemma")("hi")["input_ids"][0] == tokenizer("gemma").bos_token_id
