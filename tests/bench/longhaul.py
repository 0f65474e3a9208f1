#!/usr/bin/env python3
"""Long-haul throughput: one stream through an SSH tunnel over a path with a long round trip.

    MOLETUN_BIN=build-bench/moletun [MOLETUN_BASE_BIN=old/moletun] \\
        python3 tests/bench/longhaul.py [--delays 0,40,100] [--down-mib 256] [--up-mib 64]
        [--slow-mib 64] [--reps 1] [--loop-mib 512] [--loop-reps 3] [--pg] [--pg-only]

A relay (delayrelay.c, compiled here) sits in front of the sidecar sshd and holds every
chunk D ms in each direction: a round trip of 2 x D for the SSH session. It buffers
without limit, so it models the round trip (what bounds a channel's receive window) but
not TCP's own window or a bottleneck queue; D = 0 means no relay (loopback). Columns:

  direct        client -> relay(D) -> target, no SSH: what the relay itself carries
  moletun       $MOLETUN_BIN, defaults (channel_window_max 32M)
  moletun_base  $MOLETUN_BASE_BIN (the starting point to compare with), when given
  ssh_aes128    ssh -N -L -o Ciphers=aes128-ctr -o MACs=hmac-sha2-256

Figures per delay: one connection's download (target -> client) and upload MB/s
(tcpbench.c, median of the repetitions; sizes and repetitions per the options, smaller
downloads for moletun_base's fixed windows on long paths). With --pg, also pg_basebackup of a ~1 GB PostgreSQL 15
cluster (pgbench -i -s 70) through each tunnel at the first non-zero delay, tar to stdout
into a byte counter: seconds and MB/s. The load average is printed before and after.
"""

import argparse
import json
import os
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

import bench  # noqa: E402
import harness  # noqa: E402
from bench import R, spawn, stop_proc  # noqa: E402
from harness import Sidecar, free_port  # noqa: E402

MIB = 1 << 20
PG_BIN = "/usr/lib/postgresql/15/bin"


class Via:
    """The sidecar as seen through a relay port (what tunnels connect to)."""

    def __init__(self, sc, port):
        self.sc, self.port = sc, port
        self.listen, self.user, self.user_key = sc.listen, sc.user, sc.user_key

    def write_known_hosts(self, path):
        return self.sc.write_known_hosts(path, port=self.port)


def compile_helper(tmp, name):
    """Compiles tests/bench/NAME.c into tmp (cc -O2); returns the binary's path."""
    path = os.path.join(tmp, name)
    subprocess.run(["cc", "-O2", "-pthread", "-o", path, os.path.join(HERE, name + ".c")],
                   check=True)
    return path


class moletun_bin_as:
    """With-block: $MOLETUN_BIN is `path` (the binary harness.Moletun starts), then as before."""

    def __init__(self, path):
        self.path, self.old = path, None

    def __enter__(self):
        self.old = os.environ.get("MOLETUN_BIN")
        os.environ["MOLETUN_BIN"] = self.path

    def __exit__(self, *exc):
        if self.old is None:
            os.environ.pop("MOLETUN_BIN", None)
        else:
            os.environ["MOLETUN_BIN"] = self.old


def start_relay(ctx, listen_port, target_port, delay_ms):
    p = spawn([ctx.relay, str(listen_port), str(target_port), str(delay_ms)],
              os.path.join(ctx.tmp, "relay-%d.log" % listen_port))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with open(p.log_path) as f:
            if "ready" in f.read():
                return p
        time.sleep(0.02)
    raise RuntimeError("relay did not start")


def moletun_tunnel(ctx, binpath, via, fwds, name, keys=None):
    with moletun_bin_as(binpath):
        t = bench.MoletunTunnels(ctx, [("lh", via, fwds, keys or {})], name)
    t.binpath = binpath
    return t


