#!/usr/bin/env python3
"""The service gap of a restart: moletun against `ssh -N -L`, both under systemd.

    MOLETUN_BIN=build/moletun python3 tests/bench/restart_gap.py [--reps 5]

Boots systemd 252 in systemd-nspawn (tests/integration/nspawn.py; host network, so the
sidecar sshd and the echo target run on the host's 127.0.0.1), installs the build with
`meson install --destdir` and runs three services side by side, each forwarding its own
local port to the same echo target through the same sshd:

  moletun       the installed moletun.service (FD store), the tunnel with moletun's
                defaults for holding clients (start_hold 5s, down_hold 0)
  moletun_sh0   the same unit and binary, start_hold = 0 (the default before start_hold)
  ssh_L         ssh -N -L (aes128-ctr + hmac-sha2-256) in a Type=simple unit with the
                same Restart=always / RestartSec=1

For each service and each way of restarting it (`systemctl restart`; SIGKILL followed by
Restart=always), --reps times: a client opens a new connection every 10 ms (each in its
own thread, tests/integration/restart_probe.py), sends a line and waits for the echo.
Figures per service and action:
  gap       seconds from the restart command to the first successful round trip through
            the new process (the first echo of a connection begun after the old process
            was gone); median and worst over the repetitions
  refused   connections refused (ECONNREFUSED) during all repetitions
  closed    connections accepted and closed without their echo
  attempts  connections begun from the command until service was back
Output: `BENCH name=... tool=... value=... unit=...` lines as measured, then a table.
No pass/fail: exit 0 unless the bench could not run.
"""

import argparse
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import harness  # noqa: E402
import nspawn  # noqa: E402
from harness import EchoServer, Sidecar, free_port, tunnel_section  # noqa: E402
from restart_probe import Prober, ProcessWatch  # noqa: E402

INSTALL = "/opt/moletun"
FILES = "/opt/moletun-test"
ACTIONS = ("restart", "sigkill")
TOOLS = ("moletun", "moletun_sh0", "ssh_L")


def log(msg):
    print(msg, flush=True)


