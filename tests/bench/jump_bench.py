#!/usr/bin/env python3
"""proxy_jump benchmark: a tunnel through a bastion beside a direct one and `ssh -J`.

As root (network namespaces):

    MOLETUN_BIN=build/moletun [MOLETUN_BASE_BIN=old/moletun] \\
        python3 tests/bench/jump_bench.py [--quick] [--delay MS] [--mib N] [--reps N]
        [--window-max SIZE]

Topology (tests/integration/jumpnet.py): the bastion sshd in one network namespace on a
veth pair to this one; the sidecar sshd and a tcpbench target in a second namespace that
only the bastion reaches. For the direct rows a second sidecar and target sit in the
bastion's namespace, one veth hop away like the bastion itself. All sshd are real OpenSSH
configured like production (harness.Sidecar); every ssh client uses aes128-ctr +
hmac-sha2-256, the pair libssh2 1.10 negotiates.

Tools (columns):
  moletun_direct  moletun, one SSH session to the near sidecar
  moletun_jump    moletun, proxy_jump through the bastion to the far sidecar
  base_jump       $MOLETUN_BASE_BIN (the build to compare with) the same way, when given
  ssh_direct      ssh -N -L to the near sidecar
  ssh_jump        ssh -N -J bastion -L ... to the far sidecar
Figures: throughput over one connection (down, up; MB/s), and connect + first 64-byte
round trip (p50, p99; microseconds). With --delay D, a relay (delayrelay.c) holding every
chunk D ms each way sits in front of the bastion (a 2 x D ms path to it, as longhaul.py
models one), only the jump tools run, and the figures are the download and upload
medians of --reps repetitions, the tools taking turns in each. A tunnel that never comes up gets an ERROR line and
ERR in its column; the other columns are still measured. Exit 0 unless the bench itself
could not run.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)

import bench  # noqa: E402
import harness  # noqa: E402
import jumpnet  # noqa: E402
import longhaul  # noqa: E402
from harness import Sidecar, free_port, tunnel_section  # noqa: E402

MIB = 1 << 20
# --window-max: channel_window_max for the moletun tools ("" keeps their default)
WINDOW_MAX = [""]
TOOLS = ["moletun_direct", "moletun_jump", "base_jump", "ssh_direct", "ssh_jump"]
ROWS = [("throughput_1conn_down", "MB/s"), ("throughput_1conn_up", "MB/s"),
        ("connect_rtt_p50", "us"), ("connect_rtt_p99", "us")]


def start_target(tmp, ns):
    """A tcpbench target on 127.0.0.1 inside `ns`; returns (process, port)."""
    port = free_port()
    p = bench.spawn(jumpnet.netns_exec(ns) + [bench.TB, "serve", "127.0.0.1", str(port)],
                    os.path.join(tmp, "target-%s.log" % ns))
    for _ in range(250):
        with open(p.log_path) as f:
            if "ready" in f.read():
                return p, port
        if p.poll() is not None:
            break
        time.sleep(0.02)
    raise RuntimeError("target did not start in %s" % ns)


def ssh_config(path, n, kh, key):
    """A client config for both ssh rows: ssh -J passes -F on to the ssh it runs for the
    jump, so the bastion's settings (and the cipher) must come from a file."""
    with open(path, "w") as f:
        f.write("Host bastion\n  HostName %s\n  Port %d\n  User %s\n" % (
            n.bastion_host, n.bastion_port, n.bastion.user))
        f.write("Host *\n  IdentityFile %s\n  IdentitiesOnly yes\n  IdentityAgent none\n"
                "  BatchMode yes\n  UserKnownHostsFile %s\n  GlobalKnownHostsFile /dev/null\n"
                "  StrictHostKeyChecking yes\n  ExitOnForwardFailure yes\n"
                "  ControlMaster no\n  ControlPath none\n  LogLevel ERROR\n"
                "  Ciphers aes128-ctr\n  MACs hmac-sha2-256\n" % (key, kh))
    return path


def ssh_tunnel(tmp, name, cfg, sidecar, lp, target, jump):
    args = ["ssh", "-N", "-F", cfg, "-p", str(sidecar.port),
            "-L", "127.0.0.1:%d:%s" % (lp, target)]
    if jump:
        args += ["-J", "bastion"]
    args.append("%s@%s" % (sidecar.user, sidecar.listen))
    return bench.spawn(args, os.path.join(tmp, name + ".log"))


