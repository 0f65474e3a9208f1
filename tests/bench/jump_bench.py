#!/usr/bin/env python3
"""proxy_jump benchmark: a tunnel through a bastion beside a direct one and `ssh -J`.

As root (network namespaces):

    MOLETUN_BIN=build/moletun python3 tests/bench/jump_bench.py [--quick]

Topology (tests/integration/jumpnet.py): the bastion sshd in one network namespace on a
veth pair to this one; the sidecar sshd and a tcpbench target in a second namespace that
only the bastion reaches. For the direct rows a second sidecar and target sit in the
bastion's namespace, one veth hop away like the bastion itself. All sshd are real OpenSSH
configured like production (harness.Sidecar); every ssh client uses aes128-ctr +
hmac-sha2-256, the pair libssh2 1.10 negotiates.

Tools (columns):
  moletun_direct  moletun, one SSH session to the near sidecar
  moletun_jump    moletun, proxy_jump through the bastion to the far sidecar
  ssh_direct      ssh -N -L to the near sidecar
  ssh_jump        ssh -N -J bastion -L ... to the far sidecar
Figures: throughput over one connection (down, up; MB/s), and connect + first 64-byte
round trip (p50, p99; microseconds). A tunnel that never comes up gets an ERROR line and
ERR in its column; the other columns are still measured. Exit 0 unless the bench itself
could not run.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)

import bench  # noqa: E402
import harness  # noqa: E402
import jumpnet  # noqa: E402
from harness import Sidecar, free_port, tunnel_section  # noqa: E402

MIB = 1 << 20
TOOLS = ["moletun_direct", "moletun_jump", "ssh_direct", "ssh_jump"]
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


def ssh_config(path, bastion, kh, key):
    """A client config for both ssh rows: ssh -J passes -F on to the ssh it runs for the
    jump, so the bastion's settings (and the cipher) must come from a file."""
    with open(path, "w") as f:
        f.write("Host bastion\n  HostName %s\n  Port %d\n  User %s\n" % (
            bastion.listen, bastion.port, bastion.user))
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


def measure(tool, port, P, results, errors):
    for direction in ("down", "up"):
        res, err = bench.tb([direction, port, P["bytes"], 1, 60], timeout=300)
        if err:
            errors.append("%s throughput %s: %s" % (tool, direction, err))
        else:
            results[("throughput_1conn_" + direction, tool)] = float(res[0])
        print("BENCH name=throughput_1conn_%s tool=%s value=%s unit=MB/s" % (
            direction, tool, res[0] if res else "ERR"), flush=True)
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="32 MiB transfers, 100 connects")
    args = ap.parse_args()
    P = {"bytes": 32 * MIB, "connects": 100} if args.quick else \
        {"bytes": 256 * MIB, "connects": 500}
    jumpnet.check_prerequisites("the proxy_jump bench")
    harness.require_sshd()
    if not shutil.which("ssh"):
        harness.skip_module("ssh (openssh-client) is not installed")
    tmp = tempfile.mkdtemp(prefix="moletun-jump-bench-")
    os.chmod(tmp, 0o700)
    results, errors, moletuns, procs = {}, [], [], []
    jumpnet.down()
    try:
        jumpnet.up()
        bench.TB = os.path.join(tmp, "tcpbench")
        subprocess.run(["cc", "-O2", "-pthread", "-o", bench.TB,
                        os.path.join(HERE, "tcpbench.c")], check=True)
        far_target, far_port = start_target(tmp, jumpnet.NS_SIDE)
        near_target, near_port = start_target(tmp, jumpnet.NS_BASTION)
        procs += [far_target, near_target]
        far_addr, near_addr = "127.0.0.1:%d" % far_port, "127.0.0.1:%d" % near_port
        side = Sidecar(tmp, listen=jumpnet.SIDE_ADDR, wrapper=jumpnet.netns_exec(jumpnet.NS_SIDE),
                       permit_open=[far_addr]).start()
        near = Sidecar(tmp, listen=jumpnet.BASTION_ADDR,
                       wrapper=jumpnet.netns_exec(jumpnet.NS_BASTION),
                       permit_open=[near_addr])
        # one user key (the far sidecar's) everywhere, so that the four tools log in alike
        shutil.copy(side.authorized_keys, near.authorized_keys)
        near.start()
        bastion = Sidecar(tmp, listen=jumpnet.BASTION_ADDR,
                          wrapper=jumpnet.netns_exec(jumpnet.NS_BASTION),
                          permit_open=["%s:%d" % (side.listen, side.port)])
        shutil.copy(side.authorized_keys, bastion.authorized_keys)
        bastion.start()
        kh = os.path.join(tmp, "known_hosts")
        with open(kh, "w") as f:
            f.write(side.known_hosts_line() + near.known_hosts_line() +
                    bastion.known_hosts_line())
        cfg = ssh_config(os.path.join(tmp, "ssh_config"), bastion, kh, side.user_key)
        print("jump bench: %s, %d MiB per transfer, %d connects; load average %s" % (
            harness.moletun_bin(), P["bytes"] // MIB, P["connects"],
            open("/proc/loadavg").read().strip()), flush=True)

        for tool in TOOLS:
            lp = free_port()
            jump = tool.endswith("_jump")
            sc, target = (side, far_addr) if jump else (near, near_addr)
            if tool.startswith("moletun"):
                keys = {"proxy_jump": "%s@%s:%d" % (bastion.user, bastion.listen, bastion.port)} \
                    if jump else {}
                workdir = tempfile.mkdtemp(prefix=tool + "-", dir=tmp)
                m = harness.Moletun(workdir, tunnel_section(
                    "t1", sc, local_forward=["127.0.0.1:%d %s" % (lp, target)],
                    known_hosts_file=kh, identity_file=side.user_key, probe="none", **keys))
                m.start()
                moletuns.append(m)
                if m.wait_state("t1", "up", 20) is None:
                    tr = m.transitions("t1")
                    errors.append("%s: the tunnel never came up within 20 s (running: %s; "
                                  "last transition: %s)%s" % (
                                      tool, m.running(), tr[-1][2:] if tr else "none",
                                      " - does this moletun support proxy_jump yet?"
                                      if jump else ""))
                    print("ERROR %s" % errors[-1], flush=True)
                    m.cleanup()
                    continue
            else:
                p = ssh_tunnel(tmp, tool, cfg, sc, lp, target, jump)
                procs.append(p)
                if bench.wait_usable(lp, 20) is None:
                    errors.append("%s: not usable within 20 s; log: %s" % (
                        tool, open(p.log_path, errors="replace").read()[-800:]))
                    print("ERROR %s" % errors[-1], flush=True)
                    bench.stop_proc(p)
                    continue
            measure(tool, lp, P, results, errors)
            if tool.startswith("moletun"):
                m.cleanup()
            else:
                bench.stop_proc(p)
        print("\n" + table(results))
        if errors:
            print("\nerrors:\n" + "\n".join("  " + e for e in errors))
    finally:
        for m in moletuns:
            m.cleanup()
        for p in procs:
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
