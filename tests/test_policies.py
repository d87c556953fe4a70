import numpy as np
import pytest
import torch

import rlhf_env
from rlhf_env.errors import DataError, InvalidActionError
from rlhf_env.policies import Catalog, LogLinearPolicy, Policy, TabularPolicy, load_policy


@pytest.fixture
def env():
    return rlhf_env.make("LinearBT-v0", seed=0).unwrapped


def test_tabular_log_prob_is_log_softmax_and_differentiable():
    cat = Catalog(["x", "y"], ["a", "b", "c"])
    logits = torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]])
    pol = TabularPolicy(cat, logits)
    lp = pol.log_prob(["x", "y", "x"], ["c", "a", "a"])
    z = np.log(np.exp([0.0, 1.0, 2.0]).sum())
    torch.testing.assert_close(lp, torch.tensor([2.0 - z, -np.log(3), 0.0 - z], dtype=torch.float64))
    lp.sum().backward()
    assert pol.theta.grad is not None and pol.theta.grad.abs().sum() > 0


def test_unknown_prompt_or_response_raises():
    pol = TabularPolicy(Catalog(["x"], ["a", "b"]))
    with pytest.raises(InvalidActionError, match="'z' is not one of the 2 candidate"):
        pol.log_prob(["x"], ["z"])
    with pytest.raises(InvalidActionError, match="prompt 'q'"):
        pol.sample(["q"])


def test_sampling_is_seeded_and_matches_probabilities(env):
    ref = env.reference
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert ref.sample(["prompt-0"] * 3, n=4, generator=g1) == ref.sample(
        ["prompt-0"] * 3, n=4, generator=g2
    )
    draws = ref.sample(["prompt-1"], n=20_000, generator=torch.Generator().manual_seed(1))[0]
    ids = env.catalog.response_ids(draws)
    freq = np.bincount(ids, minlength=16) / len(ids)
    p = env.reference.probs_table().detach().numpy()[1]
    assert np.abs(freq - p).max() < 0.02
    # temperature -> 0 concentrates on the mode
    cold = ref.sample(["prompt-1"], n=50, temperature=1e-3)[0]
    assert set(cold) == {env.catalog.responses[int(np.argmax(p))]}


def test_loglinear_with_theta_over_eta_is_gibbs(env):
    j = rlhf_env.judge(env)
    log_ref = env.reference.log_probs_table().detach()
    pol = LogLinearPolicy(env.catalog, log_ref, env.features, j.theta_star / env.eta)
    torch.testing.assert_close(
        pol.log_probs_table(), j.optimal_policy().log_probs_table(), rtol=0, atol=1e-12
    )
    zero = LogLinearPolicy(env.catalog, log_ref, env.features)
    torch.testing.assert_close(zero.log_probs_table(), env.reference.log_probs_table())


def test_copy_frozen_and_trainable(env):
    frozen = env.reference
    assert not any(p.requires_grad for p in frozen.parameters()) and not frozen.training
    train = TabularPolicy.from_policy(frozen)
    assert all(p.requires_grad for p in train.parameters())
    twin = train.copy()
    with torch.no_grad():
        twin.theta.add_(1.0)
    assert not torch.equal(twin.theta, train.theta)
    ref_copy = train.copy(frozen=True)
    assert not ref_copy.theta.requires_grad


@pytest.mark.parametrize("kind", ["tabular", "loglinear"])
def test_save_load_roundtrip(env, tmp_path, kind):
    if kind == "tabular":
        pol = TabularPolicy(env.catalog, torch.randn(32, 16, dtype=torch.float64))
    else:
        pol = LogLinearPolicy(env.catalog, env.reference.log_probs_table().detach(), env.features,
                              np.ones(16))
    pol.save(tmp_path / "p")
    assert (tmp_path / "p" / "policy.safetensors").is_file()
    back = load_policy(tmp_path / "p")
    assert type(back) is type(pol)
    torch.testing.assert_close(back.log_probs_table(), pol.log_probs_table())
    assert type(pol).load(tmp_path / "p").catalog == pol.catalog
    other = TabularPolicy(env.catalog).load_weights(tmp_path / "p") if kind == "tabular" else None
    if other is not None:
        torch.testing.assert_close(other.log_probs_table(), pol.log_probs_table())
    assert isinstance(back, Policy)


def test_load_rejects_bad_folders(tmp_path):
    with pytest.raises(DataError, match="not a saved policy"):
        load_policy(tmp_path)
    (tmp_path / "policy.json").write_text('{"class": "os.system"}')
    with pytest.raises(DataError, match="known"):
        load_policy(tmp_path)
