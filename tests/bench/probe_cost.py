#!/usr/bin/env python3
"""What target probes cost: 100 idle tunnels to one real sshd, each with a local forward to
a real TCP target, once with probe = tcp every 10 s (moletun's default) and once with
probes off, in the same run. Prints the daemon's CPU time as a share of one core and its
wakeups (context switches) per second over the same window, side by side.

    python3 tests/bench/probe_cost.py [--tunnels 100] [--seconds 60] [--interval 10s]

MOLETUN_BIN selects the binary (default build/moletun). Idle means no client traffic;
keepalives (5 s) run in both columns.
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness  # noqa: E402
from harness import EchoServer, Moletun, Sidecar, tunnel_section  # noqa: E402


def cpu_and_switches(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    switches = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
            for line in f:
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    switches += int(line.split()[1])
    return ticks / os.sysconf("SC_CLK_TCK"), switches


def measure(workdir, sc, target, n, seconds, probe, interval):
    sections = []
    for i in range(n):
        kh = sc.write_known_hosts(os.path.join(workdir, "kh%d" % i))
        sections.append(tunnel_section(
            "t%d" % i, sc, known_hosts_file=kh, defaults=False, probe=probe,
            probe_interval=interval,
            local_forward=["127.0.0.1:%d %s" % (harness.free_port(), target.addr)]))
    d = tempfile.mkdtemp(prefix="moletun-", dir=workdir)
    m = Moletun(d, sections, log_level="notice").start()
    deadline = time.monotonic() + 60
    while len([1 for i in range(n) if m.state("t%d" % i) == "up"]) < n:
        if time.monotonic() > deadline:
            raise SystemExit("not all %d tunnels came up" % n)
        time.sleep(0.2)
    time.sleep(12)  # let the first probes and keepalives settle
    cpu0, sw0 = cpu_and_switches(m.proc.pid)
    t0 = time.monotonic()
    time.sleep(seconds)
    cpu1, sw1 = cpu_and_switches(m.proc.pid)
    dt = time.monotonic() - t0
    probes = target.total
    m.stop()
    return 100.0 * (cpu1 - cpu0) / dt, (sw1 - sw0) / dt, probes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tunnels", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--interval", default="10s")
    a = ap.parse_args()
    harness.raise_fd_limit()
    workdir = tempfile.mkdtemp(prefix="moletun-probe-cost-")
    target = EchoServer()
    sc = Sidecar(workdir, permit_open=[target.addr])
    try:
        sc.start()
        rows = []
        for probe in ("none", "tcp"):
            before = target.total
            cpu, wakeups, total = measure(workdir, sc, target, a.tunnels, a.seconds, probe,
                                          a.interval)
            rows.append((probe, cpu, wakeups, total - before))
        print("%d idle tunnels, %.0f s window, probe_interval %s" % (
            a.tunnels, a.seconds, a.interval))
        print("%-12s %12s %14s %18s" % ("probe", "cpu % core", "wakeups/s", "target conns"))
        for probe, cpu, wakeups, conns in rows:
            print("%-12s %12.3f %14.1f %18d" % (probe, cpu, wakeups, conns))
        print("cost of probes: %+.3f %% of one core, %+.1f wakeups/s" % (
            rows[1][1] - rows[0][1], rows[1][2] - rows[0][2]))
    finally:
        harness.cleanup_everything()


if __name__ == "__main__":
    main()
