"""The systemd units, timers, sysusers/tmpfiles and hook scripts, checked offline (fast):

- `systemd-analyze verify` passes for every unit, with no warning at all (it returns 0
  on unknown keys, so stderr must be empty), against a scratch root holding the host's
  system units and the package's executables at their installed paths;
- `systemd-analyze security --offline=yes` scores every daemon (and job) unit <= 2.0;
- `systemd-analyze calendar` accepts every OnCalendar and the recon fires Mon..Fri at
  16:15 IST (10:45 UTC);
- the daemon units keep the contract (Type=notify, watchdog, restart limits, user);
- sysusers/tmpfiles files work with the real systemd-sysusers / systemd-tmpfiles in a
  scratch root;
- the ExecCondition wrapper and the job-status hook run for real (the real calendar and
  config loader; the real Pushgateway of the local stack).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import urllib.request
import uuid
import zoneinfo
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNITS = REPO / "systemd"
DAEMONS = sorted(p.name for p in UNITS.glob("tradeops-exporter-*.service")) + ["tradeops-supervisor.service"]
ALL_UNITS = sorted(p.name for p in UNITS.iterdir() if p.suffix in (".service", ".timer", ".target"))
VENV_TRADEOPS = REPO / ".venv" / "bin" / "tradeops"
VENV_PY = REPO / ".venv" / "bin" / "python"
THRESHOLD = 2.0


def unit_file(name: str) -> dict[str, list[tuple[str, str]]]:
    """A unit as {section: [(key, value), ...]} (keys may repeat; comments dropped)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in (UNITS / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"{name}: bad line {raw!r}"
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: dict, section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def one(unit: dict, section: str, key: str) -> str:
    v = values(unit, section, key)
    assert v, f"[{section}] {key}= missing"
    return v[-1]


def seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|min)?", value.strip())
    assert m, value
    n = float(m.group(1))
    return {"ms": n / 1000, "s": n, None: n, "min": n * 60}[m.group(2)]


@pytest.fixture(scope="module")
def unit_root(tmp_path_factory) -> Path:
    """A scratch root: the host's system units, our units as the package installs them,
    and executables at /usr/bin/tradeops and /usr/libexec/tradeops/* (verify checks that
    ExecStart= paths are executable; the real ones are tested in the e2e test)."""
    root = tmp_path_factory.mktemp("unitroot")
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "lib").symlink_to("usr/lib")
    (root / "bin").symlink_to("usr/bin")
    for d in ("etc/systemd/system", "run", "var/lib", "tmp", "usr/bin", "usr/libexec/tradeops"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/sh", root / "usr/bin/sh")
    shutil.copy(UNITS / "session-date", root / "usr/libexec/tradeops/session-date")
    for name in ALL_UNITS:
        shutil.copy(UNITS / name, root / "usr/lib/systemd/system" / name)
    shutil.copy(UNITS / "trading-day", root / "usr/libexec/tradeops/trading-day")
    shutil.copy(UNITS / "job-status", root / "usr/libexec/tradeops/job-status")
    (root / "usr/bin/tradeops").write_text("#!/bin/sh\n")
    (root / "usr/bin/tradeops").chmod(0o755)
    return root


def verify(root: Path, unit: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={root}", unit],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("unit", ALL_UNITS)
def test_verify_without_warnings(unit_root, unit):
    r = verify(unit_root, unit)
    assert r.returncode == 0 and r.stderr.strip() == "", f"{unit}: rc {r.returncode}\n{r.stderr}"


def test_verify_catches_what_it_must(unit_root):
    """The check above can fail: a typo'd key (only a warning, rc 0) and a missing
    executable (rc 1) are both caught."""
    bad = unit_root / "usr/lib/systemd/system/tradeops-badkey.service"
    bad.write_text("[Unit]\nDescription=x\nDocumentation=man:tradeops(1)\n[Service]\n"
                   "ExecStart=/usr/bin/tradeops x\nWatchdogSecs=5\n")
    r = verify(unit_root, "tradeops-badkey.service")
    assert r.returncode == 0 and "Unknown key 'WatchdogSecs'" in r.stderr
    bad.write_text("[Unit]\nDescription=x\n[Service]\nExecStart=/usr/bin/tradeops-nothere\n")
    r = verify(unit_root, "tradeops-badkey.service")
    assert r.returncode != 0 and "is not executable" in r.stderr
    bad.unlink()


def security_score(unit: str) -> float:
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                        f"--threshold={int(THRESHOLD * 10)}", str(UNITS / unit)],
                       capture_output=True, text=True, timeout=30)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert m, r.stdout + r.stderr
    score = float(m.group(1))
    # --threshold makes rc 1 above it: both must agree
    assert (r.returncode == 0) == (score <= THRESHOLD), (score, r.returncode)
    return score


