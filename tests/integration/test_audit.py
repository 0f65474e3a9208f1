"""moletun authorize and moletun audit against real OpenSSH sshd sidecars.

Three sidecars, as the sidecar's side of a tunnel is found in the wild:
  hardened   the harness's production-like sshd_config plus MaxSessions 0 and only strong
             algorithms: audit passes every check.
  stock      a Debian-like sshd_config (AllowTcpForwarding yes, no ForceCommand, no
             PermitOpen, default MaxSessions, Debian's shipped lines) with a plain key
             line: audit fails and names the shell, the forwarding and the Unix socket.
  stock + the line `moletun authorize` prints: the tunnel works, the key runs no command
             and reaches nothing else, and every check the key line can enforce passes;
             what only sshd_config can fix (the MACs OpenSSH offers by default) still fails,
             marked fix_in "sshd_config".
Through a proxy_jump bastion (tests/integration/jumpnet.py) the audit reaches the sidecar
only through the bastion, whose own key line comes from `moletun authorize` too.

Every probe must be harmless: the Unix socket the tests offer records what it receives
(nothing), and the sidecar runs nothing but the marker's echo under the stock config.
"""

import json
import os
import shutil
import socket
import subprocess
import threading
import time

import harness
import jumpnet
from harness import EchoServer, wait_echo

SLOW = harness.slowdown()
# generous per-step bound for a loaded 2-core machine; steps that work take milliseconds
CONNECT_TIMEOUT = "%ds" % (10 * SLOW)
RUN_TIMEOUT = 120 * SLOW

STRONG_ALGORITHMS = "\n".join([
    "KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org",
    "Ciphers aes256-ctr,aes128-ctr",
    "MACs hmac-sha2-256,hmac-sha2-512",
    "HostKeyAlgorithms ssh-ed25519",
])


class StockSidecar(harness.Sidecar):
    """sshd with Debian 12's shipped sshd_config lines and nothing hardened: what a new
    user starts from. PasswordAuthentication no (a key-only host), UsePAM no and
    StrictModes no only because the test runs in temp dirs without PAM."""

    def write_config(self):
        lines = [
            "Port %d" % self.port,
            "ListenAddress %s" % self.listen,
        ]
        lines += ["HostKey %s" % p for p in self.host_keys.values()]
        lines += [
            "AuthorizedKeysFile %s" % self.authorized_keys,
            "PasswordAuthentication no",
            # Debian's /etc/ssh/sshd_config, its uncommented lines
            "KbdInteractiveAuthentication no",
            "X11Forwarding yes",
            "PrintMotd no",
            "AcceptEnv LANG LC_*",
            "Subsystem sftp /usr/lib/openssh/sftp-server",
            "UsePAM no",
            "StrictModes no",
            "PidFile none",
            "LogLevel VERBOSE",
            # keeps bash from sourcing this host's ~/.bashrc for session commands (see
            # harness.Sidecar): the test host's shell files are not the sidecar's
            "SetEnv SHLVL=1",
        ]
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines) + "\n")


