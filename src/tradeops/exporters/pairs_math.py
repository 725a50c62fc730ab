"""Pairs spread math, vectorised across pairs: hedge ratio, spread, windowed z-score, half-life.

For a pair (A, B) with closes a_t, b_t: y = ln a, x = ln b and the spread is

    s_t = y_t - beta_t * x_t - alpha_t

with (beta_t, alpha_t) from one of three hedge methods:

- ``static``: beta from config, alpha 0;
- ``rolling_ols`` (the default): OLS of y on x over the last W bars (beta = cov/var,
  alpha = mean_y - beta mean_x); held at its last value while x is flat over the window
  (std of ln b below ``MIN_HEDGE_STD``);
- ``kalman``: a two-state (beta, alpha) random-walk Kalman filter, y = beta x + alpha + e,
  process noise delta/(1-delta) I, observation variance ``obs_var``, start (0, 0) with
  covariance I. Its spread is the one-step forecast error y_t - beta_{t-1} x_t - alpha_{t-1}
  (the posterior residual is shrunk towards 0 by construction), after a burn-in of W bars.

The z-score is ``(s_t - mean_W(s)) / std_W(s)`` over the last W spreads (sample std,
ddof=1), the current spread included, the way ``pandas.Series.rolling(W)`` computes it. It
is NaN (the exporter leaves the series absent) until W spreads exist and whenever the
window is flat (std below ``MIN_STD``): never inf.

Half-life: AR(1) over the last W consecutive spread pairs, s_t = phi s_{t-1} + c (OLS);
half-life = -ln 2 / ln(phi) bars, only when 0 < phi < 1 (mean-reverting), NaN otherwise.

Every windowed statistic is an O(1) sliding co-moment update (windowed Welford):

    mean' = mean + (u_new - u_old) / W
    C'    = C + (u_new - mean)(v_new - mean_v') - (u_old - mean)(v_old - mean_v')

(deviation form, no sum-of-squares cancellation) on values shifted by the row's first value,
plus an exact two-pass recomputation from the ring buffer once every W slides per row (so
rounding error cannot accumulate over a long session; amortised O(1)) and at once when a
slide cancels (M2 below 1e-6 of the sum of |terms| added since the last recompute).
All arrays are indexed by pair; one call updates many pairs at once, which is where the
speed comes from (see bench/bench_pairs.py).
"""

from __future__ import annotations

import math

import numpy as np

HEDGE_CODES = {"static": 0, "rolling_ols": 1, "kalman": 2}
# a window whose std is below this is flat: z-score absent (log-spread units, ~1e-7 %)
MIN_STD = 1e-9
MIN_VAR = MIN_STD * MIN_STD
# rolling OLS needs leg B to have moved: below this std of ln b over the window (0.0001 %)
# the regression says nothing about the hedge ratio, and the last beta is held
MIN_HEDGE_STD = 1e-6
LN2 = math.log(2.0)
CANCEL_GUARD = 1e-6


