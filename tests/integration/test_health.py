"""Write-path health against real peers: "up" means the application can reach its target.

A real PostgreSQL 15 cluster behind a real sshd: stopping it makes the forward's target
unreachable (probe or a client's failed open), the tunnel's health target_down and
`ctl status` exit 4; starting it again brings reachable, ok, exit 0. Probes in both modes
leave no line in PostgreSQL's log. A userspace relay that holds every chunk D seconds per
direction in front of sshd gives the keepalive round trip: 2 x 40 ms reads as 64-130 ms,
over degraded_rtt the health is degraded (exit 4), back to 0 ms it is ok again.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import harness
from harness import tunnel_section
from webhook import WebhookReceiver

PG_BIN = "/usr/lib/postgresql/15/bin"


def ctl(m, *args):
    return subprocess.run([harness.moletun_bin(), "ctl", "-s", m.control_socket] + list(args),
                          capture_output=True, text=True, timeout=30)


def tunnel_json(m, name="t1"):
    r = ctl(m, "status", "--json", name)
    return r.returncode, json.loads(r.stdout)["tunnels"][0]


def wait_until(what, predicate, timeout):
    timeout *= harness.slowdown()
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(0.05)


class Postgres:
    """A throwaway PostgreSQL 15 cluster on a free loopback port, run as `postgres`."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="moletun-pg-")
        os.chmod(self.dir, 0o755)
        shutil.chown(self.dir, "postgres")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "postgresql.log")
        self.port = harness.free_port()
        self.run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres")
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("listen_addresses = '127.0.0.1'\nport = %d\n"
                    "unix_socket_directories = '%s'\n" % (self.port, self.dir))
        self.start()

    def run(self, tool, *args):
        subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(PG_BIN, tool)] +
                       list(args), check=True, capture_output=True, timeout=120)

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def start(self):
        self.run("pg_ctl", "-D", self.data, "-l", self.log, "-w", "start")

    def stop(self):
        self.run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")

    def log_lines(self):
        with open(self.log, errors="replace") as f:
            return f.read().splitlines()

    def cleanup(self):
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


class DelayRelay(harness._Server):
    """Forwards to a port, holding every chunk `delay` seconds in each direction (a long
    path's round trip for SSH; it buffers without limit, so it does not model TCP's own
    window)."""

    def __init__(self, target_port, target_host="127.0.0.1"):
        self.target_port = target_port
        self.target_host = target_host
        self.delay = 0.0
        super().__init__()

    def _pipe(self, src, dst):
        pending = []
        cv = threading.Condition()
        done = [False]

        def writer():
            while True:
                with cv:
                    while not pending and not done[0]:
                        cv.wait()
                    if not pending:
                        break
                    due, data = pending.pop(0)
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                try:
                    dst.sendall(data)
                except OSError:
                    break
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

        w = threading.Thread(target=writer, daemon=True)
        w.start()
        try:
            while True:
                b = src.recv(65536)
                if not b:
                    break
                # ACK at once, as moletun does on its own SSH socket: sshd does not set
                # TCP_NODELAY, and its small replies would wait up to 40 ms for our ACK
                src.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                with cv:
                    pending.append((time.monotonic() + self.delay, b))
                    cv.notify()
        except OSError:
            pass
        with cv:
            done[0] = True
            cv.notify()
        w.join(10)

    def handle(self, conn):
        up = socket.create_connection((self.target_host, self.target_port))
        # the delay is the path's; the relay itself adds no Nagle wait either way
        for sock in (up, conn):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t = threading.Thread(target=self._pipe, args=(up, conn), daemon=True)
        t.start()
        self._pipe(conn, up)
        t.join(10)
        up.close()