@pytest.mark.parametrize("unit", [u for u in ALL_UNITS if u.endswith(".service")])
def test_security_score_at_most_2(unit):
    assert security_score(unit) <= THRESHOLD


def test_security_check_can_fail(tmp_path):
    bare = tmp_path / "bare.service"
    bare.write_text("[Service]\nExecStart=/bin/true\n")
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--threshold=20", str(bare)],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "UNSAFE" in r.stdout


def test_recon_timer_fires_weekdays_after_the_close():
    cp = unit_file("tradeops-recon.timer")
    spec = one(cp, "Timer", "OnCalendar")
    assert one(cp, "Timer", "Persistent") == "true"
    assert seconds(one(cp, "Timer", "AccuracySec")) <= 60
    r = subprocess.run(["systemd-analyze", "calendar", "--iterations=10", spec],
                       capture_output=True, text=True, timeout=30, env={**os.environ, "TZ": "UTC"})
    assert r.returncode == 0, r.stderr
    utc = re.findall(r"(?:Next elapse|Iter\. #\d+): (\w{3}) (\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d) UTC", r.stdout)
    assert len(utc) == 10, r.stdout
    for day, _date, hms in utc:
        assert day in ("Mon", "Tue", "Wed", "Thu", "Fri") and hms == "10:45:00", (day, hms)


def test_every_oncalendar_is_valid():
    specs = [v for u in ALL_UNITS if u.endswith(".timer") for v in values(unit_file(u), "Timer", "OnCalendar")]
    assert specs
    for spec in specs:
        r = subprocess.run(["systemd-analyze", "calendar", spec], capture_output=True, text=True)
        assert r.returncode == 0, f"{spec}: {r.stderr}"


@pytest.mark.parametrize("unit", DAEMONS)
def test_daemon_unit_contract(unit):
    cp = unit_file(unit)
    assert one(cp, "Service", "Type") == "notify"
    assert one(cp, "Service", "NotifyAccess") == "main"
    watchdog = seconds(one(cp, "Service", "WatchdogSec"))
    assert 2 <= watchdog <= 60
    assert one(cp, "Service", "Restart") == "on-failure"
    restart = seconds(one(cp, "Service", "RestartSec"))
    burst = int(one(cp, "Unit", "StartLimitBurst"))
    interval = seconds(one(cp, "Unit", "StartLimitIntervalSec"))
    # a crash loop keeps retrying for at least 10 s (the defaults give up in 0.5 s) ...
    assert restart >= 1 and (burst - 1) * restart >= 10
    # ... and a real crash loop still ends in "failed", visible to alerts
    assert interval > (burst - 1) * restart
    assert one(cp, "Service", "User") == "tradeops"
    assert one(cp, "Service", "StateDirectory") == "tradeops"
    assert "TRADEOPS_CONFIG=/etc/tradeops/tradeops.toml" in one(cp, "Service", "Environment")
    assert one(cp, "Unit", "PartOf") == "tradeops.target"
    assert unit in " ".join(values(unit_file("tradeops.target"), "Unit", "Wants"))


@pytest.mark.parametrize("unit", ALL_UNITS)
def test_documentation_everywhere(unit):
    docs = " ".join(values(unit_file(unit), "Unit", "Documentation"))
    assert "man:tradeops(1)" in docs
    assert (REPO / "packaging" / "tradeops.1").is_file()