class SocketListener:
    """A Unix stream socket on the sidecar's host that records every connection and the
    bytes it received before the peer closed."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        os.chmod(path, 0o666)
        self.sock.listen(16)
        self.received = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(10)
            data = b""
            try:
                while True:
                    b = conn.recv(4096)
                    if not b:
                        break
                    data += b
            except OSError:
                pass
            conn.close()
            with self.lock:
                self.received.append(data)

    def connections(self):
        with self.lock:
            return list(self.received)

    def cleanup(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)


class AuditBase(harness.TunnelTest):
    """Targets, a Unix socket to probe, and helpers; the tests are in the subclasses."""

    def setUp(self):
        super().setUp()
        self.echo = self.server(EchoServer)
        self.other = self.server(EchoServer)  # reachable, but not a target
        self.lp = harness.free_port()
        self.sock = SocketListener(os.path.join(self.tmp, "db.sock"))
        self.addCleanup(self.sock.cleanup)

    def sidecar(self, start=True, cls=harness.Sidecar, **kw):
        s = cls(self.tmp, **kw)
        self.addCleanup(s.cleanup)
        self._sidecars.append(s)
        if start:
            s.start()
        return s

    def config(self, sidecar, name="t1", **keys):
        """A config with one tunnel to `sidecar` forwarding to the echo target."""
        keys.setdefault("connect_timeout", CONNECT_TIMEOUT)
        section = harness.tunnel_section(
            name, sidecar, local_forward=["127.0.0.1:%d %s" % (self.lp, self.echo.addr)],
            known_hosts_file=self.known_hosts(sidecar, name="kh_" + name), **keys)
        return self.moletun(section, start=False)

    def run_cmd(self, m, *args):
        """Runs `moletun ARGS -c CONFIG` (under MOLETUN_WRAPPER when set) and checks the
        sanitizer and valgrind output; returns the CompletedProcess."""
        logdir = os.path.join(m.dir, "cmd")
        os.makedirs(logdir, exist_ok=True)
        cmd = harness.wrapper_command(logdir) + [harness.moletun_bin()] + list(args) + [
            "-c", m.config_path]
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=RUN_TIMEOUT)
        reports = [l for l in p.stderr.splitlines() if harness.SANITIZER_RE.search(l)]
        self.assertEqual(reports, [], "sanitizer reports:\n" + p.stderr[-4000:])
        bad = [path for path, errors, _ in harness.valgrind_reports(logdir) if errors]
        self.assertEqual(bad, [], "valgrind reports errors in %s" % bad)
        return p

    def audit(self, m, *args):
        """`moletun audit --json`: (exit status, parsed document, the text table run)."""
        p = self.run_cmd(m, "audit", "--json", "--socket", self.sock.path, *args)
        try:
            doc = json.loads(p.stdout)
        except ValueError:
            self.fail("audit --json printed no JSON (exit %d): %s %s" % (
                p.returncode, p.stdout[-2000:], p.stderr[-2000:]))
        text = self.run_cmd(m, "audit", "--socket", self.sock.path, *args)
        self.assertEqual(text.returncode, p.returncode, text.stdout + text.stderr)
        return p.returncode, doc, text.stdout

    @staticmethod
    def checks(doc, tunnel=0):
        return doc["tunnels"][tunnel]["checks"]

    def by_result(self, doc, result):
        return sorted(c["check"] for c in self.checks(doc) if c["result"] == result)

    def assertNothingSentToSocket(self):
        for data in self.sock.connections():
            self.assertEqual(data, b"", "a probe sent bytes to the Unix socket")

    def ssh(self, sidecar, kh, options=(), command=(), timeout=30):
        cmd = ["ssh", "-F", "/dev/null", "-i", sidecar.user_key, "-p", str(sidecar.port),
               "-o", "UserKnownHostsFile=" + kh, "-o", "StrictHostKeyChecking=yes",
               "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"] + list(options) + [
               "%s@%s" % (sidecar.user, sidecar.listen)] + list(command)
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=timeout)


class AuditTest(AuditBase):
    def test_hardened_sidecar_passes(self):
        sc = self.sidecar(permit_open=[self.echo.addr], allow_tcp_forwarding="local",
                          extra_config="MaxSessions 0\n" + STRONG_ALGORITHMS)
        m = self.config(sc)
        code, doc, text = self.audit(m)
        self.assertEqual(code, 0, text)
        self.assertEqual(self.by_result(doc, "fail"), [], text)
        self.assertEqual(self.by_result(doc, "warn"), [], text)
        t = doc["tunnels"][0]
        self.assertEqual(t["result"], "pass")
        self.assertTrue(t["server_version"].startswith("SSH-2.0-OpenSSH_"), t)
        names = {c["check"] for c in t["checks"]}
        for want in ("algorithms.kex", "algorithms.ciphers", "algorithms.macs",
                     "algorithms.host_key", "host_key", "auth_methods", "session", "pty",
                     "sftp", "direct_tcpip", "target", "direct_streamlocal", "tcpip_forward"):
            self.assertIn(want, names)
        session = [c for c in t["checks"] if c["check"] == "session"][0]
        self.assertIn("refused", session["detail"])
        # the socket of --socket was asked for and refused before anything connected
        self.assertEqual(self.sock.connections(), [])
        self.assertIn("tunnel t1: pass", text)

    def test_stock_sidecar_plain_key_fails(self):
        sc = self.sidecar(cls=StockSidecar)
        m = self.config(sc)
        code, doc, text = self.audit(m)
        self.assertEqual(code, 1, text)
        failed = self.by_result(doc, "fail")
        # the shell, files, forwarding anywhere, the Unix socket, a pty and remote listens
        for want in ("session", "sftp", "direct_tcpip", "direct_streamlocal", "pty",
                     "tcpip_forward"):
            self.assertIn(want, failed, text)
        session = [c for c in self.checks(doc) if c["check"] == "session"][0]
        self.assertIn("can run any command", session["detail"])
        self.assertEqual(session["fix_in"], "authorized_keys")
        sockets = [c for c in self.checks(doc) if c["check"] == "direct_streamlocal" and
                   c["subject"] == self.sock.path]
        self.assertEqual([c["result"] for c in sockets], ["fail"])
        self.assertTrue(self.sock.connections(), "the socket probe never connected")
        self.assertNothingSentToSocket()
        for line in text.splitlines():
            if line.startswith(("session ", "direct_tcpip ", "direct_streamlocal " +
                                self.sock.path)):
                self.assertIn(" fail ", line)
                self.assertIn("| fix: key line:", line)

    def test_stock_sidecar_with_authorize_line(self):
        sc = self.sidecar(cls=StockSidecar, start=False)
        m = self.config(sc)
        p = self.run_cmd(m, "authorize", "--from", "127.0.0.1")
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.splitlines()
        self.assertEqual(len(lines), 2, p.stdout)
        self.assertTrue(lines[0].startswith("# %s@127.0.0.1:%d: sidecar of tunnel t1" % (
            sc.user, sc.port)), lines[0])
        self.assertTrue(lines[1].startswith(
            'restrict,port-forwarding,permitopen="%s",permitlisten="NONE.INVALID:1",'
            'command="/usr/sbin/nologin",from="127.0.0.1" %s ' % (
                self.echo.addr, harness.read_pubkey(sc.user_key + ".pub"))), lines[1])
        with open(sc.authorized_keys, "w") as f:
            f.write(p.stdout)  # the comment line included, as a user would paste it
        sc.start()
        kh = self.known_hosts(sc, name="kh_ssh")

        # the tunnel works through the line
        m.start()
        self.assertUp(m, "t1", 15 * SLOW)
        self.assertIsNotNone(wait_echo(self.lp, 10 * SLOW), "no echo through the tunnel")

        # the key runs no command
        r = self.ssh(sc, kh, command=["echo", "moletun-x-marker"])
        self.assertNotIn(b"moletun-x-marker", r.stdout + r.stderr)
        self.assertIn(b"This account is currently not available", r.stdout + r.stderr)
        # and reaches no other destination, though one listens there
        r = self.ssh(sc, kh, options=["-W", self.other.addr])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"administratively prohibited", r.stderr)
        self.assertEqual(self.other.total, 0)

        code, doc, text = self.audit(m)
        key_fixable = [c for c in self.checks(doc) if c["result"] != "pass" and
                       c["fix_in"] == "authorized_keys"]
        self.assertEqual(key_fixable, [], text)
        # what remains is the server's business, and says so
        for c in self.checks(doc):
            if c["result"] in ("fail", "warn"):
                self.assertIn(c["fix_in"], ("sshd_config",), c)
        self.assertEqual(self.by_result(doc, "fail"), ["algorithms.macs"], text)
        self.assertEqual(self.by_result(doc, "warn"), ["session"], text)
        self.assertEqual(code, 1, text)
        for check in ("pty", "sftp", "direct_tcpip", "direct_streamlocal", "tcpip_forward",
                      "target"):
            self.assertIn(check, self.by_result(doc, "pass"))
        self.assertNothingSentToSocket()
        self.assertIn("fix: sshd_config: MACs -hmac-sha1-etm@openssh.com,hmac-sha1", text)

    def test_unreachable_and_refused(self):
        """3 when the sidecar cannot be reached or refuses the key; 2 for configuration."""
        sc = self.sidecar(permit_open=[self.echo.addr])
        m = self.config(sc, port=str(harness.free_port()))
        code, doc, text = self.audit(m)
        self.assertEqual(code, 3, text)
        self.assertEqual(doc["result"], "error")
        self.assertIn("Connection refused", doc["tunnels"][0]["error"])

        other_key = harness.keygen(os.path.join(self.tmp, "other_key"))
        m = self.config(sc, name="t2", identity_file=other_key)
        code, doc, text = self.audit(m)
        self.assertEqual(code, 3, text)
        self.assertIn("authentication failed", doc["tunnels"][0]["error"])
        # what the server offered before authentication is still judged
        self.assertIn("algorithms.kex", [c["check"] for c in self.checks(doc)])

        p = self.run_cmd(m, "audit", "nosuchtunnel")
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("no tunnel 'nosuchtunnel'", p.stderr)
        p = self.run_cmd(m, "audit", "--bogus")
        self.assertEqual(p.returncode, 2, p.stderr)
        p = self.run_cmd(m, "audit", "--socket", "relative/path")
        self.assertEqual(p.returncode, 2, p.stderr)

    def test_authorize_merges_and_reports_unusable_keys(self):
        sc = self.sidecar(start=False)
        kh = self.known_hosts(sc)
        common = dict(known_hosts_file=kh, connect_timeout=CONNECT_TIMEOUT)
        sections = [
            harness.tunnel_section("a", sc, local_forward=["127.0.0.1:%d pg:5432" % self.lp],
                                   **common),
            harness.tunnel_section("b", sc, local_forward=[
                "127.0.0.1:%d pg:5432" % harness.free_port(),
                "127.0.0.1:%d [fd00::5]:5433" % harness.free_port()], **common),
        ]
        m = self.moletun(sections, start=False)
        p = self.run_cmd(m, "authorize")
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.splitlines()
        # one key on one server: one line (sshd would use only the first)
        self.assertEqual(len(lines), 2, p.stdout)
        self.assertIn('permitopen="pg:5432",permitopen="[fd00::5]:5433"', lines[1])
        self.assertTrue(lines[1].endswith(":a,b"), lines[1])
        p = self.run_cmd(m, "authorize", "b", "--from", "10.0.0.0/8,!10.0.0.9")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(',from="10.0.0.0/8,!10.0.0.9" ', p.stdout)
        p = self.run_cmd(m, "authorize", "--from", "10.0.0.1 x")
        self.assertEqual(p.returncode, 2)
        # a PEM key's public half comes from its .pub; without one, the tunnel is named
        pem = os.path.join(self.tmp, "pem_key")
        harness.run([harness.SSH_KEYGEN, "-q", "-t", "ecdsa", "-b", "256", "-N", "", "-m",
                     "PEM", "-f", pem])
        m2 = self.moletun(harness.tunnel_section(
            "c", sc, identity_file=pem, local_forward=["127.0.0.1:%d pg:5432" % self.lp],
            **common), start=False)
        p = self.run_cmd(m2, "authorize")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(harness.read_pubkey(pem + ".pub"), p.stdout)
        os.unlink(pem + ".pub")
        p = self.run_cmd(m2, "authorize")
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertIn("tunnel c:", p.stderr)
        self.assertIn("ssh-keygen -y -f", p.stderr)


def jump_prerequisites():
    """Why the proxy_jump test cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "iptables"):
        if not shutil.which(tool):
            return "needs `%s`" % tool
    return None


