"""The paper's theoretical algorithms on envs with known features (Xiong et al. 2024, ICML).

For the linear BT bandit, r(x, a) = <theta, phi(x, a)>, every policy here is a
Gibbs policy in closed form, pi_r(a|x) ∝ pi0(a|x) exp(r(x, a) / eta), the
maximiser of E_pi[r] − eta·KL(pi || pi0) (Eq. (3)). theta is the ridge MLE of
the BT likelihood (Eq. (5)) and Sigma = lambda·I + sum_i (phi(x_i, a_i^1) −
phi(x_i, a_i^2))(...)^T the design matrix of the data (Eq. (6)).

* ``mle_gibbs``: pi = Gibbs(r_MLE) on the offline data (no pessimism).
* ``pessimistic_gibbs``: Algorithm 1 (offline), Option I: the lower confidence
  bound r_hat(x, a) = r_MLE(x, a) − beta·||phi(x, a) − nu(x)||_{Sigma^-1},
  nu(x) = E_{a~pi0} phi(x, a), then pi = Gibbs(r_hat).
* ``gshf_online``: Algorithm 2 (online, GSHF with batch exploration). For t = 1..T:
  the main agent pi_t^1 = Gibbs(r_MLE of the data so far); the enhancer pi_t^2
  maximises the relative uncertainty Gamma(pi') = beta·||E_x[phi(x, pi_t^1) −
  phi(x, pi')]||_{Sigma^-1} subject to eta·E_x KL(pi' || pi_t^1) <= Gamma(pi')
  (Eq. (9)); m pairs (a1 ~ pi_t^1, a2 ~ pi_t^2) are labelled through the env. The
  output is the main agent of the final data. The enhancer is searched over the
  family pi' ∝ pi_t^1 · exp(s·<u, phi>), u ± the eigenvectors of Sigma^-1 (the
  directions the data know least), s on a geometric grid; pi_t^1 itself (Gamma 0)
  is always feasible.
* ``gshf_hybrid``: the same, starting from the offline data (Algorithm 3's setting).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from agents.base import Agent, AgentConfig, check, register_agent
from agents.checkpoint import Checkpointer
from agents.reward_models import LinearBTReward
from agents.trainer import PreferenceData
from rlhf_env.policies import TabularPolicy

__all__ = ["gibbs_table", "TheoryConfig", "MLEGibbsAgent", "PessimisticGibbsAgent",
           "GSHFConfig", "GSHFOnlineAgent", "GSHFHybridAgent", "enhancer_search"]


def gibbs_table(log_ref: np.ndarray, reward: np.ndarray, eta: float) -> np.ndarray:
    """log pi_r(a|x) = log pi0(a|x) + r(x, a)/eta − log Z(x), shape ``(N, K)`` (Eq. (3))."""
    z = log_ref + reward / eta
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def _needs_features(env: Any, name: str) -> None:
    check(hasattr(env, "features") and hasattr(env, "catalog"),
          f"{name} needs an env with known features phi(x, a) (LinearBT-v0 and its variants)")


@dataclasses.dataclass
class TheoryConfig(AgentConfig):
    """``ridge``: lambda of the MLE and of Sigma; ``beta``: the confidence-bound width."""

    ridge: float = 0.1
    beta: float = 1.0

    def validate(self, env: Any) -> None:
        super().validate(env)
        check(self.ridge > 0, f"ridge must be > 0, got {self.ridge!r}")
        check(self.beta >= 0, f"beta must be >= 0, got {self.beta!r}")


class _TheoryAgent(Agent):
    Config = TheoryConfig

    def __init__(self, env: Any, **hparams: Any) -> None:
        super().__init__(env, **hparams)
        _needs_features(self.u, self.name)
        self.log_ref = self.u.reference.log_probs_table().detach().double().numpy()
        self.phi = np.asarray(self.u.features, dtype=np.float64)  # (N, K, d)

    def _policy(self, reward: np.ndarray) -> TabularPolicy:
        return TabularPolicy(self.u.catalog, torch.from_numpy(gibbs_table(self.log_ref, reward,
                                                                          self.u.eta)))

    def _offline(self) -> PreferenceData:
        ds = self.u.offline_dataset
        return PreferenceData.from_dataset(ds) if ds is not None else PreferenceData()

    def _bonus(self, rm: LinearBTReward) -> np.ndarray:
        """||phi(x, a) − nu(x)||_{Sigma^-1} for every (x, a), nu(x) = E_{pi0} phi(x, .)."""
        nu = np.einsum("nk,nkd->nd", np.exp(self.log_ref), self.phi)
        diff = self.phi - nu[:, None, :]
        inv = np.linalg.inv(rm.sigma)
        return np.sqrt(np.maximum(np.einsum("nkd,de,nke->nk", diff, inv, diff), 0.0))

    def _finish(self, callback: Any, info: dict[str, Any]) -> None:
        self.logger.log({"train/pairs": info.get("pairs", 0)}, 0)
        if callback is not None:
            callback(self, {"iteration": 0, **info})
        self.logger.close()


@register_agent("mle_gibbs")
class MLEGibbsAgent(_TheoryAgent):
    """Gibbs policy of the BT maximum-likelihood reward on the offline data (no pessimism)."""

    description = "Gibbs policy of the offline BT MLE, closed form (Xiong et al. 2024, Eq. (5))"

    def learn(self, callback: Any = None, resume_from: Any = None) -> MLEGibbsAgent:
        data = self._offline()
        check(len(data) > 0, "mle_gibbs needs an offline dataset (setting='offline' or 'hybrid')")
        rm = LinearBTReward(self.u, data.without_ties()[0], ridge=self.config.ridge)
        self.policy = self._policy(rm.table())
        self._finish(callback, {"pairs": len(data)})
        return self


@register_agent("pessimistic_gibbs")
class PessimisticGibbsAgent(_TheoryAgent):
    """Algorithm 1, Option I: Gibbs policy of the lower confidence bound of the reward."""

    description = "offline pessimism: Gibbs policy of r_MLE − beta·||phi − nu||_{Σ^-1} (Alg. 1)"

    def learn(self, callback: Any = None, resume_from: Any = None) -> PessimisticGibbsAgent:
        data = self._offline()
        check(len(data) > 0,
              "pessimistic_gibbs needs an offline dataset (setting='offline' or 'hybrid')")
        rm = LinearBTReward(self.u, data.without_ties()[0], ridge=self.config.ridge)
        self.policy = self._policy(rm.table() - self.config.beta * self._bonus(rm))
        self._finish(callback, {"pairs": len(data)})
        return self


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
            z = log_pi1 + s * proj
            z = z - z.max(axis=1, keepdims=True)
            logq = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            q = np.exp(logq)
            g = mean1 - np.einsum("nk,nkd->d", q, phi) / len(q)
            gamma = beta * float(np.sqrt(max(g @ inv @ g, 0.0)))
            kl = float(np.mean((q * (logq - log_pi1)).sum(axis=1)))
            if eta * kl <= gamma and gamma > best[1]:
                best = (logq, gamma, kl)
    return best


@dataclasses.dataclass
class GSHFConfig(TheoryConfig):
    """T iterations of m queries; ``use_offline``: start from the offline data (hybrid)."""

    iterations: int = 8
    prompts_per_iteration: int | None = None  # m; default: the budget divided by iterations
    use_offline: bool = False
    n_scales: int = 12
    checkpoint_dir: str | None = None

    def validate(self, env: Any) -> None:
        super().validate(env)
        check(isinstance(self.iterations, int) and self.iterations >= 1,
              f"iterations must be an int >= 1, got {self.iterations!r}")
        m = self.prompts_per_iteration
        need = self.iterations * (m or 1)
        check(env.queries_left >= need,
              f"{need} queries needed for {self.iterations} iterations but {env.queries_left} "
              "are left; make the env with setting='online' or 'hybrid' and a query_budget")
        check(self.n_scales >= 1, f"n_scales must be >= 1, got {self.n_scales!r}")


@register_agent("gshf_online")
class GSHFOnlineAgent(_TheoryAgent):
    """Algorithm 2: online GSHF with a main agent and an uncertainty-seeking enhancer."""

    Config = GSHFConfig
    description = "online GSHF: Gibbs(MLE) vs the max-uncertainty enhancer (Alg. 2)"
    default_use_offline = False

    def learn(self, callback: Any = None, resume_from: str | Path | None = None) -> Any:
        c = self.config
        m = c.prompts_per_iteration or self.u.queries_left // c.iterations
        venv = self.u.make_vec(m)
        data = self._offline() if (c.use_offline or self.default_use_offline) else PreferenceData()
        folder = resume_from or c.checkpoint_dir
        ckpt = Checkpointer(folder) if folder else None
        start = 0
        if resume_from is not None:
            ckpt = Checkpointer.for_resume(resume_from)
            start = ckpt.state()["completed"]
            for t in range(start):
                pairs = ckpt.load_pairs(t)
                data.extend(pairs.prompts, pairs.chosen, pairs.rejected)
        scales = np.geomspace(0.1, 20.0, c.n_scales)
        bar = tqdm(range(start, c.iterations), desc=self.name, initial=start, total=c.iterations,
                   disable=self.progress_disabled)
        for t in bar:
            rm = self._fit(data)
            log_pi1 = gibbs_table(self.log_ref, rm.table(), self.u.eta)
            log_pi2, gamma, kl = enhancer_search(log_pi1, self.phi, rm.sigma, self.u.eta, c.beta,
                                                 scales)
            new = ckpt.load_pairs(t) if ckpt else None  # paid for before an interruption
            if new is None:
                obs, _ = venv.reset(seed=self.seed_for(1, t))
                prompts = list(obs["prompt"])
                gen = self.generator(2, t)
                pi1 = TabularPolicy(self.u.catalog, torch.from_numpy(log_pi1))
                pi2 = TabularPolicy(self.u.catalog, torch.from_numpy(log_pi2))
                a1 = [r[0] for r in pi1.sample(prompts, n=1, generator=gen)]
                a2 = [r[0] for r in pi2.sample(prompts, n=1, generator=gen)]
                _, _, _, _, info = venv.step((a1, a2))
                new = PreferenceData(prompts, list(info["final_info"]["chosen"]),
                                     list(info["final_info"]["rejected"]))
                self.queries_spent += len(prompts)
                if ckpt is not None:
                    ckpt.save_pairs(t, new)
            data.extend(new.prompts, new.chosen, new.rejected)
            self.policy = self._policy(self._fit(data).table())
            self.global_step += 1
            self.logger.log({"oracle/queries_used": self.u.queries_used, "train/pairs": len(data),
                             "train/enhancer_uncertainty": gamma, "train/enhancer_kl": kl,
                             "train/iteration": t}, self.global_step)
            if ckpt is not None:
                ckpt.complete(t, self.policy, global_step=self.global_step,
                              queries_spent=self.queries_spent)
            bar.set_postfix(queries=self.u.queries_used, uncertainty=f"{gamma:.3f}")
            if callback is not None and callback(self, {"iteration": t, "pairs": len(data),
                                                        "uncertainty": gamma}) is False:
                break
        bar.close()
        self.policy = self._policy(self._fit(data).table())
        self.logger.close()
        return self

    def _fit(self, data: PreferenceData) -> LinearBTReward:
        return LinearBTReward(self.u, data.without_ties()[0], ridge=self.config.ridge)


@register_agent("gshf_hybrid")
class GSHFHybridAgent(GSHFOnlineAgent):
    """GSHF starting from the offline data (the hybrid setting)."""

    description = "hybrid GSHF: online exploration on top of the offline data"
    default_use_offline = True