def throughput(tool, port, P, vals, errors, directions=("down", "up")):
    for direction in directions:
        res, err = bench.tb([direction, port, P["bytes"], 1, 120], timeout=300)
        if err:
            errors.append("%s throughput %s: %s" % (tool, direction, err))
        else:
            vals.setdefault(("throughput_1conn_" + direction, tool), []).append(float(res[0]))
        print("BENCH name=throughput_1conn_%s tool=%s value=%s unit=MB/s" % (
            direction, tool, res[0] if res else "ERR"), flush=True)


def connects(tool, port, P, results, errors):
    res, err = bench.tb(["connect", port, P["connects"], 64], timeout=300)
    if err:
        errors.append("%s connect: %s" % (tool, err))
    for k, i in (("p50", 0), ("p99", 1)):
        v = float(res[i]) if res else None
        if v is not None:
            results[("connect_rtt_" + k, tool)] = v
        print("BENCH name=connect_rtt_%s tool=%s value=%s unit=us" % (
            k, tool, "ERR" if v is None else "%.0f" % v), flush=True)


def table(results):
    width = max(len(r) for r, _ in ROWS) + 2
    lines = ["%-*s %-5s " % (width, "figure", "unit") + "".join("%16s" % t for t in TOOLS)]
    for row, unit in ROWS:
        cells = []
        for t in TOOLS:
            v = results.get((row, t))
            cells.append("%16s" % ("ERR" if v is None else "%.1f" % v if unit == "MB/s"
                                   else "%.0f" % v))
        lines.append("%-*s %-5s " % (width, row, unit) + "".join(cells))
    return "\n".join(lines)


class Net:
    """The sidecars, the bastion and the ssh client config of one run."""


def start_net(tmp, delay):
    n = Net()
    far_target, far_port = start_target(tmp, jumpnet.NS_SIDE)
    near_target, near_port = start_target(tmp, jumpnet.NS_BASTION)
    n.procs = [far_target, near_target]
    n.far_addr, n.near_addr = "127.0.0.1:%d" % far_port, "127.0.0.1:%d" % near_port
    n.side = Sidecar(tmp, listen=jumpnet.SIDE_ADDR, wrapper=jumpnet.netns_exec(jumpnet.NS_SIDE),
                     permit_open=[n.far_addr]).start()
    n.near = Sidecar(tmp, listen=jumpnet.BASTION_ADDR,
                     wrapper=jumpnet.netns_exec(jumpnet.NS_BASTION), permit_open=[n.near_addr])
    # one user key (the far sidecar's) everywhere, so that the tools log in alike
    shutil.copy(n.side.authorized_keys, n.near.authorized_keys)
    n.near.start()
    bastion = Sidecar(tmp, listen=jumpnet.BASTION_ADDR,
                      wrapper=jumpnet.netns_exec(jumpnet.NS_BASTION),
                      permit_open=["%s:%d" % (n.side.listen, n.side.port)])
    shutil.copy(n.side.authorized_keys, bastion.authorized_keys)
    bastion.start()
    # what the tools dial for the bastion: itself, or the delaying relay in front of it
    n.bastion_host, n.bastion_port = bastion.listen, bastion.port
    if delay:
        relay = longhaul.compile_helper(tmp, "delayrelay")
        n.bastion_host, n.bastion_port = "127.0.0.1", free_port()
        n.procs.append(start_relay(tmp, relay, n.bastion_port, bastion, delay))
    kh = os.path.join(tmp, "known_hosts")
    with open(kh, "w") as f:
        f.write(n.side.known_hosts_line() + n.near.known_hosts_line() +
                bastion.known_hosts_line(host=n.bastion_host, port=n.bastion_port))
    n.kh, n.bastion = kh, bastion
    n.cfg = ssh_config(os.path.join(tmp, "ssh_config"), n, kh, n.side.user_key)
    return n


def start_relay(tmp, relay, port, bastion, delay):
    p = bench.spawn([relay, str(port), str(bastion.port), str(delay), bastion.listen],
                    os.path.join(tmp, "relay.log"))
    for _ in range(250):
        with open(p.log_path) as f:
            if "ready" in f.read():
                return p
        time.sleep(0.02)
    raise RuntimeError("relay did not start")


