"""Hostile or broken SSH servers: one that accepts TCP and says nothing, one that sends
garbage instead of a banner (a line, or an endless stream), one that sends a valid banner
and stalls after the client's KEXINIT, and a proxy in front of a real sshd that stops
forwarding in the middle of the connection.

Each must end in `backoff` no later than connect_timeout after the attempt started, with a
last_error that says what happened (in the transition's log line and in
`moletun ctl status --json`), and the daemon must not spin meanwhile (its CPU time from
/proc/PID/stat).

FloodTest: servers that try to freeze moletun or grow its memory, each next to a healthy
tunnel ("t0", a real sshd and an echo target) that must keep echoing meanwhile: a stream
of unsolicited packets before key exchange (raw sockets), the same after authentication
and an exit-signal with a huge name length (a paramiko server), a server that keeps
sending but stops reading (a proxy in front of sshd), and 200 clients that read nothing.
"""

import json
import os
import socket
import struct
import subprocess
import sys
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
        closed, dt, _ = closed_promptly(self.lp, timeout=3 * harness.slowdown())
        self.assertTrue(closed)
        self.assertLess(dt, 0.5 * harness.slowdown())

        print("%s: %d attempts, slowest ended after %.3fs (connect_timeout %.0fs); %s; "
              "last_error: %s" % (what, len(attempts), slowest, CONNECT_TIMEOUT, meter,
                                 last_error))
        self.assertLess(slowest, CONNECT_TIMEOUT + 0.5 * harness.slowdown(),
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


# ---------------------------------------------------------------------------------------
# Floods: bounded memory, a loop that keeps serving everyone else
# ---------------------------------------------------------------------------------------

try:
    import paramiko
except ImportError:  # Debian's python3-paramiko, when python3 is not Debian's own
    sys.path.append("/usr/lib/python3/dist-packages")
    try:
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import paramiko
    except ImportError:
        paramiko = None

SLOW = harness.slowdown()  # valgrind runs moletun ~20x slower, ASan ~2x
ECHO_RTT_MAX = 0.5 * SLOW  # a round trip through the healthy tunnel during a flood
CTL_MAX = 1.0 * SLOW       # `moletun ctl status` during a flood
RSS_MAX_MB = 100           # the daemon's VmRSS during a flood (see rss_bound_mb)
FLOOD_PACKET = 32000       # payload bytes of each unsolicited packet
PRE_KEX_SEND_MAX = 512 << 20  # per connection: the old code held all of it


def vm_kb(pid, field):
    """VmRSS / VmSize ... in kB from /proc/PID/status."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def plain_packet(payload):
    """An unencrypted SSH binary packet (RFC 4253 6) carrying `payload`."""
    pad = 8 - (len(payload) + 5) % 8
    if pad < 4:
        pad += 8
    return struct.pack(">IB", len(payload) + pad + 1, pad) + payload + b"\0" * pad


def request_success_flood(server, conn):
    """A banner, then unencrypted SSH_MSG_REQUEST_SUCCESS packets in 256 KiB bursts before
    any key exchange, as fast as the client reads, up to PRE_KEX_SEND_MAX bytes."""
    conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
    def read_all():
        try:
            server.idle(conn)
        except OSError:
            pass

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    burst = plain_packet(b"\x51" + b"x" * FLOOD_PACKET) * 8  # ~256 KiB
    sent = 0
    while not server.closed and reader.is_alive() and sent < PRE_KEX_SEND_MAX:
        try:
            conn.sendall(burst)
            sent += len(burst)
            server.sent += len(burst)
        except socket.timeout:
            pass
    reader.join()


class _Watch:
    """While a flood runs: round trips through the healthy tunnel's forward, `ctl status`
    timings and the daemon's VmRSS / VmSize, sampled in two threads."""

    def __init__(self, m, echo_port):
        self.m = m
        self.echo_port = echo_port
        self.rtts = []
        self.echo_errors = []
        self.ctl_times = []
        self.ctl_errors = []
        self.rss_kb = self.size_kb = 0
        self.size0_kb = vm_kb(m.proc.pid, "VmSize")
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=f, daemon=True)
                        for f in (self._echo, self._ctl)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(30)
        return self

    def _sample_memory(self):
        try:
            self.rss_kb = max(self.rss_kb, vm_kb(self.m.proc.pid, "VmRSS"))
            self.size_kb = max(self.size_kb, vm_kb(self.m.proc.pid, "VmSize"))
        except OSError:
            pass

    def _echo(self):
        s = None
        while not self.stop.is_set():
            self._sample_memory()
            try:
                if s is None:
                    s = harness.connect(self.echo_port, timeout=10 * SLOW)
                t0 = time.monotonic()
                s.sendall(b"x" * 64)
                got = b""
                while len(got) < 64:
                    b = s.recv(64 - len(got))
                    if not b:
                        raise OSError("echo connection closed")
                    got += b
                self.rtts.append(time.monotonic() - t0)
            except OSError as e:
                self.echo_errors.append(repr(e))
                if s is not None:
                    s.close()
                s = None
            self.stop.wait(0.05)
        if s is not None:
            s.close()

    def _ctl(self):
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                r = subprocess.run([harness.moletun_bin(), "ctl", "-s", self.m.control_socket,
                                    "status"], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, timeout=10 * SLOW)
                # exits 1 while a tunnel is not up: only an answer without t0 is wrong
                if b"t0" not in r.stdout:
                    self.ctl_errors.append(r.stdout.decode(errors="replace")[-200:])
            except subprocess.TimeoutExpired:
                self.ctl_errors.append("timed out after %ds" % (10 * SLOW))
            self.ctl_times.append(time.monotonic() - t0)
            self.stop.wait(0.2)

    def __str__(self):
        return ("echo round trips: %d, max %.3fs, %d errors; ctl status: %d, max %.3fs; "
                "VmRSS max %.1f MB, VmSize +%.1f MB" % (
                    len(self.rtts), max(self.rtts, default=-1), len(self.echo_errors),
                    len(self.ctl_times), max(self.ctl_times, default=-1), self.rss_kb / 1024,
                    (self.size_kb - self.size0_kb) / 1024))


