"""A throwaway real systemd, booted as PID 1 of private namespaces, for end-to-end tests.

What it does (facts in shared/notes/systemd-in-namespace.md):

- the launcher moves itself into a fresh cgroup under /sys/fs/cgroup/unified, then
  ``unshare --pid --fork --mount --uts --ipc --cgroup``: the network namespace is the
  host's, so units reach the test Kafka/PostgreSQL on 127.0.0.1 (use free ports for
  anything the units listen on);
- the namespace's PID 1 (a shell script) builds a root: an overlay of the host's / with
  its upper layer on a tmpfs (nothing the container writes reaches the host's disk: apt,
  dpkg and /etc/systemd writes all land in the tmpfs), fresh /proc (/proc/sys read-only),
  read-only /sys, cgroup2 at /sys/fs/cgroup (systemd runs unified), a minimal /dev, tmpfs
  /run and /tmp; masks the units that cannot run in a container; removes policy-rc.d (so
  maintainer scripts may start units); pivots into it, drops capabilities a container
  should not have, and execs ``/lib/systemd/systemd --system``;
- :meth:`run` drives it with ``nsenter -t <pid> -a`` (systemctl, journalctl, apt-get);
  :meth:`path` is the container's root seen from the host (``/proc/<pid>/root``);
- :meth:`stop` sends SIGRTMIN+4 (systemd's "poweroff" in a container), waits, removes the
  cgroup. The tmpfs goes with the mount namespace. Should the test process die first,
  PR_SET_PDEATHSIG kills unshare and ``--kill-child`` the container with it.

Never used to install anything on the host: every change lives in the container's tmpfs.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

CGROUP_BASE = Path("/sys/fs/cgroup/unified")
REPO = Path(__file__).resolve().parents[1]
BOOT_TARGET = "tradeops-test-boot.target"
_libc = ctypes.CDLL(None, use_errno=True)

# Units that cannot or must not run in the container.
MASK = [
    "systemd-udevd.service", "systemd-udevd-control.socket", "systemd-udevd-kernel.socket",
    "systemd-udev-trigger.service", "systemd-udev-settle.service", "systemd-sysctl.service",
    "systemd-modules-load.service", "kmod-static-nodes.service", "systemd-timesyncd.service",
    "systemd-binfmt.service", "proc-sys-fs-binfmt_misc.automount", "proc-sys-fs-binfmt_misc.mount",
    "sys-kernel-config.mount", "sys-kernel-debug.mount", "sys-kernel-tracing.mount",
    "sys-fs-fuse-connections.mount", "dev-hugepages.mount", "dev-mqueue.mount",
    "systemd-random-seed.service", "systemd-pstore.service", "getty.target",
    "getty@tty1.service", "console-getty.service", "serial-getty@.service",
    "systemd-logind.service", "systemd-journald-audit.socket", "systemd-remount-fs.service",
    "systemd-firstboot.service", "systemd-hwdb-update.service", "systemd-machine-id-commit.service",
    "systemd-networkd.service", "systemd-resolved.service", "networking.service",
    "cron.service", "ssh.service", "postgresql.service", "prometheus.service",
    "prometheus-pushgateway.service", "prometheus-node-exporter.service", "apt-daily.timer",
    "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer", "man-db.timer",
    "logrotate.timer", "dpkg-db-backup.timer", "systemd-tmpfiles-clean.timer",
    "exim4.service",
]

CAPS_DROP = "cap_sys_module,cap_sys_time,cap_sys_boot,cap_sys_rawio,cap_mknod,cap_syslog,cap_wake_alarm"

INNER = r"""#!/bin/bash
# PID 1 of the new namespaces: build the root, pivot into it, exec systemd.
set -euo pipefail
T="$1"; BOOT="$2"; MASKS="$3"; CAPS="$4"; KEEP="${5:-}"
mount -t tmpfs -o mode=755 tmpfs "$T"
mkdir -p "$T/upper" "$T/work" "$T/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$T/upper,workdir=$T/work" "$T/root"
R="$T/root"
mount -t proc proc "$R/proc"
mount --bind "$R/proc/sys" "$R/proc/sys"
mount -o remount,bind,ro "$R/proc/sys"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
mount -t cgroup2 -o nsdelegate cgroup2 "$R/sys/fs/cgroup" 2>/dev/null \
  || mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup"