class AuditProxyJumpTest(AuditBase):
    def setUp(self):
        why = jump_prerequisites()
        if why:
            self.skipTest("proxy_jump audit: " + why)
        super().setUp()
        jumpnet.down()
        self.addCleanup(jumpnet.down)
        jumpnet.up()
        self.side_echo = jumpnet.in_netns(jumpnet.NS_SIDE, lambda: EchoServer(host="127.0.0.1"))
        self.addCleanup(self.side_echo.cleanup)
        self.side = self.sidecar(listen=jumpnet.SIDE_ADDR,
                                 wrapper=jumpnet.netns_exec(jumpnet.NS_SIDE),
                                 permit_open=[self.side_echo.addr], allow_tcp_forwarding="local",
                                 extra_config="MaxSessions 0\n" + STRONG_ALGORITHMS)
        # a stock bastion: its key line alone must keep the hop key to the sidecar
        self.bastion = self.sidecar(cls=StockSidecar, start=False, listen=jumpnet.BASTION_ADDR,
                                    wrapper=jumpnet.netns_exec(jumpnet.NS_BASTION))

    def test_audit_goes_through_the_bastion(self):
        kh = os.path.join(self.tmp, "kh_jump")
        with open(kh, "w") as f:
            f.write(self.side.known_hosts_line() + self.bastion.known_hosts_line())
        section = harness.tunnel_section(
            "far", self.side, known_hosts_file=kh, connect_timeout=CONNECT_TIMEOUT,
            proxy_jump="%s@%s:%d" % (self.bastion.user, self.bastion.listen, self.bastion.port),
            proxy_jump_identity_file=self.bastion.user_key, audit_interval="1d",
            local_forward=["127.0.0.1:%d %s" % (self.lp, self.side_echo.addr)])
        m = self.moletun(section, start=False)
        p = self.run_cmd(m, "authorize")
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.splitlines()
        self.assertEqual(len(lines), 4, p.stdout)
        self.assertIn("bastion of tunnel far", lines[0])
        self.assertIn('permitopen="%s:%d"' % (jumpnet.SIDE_ADDR, self.side.port), lines[1])
        self.assertIn(harness.read_pubkey(self.bastion.user_key + ".pub"), lines[1])
        with open(self.bastion.authorized_keys, "w") as f:
            f.write(lines[0] + "\n" + lines[1] + "\n")
        self.bastion.start()
        self.assertFalse(jumpnet.reachable(jumpnet.SIDE_ADDR, self.side.port),
                         "the sidecar is reachable without the bastion")

        code, doc, text = self.audit(m)
        self.assertEqual(code, 0, text)
        t = doc["tunnels"][0]
        self.assertEqual(t["via"], ["%s@%s:%d" % (self.bastion.user, self.bastion.listen,
                                                  self.bastion.port)])
        self.assertEqual(t["result"], "pass", text)
        self.assertTrue(t["server_version"].startswith("SSH-2.0-OpenSSH_"))
        self.assertIn("target", self.by_result(doc, "pass"))
        # two runs (JSON, then the table), each with a KEXINIT connection and a session,
        # all through the bastion
        self.assertGreaterEqual(self.side.connection_count(), 4)
        self.assertGreaterEqual(self.side.accepted_count(), 2)
        self.assertGreaterEqual(self.bastion.accepted_count(), 2)
        # the bastion's line let the hop key open nothing but the way to the sidecar
        r = self.ssh(self.bastion, kh, options=["-W", "%s:%d" % (jumpnet.SIDE_ADDR, 22)])
        self.assertIn(b"administratively prohibited", r.stderr)

        # the daemon's own audit runs over the tunnel's session, through the bastion, and
        # judges the sidecar (the bastion's stock sshd is not what it audits)
        m.start()
        self.assertUp(m, "far", 15 * SLOW)
        deadline = time.monotonic() + 20 * SLOW
        while time.monotonic() < deadline:
            r = subprocess.run([harness.moletun_bin(), "ctl", "-s", m.control_socket, "status",
                                "--json"], capture_output=True, text=True, timeout=15)
            t = json.loads(r.stdout)["tunnels"][0]
            if t["sidecar"] != "unknown":
                break
            time.sleep(0.1)
        self.assertEqual(t["sidecar"], "hardened", t)
        self.assertIsNotNone(wait_echo(self.lp, 10 * SLOW), "no echo through the bastion")


if __name__ == "__main__":
    harness.main()