class RingMoments:
    """Windowed mean/co-moments of one series u (or a pair u, v) for many rows at once.

    Row r keeps the last ``window[r]`` values in a ring buffer. ``mu``, ``mv`` are the
    window means, ``cuu``, ``cuv`` the centred sums of squares/products (M2), ``n`` the
    number of values held (<= window). The k = 1 or 2 series are stacked on a leading axis
    (``m[k]``, ``c[k]``; the ring buffers flat in ``buf``) so that one numpy operation
    updates both: the cost of a call is the number of operations, not of rows.
    """

    def __init__(self, window: np.ndarray, paired: bool):
        self.window = np.asarray(window, dtype=np.int64)
        rows, wmax = len(self.window), int(self.window.max()) if len(self.window) else 1
        self.paired = paired
        self.k = k = 2 if paired else 1
        self.rows, self.wmax = rows, wmax
        # value j of row r, slot h at buf[j * rows * wmax + r * wmax + h]
        self.buf = np.zeros(k * rows * wmax)
        self.series_off = (np.arange(k) * rows * wmax)[:, None]
        self.row_base = np.arange(rows, dtype=np.int64) * wmax
        self.n = np.zeros(rows, dtype=np.int64)
        self.head = np.zeros(rows, dtype=np.int64)  # next slot to write
        self.acc = np.zeros(rows)  # sum of |M2 terms| added since then (error scale)
        self.m = np.zeros((k, rows))  # shifted means of u (and v)
        self.c = np.zeros((k, rows))  # M2 of u (and the co-moment of u, v)
        self.r = np.zeros((k, rows))  # shift: each row's first value
        self.valid = np.arange(wmax)[None, :] < self.window[:, None]

    # 1-d views for readers
    mu = property(lambda self: self.m[0])
    mv = property(lambda self: self.m[1])
    cuu = property(lambda self: self.c[0])
    cuv = property(lambda self: self.c[1])
    ru = property(lambda self: self.r[0])
    rv = property(lambda self: self.r[1])

    @property
    def b(self) -> np.ndarray:
        """The ring buffers as (k, rows, wmax)."""
        return self.buf.reshape(self.k, self.rows, self.wmax)

    def full(self, idx) -> np.ndarray:
        return self.n[idx] == self.window[idx]

    def push(self, idx, rows: np.ndarray, U: np.ndarray) -> None:
        """Append U[:, i] (u, or u and v, shape (k, n)) to row rows[i]; rows must not repeat
        within one call.

        ``idx`` selects the same rows for 1-d state: ``slice(None)`` when ``rows`` is every
        row in order (views instead of gathers: the fast path), else ``rows`` itself.
        Values are stored shifted by the row's first value (``ru``, ``rv``) so that window
        values sit near 0 and means/deviations keep their digits; ``mu``/``mv`` are the
        shifted means (add ``ru``/``rv`` for the real ones)."""
        n = self.n[idx]
        new = n == 0
        if new.any():
            self.r[:, rows[new]] = U[:, new]
        U = U - self.r[:, idx]
        full = n == self.window[idx]
        if full.all():
            self._slide(idx, rows, U)
        elif not full.any():
            self._add(idx, rows, U)
        else:
            r = rows[full]
            self._slide(r, r, U[:, full])
            nf = ~full
            r = rows[nf]
            self._add(r, r, U[:, nf])

    def _slots(self, idx, h):
        # flat buffer positions of each row's slot h, for every series: shape (k, n)
        return self.row_base[idx] + h + self.series_off

    def _add(self, idx, rows, U) -> None:
        # Welford add: the window is still filling
        h = self.head[idx].copy()
        self.buf[self._slots(idx, h)] = U
        n = self.n[idx] + 1
        m = self.m[:, idx]
        du = U[0] - m[0]
        m2 = m + (U - m) / n
        self.c[:, idx] += du * (U - m2)
        self.m[:, idx] = m2
        self.n[idx] = n
        h += 1
        h[h == self.window[idx]] = 0
        self.head[idx] = h

    def _slide(self, idx, rows, U) -> None:
        # fixed-size window: remove the oldest value and add the new one in one step
        h = self.head[idx].copy()
        w = self.window[idx]
        slots = self._slots(idx, h)
        old = self.buf.take(slots)
        self.buf[slots] = U
        m = self.m[:, idx].copy()
        m2 = m + (U - old) / w
        t_new = (U[0] - m[0]) * (U - m2)
        t_old = (old[0] - m[0]) * (old - m2)
        c = self.c[:, idx] + t_new - t_old
        self.c[:, idx] = c
        self.m[:, idx] = m2
        h += 1
        wrap = h == w
        h[wrap] = 0
        self.head[idx] = h
        # recompute every W slides (when the ring wraps), and at once where the updates
        # cancelled badly: the error since the last recompute is ~ eps * (sum of |terms|
        # added), so recompute when M2 falls below 1e-6 of that sum (relative error then
        # stays below ~1e-10)
        t = np.abs(t_new[0])
        t += np.abs(t_old[0])
        acc = self.acc[idx] + t
        self.acc[idx] = acc
        acc *= CANCEL_GUARD
        due = wrap | (c[0] < acc)
        if due.any():
            self._recompute(rows[due])

    def _recompute(self, rows: np.ndarray) -> None:
        """Exact two-pass mean and co-moments from the ring buffers of ``rows``."""
        valid = self.valid[rows]
        w = self.window[rows]
        b = self.b[:, rows]  # (k, r, W)
        m = np.where(valid, b, 0.0).sum(axis=2) / w
        m = m + np.where(valid, b - m[..., None], 0.0).sum(axis=2) / w  # second pass
        d = np.where(valid, b - m[..., None], 0.0)
        self.m[:, rows] = m
        self.c[:, rows] = (d[0][None] * d).sum(axis=2)
        self.acc[rows] = self.c[0, rows]


