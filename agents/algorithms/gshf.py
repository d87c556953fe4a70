"""The paper's theoretical algorithms on envs with known features (Xiong et al. 2024, ICML).

For the linear BT bandit, r(x, a) = <theta, phi(x, a)>, every policy here is a
Gibbs policy in closed form, pi_r(a|x) ∝ pi0(a|x) exp(r(x, a) / eta), the
maximiser of E_pi[r] − eta·KL(pi || pi0) (Eq. (3)). theta is the ridge MLE of
the BT likelihood (Eq. (5)) and Sigma = lambda·I + sum_i (phi(x_i, a_i^1) −
phi(x_i, a_i^2))(...)^T the design matrix of the data (Eq. (6)).

* ``mle_gibbs``: pi = Gibbs(r_MLE) on the offline data (no pessimism).
* ``pessimistic_gibbs``: the offline algorithm (Algorithm 1) with a *pointwise*
  lower confidence bound r_hat(x, a) = r_MLE(x, a) − beta·||phi(x, a) − nu(x)||_{Sigma^-1},
  nu(x) = E_{a~pi0} phi(x, a), then pi = Gibbs(r_hat). This is **not** the paper's
  Option I verbatim: Option I penalises the policy-level uncertainty
  beta·||E_x[phi(x, pi) − nu(x)]||_{Sigma^-1} inside the argmax over policies,
  which has no Gibbs closed form; the pointwise bound is its per-action
  relaxation (each action pays for its own uncertainty), which keeps the policy
  a Gibbs policy in closed form.
* ``gshf_online``: Algorithm 2 (online, GSHF with batch exploration). For t = 1..T:
  the main agent pi_t^1 = Gibbs(r_MLE of the data so far); the enhancer pi_t^2
  maximises the relative uncertainty Gamma(pi') = beta·||E_x[phi(x, pi_t^1) −
  phi(x, pi')]||_{Sigma^-1} subject to eta·E_x KL(pi' || pi_t^1) <= Gamma(pi')
  (Eq. (9)); m pairs (a1 ~ pi_t^1, a2 ~ pi_t^2) are labelled through the env. The
  enhancer is searched over the family pi' ∝ pi_t^1 · exp(s·<u, phi>), u ± the
  eigenvectors of Sigma^-1 (the directions the data know least), s on a geometric
  grid; pi_t^1 itself (Gamma 0) is always feasible, so beta = 0 turns the
  enhancer off (both responses from pi_t^1).
  **The output is the last iterate**, the main agent Gibbs(r_MLE) of all the data.
  The paper's guarantee is for the best of the T main agents, which an agent
  could only pick with evaluations it cannot make; the last iterate has seen the
  most data.
* ``gshf_hybrid``: the same, starting from the offline data (Algorithm 3's setting).
* ``mle_gibbs_pi0``, ``pessimistic_gibbs_pi0``: the offline learners at *equal
  labels*: they first spend the query budget (``query_pairs``, default all of it)
  on pairs of pi0 samples labelled through the env, then fit on offline + queried
  pairs. "Offline MLE on as many pi0 pairs as the online agents spend" is one run.

**The confidence width beta** (``confidence_width``) is used as given with
``width_rule="fixed"``. ``width_rule="wald"`` sets it from the data by a
documented rule instead of a tuned constant: beta = z_{level} / sqrt(kappa_hat),
kappa_hat = (1/n) sum_i sigmoid'(<theta_MLE, x_i>) the mean curvature of the BT
link at the MLE over the n pairs x_i = phi_c − phi_r (1/4, its maximum, without
data), z_{level} the standard normal quantile of ``confidence_level`` (0.95 ->
1.645). Why: the MLE's asymptotic covariance is the inverse Fisher information
H^-1, H = sum_i sigmoid'(.) x_i x_i^T ≈ kappa_hat·(Sigma − lambda I), so
beta·||v||_{Sigma^-1} is a one-sided Wald bound at that level on <theta_MLE −
theta*, v> for any direction v. The paper's width (Theorem 1) has the same form
with a worst-case curvature and a union over directions; it is far too wide to
use. The rule is computed afresh each time the reward is fitted (each GSHF round).
"""

from __future__ import annotations

import dataclasses
from statistics import NormalDist
from typing import Any, ClassVar

import numpy as np
import torch

from agents.algorithms.best_of_n import ReferencePairs, query_reference_pairs
from agents.base import AgentConfig, check, register_agent
from agents.collect import check_budget
from agents.data import PreferenceData
from agents.loop import Agent
from agents.reward_models import LinearBTReward
from rlhf_env.policies import TabularPolicy
from rlhf_env.policies.closed_forms import gibbs_log_probs, kl_rows, log_normalize

