#!/usr/bin/env python3
"""moletun at scale: N tunnels in one daemon (issue "No client notices", item 5).

    MOLETUN_BIN=build-bench/moletun python3 tests/bench/scale.py [--tunnels 1000] [--quick]

As root (the descriptor limit, sshd). One `moletun run` with N tunnels (default 1000), each
its own SSH session with one local_forward on its own loopback port to one echo target
(tcpbench.c, compiled into the temp dir), spread over a few real OpenSSH sshd sidecars
(tests/integration/harness.py's `Sidecar`, `--servers`, default one per 250 tunnels) with
`MaxStartups N:30:2N` and `LoginGraceTime 60` (the harness's 100:30:200 drops connections
when hundreds arrive at once). OpenSSH keeps one process per session here (~1.6 MB private
each, 1.6 GB for 1000): that fits this machine's memory, so Dropbear is not needed. Every
tunnel keeps moletun's defaults: keepalive_interval 5 s x 3, probe = tcp every 10 s, the
sidecar audit once after connecting.

Figures for moletun (`BENCH name=... tool=moletun value=... unit=...` lines, then a table):
  up_first / up_median / up_all    s from `moletun run` until the first, the median and the
                                   last tunnel logged `-> up` (the harness timestamps each
                                   log line as it arrives); one `ctl status --json` then
                                   confirms all N are up
  up_cpu                           CPU seconds the daemon used until then (sshd's: a NOTE)
  private_up / private_idle        Private_Dirty of the daemon (smaps_rollup), MB, once all
                                   are up (+5 s) and after the idle window
  private_per_tunnel_kb            private_idle / N
  idle_cpu                         % of one core (utime+stime, /proc/PID/stat) over the idle
                                   window: 40 s (--quick 10 s), starting 5 s after all are up
  idle_wakeups                     context switches per second over the same window
  ctl_status_{p50,p99}             ms wall time of `moletun ctl status` (20 calls, --quick
                                   10), and of `ctl status --json`
  echo_ok                          forwards that echoed a round trip afterwards (all N)
Peer column (`--peer M`, default N; 0 skips): M `ssh -N -L` processes (aes128-ctr +
hmac-sha2-256, ServerAliveInterval 5, CountMax 3 like moletun's keepalive; ssh has no
probes, no audit) against the same sidecars: time from the first spawn until all M
listen (a ssh -L listens once it is authenticated), Private_Dirty summed over the processes, idle CPU and context switches
summed, over the same windows. Server side (sshd, all processes) is printed as a NOTE.

Every process started here (sshd, ssh, moletun, the target) is killed and the temp dir
removed at exit, also on Ctrl-C or SIGTERM; MOLETUN_BENCH_KEEP=1 keeps the temp dir.
"""

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)

import harness  # noqa: E402
from harness import Sidecar, free_port, tunnel_section  # noqa: E402
import bench  # noqa: E402
from bench import R, cpu_seconds, ctx_switches, smaps, spawn, stop_proc, tree  # noqa: E402

bench.TOOL_LABEL.update({"ssh_aes128": "ssh -N -L each"})
bench.COLUMNS[:] = ["moletun", "ssh_aes128"]


def mb(kb):
    return kb / 1024.0


def pct(vals, q):
    s = sorted(vals)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def listening_ports():
    """Loopback TCP ports in LISTEN state (/proc/net/tcp)."""
    out = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            if parts[3] == "0A":
                out.add(int(parts[1].split(":")[1], 16))
    return out


