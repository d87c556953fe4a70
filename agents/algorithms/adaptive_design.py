"""An adaptive optimal design for the Gibbs objective, on linear envs (issue 20, item 3).

The KL-regularised objective has an exact suboptimality identity: for every policy,
J(pi*) - J(pi) = eta·E_x KL(pi || pi*). For the Gibbs policy of an estimate theta_hat =
theta* + e its second-order expansion is

    J(pi*) - J(Gibbs(theta_hat)) ≈ (1 / 2eta)·e^T W* e,
    W* = E_x Cov_{a~pi*(.|x)} phi(x, a),

and the BT maximum-likelihood error is asymptotically N(0, H^-1) with the Fisher information
H = sum_i sigmoid'(<theta*, z_i>) z_i z_i^T over the labelled differences z_i = phi(x_i, a_i)
- phi(x_i, b_i). So the labels that minimise the expected loss minimise tr(W* H^-1): an
**L-optimal design** (Fedorov 1972; Pukelsheim 2006, §6.5) whose weight is pi*'s feature
covariance and whose information counts each pair by how informative its label is. Both
depend on theta*, which a design fixed in advance cannot know (``mle_gibbs_design`` is
D-optimal with unit weights: it covers every direction and favours pairs far apart, whose
labels are nearly certain); an agent that has labels can plug in what it has learned.
``adaptive_design_gibbs`` (a Bayesian sequential design, Chaloner & Verdinelli 1995, in the
setting of Mukherjee et al. 2024, "Optimal Design for Human Preference Elicitation",
arXiv 2404.13895):

* round 1 spends ``first_share`` of the budget on the greedy D-optimal design of the
  features (no label is needed to choose it);
* each later round takes the Laplace posterior N(theta_MAP, C) of all labels so far
  (:func:`~agents.algorithms.designs.laplace_posterior`, prior N(0, I / ridge)), draws
  ``posterior_samples`` thetas, and averages over them W = E_theta E_x Cov_{Gibbs(theta)} phi
  and the pair weights w(z) = E_theta sigmoid'(<theta, z>) (the posterior expectation of the
  loss weight and of the information, so that one bad estimate does not steer the design);
* for each prompt the env draws, it labels the pair (a, b) with the largest decrease of
  tr(W H^-1) (:func:`l_optimal_pairs`), H = ridge·I + sum w(z_i) z_i z_i^T over the pairs
  labelled and chosen so far;
* the output is Gibbs(theta_MAP) of all the labels: the same estimator as ``mle_gibbs`` and
  the design controls, so that a difference to them is where the labels went.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from agents.algorithms.designs import d_optimal_pairs, laplace_posterior
from agents.algorithms.gshf import TheoryAgent
from agents.base import AgentConfig, check, register_agent
from agents.collect import check_budget
from agents.data import PreferenceData
from rlhf_env.policies.closed_forms import gibbs_log_probs

__all__ = ["AdaptiveDesignConfig", "AdaptiveDesignAgent", "gibbs_feature_covariance",
           "l_optimal_pairs", "separable", "shrinkage_factor"]


def shrinkage_factor(z: np.ndarray, theta: np.ndarray) -> float:
    """van Houwelingen & le Cessie's (1990) heuristic shrinkage factor of a fitted logistic
    model, (chi2 - d) / chi2 with chi2 = 2 (log L(theta) - log L(0)) the likelihood-ratio
    statistic of the fit and d its parameters: an estimate of the calibration slope the fit
    would show on new data (1: no overfitting; Riley et al. 2020, BMJ, size data for 0.9).
    0 when the fit explains no more than d parameters would by chance."""
    chi2 = 2.0 * float(np.sum(np.log(2.0) - np.logaddexp(0.0, -(z @ theta))))
    return max(0.0, (chi2 - z.shape[1]) / chi2) if chi2 > 0 else 0.0


def separable(z: np.ndarray) -> bool:
    """Whether some theta has <theta, z_i> > 0 for every row (a chosen-minus-rejected
    difference): the feasibility LP  z_i^T theta >= 1  for all i (scale-free, so any strict
    separator can be rescaled to it). No rows: True (nothing pins the scale down)."""
    from scipy.optimize import linprog

    if len(z) == 0:
        return True
    res = linprog(np.zeros(z.shape[1]), A_ub=-z, b_ub=-np.ones(len(z)),
                  bounds=[(None, None)] * z.shape[1], method="highs")
    return res.status == 0


def gibbs_feature_covariance(log_ref: np.ndarray, phi: np.ndarray, thetas: np.ndarray,
                             eta: float) -> np.ndarray:
    """W = mean over ``thetas`` (S, d) and prompts of Cov_{a~Gibbs(theta)(.|x)} phi(x, a);
    ``(d, d)``. ``log_ref`` (N, K), ``phi`` (N, K, d)."""
    d = phi.shape[-1]
    w = np.zeros((d, d))
    for theta in np.atleast_2d(thetas):
        p = np.exp(gibbs_log_probs(log_ref, phi @ theta, eta))  # (N, K)
        mu = np.einsum("nk,nkd->nd", p, phi)
        w += np.einsum("nk,nkd,nke->de", p, phi, phi) - mu.T @ mu
    return w / (len(np.atleast_2d(thetas)) * len(phi))


def l_optimal_pairs(prompt_ids: np.ndarray, phi: np.ndarray, h: np.ndarray, w: np.ndarray,
                    thetas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy L-optimal pairs: for each prompt in turn, the pair (a, b) whose difference z
    with weight c = mean_theta sigmoid'(<theta, z>) most decreases tr(W H^-1):

        tr(W H^-1) - tr(W (H + c z z^T)^-1) = c z^T H^-1 W H^-1 z / (1 + c z^T H^-1 z),

    then H += c z z^T (Sherman-Morrison on the inverse). Ties go to the first pair in (a, b)
    order. ``h`` (d, d) the information so far, ``w`` (d, d) the loss weight, ``thetas``
    (S, d) the posterior draws."""
    inv = np.linalg.inv(h)
    k = phi.shape[1]
    ia, ib = np.triu_indices(k, 1)
    thetas = np.atleast_2d(thetas)
    out_a, out_b = [], []
    for x_id in prompt_ids:
        z = phi[x_id, ia] - phi[x_id, ib]  # (pairs, d)
        s = 1.0 / (1.0 + np.exp(-(z @ thetas.T)))  # (pairs, S)
        c = np.mean(s * (1.0 - s), axis=1)
        iz = z @ inv  # rows H^-1 z
        gain = c * np.einsum("pd,de,pe->p", iz, w, iz) / (1.0 + c * np.einsum("pd,pd->p", iz, z))
        j = int(np.argmax(gain))
        v = np.sqrt(c[j]) * z[j]
        iv = inv @ v
        inv -= np.outer(iv, iv) / (1.0 + v @ iv)
        out_a.append(int(ia[j]))
        out_b.append(int(ib[j]))
    return np.array(out_a), np.array(out_b)