__all__ = ["TheoryConfig", "OfflineTheoryConfig", "MLEGibbsAgent", "PessimisticGibbsAgent",
           "MLEGibbsPi0Agent", "PessimisticGibbsPi0Agent", "GSHFConfig", "GSHFOnlineAgent",
           "GSHFHybridAgent", "enhancer_search", "uncertainty_bonus", "wald_width", "WIDTH_RULES"]

WIDTH_RULES = ("fixed", "wald")


@dataclasses.dataclass
class TheoryConfig(AgentConfig):
    """``ridge``: lambda of the MLE and of Sigma; ``confidence_width``: beta, the width of
    the confidence bound (``beta`` before version 0.2), used with ``width_rule="fixed"``;
    ``width_rule="wald"`` sets beta from the data at ``confidence_level`` instead (module
    docstring)."""

    ridge: float = 0.1
    confidence_width: float = 1.0
    width_rule: str = "fixed"
    confidence_level: float = 0.95

    ALIASES: ClassVar[dict[str, str]] = {"beta": "confidence_width"}

    def check(self) -> None:
        super().check()
        check(self.ridge > 0, f"ridge must be > 0, got {self.ridge!r}")
        check(self.confidence_width >= 0,
              f"confidence_width must be >= 0, got {self.confidence_width!r}")
        check(self.width_rule in WIDTH_RULES,
              f"width_rule must be one of {WIDTH_RULES}, got {self.width_rule!r}")
        check(0.5 <= self.confidence_level < 1,
              f"confidence_level must be in [0.5, 1), got {self.confidence_level!r}")


@dataclasses.dataclass
class OfflineTheoryConfig(ReferencePairs, TheoryConfig):
    """:class:`TheoryConfig` and ``query_pairs`` (:class:`ReferencePairs`; default 0)."""

    query_pairs: int | None = 0

    def check_env(self, instance: Any) -> None:
        self.check_data(instance, "the offline learner",
                        "this agent needs preference data: an offline dataset (setting='offline' "
                        "or 'hybrid') or query_pairs > 0 to label pairs of pi0 samples")


@dataclasses.dataclass
class Pi0TheoryConfig(OfflineTheoryConfig):
    """As :class:`OfflineTheoryConfig`, spending the whole query budget by default."""

    query_pairs: int | None = None


def wald_width(x: np.ndarray, theta: np.ndarray, level: float = 0.95) -> float:
    """beta = z_level / sqrt(kappa_hat), the width rule of the module docstring.

    ``x``: ``(n, d)`` feature differences phi_c − phi_r; ``theta``: the MLE. kappa_hat is
    the mean of sigmoid'(<theta, x_i>) = s (1 − s) over the pairs (1/4 with no pairs).
    """
    z = NormalDist().inv_cdf(level)
    if len(x) == 0:
        return z / np.sqrt(0.25)
    s = 1.0 / (1.0 + np.exp(-(np.asarray(x) @ theta)))
    return float(z / np.sqrt(max(float(np.mean(s * (1.0 - s))), 1e-12)))


