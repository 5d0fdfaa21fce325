"""One-to-one assignment maximising total similarity (rows to distinct columns).

scipy.optimize.linear_sum_assignment when scipy is importable (it is not a dependency of
speakerid), else an exact Hungarian algorithm in Python (O(rows^2 cols), fine for the few
clusters of a recording against a gallery of thousands).
"""

from __future__ import annotations

import numpy as np

__all__ = ["assign_max"]


def _hungarian_min(cost: np.ndarray) -> np.ndarray:
    """Column of each row minimising the total cost; needs rows <= cols (e-maxx's potentials)."""
    n, m = cost.shape
    inf = float("inf")
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    p = np.zeros(m + 1, dtype=np.int64)  # p[j]: row (1-based) matched to column j
    way = np.zeros(m + 1, dtype=np.int64)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = np.full(m + 1, inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            cur = cost[i0 - 1] - u[i0] - v[1:]
            free = ~used[1:]
            upd = free & (cur < minv[1:])
            minv[1:][upd] = cur[upd]
            way[1:][upd] = j0
            cand = np.where(free, minv[1:], inf)
            j1 = int(np.argmin(cand)) + 1
            delta = cand[j1 - 1]
            used_idx = np.flatnonzero(used)
            u[p[used_idx]] += delta
            v[used_idx] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while True:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
            if j0 == 0:
                break
    out = np.full(n, -1, dtype=np.int64)
    for j in range(1, m + 1):
        if p[j]:
            out[p[j] - 1] = j - 1
    return out


def assign_max(score: np.ndarray) -> list[tuple[int, int]]:
    """(row, column) pairs, each row and column used at most once, min(rows, cols) pairs,
    maximising the summed score."""
    s = np.asarray(score, dtype=np.float64)
    if s.ndim != 2 or 0 in s.shape:
        return []
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:
        linear_sum_assignment = None
    if linear_sum_assignment is not None:
        r, c = linear_sum_assignment(s, maximize=True)
        return [(int(a), int(b)) for a, b in zip(r, c)]
    if s.shape[0] <= s.shape[1]:
        cols = _hungarian_min(-s)
        return [(i, int(j)) for i, j in enumerate(cols)]
    rows = _hungarian_min(-s.T)
    return sorted((int(i), j) for j, i in enumerate(rows))
