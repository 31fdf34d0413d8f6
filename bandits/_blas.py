"""Matrix products through scipy's BLAS only, without copies of C-ordered arrays.

numpy and scipy each bundle an OpenBLAS with its own thread pool; alternating large calls between the
two makes their spinning threads fight over the cores (measured 25x slower at d=1024 on 2 cores). The
linear policies therefore do every O(d^2) product here, in scipy's BLAS.

A C-ordered (m, n) array's `.T` is an F-ordered view BLAS can read (and overwrite) in place.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import blas, lapack


def mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b for 2-D float arrays (C-ordered result)."""
    gemm = blas.dgemm if a.dtype == np.float64 else blas.sgemm
    return gemm(1.0, b.T, a.T).T


def mm_nt(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b.T for 2-D float arrays (C-ordered result)."""
    gemm = blas.dgemm if a.dtype == np.float64 else blas.sgemm
    return gemm(1.0, b.T, a.T, trans_a=1).T


def vm(v: np.ndarray, m: np.ndarray) -> np.ndarray:
    """v @ m for a 1-D v and 2-D m (also m @ v when m is symmetric, as A^-1 is)."""
    gemv = blas.dgemv if m.dtype == np.float64 else blas.sgemv
    return gemv(1.0, m.T, v)


def mv(m: np.ndarray, v: np.ndarray) -> np.ndarray:
    """m @ v for a 2-D m and 1-D v."""
    gemv = blas.dgemv if m.dtype == np.float64 else blas.sgemv
    return gemv(1.0, m.T, v, trans=1)


def sym_subtract_inplace(m: np.ndarray, u: np.ndarray, w: np.ndarray) -> None:
    """m -= u^T @ w in place, for a symmetric C-ordered (d, d) m and (r, d) u, w with u^T w symmetric."""
    # m.T is the same memory in Fortran order; the update is symmetric, so writing into the
    # transposed view equals writing into m, and BLAS does it without a d x d temporary.
    mt = m.T
    if u.shape[0] == 1:
        ger = blas.dger if m.dtype == np.float64 else blas.sger
        out = ger(-1.0, u[0], w[0], a=mt, overwrite_a=1)
    else:
        gemm = blas.dgemm if m.dtype == np.float64 else blas.sgemm
        out = gemm(-1.0, u, w, beta=1.0, c=mt, trans_a=1, overwrite_c=1)
    if out is not mt:  # BLAS had to copy (unexpected layout): write back.
        m[...] = out.T


def pos_solve(s: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve s x = b for a symmetric positive definite s (LAPACK posv, no input checks)."""
    posv = lapack.dposv if s.dtype == np.float64 else lapack.sposv
    _, x, info = posv(s, b)
    if info != 0:
        raise np.linalg.LinAlgError(f"posv failed (info={info}): matrix not positive definite")
    return x
