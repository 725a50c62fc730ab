"""Disk space of the Kafka and PostgreSQL data folders (``[doctor].kafka_data_dir``,
``postgres_data_dir``): used share of the filesystem holding each, WARN at
``disk_warn_ratio``, CRIT at ``disk_crit_ratio``. Relative paths are resolved against the
config file's folder; symlinks are followed.
"""

from __future__ import annotations

import shutil

from ...config import secret_path
from ..result import Result, crit, ok, warn
from ..runner import Check, CheckContext


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def judge(what: str, path: str, total: int, free: int, warn_ratio: float, crit_ratio: float) -> Result:
    name = f"disk:{what}"
    used = 1.0 - free / total if total else 1.0
    finding = f"{path}: {used:.0%} used, {_gib(free)} free of {_gib(total)}"
    details = {"path": path, "total_bytes": total, "free_bytes": free, "used_ratio": round(used, 4)}
    advice = (f"free space under {path}: Kafka retention (`retention.bytes/ms`), old PostgreSQL "
              "WAL/backups, logs; or grow the filesystem" if what == "kafka" else
              f"free space under {path}: old WAL/backups/logs (`du -sh {path}/*`), or grow the "
              "filesystem; PostgreSQL stops accepting writes when it is full")
    if used >= crit_ratio:
        return crit(name, finding, advice, details=details)
    if used >= warn_ratio:
        return warn(name, finding, advice, details=details)
    return ok(name, finding, details=details)


def run(ctx: CheckContext) -> list[Result]:
    d = ctx.cfg.doctor
    out = []
    for what, value in (("kafka", d.kafka_data_dir), ("postgres", d.postgres_data_dir)):
        if not value:
            continue
        path = secret_path(ctx.cfg, value).resolve()
        try:
            usage = shutil.disk_usage(path)
        except OSError as e:
            out.append(crit(f"disk:{what}", f"{path}: {e.strerror}",
                            f"[doctor].{what}_data_dir should name the {what} data folder"))
            continue
        out.append(judge(what, str(path), usage.total, usage.free, d.disk_warn_ratio, d.disk_crit_ratio))
    return out


CHECKS = [Check("disk", run, "disk space of the Kafka and PostgreSQL data folders",
                lambda cfg: bool(cfg.doctor.kafka_data_dir or cfg.doctor.postgres_data_dir))]
