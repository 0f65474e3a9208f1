"""proxy_jump: a tunnel reaches its sidecar only through a bastion sshd (as ssh -J).

Topology (tests/integration/jumpnet.py): moletun in the root namespace; the bastion sshd in
netns NS_BASTION on BASTION_ADDR (a veth pair to the root namespace), PermitOpen limited to
the sidecar; the sidecar sshd and its targets in netns NS_SIDE, reachable only from the
bastion's namespace (a second veth pair; the root namespace has no route there and the
bastion's namespace does not forward). Both are real OpenSSH sshd configured like
production. Every hop's host key is in the tunnel's known_hosts_file.

Needs root, `ip` (iproute2) and `iptables`; otherwise exits 77 (skipped) with the reason.
"""

import hashlib
import json
import os
import random
import re
import socket
import subprocess
import time

import harness
import jumpnet
from harness import EchoServer, SinkSource, connect, echo_once, recv_all, wait_echo
from jumpnet import BASTION_ADDR, NS_BASTION, NS_SIDE, SIDE_ADDR
from test_health import DelayRelay

KEEPALIVE_INTERVAL = 1.0
KEEPALIVE_COUNT_MAX = 3
# as test_blackhole.py: detection bound plus scheduling margin, wider under valgrind
SLOW = harness.slowdown()
BOUND = (KEEPALIVE_INTERVAL * KEEPALIVE_COUNT_MAX + 1.0 + 1.5) * SLOW
UP_TIMEOUT = 15.0 * SLOW
AUTH_ACTIVITY = r"(Accepted \S+ for |Accepted key |Postponed publickey|Failed publickey)"
MIB = 1 << 20
# The jump channel's window starts at 2M and may grow to this (channel_window_max).
WINDOW_MAX = 8 * MIB


def ctl(m, *args, timeout=15):
    e = dict(os.environ)
    e.pop("MOLETUN_SOCKET", None)
    return subprocess.run([harness.moletun_bin(), "ctl", "-s", m.control_socket] + list(args),
                          capture_output=True, text=True, timeout=timeout, env=e)


def hop_text(sc):
    return "%s@%s:%d" % (sc.user, sc.listen, sc.port)