def start_tool(tmp, tool, n, lp, errors):
    """The tool's tunnel on local port lp: (moletun or None, ssh process or None), or None
    when it never came up."""
    jump = tool.endswith("_jump")
    sc, target = (n.side, n.far_addr) if jump else (n.near, n.near_addr)
    if tool.startswith("ssh"):
        p = ssh_tunnel(tmp, tool, n.cfg, sc, lp, target, jump)
        if bench.wait_usable(lp, 20) is None:
            errors.append("%s: not usable within 20 s; log: %s" % (
                tool, open(p.log_path, errors="replace").read()[-800:]))
            print("ERROR %s" % errors[-1], flush=True)
            bench.stop_proc(p)
            return None
        return None, p
    keys = {"proxy_jump": "%s@%s:%d" % (n.bastion.user, n.bastion_host, n.bastion_port)} \
        if jump else {}
    if WINDOW_MAX[0]:
        keys["channel_window_max"] = WINDOW_MAX[0]
    workdir = tempfile.mkdtemp(prefix=tool + "-", dir=tmp)
    m = harness.Moletun(workdir, tunnel_section(
        "t1", sc, local_forward=["127.0.0.1:%d %s" % (lp, target)],
        known_hosts_file=n.kh, identity_file=n.side.user_key, probe="none", **keys))
    with longhaul.moletun_bin_as(os.environ["MOLETUN_BASE_BIN"] if tool == "base_jump"
                              else harness.moletun_bin()):
        m.start()
    if m.wait_state("t1", "up", 30) is None:
        tr = m.transitions("t1")
        errors.append("%s: the tunnel never came up within 30 s (running: %s; last "
                      "transition: %s)" % (tool, m.running(), tr[-1][2:] if tr else "none"))
        print("ERROR %s" % errors[-1], flush=True)
        m.cleanup()
        return None
    return m, None


def run(tmp, args, P, tools, results, errors, live):
    n = start_net(tmp, args.delay)
    live["procs"] += n.procs
    print("jump bench: %s, %d MiB per transfer, %s; bastion at 2 x %d ms; load average %s" % (
        harness.moletun_bin(), P["bytes"] // MIB,
        "%d reps" % args.reps if args.delay else "%d connects" % P["connects"], args.delay,
        open("/proc/loadavg").read().strip()), flush=True)
    ports = {}
    for tool in tools:
        lp = free_port()
        started = start_tool(tmp, tool, n, lp, errors)
        if started is None:
            continue
        m, p = started
        live["moletuns" if m else "procs"].append(m or p)
        ports[tool] = lp
        if not args.delay:
            # one tool at a time, as before: the near and far rows share the machine
            vals = {}
            throughput(tool, lp, P, vals, errors)
            results.update({k: v[0] for k, v in vals.items()})
            connects(tool, lp, P, results, errors)
            (m.cleanup if m else lambda: bench.stop_proc(p))()
    if args.delay:
        time.sleep(0.5)  # the first keepalive round trips
        vals = {}
        for _ in range(args.reps):
            for tool, lp in ports.items():
                throughput(tool, lp, P, vals, errors, directions=args.directions.split(","))
        for k, v in vals.items():
            results[k] = statistics.median(v)
            print("  (%s %s: %s)" % (k[0], k[1], ", ".join("%.1f" % x for x in v)), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="32 MiB transfers, 100 connects")
    ap.add_argument("--delay", type=int, default=0,
                    help="one-way ms of a relay in front of the bastion; jump tools only")
    ap.add_argument("--mib", type=int, default=0, help="MiB per transfer (overrides --quick)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions with --delay (median)")
    ap.add_argument("--directions", default="down,up", help="with --delay: down, up or both")
    ap.add_argument("--window-max", default="",
                    help="channel_window_max for the moletun tools (default: theirs)")
    args = ap.parse_args()
    WINDOW_MAX[0] = args.window_max
    P = {"bytes": 32 * MIB, "connects": 100} if args.quick else \
        {"bytes": 256 * MIB, "connects": 500}
    if args.mib:
        P["bytes"] = args.mib * MIB
    tools = [t for t in TOOLS if (t != "base_jump" or os.environ.get("MOLETUN_BASE_BIN")) and
             (not args.delay or t.endswith("_jump"))]
    TOOLS[:] = tools
    jumpnet.check_prerequisites("the proxy_jump bench")
    harness.require_sshd()
    if not shutil.which("ssh"):
        harness.skip_module("ssh (openssh-client) is not installed")
    tmp = tempfile.mkdtemp(prefix="moletun-jump-bench-")
    os.chmod(tmp, 0o700)
    results, errors, live = {}, [], {"moletuns": [], "procs": []}
    jumpnet.down()
    try:
        jumpnet.up()
        bench.TB = longhaul.compile_helper(tmp, "tcpbench")
        run(tmp, args, P, tools, results, errors, live)
        print("\n" + table(results))
        if errors:
            print("\nerrors:\n" + "\n".join("  " + e for e in errors))
    finally:
        for m in live["moletuns"]:
            m.cleanup()
        for p in live["procs"]:
            bench.stop_proc(p)
        harness.cleanup_everything()
        jumpnet.down()
        if os.environ.get("MOLETUN_BENCH_KEEP"):
            print("kept %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
