"""Token-level PPO on language envs: the MDP, the KL penalty, the PPO ratio, and a gain in gold."""


import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env

import agents
import rlhf_env
from agents.algorithms.ppo import PPOConfig
from agents.algorithms.ppo_lm import TokenEnv, lm_inputs, make_lm_ppo, watch_first_minibatch_ratios
from agents.algorithms.ppo_lm_cache import prefix_runs


def _config(env, **kw):
    base = dict(n_envs=4, n_steps=8, batch_size=8, n_epochs=2, max_new_tokens=8,
                max_prompt_tokens=48, learning_rate=1e-3)
    return PPOConfig.from_dict({**base, **kw})


def _ones(prompts, responses):
    return np.ones(len(prompts))


def _lm_ppo(u, kl_coef, reward_fn=_ones, policy=None, **config):
    """SB3 PPO over a trainable copy of ``policy`` (default: the env's pi0), every episode
    scored by reward_fn."""
    c = _config(u, **config)
    model, envs = make_lm_ppo((policy or u.reference).trainable_copy(), u.reference,
                              list(u.train_prompts), kl_coef=kl_coef, config=c, seed=0)
    for e in envs:
        e.reward_fn = reward_fn
    return model, c


def test_token_env_passes_gymnasium_and_sb3_checkers(tiny_env):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    ref = tiny_env.unwrapped.reference
    vocab = ref.model.get_output_embeddings().weight.shape[0]
    env = TokenEnv(list(tiny_env.unwrapped.train_prompts), ref.tokenizer, ref.encode, ref.eos_id,
                   vocab, max_new_tokens=6, max_prompt_tokens=48, reward_fn=_ones)
    gym_check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=True)
    obs, _ = env.reset(seed=0)
    total, done, n = 0.0, False, 0
    while not done:  # an episode ends at EOS or after max_new_tokens, paying the score once
        obs, r, done, _, info = env.step(ref.eos_id if n == 3 else 65)
        total, n = total + r, n + 1
    assert n == 4 and total == 1.0 and info["response"] == "AAA"


def test_lm_inputs_drop_all_padding_columns_and_count_positions():
    obs = torch.tensor([[-1, -1, -1, 5, 6], [-1, -1, 7, 8, 9]])
    ids, mask, pos = lm_inputs(obs, pad_id=0)
    assert ids.tolist() == [[0, 5, 6], [7, 8, 9]]
    assert mask.tolist() == [[0, 1, 1], [1, 1, 1]]
    assert pos.tolist() == [[0, 0, 1], [0, 1, 2]]


def _episodes(buf):
    """(env, start, end) of the complete episodes in an SB3 rollout buffer."""
    out = []
    starts = buf.episode_starts
    for e in range(starts.shape[1]):
        idx = list(np.flatnonzero(starts[:, e]))
        out += [(e, a, b) for a, b in zip(idx, idx[1:])]
    return out


def _rollout(model, first=False):
    """One SB3 rollout into model.rollout_buffer, unflattened (learn() flattens it in train)."""
    if first:
        model._callback = model._setup_learn(10**6)[1]
    assert model.collect_rollouts(model.env, model._callback, model.rollout_buffer, model.n_steps)
    return model.rollout_buffer


def _full_sequence_log_probs(model, prompt_ids, resp_ids):
    """Independent oracle: one unpadded forward over prompt + response."""
    ids = torch.tensor([prompt_ids + resp_ids])
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    return lp[len(prompt_ids) - 1:].gather(-1, torch.tensor(resp_ids)[:, None])[:, 0]


