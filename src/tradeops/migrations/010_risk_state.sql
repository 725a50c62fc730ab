-- risk-drawdown exporter state, written in one transaction with {risk_peaks}: the latest
-- snapshot of every (strategy, symbol) position and the next offset of every consumed
-- partition, so a restart resumes from exactly the state it persisted.

CREATE TABLE IF NOT EXISTS {risk_positions} (
    strategy       text        NOT NULL,
    symbol         text        NOT NULL,
    ts             timestamptz NOT NULL,
    quantity       bigint      NOT NULL,
    average_price  double precision NOT NULL,
    last_price     double precision NOT NULL,
    realized_pnl   double precision NOT NULL,
    multiplier     double precision NOT NULL DEFAULT 1,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (strategy, symbol)
);

CREATE TABLE IF NOT EXISTS {risk_offsets} (
    topic        text    NOT NULL,
    partition    integer NOT NULL,
    next_offset  bigint  NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);