def test_execstart_commands_exist_in_the_cli():
    """Every `tradeops SUBCOMMAND` a unit runs is one the CLI maps (cli.SUBCOMMANDS)."""
    from tradeops.cli import SUBCOMMANDS

    for unit in ALL_UNITS:
        if not unit.endswith(".service"):
            continue
        for line in values(unit_file(unit), "Service", "ExecStart"):
            for sub in re.findall(r"/usr/bin/tradeops (\S+)", line):
                assert sub in SUBCOMMANDS, f"{unit}: {line}"


def test_jobs_record_their_result():
    recon = unit_file("tradeops-recon.service")
    assert one(recon, "Service", "Type") == "oneshot"
    assert one(recon, "Service", "ExecCondition") == "/usr/libexec/tradeops/trading-day"
    assert "tradeops-job-status@failed:%n.service" in one(recon, "Unit", "OnFailure")
    assert "tradeops-autoheal.service" in one(recon, "Unit", "OnSuccess")
    heal = unit_file("tradeops-autoheal.service")
    assert "tradeops-job-status@failed:%n.service" in one(heal, "Unit", "OnFailure")


def test_sysusers_and_tmpfiles_with_the_real_tools(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for f in ("passwd", "group", "shadow", "gshadow"):
        (root / "etc" / f).write_text("root:x:0:0:root:/root:/bin/bash\n" if f == "passwd" else
                                      "root:x:0:\n" if f == "group" else "root:*::\n" if f == "gshadow"
                                      else "root:*:19000:0:99999:7:::\n")
    r = subprocess.run(["systemd-sysusers", f"--root={root}", str(UNITS / "tradeops.sysusers")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    entry = [ln for ln in (root / "etc/passwd").read_text().splitlines() if ln.startswith("tradeops:")]
    assert entry and entry[0].endswith(":/var/lib/tradeops:/usr/sbin/nologin"), entry
    r = subprocess.run(["systemd-tmpfiles", f"--root={root}", "--create", str(UNITS / "tradeops.tmpfiles")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    uid = int(entry[0].split(":")[2])
    for d, mode, owner in (("etc/tradeops", 0o750, 0), ("etc/tradeops/secrets", 0o750, 0),
                           ("var/lib/tradeops/jobs", 0o750, uid)):
        st = (root / d).stat()
        assert (st.st_mode & 0o7777, st.st_uid) == (mode, owner), d


# --- the ExecCondition wrapper, with the real calendar -------------------------------------

def _ist_today() -> str:
    return dt.datetime.now(zoneinfo.ZoneInfo("Asia/Kolkata")).date().isoformat()


def _trading_day(tmp_path, calendar_toml: str) -> subprocess.CompletedProcess:
    cfg = tmp_path / "tradeops.toml"
    cfg.write_text(calendar_toml)
    env = {"PATH": "/usr/bin:/bin", "TRADEOPS": str(VENV_TRADEOPS), "TRADEOPS_CONFIG": str(cfg)}
    return subprocess.run([str(UNITS / "trading-day")], env=env, capture_output=True, text=True, timeout=60)


def test_trading_day_wrapper_runs_on_a_trading_day(tmp_path):
    today = _ist_today()
    r = _trading_day(tmp_path, f'[calendar]\nspecial_sessions = [{{ date = "{today}", open = "09:15", close = "15:30" }}]\n')
    assert r.returncode == 0, r.stdout + r.stderr


def test_trading_day_wrapper_skips_a_holiday(tmp_path):
    r = _trading_day(tmp_path, f'[calendar]\nholidays = ["{_ist_today()}"]\n')
    # 3, not 1: the recon units list 1 in SuccessExitStatus=, which would make systemd run them
    assert r.returncode == 3 and "not a trading day" in r.stdout
    for unit in ("tradeops-recon.service", "tradeops-autoheal.service"):
        assert "3" not in one(unit_file(unit), "Service", "SuccessExitStatus").split()


def test_trading_day_wrapper_fails_loudly_on_a_broken_config(tmp_path):
    """ExecCondition exit 2 would silently skip the recon: the wrapper turns it into 255."""
    r = _trading_day(tmp_path, '[calendar]\nholidays = ["not-a-date"]\n')
    assert r.returncode == 255
    assert "holidays[0]" in r.stderr and "failing the job" in r.stderr


# --- the OnFailure/OnSuccess hook, against the local stack's real Pushgateway --------------

def _job_status(tmp_path, arg: str, pushgateway: str, extra_env=None) -> subprocess.CompletedProcess:
    cfg = tmp_path / "tradeops.toml"
    cfg.write_text(f'[recon]\npushgateway_url = "{pushgateway}"\n')
    env = {"PATH": "/usr/bin:/bin", "TRADEOPS_CONFIG": str(cfg), "STATE_DIRECTORY": str(tmp_path / "state"),
           **(extra_env or {})}
    return subprocess.run([str(VENV_PY), str(UNITS / "job-status"), arg], env=env,
                          capture_output=True, text=True, timeout=60)


def _pushgateway_metrics(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
        return resp.read().decode()


def _delete_group(url: str, unit: str) -> None:
    req = urllib.request.Request(f"{url}/metrics/job/tradeops_job_status/unit/{unit}", method="DELETE")
    urllib.request.urlopen(req, timeout=5).close()


@pytest.mark.integration
def test_job_status_records_failure_and_success(tmp_path, base_cfg):
    url = base_cfg.recon.pushgateway_url
    unit = f"tradeops-test-{uuid.uuid4().hex[:8]}.service"
    try:
        r = _job_status(tmp_path, f"failed:{unit}", url,
                        {"MONITOR_SERVICE_RESULT": "exit-code", "MONITOR_EXIT_STATUS": "2"})
        assert r.returncode == 0, r.stdout + r.stderr
        record = json.loads((tmp_path / "state" / "jobs" / f"{unit}.json").read_text())
        assert record["result"] == "failed" and record["service_result"] == "exit-code"
        assert record["exit_status"] == "2"
        text = _pushgateway_metrics(url)
        assert re.search(rf'tradeops_job_failed\{{[^}}]*unit="{re.escape(unit)}"[^}}]*\}} 1', text), text[-2000:]
        assert 'tradeops_job_last_failure_timestamp_seconds{' in text
        r = _job_status(tmp_path, f"ok:{unit}", url)
        assert r.returncode == 0, r.stderr
        text = _pushgateway_metrics(url)
        assert re.search(rf'tradeops_job_failed\{{[^}}]*unit="{re.escape(unit)}"[^}}]*\}} 0', text)
        # POST semantics: the failure time is kept next to the success time
        group = [ln for ln in text.splitlines() if f'unit="{unit}"' in ln and not ln.startswith("#")]
        names = {ln.split("{")[0] for ln in group}
        assert {"tradeops_job_last_failure_timestamp_seconds",
                "tradeops_job_last_success_timestamp_seconds"} <= names
    finally:
        _delete_group(url, unit)


def test_job_status_keeps_the_record_when_the_push_fails(tmp_path):
    r = _job_status(tmp_path, "failed:tradeops-recon.service", "http://127.0.0.1:9")
    assert r.returncode == 1
    assert "push to http://127.0.0.1:9 failed" in r.stderr
    record = json.loads((tmp_path / "state/jobs/tradeops-recon.service.json").read_text())
    assert record["result"] == "failed"


def test_job_status_rejects_bad_arguments(tmp_path):
    r = _job_status(tmp_path, "oops", "http://127.0.0.1:9")
    assert r.returncode == 2 and "expected failed:UNIT or ok:UNIT" in r.stderr
    assert not (tmp_path / "state").exists()


def test_job_status_survives_a_broken_config(tmp_path):
    cfg = tmp_path / "tradeops.toml"
    cfg.write_text("[recon\n")
    env = {"PATH": "/usr/bin:/bin", "TRADEOPS_CONFIG": str(cfg), "STATE_DIRECTORY": str(tmp_path / "s")}
    r = subprocess.run([str(VENV_PY), str(UNITS / "job-status"), "failed:x.service"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert "config not usable" in r.stderr and "not valid TOML" in r.stderr
    assert (tmp_path / "s/jobs/x.service.json").is_file()
    assert os.access(UNITS / "job-status", os.X_OK) and os.access(UNITS / "trading-day", os.X_OK)


def test_job_status_rejects_a_unit_that_would_escape_its_folder(tmp_path):
    """The instance is passed raw (%i): '/' never reaches a path."""
    r = _job_status(tmp_path, "failed:../../etc/x.service", "http://127.0.0.1:9")
    assert r.returncode == 2
    hook = unit_file("tradeops-job-status@.service")
    assert one(hook, "Service", "ExecStart").endswith("job-status %i")


def test_job_status_reports_an_unwritable_state_dir_in_one_line(tmp_path):
    (tmp_path / "state").write_text("a file, not a folder")
    r = _job_status(tmp_path, "failed:tradeops-recon.service", "http://127.0.0.1:9")
    assert r.returncode == 1 and "cannot write the record" in r.stderr and "Traceback" not in r.stderr


def test_job_status_records_nothing_for_a_skipped_run(tmp_path):
    """systemd 252 triggers OnSuccess= when ExecCondition= skipped the job: no record, no push."""
    r = _job_status(tmp_path, "ok:tradeops-recon.service", "http://127.0.0.1:9",
                    {"MONITOR_SERVICE_RESULT": "exec-condition"})
    assert r.returncode == 0 and "nothing recorded" in r.stdout, r.stderr
    assert not (tmp_path / "state").exists()


# --- the session the after-close jobs reconcile, with the real calendar -------------------

def _session_date(tmp_path, calendar_toml: str) -> subprocess.CompletedProcess:
    cfg = tmp_path / "tradeops.toml"
    cfg.write_text(calendar_toml)
    return subprocess.run([str(VENV_PY), str(UNITS / "session-date")], env={"PATH": "/usr/bin:/bin",
                          "TRADEOPS_CONFIG": str(cfg)}, capture_output=True, text=True, timeout=60)


def _load_session_date():
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.SourceFileLoader("session_date", str(UNITS / "session-date"))
    spec = importlib.util.spec_from_loader("session_date", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def test_session_date_after_the_close_is_today_before_it_the_previous_session():
    """Timer run at 16:15 IST -> today; a catch-up at Monday 09:00 -> the Friday before;
    Saturday -> Friday; the day after a holiday, before the close -> the day before it."""
    from tradeops.config import loads

    mod = _load_session_date()
    ist = zoneinfo.ZoneInfo("Asia/Kolkata")
    cfg = loads('[calendar]\nholidays = ["2026-12-07"]\n')
    at = lambda s: dt.datetime.fromisoformat(s).replace(tzinfo=ist)  # noqa: E731
    assert mod.session_date(cfg, at("2026-12-03T16:15")) == dt.date(2026, 12, 3)  # Thu after close
    assert mod.session_date(cfg, at("2026-12-03T15:29")) == dt.date(2026, 12, 2)  # Thu before close
    assert mod.session_date(cfg, at("2026-12-05T10:00")) == dt.date(2026, 12, 4)  # Sat -> Fri
    assert mod.session_date(cfg, at("2026-12-07T16:15")) == dt.date(2026, 12, 4)  # holiday Mon -> Fri
    assert mod.session_date(cfg, at("2026-12-08T09:00")) == dt.date(2026, 12, 4)  # Tue catch-up -> Fri
    # the same instant given in UTC: 10:45 UTC is 16:15 IST
    assert mod.session_date(cfg, dt.datetime(2026, 12, 3, 10, 45, tzinfo=dt.UTC)) == dt.date(2026, 12, 3)


def test_session_date_command_prints_a_date_and_fails_in_one_line(tmp_path):
    r = _session_date(tmp_path, "[calendar]\n")
    assert r.returncode == 0 and re.fullmatch(r"\d{4}-\d\d-\d\d\n", r.stdout), r.stderr
    r = _session_date(tmp_path, '[calendar]\ntimezone = "Mars/Olympus"\n')
    assert r.returncode == 2 and r.stderr.startswith("session-date: tradeops.toml: [calendar].timezone")
    assert "Traceback" not in r.stderr