class HealthTest(harness.TunnelTest):
    def setUp(self):
        super().setUp()
        if not os.path.exists(os.path.join(PG_BIN, "initdb")):
            self.skipTest("PostgreSQL 15 is not installed (tests/deps.sh installs it)")
        self.pg = Postgres()
        self.addCleanup(self.pg.cleanup)
        self.lp = harness.free_port()
        self.sc = self.sidecar(permit_open=[self.pg.addr])

    def start(self, hook=None, **keys):
        vals = {"probe_interval": "1s", "probe_timeout": "1s"}
        vals.update(keys)
        sections = [tunnel_section(
            "t1", self.sc, known_hosts_file=self.known_hosts(self.sc),
            local_forward=["127.0.0.1:%d %s" % (self.lp, self.pg.addr)], **vals)]
        if hook:
            sections.append("[alert:ops]\nurl = %s\nformat = json\ndown_after = 1s\n"
                            "timeout = 3s\n" % hook.url())
        m = self.moletun(sections)
        self.assertUp(m, timeout=20)
        return m

    def receiver(self):
        hook = WebhookReceiver()
        self.addCleanup(hook.cleanup)
        return hook

    def events(self, hook):
        return [r.json()["event"] for r in hook.received()]

    def target(self, m):
        return tunnel_json(m)[1]["forwards"][0]

    def test_target_down_and_back_postgres_probe(self):
        hook = self.receiver()
        m = self.start(hook, probe="postgres")
        rc, t = wait_until("reachable", lambda: (lambda r: r if r[1]["forwards"][0][
            "target_state"] == "reachable" else None)(tunnel_json(m)), 10)
        self.assertEqual((rc, t["health"]), (0, "ok"))
        self.assertIsNotNone(t["forwards"][0]["probe_rtt_ms"])
        # a probe never counts as a client connection
        self.assertEqual(t["forwards"][0]["connections_total"], 0)

        self.pg.stop()
        t0 = time.monotonic()
        rc, t = wait_until("target_down", lambda: (lambda r: r if r[1]["health"] ==
                                                  "target_down" else None)(tunnel_json(m)), 10)
        print("target_down %.1fs after PostgreSQL stopped: %s" % (
            time.monotonic() - t0, t["forwards"][0]["target_error"]))
        # probe interval + probe timeout + margin
        self.assertLess(time.monotonic() - t0, 1 + 1 + 2 * harness.slowdown())
        self.assertEqual(rc, 4)
        self.assertEqual(t["state"], "up")
        self.assertEqual(t["forwards"][0]["target_state"], "unreachable")
        self.assertIn("connect failed", t["forwards"][0]["target_error"])
        self.assertEqual(ctl(m, "status").returncode, 4)
        self.assertIsNotNone(m.wait_for(r"tunnel t1: health ok -> target_down", 5))
        self.assertIsNotNone(m.wait_for(r"tunnel t1: target 127\.0\.0\.1:%d unreachable" %
                                        self.pg.port, 5))
        # One alert within probe_interval + probe_timeout + down_after (+ margin).
        got = hook.wait_requests(1, timeout=1 + 1 + 1 + 3)
        self.assertEqual(len(got), 1, self.events(hook))
        alert = got[0].json()
        print("alert %.1fs after PostgreSQL stopped: %s" % (got[0].time - t0, alert))
        self.assertEqual((alert["event"], alert["tunnel"], alert["target"]),
                         ("target_down", "t1", self.pg.addr))
        self.assertIn("connect failed", alert["reason"])

        self.pg.start()
        t0 = time.monotonic()
        rc, t = wait_until("ok again", lambda: (lambda r: r if r[1]["health"] == "ok"
                                                else None)(tunnel_json(m)), 10)
        print("ok %.1fs after PostgreSQL started" % (time.monotonic() - t0))
        self.assertEqual(rc, 0)
        self.assertEqual(t["forwards"][0]["target_state"], "reachable")
        self.assertIsNone(t["forwards"][0]["target_error"])
        self.assertGreaterEqual(t["forwards"][0]["probe_failures"], 1)
        self.assertIsNotNone(m.wait_for(r"tunnel t1: health target_down -> ok", 5))
        hook.wait_requests(2, timeout=5)
        time.sleep(1.5)  # nothing more comes
        self.assertEqual(self.events(hook), ["target_down", "target_up"])

    def test_probes_leave_no_trace_in_postgres_log(self):
        before = len(self.pg.log_lines())
        for mode in ("tcp", "postgres"):
            m = self.start(probe=mode, probe_interval="200ms")
            probes = wait_until("probes", lambda: tunnel_json(m)[1]["forwards"][0][
                "target_state"] == "reachable", 10)
            self.assertTrue(probes)
            time.sleep(2.0)  # ~10 probes
            self.assertEqual(tunnel_json(m)[1]["forwards"][0]["probe_failures"], 0)
            m.stop()
        new = self.pg.log_lines()[before:]
        self.assertEqual(new, [], "PostgreSQL logged the probes")
        # The check can fail: a client that opens and sends garbage is logged.
        with socket.create_connection(("127.0.0.1", self.pg.port)) as s:
            s.sendall(b"\x00\x00\x00\x09garbage")
            s.recv(100)
        wait_until("a log line for a bad client", lambda: len(self.pg.log_lines()) > before, 5)

    def test_client_open_failure_marks_target_at_once(self):
        # probes rarely: only a client can tell
        m = self.start(probe="tcp", probe_interval="1h")
        wait_until("first probe", lambda: self.target(m)["target_state"] == "reachable", 10)
        self.pg.stop()
        with harness.connect(self.lp) as s:
            s.settimeout(5)
            self.assertEqual(s.recv(10), b"")  # closed: the server could not connect
        f = wait_until("unreachable", lambda: (lambda f: f if f["target_state"] ==
                                               "unreachable" else None)(self.target(m)), 2)
        self.assertIn("connect failed", f["target_error"])
        self.assertEqual(ctl(m, "status", "t1").returncode, 4)
        self.pg.start()
        with harness.connect(self.lp) as s:
            s.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")
            s.settimeout(5)
            self.assertIn(s.recv(1), (b"S", b"N"))
        f = wait_until("reachable", lambda: (lambda f: f if f["target_state"] ==
                                             "reachable" else None)(self.target(m)), 2)
        self.assertEqual(ctl(m, "status", "t1").returncode, 0)

    def test_rtt_and_degraded(self):
        relay = self.server(DelayRelay, target_port=self.sc.port)
        hook = self.receiver()
        m = self.moletun([tunnel_section(
            "t1", self.sc, known_hosts_file=self.known_hosts(self.sc, host="127.0.0.1",
                                                             port=relay.port),
            port=str(relay.port), keepalive_interval="1s", keepalive_count_max="5",
            degraded_rtt="50ms", local_forward=["127.0.0.1:%d %s" % (self.lp, self.pg.addr)]),
            "[alert:ops]\nurl = %s\nformat = json\ndown_after = 1s\n" % hook.url()])
        self.assertUp(m, timeout=20)
        t = wait_until("an RTT", lambda: (lambda t: t if t["rtt_ms"] is not None
                                          else None)(tunnel_json(m)[1]), 5)
        print("rtt on loopback: %.1f ms" % t["rtt_ms"])
        self.assertLess(t["rtt_ms"], 40)
        self.assertEqual(t["health"], "ok")

        relay.delay = 0.040
        rc, t = wait_until("degraded", lambda: (lambda r: r if r[1]["health"] == "degraded"
                                                else None)(tunnel_json(m)), 15)
        print("rtt through 2 x 40 ms: %.1f ms (last %.1f ms)" % (t["rtt_ms"], t["rtt_last_ms"]))
        self.assertEqual(rc, 4)
        self.assertGreaterEqual(t["rtt_last_ms"], 64)
        self.assertLessEqual(t["rtt_last_ms"], 130 * harness.slowdown())
        metrics = ctl(m, "metrics").stdout
        self.assertIn('moletun_tunnel_health{tunnel="t1",health="degraded"} 1', metrics)
        self.assertRegex(metrics, r'moletun_tunnel_rtt_seconds\{tunnel="t1"\} 0\.\d+')
        self.assertIsNotNone(m.wait_for(r"tunnel t1: health ok -> degraded", 5))
        got = hook.wait_requests(1, timeout=5)
        self.assertEqual([r.json()["event"] for r in got], ["degraded"])
        # Degraded means the smoothed RTT went above degraded_rtt, and here it only rises
        # (every sample is ~80 ms): the event carries at least 50 ms, to 0.1 ms (50.0 is
        # possible, 49.9 is not); the reason names the episode's peak, to the millisecond.
        self.assertGreaterEqual(got[0].json()["rtt_ms"], 50.0)
        peak = re.fullmatch(r"rtt (\d+) ms above degraded_rtt 50 ms", got[0].json()["reason"])
        self.assertIsNotNone(peak, got[0].json()["reason"])
        self.assertGreaterEqual(int(peak.group(1)), 50)
        # The smoothed value follows (an eighth of the way per keepalive, one a second).
        t = wait_until("smoothed rtt near 80 ms", lambda: (lambda t: t if t["rtt_ms"] >= 64
                                                          else None)(tunnel_json(m)[1]), 30)
        print("smoothed rtt through 2 x 40 ms: %.1f ms" % t["rtt_ms"])
        self.assertLessEqual(t["rtt_ms"], 130 * harness.slowdown())

        relay.delay = 0.0
        rc, t = wait_until("ok again", lambda: (lambda r: r if r[1]["health"] == "ok"
                                                else None)(tunnel_json(m)), 30)
        print("ok again at rtt %.1f ms" % t["rtt_ms"])
        self.assertEqual(rc, 0)
        # ok again only below degraded_rtt x 0.8 (hysteresis): 40.0 once rounded to 0.1 ms
        self.assertLessEqual(t["rtt_ms"], 40.0)
        hook.wait_requests(2, timeout=5)
        time.sleep(1.5)
        self.assertEqual(self.events(hook), ["degraded", "recovered"])


if __name__ == "__main__":
    harness.main()
