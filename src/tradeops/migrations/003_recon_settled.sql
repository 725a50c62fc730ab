-- Recon columns settled (docs/recon.md). 002 stays as applied; this file only adds.

-- recon_runs: what the run expected, how long each stage took, what it was asked to do,
-- and (autoheal) the replay topic's end offsets before its first publish, so that a
-- resumed run can find what it already published instead of publishing it twice.
ALTER TABLE {recon_runs}
    ADD COLUMN IF NOT EXISTS expected_rows  bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS discrepancies  bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS stage_seconds  jsonb  NOT NULL DEFAULT '{{}}'::jsonb,
    ADD COLUMN IF NOT EXISTS args           jsonb  NOT NULL DEFAULT '{{}}'::jsonb,
    ADD COLUMN IF NOT EXISTS replay_from    jsonb;

-- Which (day, symbol) the broker cache holds, including days on which the broker
-- returned no candle at all, so a rerun does not refetch (unless --refetch).
CREATE TABLE IF NOT EXISTS {broker_fetches} (
    trading_day  date        NOT NULL,
    symbol       text        NOT NULL,
    source       text        NOT NULL,
    rows         integer     NOT NULL,
    fetched_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (trading_day, symbol)
);

-- One row per bar an autoheal run settles: planned -> written (audit + bars_1m in one
-- transaction) -> replayed (delivery to the replay topic confirmed, offset recorded).
CREATE TABLE IF NOT EXISTS {recon_heal_actions} (
    run_id            text        NOT NULL,
    trading_day       date        NOT NULL,
    symbol            text        NOT NULL,
    ts                timestamptz NOT NULL,
    kinds             text[]      NOT NULL,
    state             text        NOT NULL DEFAULT 'planned'
                      CHECK (state IN ('planned', 'written', 'replayed')),
    new_open          double precision NOT NULL,
    new_high          double precision NOT NULL,
    new_low           double precision NOT NULL,
    new_close         double precision NOT NULL,
    new_volume        bigint      NOT NULL,
    replay_partition  integer,
    replay_offset     bigint,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, symbol, ts)
);
CREATE INDEX IF NOT EXISTS recon_heal_actions_day_idx ON {recon_heal_actions} (trading_day, state);

-- The recon selects one day by ts across all symbols: without these it scans every day.
CREATE INDEX IF NOT EXISTS bars_1m_ts_idx ON {bars_1m} (ts);
CREATE INDEX IF NOT EXISTS broker_bars_1m_ts_idx ON {broker_bars_1m} (ts);
