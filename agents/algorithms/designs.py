"""The controls any active-learning claim must beat, and posterior sampling, on linear envs.

An online learner's lead over the offline MLE on *pi0's* pairs can be coverage, not
adaptivity: a design fixed in advance from the public features may cover as well. At equal
labels (the query budget, on prompts the env draws):

* ``mle_gibbs_uniform`` / ``pessimistic_gibbs_uniform``: the budget spent on pairs of two
  different responses drawn uniformly from the catalogue, then Gibbs(r_MLE) (or the
  pessimistic Gibbs policy);
* ``mle_gibbs_design`` / ``pessimistic_gibbs_design``: the budget spent on a greedy
  **D-optimal design**: for each prompt the env draws, the pair whose feature difference
  x = phi(x, a) - phi(x, b) maximises the gain in log det Sigma, x^T Sigma^-1 x (Sigma =
  lambda I + the offline and earlier designed differences, updated pair by pair). It
  depends on the public features only, never on a label: non-adaptive. (The paper's GSHF
  targets the Gibbs objective's uncertainty instead; the D-criterion targets theta as a
  whole.)

Posterior sampling:

* ``thompson_gibbs``: each round, the Laplace approximation of the BT posterior of theta
  (ridge prior N(0, I / lambda)): N(theta_MAP, H^-1), H = lambda I + sum_i s_i (1 - s_i)
  x_i x_i^T at the MAP (Dwaracherla et al. 2024; the linear case of their epistemic
  model), and **double Thompson sampling** for the pair: a1 ~ Gibbs(theta_1), a2 ~
  Gibbs(theta_2) for two independent posterior draws per prompt (a2 redrawn from a fresh
  theta when it repeats a1, up to 8 times). The output is Gibbs(theta_MAP) of all the data.
"""

from __future__ import annotations

import numpy as np
import torch

from agents.algorithms.gshf import (
    GSHFConfig,
    MLEGibbsAgent,
    PessimisticGibbsAgent,
    Pi0TheoryConfig,
    TheoryAgent,
)
from agents.base import register_agent
from agents.data import PreferenceData
from rlhf_env.policies import TabularPolicy
from rlhf_env.policies.closed_forms import gibbs_log_probs

__all__ = ["d_optimal_pairs", "uniform_pairs", "laplace_posterior", "ThompsonGibbsAgent"]


