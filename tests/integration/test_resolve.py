"""Host names are resolved without blocking the loop (getaddrinfo_a), every address is
tried in turn, and a name that does not resolve ends in backoff with a clear reason."""

import time

import harness
from harness import EchoServer


class ResolveTest(harness.TunnelTest):
    def setUp(self):
        super().setUp()
        self.echo = self.server(EchoServer)
        self.lp = harness.free_port()
        self.sc = self.sidecar(permit_open=[self.echo.addr])

    def section(self, host, **keys):
        kh = self.known_hosts(self.sc, host=host)
        text = harness.tunnel_section("t1", self.sc, local_forward=[
            "127.0.0.1:%d %s" % (self.lp, self.echo.addr)], known_hosts_file=kh, **keys)
        return text.replace("host = %s\n" % self.sc.listen, "host = %s\n" % host, 1)

    def test_name_resolves(self):
        # "localhost" may resolve to ::1 first, where the sidecar does not listen: the
        # next address (127.0.0.1) must be tried within the same attempt.
        m = self.moletun(self.section("localhost"))
        self.assertUp(m)
        self.assertEqual(harness.echo_once(self.lp), b"ping\n")
        self.assertEqual(m.grep("connect to localhost"), [],
                         "an address that failed ended the attempt instead of the next one")

    def test_unresolvable_name(self):
        m = self.moletun(self.section("no-such-host.invalid", connect_timeout="2s"))
        t0 = time.monotonic()
        tr = m.wait_state("t1", "backoff", 10)
        self.assertIsNotNone(tr, "unresolvable host never reached backoff")
        print("unresolvable host: backoff after %.3fs: %s" % (time.monotonic() - t0, tr[4]))
        self.assertTrue("resolve" in tr[4] or "timeout" in tr[4], tr[4])
        # the loop stays responsive meanwhile: the process still exits at once
        rc, dt = m.stop()
        self.assertEqual(rc, 0)
        self.assertLess(dt, 2.0 * harness.slowdown())


if __name__ == "__main__":
    harness.main()
