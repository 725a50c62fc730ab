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
    number of values held (<= window).
    """

    def __init__(self, window: np.ndarray, paired: bool):
        self.window = np.asarray(window, dtype=np.int64)
        rows, wmax = len(self.window), int(self.window.max()) if len(self.window) else 1
        self.paired = paired
        self.bu = np.zeros((rows, wmax))
        self.bv = np.zeros((rows, wmax)) if paired else None
        self.n = np.zeros(rows, dtype=np.int64)
        self.head = np.zeros(rows, dtype=np.int64)  # next slot to write
        self.since = np.zeros(rows, dtype=np.int64)  # slides since the last exact recompute
        self.acc = np.zeros(rows)  # sum of |M2 terms| added since then (error scale)
        self.mu = np.zeros(rows)
        self.mv = np.zeros(rows)
        self.cuu = np.zeros(rows)
        self.cuv = np.zeros(rows)
        self.ru = np.zeros(rows)
        self.rv = np.zeros(rows)
        self.valid = np.arange(wmax)[None, :] < self.window[:, None]

    def full(self, idx: np.ndarray) -> np.ndarray:
        return self.n[idx] == self.window[idx]

    def push(self, idx: np.ndarray, u: np.ndarray, v: np.ndarray | None = None) -> None:
        """Append u[i] (and v[i]) to row idx[i]; idx must not repeat within one call.

        Values are stored shifted by the row's first value (``ru``, ``rv``) so that window
        values sit near 0 and means/deviations keep their digits; ``mu``/``mv`` are the
        shifted means (add ``ru``/``rv`` for the real ones)."""
        new = self.n[idx] == 0
        if new.any():
            self.ru[idx[new]] = u[new]
            if self.paired:
                self.rv[idx[new]] = v[new]
        u = u - self.ru[idx]
        if self.paired:
            v = v - self.rv[idx]
        full = self.n[idx] == self.window[idx]
        if full.all():
            self._slide(idx, u, v)
        elif not full.any():
            self._add(idx, u, v)
        else:
            self._slide(idx[full], u[full], None if v is None else v[full])
            nf = ~full
            self._add(idx[nf], u[nf], None if v is None else v[nf])

    def _add(self, idx, u, v) -> None:
        # Welford add: the window is still filling
        h = self.head[idx]
        self.bu[idx, h] = u
        n = self.n[idx] + 1
        du = u - self.mu[idx]
        mu = self.mu[idx] + du / n
        self.cuu[idx] += du * (u - mu)
        self.mu[idx] = mu
        if self.paired:
            self.bv[idx, h] = v
            mv = self.mv[idx] + (v - self.mv[idx]) / n
            self.cuv[idx] += du * (v - mv)
            self.mv[idx] = mv
        self.n[idx] = n
        self.head[idx] = (h + 1) % self.window[idx]

    def _slide(self, idx, u, v) -> None:
        # fixed-size window: remove the oldest value and add the new one in one step
        h = self.head[idx]
        w = self.window[idx]
        uo = self.bu[idx, h]
        self.bu[idx, h] = u
        mu = self.mu[idx]
        mu2 = mu + (u - uo) / w
        du_new, du_old = u - mu, uo - mu
        t_new, t_old = du_new * (u - mu2), du_old * (uo - mu2)
        cuu = self.cuu[idx] + t_new - t_old
        self.cuu[idx] = cuu
        self.mu[idx] = mu2
        if self.paired:
            vo = self.bv[idx, h]
            self.bv[idx, h] = v
            mv2 = self.mv[idx] + (v - vo) / w
            self.cuv[idx] += du_new * (v - mv2) - du_old * (vo - mv2)
            self.mv[idx] = mv2
        self.head[idx] = (h + 1) % w
        since = self.since[idx] + 1
        self.since[idx] = since
        # recompute every W slides, and at once where the updates cancelled badly: the
        # error since the last recompute is ~ eps * (sum of |terms| added), so recompute
        # when M2 falls below 1e-6 of that sum (relative error then stays below ~1e-10)
        acc = self.acc[idx] + np.abs(t_new) + np.abs(t_old)
        self.acc[idx] = acc
        due = (since >= w) | (cuu < CANCEL_GUARD * acc)
        if due.any():
            self._recompute(idx[due])

    def _recompute(self, rows: np.ndarray) -> None:
        """Exact two-pass mean and co-moments from the ring buffers of ``rows``."""
        valid = self.valid[rows]
        w = self.window[rows]
        bu = self.bu[rows]
        mu = np.where(valid, bu, 0.0).sum(axis=1) / w
        du = np.where(valid, bu - mu[:, None], 0.0)
        mu = mu + du.sum(axis=1) / w  # second-pass correction of the mean
        du = np.where(valid, bu - mu[:, None], 0.0)
        self.mu[rows] = mu
        self.cuu[rows] = (du * du).sum(axis=1)
        if self.paired:
            bv = self.bv[rows]
            mv = np.where(valid, bv, 0.0).sum(axis=1) / w
            mv = mv + np.where(valid, bv - mv[:, None], 0.0).sum(axis=1) / w
            dv = np.where(valid, bv - mv[:, None], 0.0)
            self.mv[rows] = mv
            self.cuv[rows] = (du * dv).sum(axis=1)
        self.since[rows] = 0
        self.acc[rows] = self.cuu[rows]


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
        """Apply one bar close pair per row in ``idx`` (unique within a call; closes > 0)."""
        idx = np.asarray(idx, dtype=np.int64)
        y = np.log(np.asarray(a_close, dtype=float))
        x = np.log(np.asarray(b_close, dtype=float))
        self.updates[idx] += 1

        # hedge ratio -------------------------------------------------------------
        ols = self.is_ols[idx]
        if ols.any():
            i = idx[ols]
            hr = self.hedge_ring
            hr.push(i, x[ols], y[ols])
            ok = hr.full(i) & (hr.cuu[i] > MIN_HEDGE_STD**2 * (hr.window[i] - 1))
            j = i[ok]
            b = hr.cuv[j] / hr.cuu[j]
            self.beta[j] = b
            self.alpha[j] = (hr.mv[j] + hr.rv[j]) - b * (hr.mu[j] + hr.ru[j])
        # spread: static and rolling OLS use the current (beta, alpha); the Kalman filter's
        # spread is its one-step forecast error (the prior state), counted only after a
        # burn-in of one window so the filter's start-up transient stays out of the z-score
        s = y - self.beta[idx] * x - self.alpha[idx]
        kal = self.is_kalman[idx]
        if kal.any():
            i = idx[kal]
            self._kalman(i, x[kal], y[kal])
            s[kal] = np.where(self.updates[i] > self.window[i], s[kal], np.nan)
        has = ~np.isnan(s)
        if not has.all():
            idx, s = idx[has], s[has]
        if not len(idx):
            return
        prev = self.spread[idx]
        self.spread[idx] = s
        sr = self.spread_ring
        sr.push(idx, s)
        full = sr.full(idx)
        var = np.where(full, sr.cuu[idx] / (sr.window[idx] - 1), 0.0)
        flat = var <= MIN_VAR
        with np.errstate(divide="ignore", invalid="ignore"):
            dev = (s - sr.ru[idx]) - sr.mu[idx]
            z = np.where(full & ~flat, dev / np.sqrt(np.where(flat, 1.0, var)), np.nan)
        self.zscore[idx] = z

        # AR(1) half-life over consecutive spreads ----------------------------------
        hp = ~np.isnan(prev)
        if hp.any():
            i = idx[hp]
            ar = self.ar_ring
            ar.push(i, prev[hp], s[hp])
            ok = ar.full(i) & (ar.cuu[i] > MIN_VAR * ar.window[i])
            phi = np.full(len(i), np.nan)
            phi[ok] = ar.cuv[i[ok]] / ar.cuu[i[ok]]
            mr = (phi > 0.0) & (phi < 1.0)
            hl = np.full(len(i), np.nan)
            hl[mr] = -LN2 / np.log(phi[mr])
            self.ar_phi[i] = phi
            self.half_life_bars[i] = hl

    def _kalman(self, i, x, y) -> None:
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
        self.beta[i] = self.kb[i]
        self.alpha[i] = self.ka[i]
