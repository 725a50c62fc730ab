-- Reconciliation results. Columns are settled by the recon issue (docs/recon.md).

CREATE TABLE IF NOT EXISTS {recon_runs} (
    run_id         text        PRIMARY KEY,
    trading_day    date        NOT NULL,
    kind           text        NOT NULL DEFAULT 'recon' CHECK (kind IN ('recon', 'autoheal')),
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    status         text        NOT NULL DEFAULT 'running'
                   CHECK (status IN ('running', 'clean', 'discrepancies', 'failed', 'healed', 'partial')),
    symbols        integer     NOT NULL DEFAULT 0,
    internal_rows  bigint      NOT NULL DEFAULT 0,
    broker_rows    bigint      NOT NULL DEFAULT 0,
    counts         jsonb       NOT NULL DEFAULT '{{}}'::jsonb,
    message        text        NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS recon_runs_day_idx ON {recon_runs} (trading_day, started_at DESC);

CREATE TABLE IF NOT EXISTS {bars_1m_recon} (
    id              bigserial   PRIMARY KEY,
    trading_day     date        NOT NULL,
    run_id          text        NOT NULL,
    symbol          text        NOT NULL,
    ts              timestamptz NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('missing_internal', 'missing_broker',
                        'price_mismatch', 'volume_mismatch', 'outside_session')),
    columns         text[]      NOT NULL DEFAULT '{{}}',
    internal_open   double precision,
    internal_high   double precision,
    internal_low    double precision,
    internal_close  double precision,
    internal_volume bigint,
    broker_open     double precision,
    broker_high     double precision,
    broker_low      double precision,
    broker_close    double precision,
    broker_volume   bigint,
    max_abs_diff    double precision,
    status          text        NOT NULL DEFAULT 'open'
                    CHECK (status IN ('open', 'healed', 'unhealable')),
    healed_run_id   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS bars_1m_recon_day_idx ON {bars_1m_recon} (trading_day, status);
CREATE UNIQUE INDEX IF NOT EXISTS bars_1m_recon_key ON {bars_1m_recon} (trading_day, symbol, ts, kind);
