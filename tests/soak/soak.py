#!/usr/bin/env python3
"""Soak test: traffic through one tunnel for N minutes while the sidecar sshd is killed
(SIGKILL) and restarted at random intervals. Not part of `meson test`; see README.md.

    MOLETUN_BIN=build/moletun python3 tests/soak/soak.py [--minutes 10] [--clients 4]

Checks at the end (exit 1 if any fails):
  - every transfer that completed has a matching SHA-256 (client -> target and back);
  - memory is flat: RSS and Private_Dirty, mean of the last quarter of the samples against
    the first quarter (at most +10% and +1 MiB);
  - descriptors are flat: the same count with no client connected before and after, and
    the last quarter's mean within the first quarter's range;
  - the tunnel's reconnect count (`moletun ctl status --json`) equals the number of kills;
  - the daemon is still running, and exits 0 on SIGTERM.
"""

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import harness  # noqa: E402
from harness import SinkSource, recv_exact  # noqa: E402


class Target(SinkSource):
    """The harness's SINK/SOURCE target, quiet about transfers a kill cut short."""

    def handle(self, conn):
        try:
            super().handle(conn)
        except EOFError:
            pass


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.completed = 0
        self.bytes = 0
        self.mismatches = []
        self.errors = {}

    def ok(self, n):
        with self.lock:
            self.completed += 1
            self.bytes += n

    def mismatch(self, what):
        with self.lock:
            self.mismatches.append(what)

    def error(self, e):
        with self.lock:
            key = type(e).__name__
            self.errors[key] = self.errors.get(key, 0) + 1


def sink(port, n, rng):
    """Sends n random bytes; the target answers with their SHA-256."""
    data = rng.randbytes(n)
    with harness.connect(port, timeout=10) as s:
        s.sendall(b"SINK %d\n" % n)
        s.sendall(data)
        reply = b""
        while not reply.endswith(b"\n"):
            b = s.recv(256)
            if not b:
                raise EOFError("closed before the checksum")
            reply += b
    return reply.strip().decode() == hashlib.sha256(data).hexdigest()


def source(port, n):
    """Receives n random bytes preceded by their SHA-256 from the target."""
    with harness.connect(port, timeout=10) as s:
        s.sendall(b"SOURCE %d\n" % n)
        header = b""
        while not header.endswith(b"\n"):
            b = s.recv(1)
            if not b:
                raise EOFError("closed before the header")
            header += b
        length, digest = header.split()
        data = recv_exact(s, int(length))
    return hashlib.sha256(data).hexdigest() == digest.decode()


def worker(port, stop, stats, seed):
    rng = random.Random(seed)
    while not stop.is_set():
        n = int(2 ** rng.uniform(10, 20))  # 1 KiB .. 1 MiB, log-uniform
        op = rng.choice(("sink", "source"))
        try:
            good = sink(port, n, rng) if op == "sink" else source(port, n)
        except (OSError, EOFError, ValueError) as e:
            stats.error(e)
            time.sleep(0.05)  # the tunnel is probably down: clients are closed at once
            continue
        if good:
            stats.ok(n)
        else:
            stats.mismatch("%s %d" % (op, n))
        time.sleep(rng.uniform(0, 0.02))


def tunnel_status(m):
    r = subprocess.run([harness.moletun_bin(), "ctl", "-s", m.control_socket, "status",
                        "--json"], capture_output=True, text=True, timeout=30)
    return json.loads(r.stdout)["tunnels"][0]


def sample(pid):
    mem = harness.proc_memory_kb(pid)
    return {"t": time.monotonic(), "rss_kb": mem["Rss"],
            "private_dirty_kb": mem["Private_Dirty"], "fds": harness.proc_fd_count(pid),
            "cpu_s": harness.proc_cpu_seconds(pid)}