def uniform_pairs(prompt_ids: np.ndarray, k: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Two different response indices drawn uniformly for each prompt."""
    a = rng.integers(k, size=len(prompt_ids))
    b = (a + rng.integers(1, k, size=len(prompt_ids))) % k
    return a, b


def d_optimal_pairs(prompt_ids: np.ndarray, phi: np.ndarray, sigma: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy D-optimal pairs: for each prompt in turn, the pair (a, b) maximising
    x^T Sigma^-1 x, x = phi[x, a] - phi[x, b], then Sigma += x x^T (Sherman-Morrison on the
    inverse). Returns ``(a, b, Sigma after)``; ties go to the first pair in (a, b) order."""
    inv = np.linalg.inv(sigma)
    sigma = sigma.copy()
    k = phi.shape[1]
    ia, ib = np.triu_indices(k, 1)
    out_a, out_b = [], []
    for x_id in prompt_ids:
        diffs = phi[x_id, ia] - phi[x_id, ib]  # (pairs, d)
        gain = np.einsum("pd,de,pe->p", diffs, inv, diffs)
        j = int(np.argmax(gain))
        v = diffs[j]
        iv = inv @ v
        inv -= np.outer(iv, iv) / (1.0 + v @ iv)
        sigma += np.outer(v, v)
        out_a.append(int(ia[j]))
        out_b.append(int(ib[j]))
    return np.array(out_a), np.array(out_b), sigma


def laplace_posterior(x: np.ndarray, ridge: float, iterations: int = 50
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The Laplace approximation of the BT posterior of theta for differences ``x`` (n, d)
    (chosen minus rejected) under the prior N(0, I / ridge): ``(theta_MAP, covariance
    H^-1)``, H the negative log-posterior's Hessian at the MAP (Newton's method)."""
    d = x.shape[1] if x.ndim == 2 else 0
    theta = np.zeros(d)
    for _ in range(iterations):
        s = 1.0 / (1.0 + np.exp(-(x @ theta)))
        grad = x.T @ (1.0 - s) - ridge * theta
        hess = (x * (s * (1 - s))[:, None]).T @ x + ridge * np.eye(d)
        step = np.linalg.solve(hess, grad)
        theta += step
        if np.abs(step).max() < 1e-12:
            break
    s = 1.0 / (1.0 + np.exp(-(x @ theta)))
    hess = (x * (s * (1 - s))[:, None]).T @ x + ridge * np.eye(d)
    return theta, np.linalg.inv(hess)


class _DesignAgent:
    """Mixin: spend the query budget on pairs chosen by :meth:`design` (no label used)."""

    def design(self, pid: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def collect(self, t: int) -> PreferenceData | None:
        n = self.config.pairs_to_query(self.instance)  # type: ignore[attr-defined]
        if not n:
            return None
        cat = self.instance.catalog  # type: ignore[attr-defined]
        rng = np.random.default_rng(self.seed_for(4))  # type: ignore[attr-defined]

        def propose(prompts: list[str]) -> tuple[list[str], list[str]]:
            a, b = self.design(np.asarray(cat.prompt_ids(prompts)), rng)
            return [cat.responses[i] for i in a], [cat.responses[j] for j in b]

        return self.collector.pairs(n, self.seed_for(1), propose)  # type: ignore[attr-defined]


class _Uniform(_DesignAgent):
    def design(self, pid: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return uniform_pairs(pid, len(self.instance.catalog.responses), rng)  # type: ignore


class _DOptimal(_DesignAgent):
    def design(self, pid: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        offline = self.offline  # type: ignore[attr-defined]
        d = self.phi.shape[-1]  # type: ignore[attr-defined]
        sigma = self.config.ridge * np.eye(d)  # type: ignore[attr-defined]
        if len(offline):
            cat = self.instance.catalog  # type: ignore[attr-defined]
            opid = cat.prompt_ids(offline.prompts)
            x = (self.phi[opid, cat.response_ids(offline.chosen)]  # type: ignore[attr-defined]
                 - self.phi[opid, cat.response_ids(offline.rejected)])  # type: ignore
            sigma = sigma + x.T @ x
        a, b, _ = d_optimal_pairs(pid, self.phi, sigma)  # type: ignore[attr-defined]
        return a, b


@register_agent("mle_gibbs_uniform")
class MLEGibbsUniformAgent(_Uniform, MLEGibbsAgent):
    """mle_gibbs at equal labels, the budget spent on uniformly random pairs."""

    Config = Pi0TheoryConfig
    description = "mle_gibbs on offline data + the budget spent on uniform pairs (a design)"


@register_agent("pessimistic_gibbs_uniform")
class PessimisticGibbsUniformAgent(_Uniform, PessimisticGibbsAgent):
    """pessimistic_gibbs at equal labels, the budget spent on uniformly random pairs."""

    Config = Pi0TheoryConfig
    description = "pessimistic_gibbs on offline data + the budget on uniform pairs"


@register_agent("mle_gibbs_design")
class MLEGibbsDesignAgent(_DOptimal, MLEGibbsAgent):
    """mle_gibbs at equal labels, the budget spent on a greedy D-optimal design."""

    Config = Pi0TheoryConfig
    description = "mle_gibbs on offline data + the budget on a D-optimal design (features only)"


@register_agent("pessimistic_gibbs_design")
class PessimisticGibbsDesignAgent(_DOptimal, PessimisticGibbsAgent):
    """pessimistic_gibbs at equal labels, the budget spent on a greedy D-optimal design."""

    Config = Pi0TheoryConfig
    description = "pessimistic_gibbs on offline data + the budget on a D-optimal design"


@register_agent("thompson_gibbs")
class ThompsonGibbsAgent(TheoryAgent):
    """Double Thompson sampling from the Laplace posterior of the BT fit (module docstring)."""

    Config = GSHFConfig
    description = "double Thompson sampling from the Laplace posterior of theta (linear envs)"

    def n_rounds(self) -> int:
        return self.config.iterations

    def setup(self) -> None:
        self.m = self.config.per_round(self.instance)

    @property
    def uses_offline_data(self) -> bool:  # type: ignore[override]
        return bool(self.config.use_offline)

    def all_data(self) -> PreferenceData:
        return (self.offline if self.uses_offline_data else PreferenceData()) + self.data

    def collect(self, t: int) -> PreferenceData:
        mean, cov = laplace_posterior(self.differences(self.all_data()), self.config.ridge)
        rng = np.random.default_rng(self.seed_for(5, t))
        cat, eta = self.instance.catalog, self.instance.eta
        chol = np.linalg.cholesky(cov + 1e-12 * np.eye(len(mean)))

        def draw_response(x: int) -> int:
            theta = mean + chol @ rng.standard_normal(len(mean))
            logp = gibbs_log_probs(self.log_ref[x:x + 1], self.phi[x:x + 1] @ theta, eta)[0]
            return int(rng.choice(len(logp), p=np.exp(logp) / np.exp(logp).sum()))

        def propose(prompts: list[str]) -> tuple[list[str], list[str]]:
            a1, a2 = [], []
            for x in cat.prompt_ids(prompts):
                first = draw_response(int(x))
                second = first
                for _ in range(8):  # double TS: a second, different draw
                    second = draw_response(int(x))
                    if second != first:
                        break
                a1.append(cat.responses[first])
                a2.append(cat.responses[second])
            return a1, a2

        return self.collector.pairs(self.m, self.seed_for(1, t), propose)

    def fit(self, t: int, new: PreferenceData | None) -> dict[str, float]:
        mean, _ = laplace_posterior(self.differences(self.all_data()), self.config.ridge)
        self.policy = TabularPolicy(self.instance.catalog, torch.from_numpy(
            gibbs_log_probs(self.log_ref, self.phi @ mean, self.instance.eta)))
        self.global_step += 1
        return {"train/theta_norm": float(np.linalg.norm(mean))}