mount -t tmpfs -o mode=755,nosuid tmpfs "$R/dev"
for d in null zero full random urandom tty; do touch "$R/dev/$d"; mount --bind "/dev/$d" "$R/dev/$d"; done
touch "$R/dev/console"; mount --bind /dev/null "$R/dev/console"
mkdir -p "$R/dev/pts" "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R/dev/shm"
ln -s /proc/self/fd "$R/dev/fd"; ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"; ln -s /proc/self/fd/2 "$R/dev/stderr"
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$R/run"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R/tmp"
# the checkout (and its .venv) must stay visible even when it lives under /tmp or /run,
# which the container covers with its own tmpfs (CI clones into a folder of its choosing)
if [ -n "$KEEP" ] && [ -d "$KEEP" ]; then mkdir -p "$R$KEEP"; mount --bind "$KEEP" "$R$KEEP"; fi
E="$R/etc/systemd/system"
mkdir -p "$E"
for u in $MASKS; do ln -sf /dev/null "$E/$u"; done
cat >"$E/$BOOT" <<EOF
[Unit]
Description=tradeops test container
Requires=basic.target
After=basic.target
AllowIsolate=yes
EOF
rm -f "$R/usr/sbin/policy-rc.d"
echo container-other >"$R/etc/hostname"
cd "$R"
mkdir -p .oldroot
pivot_root . .oldroot
cd /
umount -l /.oldroot
rmdir /.oldroot 2>/dev/null || true
exec capsh --drop="$CAPS" -- -c \
  "exec env -i container=other PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
   /lib/systemd/systemd --system --unit=$BOOT"
