"""Sidecar crashes and comes back: backoff, fail-fast clients, start_hold and down_hold,
remote forwards."""

import threading
import time

import harness
from harness import EchoServer, echo_once, wait_echo, closed_promptly


class ReconnectTest(harness.TunnelTest):
    def setUp(self):
        super().setUp()
        self.echo = self.server(EchoServer)
        self.lp = harness.free_port()

    def start(self, sidecar_kw=None, **keys):
        self.sc = self.sidecar(permit_open=[self.echo.addr], **(sidecar_kw or {}))
        self.m = self.simple_tunnel(self.sc, local_forward=[
            "127.0.0.1:%d %s" % (self.lp, self.echo.addr)], **keys)
        self.assertUp(self.m)
        self.assertEqual(echo_once(self.lp, b"hello\n"), b"hello\n")

    def echo_in_thread(self, payload):
        """One client's echo of payload in a thread: (thread, result), result getting
        "echo" (or "error") and "dt", the seconds it took."""
        result = {}

        def client():
            t0 = time.monotonic()
            try:
                result["echo"] = echo_once(self.lp, payload, timeout=8 * harness.slowdown())
            except OSError as e:
                result["error"] = e
            result["dt"] = time.monotonic() - t0
        t = threading.Thread(target=client)
        t.start()
        return t, result

    def assert_held_then_closed(self, why, at_least):
        """A new client is held, then closed without a byte about 1 s later (why)."""
        closed, dt, got = closed_promptly(self.lp, timeout=5 * harness.slowdown())
        self.assertTrue(closed, "held client never closed")
        self.assertEqual(got, b"")
        print("held client closed after %.3fs: %s" % (dt, why))
        self.assertGreater(dt, at_least, "closed before: %s" % why)
        self.assertLess(dt, 1.0 + 1.5 * harness.slowdown(), "held much longer than: %s" % why)

    def kill_and_wait_backoff(self):
        mark = self.m.mark()
        t0 = time.monotonic()
        self.sc.kill()
        left = self.m.wait_transition("t1", mark, old="up", timeout=3)
        self.assertIsNotNone(left, "tunnel did not leave up after the sidecar was killed")
        self.assertIsNotNone(self.m.wait_state("t1", "backoff", 3), "never reached backoff")
        print("left up %.3fs after SIGKILL of the sidecar (%s -> %s: %s)" % (
            left[0] - t0, left[2], left[3], left[4]))
        return mark

    def test_kill_backoff_restart(self):
        self.start()
        self.kill_and_wait_backoff()

        # While down, the listener stays bound and clients are closed at once.
        times = []
        for _ in range(5):
            try:
                closed, dt, got = closed_promptly(self.lp, timeout=3 * harness.slowdown())
            except ConnectionRefusedError:
                self.fail("local listener was closed while the tunnel is down")
            self.assertTrue(closed, "client held open while tunnel is down (down_hold = 0)")
            self.assertEqual(got, b"")
            times.append(dt)
            time.sleep(0.1)
        print("clients closed while down after max %.3fs" % max(times))
        self.assertLess(max(times), 0.5 * harness.slowdown())

        time.sleep(1.0)  # a few failed attempts (connection refused) pile up backoff
        self.assertNotEqual(self.m.state("t1"), "up")
        self.sc.restart()
        t_listening = time.monotonic()
        dt = wait_echo(self.lp, 5.0)
        self.assertIsNotNone(dt, "not usable within 5 s of the sidecar's restart")
        print("usable again %.3fs after the sidecar listened again "
              "(backoff_max 500ms)" % (time.monotonic() - t_listening))
        self.assertEqual(self.m.state("t1"), "up")

    def test_reconnect_with_default_backoff_after_long_outage(self):
        # Defaults: backoff_initial 100ms, backoff_max 1s. The tunnel must be usable again
        # about 1 s after the sidecar returns, however long it was away.
        self.start(defaults=False, connect_timeout="2s", keepalive_interval="1s")
        self.kill_and_wait_backoff()
        time.sleep(4.0)
        self.sc.restart()
        t_listening = time.monotonic()
        dt = wait_echo(self.lp, 5.0)
        self.assertIsNotNone(dt, "not usable within 5 s of the sidecar's restart")
        print("after a 4 s outage, usable again %.3fs after the sidecar listened again "
              "(default backoff)" % (time.monotonic() - t_listening))

    def test_usable_soon_after_sidecar_listens_again(self):
        # Default backoff (100 ms doubling to 1 s). While sshd is away its port refuses the
        # connect, which costs nothing to retry: the tunnel must be usable within 0.3 s of
        # sshd listening again, however far the backoff curve got. Three outages of 3 s, a
        # client polling every 20 ms; on the curve each would land anywhere up to 1 s late.
        self.start(defaults=False, connect_timeout="2s", keepalive_interval="1s")
        bound = 0.3 * harness.slowdown()
        usable = []
        for i in range(3):
            self.kill_and_wait_backoff()
            time.sleep(3.0)
            self.sc.restart()
            t_listening = time.monotonic()
            dt = wait_echo(self.lp, 5.0, pause=0.02)
            self.assertIsNotNone(dt, "round %d: not usable within 5 s of sshd's restart" % i)
            usable.append(time.monotonic() - t_listening)
        print("after 3 s outages, usable again %s s after sshd listened again (bound %.2f s)"
              % (", ".join("%.3f" % u for u in usable), bound))
        self.assertLessEqual(max(usable), bound)

    def test_refused_connects_paced_and_quiet(self):
        # The quick retries are paced (100 ms + up to 10 %: never more than 10 a second) and
        # logged at debug after the first: one line sums the run up when it ends.
        self.start(defaults=False, connect_timeout="2s", keepalive_interval="1s")
        mark = self.kill_and_wait_backoff()
        time.sleep(3.0)
        during = len(self.m.transitions("t1", mark))
        self.sc.restart()
        self.assertUp(self.m, timeout=5)
        run = self.m.wait_for(r"tunnel t1: (\d+) connects refused in a row over ([\d.]+)s", 1,
                              since=mark)
        self.assertIsNotNone(run, "no line summing up the refused connects")
        n, span = int(run[2].group(1)), float(run[2].group(2))
        print("%d connects refused over %.1fs (%.1f a second); %d state lines logged in the "
              "outage" % (n, span, (n - 1) / span, during))
        self.assertLessEqual(n - 1, span / 0.1 + 0.5, "refused connects retried too fast")
        self.assertGreaterEqual(n, span / 0.2, "refused connects not retried on the quick pace")
        # up -> backoff, backoff -> connecting, the first refusal: then quiet
        self.assertLessEqual(during, 3)
        self.assertEqual(self.m.transitions("t1", mark)[2][3], "backoff")

    def test_closed_before_banner_retried_quickly(self):
        # A relay or proxy in front of a server that is away (docker-proxy for a container
        # being replaced) accepts and closes at once: as cheap to retry as a refused connect,
        # so on the same pace, and no faster.
        srv = self.server(harness.CloseServer)
        sc = self.sidecar(start=False)  # keys and known_hosts only
        m = self.moletun(harness.tunnel_section(
            "t1", sc, defaults=False, port=str(srv.port),
            known_hosts_file=self.known_hosts(sc, port=srv.port),
            local_forward=["127.0.0.1:%d %s" % (self.lp, self.echo.addr)]))
        self.assertIsNotNone(m.wait_state("t1", "backoff", 5))
        time.sleep(0.5)
        n0, t0 = srv.total, time.monotonic()
        time.sleep(2.0)
        n, span = srv.total - n0, time.monotonic() - t0
        reason = [x for x in m.transitions("t1") if x[3] == "backoff"][-1][4]
        print("closed before the banner: %d connects in %.2fs (%s)" % (n, span, reason))
        self.assertRegex(reason, r"closed by server")
        self.assertLessEqual(n, span / 0.1 + 1, "retried faster than the quick pace")
        self.assertGreaterEqual(n, span / 0.2, "not retried on the quick pace")

    def test_repeated_outages(self):
        self.start()
        for i in range(3):
            self.kill_and_wait_backoff()
            time.sleep(0.3)
            self.sc.restart()
            t = time.monotonic()
            self.assertIsNotNone(wait_echo(self.lp, 5.0), "round %d: not usable again" % i)
            print("round %d: usable again after %.3fs" % (i, time.monotonic() - t))

    def test_down_hold_served_when_back_in_time(self):
        self.start(down_hold="4s")
        self.kill_and_wait_backoff()
        t, result = self.echo_in_thread(b"held\n")
        time.sleep(1.0)
        self.assertTrue(t.is_alive(), "client closed although down_hold = 4s: %r" % result)
        self.sc.restart()
        t.join(10 * harness.slowdown())
        self.assertEqual(result.get("echo"), b"held\n", "held client not served: %r" % result)
        self.assertGreater(result["dt"], 0.9)
        print("held client served after %.3fs" % result["dt"])

    def test_down_hold_expires(self):
        self.start(down_hold="1s")
        self.kill_and_wait_backoff()
        self.assert_held_then_closed("down_hold 1s ran out", 0.8)

    def start_silent(self, **keys):
        """moletun started against a sidecar whose listener is stopped: TCP connects
        complete through the backlog, the banner waits until cont_listener()."""
        self.sc = self.sidecar(permit_open=[self.echo.addr])
        self.sc.stop_listener()
        self.addCleanup(self.sc.cont_listener)
        self.m = self.simple_tunnel(self.sc, local_forward=[
            "127.0.0.1:%d %s" % (self.lp, self.echo.addr)], **keys)
        self.assertIsNotNone(self.m.wait_for(r"tunnel t1: connecting to", 10))

    def test_start_hold_serves_clients_of_the_first_connect(self):
        # Default settings but connect_timeout: a client that comes while the first
        # connection attempt is under way waits for it, as across a restart of moletun.
        self.start_silent(connect_timeout="5s")
        t, result = self.echo_in_thread(b"early\n")
        time.sleep(1.0)
        self.assertTrue(t.is_alive(), "client closed during the first connect: %r" % result)
        self.sc.cont_listener()
        self.assertUp(self.m)
        t.join(10 * harness.slowdown())
        self.assertEqual(result.get("echo"), b"early\n", "early client not served: %r" % result)
        print("client of the first connect served after %.3fs" % result["dt"])
        self.assertEqual(self.m.transitions("t1")[-1][3], "up")

    def test_start_hold_ends_with_a_failed_first_attempt(self):
        self.start_silent(connect_timeout="1s")
        self.assert_held_then_closed("the first attempt timed out (1s)", 0.5)
        self.assertIsNotNone(self.m.wait_for(r"closing 1 held client: the first connection "
                                             r"attempt failed", 2))
        # From here on the tunnel has had its chance: down_hold (0) rules, closed at once.
        closed, dt, _ = closed_promptly(self.lp, timeout=5)
        self.assertTrue(closed)
        self.assertLess(dt, 0.5 * harness.slowdown())

    def test_start_hold_0_closes_at_once(self):
        self.start_silent(connect_timeout="5s", start_hold="0")
        closed, dt, got = closed_promptly(self.lp, timeout=5)
        self.assertTrue(closed, "client held with start_hold = 0")
        self.assertEqual(got, b"")
        self.assertLess(dt, 0.5 * harness.slowdown())

    def test_remote_forward_survives_reconnect(self):
        rport = harness.free_port()
        self.start(sidecar_kw={"permit_listen": ["127.0.0.1:%d" % rport]},
                   remote_forward=["127.0.0.1:%d %s" % (rport, self.echo.addr)])
        self.assertIsNotNone(wait_echo(rport, 3.0), "remote forward not working")
        self.kill_and_wait_backoff()
        self.sc.restart()
        self.assertUp(self.m, timeout=5)
        dt = wait_echo(rport, 3.0)
        self.assertIsNotNone(dt, "remote forward dead after reconnect")
        self.assertEqual(echo_once(rport, b"again\n"), b"again\n")
        self.assertEqual(echo_once(self.lp, b"local too\n"), b"local too\n")


if __name__ == "__main__":
    harness.main()
