"""Keepalives against a sidecar that refuses every session channel, as the kit's sshd_config
does (MaxSessions 0, AllowTcpForwarding local, PermitOpen the targets only).

  - the keepalive round trip is measured (rtt_ms not null) within a few intervals;
  - through a userspace relay holding each chunk 40 ms per direction, health turns degraded
    (degraded_rtt 50 ms) and back to ok once the delay is gone, as with session channels;
  - a SIGSTOPped sshd is declared dead within keepalive_interval x keepalive_count_max;
  - the sidecar's log gets no line per keepalive at LogLevel VERBOSE, while at DEBUG1 each
    keepalive shows (the control that proves keepalives went out in the window measured);
  - keepalives take turns with the forwards' channel opens (one open in flight per libssh2
    session): a burst of clients through a 2 x 5 ms relay with a keepalive every 0.5 s
    loses no client and no round-trip sample;
  - an open stuck in flight (sshd connecting to a target whose accept queue is full, so
    its SYNs are dropped) holds the way for the keepalive: the tunnel stays up, and a
    hung sshd is still found within the bound.
"""

import re
import socket
import subprocess
import threading
import time

import harness
from harness import EchoServer, tunnel_section
from test_health import DelayRelay, tunnel_json, wait_until

INTERVAL = 1.0
COUNT = 3
BOUND = INTERVAL * COUNT + 1.5 * harness.slowdown()
KEEPALIVE_TYPE = "keepalive@moletun"


def segments_sent(port):
    """TCP segments sent so far on the one connection to 127.0.0.1:port (ss -i)."""
    out = subprocess.run(["ss", "-tinH", "state", "established", "( dport = :%d )" % port],
                         capture_output=True, text=True, check=True).stdout
    counts = [int(n) for n in re.findall(r"\bsegs_out:(\d+)", out)]
    if len(counts) != 1:
        raise AssertionError("not one connection to port %d: %r" % (port, out))
    return counts[0]