def window_status(t):
    """The forward's window figures from `ctl status --json` (new binaries only)."""
    r = subprocess.run([t.binpath, "ctl", "-s", t.m.control_socket, "status", "--json"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True)
    try:
        f = json.loads(r.stdout)["tunnels"][0]["forwards"][0]
        return f.get("window_largest_bytes"), f.get("window_total_bytes")
    except (ValueError, KeyError, IndexError):
        return None, None


def tb_watching(ctx, tunnel, args, delay):
    """bench.tb() while sampling the forward's windows every 100 ms: the largest seen."""
    p = subprocess.Popen([bench.TB] + [str(a) for a in args], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, universal_newlines=True)
    seen = ctx.windows.get(("moletun", delay), (0, 0))
    while p.poll() is None:
        largest, total = window_status(tunnel)
        if largest is not None and largest > seen[0]:
            seen = (largest, total)
        time.sleep(0.1)
    ctx.windows[("moletun", delay)] = seen
    out = p.stdout.read().strip().splitlines()
    last = out[-1] if out else "(no output, exit %d)" % p.returncode
    return (last.split()[1:], None) if last.startswith("OK ") else (None, last)


def measure(ctx, ports, delay, tunnels):
    """Every tool's download and upload, the tools taking turns within each repetition (so
    a drift of the shared machine hits them alike); medians."""
    a = ctx.args
    reps = a.loop_reps if delay == 0 else a.reps
    vals = {}
    for _ in range(reps):
        for direction in ("down", "up"):
            for tool, port in ports.items():
                if delay == 0:
                    mib = a.loop_mib
                elif direction == "up":
                    mib = a.up_mib
                else:
                    # a 512K window moves 512K per round trip: a smaller download says as much
                    mib = a.slow_mib if tool == "moletun_base" else a.down_mib
                if tool == "moletun" and direction == "down":
                    out, err = tb_watching(ctx, tunnels[tool], [direction, port, mib * MIB, 1,
                                                                 600], delay)
                else:
                    out, err = bench.tb([direction, port, mib * MIB, 1, 600], timeout=660)
                if out is None:
                    R.error("%s %s at 2x%d ms: %s" % (tool, direction, delay, err))
                    continue
                vals.setdefault((tool, direction), []).append(float(out[0]))
    for (tool, direction), v in vals.items():
        name = "d%03d_%s" % (delay, direction)
        R.add("long haul (2 x D ms)", name, "MB/s", tool, statistics.median(v))
        if len(v) > 1:
            print("  (%s %s: %s)" % (name, tool, ", ".join("%.1f" % x for x in v)), flush=True)


def pg_cluster(ctx):
    import pwd
    pw = pwd.getpwnam("postgres")
    d = tempfile.mkdtemp(prefix="moletun-longhaul-pg-")
    os.chown(d, pw.pw_uid, pw.pw_gid)
    ctx.pg_port = free_port()

    def pgstop():
        subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(PG_BIN, "pg_ctl"), "-D",
                        os.path.join(d, "data"), "-m", "immediate", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(d, ignore_errors=True)

    bench._cleanups.append(pgstop)
    pg = lambda *a: subprocess.run(["runuser", "-u", "postgres", "--"] + list(a), check=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    pg(os.path.join(PG_BIN, "initdb"), "-D", os.path.join(d, "data"), "-A", "trust", "-U",
       "postgres", "--no-sync")
    with open(os.path.join(d, "data", "pg_hba.conf"), "a") as f:
        f.write("host replication all 127.0.0.1/32 trust\n")
    pg(os.path.join(PG_BIN, "pg_ctl"), "-D", os.path.join(d, "data"), "-l",
       os.path.join(d, "log"), "-w", "-t", "60", "-o",
       "-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off -c full_page_writes=off "
       "-c max_wal_senders=4" % (ctx.pg_port, d), "start")
    t0 = time.monotonic()
    subprocess.run(["pgbench", "-i", "-q", "-s", "70", "-h", "127.0.0.1", "-p", str(ctx.pg_port),
                    "-U", "postgres", "postgres"], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(ctx.pg_port), "-U", "postgres", "-c",
                    "CHECKPOINT", "postgres"], check=True, stdout=subprocess.DEVNULL)
    size = subprocess.run(["du", "-sb", os.path.join(d, "data")], stdout=subprocess.PIPE,
                          universal_newlines=True).stdout.split()[0]
    print("pg cluster: %.0f MB on disk, filled in %.0f s" % (int(size) / 1e6,
                                                             time.monotonic() - t0), flush=True)


def basebackup(ctx, port, tool, delay):
    """pg_basebackup -Ft -D - (tar to stdout) into a byte counter; seconds, MB."""
    t0 = time.monotonic()
    p = subprocess.Popen([os.path.join(PG_BIN, "pg_basebackup"), "-h", "127.0.0.1", "-p",
                          str(port), "-U", "postgres", "-D", "-", "-Ft", "-X", "fetch",
                          "--checkpoint=fast"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    n = 0
    while True:
        b = p.stdout.read1(1 << 20)
        if not b:
            break
        n += len(b)
    rc = p.wait()
    dt = time.monotonic() - t0
    if rc != 0:
        R.error("%s pg_basebackup at 2x%d ms: %s" % (tool, delay, p.stderr.read()[-300:]))
        return
    R.add("pg_basebackup ~1 GB", "pg_basebackup_d%03d" % delay, "s", tool, dt, better="lower")
    print("  (pg_basebackup %s: %d bytes, %.1f MB/s)" % (tool, n, n / dt / 1e6), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--delays", default="0,40,100", help="one-way delays in ms (0: no relay)")
    ap.add_argument("--down-mib", type=int, default=256, help="download size, delay > 0")
    ap.add_argument("--slow-mib", type=int, default=64,
                    help="download size of moletun_base (fixed 512K windows), delay > 0")
    ap.add_argument("--up-mib", type=int, default=64, help="upload size, delay > 0")
    ap.add_argument("--reps", type=int, default=1, help="repetitions, delay > 0 (median)")
    ap.add_argument("--loop-mib", type=int, default=512, help="sizes on loopback (delay 0)")
    ap.add_argument("--loop-reps", type=int, default=3, help="repetitions on loopback")
    ap.add_argument("--pg", action="store_true", help="also pg_basebackup at the first delay")
    ap.add_argument("--pg-only", action="store_true", help="only pg_basebackup")
    ap.add_argument("--pg-skip-base", action="store_true",
                    help="no pg_basebackup through moletun_base (its 512K windows take minutes)")
    ctx = bench.Ctx()
    ctx.args = args = ap.parse_args()
    delays = [int(x) for x in args.delays.split(",") if x.strip()]
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    harness.raise_fd_limit()
    harness.require_sshd()
    ctx.tmp = tempfile.mkdtemp(prefix="moletun-longhaul-")
    ctx.windows = {}
    os.chmod(ctx.tmp, 0o700)
    base_bin = os.environ.get("MOLETUN_BASE_BIN")
    tools = ["direct", "moletun"] + (["moletun_base"] if base_bin else []) + ["ssh_aes128"]
    bench.COLUMNS[:] = tools
    bench.TOOL_LABEL["moletun_base"] = "moletun (start)"
    try:
        bench.TB = compile_helper(ctx.tmp, "tcpbench")
        ctx.relay = compile_helper(ctx.tmp, "delayrelay")
        print("moletun: %s\nmoletun_base: %s\nload average before: %s" % (
            harness.moletun_bin(), base_bin or "-", open("/proc/loadavg").read().strip()),
            flush=True)
        target, tport = bench.start_target(ctx.tmp)
        taddr = "127.0.0.1:%d" % tport
        permit = [taddr]
        if args.pg or args.pg_only:
            pg_cluster(ctx)
            permit.append("127.0.0.1:%d" % ctx.pg_port)
        sc = Sidecar(ctx.tmp, permit_open=permit).start()
        for delay in delays:
            if args.pg_only:
                break
            relays = []
            if delay > 0:
                rport, dport = free_port(), free_port()
                relays = [start_relay(ctx, rport, sc.port, delay),
                          start_relay(ctx, dport, tport, delay)]
                via = Via(sc, rport)
            else:
                dport, via = tport, Via(sc, sc.port)
            ports, tunnels = {"direct": dport}, {}
            for tool in tools[1:]:
                lp = free_port()
                if tool == "ssh_aes128":
                    t = bench.SshTunnel(ctx, via, [(lp, taddr)], tool=tool, name="ssh-%d" % delay)
                else:
                    t = moletun_tunnel(ctx, base_bin if tool == "moletun_base" else
                                       harness.moletun_bin(), via, [(lp, taddr)],
                                       "%s-%d" % (tool, delay))
                t.wait_up(30)
                ports[tool], tunnels[tool] = lp, t
            time.sleep(0.5)  # the first keepalive round trips
            measure(ctx, ports, delay, tunnels)
            for t in tunnels.values():
                t.stop()
            for r in relays:
                stop_proc(r)
        if args.pg or args.pg_only:
            delay = next((d for d in delays if d > 0), 40)
            rport = free_port()
            relay = start_relay(ctx, rport, sc.port, delay)
            via = Via(sc, rport)
            paddr = "127.0.0.1:%d" % ctx.pg_port
            basebackup(ctx, ctx.pg_port, "direct", 0)
            for tool in tools[1:]:
                if tool == "moletun_base" and args.pg_skip_base:
                    continue
                lp = free_port()
                if tool == "ssh_aes128":
                    t = bench.SshTunnel(ctx, via, [(lp, paddr)], tool=tool, name="ssh-pg")
                    t.forwards = []  # not an echo target: wait_up cannot check it
                    time.sleep(1.5)
                else:
                    t = moletun_tunnel(ctx, base_bin if tool == "moletun_base" else
                                       harness.moletun_bin(), via, [(lp, paddr)], tool + "-pg",
                                       keys={"probe": "none"})
                    t.wait_up(30)
                time.sleep(0.5)
                basebackup(ctx, lp, tool, delay)
                t.stop()
            stop_proc(relay)
        print("load average after: %s" % open("/proc/loadavg").read().strip())
    finally:
        bench.cleanup(ctx)
    print()
    print(R.table())
    for (tool, delay), (largest, total) in sorted(ctx.windows.items()):
        print("largest window seen during downloads at 2x%d ms (%s): %s (total %s)" % (
            delay, tool, largest, total))
    if R.errors:
        print("\nerrors seen (%d):" % len(R.errors))
        for e in R.errors:
            print("  - " + e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