def uncertainty_bonus(phi: np.ndarray, log_ref: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """||phi(x, a) − nu(x)||_{Sigma^-1} for every (x, a), nu(x) = E_{pi0} phi(x, .); ``(N, K)``."""
    nu = np.einsum("nk,nkd->nd", np.exp(log_ref), phi)
    diff = phi - nu[:, None, :]
    inv = np.linalg.inv(sigma)
    return np.sqrt(np.maximum(np.einsum("nkd,de,nke->nk", diff, inv, diff), 0.0))


class TheoryAgent(Agent):
    """Agents in closed form on a linear env: Gibbs policies of a fitted linear reward."""

    Config = TheoryConfig
    kinds = ("linear",)

    def validate(self) -> None:
        check(self.instance.kind == "linear",
              f"{self.name} needs an env with known features phi(x, a) (a linear env such as "
              f"LinearBT-v0); {self.instance.name} is {self.instance.kind}")
        self.log_ref = self.instance.reference.log_probs_table().detach().double().numpy()
        self.phi = np.asarray(self.instance.features, dtype=np.float64)  # (N, K, d)

    def gibbs(self, reward: np.ndarray) -> TabularPolicy:
        """The Gibbs policy pi0 exp(reward / eta), normalised (Eq. (3))."""
        return TabularPolicy(self.instance.catalog, torch.from_numpy(
            gibbs_log_probs(self.log_ref, reward, self.instance.eta)))

    def fit_reward(self, data: PreferenceData) -> LinearBTReward:
        return LinearBTReward(self.instance, data.without_ties()[0], ridge=self.config.ridge)

    def width(self, rm: LinearBTReward, data: PreferenceData) -> float:
        """beta: ``confidence_width``, or the Wald rule on ``data`` at the fitted theta."""
        c = self.config
        if c.width_rule == "fixed":
            return c.confidence_width
        return wald_width(self.differences(data), rm.theta, c.confidence_level)

    def differences(self, data: PreferenceData) -> np.ndarray:
        """phi(x, chosen) - phi(x, rejected) for each untied pair of ``data``; ``(n, d)``."""
        data = data.without_ties()[0]
        cat = self.instance.catalog
        pid = cat.prompt_ids(data.prompts)
        if not len(pid):
            return np.zeros((0, self.phi.shape[-1]))
        return (self.phi[pid, cat.response_ids(data.chosen)]
                - self.phi[pid, cat.response_ids(data.rejected)])


class OfflineTheoryAgent(TheoryAgent):
    """Fits on the offline data plus ``query_pairs`` labelled pairs of pi0 samples."""

    Config = OfflineTheoryConfig

    def collect(self, t: int) -> PreferenceData | None:
        return query_reference_pairs(self, self.config.pairs_to_query(self.instance))

    def reward_estimate(self, rm: LinearBTReward, data: PreferenceData
                        ) -> tuple[np.ndarray, dict[str, float]]:
        """The ``(N, K)`` reward the policy is the Gibbs policy of, and metrics to log."""
        raise NotImplementedError

    def fit(self, t: int, new: PreferenceData | None) -> dict[str, float]:
        data = self.offline + self.data
        reward, metrics = self.reward_estimate(self.fit_reward(data), data)
        self.policy = self.gibbs(reward)
        self.global_step += 1
        return {"train/offline_pairs": len(self.offline), "train/queried_pairs": len(self.data),
                **metrics}


@register_agent("mle_gibbs")
class MLEGibbsAgent(OfflineTheoryAgent):
    """Gibbs policy of the BT maximum-likelihood reward on the offline data (no pessimism)."""

    description = "Gibbs policy of the offline BT MLE, closed form (Xiong et al. 2024, Eq. (5))"

    def reward_estimate(self, rm: LinearBTReward, data: PreferenceData
                        ) -> tuple[np.ndarray, dict[str, float]]:
        return rm.table(), {}


@register_agent("pessimistic_gibbs")
class PessimisticGibbsAgent(OfflineTheoryAgent):
    """Algorithm 1 with a pointwise lower confidence bound: Gibbs policy of the LCB (not
    the paper's Option I verbatim; see the module docstring)."""

    description = "offline pessimism: Gibbs policy of r_MLE − beta·||phi − nu||_{Σ^-1} (Alg. 1)"

    def reward_estimate(self, rm: LinearBTReward, data: PreferenceData
                        ) -> tuple[np.ndarray, dict[str, float]]:
        beta = self.width(rm, data)
        bonus = uncertainty_bonus(self.phi, self.log_ref, rm.sigma)
        return rm.table() - beta * bonus, {"train/confidence_width": beta}


@register_agent("mle_gibbs_pi0")
class MLEGibbsPi0Agent(MLEGibbsAgent):
    """mle_gibbs at equal labels: the query budget spent on pairs of pi0 samples first."""

    Config = Pi0TheoryConfig
    description = "mle_gibbs on offline data + the query budget spent on pairs of pi0 samples"


@register_agent("pessimistic_gibbs_pi0")
class PessimisticGibbsPi0Agent(PessimisticGibbsAgent):
    """pessimistic_gibbs at equal labels: the query budget spent on pairs of pi0 samples."""

    Config = Pi0TheoryConfig
    description = "pessimistic_gibbs on offline data + the budget spent on pairs of pi0 samples"


def enhancer_search(log_pi1: np.ndarray, phi: np.ndarray, sigma: np.ndarray, eta: float,
                    beta: float, scales: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The enhancer of Eq. (9) over the family pi' ∝ pi1·exp(s·<u, phi>) (module docstring).

    Returns ``(log pi', Gamma(pi'), E_x KL(pi' || pi1))``, with pi' = pi1 when no member of
    the family is feasible. Expectations over x are uniform over the table's prompts.
    """
    inv = np.linalg.inv(sigma)
    _, vecs = np.linalg.eigh(inv)
    pi1 = np.exp(log_pi1)
    mean1 = np.einsum("nk,nkd->d", pi1, phi) / len(pi1)  # E_x phi(x, pi1)
    best = (log_pi1, 0.0, 0.0)
    for u in np.concatenate([vecs.T, -vecs.T]):
        proj = phi @ u  # (N, K)
        for s in scales:
            logq = log_normalize(log_pi1 + s * proj)
            q = np.exp(logq)
            g = mean1 - np.einsum("nk,nkd->d", q, phi) / len(q)
            gamma = beta * float(np.sqrt(max(g @ inv @ g, 0.0)))
            kl = float(np.mean(kl_rows(q, logq, log_pi1)))
            if eta * kl <= gamma and gamma > best[1]:
                best = (logq, gamma, kl)
    return best


@dataclasses.dataclass
class GSHFConfig(TheoryConfig):
    """T ``iterations`` of m ``prompts_per_iteration`` queries (None: the query budget
    divided by T); ``use_offline``: start from the offline data (hybrid); ``n_scales``: the
    grid of the enhancer search."""

    iterations: int = 8
    prompts_per_iteration: int | None = None
    use_offline: bool = False
    n_scales: int = 12

    def check(self) -> None:
        super().check()
        check(self.iterations >= 1, f"iterations must be >= 1, got {self.iterations!r}")
        m = self.prompts_per_iteration
        check(m is None or m >= 1, f"prompts_per_iteration must be >= 1, got {m!r}")
        check(self.n_scales >= 1, f"n_scales must be >= 1, got {self.n_scales!r}")

    def per_round(self, instance: Any) -> int:
        return self.prompts_per_iteration or instance.query_budget // self.iterations

    def check_env(self, instance: Any) -> None:
        check_budget("gshf", self.iterations, self.per_round(instance), instance)


@register_agent("gshf_online")
class GSHFOnlineAgent(TheoryAgent):
    """Algorithm 2: online GSHF with a main agent and an uncertainty-seeking enhancer."""

    Config = GSHFConfig
    description = "online GSHF: Gibbs(MLE) vs the max-uncertainty enhancer (Alg. 2)"
    default_use_offline = False

    def n_rounds(self) -> int:
        return self.config.iterations

    def setup(self) -> None:
        self.m = self.config.per_round(self.instance)
        self.scales = np.geomspace(0.1, 20.0, self.config.n_scales)
        self.enhancer_stats = (float("nan"),) * 3

    @property
    def uses_offline_data(self) -> bool:  # type: ignore[override]
        return bool(self.config.use_offline or self.default_use_offline)

    def all_data(self) -> PreferenceData:
        use = self.uses_offline_data
        return (self.offline if use else PreferenceData()) + self.data

    def collect(self, t: int) -> PreferenceData:
        eta = self.instance.eta
        data = self.all_data()
        rm = self.fit_reward(data)
        log_pi1 = gibbs_log_probs(self.log_ref, rm.table(), eta)
        beta = self.width(rm, data)
        log_pi2, gamma, kl = enhancer_search(log_pi1, self.phi, rm.sigma, eta, beta, self.scales)
        self.enhancer_stats = (gamma, kl, beta)
        gen = self.generator(2, t)
        pi1 = TabularPolicy(self.instance.catalog, torch.from_numpy(log_pi1))
        pi2 = TabularPolicy(self.instance.catalog, torch.from_numpy(log_pi2))

        def propose(prompts: list[str]) -> tuple[list[str], list[str]]:
            return ([r[0] for r in pi1.sample(prompts, n=1, generator=gen)],
                    [r[0] for r in pi2.sample(prompts, n=1, generator=gen)])

        return self.collector.pairs(self.m, self.seed_for(1, t), propose)

    def fit(self, t: int, new: PreferenceData | None) -> dict[str, float]:
        self.policy = self.gibbs(self.fit_reward(self.all_data()).table())
        self.global_step += 1
        (gamma, kl, beta), self.enhancer_stats = self.enhancer_stats, (float("nan"),) * 3
        return {"train/enhancer_uncertainty": gamma, "train/enhancer_kl": kl,
                "train/confidence_width": beta}


@register_agent("gshf_hybrid")
class GSHFHybridAgent(GSHFOnlineAgent):
    """GSHF starting from the offline data (the hybrid setting)."""

    description = "hybrid GSHF: online exploration on top of the offline data"
    default_use_offline = True
