"""`tradeops supervise` (run), `supervise status`, `supervise restart NAME`, `demo-worker`.

`status` asks the running supervisor's ``/status`` on ``[supervisor].listen`` and falls
back to the status file it writes atomically (``[supervisor].status_file``). Exit codes
(Nagios-like, for the doctor and scripts): 0 every program RUNNING, 1 some program not
RUNNING (STARTING, BACKOFF, HUNG, STOPPED), 2 some program FATAL, 3 status unknown
(supervisor not running, or its status file stale).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import click

from ..config import secret_path
from ..errors import UserError

STALE_AFTER_S = 10.0


@click.group("supervise", invoke_without_command=True)
@click.pass_context
def supervise_group(ctx: click.Context) -> None:
    """Run the heartbeat supervisor (no subcommand), or query it."""
    if ctx.invoked_subcommand is not None:
        return
    from .supervisor import Supervisor

    cfg = ctx.obj.cfg
    if not cfg.supervisor.programs:
        raise UserError(f"{cfg.source}: [supervisor].programs: no program configured")
    ctx.exit(Supervisor(cfg).run())


def fetch_status(cfg, timeout: float = 1.0) -> tuple[dict[str, Any] | None, str]:
    """(status, where it came from) from /status, else the status file; (None, why)."""
    url = f"http://{cfg.supervisor.listen}/status"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - from config
            return json.loads(resp.read()), url
    except (urllib.error.URLError, OSError, ValueError) as e:
        http_err = f"{url}: {getattr(e, 'reason', e)}"
    if not cfg.supervisor.status_file:
        return None, http_err
    path = secret_path(cfg, cfg.supervisor.status_file)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"{http_err}; no status file {path}"
    except (OSError, ValueError) as e:
        return None, f"{http_err}; status file {path}: {e}"
    return data, str(path)


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_reason(data: dict[str, Any], where: str, now: float | None = None) -> str:
    """Why a status read from the file cannot be trusted ('' when it can)."""
    if where.startswith("http"):
        return ""
    now = time.time() if now is None else now
    age = now - float(data.get("updated", 0))
    if data.get("stopping"):
        return "supervisor has stopped"
    if not _pid_alive(data.get("supervisor_pid")):
        return f"supervisor pid {data.get('supervisor_pid')} is not running"
    if age > STALE_AFTER_S:
        return f"status file not updated for {age:.0f}s"
    return ""


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def render_table(data: dict[str, Any], now: float | None = None) -> str:
    now = time.time() if now is None else now
    header = ("PROGRAM", "MODE", "STATE", "PID", "FOR", "HEARTBEAT", "RESTARTS e/h", "DETAIL")
    rows = [header]
    for p in data.get("programs", []):
        if p["heartbeat_source"] == "none":
            hb = "pid only"
        elif not p.get("heartbeat_known", True):
            hb = f"{p['heartbeat_source']} unknown"
        elif p.get("last_heartbeat"):
            hb = f"{p['heartbeat_source']} {_age(now - p['last_heartbeat'])} ago"
        else:
            hb = f"{p['heartbeat_source']} never"
        detail = p.get("detail", "")
        if p["state"] == "BACKOFF" and p.get("next_start_in_s") is not None:
            detail = f"next start in {p['next_start_in_s']:.1f}s; {detail}"
        if p.get("heartbeat_detail") and not p.get("heartbeat_known", True):
            detail = f"{detail}; {p['heartbeat_detail']}"
        if len(detail) > 100:
            detail = detail[:97] + "..."
        rows.append((
            p["name"],
            p["mode"],
            p["state"],
            str(p["pid"]) if p.get("pid") else "-",
            _age(now - p["since"]),
            hb,
            f"{p['restarts'].get('exit', 0)}/{p['restarts'].get('hung', 0)}",
            detail,
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)) + "  " + r[-1] for r in rows]
    deps = data.get("dependencies", {})
    if deps:
        lines.append("dependencies: " + ", ".join(f"{k} {'up' if v else 'DOWN'}" for k, v in deps.items()))
    return "\n".join(line.rstrip() for line in lines)


def status_exit_code(data: dict[str, Any]) -> int:
    states = [p["state"] for p in data.get("programs", [])]
    if "FATAL" in states:
        return 2
    if any(s != "RUNNING" for s in states):
        return 1
    return 0


@supervise_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_obj
def status_cmd(obj, as_json: bool) -> None:
    """Print the supervised programs' table (exit 0 ok, 1 degraded, 2 FATAL, 3 unknown)."""
    cfg = obj.cfg
    data, where = fetch_status(cfg)
    if data is None:
        click.echo(f"supervisor status UNKNOWN: {where}", err=True)
        sys.exit(3)
    stale = stale_reason(data, where)
    if as_json:
        click.echo(json.dumps({**data, "source": where, "stale": stale}, indent=1))
    else:
        click.echo(render_table(data))
        click.echo(f"(from {where}{'; STALE: ' + stale if stale else ''})")
    sys.exit(3 if stale else status_exit_code(data))


@supervise_group.command("restart")
@click.argument("program")
@click.pass_obj
def restart_cmd(obj, program: str) -> None:
    """Ask the running supervisor to restart PROGRAM (also out of FATAL)."""
    url = f"http://{obj.cfg.supervisor.listen}/programs/{program}/restart"
    req = urllib.request.Request(url, method="POST", data=b"")  # noqa: S310 - from config
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:  # noqa: S310
            click.echo(json.loads(resp.read())["message"])
    except urllib.error.HTTPError as e:
        try:
            msg = json.loads(e.read())["message"]
        except ValueError:
            msg = f"HTTP {e.code}"
        raise UserError(f"supervisor {obj.cfg.supervisor.listen}: {msg}", exit_code=1) from None
    except (urllib.error.URLError, OSError) as e:
        raise UserError(
            f"supervisor {obj.cfg.supervisor.listen}: not reachable ({getattr(e, 'reason', e)});"
            " is `tradeops supervise` running?",
            exit_code=3,
        ) from None


@supervise_group.command(
    "demo-worker", context_settings={"ignore_unknown_options": True, "help_option_names": []}
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def demo_worker(args: tuple[str, ...]) -> None:
    """A heartbeat-writing demo worker (see --help of the worker): tests and the dev stack."""
    from .demo import main

    sys.exit(main(list(args)))