def start_sidecars(tmp, n_servers, n_conns, target_addr):
    per = max(1, (n_conns + n_servers - 1) // n_servers)
    out = []
    for _ in range(n_servers):
        sc = Sidecar(tmp, permit_open=[target_addr])
        with open(sc.config_path) as f:
            text = f.read()
        text = text.replace("MaxStartups 100:30:200", "MaxStartups %d:30:%d" % (per + 10, 2 * per + 20))
        text = text.replace("LoginGraceTime 20", "LoginGraceTime 60")
        text = text.replace("LogLevel VERBOSE", "LogLevel INFO")
        with open(sc.config_path, "w") as f:
            f.write(text)
        out.append(sc.start())
    return out


def sshd_pids(sidecars):
    return [p for sc in sidecars if sc.running() for p in tree(sc.proc.pid)]


def sshd_memory(sidecars):
    pids = sshd_pids(sidecars)
    return len(pids), smaps(pids)["Private_Dirty"]


def sshd_cpu(sidecars):
    return cpu_seconds(sshd_pids(sidecars))


def idle_window(pids_fn, seconds):
    """(% of one core, context switches per second) of pids over `seconds`."""
    pids = pids_fn()
    c0, s0, t0 = cpu_seconds(pids), ctx_switches(pids), time.monotonic()
    time.sleep(seconds)
    pids = pids_fn()
    c1, s1, t1 = cpu_seconds(pids), ctx_switches(pids), time.monotonic()
    return 100.0 * (c1 - c0) / (t1 - t0), (s1 - s0) / (t1 - t0)


def footprint(ctx, sec, tool, n, pids_fn):
    """Private memory once up and after the idle window, and the window's CPU and wakeups."""
    R.add(sec, "private_up", "MB", tool, mb(smaps(pids_fn())["Private_Dirty"]), better="lower")
    cpu, wake = idle_window(pids_fn, ctx.idle)
    pd_idle = smaps(pids_fn())["Private_Dirty"]
    R.add(sec, "private_idle", "MB", tool, mb(pd_idle), better="lower")
    R.add(sec, "private_per_tunnel_kb", "kB", tool, pd_idle / float(n), better="lower")
    R.add(sec, "idle_cpu", "% core", tool, cpu, better="lower")
    R.add(sec, "idle_wakeups", "/s", tool, wake, better="lower")
    nproc, pd_sshd = sshd_memory(ctx.sidecars)
    R.note("sshd side with %d %s sessions: %d processes, %.0f MB private" % (
        n, tool, nproc, mb(pd_sshd)))


def ctl(m, args, timeout=30):
    t0 = time.monotonic()
    r = subprocess.run([harness.moletun_bin(), "ctl", "-s", m.control_socket] + args,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    return time.monotonic() - t0, r


def status_json(m):
    _, r = ctl(m, ["status", "--json"])
    try:
        return json.loads(r.stdout)
    except ValueError:
        return None


def count_up(doc):
    tunnels = doc.get("tunnels", []) if isinstance(doc, dict) else []
    return sum(1 for t in tunnels if t.get("state") == "up"), len(tunnels)


def layout(ctx, n, tag):
    """[(sidecar, known_hosts file, local port)] for n tunnels, round robin over sidecars."""
    out, kh = [], {}
    for i in range(n):
        sc = ctx.sidecars[i % len(ctx.sidecars)]
        if sc not in kh:
            kh[sc] = sc.write_known_hosts(os.path.join(ctx.tmp, "kh_%s_%d" % (tag, sc.port)))
        out.append((sc, kh[sc], free_port()))
    return out


def bench_moletun(ctx, n, sec):
    print("== moletun: %d tunnels in one daemon" % n, flush=True)
    sections, ports = [], []
    for i, (sc, kh, lp) in enumerate(layout(ctx, n, "moletun")):
        ports.append(lp)
        sections.append(tunnel_section("t%d" % i, sc, known_hosts_file=kh, defaults=False,
                                       local_forward=["127.0.0.1:%d %s" % (lp, ctx.target_addr)]))
    workdir = tempfile.mkdtemp(prefix="moletun-", dir=ctx.tmp)
    m = harness.Moletun(workdir, sections)
    ctx.sshd_cpu0 = sshd_cpu(ctx.sidecars)
    m.start()
    deadline = time.monotonic() + ctx.up_timeout
    while True:
        ups = {}
        for t, name, _, new, _ in m.transitions():
            if new == "up" and name not in ups:
                ups[name] = t
        if len(ups) >= n or time.monotonic() > deadline or not m.running():
            break
        time.sleep(0.1)
    cpu_up = cpu_seconds([m.proc.pid]) if m.running() else None
    times = sorted(t - m.start_time for t in ups.values())
    if len(ups) < n:
        R.error("moletun: only %d of %d tunnels up after %d s" % (len(ups), n, ctx.up_timeout))
        steps = {}
        for _, _, _, new_state, why in m.transitions():
            if new_state == "backoff":
                k = why.split(";")[0]
                steps[k] = steps.get(k, 0) + 1
        R.note("moletun's reasons for backoff: " + "; ".join(
            "%dx %s" % (c, k) for k, c in sorted(steps.items(), key=lambda kv: -kv[1])[:5]))
        R.add(sec, "private_up", "MB", "moletun", mb(smaps([m.proc.pid])["Private_Dirty"]),
              better="lower")
        m.stop(timeout=30)
        m.cleanup()
        return
    R.add(sec, "up_first", "s", "moletun", times[0] if times else None, better="lower")
    R.add(sec, "up_median", "s", "moletun", statistics.median(times) if times else None,
          better="lower")
    R.add(sec, "up_all", "s", "moletun", times[-1] if len(ups) >= n else None, better="lower")
    R.add(sec, "up_cpu", "cpu-s", "moletun", cpu_up, better="lower")
    R.note("sshd CPU while moletun's tunnels came up: %.1f s (sessions alive at the end)" % (
        sshd_cpu(ctx.sidecars) - ctx.sshd_cpu0))
    nofile = m.grep(r"descriptor|RLIMIT|nofile")
    if nofile:
        R.note("moletun log on descriptors: " + nofile[0][1])
    time.sleep(5)
    up, total = count_up(status_json(m))
    R.note("ctl status --json once all logged up: %d of %d up" % (up, total))
    if up != n:
        R.error("ctl status --json shows %d of %d tunnels up" % (up, n))
    footprint(ctx, sec, "moletun", n, lambda: [m.proc.pid])
    for label, args in (("", ["status"]), ("_json", ["status", "--json"])):
        lat = []
        for _ in range(ctx.status_calls):
            dt, r = ctl(m, args)
            if r.returncode not in (0, 3, 4):
                R.error("ctl %s exited %d: %s" % (" ".join(args), r.returncode, r.stdout[-300:]))
            lat.append(dt * 1000.0)
        R.add(sec, "ctl_status%s_p50" % label, "ms", "moletun", pct(lat, 0.5), better="lower")
        R.add(sec, "ctl_status%s_p99" % label, "ms", "moletun", pct(lat, 0.99), better="lower")
    ok = sum(1 for p in ports if bench.echo_rt(p, timeout=5.0))
    R.add(sec, "echo_ok", "forwards", "moletun", ok)
    if ok != n:
        R.error("moletun: %d of %d forwards did not echo" % (n - ok, n))
    probs = [l for _, l in m.grep(r"\b(warn|warning|err|error|crit)\b")]
    if probs:
        R.error("moletun logged %d warning/error lines, first: %s" % (len(probs), " | ".join(probs[:3])))
    drops = [tr for tr in m.transitions() if tr[2] == "up"]
    if drops:
        R.error("moletun: %d transitions away from up, first: %s" % (len(drops), drops[0][4]))
    rc, dt = m.stop(timeout=30)
    R.note("moletun exited %s %.2f s after SIGTERM" % (rc, dt))
    m.cleanup()


def bench_ssh(ctx, n, sec):
    print("== peer: %d ssh -N -L processes" % n, flush=True)
    procs, ports = [], []
    plan = layout(ctx, n, "ssh")
    t0 = time.monotonic()  # from the first spawn, as moletun's from its start
    for i, (sc, kh, lp) in enumerate(plan):
        ports.append(lp)
        args = ["ssh"] + bench.ssh_args(sc, kh) + [
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
                "-L", "127.0.0.1:%d:%s" % (lp, ctx.target_addr),
                "%s@%s" % (sc.user, sc.listen)]
        procs.append(spawn(args, os.path.join(ctx.tmp, "ssh-%d.log" % i)))
    pending = set(ports)
    deadline = t0 + ctx.up_timeout
    first = None
    times = []
    while pending and time.monotonic() < deadline:
        got = pending & listening_ports()
        now = time.monotonic() - t0
        times += [now] * len(got)
        pending -= got
        if got and first is None:
            first = now
        time.sleep(0.05)
    dead = [p for p in procs if p.poll() is not None]
    if pending:
        R.error("ssh -L: %d of %d not listening after %d s (%d exited)" % (
            len(pending), n, ctx.up_timeout, len(dead)))
    R.add(sec, "up_first", "s", "ssh_aes128", first, better="lower")
    R.add(sec, "up_median", "s", "ssh_aes128", statistics.median(times) if times else None,
          better="lower")
    R.add(sec, "up_all", "s", "ssh_aes128", times[-1] if not pending else None, better="lower")
    time.sleep(5)

    def pids():
        return [p.pid for p in procs if p.poll() is None]

    footprint(ctx, sec, "ssh_aes128", n, pids)
    ok = sum(1 for p in ports if bench.echo_rt(p, timeout=5.0))
    R.add(sec, "echo_ok", "forwards", "ssh_aes128", ok)
    for p in procs:
        stop_proc(p)


class Ctx:
    pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tunnels", type=int, default=1000, help="tunnels in the daemon (1000)")
    ap.add_argument("--peer", type=int, default=-1,
                    help="ssh -N -L processes for the peer column (default: as many; 0 skips)")
    ap.add_argument("--servers", type=int, default=0,
                    help="sshd sidecars to spread the sessions over (default: one per 250)")
    ap.add_argument("--quick", action="store_true", help="10 s idle window, 10 status calls")
    ap.add_argument("--up-timeout", type=int, default=120, help="s to wait for all up (120)")
    args = ap.parse_args()

    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    signal.signal(signal.SIGHUP, lambda *a: sys.exit(129))
    signal.signal(signal.SIGINT, lambda *a: sys.exit(130))
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))
    except (ValueError, OSError):
        harness.raise_fd_limit()
    harness.require_sshd()
    n = args.tunnels
    peer = n if args.peer < 0 else args.peer
    ctx = Ctx()
    ctx.idle = 10.0 if args.quick else 40.0
    ctx.status_calls = 10 if args.quick else 20
    ctx.up_timeout = args.up_timeout
    ctx.tmp = tempfile.mkdtemp(prefix="moletun-scale-")
    os.chmod(ctx.tmp, 0o700)
    try:
        bench.TB = os.path.join(ctx.tmp, "tcpbench")
        subprocess.run(["cc", "-O2", "-pthread", "-o", bench.TB, os.path.join(HERE, "tcpbench.c")],
                       check=True)
        binpath = harness.moletun_bin()
        ver = subprocess.run([binpath, "--version"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, universal_newlines=True).stdout.strip()
        print("moletun: %s (%s)\nsoft RLIMIT_NOFILE: %d\nload average: %s" % (
            binpath, ver, resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            open("/proc/loadavg").read().strip()), flush=True)
        ctx.target_proc, port = bench.start_target(ctx.tmp)
        ctx.target_addr = "127.0.0.1:%d" % port
        servers = args.servers or max(1, (max(n, peer) + 249) // 250)
        ctx.sidecars = start_sidecars(ctx.tmp, servers, max(n, peer), ctx.target_addr)
        R.note("%d OpenSSH sshd sidecar(s), %d tunnels, peer %d ssh -L, idle window %d s" % (
            servers, n, peer, ctx.idle))
        sec = "%d tunnels" % n
        bench_moletun(ctx, n, sec)
        if peer:
            bench_ssh(ctx, peer, sec if peer == n else "%d ssh -L (peer)" % peer)
    finally:
        bench.cleanup(ctx)
        for sc in getattr(ctx, "sidecars", []):
            sc.cleanup()

    print()
    print("== results (%s run) ==" % ("quick" if args.quick else "full"))
    print(R.table())
    for title, lines in (("notes", R.notes), ("errors seen (%d)" % len(R.errors), R.errors)):
        if lines:
            print("\n%s:\n%s" % (title, "\n".join("  - " + t for t in lines)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