def mean(xs):
    return sum(xs) / len(xs) if xs else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=4, help="concurrent traffic threads")
    ap.add_argument("--up-min", type=float, default=5.0, help="shortest time up (s)")
    ap.add_argument("--up-max", type=float, default=30.0, help="longest time up (s)")
    ap.add_argument("--down-min", type=float, default=0.1, help="shortest outage (s)")
    ap.add_argument("--down-max", type=float, default=3.0, help="longest outage (s)")
    ap.add_argument("--sample", type=float, default=2.0, help="seconds between samples")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--json", help="write the results here as JSON")
    args = ap.parse_args()

    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    rng = random.Random(seed)
    harness.raise_fd_limit()
    harness.require_sshd()
    tmp = harness.tempfile.mkdtemp(prefix="moletun-soak-")
    failures = []
    try:
        target = Target()
        sc = harness.Sidecar(tmp, permit_open=[target.addr]).start()
        kh = sc.write_known_hosts(os.path.join(tmp, "known_hosts"))
        lp = harness.free_port()
        m = harness.Moletun(tmp, harness.tunnel_section(
            "soak", sc, known_hosts_file=kh,
            local_forward=["127.0.0.1:%d %s" % (lp, target.addr)])).start()
        if not m.wait_state("soak", "up", 20):
            raise RuntimeError("tunnel not up: %s" % m.log_text()[-2000:])
        pid = m.proc.pid
        time.sleep(0.5)
        idle_fds_before = harness.proc_fd_count(pid)
        print("soak: %.1f min, %d clients, seed %d, moletun pid %d, %d fds idle" % (
            args.minutes, args.clients, seed, pid, idle_fds_before), flush=True)

        stop = threading.Event()
        stats = Stats()
        workers = [threading.Thread(target=worker, args=(lp, stop, stats, seed + i),
                                    daemon=True) for i in range(args.clients)]
        for w in workers:
            w.start()

        samples, kills, outages, recoveries = [], 0, [], []
        t_end = time.monotonic() + args.minutes * 60
        next_sample = time.monotonic()
        next_kill = time.monotonic() + rng.uniform(args.up_min, args.up_max)
        while time.monotonic() < t_end:
            now = time.monotonic()
            if now >= next_sample:
                samples.append(sample(pid))
                next_sample += args.sample
            if now >= next_kill and t_end - now > args.down_max + 10:
                mark = m.mark()
                sc.kill()
                kills += 1
                if not m.wait_transition("soak", mark, old="up", timeout=10):
                    failures.append("kill %d: tunnel did not leave up" % kills)
                outage = rng.uniform(args.down_min, args.down_max)
                outages.append(outage)
                time.sleep(outage)
                sc.restart()
                t_back = time.monotonic()
                if not m.wait_transition("soak", mark, new="up", timeout=20):
                    failures.append("kill %d: tunnel not up within 20 s" % kills)
                    break
                recoveries.append(time.monotonic() - t_back)
                next_kill = time.monotonic() + rng.uniform(args.up_min, args.up_max)
                print("  %5.0fs: kill %d, outage %.2fs, up again %.3fs after restart; "
                      "%d transfers ok" % (args.minutes * 60 - (t_end - time.monotonic()),
                                           kills, outage, recoveries[-1], stats.completed),
                      flush=True)
            time.sleep(min(0.2, max(0.0, min(next_sample, next_kill) - time.monotonic())))

        stop.set()
        for w in workers:
            w.join(30)
        time.sleep(1.0)
        samples.append(sample(pid))
        deadline = time.monotonic() + 10
        while harness.proc_fd_count(pid) > idle_fds_before and time.monotonic() < deadline:
            time.sleep(0.1)
        idle_fds_after = harness.proc_fd_count(pid)
        status = tunnel_status(m)

        q = max(1, len(samples) // 4)
        first, last = samples[:q], samples[-q:]
        result = {
            "seed": seed,
            "minutes": args.minutes,
            "clients": args.clients,
            "transfers_completed": stats.completed,
            "bytes_completed": stats.bytes,
            "checksum_mismatches": len(stats.mismatches),
            "transfer_errors": stats.errors,
            "kills": kills,
            "reconnects": status["reconnects"],
            "state_at_end": status["state"],
            "outage_s_mean": mean(outages),
            "usable_again_s_mean": mean(recoveries),
            "usable_again_s_max": max(recoveries) if recoveries else 0.0,
            "samples": len(samples),
            "rss_kb_first_quarter": mean([s["rss_kb"] for s in first]),
            "rss_kb_last_quarter": mean([s["rss_kb"] for s in last]),
            "private_dirty_kb_first_quarter": mean([s["private_dirty_kb"] for s in first]),
            "private_dirty_kb_last_quarter": mean([s["private_dirty_kb"] for s in last]),
            "private_dirty_kb_max": max(s["private_dirty_kb"] for s in samples),
            "fds_first_quarter": mean([s["fds"] for s in first]),
            "fds_last_quarter": mean([s["fds"] for s in last]),
            "fds_first_quarter_range": [min(s["fds"] for s in first),
                                        max(s["fds"] for s in first)],
            "fds_idle_before": idle_fds_before,
            "fds_idle_after": idle_fds_after,
            "cpu_s": samples[-1]["cpu_s"] - samples[0]["cpu_s"],
            "wall_s": samples[-1]["t"] - samples[0]["t"],
        }

        if stats.mismatches:
            failures.append("checksum mismatches: %s" % stats.mismatches[:10])
        if stats.completed == 0:
            failures.append("no transfer completed")
        if kills and result["reconnects"] != kills:
            failures.append("reconnects %d != kills %d" % (result["reconnects"], kills))
        for key in ("rss_kb", "private_dirty_kb"):
            a, b = result[key + "_first_quarter"], result[key + "_last_quarter"]
            if b > a * 1.10 + 1024:
                failures.append("%s grew: %.0f -> %.0f kB" % (key, a, b))
        lo, hi = result["fds_first_quarter_range"]
        if result["fds_last_quarter"] > hi:
            failures.append("fds grew: first quarter %d..%d, last quarter mean %.1f" % (
                lo, hi, result["fds_last_quarter"]))
        if idle_fds_after != idle_fds_before:
            failures.append("idle fds %d before, %d after" % (idle_fds_before,
                                                              idle_fds_after))
        if not m.running():
            failures.append("moletun exited")
        rc, _ = m.stop(signal.SIGTERM, 10)
        result["exit_code"] = rc
        if rc != 0:
            failures.append("exit code %r after SIGTERM" % rc)
        sanitizer = m.sanitizer_reports()
        if sanitizer:
            failures.append("sanitizer reports: %s" % sanitizer[:5])
        result["failures"] = failures

        print(json.dumps(result, indent=2))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
    finally:
        harness.cleanup_everything()
        if not os.environ.get("MOLETUN_KEEP_TMP"):
            harness.shutil.rmtree(tmp, ignore_errors=True)
        else:
            print("kept %s" % tmp)
    if failures:
        print("SOAK FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("soak passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