def test_kl_penalty_per_token_matches_an_unpadded_reference_pass(tiny_env):
    u = tiny_env.unwrapped
    model, c = _lm_ppo(u, 0.7, n_steps=16, n_epochs=1, learning_rate=3e-3)
    buf = _rollout(model, first=True)  # rollout 1: pi = pi0
    ref = model.reference_log_probs(buf.observations, buf.actions)
    np.testing.assert_allclose(buf.log_probs, ref, atol=1e-5)
    episodes = _episodes(buf)
    assert len(episodes) >= 4
    for e, a, b in episodes:
        prompt = [int(t) for t in buf.observations[a, e] if t >= 0]
        resp = [int(t) for t in buf.actions[a:b, e, 0]]
        oracle = _full_sequence_log_probs(u.reference.model, prompt, resp).numpy()
        np.testing.assert_allclose(ref[a:b, e], oracle, atol=1e-4)
        # rollout 1 has pi = pi0: no penalty, the score on the episode's last token only
        np.testing.assert_allclose(buf.rewards[a:b, e], [0.0] * (b - a - 1) + [1.0], atol=1e-5)
    model.train()
    buf = _rollout(model)  # rollout 2, after one update
    ref = model.reference_log_probs(buf.observations, buf.actions)
    penalty = 0.7 * (buf.log_probs - ref)
    assert np.abs(penalty).max() > 1e-3  # the policy moved after one update
    raw = buf.rewards + penalty  # what the env paid: 1 on each last token, 0 elsewhere
    for e, a, b in _episodes(buf):
        np.testing.assert_allclose(raw[a:b, e], [0.0] * (b - a - 1) + [1.0], atol=1e-4)
    n_eps = buf.episode_starts.sum()
    assert model.kl_stats["kl"] == pytest.approx((buf.log_probs - ref).sum() / n_eps, rel=1e-4)


@pytest.mark.parametrize("rollout,dropout_on",
                         [("cached", False), ("cached", True), ("per_state", False)])
def test_ppo_ratio_is_one_on_the_first_minibatch_of_each_update(tiny_env, rollout, dropout_on):
    model, c = _lm_ppo(tiny_env.unwrapped, 0.5, rollout=rollout,
                       reward_fn=lambda p, r: np.array([float(len(x)) for x in r]))
    for m in model.policy.lm.modules():  # a model whose config has dropout, like most hub LMs
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.3
    if dropout_on:  # the negative control: what the actor does if dropout stays on
        model.policy.set_training_mode = lambda mode: torch.nn.Module.train(model.policy, mode)
    ratios = watch_first_minibatch_ratios(model)
    model.learn(total_timesteps=3 * c.n_steps * c.n_envs)
    assert len(ratios) == 3
    worst = max(float((r - 1).abs().max()) for r in ratios)
    if dropout_on:
        assert worst > 1e-2
    else:
        assert worst < 1e-5


def test_config_defaults_follow_the_kind_of_env(tiny_env):
    """The zoo config's kind entries (exact / sampled) hold the per-kind defaults."""
    lin = agents.make("ppo", rlhf_env.make("LinearBT-v0", seed=0))
    assert lin.config.learning_rate == 0.5 and lin.config.n_steps == 4096
    fresh = rlhf_env.make("TinyInstruct-v0", size="small", n_train_prompts=64, n_eval_prompts=16,
                          n_offline=32)
    lm = agents.make("ppo", fresh)
    assert lm.config.learning_rate == 3e-4 and lm.config.n_steps == 32
    assert agents.make("ppo", fresh, n_steps=5).config.n_steps == 5
    fresh.reset(seed=0)
    fresh.step(("a", "b"))  # one query spent: the whole budget no longer fits 2 x 1024
    with pytest.raises(rlhf_env.errors.InvalidArgumentError, match="2047 of the env's 2048"):
        agents.make("ppo", fresh)
    with pytest.raises(rlhf_env.errors.InvalidArgumentError, match="critic"):
        agents.make("ppo", tiny_env, critic="separate")
    assert lm.config.rollout == "auto" and lm.rollout == "cached"  # GPT-2: a plain cache
    # an env of its own: the session's tiny_env may have spent queries in other tests
    unspent = rlhf_env.make("TinyInstruct-v0", size="small", n_train_prompts=64,
                            n_eval_prompts=16, n_offline=32)
    assert agents.make("ppo", unspent, rollout="per_state").config.rollout == "per_state"
    with pytest.raises(rlhf_env.errors.InvalidArgumentError, match="rollout must be one of"):
        agents.make("ppo", tiny_env, rollout="kv")
    with pytest.raises(rlhf_env.errors.InvalidArgumentError, match="max_new_tokens must be"):
        agents.make("ppo", tiny_env, max_new_tokens=0)


