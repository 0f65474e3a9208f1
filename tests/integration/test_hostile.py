"""Hostile or broken SSH servers: one that accepts TCP and says nothing, one that sends
garbage instead of a banner (a line, or an endless stream), one that sends a valid banner
and stalls after the client's KEXINIT, and a proxy in front of a real sshd that stops
forwarding in the middle of the connection.

Each must end in `backoff` no later than connect_timeout after the attempt started, with a
last_error that says what happened (in the transition's log line and in
`moletun ctl status --json`), and the daemon must not spin meanwhile (its CPU time from
/proc/PID/stat).
"""

import json
import os
import socket
import threading
import time

import unittest

import harness
from harness import EchoServer, closed_promptly

CONNECT_TIMEOUT = 1.0
CPU_SHARE_MAX = 0.20
OBSERVE = 4.0  # seconds of repeated attempts watched per server
# MOLETUN_BUGS_FIXED=1 runs the tests of known bugs as plain tests (to check a fix).

class HostileServer(harness._Server):
    """Accepts TCP connections and runs `behaviour(conn)` on each until the test ends."""

    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.sent = 0
        super().__init__()

    def handle(self, conn):
        conn.settimeout(0.2)
        self.behaviour(self, conn)

    def idle(self, conn):
        """Reads and throws away what the client sends, until it closes or we stop."""
        while not self.closed:
            try:
                if not conn.recv(65536):
                    return
            except socket.timeout:
                continue


def say_nothing(server, conn):
    server.idle(conn)


def garbage_line(server, conn):
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    server.idle(conn)


def garbage_stream(server, conn):
    """Random bytes as fast as the client takes them, bounded by the test's length."""
    block = os.urandom(4096)
    conn.settimeout(0.05)
    while not server.closed and server.sent < (256 << 20):
        try:
            conn.sendall(block)
            server.sent += len(block)
        except socket.timeout:
            pass
        try:
            if conn.recv(65536) == b"":
                return
        except socket.timeout:
            pass


def banner_then_stall(server, conn):
    """A valid banner, then the client's banner and KEXINIT are read and never answered."""
    conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
    server.idle(conn)


class StallingProxy(harness._Server):
    """Forwards to a real sshd, but stops passing the server's bytes after `limit` of them
    (the connection stays open: a peer that hangs half-way)."""

    def __init__(self, target_port, limit):
        self.target_port = target_port
        self.limit = limit
        super().__init__()

    def handle(self, conn):
        up = socket.create_connection(("127.0.0.1", self.target_port))
        passed = [0]

        def client_to_server():
            try:
                while True:
                    b = conn.recv(65536)
                    if not b:
                        break
                    up.sendall(b)
            except OSError:
                pass
            finally:
                try:
                    up.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        t = threading.Thread(target=client_to_server, daemon=True)
        t.start()
        try:
            while not self.closed:
                b = up.recv(65536)
                if not b:
                    break
                room = self.limit - passed[0]
                if room > 0:
                    conn.sendall(b[:room])
                    passed[0] += min(room, len(b))
        except OSError:
            pass
        finally:
            t.join(5)
            up.close()


