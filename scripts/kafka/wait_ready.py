"""Readiness probe of the dev broker: exit 0 once an AdminClient sees a broker.

Usage: wait_ready.py BOOTSTRAP TIMEOUT_S PID
Fails early (exit 3) when the broker process PID has exited, and with exit 2 on timeout.
"""

import logging
import os
import sys
import time

from confluent_kafka.admin import AdminClient


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def main() -> int:
    bootstrap, timeout, pid = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    deadline = time.monotonic() + timeout
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": _quiet})
    while time.monotonic() < deadline:
        if not alive(pid):
            print(f"kafka: broker process {pid} exited", file=sys.stderr)
            return 3
        try:
            if admin.list_topics(timeout=2).brokers:
                return 0
        except Exception:  # noqa: BLE001, S110 - not ready yet; keep polling until deadline
            pass
        time.sleep(0.3)
    print(f"kafka: no broker at {bootstrap} after {timeout:.0f}s", file=sys.stderr)
    return 2


_quiet = logging.getLogger("kafka-ready")  # librdkafka's connection-refused noise goes nowhere
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False

if __name__ == "__main__":
    sys.exit(main())
