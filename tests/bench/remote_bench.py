#!/usr/bin/env python3
"""Remote forwards over a long path: one stream from the server side to the local target.

    MOLETUN_BIN=build-bench/moletun [MOLETUN_BASE_BIN=old/moletun] \\
        python3 tests/bench/remote_bench.py [--delay 40] [--mib 128] [--reps 3] [--up]

A relay (delayrelay.c, as in longhaul.py) holding every chunk D ms each way sits in front of
the sidecar sshd. Each tool asks the sidecar for a remote forward (its own port on the
sidecar's 127.0.0.1) to a tcpbench target on this side; a client on the sidecar's side
then sends through it (tcpbench "up" to the forwarded port): the bytes flow server ->
channel -> tool -> local target, the receive window of the tool's channel being what the
round trip meets. --up also measures the other direction (target -> server), which sshd's
own window bounds. Columns:

  moletun       $MOLETUN_BIN, defaults (channel_window_max 32M)
  moletun_base  $MOLETUN_BASE_BIN, when given
  ssh_aes128    ssh -N -R -o Ciphers=aes128-ctr -o MACs=hmac-sha2-256

Figures: MB/s, medians of --reps repetitions, the tools taking turns in each.
"""

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)

import bench  # noqa: E402
import harness  # noqa: E402
from bench import spawn  # noqa: E402
from harness import Sidecar, free_port, tunnel_section  # noqa: E402
import longhaul  # noqa: E402
from longhaul import Via, start_relay  # noqa: E402

MIB = 1 << 20


def moletun_remote(ctx, binpath, via, rport, taddr, name):
    workdir = tempfile.mkdtemp(prefix=name + "-", dir=ctx.tmp)
    kh = via.write_known_hosts(os.path.join(workdir, "known_hosts"))
    m = harness.Moletun(workdir, tunnel_section(
        "rf", via, remote_forward=["127.0.0.1:%d %s" % (rport, taddr)], known_hosts_file=kh,
        identity_file=via.user_key, defaults=False, probe="none"))
    with longhaul.moletun_bin_as(binpath):
        m.start()
    ctx.moletuns.append(m)
    return m


def ssh_remote(ctx, via, rport, taddr):
    kh = via.write_known_hosts(os.path.join(ctx.tmp, "known_hosts_ssh"))
    args = (["ssh"] + bench.ssh_args(via, kh) +
            ["-R", "127.0.0.1:%d:%s" % (rport, taddr), "%s@%s" % (via.user, via.listen)])
    return spawn(args, os.path.join(ctx.tmp, "ssh-R.log"))


def measure(ctx, ports):
    a = ctx.args
    vals = {}
    # "up" to the forwarded port: client (server side) -> sshd -> channel -> tool -> target
    directions = [("down_to_target", "up")] + ([("up_from_target", "down")] if a.up else [])
    for _ in range(a.reps):
        for name, tb_dir in directions:
            for tool, port in ports.items():
                out, err = bench.tb([tb_dir, port, a.mib * MIB, 1, 300], timeout=360)
                print("BENCH name=remote_%s tool=%s value=%s unit=MB/s" % (
                    name, tool, out[0] if out else "ERR"), flush=True)
                if out is None:
                    print("ERROR %s %s: %s" % (tool, name, err), flush=True)
                    continue
                vals.setdefault((name, tool), []).append(float(out[0]))
    return vals


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--delay", type=int, default=40, help="one-way ms of the relay")
    ap.add_argument("--mib", type=int, default=128, help="MiB per transfer")
    ap.add_argument("--reps", type=int, default=3, help="repetitions (median)")
    ap.add_argument("--up", action="store_true", help="also target -> server")
    ctx = bench.Ctx()
    ctx.args = args = ap.parse_args()
    ctx.moletuns = []
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    harness.require_sshd()
    ctx.tmp = tempfile.mkdtemp(prefix="moletun-remote-bench-")
    os.chmod(ctx.tmp, 0o700)
    base_bin = os.environ.get("MOLETUN_BASE_BIN")
    tools = ["moletun"] + (["moletun_base"] if base_bin else []) + ["ssh_aes128"]
    try:
        bench.TB = longhaul.compile_helper(ctx.tmp, "tcpbench")
        ctx.relay = longhaul.compile_helper(ctx.tmp, "delayrelay")
        target, tport = bench.start_target(ctx.tmp)
        taddr = "127.0.0.1:%d" % tport
        rports = {t: free_port() for t in tools}
        sc = Sidecar(ctx.tmp, permit_listen=["127.0.0.1:%d" % p for p in rports.values()]).start()
        via = sc
        if args.delay:
            port = free_port()
            start_relay(ctx, port, sc.port, args.delay)
            via = Via(sc, port)
        print("remote bench: %s (base %s), %d MiB, 2 x %d ms, %d reps; load average %s" % (
            harness.moletun_bin(), base_bin or "-", args.mib, args.delay, args.reps,
            open("/proc/loadavg").read().strip()), flush=True)
        for tool in tools:
            if tool == "ssh_aes128":
                ssh_remote(ctx, via, rports[tool], taddr)
            else:
                moletun_remote(ctx, base_bin if tool == "moletun_base" else harness.moletun_bin(),
                               via, rports[tool], taddr, tool)
            if bench.wait_usable(rports[tool], 30) is None:
                raise RuntimeError("%s: remote forward not usable within 30 s" % tool)
        time.sleep(0.5)  # the first keepalive round trips
        vals = measure(ctx, rports)
        print("\nload average after: %s" % open("/proc/loadavg").read().strip())
        print("%-16s %s" % ("figure", "".join("%14s" % t for t in tools)))
        for name in sorted({k[0] for k in vals}):
            print("%-16s %s" % (name, "".join(
                "%14s" % ("%.1f" % statistics.median(vals[(name, t)]) if (name, t) in vals
                          else "ERR") for t in tools)))
            for t in tools:
                if (name, t) in vals:
                    print("  (%s %s: %s)" % (name, t, ", ".join("%.1f" % x for x in vals[(name, t)])))
    finally:
        for m in ctx.moletuns:
            m.cleanup()
        bench.cleanup(ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