class HostileTest(harness.TunnelTest):
    def setUp(self):
        super().setUp()
        self.echo = self.server(EchoServer)
        self.lp = harness.free_port()

    def run_against(self, port, what, expect_error, kh_sidecar=None):
        """Runs moletun against 127.0.0.1:port for OBSERVE seconds; checks the attempts end
        in backoff within connect_timeout (plus margin), with a last_error matching
        expect_error, without spinning. Returns the daemon."""
        sc = kh_sidecar or self.sidecar(start=False)  # keys and known_hosts only
        kh = self.known_hosts(sc, port=port)
        m = self.moletun(harness.tunnel_section(
            "t1", sc, known_hosts_file=kh, port=str(port), connect_timeout="1s",
            local_forward=["127.0.0.1:%d %s" % (self.lp, self.echo.addr)]), start=False)
        m.start()
        meter = harness.CpuMeter(m.proc.pid).start()
        time.sleep(OBSERVE)
        meter.stop()

        # connecting -> backoff, every attempt within connect_timeout
        tr = m.transitions("t1")
        attempts = []
        first = m.grep(r"tunnel t1: connecting to ")
        self.assertTrue(first)
        started = first[0][0]
        for t, _, old, new, reason in tr:
            if new == "connecting":
                started = t
            elif old == "connecting" and new == "backoff":
                attempts.append((t - started, reason))
        self.assertGreaterEqual(len(attempts), 2, "fewer than 2 attempts ended: %s" % tr)
        slowest = max(a[0] for a in attempts)
        reasons = sorted({a[1].split("; retry in")[0] for a in attempts})
        self.assertNotIn("up", [x[3] for x in tr])
        for _, reason in attempts:
            self.assertRegex(reason, expect_error)

        # ...and the same reason in ctl status
        r = harness.run([harness.moletun_bin(), "ctl", "-s", m.control_socket, "status",
                         "--json"], check=False)
        doc = json.loads(r.stdout)
        last_error = doc["tunnels"][0]["last_error"]
        self.assertRegex(last_error, expect_error)

        # clients are turned away at once meanwhile
        closed, dt, _ = closed_promptly(self.lp, timeout=3)
        self.assertTrue(closed)
        self.assertLess(dt, 0.5)

        print("%s: %d attempts, slowest ended after %.3fs (connect_timeout %.0fs); %s; "
              "last_error: %s" % (what, len(attempts), slowest, CONNECT_TIMEOUT, meter,
                                 last_error))
        self.assertLess(slowest, CONNECT_TIMEOUT + 0.5,
                        "an attempt outlived connect_timeout")
        if not harness.under_wrapper():
            self.assertLess(meter.share, CPU_SHARE_MAX, "daemon spins against %s" % what)
        self.assertTrue(m.running())
        return m

    def test_accepts_tcp_and_says_nothing(self):
        srv = self.server(HostileServer, behaviour=say_nothing)
        self.run_against(srv.port, "silent server", r"connect timeout after 1s")

    def test_garbage_instead_of_banner(self):
        srv = self.server(HostileServer, behaviour=garbage_line)
        self.run_against(srv.port, "HTTP reply instead of a banner",
                         r"connect timeout after 1s|banner|protocol|[Ii]nvalid|packet")

    def test_endless_garbage(self):
        srv = self.server(HostileServer, behaviour=garbage_stream)
        m = self.run_against(srv.port, "endless random bytes",
                             r"connect timeout after 1s|banner|protocol|[Ii]nvalid|packet")
        mem = harness.proc_memory_kb(m.proc.pid)
        print("endless garbage: %.1f MB sent by the server; daemon Private_Dirty %d kB" % (
            srv.sent / 1e6, mem["Private_Dirty"]))
        self.assertLess(mem["Private_Dirty"], 64 << 10, "garbage piles up in memory")

    def test_valid_banner_then_stall(self):
        srv = self.server(HostileServer, behaviour=banner_then_stall)
        self.run_against(srv.port, "banner, then silence after KEXINIT",
                         r"connect timeout after 1s")

    def test_proxy_stalls_mid_handshake(self):
        # sshd's banner and KEXINIT pass, its key exchange reply does not
        sc = self.sidecar(permit_open=[self.echo.addr])
        proxy = self.server(StallingProxy, target_port=sc.port, limit=600)
        self.run_against(proxy.port, "proxy to sshd stalling after 600 bytes",
                         r"connect timeout after 1s", kh_sidecar=sc)

    def test_proxy_stalls_during_authentication(self):
        # key exchange completes, the server's answer to authentication never arrives
        sc = self.sidecar(permit_open=[self.echo.addr])
        proxy = self.server(StallingProxy, target_port=sc.port, limit=1450)
        self.run_against(proxy.port, "proxy to sshd stalling after 1450 bytes",
                         r"connect timeout after 1s", kh_sidecar=sc)


    # FINDING (reported to the lead): a connect timeout reads "connect timeout after 1s"
    # whatever the step: a SYN into a firewall, a server that never sends its banner, a
    # key exchange or an authentication that never finishes all look the same in
    # last_error. The engine knows the step (link.step); naming it (e.g. "connect timeout
    # after 1s waiting for the server's banner" / "... during authentication") would
    # tell an operator where to look. Remove expectedFailure once the reason names it.
    def test_connect_timeout_names_the_step(self):
        srv = self.server(HostileServer, behaviour=say_nothing)
        self.run_against(srv.port, "silent server",
                         r"connect timeout after 1s.*(banner|handshake|key exchange)")


if __name__ == "__main__":
    harness.main()
