"""Disjoint linear contextual bandits: LinUCB and linear Thompson sampling, with optional discounting.

Each arm k keeps a ridge regression of reward on context: A_k = l2*I + sum x x^T, b_k = sum r x,
theta_k = A_k^-1 b_k. We store A_k^-1 and theta_k and update them in place, never inverting A:

- one instance: Sherman-Morrison, A^-1 -= (A^-1 x)(A^-1 x)^T / (1 + x^T A^-1 x), O(d^2);
- m instances of one arm at once: the Woodbury block form A^-1 -= U^T (I + U X^T)^-1 U, U = X A^-1,
  the same result computed with matrix-matrix products (BLAS-3);
- theta by recursive least squares, theta += W^T (r - X theta) with W = (I + U X^T)^-1 U, which is
  exactly A'^-1 (b + X^T r) without another pass over A^-1.

`select` caches U = X A^-1 for its contexts; an `update` on the same contexts reuses it, so a
select+update pair reads each A^-1 once instead of twice (at d=4096 reading A^-1 sets the time).

Discounting (`discount` = gamma < 1, D-LinUCB, Russac et al. 2019): every observed instance ages all
statistics by gamma, A_k = l2*I + sum gamma^(t-s) x x^T, b_k = sum gamma^(t-s) r x, an effective memory
of about 1/(1-gamma) instances. The regularizer stays l2*I, so the decay is not a low-rank change of
A: each `update` call recomputes every arm's inverse, O(K d^3) per call instead of O(n d^2), and keeps
the d x d Gram matrices as extra state (2x memory). Batch the updates (one call per round) at large d.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import scipy.linalg

from ._blas import mm, mm_nt, mv, pos_solve, sym_subtract_inplace, vm
from .base import Decision, Policy, check_finite_float, greedy_choice, resolve_dtype
from .gaussian import argmax_probs

# Up to this many elements in all arms' A^-1 together (e.g. K=4, d=512) one-instance products use one
# numpy call (least Python overhead); above it, scipy's BLAS only (see _blas.py for why).
_SMALL = 1 << 20


class _LinearPolicy(Policy):
    """Ridge statistics per arm, shared by LinUCB and LinTS."""

    _state_attrs: ClassVar[tuple[str, ...]] = ("a_inv", "b", "theta", "counts", "gram")

    def __init__(self, n_arms: int, dim: int, alpha: float = 1.0, l2: float = 1.0, discount: float = 1.0,
                 dtype: str = "float64", seed: int | None = 0):
        super().__init__(n_arms, dim, seed)
        self.alpha = check_finite_float("alpha", alpha, low=0.0)
        self.l2 = check_finite_float("l2", l2, low=0.0, low_open=True)
        self.discount = check_finite_float("discount", discount, low=0.0, high=1.0, low_open=True)
        self.dtype = dtype
        self._dtype = resolve_dtype(dtype)
        k, d = self.n_arms, self.dim
        self.a_inv = np.empty((k, d, d), dtype=self._dtype)
        self.a_inv[:] = np.eye(d, dtype=self._dtype) / self.l2
        # sum gamma^(t-s) r x: only needed (and only kept) when discounting; otherwise theta is updated
        # by recursive least squares and b would be redundant work on every update.
        self.b = np.zeros((k, d) if self.discount < 1.0 else (0,), dtype=self._dtype)
        self.theta = np.zeros((k, d), dtype=self._dtype)
        self.counts = np.zeros(k, dtype=np.float64)  # (discounted) number of observations per arm
        # Discounted Gram matrices sum gamma^(t-s) x x^T; only needed (and only allocated) when gamma < 1.
        self.gram = np.zeros((k, d, d) if self.discount < 1.0 else (0,), dtype=self._dtype)
        # (a validated private copy of the last selected contexts, U = X A^-1 as (K, n, d))
        self._cache: tuple[np.ndarray, np.ndarray] | None = None

    def params(self) -> dict[str, Any]:
        """Constructor arguments (JSON-safe) that rebuild an untrained copy of this policy."""
        return {**super().params(), "alpha": self.alpha, "l2": self.l2, "discount": self.discount,
                "dtype": self.dtype}

    def _after_load(self) -> None:
        self._cache = None

    # ----- shared pieces of select -------------------------------------------------------------
    def _mean_var(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x.theta_k and x^T A_k^-1 x for every context and arm, both (n, K) float64; caches X A^-1."""
        if x.shape[0] == 1:
            x0 = x[0]
            if self.a_inv.size <= _SMALL:  # one numpy call; too small to wake numpy's BLAS threads
                u = self.a_inv @ x0
            else:
                u = np.stack([vm(x0, a) for a in self.a_inv])
            self._cache = (x.copy(), u[:, None, :])
            return (self.theta @ x0)[None, :], (u @ x0)[None, :]
        u = np.stack([mm(x, a) for a in self.a_inv])
        self._cache = (x.copy(), u)
        var = np.einsum("knd,nd->nk", u, x)
        return mm(x, np.ascontiguousarray(self.theta.T)), var

    def expected(self, contexts: np.ndarray) -> np.ndarray:
        """x.theta_k for every context and arm, (n, K) float64."""
        x = self._check_contexts(contexts)
        return np.asarray(mm(x, np.ascontiguousarray(self.theta.T)), dtype=np.float64)

    def interval(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(x.theta_k, alpha * sqrt(x^T A_k^-1 x)) for every context and arm: LinUCB's bonus, LinTS's posterior
        scale."""
        mean, var = self._mean_var(self._check_contexts(contexts))
        return np.asarray(mean, dtype=np.float64), np.asarray(self.alpha * self._width(var), dtype=np.float64)

    def _width(self, var: np.ndarray) -> np.ndarray:
        return np.sqrt(np.maximum(var, 0.0), dtype=np.float64)

    # ----- update ------------------------------------------------------------------------------
    def update(self, contexts: np.ndarray, arms: np.ndarray, rewards: np.ndarray) -> None:
        """Add (context, reward) observations to the played arms' ridge statistics."""
        cached = self._cache if self._same_as_cached(contexts) else None
        x, a, r = self._check_feedback(contexts, arms, rewards, checked=None if cached is None else cached[0])
        self._cache = None
        if self.discount < 1.0:
            self._update_discounted(x, a, r)
        elif x.shape[0] == 1:
            self._update_one(x, int(a[0]), float(r[0]), cached)
        else:
            self._update_batch(x, a, r, cached)
        self._on_update(a)

    def _same_as_cached(self, contexts: np.ndarray) -> bool:
        """Whether `contexts` equal the last selected ones (then X A^-1 is known and they are validated)."""
        if self._cache is None:
            return False
        ref = self._cache[0]
        try:
            x = np.asarray(contexts, dtype=self._dtype)
        except (TypeError, ValueError):
            return False
        if x.shape != ref.shape:
            return False
        return x.tobytes() == ref.tobytes() if x.size <= 4096 else bool(np.array_equal(x, ref))

    def _on_update(self, arms: np.ndarray) -> None:
        """Hook: invalidate per-arm caches."""

    def _update_one(self, x: np.ndarray, k: int, r: float, cached: tuple | None) -> None:
        """Sherman-Morrison rank-one update of arm k."""
        x0, a_inv, theta = x[0], self.a_inv[k], self.theta[k]
        if cached is not None:
            u = cached[1][k, 0]
        else:
            u = a_inv @ x0 if self.a_inv.size <= _SMALL else vm(x0, a_inv)
        w = u / (1.0 + u @ x0)
        sym_subtract_inplace(a_inv, u[None, :], w[None, :])
        theta += (r - x0 @ theta) * w
        self.counts[k] += 1.0

    def _update_batch(self, x: np.ndarray, a: np.ndarray, r: np.ndarray, cached: tuple | None) -> None:
        """Woodbury block update per played arm."""
        reuse = cached is not None
        rd = r.astype(self._dtype)
        for k in np.unique(a):
            rows = np.nonzero(a == k)[0]
            xk, rk = x[rows], rd[rows]
            u = cached[1][k][rows] if reuse else mm(xk, self.a_inv[k])
            s = mm_nt(u, xk)
            s[np.diag_indices_from(s)] += 1.0
            w = pos_solve(s, u)
            sym_subtract_inplace(self.a_inv[k], u, w)
            self.theta[k] += vm(rk - mv(xk, self.theta[k]), w)
            self.counts[k] += len(rows)

    def _update_discounted(self, x: np.ndarray, a: np.ndarray, r: np.ndarray) -> None:
        n, g = x.shape[0], self.discount
        # Instance i (in order) is g^(n-1-i) old at the end of this call; older statistics age by g^n.
        w = g ** np.arange(n - 1, -1, -1, dtype=np.float64)
        self.gram *= g**n
        self.b *= g**n
        self.counts *= g**n
        for k in np.unique(a):
            rows = np.nonzero(a == k)[0]
            xk, wk = x[rows], w[rows].astype(self._dtype)
            self.gram[k] += mm(np.ascontiguousarray((xk * wk[:, None]).T), xk)
            self.b[k] += (wk * r[rows].astype(self._dtype)) @ xk
            self.counts[k] += float(w[rows].sum())
        eye = np.eye(self.dim, dtype=self._dtype) * self.l2
        for k in range(self.n_arms):
            self.a_inv[k] = scipy.linalg.inv(self.gram[k] + eye)
            self.theta[k] = vm(self.b[k], self.a_inv[k])


class LinUCB(_LinearPolicy):
    """Disjoint LinUCB (Li et al. 2010): score_k = x.theta_k + alpha * sqrt(x^T A_k^-1 x); greedy in score.

    Same scores as mabwiser's `LearningPolicy.LinUCB(alpha, l2_lambda)`; ties are broken uniformly at
    random and `probs` splits the mass over tied arms (1/0 otherwise).
    """

    name: ClassVar[str] = "linucb"

    def select(self, contexts: np.ndarray) -> Decision:
        """Pick the arm with the highest upper confidence bound for each context."""
        mean, bonus = self.interval(contexts)
        scores = mean + bonus
        arms, probs = greedy_choice(scores, self.rng)
        return Decision(arms, scores, probs, expected=mean, width=bonus)


class LinTS(_LinearPolicy):
    """Linear Thompson sampling (Agrawal & Goyal 2013): theta_k ~ N(theta_hat_k, alpha^2 A_k^-1) per context.

    `alpha` is the posterior scale v of the paper. With `sampler="cholesky"` (default) a draw goes
    through a cached Cholesky factor L_k of A_k^-1 (refactored lazily, once per updated arm, O(d^3)):
    theta = theta_hat + alpha * L z, z ~ N(0, I) from the policy's seeded RNG. Only x.theta_k enters
    the choice, and for one context it is N(x.theta_hat_k, alpha^2 x^T A_k^-1 x); `sampler="marginal"`
    draws exactly that scalar, so every score has the same distribution, independent across contexts
    and arms as with "cholesky", at O(K d^2) per context and no factorization: prefer it when updates
    are as frequent as selections and d is large. `scores` are the sampled rewards; `probs` are the
    exact probabilities that each arm's sampled score is the largest, computed on first access.
    """

    name: ClassVar[str] = "lints"
    _samplers = ("cholesky", "marginal")

    def __init__(self, n_arms: int, dim: int, alpha: float = 0.25, l2: float = 1.0, discount: float = 1.0,
                 dtype: str = "float64", sampler: str = "cholesky", seed: int | None = 0):
        super().__init__(n_arms, dim, alpha=alpha, l2=l2, discount=discount, dtype=dtype, seed=seed)
        if sampler not in self._samplers:
            raise ValueError(f"sampler must be one of {self._samplers}, got {sampler!r}")
        self.sampler = sampler
        self._chol = np.empty_like(self.a_inv) if sampler == "cholesky" else None
        self._chol_dirty = np.ones(self.n_arms, dtype=bool)

    def params(self) -> dict[str, Any]:
        """Constructor arguments (JSON-safe) that rebuild an untrained copy of this policy."""
        return {**super().params(), "sampler": self.sampler}

    def _on_update(self, arms: np.ndarray) -> None:
        if self.discount < 1.0:
            self._chol_dirty[:] = True  # discounting changed every arm
        else:
            self._chol_dirty[arms] = True

    def _after_load(self) -> None:
        super()._after_load()
        self._chol_dirty[:] = True

    def _factors(self) -> np.ndarray:
        for k in np.nonzero(self._chol_dirty)[0]:
            try:
                self._chol[k] = scipy.linalg.cholesky(self.a_inv[k], lower=True, check_finite=False)
            except np.linalg.LinAlgError:
                # Rounding made A^-1 slightly indefinite (float32 at large d): rebuild it exactly.
                self._refresh_inverse(k)
                self._chol[k] = scipy.linalg.cholesky(self.a_inv[k], lower=True, check_finite=False)
            self._chol_dirty[k] = False
        return self._chol

    def _refresh_inverse(self, k: int) -> None:
        sym = 0.5 * (self.a_inv[k] + self.a_inv[k].T)
        vals, vecs = scipy.linalg.eigh(sym.astype(np.float64))
        vals = np.maximum(vals, 1e-12 * vals.max())
        self.a_inv[k] = mm(vecs * vals, np.ascontiguousarray(vecs.T))

    def select(self, contexts: np.ndarray) -> Decision:
        """Draw a posterior sample of each arm's reward for each context and pick the largest."""
        x = self._check_contexts(contexts)
        n, k = x.shape[0], self.n_arms
        if self.sampler == "marginal":
            mean, var = self._mean_var(x)
            std = self.alpha * self._width(var)
            scores = mean + std * self.rng.standard_normal((n, k))
        else:
            chol = self._factors()
            mean = (self.theta @ x[0])[None, :] if n == 1 else mm(x, np.ascontiguousarray(self.theta.T))
            # x . (L z) = (L^T x) . z, and ||L^T x||^2 = x^T A^-1 x is the score's variance.
            lt_x = np.stack([mm(x, c) for c in chol])  # (K, n, d): row i of arm k is L_k^T x_i
            z = self.rng.standard_normal((k, n, self.dim))
            scores = mean + self.alpha * np.einsum("knd,knd->nk", lt_x, z)
            std = self.alpha * self._width(np.einsum("knd,knd->nk", lt_x, lt_x))
        mean, std = mean.astype(np.float64), std.astype(np.float64)
        arms, _ = greedy_choice(scores.astype(np.float64), self.rng)
        # The draws' own scale is the interval's half-width: a sample is no bound (a probe skipped because one
        # draw fell far from the others would be skipped at random).
        return Decision(arms, scores.astype(np.float64), lambda: argmax_probs(mean, std), expected=mean, width=std)