if paramiko is not None:
    class _SshServer(paramiko.ServerInterface):
        def __init__(self, user_key_b64):
            self.user_key_b64 = user_key_b64

        def get_allowed_auths(self, username):
            return "publickey"

        def check_auth_publickey(self, username, key):
            if key.get_base64() == self.user_key_b64:
                return paramiko.AUTH_SUCCESSFUL
            return paramiko.AUTH_FAILED

        def check_channel_request(self, kind, chanid):
            if kind == "session":
                return paramiko.OPEN_SUCCEEDED
            return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

        def check_channel_direct_tcpip_request(self, chanid, origin, destination):
            return paramiko.OPEN_SUCCEEDED

        def check_channel_env_request(self, channel, name, value):
            return False


class ParamikoServer(harness._Server):
    """A real SSH server (paramiko) that accepts the sidecar's user key with the sidecar's
    ed25519 host key, and once the client has authenticated runs
    `behaviour(server, transport)` (moletun opens no channel of its own: a behaviour that
    needs one accepts a forward's, opened by a client of the test)."""

    def __init__(self, sidecar, behaviour):
        self.host_key = paramiko.Ed25519Key.from_private_key_file(sidecar.host_keys["ed25519"])
        with open(sidecar.user_key + ".pub") as f:
            self.user_key_b64 = f.read().split()[1]
        self.behaviour = behaviour
        self.sent = 0
        self.sessions = 0
        super().__init__()

    def handle(self, conn):
        tr = paramiko.Transport(conn)
        try:
            tr.add_server_key(self.host_key)
            tr.start_server(server=_SshServer(self.user_key_b64))
            deadline = time.monotonic() + 20
            while not tr.is_authenticated():
                if self.closed or not tr.is_active() or time.monotonic() > deadline:
                    return
                time.sleep(0.01)
            with self.lock:
                self.sessions += 1
            self.behaviour(self, tr)
            while not self.closed and tr.is_active():
                time.sleep(0.05)
        except (paramiko.SSHException, EOFError):
            pass
        finally:
            tr.close()

    def send_raw(self, tr, payload):
        msg = paramiko.Message()
        msg.add_bytes(payload)
        tr._send_user_message(msg)
        with self.lock:
            self.sent += len(payload)