class FullBacklog:
    """A TCP listener whose accept queue is full and never drained: the kernel drops the
    SYNs of further connects, which then hang in SYN retries (about two minutes)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.fillers = []
        for _ in range(2):
            s = socket.socket()
            s.settimeout(0.5)
            try:
                s.connect(("127.0.0.1", self.port))
            except OSError:
                s.close()
                break
            self.fillers.append(s)

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def hangs(self):
        """True when a connect to it does not complete within half a second."""
        s = socket.socket()
        s.settimeout(0.5)
        try:
            s.connect(("127.0.0.1", self.port))
        except socket.timeout:
            return True
        except OSError:
            return False
        finally:
            s.close()
        return False

    def cleanup(self):
        for s in self.fillers:
            s.close()
        self.sock.close()


class SessionlessTest(harness.TunnelTest):
    def sessionless_sidecar(self, targets, log_level=None):
        sc = self.sidecar(start=False, permit_open=targets, allow_tcp_forwarding="local",
                          extra_config="MaxSessions 0")
        if log_level:
            with open(sc.config_path) as f:
                text = f.read()
            with open(sc.config_path, "w") as f:
                f.write(text.replace("LogLevel VERBOSE", "LogLevel " + log_level))
        sc.start()
        return sc

    def start(self, sc, forwards, count=COUNT, port=None, known_hosts=None, **keys):
        m = self.moletun(tunnel_section(
            "t1", sc, known_hosts_file=known_hosts or self.known_hosts(sc),
            port=str(port or sc.port), keepalive_interval="%ds" % INTERVAL,
            keepalive_count_max=str(count),
            local_forward=["127.0.0.1:%d %s" % f for f in forwards], **keys))
        self.assertUp(m, timeout=15)
        return m

    def wait_rtt(self, m, timeout):
        return wait_until("an RTT", lambda: (lambda t: t if t["rtt_ms"] is not None
                                             else None)(tunnel_json(m)[1]), timeout)

    def test_rtt_measured(self):
        echo = self.server(EchoServer)
        sc = self.sessionless_sidecar([echo.addr])
        lp = harness.free_port()
        m = self.start(sc, [(lp, echo.addr)])
        t0 = time.monotonic()
        t = self.wait_rtt(m, 3 * INTERVAL)
        print("rtt against MaxSessions 0: %.2f ms (last %.2f ms), %.2fs after up" % (
            t["rtt_ms"], t["rtt_last_ms"], time.monotonic() - t0))
        self.assertLess(t["rtt_ms"], 40)
        self.assertEqual(t["health"], "ok")
        # later samples keep coming: the last one changes within a few intervals
        first = t["rtt_last_ms"]
        wait_until("another sample", lambda: tunnel_json(m)[1]["rtt_last_ms"] != first,
                   4 * INTERVAL)
        self.assertEqual(harness.echo_once(lp), b"ping\n")
        self.assertEqual(m.transitions("t1")[-1][3], "up")

    def test_degraded_through_delay(self):
        echo = self.server(EchoServer)
        sc = self.sessionless_sidecar([echo.addr])
        relay = self.server(DelayRelay, target_port=sc.port)
        lp = harness.free_port()
        m = self.start(sc, [(lp, echo.addr)], count=5, port=relay.port,
                       known_hosts=self.known_hosts(sc, host="127.0.0.1", port=relay.port),
                       degraded_rtt="50ms")
        mark = m.mark()
        t = self.wait_rtt(m, 3 * INTERVAL)
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
        self.assertIsNotNone(m.wait_for(r"tunnel t1: health ok -> degraded", 5))
        self.assertEqual(harness.echo_once(lp), b"ping\n")

        relay.delay = 0.0
        rc, t = wait_until("ok again", lambda: (lambda r: r if r[1]["health"] == "ok"
                                                else None)(tunnel_json(m)), 30)
        print("ok again at rtt %.1f ms" % t["rtt_ms"])
        self.assertEqual(rc, 0)
        self.assertLessEqual(t["rtt_ms"], 40.0)
        self.assertEqual(m.transitions("t1", mark), [])

    def check_hung_peer_detected(self, m, sc):
        mark = m.mark()
        self.assertTrue(sc.stop_children(), "no sshd session process to stop")
        self.addCleanup(sc.cont_children)
        t0 = time.monotonic()
        tr = m.wait_transition("t1", mark, old="up", timeout=BOUND + 5)
        self.assertIsNotNone(tr, "hung peer never detected")
        took = time.monotonic() - t0
        print("hung peer detected after %.3fs (keepalive %gs x %d): %s" %
              (took, INTERVAL, COUNT, tr[4]))
        self.assertIn("keepalive timeout", tr[4])
        self.assertLess(took, BOUND)
        # not before count - 1 intervals: the last byte came at most an interval (plus a
        # round trip and timer slack) before the peer hung
        self.assertGreater(took, INTERVAL * (COUNT - 1) - 0.25 * harness.slowdown())

    def test_hung_peer_detected(self):
        echo = self.server(EchoServer)
        sc = self.sessionless_sidecar([echo.addr])
        lp = harness.free_port()
        m = self.start(sc, [(lp, echo.addr)])
        time.sleep(INTERVAL)
        self.check_hung_peer_detected(m, sc)

    def idle_log_lines(self, log_level, seconds):
        """sshd's log lines during `seconds` of an idle tunnel, after the first RTT."""
        echo = self.server(EchoServer)
        sc = self.sessionless_sidecar([echo.addr], log_level=log_level)
        lp = harness.free_port()
        m = self.start(sc, [(lp, echo.addr)])
        self.wait_rtt(m, 3 * INTERVAL)
        time.sleep(0.5)
        mark = sc.log_size()
        segs = segments_sent(sc.port)
        time.sleep(seconds)
        lines = sc.log_text(since=mark).splitlines()
        # keepalives went out meanwhile: a TCP segment (at least) for each
        sent = segments_sent(sc.port) - segs
        print("%d TCP segments to sshd in %gs idle" % (sent, seconds))
        self.assertGreaterEqual(sent, seconds / INTERVAL - 1)
        m.stop()
        return lines

    def test_sidecar_log_quiet_at_verbose(self):
        seconds = 5 * INTERVAL
        lines = self.idle_log_lines("VERBOSE", seconds)
        print("sshd at VERBOSE, %gs idle with keepalive %gs: %d lines" % (
            seconds, INTERVAL, len(lines)))
        self.assertEqual(lines, [], "sshd logged keepalives at VERBOSE")

    def test_keepalives_visible_at_debug(self):
        # The control: the same idle tunnel against sshd at DEBUG1 shows every keepalive,
        # so the quiet log above is quiet with keepalives going out.
        seconds = 5 * INTERVAL
        lines = self.idle_log_lines("DEBUG1", seconds)
        ours = [l for l in lines if re.search(r"server_input_channel_open: failure %s" %
                                               re.escape(KEEPALIVE_TYPE), l)]
        print("sshd at DEBUG1, %gs idle with keepalive %gs: %d lines, %d keepalive "
              "refusals; one: %s" % (seconds, INTERVAL, len(lines), len(ours),
                                     ours[0] if ours else None))
        self.assertGreaterEqual(len(ours), seconds / INTERVAL - 1)

    def test_keepalives_take_turns_with_opens(self):
        echo = self.server(EchoServer)
        sc = self.sessionless_sidecar([echo.addr])
        relay = self.server(DelayRelay, target_port=sc.port)
        relay.delay = 0.005
        lp = harness.free_port()
        # count 1: a keepalive every half interval
        m = self.start(sc, [(lp, echo.addr)], count=1, port=relay.port,
                       known_hosts=self.known_hosts(sc, host="127.0.0.1", port=relay.port))
        self.wait_rtt(m, 3 * INTERVAL)
        mark = m.mark()
        samples = set()
        failures = []
        done = threading.Event()

        def sample():
            while not done.is_set():
                samples.add(tunnel_json(m)[1]["rtt_last_ms"])
                time.sleep(0.1)

        def clients(n):
            for i in range(n):
                try:
                    with harness.connect(lp) as s:
                        s.settimeout(10)
                        msg = b"c%d\n" % i
                        s.sendall(msg)
                        got = b""
                        while len(got) < len(msg):
                            b = s.recv(100)
                            if not b:
                                break
                            got += b
                        if got != msg:
                            failures.append((i, got))
                except OSError as e:
                    failures.append((i, e))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        workers = [threading.Thread(target=clients, args=(60,), daemon=True)
                   for _ in range(4)]
        t0 = time.monotonic()
        for w in workers:
            w.start()
        for w in workers:
            w.join(120)
        took = time.monotonic() - t0
        done.set()
        sampler.join(5)
        print("240 clients in %.1fs with a keepalive every %.1fs: %d failures, %d distinct "
              "rtt samples seen" % (took, INTERVAL / 2, len(failures), len(samples)))
        self.assertEqual(failures, [])
        self.assertEqual(m.transitions("t1", mark), [])
        self.assertEqual(m.grep(r"channel open failed", since=mark), [])
        # a sample every half second: more than one distinct value over the burst
        if took > 2 * INTERVAL:
            self.assertGreater(len(samples), 1)

    def test_open_stuck_in_flight(self):
        echo = self.server(EchoServer)
        stuck = FullBacklog()
        self.addCleanup(stuck.cleanup)
        if not stuck.hangs():
            self.skipTest("a full accept queue does not make connects hang here")
        sc = self.sessionless_sidecar([echo.addr, stuck.addr])
        lp, lp_stuck = harness.free_port(), harness.free_port()
        m = self.start(sc, [(lp, echo.addr), (lp_stuck, stuck.addr)])
        time.sleep(INTERVAL)
        mark = m.mark()
        client = harness.connect(lp_stuck)
        self.addCleanup(client.close)
        # the open waits for sshd's connect to the target for minutes; the keepalive cannot
        # open its own meanwhile, yet the server must still be heard from
        quiet = 2 * INTERVAL * COUNT + 1
        time.sleep(quiet)
        self.assertEqual(m.transitions("t1", mark), [],
                         "the tunnel left up while an open was in flight")
        print("up for %.0fs with an open stuck in flight" % quiet)
        self.check_hung_peer_detected(m, sc)


if __name__ == "__main__":
    harness.main()
