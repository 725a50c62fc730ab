-- pairs exporter: the Kalman filter state of each Kalman pair after an update at bar
-- start `ts` (a history, pruned after a few days). A restart loads the latest state that
-- still leaves 2W+2 bars to replay from bars_1m, so its z-score equals the live one.

CREATE TABLE IF NOT EXISTS {pairs_kalman_state} (
    pair     text        NOT NULL,
    ts       timestamptz NOT NULL,
    updates  bigint      NOT NULL,
    beta     double precision NOT NULL,
    alpha    double precision NOT NULL,
    p00      double precision NOT NULL,
    p01      double precision NOT NULL,
    p11      double precision NOT NULL,
    PRIMARY KEY (pair, ts)
);
