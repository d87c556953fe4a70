"""The paper's closed forms on finite tables, written once.

Tables are ``(N, K)`` arrays: one row per prompt, one column per candidate response.

* :func:`log_normalize`: log-softmax of each row (a stable log-sum-exp).
* :func:`gibbs_log_probs`: the Gibbs policy pi_r(a|x) ∝ pi0(a|x) exp(r(x, a)/eta), the
  maximiser of E_pi[r] − eta·KL(pi || pi0) (Xiong et al. 2024, Eq. (3)).
* :func:`soft_value`: its value eta · log E_{a~pi0} exp(r(x, a)/eta) per prompt, which is
  J(pi_r) for the reward r.
* :func:`kl_rows`: KL(p || q) per row, with 0·log 0 = 0.
* :func:`best_of_n_table`: the exact distribution of best-of-n sampling.
"""

from __future__ import annotations

import numpy as np

__all__ = ["logsumexp", "log_normalize", "gibbs_log_probs", "soft_value", "kl_rows",
           "best_of_n_table"]


def logsumexp(z: np.ndarray) -> np.ndarray:
    """log sum_a exp(z[..., a]) over the last axis, stably; shape ``z.shape[:-1]``."""
    z = np.asarray(z, dtype=np.float64)
    m = z.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True)))[..., 0]


def log_normalize(z: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax: ``z - logsumexp(z)``."""
    z = np.asarray(z, dtype=np.float64)
    return z - logsumexp(z)[..., None]


def gibbs_log_probs(log_ref: np.ndarray, reward: np.ndarray, eta: float) -> np.ndarray:
    """log pi_r(a|x) = log pi0(a|x) + r(x, a)/eta − log Z(x), shape ``(N, K)`` (Eq. (3))."""
    return log_normalize(np.asarray(log_ref) + np.asarray(reward) / eta)


def soft_value(log_ref: np.ndarray, reward: np.ndarray, eta: float) -> np.ndarray:
    """eta · log sum_a pi0(a|x) exp(r(x, a)/eta), shape ``(N,)``: J of the Gibbs policy."""
    return eta * logsumexp(np.asarray(log_ref) + np.asarray(reward) / eta)


def kl_rows(p: np.ndarray, log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """KL(p || q) of each row, ``sum_a p (log p − log q)`` with 0·log 0 = 0; shape ``(N,)``."""
    return np.where(p > 0, p * (log_p - log_q), 0.0).sum(axis=-1)


def best_of_n_table(probs: np.ndarray, rewards: np.ndarray, n: int) -> np.ndarray:
    """The exact distribution of best-of-n sampling, one row per prompt.

    Draw n responses from ``probs`` (rows sum to 1) and keep the one with the
    highest reward (ties: the first drawn). With F(a) the mass of responses whose
    reward is below a's and m the mass of a's tie group G, the kept response lies
    in G with probability (F + m)^n - F^n, and is a in G with probability
    proportional to probs(a). Returns an array shaped like ``probs``.
    """
    p = np.asarray(probs, dtype=np.float64)
    r = np.asarray(rewards, dtype=np.float64)
    out = np.zeros_like(p)
    for x in range(p.shape[0]):
        below = 0.0
        for level in np.unique(r[x]):
            g = r[x] == level
            m = p[x, g].sum()
            if m > 0:
                out[x, g] = ((below + m) ** n - below**n) * p[x, g] / m
            below += m
    return out
