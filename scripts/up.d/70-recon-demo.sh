#!/usr/bin/env bash
# A recon of the simulated day, so that `make up` shows one (docs/recon.md): the last
# trading day before today (IST). When bars_1m has no bars of that day yet, the simulator
# writes them (fast mode, bars only: --no-kafka); then `tradeops recon run` fetches the
# broker side from the Kite-compatible server (31-broker-api.sh, 3 req/s) for the dev
# config's named symbols (~4 s) and prints its report. Rerunning uses the cached broker bars.
# Exit 1 of the recon (discrepancies found: the simulator injects them) is the expected
# outcome here; only exit 2 (an error) fails `make up`.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
day="$("$TRADEOPS" --config "$DEV_CONFIG" calendar previous today)"
has_bars="$("$PY" - "$DEV_CONFIG" "$day" <<'PY'
import datetime as dt, sys
from tradeops import config, db
from tradeops.calendar import TradingCalendar
cfg = config.load(sys.argv[1])
start, end = TradingCalendar.from_config(cfg).day_bounds(dt.date.fromisoformat(sys.argv[2]))
with db.connect(cfg) as c:
    print(c.execute("SELECT count(*) > 0 FROM bars_1m WHERE ts >= %s AND ts < %s", (start, end)).fetchone()[0])
PY
)"
if [[ "$has_bars" != "True" ]]; then
  say "recon demo: simulating $day into bars_1m"
  "$TRADEOPS" --config "$DEV_CONFIG" sim run --mode fast --date "$day" --no-kafka --no-groups >/dev/null
fi
symbols="NSE:INFY,NSE:TCS,NSE:WIPRO,NSE:HCLTECH,NSE:HDFCBANK,NSE:ICICIBANK,NSE:SBIN,NSE:BANKBARODA,NSE:KOTAKBANK,NSE:AXISBANK,NSE:RELIANCE,NSE:ONGC"
set +e
"$TRADEOPS" --config "$DEV_CONFIG" recon run --date "$day" --symbols "$symbols" 2>&1 | tee "$LOG_DIR/recon-demo.log"
rc=${PIPESTATUS[0]}
set -e
((rc <= 1)) || die "recon demo: tradeops recon run --date $day failed (exit $rc), see $LOG_DIR/recon-demo.log"
say "recon demo: $day reconciled (exit $rc); details: tradeops --config $DEV_CONFIG recon show --date $day; heal: make recon-autoheal DATE=$day"