class ProxyJumpTest(harness.TunnelTest):
    def setUp(self):
        super().setUp()
        jumpnet.down()  # leftovers of a crashed run with the same pid
        self.addCleanup(jumpnet.down)
        jumpnet.up()
        # Targets live next to the sidecar, as pg_main does next to the production one.
        self.echo = self.netns_server(NS_SIDE, EchoServer)
        self.sink = self.netns_server(NS_SIDE, SinkSource)
        self.remote_port = harness.free_port()
        self.side = self.sidecar(listen=SIDE_ADDR, wrapper=jumpnet.netns_exec(NS_SIDE),
                                 permit_open=[self.echo.addr, self.sink.addr],
                                 permit_listen=["127.0.0.1:%d" % self.remote_port])
        # A second sidecar inside the bastion's namespace, reachable both directly and
        # through the bastion: the reload test moves a tunnel between the two paths.
        self.near_echo = self.netns_server(NS_BASTION, EchoServer)
        self.near = self.sidecar(start=False, listen=BASTION_ADDR,
                                 wrapper=jumpnet.netns_exec(NS_BASTION),
                                 permit_open=[self.near_echo.addr])
        self.bastion = self.sidecar(listen=BASTION_ADDR, wrapper=jumpnet.netns_exec(NS_BASTION),
                                    permit_open=["%s:%d" % (SIDE_ADDR, self.side.port),
                                                 "%s:%d" % (BASTION_ADDR, self.near.port)])
        self.kh = os.path.join(self.tmp, "known_hosts")
        self.write_known_hosts()
        self.lp_echo, self.lp_sink = harness.free_port(), harness.free_port()

    def netns_server(self, ns, cls):
        srv = jumpnet.in_netns(ns, lambda: cls(host="127.0.0.1"))
        self.addCleanup(srv.cleanup)
        return srv

    def write_known_hosts(self, wrong_bastion=False):
        lines = [self.side.known_hosts_line(), self.near.known_hosts_line(),
                 self.bastion.known_hosts_line(wrong=wrong_bastion)]
        with open(self.kh, "w") as f:
            f.write("".join(lines))

    def authorize_on_bastion(self, key):
        """Lets `key` (a private key path) log in on the bastion too."""
        with open(self.bastion.authorized_keys, "a") as f:
            f.write(harness.read_pubkey(key + ".pub") + " moletun-user\n")

    def jump_section(self, name="t1", remote_forward=(), hop_key=True, **keys):
        """The tunnel to the sidecar through the bastion. hop_key: the hop authenticates
        with the bastion's own user key (proxy_jump_identity_file); otherwise with the
        tunnel's key, which the bastion is then told to accept."""
        if hop_key:
            keys.setdefault("proxy_jump_identity_file", self.bastion.user_key)
        else:
            self.authorize_on_bastion(self.side.user_key)
        keys.setdefault("proxy_jump", hop_text(self.bastion))
        keys.setdefault("keepalive_interval", "%dms" % (KEEPALIVE_INTERVAL * 1000))
        keys.setdefault("keepalive_count_max", str(KEEPALIVE_COUNT_MAX))
        return harness.tunnel_section(
            name, self.side, known_hosts_file=self.kh,
            local_forward=["127.0.0.1:%d %s" % (self.lp_echo, self.echo.addr),
                           "127.0.0.1:%d %s" % (self.lp_sink, self.sink.addr)],
            remote_forward=remote_forward, **keys)

    def assertJumpedUp(self, m, tunnel="t1"):
        self.assertTrue(m.running(), "moletun exited: %s" % m.log_text()[-2000:])
        self.assertUp(m, tunnel, UP_TIMEOUT)
        # Only the bastion's namespace can talk to the sidecar: the session went through it.
        self.assertGreaterEqual(self.bastion.accepted_count(), 1, "no login on the bastion")
        self.assertGreaterEqual(self.side.accepted_count(), 1, "no login on the sidecar")

    # -- the topology itself ------------------------------------------------------------

    def test_sidecar_reachable_only_through_bastion(self):
        """What the other tests rely on: no way from moletun's namespace to the sidecar
        but through the bastion."""
        self.assertTrue(jumpnet.reachable(BASTION_ADDR, self.bastion.port),
                        "the bastion is not reachable from the root namespace")
        self.assertFalse(jumpnet.reachable(SIDE_ADDR, self.side.port),
                         "the sidecar is reachable without the bastion")
        self.assertTrue(jumpnet.reachable(SIDE_ADDR, self.side.port, ns=NS_BASTION),
                        "the sidecar is not reachable from the bastion")
        self.assertFalse(jumpnet.reachable(self.echo.host, self.echo.port),
                         "the sidecar's target is reachable from the root namespace")
        # moletun itself, told to go direct, never gets there (the probe from the bastion's
        # namespace above is the sidecar's only connection).
        # sshd logs the probe's connection a moment later: count from after it
        deadline = time.monotonic() + 5 * SLOW
        while self.side.connection_count() < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        before = self.side.connection_count()
        m = self.moletun(self.jump_section(proxy_jump="none", proxy_jump_identity_file=None))
        self.assertIsNone(m.wait_state("t1", "up", 4.0), "direct tunnel came up")
        tr = m.transitions("t1")
        self.assertTrue(tr and tr[0][3] == "backoff", "moletun did not even try: %s" % tr)
        self.assertEqual(self.side.connection_count(), before)

    # -- data ---------------------------------------------------------------------------

    def test_data_intact_both_ways(self):
        m = self.moletun(self.jump_section())
        self.assertJumpedUp(m)
        self.assertEqual(self.bastion.count(r"Accepted publickey for \S+ from %s " %
                                            re.escape(jumpnet.ROOT_ADDR)), 1)
        self.assertEqual(echo_once(self.lp_echo, b"through the bastion\n"),
                         b"through the bastion\n")
        for _ in range(2):
            n = random.randint(1 << 20, 4 << 20)
            data = os.urandom(n)
            t0 = time.monotonic()
            with connect(self.lp_sink, timeout=30) as s:
                s.sendall(b"SINK %d\n" % n)
                s.sendall(data)
                reply = s.recv(128).strip().decode()
            self.assertEqual(reply, hashlib.sha256(data).hexdigest(),
                             "upload of %d bytes corrupted" % n)
            print("upload %d bytes through the jump in %.3fs" % (n, time.monotonic() - t0))
            n = random.randint(1 << 20, 4 << 20)
            t0 = time.monotonic()
            with connect(self.lp_sink, timeout=30) as s:
                s.sendall(b"SOURCE %d\n" % n)
                size, digest = harness.source_header(s)
                got = recv_all(s)
            self.assertEqual(size, n)
            self.assertEqual(len(got), n, "download truncated or padded")
            self.assertEqual(hashlib.sha256(got).hexdigest(), digest,
                             "download of %d bytes corrupted" % n)
            print("download %d bytes through the jump in %.3fs" % (n, time.monotonic() - t0))
        self.assertEqual(m.transitions("t1")[-1][3], "up", "tunnel left up during transfers")

    def test_download_through_distant_bastion(self):
        """A bastion 2 x 20 ms away (a relay in front of it): a download whose reader stalls
        midway. The jump channel's window, and the client's, grow only while their readers
        keep up: while the client reads nothing the daemon holds at most what the grown
        windows allow (each twice, as libssh2 keeps packets whole), not the rest of the
        download; once it reads again every byte arrives intact."""
        relay = self.server(DelayRelay, target_port=self.bastion.port, target_host=BASTION_ADDR)
        relay.delay = 0.020
        with open(self.kh, "a") as f:
            f.write(self.bastion.known_hosts_line(host="127.0.0.1", port=relay.port))
        m = self.moletun(self.jump_section(
            proxy_jump="%s@127.0.0.1:%d" % (self.bastion.user, relay.port),
            channel_window_max=str(WINDOW_MAX)))
        self.assertUp(m, "t1", UP_TIMEOUT)
        time.sleep(2.5)  # the hops' keepalive round trips measured
        pid, n, first = m.proc.pid, 96 * MIB, 16 * MIB
        up_kb = harness.proc_memory_kb(pid)["Private_Dirty"]
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # bytes wait upstream
        s.settimeout(60)
        s.connect(("127.0.0.1", self.lp_sink))
        with s:
            s.sendall(b"SOURCE %d\n" % n)
            size, digest = harness.source_header(s)
            h, got, t0 = hashlib.sha256(), 0, time.monotonic()
            while got < first:
                b = s.recv(min(1 << 20, first - got))
                self.assertTrue(b, "EOF after %d bytes" % got)
                h.update(b)
                got += len(b)
            print("first %d MiB in %.2fs" % (first // MIB, time.monotonic() - t0))
            time.sleep(4 * SLOW)  # stalled: the windows close and shrink
            held_kb = harness.proc_memory_kb(pid)["Private_Dirty"] - up_kb
            account = json.loads(ctl(m, "status", "--json").stdout)["memory"]
            print("stalled: daemon private memory +%d kB, account %d kB (%s)" % (
                held_kb, account["used_bytes"] // 1024, account["by_kind"]))
            rest = recv_all(s)
            h.update(rest)
            got += len(rest)
        self.assertEqual(size, n)
        self.assertEqual(got, n, "download truncated or padded")
        self.assertEqual(h.hexdigest(), digest, "download corrupted")
        self.assertEqual(m.transitions("t1")[-1][3], "up", "tunnel left up during transfers")
        self.assertEqual(len(m.grep(r"session memory|too much unsolicited")), 0)
        # what the windows allow, each held twice: the jump channel's and the client's
        # channel's (2 x WINDOW_MAX each once grown), the client's socket (1M, doubled)
        bound = 2 * (2 * WINDOW_MAX) * 2 + 2 * MIB + 16 * MIB
        self.assertLess(account["used_bytes"], bound)
        if harness.proc_uses_asan(pid):
            print("AddressSanitizer build: private memory not checked", flush=True)
            return
        self.assertLess(held_kb * 1024, bound,
                        "the daemon held %d kB for a stalled reader" % held_kb)

    def test_remote_forward_through_jump(self):
        local_echo = self.server(EchoServer)  # on this machine, where moletun connects
        m = self.moletun(self.jump_section(
            remote_forward=["127.0.0.1:%d %s" % (self.remote_port, local_echo.addr)]))
        self.assertJumpedUp(m)

        def through_sidecar(payload):
            with jumpnet.in_netns(NS_SIDE, lambda: connect(self.remote_port)) as s:
                s.sendall(payload)
                got = b""
                while len(got) < len(payload):
                    b = s.recv(1 << 16)
                    if not b:
                        break
                    got += b
                return got

        deadline = time.monotonic() + 5 * SLOW
        got = b""
        while time.monotonic() < deadline:  # the remote listener may lag "up" a little
            try:
                got = through_sidecar(b"from the sidecar's side\n")
                break
            except OSError:
                time.sleep(0.1)
        self.assertEqual(got, b"from the sidecar's side\n")
        payload = os.urandom(1 << 20)
        self.assertEqual(hashlib.sha256(through_sidecar(payload)).hexdigest(),
                         hashlib.sha256(payload).hexdigest())
        self.assertGreaterEqual(local_echo.total, 2)

    # -- failures -----------------------------------------------------------------------

    def test_blackholed_bastion_detected(self):
        m = self.moletun(self.jump_section())
        self.assertJumpedUp(m)
        self.assertEqual(echo_once(self.lp_echo, b"before\n"), b"before\n")
        # An idle path with healthy hops is not declared dead.
        mark = m.mark()
        time.sleep(KEEPALIVE_INTERVAL * KEEPALIVE_COUNT_MAX + 2.0)
        self.assertEqual(m.transitions("t1", mark), [], "tunnel dropped while idle")

        client = connect(self.lp_echo, timeout=10)
        self.addCleanup(client.close)
        client.sendall(b"open\n")
        self.assertEqual(client.recv(100), b"open\n")
        mark = m.mark()
        t0 = time.monotonic()
        jumpnet.blackhole(NS_BASTION, True)
        self.addCleanup(jumpnet.sh, *jumpnet.netns_exec(NS_BASTION), "iptables", "-F",
                        check=False)
        left = m.wait_transition("t1", mark, old="up", timeout=BOUND + 5)
        self.assertIsNotNone(left, "tunnel still up %.1fs after the bastion went dark" % (
            BOUND + 5))
        detect = left[0] - t0
        print("blackholed bastion detected after %.3fs (keepalive %gs x %d; -> %s: %s)" % (
            detect, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT_MAX, left[3], left[4]))
        self.assertLessEqual(detect, BOUND)
        client.settimeout(3 * SLOW)
        try:
            data = client.recv(100)
        except ConnectionResetError:
            data = b""
        except OSError:
            self.fail("client connection still open after the path was declared dead")
        self.assertEqual(data, b"")

        time.sleep(1.0)
        self.assertNotEqual(m.state("t1"), "up")
        jumpnet.blackhole(NS_BASTION, False)
        t1 = time.monotonic()
        dt = wait_echo(self.lp_echo, 10.0 * SLOW)
        self.assertIsNotNone(dt, "not usable again within 10 s after the path healed")
        print("usable again %.3fs after the path healed" % (time.monotonic() - t1))

    def test_bastion_host_key_mismatch(self):
        self.write_known_hosts(wrong_bastion=True)
        m = self.moletun(self.jump_section(auth_retry_interval="2s"))
        first = m.wait_for(r"HOST KEY CHANGED for %s:%d" % (re.escape(BASTION_ADDR),
                                                             self.bastion.port), 5 * SLOW)
        self.assertIsNotNone(first, "no HOST KEY CHANGED for the bastion in the log")
        mark = m.mark()
        time.sleep(5.5)
        starts = [tr[0] for tr in m.transitions("t1", mark) if tr[3] == "connecting"]
        self.assertGreaterEqual(len(starts), 2, "no steady retries: %r" % starts)
        gaps = [b - a for a, b in zip(starts, starts[1:])]
        print("bastion host key mismatch: gaps between attempts %s (auth_retry_interval 2s)"
              % ["%.2f" % g for g in gaps])
        # times are when the test read each line: one read late shortens the next gap
        self.assertGreaterEqual(min(gaps), 2.0 - 0.1, "retried faster than auth_retry_interval")
        self.assertLessEqual(max(gaps), 2.0 * 1.1 + 0.5 * SLOW, "retries too slow")
        self.assertIsNone(m.wait_state("t1", "up", 0.1))
        self.assertTrue(m.running())
        self.assertGreaterEqual(self.bastion.connection_count(), 2, "bastion never contacted")
        self.assertEqual(self.bastion.count(AUTH_ACTIVITY), 0,
                         "a user key was offered to a bastion with a changed host key")
        self.assertEqual(self.side.connection_count(), 0, "the sidecar was reached")
        self.assertEqual(self.side.count(AUTH_ACTIVITY), 0)
        self.assertEqual(m.grep(r"HOST KEY CHANGED for %s:" % re.escape(SIDE_ADDR)), [])

    # -- reload and status --------------------------------------------------------------

    def near_section(self, **keys):
        return harness.tunnel_section("t1", self.near, known_hosts_file=self.kh,
                                      local_forward=["127.0.0.1:%d %s" % (
                                          self.lp_echo, self.near_echo.addr)],
                                      keepalive_interval="1s", **keys)

    def near_logins(self, source):
        return self.near.count(r"Accepted publickey for \S+ from %s " % re.escape(source))

    def reload_to(self, m, section):
        with open(m.config_path) as f:
            head = f.read().split("[tunnel:", 1)[0]
        with open(m.config_path, "w") as f:
            f.write(head + section)
        mark = m.mark()
        r = ctl(m, "reload")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIsNotNone(m.wait_transition("t1", mark, timeout=5 * SLOW),
                             "the tunnel was not restarted by the reload")
        return mark

    def test_reload_adds_and_removes_jump(self):
        """A sidecar both paths reach: its sshd log tells which one a session took (from
        moletun's address directly, from the bastion's own address through it)."""
        self.near.start()
        self.authorize_on_bastion(self.near.user_key)
        m = self.moletun(self.near_section())
        self.assertUp(m, "t1", UP_TIMEOUT)
        self.assertIsNotNone(wait_echo(self.lp_echo, 5), "direct tunnel not usable")
        self.assertEqual(self.near_logins(jumpnet.ROOT_ADDR), 1)
        self.assertEqual(json.loads(ctl(m, "status", "--json").stdout)["tunnels"][0]["via"], [])

        mark = self.reload_to(m, self.near_section(proxy_jump=hop_text(self.bastion)))
        self.assertIsNotNone(m.wait_transition("t1", mark, new="up", timeout=UP_TIMEOUT),
                             "not up again after the reload added the jump")
        self.assertIsNotNone(wait_echo(self.lp_echo, 5), "not usable through the jump")
        self.assertEqual(self.near_logins(BASTION_ADDR), 1, "the session did not take the jump")
        self.assertEqual(self.bastion.accepted_count(), 1)
        st = json.loads(ctl(m, "status", "--json").stdout)["tunnels"][0]
        self.assertEqual(st["via"], [hop_text(self.bastion)])

        mark = self.reload_to(m, self.near_section(proxy_jump="none"))
        self.assertIsNotNone(m.wait_transition("t1", mark, new="up", timeout=UP_TIMEOUT),
                             "not up again after the reload removed the jump")
        self.assertIsNotNone(wait_echo(self.lp_echo, 5), "not usable directly again")
        self.assertEqual(self.near_logins(jumpnet.ROOT_ADDR), 2, "the jump was not dropped")
        self.assertEqual(self.bastion.accepted_count(), 1)
        self.assertEqual(json.loads(ctl(m, "status", "--json").stdout)["tunnels"][0]["via"], [])

    def test_status_shows_path(self):
        m = self.moletun(self.jump_section(hop_key=False, proxy_jump="%s,%s@%s:%d" % (
            hop_text(self.bastion), "ops", "[fd00::9]", 2222)))
        # The path comes from the configuration: shown whatever the state.
        deadline = time.monotonic() + 5 * SLOW
        while True:
            r = ctl(m, "status", "--json")
            if r.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        st = json.loads(r.stdout)["tunnels"][0]
        self.assertEqual(st["via"], [hop_text(self.bastion), "ops@[fd00::9]:2222"])
        self.assertEqual((st["host"], st["port"]), (SIDE_ADDR, self.side.port))
        table = ctl(m, "status").stdout
        self.assertIn("%s@%s:%d via %s,ops@[fd00::9]:2222" % (
            self.side.user, SIDE_ADDR, self.side.port, hop_text(self.bastion)), table)

    def test_hop_uses_tunnel_key_by_default(self):
        """Without proxy_jump_identity_file the hop logs in with identity_file."""
        m = self.moletun(self.jump_section(hop_key=False))
        self.assertJumpedUp(m)
        self.assertEqual(echo_once(self.lp_echo, b"one key\n"), b"one key\n")


if __name__ == "__main__":
    jumpnet.check_prerequisites()
    harness.main()