"""


class ContainerError(RuntimeError):
    pass


class SystemdContainer:
    """``with SystemdContainer() as c: c.run("systemctl", "status")``"""

    def __init__(self, name: str = "tradeops-e2e", boot_timeout_s: float = 60.0):
        self.name = f"{name}-{uuid.uuid4().hex[:8]}"
        self.boot_timeout_s = boot_timeout_s
        self.cgroup = CGROUP_BASE / self.name
        self.scratch = Path(tempfile.mkdtemp(prefix="tradeops-sdns."))
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None  # host pid of the container's systemd
        self.boot_seconds: float | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> SystemdContainer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if os.geteuid() != 0:
            raise ContainerError("a systemd container needs root")
        if not CGROUP_BASE.is_dir():
            raise ContainerError(f"{CGROUP_BASE} missing: no cgroup2 hierarchy for the container")
        self._sweep_stale()
        self.cgroup.mkdir()
        inner = self.scratch / "inner.sh"
        inner.write_text(INNER)
        inner.chmod(0o700)
        tmpfs_dir = self.scratch / "fs"
        tmpfs_dir.mkdir()
        procs = self.cgroup / "cgroup.procs"

        def into_cgroup() -> None:  # runs in the child, before exec of unshare
            procs.write_text(str(os.getpid()))
            # if the test process dies (killed, timed out), unshare gets SIGKILL, and its
            # --kill-child takes the container's PID 1, so the whole namespace, with it
            _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

        log = open(self.scratch / "launcher.log", "wb")  # noqa: SIM115 - kept open for the child
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--kill-child", "--mount", "--uts", "--ipc", "--cgroup",
             "--propagation", "private", "/bin/bash", str(inner), str(tmpfs_dir), BOOT_TARGET,
             " ".join(MASK), CAPS_DROP, str(REPO)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=into_cgroup, start_new_session=True,
        )
        log.close()
        self.pid = self._find_pid1()
        deadline = t0 + self.boot_timeout_s
        state = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ContainerError(f"container exited during boot: {self.launcher_log()}")
            r = self.run("systemctl", "is-system-running", check=False, timeout=10)
            state = r.stdout.strip()
            if state in ("running", "degraded"):
                self.boot_seconds = time.monotonic() - t0
                return
            time.sleep(0.2)
        raise ContainerError(f"systemd did not reach running in {self.boot_timeout_s}s (state {state!r}); "
                             f"failed units: {self.failed_units()}")

    def _find_pid1(self) -> int:
        """Host pid of the unshare child (PID 1 inside), once it runs systemd or the script."""
        assert self.proc is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
            try:
                kids = children.read_text().split()
            except OSError:
                kids = []
            if kids:
                pid = int(kids[0])
                # wait until PID 1 has exec'd systemd (nsenter needs the final namespaces/root)
                try:
                    exe = os.readlink(f"/proc/{pid}/exe")
                except OSError:
                    exe = ""
                if exe.endswith("/systemd"):
                    return pid
            if self.proc.poll() is not None:
                raise ContainerError(f"container launcher exited: {self.launcher_log()}")
            time.sleep(0.05)
        raise ContainerError(f"container's systemd did not start: {self.launcher_log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None and self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGRTMIN + 4)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                # systemd did not power off: end the namespace's PID 1 (takes all inside)
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None
        self._remove_cgroup()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _sweep_stale(self) -> None:
        """Empty cgroup folders left by a container whose test process was killed (rmdir
        of a cgroup that still has processes fails, so a live container is never touched)."""
        prefix = self.name.rsplit("-", 1)[0] + "-"
        for d in CGROUP_BASE.glob(prefix + "*"):
            for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                              reverse=True):
                with contextlib.suppress(OSError):
                    sub.rmdir()
            with contextlib.suppress(OSError):
                d.rmdir()

    def _remove_cgroup(self) -> None:
        deadline = time.monotonic() + 10
        while self.cgroup.exists() and time.monotonic() < deadline:
            for d in sorted((p for p in self.cgroup.rglob("*") if p.is_dir()),
                            key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    d.rmdir()
            try:
                self.cgroup.rmdir()
            except OSError:
                time.sleep(0.2)

    # -- driving it --------------------------------------------------------------------
    def run(self, *argv: str, check: bool = True, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess:
        """Run a command inside (all namespaces, the container's root)."""
        if self.pid is None:
            raise ContainerError("container not started")
        cmd = ["nsenter", "-t", str(self.pid), "-a", "--", *argv]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input,
                           env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                                "DEBIAN_FRONTEND": "noninteractive", "SYSTEMD_PAGER": "",
                                "SYSTEMD_COLORS": "0", "TZ": "UTC"})
        if check and r.returncode != 0:
            raise ContainerError(f"{shlex.join(argv)} -> exit {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def sh(self, script: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return self.run("/bin/sh", "-c", script, check=check, timeout=timeout)

    def path(self, inside: str) -> Path:
        """A path of the container, seen from the host."""
        return Path(f"/proc/{self.pid}/root") / inside.lstrip("/")

    def show(self, unit: str, *props: str) -> dict[str, str]:
        r = self.run("systemctl", "show", "--timestamp=unix", "-p", ",".join(props), unit)
        out = {}
        for line in r.stdout.splitlines():
            k, _, v = line.partition("=")
            out[k] = v
        return out

    def journal(self, unit: str, since: str | None = None) -> str:
        args = ["journalctl", "--no-pager", "-o", "short-unix", "-u", unit]
        if since:
            args += ["--since", since]
        return self.run(*args, check=False).stdout

    def failed_units(self) -> str:
        if self.pid is None:
            return "?"
        return self.run("systemctl", "--failed", "--no-legend", "--plain", check=False).stdout.strip()

    def launcher_log(self) -> str:
        try:
            return (self.scratch / "launcher.log").read_text(errors="replace")[-2000:]
        except OSError:
            return "(no launcher log)"