@dataclasses.dataclass
class AdaptiveDesignConfig(AgentConfig):
    """``iterations`` rounds of ``prompts_per_iteration`` labels (None: the budget spread
    evenly over the rounds after the first); ``first_share``: the share of the budget the
    first, D-optimal round spends; ``posterior_samples``: thetas averaged in each later
    round's design; ``ridge``: the prior precision (and the MLE's L2 weight);
    ``min_shrinkage``: the heuristic shrinkage factor a fit needs before a round is adaptive
    (0: always adaptive after the first round; module docstring)."""

    iterations: int = 4
    first_share: float = 0.25
    posterior_samples: int = 32
    ridge: float = 0.1
    prompts_per_iteration: int | None = None
    min_shrinkage: float = 0.8

    def check(self) -> None:
        super().check()
        check(self.iterations >= 2, f"iterations must be >= 2 (a D-optimal round, then "
                                    f"adaptive ones), got {self.iterations!r}")
        check(0 < self.first_share < 1, f"first_share must be in (0, 1), got {self.first_share!r}")
        check(self.posterior_samples >= 1,
              f"posterior_samples must be >= 1, got {self.posterior_samples!r}")
        check(self.ridge > 0, f"ridge must be > 0, got {self.ridge!r}")
        m = self.prompts_per_iteration
        check(m is None or m >= 1, f"prompts_per_iteration must be >= 1, got {m!r}")
        check(0 <= self.min_shrinkage < 1,
              f"min_shrinkage must be in [0, 1), got {self.min_shrinkage!r}")

    def round_sizes(self, instance) -> list[int]:
        """Labels per round: ``first_share`` of the budget, then the rest evenly."""
        if self.prompts_per_iteration:
            return [self.prompts_per_iteration] * self.iterations
        budget = instance.query_budget
        first = max(1, int(round(self.first_share * budget)))
        rest, extra = divmod(budget - first, self.iterations - 1)
        return [first] + [rest + (i < extra) for i in range(self.iterations - 1)]

    def check_env(self, instance) -> None:
        sizes = self.round_sizes(instance)
        check_budget("adaptive_design_gibbs", 1, sum(sizes), instance)
        check(min(sizes) >= 1, f"a query budget of {instance.query_budget} is too small for "
                               f"{self.iterations} rounds")


