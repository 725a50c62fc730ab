-- Core tables of the data contract (docs/contracts.md). Identifiers in braces are the
-- configured table names, substituted through psycopg.sql.Identifier.

CREATE TABLE IF NOT EXISTS {bars_1m} (
    symbol  text        NOT NULL,
    ts      timestamptz NOT NULL,
    open    double precision NOT NULL,
    high    double precision NOT NULL,
    low     double precision NOT NULL,
    close   double precision NOT NULL,
    volume  bigint      NOT NULL,
    source  text        NOT NULL DEFAULT 'live',
    PRIMARY KEY (symbol, ts)
);

CREATE TABLE IF NOT EXISTS {broker_bars_1m} (
    symbol     text        NOT NULL,
    ts         timestamptz NOT NULL,
    open       double precision NOT NULL,
    high       double precision NOT NULL,
    low        double precision NOT NULL,
    close      double precision NOT NULL,
    volume     bigint      NOT NULL,
    source     text        NOT NULL DEFAULT 'kite',
    fetched_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, ts)
);

CREATE TABLE IF NOT EXISTS {bars_1m_audit} (
    id          bigserial   PRIMARY KEY,
    run_id      text        NOT NULL,
    symbol      text        NOT NULL,
    ts          timestamptz NOT NULL,
    action      text        NOT NULL CHECK (action IN ('insert', 'overwrite')),
    old_open    double precision,
    old_high    double precision,
    old_low     double precision,
    old_close   double precision,
    old_volume  bigint,
    old_source  text,
    new_open    double precision NOT NULL,
    new_high    double precision NOT NULL,
    new_low     double precision NOT NULL,
    new_close   double precision NOT NULL,
    new_volume  bigint      NOT NULL,
    new_source  text        NOT NULL,
    audited_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (run_id, symbol, ts)
);

CREATE TABLE IF NOT EXISTS {risk_peaks} (
    trading_day   date        NOT NULL,
    bucket_type   text        NOT NULL,
    bucket        text        NOT NULL,
    peak_equity   double precision NOT NULL,
    max_drawdown  double precision NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (trading_day, bucket_type, bucket)
);

CREATE TABLE IF NOT EXISTS {instruments} (
    exchange          text   NOT NULL,
    tradingsymbol     text   NOT NULL,
    instrument_token  bigint NOT NULL,
    exchange_token    bigint,
    name              text,
    segment           text,
    instrument_type   text,
    lot_size          integer,
    tick_size         double precision,
    fetched_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (exchange, tradingsymbol)
);