def _rm_score(rm, policy, prompts):
    """The reward model's mean score of one sample of ``policy`` per prompt (fixed seed)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    responses = [r[0] for r in policy.sample(prompts, n=1, generator=gen)]
    return float(np.mean(rm(prompts, responses)))


def test_ppo_raises_its_reward_models_score_at_bounded_kl_on_tiny_instruct():
    """Offline TinyInstruct (1024 BT-labelled pairs of pi0), one RM fit, 8192 PPO tokens:
    PPO raises the score of the reward model it optimises on held-out prompts, at a KL in
    (0, 3). Gold reward is not asserted: a learned RM can be over-optimised (on one CPU seed
    0 reached KL 1.64 and lost 0.18 gold while seed 1 gained 0.37), and whether PPO beats
    pi0 on gold is the leaderboard's measurement (README: not significantly, 5 seeds)."""
    rm_gains, gold_gains, kls = [], [], []
    for seed in (0, 1):
        env = rlhf_env.make("TinyInstruct-v0", size="small", setting="offline", n_offline=1024,
                            n_train_prompts=1024, n_eval_prompts=128, seed=seed)
        u = env.unwrapped
        agent = agents.make("ppo", env, seed=seed, progress=False, iterations=1,
                            timesteps_per_iteration=8192).learn()
        prompts = list(u.eval_prompts) * 4

        rm_gains.append(_rm_score(agent.reward_model, agent.policy, prompts)
                        - _rm_score(agent.reward_model, u.reference, prompts))
        base = rlhf_env.evaluate(u.reference, env, n_samples=4, seed=0)["gold_reward"]
        ev = rlhf_env.evaluate(agent.policy, env, n_samples=4, seed=0)
        gold_gains.append(ev["gold_reward"] - base)
        kls.append(ev["kl"])
    print(f"RM score gains {rm_gains}, gold gains {gold_gains}, KL to pi0 {kls}")
    assert min(rm_gains) > 0, rm_gains
    assert all(np.isfinite(gold_gains)), gold_gains
    assert all(0 < k < 3 for k in kls), kls


def test_adaptive_kl_controller_follows_ziegler_update(tiny_env):
    u = tiny_env.unwrapped
    model, c = _lm_ppo(u, 0.5, kl_target=0.01, n_epochs=1, learning_rate=3e-3)
    model.kl_horizon = 100
    buf = _rollout(model, first=True)
    # pi = pi0 on the first rollout: KL 0, error clipped at -0.2
    episodes = buf.episode_starts.sum()
    assert model.kl_stats["kl"] == pytest.approx(0.0, abs=1e-5)
    assert model.kl_coef == pytest.approx(0.5 * (1 - 0.2 * episodes / 100))
    model.train()
    before = model.kl_coef
    buf = _rollout(model)
    kl, episodes = model.kl_stats["kl"], buf.episode_starts.sum()
    err = np.clip(kl / 0.01 - 1, -0.2, 0.2)
    assert model.kl_stats["kl_coef"] == before
    assert model.kl_coef == pytest.approx(before * (1 + err * episodes / 100))


# -- the cached path (one forward pass per sequence) against the per-state path ----------------

def test_prefix_runs_group_each_state_with_the_states_it_grows_into():
    # rows 0-2: one sequence [5] -> [5, 6] -> [5, 6, 7]; row 3 a new prompt; row 4 grows row 3
    obs = torch.tensor([[-1, -1, -1, 5], [-1, -1, 5, 6], [-1, 5, 6, 7], [-1, -1, 8, 9],
                        [-1, 8, 9, 4]])
    run, back = prefix_runs(obs, torch.tensor([6, 7, 1, 4, 2]))
    assert run.tolist() == [0, 0, 0, 1, 1] and back.tolist() == [2, 1, 0, 1, 0]
    # the same states with a different action in row 1: row 2 no longer grows it
    run, back = prefix_runs(obs, torch.tensor([6, 3, 1, 4, 2]))
    assert run.tolist() == [0, 0, 1, 2, 2] and back.tolist() == [1, 0, 0, 1, 0]
    # a full-width state shifted by one has lost its first token: not a prefix
    run, _ = prefix_runs(torch.tensor([[5, 6, 7], [6, 7, 8]]), torch.tensor([8, 1]))
    assert run.tolist() == [0, 1]