@register_agent("adaptive_design_gibbs")
class AdaptiveDesignAgent(TheoryAgent):
    """Sequential Bayesian L-optimal design for the Gibbs objective (module docstring)."""

    Config = AdaptiveDesignConfig
    description = ("adaptive L-optimal design for the Gibbs objective: D-optimal first, then "
                   "pairs that most cut the posterior's expected KL loss (linear envs)")

    def n_rounds(self) -> int:
        return self.config.iterations

    def setup(self) -> None:
        self.sizes = self.config.round_sizes(self.instance)
        self.adaptive, self.shrinkage = False, float("nan")

    def design(self, t: int, pid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The round's pairs for the prompts ``pid`` (round 0: D-optimal; later: L-optimal)."""
        c, d = self.config, self.phi.shape[-1]
        z = self.differences(self.offline + self.data)
        self.adaptive, self.shrinkage = t > 0 and not separable(z), float("nan")
        if self.adaptive:
            mean, cov = laplace_posterior(z, c.ridge)
            self.shrinkage = shrinkage_factor(z, mean)
            self.adaptive = self.shrinkage >= c.min_shrinkage
        if not self.adaptive:
            a, b, _ = d_optimal_pairs(pid, self.phi, c.ridge * np.eye(d) + z.T @ z)
            return a, b
        rng = np.random.default_rng(self.seed_for(5, t))
        chol = np.linalg.cholesky(cov + 1e-12 * np.eye(d))
        thetas = mean + rng.standard_normal((c.posterior_samples, d)) @ chol.T
        w = gibbs_feature_covariance(self.log_ref, self.phi, thetas, self.instance.eta)
        s = 1.0 / (1.0 + np.exp(-(z @ thetas.T)))
        h = c.ridge * np.eye(d) + (z * np.mean(s * (1 - s), axis=1)[:, None]).T @ z
        return l_optimal_pairs(pid, self.phi, h, w, thetas)

    def collect(self, t: int) -> PreferenceData:
        cat = self.instance.catalog

        def propose(prompts: list[str]) -> tuple[list[str], list[str]]:
            a, b = self.design(t, np.asarray(cat.prompt_ids(prompts)))
            return [cat.responses[i] for i in a], [cat.responses[j] for j in b]

        return self.collector.pairs(self.sizes[t], self.seed_for(1, t), propose)

    def fit(self, t: int, new: PreferenceData | None) -> dict[str, float]:
        rm = self.fit_reward(self.offline + self.data)
        self.policy = self.gibbs(rm.table())
        self.global_step += 1
        return {"train/theta_norm": float(np.linalg.norm(rm.theta)),
                "train/adaptive_round": float(self.adaptive),
                "train/shrinkage_factor": self.shrinkage}