class Bench:
    def __init__(self, reps):
        self.reps = reps
        self.results = {}  # (tool, action) -> list of dicts

    def setup(self):
        reason = nspawn.unavailable_reason()
        if reason:
            sys.exit("restart_gap: cannot run: " + reason)
        harness.raise_fd_limit()
        self.tmp = tempfile.mkdtemp(prefix="moletun-restart-gap-")
        os.chmod(self.tmp, 0o755)
        build_dir = os.path.dirname(os.path.abspath(harness.moletun_bin()))
        dest = nspawn.meson_install(build_dir, self.tmp)
        unit_path = nspawn.find_installed(dest, "moletun.service", ("systemd/system",))
        sysusers = nspawn.find_installed(dest, "moletun.conf", ("sysusers.d",))
        files = os.path.join(self.tmp, "files")
        os.mkdir(files)
        os.chmod(files, 0o755)
        self.echo = EchoServer()
        self.sc = Sidecar(self.tmp, permit_open=[self.echo.addr])
        self.sc.start()
        self.c = nspawn.Container(self.tmp, {dest: INSTALL, files: FILES}, name="moletun-bench-%d" % os.getpid())
        self.c.boot()
        c = self.c
        c.run(["systemd-sysusers", INSTALL + sysusers[len(dest):]])
        uid = int(c.run(["id", "-u", "moletun"]).stdout.strip())
        gid = int(c.run(["id", "-g", "moletun"]).stdout.strip())
        for name, owner in (("id_moletun", (uid, gid)), ("id_root", (0, 0))):
            path = os.path.join(files, name)
            shutil.copy(self.sc.user_key, path)
            os.chown(path, *owner)
            os.chmod(path, 0o600)
        os.chmod(self.sc.write_known_hosts(os.path.join(files, "known_hosts")), 0o644)
        with open(unit_path) as f:
            unit = f.read()
        exec_start = re.search(r"^ExecStart=(\S+) run$", unit, re.M).group(1)
        self.ports = {t: free_port() for t in TOOLS}
        c.run(["mkdir", "-p", "/etc/moletun"])
        # Two instances of the installed unit: same file, own config and runtime dir each.
        for tool, hold in (("moletun", None), ("moletun_sh0", "0")):
            conf = "/etc/moletun/%s.conf" % tool
            c.write(conf, "[moletun]\ncontrol_socket = /run/%s/control.sock\n\n" % tool +
                    tunnel_section("db", self.sc, local_forward=[
                        "127.0.0.1:%d %s" % (self.ports[tool], self.echo.addr)],
                        identity_file=FILES + "/id_moletun",
                        known_hosts_file=FILES + "/known_hosts", defaults=False,
                        start_hold=hold), mode=0o640, owner="root:moletun")
            c.write("/etc/systemd/system/%s.service" % tool, unit)
            c.run(["mkdir", "-p", "/etc/systemd/system/%s.service.d" % tool])
            c.write("/etc/systemd/system/%s.service.d/bench.conf" % tool,
                    "[Service]\nExecStart=\nExecStart=%s%s run -c %s\nRuntimeDirectory=\n"
                    "RuntimeDirectory=%s\n" % (INSTALL, exec_start, conf, tool))
        c.write("/etc/systemd/system/ssh_L.service", """[Unit]
Description=ssh -N -L under systemd, as moletun's unit restarts it
StartLimitIntervalSec=0
[Service]
Type=simple
ExecStart=/usr/bin/ssh -N -L 127.0.0.1:%d:%s -p %d -i %s/id_root \\
  -o UserKnownHostsFile=%s/known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes \\
  -o ExitOnForwardFailure=yes -o ServerAliveInterval=5 -o ServerAliveCountMax=3 \\
  -o Ciphers=aes128-ctr -o MACs=hmac-sha2-256 %s@127.0.0.1
Restart=always
RestartSec=1
""" % (self.ports["ssh_L"], self.echo.addr, self.sc.port, FILES, FILES, self.sc.user))
        c.run(["systemctl", "daemon-reload"])
        for tool in TOOLS:
            c.run(["systemctl", "start", tool])

    def main_pid(self, tool):
        return int(self.c.show(tool + ".service", "MainPID")["MainPID"])

    def host_pid(self, tool):
        """The host pid of the service's main process (via its cgroup in the container)."""
        want = "/system.slice/%s.service" % tool
        for pid in harness.descendants(self.c.init_pid):
            try:
                with open("/proc/%d/cgroup" % pid) as f:
                    if any(line.rstrip().endswith(want) for line in f):
                        if _ppid(pid) == self.c.init_pid:
                            return pid
            except OSError:
                pass
        return None

    def wait_serving(self, tool, timeout=30.0):
        t = harness.wait_echo(self.ports[tool], timeout)
        if t is None:
            raise RuntimeError("%s does not serve on port %d" % (tool, self.ports[tool]))

    def one(self, tool, action):
        self.wait_serving(tool)
        time.sleep(0.3)  # a settled session: the old process is fully up
        old = self.host_pid(tool)
        prober = Prober(self.ports[tool], interval=0.01, timeout=20.0).start()
        time.sleep(0.2)
        watch = ProcessWatch(old)
        t0 = time.monotonic()
        try:
            if action == "restart":
                self.c.run(["systemctl", "restart", tool])
            else:
                self.c.run(["systemctl", "kill", "-s", "KILL", tool])
            gone = watch.wait(30)
            deadline = time.monotonic() + 30
            while prober.served_after(gone) is None and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.3)
        finally:
            watch.stop()
            prober.stop()
        after = [a for a in prober.attempts if a.start >= gone and a.outcome == "served"]
        back = min(a.end for a in after) if after else None
        window = [a for a in prober.attempts if a.start >= t0 and (back is None or a.start < back)]
        counts = prober.counts()
        return dict(gap=(back - t0) if back else None, refused=counts.get("refused", 0),
                    closed=counts.get("closed", 0), other=counts.get("timeout", 0) +
                    counts.get("error", 0), attempts=len(window))

    def run(self):
        for rep in range(self.reps):
            for action in ACTIONS:
                for tool in TOOLS:
                    r = self.one(tool, action)
                    self.results.setdefault((tool, action), []).append(r)
                    log("BENCH name=restart_gap_%s tool=%s value=%s unit=s refused=%d closed=%d "
                        "other=%d attempts=%d rep=%d" % (
                            action, tool, "ERR" if r["gap"] is None else "%.3f" % r["gap"],
                            r["refused"], r["closed"], r["other"], r["attempts"], rep + 1))

    def table(self):
        log("")
        log("Restart gap under systemd (%d repetitions; client connects every 10 ms)" % self.reps)
        log("%-12s %-8s %12s %10s %8s %8s %8s %9s" % (
            "service", "action", "gap median", "gap max", "refused", "closed", "other",
            "attempts"))
        for action in ACTIONS:
            for tool in TOOLS:
                rs = self.results.get((tool, action), [])
                gaps = [r["gap"] for r in rs if r["gap"] is not None]
                log("%-12s %-8s %11ss %9ss %8d %8d %8d %9d" % (
                    tool, action,
                    "%.3f" % statistics.median(gaps) if gaps else "ERR",
                    "%.3f" % max(gaps) if gaps else "ERR",
                    sum(r["refused"] for r in rs), sum(r["closed"] for r in rs),
                    sum(r["other"] for r in rs), sum(r["attempts"] for r in rs)))
        log("gap: restart command to the first echo through the new process; refused/closed/"
            "other: connections of all repetitions; attempts: begun before service was back")

    def cleanup(self):
        for obj in ("c",):
            if getattr(self, obj, None):
                getattr(self, obj).shutdown()
        for obj in ("sc", "echo"):
            if getattr(self, obj, None):
                getattr(self, obj).cleanup()
        if getattr(self, "tmp", None) and not os.environ.get("MOLETUN_BENCH_KEEP"):
            shutil.rmtree(self.tmp, ignore_errors=True)


def _ppid(pid):
    with open("/proc/%d/stat" % pid, "rb") as f:
        data = f.read()
    return int(data[data.rfind(b")") + 2:].split()[1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    b = Bench(args.reps)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        b.setup()
        b.run()
        b.table()
    finally:
        b.cleanup()
        harness.cleanup_everything()


if __name__ == "__main__":
    main()