class PairsEngine:
    """State of many pairs; :meth:`update` applies one aligned (a, b) close per pair.

    Outputs (NaN = not available, the exporter leaves that series absent): ``beta``,
    ``alpha``, ``spread``, ``zscore``, ``half_life_bars``, and ``updates`` (count).
    """

    def __init__(
        self,
        windows,
        hedge,
        static_beta=None,
        kalman_delta=None,
        kalman_obs_var=None,
    ):
        windows = np.asarray(windows, dtype=np.int64)
        if (windows < 3).any():
            raise ValueError("window must be >= 3")
        p = len(windows)
        self.size = p
        self._all = np.arange(p, dtype=np.int64)
        self.window = windows
        self.hedge = np.asarray(
            [HEDGE_CODES[h] if isinstance(h, str) else int(h) for h in hedge], dtype=np.int64
        )
        self.static_beta = np.asarray(
            static_beta if static_beta is not None else [np.nan] * p, dtype=float
        )
        self.static_beta = np.where(np.isnan(self.static_beta), 1.0, self.static_beta)
        self.k_q = np.asarray(kalman_delta if kalman_delta is not None else [1e-4] * p, float)
        self.k_q = self.k_q / (1.0 - self.k_q)
        self.k_r = np.asarray(kalman_obs_var if kalman_obs_var is not None else [1e-6] * p, float)
        self.is_static = self.hedge == 0
        self.is_ols = self.hedge == 1
        self.is_kalman = self.hedge == 2
        self.has_ols = bool(self.is_ols.any())
        self.hedge_min_m2 = MIN_HEDGE_STD**2 * (windows - 1)
        self.inv_wm1 = 1.0 / (windows - 1)
        self.has_kalman = bool(self.is_kalman.any())
        self.hedge_ring = RingMoments(windows, paired=True)  # u = x = ln b, v = y = ln a
        self.spread_ring = RingMoments(windows, paired=False)
        self.ar_ring = RingMoments(windows, paired=True)  # u = s_{t-1}, v = s_t
        # Kalman state (beta, alpha) and covariance [[p00, p01], [p01, p11]]
        self.kb = np.zeros(p)
        self.ka = np.zeros(p)
        self.p00 = np.ones(p)
        self.p01 = np.zeros(p)
        self.p11 = np.ones(p)
        self.beta = np.where(self.is_static, self.static_beta, np.where(self.is_kalman, 0.0, np.nan))
        self.alpha = np.where(self.is_static | self.is_kalman, 0.0, np.nan)
        self.spread = np.full(p, np.nan)
        self.zscore = np.full(p, np.nan)
        self.half_life_bars = np.full(p, np.nan)
        self.ar_phi = np.full(p, np.nan)
        self.updates = np.zeros(p, dtype=np.int64)

    def update(self, idx, a_close, b_close) -> None:
        """Apply one bar close pair per row in ``idx`` (unique within a call; closes > 0).

        ``idx=None`` means every row, in order (a_close[i] is row i): the fast path, where
        all state is updated through views and every method is computed for every row
        (cheaper than splitting the rows by method), the rows of each method keeping
        their own result."""
        if idx is None:
            sel, rows = slice(None), self._all
        else:
            sel = rows = np.asarray(idx, dtype=np.int64)
        xy = np.log(np.stack((np.asarray(b_close, dtype=float), np.asarray(a_close, dtype=float))))
        x, y = xy[0], xy[1]
        self.updates[sel] += 1

        # hedge ratio: rolling OLS ------------------------------------------------
        hr = self.hedge_ring
        if self.has_ols:
            hr.push(sel, rows, xy)
            cuu = hr.cuu[sel]
            ok = self.is_ols[sel] & hr.full(sel) & (cuu > self.hedge_min_m2[sel])
        if self.has_ols and ok.any():
            with np.errstate(divide="ignore", invalid="ignore"):
                b = hr.cuv[sel] / cuu
                a = (hr.mv[sel] + hr.rv[sel]) - b * (hr.mu[sel] + hr.ru[sel])
            self.beta[sel] = np.where(ok, b, self.beta[sel])
            self.alpha[sel] = np.where(ok, a, self.alpha[sel])

        # spread: static and rolling OLS use the current (beta, alpha); the Kalman filter's
        # spread is its one-step forecast error (the prior state), counted only after a
        # burn-in of one window so the filter's start-up transient stays out of the z-score
        s = y - self.beta[sel] * x - self.alpha[sel]
        kal = self.is_kalman[sel] if self.has_kalman else None
        if self.has_kalman and kal.any():
            self._kalman(sel, x, y)
            self.beta[sel] = np.where(kal, self.kb[sel], self.beta[sel])
            self.alpha[sel] = np.where(kal, self.ka[sel], self.alpha[sel])
            s = np.where(kal & (self.updates[sel] <= self.window[sel]), np.nan, s)
        has = ~np.isnan(s)
        if not has.all():
            sel = rows = rows[has]
            s = s[has]
        if not len(rows):
            return
        prev = self.spread[sel].copy()
        self.spread[sel] = s
        sr = self.spread_ring
        sr.push(sel, rows, s[None, :])
        full = sr.full(sel)
        var = sr.cuu[sel] * self.inv_wm1[sel]
        ok = full & (var > MIN_VAR)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = ((s - sr.ru[sel]) - sr.mu[sel]) / np.sqrt(var)
        self.zscore[sel] = np.where(ok, z, np.nan)

        # AR(1) half-life over consecutive spreads ----------------------------------
        hp = ~np.isnan(prev)
        if not hp.all():
            sel = rows = rows[hp]
            prev, s = prev[hp], s[hp]
        if not len(rows):
            return
        ar = self.ar_ring
        ar.push(sel, rows, np.stack((prev, s)))
        cuu = ar.cuu[sel]
        ok = ar.full(sel) & (cuu > MIN_VAR * ar.window[sel])
        with np.errstate(divide="ignore", invalid="ignore"):
            phi = np.where(ok, ar.cuv[sel] / cuu, np.nan)
            mr = (phi > 0.0) & (phi < 1.0)
            hl = np.where(mr, -LN2 / np.log(np.where(mr, phi, 0.5)), np.nan)
        self.ar_phi[sel] = phi
        self.half_life_bars[sel] = hl

    def _kalman(self, i, x, y) -> None:
        # rows i (a slice or an index array) of the (beta, alpha) filter
        # predict: P += Q (random walk); update with observation y = beta x + alpha
        q = self.k_q[i]
        p00 = self.p00[i] + q
        p01 = self.p01[i]
        p11 = self.p11[i] + q
        b, a = self.kb[i], self.ka[i]
        e = y - (b * x + a)
        # S = F P F' + R with F = [x, 1]
        pf0 = p00 * x + p01
        pf1 = p01 * x + p11
        s = x * pf0 + pf1 + self.k_r[i]
        k0, k1 = pf0 / s, pf1 / s
        self.kb[i] = b + k0 * e
        self.ka[i] = a + k1 * e
        # P -= K F P  (K F P = K (P F')')
        self.p00[i] = p00 - k0 * pf0
        self.p01[i] = p01 - k0 * pf1
        self.p11[i] = p11 - k1 * pf1