def test_the_cached_rollouts_refusal_names_what_differs():
    """A sliding-window model's cache is a DynamicCache too: the refusal names its layers."""
    from transformers import Qwen2Config
    from transformers.cache_utils import DynamicCache

    from agents.algorithms.ppo_lm_cache import _layers, cache_is_editable

    config = Qwen2Config(num_hidden_layers=2, use_sliding_window=True, sliding_window=4,
                         max_window_layers=1, hidden_size=8, num_attention_heads=2,
                         num_key_value_heads=1, intermediate_size=8, vocab_size=10)
    sliding = DynamicCache(config=config)
    assert not cache_is_editable(sliding)
    with pytest.raises(rlhf_env.errors.InvalidArgumentError, match="this model's is a DynamicCache with "
                       "DynamicSlidingWindowLayer layers: use rollout='per_state'"):
        _layers(sliding)
    with pytest.raises(rlhf_env.errors.InvalidArgumentError, match="this model's is a NoneType"):
        _layers(None)
    assert cache_is_editable(DynamicCache())


def test_kv_cache_stepper_matches_a_forward_pass_per_state(tiny_env):
    """Rows that grow by one token, rows that restart (a prompt longer than the cache so far,
    then a shorter one): the same logits and hidden states as encoding each state afresh."""
    from agents.algorithms.ppo_lm_cache import KVCacheStepper

    ref = tiny_env.unwrapped.reference
    width = 40

    def states(*seqs):
        obs = torch.full((len(seqs), width), -1)
        for i, s in enumerate(seqs):
            obs[i, width - len(s):] = torch.tensor(s)
        return obs

    a, b, long, short = [65, 66], [70], list(range(97, 97 + 30)), [50, 51, 52]
    calls = [states(a, b), states(a + [1], long), states(a + [1, 2], long + [3]),
             states(short, long + [3, 4]), states(short + [5], long + [3, 4, 6]),
             states(short + [5], long + [3, 4, 6])]  # the same states again: no new step
    stepper = KVCacheStepper(ref.model, ref.pad_id)
    widths = []
    with torch.no_grad():
        for obs in calls:
            logits, hidden = stepper(obs)
            widths.append(stepper.mask.shape[1])
            ids, mask, pos = lm_inputs(obs, ref.pad_id)
            out = ref.model(input_ids=ids, attention_mask=mask, position_ids=pos,
                            output_hidden_states=True)
            torch.testing.assert_close(logits, out.logits[:, -1], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(hidden, out.hidden_states[-1][:, -1], atol=1e-5, rtol=1e-5)
    assert widths == [2, 30, 31, 32, 33, 33]  # widened for the long prompt, then one per step


def _perturbed(u, scale=0.05, seed=1):
    """A trainable copy of pi0 with noise on every weight: pi != pi0, so penalties are non-zero."""
    policy = u.reference.trainable_copy()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in policy.model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return policy


def _tokens_fed(lm):
    """Counts the tokens the LM is run on (a forward hook); returns the list it appends to."""
    fed = []
    lm.register_forward_hook(lambda m, args, kw, out: fed.append(kw["input_ids"].numel()),
                             with_kwargs=True)
    return fed


def test_cached_and_per_state_paths_agree_on_the_same_rollout(tiny_env):
    """Same states and tokens: the same log-probs, values, pi0 log-probs, rewards, advantages,
    PPO loss and gradients, within 1e-5; and the cached rollout feeds the LM far fewer tokens."""
    u = tiny_env.unwrapped
    policy = _perturbed(u)
    models = {}
    for path in ("cached", "per_state"):
        model, c = _lm_ppo(u, 0.7, policy=policy, rollout=path, n_steps=16, n_epochs=1,
                           batch_size=4 * 16, max_grad_norm=1e6)
        with torch.no_grad():  # a non-trivial critic, the same in both
            g = torch.Generator().manual_seed(2)
            model.policy.value_head.weight.copy_(torch.randn(model.policy.value_head.weight.shape,
                                                             generator=g))
            model.policy.value_head.bias.fill_(0.3)
        model._callback = model._setup_learn(10**6)[1]
        models[path] = model
    mc, mp = models["cached"], models["per_state"]
    fed = _tokens_fed(mc.policy.lm)
    bc = _rollout(mc)  # the cached path's rollout: KV-cached sampler, sequence pass of pi0
    steps, envs, width = bc.observations.shape
    per_state_fed = sum(lm_inputs(torch.as_tensor(o), 0)[0].numel() for o in bc.observations)
    assert sum(fed) < per_state_fed / 3, (sum(fed), per_state_fed)

    # the per-state path on the same rollout: its actor's log-probs and values of the same
    # states and tokens (what its own rollout records), the env's raw rewards, its penalty
    bp = mp.rollout_buffer
    for name in ("observations", "actions", "episode_starts"):
        setattr(bp, name, getattr(bc, name).copy())
    mp._last_obs, mp._last_episode_starts = mc._last_obs.copy(), mc._last_episode_starts.copy()
    ends = np.vstack([bc.episode_starts[1:], mc._last_episode_starts[None]])
    bp.rewards = ends.astype(np.float32)  # _ones pays 1 on each episode's last token
    with torch.no_grad():
        values, logp, _ = mp.policy.evaluate_actions(torch.as_tensor(bc.observations.reshape(
            -1, width)), torch.as_tensor(bc.actions.reshape(-1)).long())
    bp.values, bp.log_probs = values.numpy().reshape(steps, envs), logp.numpy().reshape(steps, envs)
    bp.pos, bp.full = steps, True
    mp.apply_kl_penalty(bp)

    ref_c = mc.reference_log_probs(bc.observations, bc.actions)  # one pass per segment
    ref_p = mp.reference_log_probs(bc.observations, bc.actions)  # one pass per state
    assert np.abs(bc.log_probs - ref_c).max() > 1e-2 and bc.values.std() > 1e-2  # not trivial
    for a, b in ((bc.log_probs, bp.log_probs), (bc.values, bp.values), (ref_c, ref_p),
                 (bc.rewards, bp.rewards), (bc.advantages, bp.advantages),
                 (bc.returns, bp.returns)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(bc.rewards + 0.7 * (bc.log_probs - ref_c), ends, atol=1e-5)
    assert mc.kl_stats["kl"] == pytest.approx(mp.kl_stats["kl"], abs=1e-5)

    # one minibatch of all tokens: SB3's train computes the same loss and gradients
    grads = {}
    for path, model in models.items():
        model.train()
        grads[path] = [p.grad.clone() for p in model.policy.parameters()]
    assert sum(float(g.norm()) for g in grads["cached"]) > 1e-3
    for a, b in zip(grads["cached"], grads["per_state"]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for k in ("loss", "policy_gradient_loss", "value_loss", "entropy_loss", "approx_kl"):
        assert mc.logger.name_to_value[f"train/{k}"] == pytest.approx(
            mp.logger.name_to_value[f"train/{k}"], abs=1e-5), k


def test_sequence_minibatches_cover_every_token_once_and_match_the_per_state_actor(tiny_env):
    """Minibatches of 24 tokens (segments cut at their edges): each token once, in one forward
    pass per run, with the per-state actor's log-probs, values and entropies."""
    u = tiny_env.unwrapped
    mc, c = _lm_ppo(u, 0.5, policy=_perturbed(u), n_steps=16)
    mp, _ = _lm_ppo(u, 0.5, policy=_perturbed(u), rollout="per_state")
    buf = _rollout(mc, first=True)
    n_segments = len(buf.segments())
    seen, runs = [], 0
    for batch in buf.get(24):
        obs, acts = batch.observations, batch.actions.long().flatten()
        assert len(acts) == 24 or len(acts) == 64 % 24
        runs += int(prefix_runs(obs, acts)[0].max()) + 1
        with torch.no_grad():
            for a, b in zip(mc.policy.evaluate_actions(obs, acts),
                            mp.policy.evaluate_actions(obs, acts)):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(mc.policy.evaluate_actions(obs, acts)[1],
                                       batch.old_log_prob, atol=1e-5, rtol=1e-5)
        seen += [(tuple(o.tolist()), int(a)) for o, a in zip(obs, acts)]
    every = [(tuple(o.tolist()), int(a)) for o, a in zip(buf.observations, buf.actions[:, 0])]
    assert sorted(seen) == sorted(every)
    assert runs <= n_segments + 64 // 24  # at most one extra pass per minibatch boundary
    assert runs < len(every) / 2
