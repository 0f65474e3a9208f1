"""Dead-peer detection without a network namespace: an idle healthy peer stays up, a hung
peer (sshd session process stopped, kernel still ACKing) is detected within
keepalive_interval * keepalive_count_max plus a margin, whether sshd allows session channels
or refuses them (MaxSessions 0): keepalives need none."""

import os
import time

import harness
from harness import EchoServer, connect

INTERVAL = 1.0
COUNT = 3
# detection bound: interval * count, plus one interval of timer slack and scheduling margin
BOUND = INTERVAL * COUNT + 1.5 * harness.slowdown()


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class LivenessTest(harness.TunnelTest):
    def start(self, extra_config="", count=COUNT):
        self.echo = self.server(EchoServer)
        self.lp = harness.free_port()
        self.sc = self.sidecar(permit_open=[self.echo.addr], extra_config=extra_config)
        m = self.simple_tunnel(self.sc, local_forward=[
            "127.0.0.1:%d %s" % (self.lp, self.echo.addr)],
            keepalive_interval="%ds" % INTERVAL, keepalive_count_max=str(count))
        self.assertUp(m)
        return m

    def check_idle_stays_up(self, m, seconds=3 * INTERVAL * COUNT):
        mark = m.mark()
        cpu0 = cpu_seconds(m.proc.pid)
        time.sleep(seconds)
        cpu = cpu_seconds(m.proc.pid) - cpu0
        print("idle %.0fs: %.3fs CPU" % (seconds, cpu))
        # A spinning loop would burn ~all of `seconds`; keepalives cost milliseconds.
        self.assertLess(cpu, 0.1 * seconds, "daemon burns CPU while idle")
        left = [tr for tr in m.transitions("t1", mark)]
        self.assertEqual(left, [], "tunnel changed state while idle with a healthy peer")
        self.assertEqual(harness.echo_once(self.lp), b"ping\n")

    def check_hung_peer_detected(self, m):
        mark = m.mark()
        self.assertTrue(self.sc.stop_children(), "no sshd session process to stop")
        self.addCleanup(self.sc.cont_children)
        t0 = time.monotonic()
        tr = m.wait_transition("t1", mark, old="up", timeout=BOUND + 5)
        self.assertIsNotNone(tr, "hung peer never detected")
        took = time.monotonic() - t0
        print("hung peer detected after %.3fs (keepalive %gs x %d): %s" %
              (took, INTERVAL, COUNT, tr[4]))
        self.assertIn("keepalive timeout", tr[4])
        self.assertLess(took, BOUND)
        # not before count - 1 intervals: the last answer came at most an interval (plus
        # its round trip and timer slack, a quarter second here) before the peer hung
        self.assertGreater(took, INTERVAL * (COUNT - 1) - 0.25)
        return took

    def test_idle_stays_up(self):
        m = self.start()
        self.check_idle_stays_up(m)

    def test_single_allowed_interval_idle_stays_up(self):
        # keepalive_count_max = 1: the probe must go out early enough for its answer to
        # beat the deadline, on every interval, not just the first.
        m = self.start(count=1)
        self.check_idle_stays_up(m, seconds=6 * INTERVAL)

    def test_hung_peer_detected(self):
        m = self.start()
        self.check_hung_peer_detected(m)

    def test_hung_peer_detected_with_open_idle_client(self):
        m = self.start()
        s = connect(self.lp)
        self.addCleanup(s.close)
        s.sendall(b"x\n")
        self.assertEqual(s.recv(10), b"x\n")
        self.check_hung_peer_detected(m)

    def test_no_session_channels_idle(self):
        m = self.start(extra_config="MaxSessions 0")
        self.check_idle_stays_up(m)
        self.assertEqual(m.grep("(?i)keepalive"), [], "keepalives had to fall back")

    def test_no_session_channels_hung_peer(self):
        m = self.start(extra_config="MaxSessions 0")
        self.check_hung_peer_detected(m)


if __name__ == "__main__":
    harness.main()