def post_auth_flood(server, tr):
    """Unsolicited SSH_MSG_REQUEST_SUCCESS packets (libssh2 1.10 keeps each), up to 400 MB
    per connection."""
    payload = b"\x51" + b"x" * FLOOD_PACKET
    for _ in range((400 << 20) // len(payload)):
        if server.closed or not tr.is_active():
            return
        server.send_raw(tr, payload)


def exit_signal_huge_name(server, tr):
    """exit-signal requests on a forward's channel whose signal name length says 4 GiB
    (libssh2 1.10 allocates that length + 1 before checking it against the packet, on any
    channel)."""
    chan = tr.accept(20)
    if chan is None:
        return
    payload = (b"\x62" + struct.pack(">I", chan.remote_chanid) +
               struct.pack(">I", 11) + b"exit-signal" + b"\0" + struct.pack(">I", 0xFFFFFFF0))
    for _ in range(50):
        if server.closed or not tr.is_active():
            return
        server.send_raw(tr, payload)
        time.sleep(0.01)


def chatty(server, tr):
    """SSH_MSG_IGNORE every 0.2 s (a sign of life that needs no answer); forwarded
    channels are read and their bytes thrown away."""
    def drain(ch):
        try:
            while ch.recv(1 << 20):
                pass
        except (OSError, EOFError, paramiko.SSHException):
            pass

    def accept_loop():
        while not server.closed and tr.is_active():
            ch = tr.accept(0.2)
            if ch is not None:
                threading.Thread(target=drain, args=(ch,), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    while not server.closed and tr.is_active():
        tr.send_ignore(16)
        time.sleep(0.2)


class ReadStopProxy(harness._Server):
    """Passes bytes both ways to a real sshd until `stop_reading` is set; then it no longer
    reads what the client sends, and still passes everything the server sends."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.stop_reading = threading.Event()
        super().__init__()

    def handle(self, conn):
        up = socket.create_connection(("127.0.0.1", self.target_port))

        def client_to_server():
            try:
                while not self.closed:
                    if self.stop_reading.is_set():
                        time.sleep(0.05)
                        continue
                    conn.settimeout(0.05)
                    try:
                        b = conn.recv(65536)
                    except socket.timeout:
                        continue
                    if not b:
                        break
                    up.sendall(b)
            except OSError:
                pass

        t = threading.Thread(target=client_to_server, daemon=True)
        t.start()
        try:
            while not self.closed:
                b = up.recv(65536)
                if not b:
                    break
                conn.sendall(b)
        except OSError:
            pass
        finally:
            t.join(5)
            up.close()


class Sink(harness._Server):
    """Reads and discards everything."""

    def handle(self, conn):
        while conn.recv(1 << 20):
            pass


class Source(harness._Server):
    """Sends without end until the client or the test goes away."""

    def handle(self, conn):
        block = os.urandom(1 << 16)
        conn.settimeout(0.2)
        while not self.closed:
            try:
                conn.sendall(block)
            except socket.timeout:
                continue


def rss_bound_mb(m):
    """RSS_MAX_MB, or why it cannot be checked: ASan's quarantine keeps freed memory
    resident (256 MB by default) and valgrind's own memory counts in the process."""
    if harness.under_wrapper():
        return None, "moletun runs under valgrind"
    if harness.proc_uses_asan(m.proc.pid):
        return RSS_MAX_MB + 300, "ASan quarantine"
    return RSS_MAX_MB, None


class FloodTest(harness.TunnelTest):
    def setUp(self):
        super().setUp()
        self.echo = self.server(EchoServer)
        self.sc = self.sidecar(permit_open=[self.echo.addr])
        self.lp0 = harness.free_port()

    def healthy_section(self):
        return harness.tunnel_section(
            "t0", self.sc, known_hosts_file=self.known_hosts(self.sc, name="kh_t0"),
            local_forward=["127.0.0.1:%d %s" % (self.lp0, self.echo.addr)])

    def start_pair(self, port, **keys):
        """moletun with t0 (healthy) and t1 against 127.0.0.1:port; t0 up."""
        kh = self.known_hosts(self.sc, name="kh_t1", port=port)
        self.lp1 = harness.free_port()
        # These servers attack the first channel opened on them, which must be the
        # client's, not one of the sidecar audit's probes (closed at once, unread).
        keys.setdefault("audit_interval", "0")
        m = self.moletun([self.healthy_section(), harness.tunnel_section(
            "t1", self.sc, known_hosts_file=kh, port=str(port),
            local_forward=["127.0.0.1:%d %s" % (self.lp1, self.echo.addr)],
            **keys)])
        self.assertUp(m, "t0", timeout=10 * SLOW)
        return m

    def check_served(self, m, w, what):
        """t0 kept echoing, ctl answered, memory stayed bounded, the daemon lives."""
        print("%s: %s" % (what, w), flush=True)
        self.assertTrue(m.running(), "daemon died")
        self.assertGreaterEqual(len(w.rtts), 5, "too few echoes through t0: %s" % w)
        self.assertFalse(w.echo_errors, "t0's forward failed: %s" % w.echo_errors[:3])
        self.assertLess(max(w.rtts), ECHO_RTT_MAX, "t0 stalled during the flood")
        self.assertFalse(w.ctl_errors, "ctl status failed: %s" % w.ctl_errors[:3])
        self.assertLess(max(w.ctl_times), CTL_MAX, "ctl status slow during the flood")
        bound, why = rss_bound_mb(m)
        if bound is None:
            print("RSS bound not checked: %s" % why)
        else:
            self.assertLess(w.rss_kb, bound << 10, "daemon memory grew: %s" % w)
        self.assertEqual(m.state("t0"), "up")

    def wait_backoff(self, m, since, reason_re, timeout):
        tr = m.wait_transition("t1", since, new="backoff", timeout=timeout)
        self.assertIsNotNone(tr, "t1 not in backoff within %.1fs: %s" % (
            timeout, [x[2:] for x in m.transitions("t1")]))
        self.assertRegex(tr[4], reason_re)
        return tr

    def test_pre_kex_flood(self):
        # unsolicited packets before key exchange: the session's memory limit ends the
        # attempt (connect_timeout would too: the loop is never held), again and again
        srv = self.server(HostileServer, behaviour=request_success_flood)
        m = self.start_pair(srv.port, connect_timeout="2s")
        w = _Watch(m, self.lp0).start()
        t0 = time.monotonic()
        mark = m.mark()
        tr = self.wait_backoff(m, mark, r"session_memory_max|connect timeout", 2.5 * SLOW)
        first = tr[0] - t0
        time.sleep(3)  # more attempts, each flooded
        w.finish()
        attempts = [x for x in m.transitions("t1", mark) if x[3] == "backoff"]
        print("pre-kex flood: first attempt in backoff after %.2fs (%s); %d attempts; "
              "%.0f MB sent by the server" % (first, tr[4], len(attempts), srv.sent / 1e6))
        self.assertGreaterEqual(len(attempts), 2)
        self.check_served(m, w, "pre-kex flood")

    def _paramiko_server(self, behaviour):
        if paramiko is None:
            self.skipTest("python3-paramiko is not installed (tests/deps.sh installs it)")
        return self.server(ParamikoServer, sidecar=self.sc, behaviour=behaviour)

    def test_post_auth_flood(self):
        srv = self._paramiko_server(post_auth_flood)
        m = self.start_pair(srv.port)
        mark = m.mark()
        w = _Watch(m, self.lp0).start()
        self.assertUp(m, "t1", timeout=10 * SLOW)
        t_up = time.monotonic()
        tr = self.wait_backoff(m, mark, r"session_memory_max", 10 * SLOW)
        time.sleep(2)  # a reconnect and a second flood
        w.finish()
        print("post-auth flood: t1 up -> backoff after %.2fs (%s); %.0f MB sent" % (
            tr[0] - t_up, tr[4], srv.sent / 1e6))
        self.check_served(m, w, "post-auth flood")

    def test_exit_signal_huge_name(self):
        srv = self._paramiko_server(exit_signal_huge_name)
        m = self.start_pair(srv.port)
        mark = m.mark()
        w = _Watch(m, self.lp0).start()
        self.assertUp(m, "t1", timeout=10 * SLOW)
        # a client of t1: the channel the server sends its exit-signals on
        c = harness.connect(self.lp1)
        self.addCleanup(c.close)
        tr = m.wait_transition("t1", mark, new="backoff", timeout=5 * SLOW)
        time.sleep(2)
        w.finish()
        print("exit-signal: %s" % (tr[4] if tr else "t1 never left up"))
        self.check_served(m, w, "exit-signal with a 4 GiB name length")
        if harness.proc_uses_asan(m.proc.pid) or harness.under_wrapper():
            print("VmSize not checked: ASan/valgrind reserve their own address space")
        else:
            self.assertLess(w.size_kb - w.size0_kb, 1 << 20,
                            "address space grew by more than 1 GB: %s" % w)
        self.assertIsNotNone(tr, "t1 not in backoff")
        self.assertRegex(tr[4], r"session_memory_max")

    def test_server_stops_reading(self):
        # a server that keeps sending (SSH_MSG_IGNORE every 0.2 s) behind a proxy that
        # stops passing what moletun sends, while a client uploads: last_rx stays fresh,
        # so only unanswered probes and bytes that wait tell. Dead within a probe interval
        # plus keepalive_interval x keepalive_count_max (1 s + 2 s).
        srv = self._paramiko_server(chatty)
        proxy = self.server(ReadStopProxy, target_port=srv.port)
        lp = harness.free_port()
        m = self.moletun([self.healthy_section(), harness.tunnel_section(
            "t1", self.sc, known_hosts_file=self.known_hosts(self.sc, name="kh_t1",
                                                             port=proxy.port),
            port=str(proxy.port), keepalive_interval="1s", keepalive_count_max="2",
            local_forward=["127.0.0.1:%d %s" % (lp, self.echo.addr)])])
        self.assertUp(m, "t0", timeout=10 * SLOW)
        self.assertUp(m, "t1", timeout=10 * SLOW)
        c = harness.connect(lp, timeout=30)
        stop = threading.Event()

        def upload():
            block = b"u" * 65536
            c.settimeout(0.2)
            while not stop.is_set():
                try:
                    c.sendall(block)
                except socket.timeout:
                    pass
                except OSError:
                    return

        up = threading.Thread(target=upload, daemon=True)
        up.start()
        time.sleep(0.5)
        mark = m.mark()
        w = _Watch(m, self.lp0).start()
        proxy.stop_reading.set()
        t_stop = time.monotonic()
        tr = m.wait_transition("t1", mark, old="up", timeout=8 * SLOW)
        w.finish()
        stop.set()
        c.close()
        up.join(5)
        self.assertIsNotNone(tr, "t1 still up %.1fs after the server stopped reading" % (
            time.monotonic() - t_stop))
        took = tr[0] - t_stop
        print("stalled reader: t1 left up after %.2fs: %s" % (took, tr[4]))
        self.assertRegex(tr[4], r"stopped reading")
        self.assertLess(took, 3.0 + 1.0 * SLOW)
        self.check_served(m, w, "stalled reader")

    def test_clients_that_read_nothing(self):
        # each forwarded connection may make the session hold one receive window
        # (256 KiB at first) for a client that reads nothing; 200 of them stay far from
        # the ~1.2 MiB each that libssh2's default 2 MiB window cost
        src = self.server(Source)
        sc = self.sidecar(permit_open=[src.addr])
        lp = harness.free_port()
        m = self.moletun(harness.tunnel_section(
            "t1", sc, known_hosts_file=self.known_hosts(sc, name="kh_t1"),
            local_forward=["127.0.0.1:%d %s" % (lp, src.addr)]))
        self.assertUp(m, "t1", timeout=10 * SLOW)
        before = harness.proc_memory_kb(m.proc.pid)["Private_Dirty"]
        clients = []
        for _ in range(200):
            s = harness.connect(lp, timeout=10)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            clients.append(s)
        time.sleep(3 * SLOW)  # every channel's window fills
        after = harness.proc_memory_kb(m.proc.pid)["Private_Dirty"]
        for s in clients:
            s.close()
        per = (after - before) / 200
        print("200 clients reading nothing: Private_Dirty %d -> %d kB (%.0f kB each)" % (
            before, after, per))
        self.assertEqual(m.state("t1"), "up")
        if harness.under_wrapper() or harness.proc_uses_asan(m.proc.pid):
            print("per-client bound not checked: ASan/valgrind change what malloc costs")
            return
        self.assertLess(per, 768, "each idle client pins too much")


if __name__ == "__main__":
    harness.main()
