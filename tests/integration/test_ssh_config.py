"""ssh_host / ssh_config: tunnels defined by an ssh_config alias, resolved through ssh -G.

Real OpenSSH sshd sidecars on loopback and the real ssh client's `ssh -G`. The bastion is a
second sidecar whose PermitOpen allows only the target sidecar: the tunnel logs in on it
and opens its session through it (as test_proxyjump.py does, without the namespaces: here
what matters is that ssh_config's ProxyJump becomes moletun's proxy_jump).
"""

import os
import re
import subprocess
import time

import harness
from harness import EchoServer, wait_echo

SLOW = harness.slowdown()
UP_TIMEOUT = 15.0


def ctl(m, *args, timeout=15):
    e = dict(os.environ)
    e.pop("MOLETUN_SOCKET", None)
    return subprocess.run([harness.moletun_bin(), "ctl", "-s", m.control_socket] + list(args),
                          capture_output=True, text=True, timeout=timeout * SLOW, env=e)


def check(path, env=None):
    e = dict(os.environ)
    if env:
        e.update(env)
    r = subprocess.run([harness.moletun_bin(), "check", "-c", path], capture_output=True,
                       text=True, timeout=30 * SLOW, env=e)
    if harness.SANITIZER_RE.search(r.stderr):
        raise AssertionError("sanitizer report from moletun check:\n" + r.stderr[-6000:])
    return r


def host_block(alias, **options):
    """One ssh_config Host block: option names as OpenSSH spells them, lists repeated."""
    lines = ["Host %s" % alias]
    for name, value in options.items():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            lines.append("    %s %s" % (name, v))
    return "\n".join(lines) + "\n"


def section(name="t1", **keys):
    """A tunnel section with ssh_host and whatever else is given; probes off as elsewhere."""
    keys.setdefault("probe", "none")
    keys.setdefault("backoff_max", "500ms")
    return "[tunnel:%s]\n" % name + "".join("%s = %s\n" % kv for kv in keys.items())


class SshConfigTest(harness.TunnelTest):
    def setUp(self):
        super().setUp()
        self.echo = self.server(EchoServer)
        self.sc = self.sidecar(permit_open=[self.echo.addr])
        self.kh = self.known_hosts(self.sc)
        self.lp = harness.free_port()
        self.cfg = os.path.join(self.tmp, "ssh_config")
        self.write_ssh_config()

    def db_block(self, alias="db", **override):
        options = {
            "HostName": "127.0.0.1",
            "Port": self.sc.port,
            "User": self.sc.user,
            # the first one does not exist: ssh tries them in order, so does moletun
            "IdentityFile": [os.path.join(self.tmp, "no_such_key"), self.sc.user_key],
            "UserKnownHostsFile": self.kh,
            "StrictHostKeyChecking": "yes",
            "ServerAliveInterval": "2",
            "ServerAliveCountMax": "3",
            "LocalForward": "127.0.0.1:%d %s" % (self.lp, self.echo.addr),
        }
        options.update(override)
        return host_block(alias, **{k: v for k, v in options.items() if v is not None})

    def write_ssh_config(self, text=None):
        with open(self.cfg, "w") as f:
            f.write(self.db_block() if text is None else text)

    def start(self, **keys):
        keys.setdefault("ssh_host", "db")
        keys.setdefault("ssh_config", self.cfg)
        return self.moletun(section(**keys))

    # -- resolution ---------------------------------------------------------------------

    def test_alias_only_tunnel_carries_data(self):
        """HostName, Port, User, IdentityFile, UserKnownHostsFile and LocalForward from
        ssh_config alone: the tunnel comes up and echoes through the forward."""
        m = self.start()
        self.assertUp(m, timeout=UP_TIMEOUT)
        self.assertIsNotNone(wait_echo(self.lp, 10), "no echo through the forward")
        self.assertGreaterEqual(self.sc.accepted_count(), 1)

    def test_check_prints_sources(self):
        m = self.moletun(section(ssh_host="db", ssh_config=self.cfg, port=str(self.sc.port)),
                         start=False)
        r = check(m.config_path)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = r.stdout
        self.assertIn("ssh_host db: ssh -G -F %s db" % self.cfg, out)
        expected = [
            "host = 127.0.0.1  (from ssh_config)",
            "user = %s  (from ssh_config)" % self.sc.user,
            "identity_file = %s  (from ssh_config)" % self.sc.user_key,
            "known_hosts_file = %s  (from ssh_config)" % self.kh,
            "strict_host_key_checking = yes  (from ssh_config)",
            "local_forward = 127.0.0.1:%d %s  (from ssh_config)" % (self.lp, self.echo.addr),
            "keepalive_interval = 2s  (from ssh_config)",
            "keepalive_count_max = 3  (from ssh_config)",
            # written in the section as well: the section's value, and said so
            "port = %d  (set in the section, over ssh_config)" % self.sc.port,
        ]
        for line in expected:
            self.assertIn("    " + line + "\n", out)
        # the one-line summary shows the resolved tunnel as for any other
        self.assertRegex(out, r"t1\s+%s@127\.0\.0\.1:%d\s+L 127\.0\.0\.1:%d -> %s" % (
            re.escape(self.sc.user), self.sc.port, self.lp, re.escape(self.echo.addr)))

    def test_own_keys_override_ssh_config(self):
        """Keys written in the section win, wherever they stand: ssh_config's port is
        closed and its forward is replaced by the section's."""
        closed = harness.free_port()
        own_lp = harness.free_port()
        self.write_ssh_config(self.db_block(Port=closed))
        m = self.moletun(
            "[tunnel:t1]\nlocal_forward = 127.0.0.1:%d %s\nssh_host = db\nssh_config = %s\n"
            "port = %d\nprobe = none\n" % (own_lp, self.echo.addr, self.cfg, self.sc.port))
        self.assertUp(m, timeout=UP_TIMEOUT)
        self.assertIsNotNone(wait_echo(own_lp, 10), "no echo through the section's forward")
        with self.assertRaises(OSError):
            harness.connect(self.lp, timeout=1).close()
        r = check(m.config_path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("port = %d  (set in the section, over ssh_config)" % self.sc.port,
                      r.stdout)
        self.assertIn("local_forward = 127.0.0.1:%d %s  (set in the section, over ssh_config)"
                      % (own_lp, self.echo.addr), r.stdout)

    def test_proxyjump_through_bastion(self):
        """ProxyJump naming another alias of the file: the bastion's HostName, Port and
        User come from ssh -G as well, and the session goes through it."""
        bastion = self.sidecar(permit_open=["127.0.0.1:%d" % self.sc.port])
        with open(bastion.authorized_keys, "a") as f:
            f.write(harness.read_pubkey(self.sc.user_key + ".pub") + " moletun-user\n")
        with open(self.kh, "w") as f:
            f.write(self.sc.known_hosts_line() + bastion.known_hosts_line())
        self.write_ssh_config(
            host_block("bastion", HostName="127.0.0.1", Port=bastion.port, User=bastion.user) +
            self.db_block(ProxyJump="bastion"))
        m = self.start()
        self.assertUp(m, timeout=UP_TIMEOUT)
        self.assertIsNotNone(wait_echo(self.lp, 10), "no echo through the bastion")
        self.assertGreaterEqual(bastion.accepted_count(), 1, "no login on the bastion")
        r = check(m.config_path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("proxy_jump = %s@127.0.0.1:%d  (from ssh_config)" % (
            bastion.user, bastion.port), r.stdout)

    def test_proxyjump_to_an_address(self):
        """ProxyJump written as user@IPv4:port: ssh -G prints the address in brackets
        (user@[127.0.0.1]:port), which moletun takes as that address."""
        bastion = self.sidecar(permit_open=["127.0.0.1:%d" % self.sc.port])
        with open(bastion.authorized_keys, "a") as f:
            f.write(harness.read_pubkey(self.sc.user_key + ".pub") + " moletun-user\n")
        with open(self.kh, "w") as f:
            f.write(self.sc.known_hosts_line() + bastion.known_hosts_line())
        self.write_ssh_config(self.db_block(
            ProxyJump="%s@127.0.0.1:%d" % (bastion.user, bastion.port)))
        m = self.start()
        self.assertUp(m, timeout=UP_TIMEOUT)
        self.assertIsNotNone(wait_echo(self.lp, 10), "no echo through the bastion")
        self.assertGreaterEqual(bastion.accepted_count(), 1, "no login on the bastion")
        r = check(m.config_path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("proxy_jump = %s@127.0.0.1:%d  (from ssh_config)" % (
            bastion.user, bastion.port), r.stdout)

    # -- errors -------------------------------------------------------------------------

    def assertCheckError(self, m, key, message, env=None):
        """check fails with `message` at FILE:LINE of `key` in the moletun file."""
        with open(m.config_path) as f:
            line = next(i for i, l in enumerate(f, 1) if l.startswith(key + " ="))
        r = check(m.config_path, env)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("%s:%d: %s" % (m.config_path, line, message), r.stderr)
        return r

    def test_unknown_alias(self):
        m = self.moletun(section(ssh_host="dbb", ssh_config=self.cfg), start=False)
        self.assertCheckError(m, "ssh_host", "ssh_host dbb: unknown alias: no Host line in %s applies "
                              "to it" % self.cfg)

    def test_proxycommand_refused(self):
        self.write_ssh_config(self.db_block(ProxyCommand="nc %h %p"))
        m = self.moletun(section(ssh_host="db", ssh_config=self.cfg), start=False)
        self.assertCheckError(m, "ssh_host", "ssh_host db: ssh_config sets ProxyCommand, which moletun "
                              "does not run")

    def test_match_exec_and_certificates_refused(self):
        self.write_ssh_config(self.db_block() + 'Match exec "true"\n    Port 2222\n')
        m = self.moletun(section(ssh_host="db", ssh_config=self.cfg), start=False)
        self.assertCheckError(m, "ssh_host", "ssh_host db: ssh_config uses Match exec")
        self.write_ssh_config(self.db_block(CertificateFile=self.sc.user_key + "-cert.pub"))
        self.assertCheckError(m, "ssh_host", "ssh_host db: ssh_config sets CertificateFile")

    def test_missing_ssh_and_unreadable_file(self):
        m = self.moletun(section(ssh_host="db", ssh_config=self.cfg), start=False)
        self.assertCheckError(m, "ssh_host", "ssh_host db: cannot run ssh: not found in PATH",
                              env={"PATH": os.path.join(self.tmp, "empty")})
        missing = os.path.join(self.tmp, "no_such_config")
        m = self.moletun(section(ssh_host="db", ssh_config=missing), start=False)
        self.assertCheckError(m, "ssh_config", "ssh_config %s: No such file or directory" % missing)

    def test_hanging_ssh_g_is_killed(self):
        """A configuration that makes ssh -G hang (here a Match exec that sleeps) is killed,
        command included, after 5 s: an error, not a hung check or reload."""
        self.write_ssh_config('Match exec "sleep 61.25"\n    Port 2222\n' + self.db_block())
        m = self.moletun(section(ssh_host="db", ssh_config=self.cfg), start=False)
        t0 = time.monotonic()
        self.assertCheckError(m, "ssh_host", "ssh_host db: ssh -G did not answer in time "
                              "(killed)")
        took = time.monotonic() - t0
        self.assertGreaterEqual(took, 4.9)
        self.assertLess(took, 5 + 5 * SLOW)
        left = []
        for pid in os.listdir("/proc"):
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    if b"sleep\x0061.25" in f.read():
                        left.append(pid)
            except (OSError, ValueError):
                pass
        self.assertEqual(left, [], "the Match exec command outlived ssh -G")

    def test_run_refuses_unknown_alias(self):
        """The daemon does not start on a configuration check refuses."""
        m = self.moletun(section(ssh_host="nope", ssh_config=self.cfg))
        self.assertIsNotNone(m.wait_for(r"ssh_host nope: unknown alias", 10))
        rc = m.proc.wait(10 * SLOW)
        self.assertNotEqual(rc, 0)

    # -- reload -------------------------------------------------------------------------

    def test_reload_reevaluates(self):
        m = self.start()
        self.assertUp(m, timeout=UP_TIMEOUT)
        self.assertIsNotNone(wait_echo(self.lp, 10))
        ups = len(m.transitions("t1"))

        # An unrelated change to the file: nothing resolved changed, nothing restarts.
        self.write_ssh_config("# moved around\n" + host_block("other", HostName="10.9.9.9") +
                              self.db_block())
        mark = m.mark()
        r = ctl(m, "reload")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIsNotNone(m.wait_for(r"reloaded", 10, mark))
        self.assertEqual(m.grep(r"tunnel t1: .*changed, restarting", mark), [])
        self.assertEqual(len(m.transitions("t1")), ups, "the tunnel restarted")
        self.assertIsNotNone(wait_echo(self.lp, 5))

        # A changed LocalForward: the tunnel restarts on the new port.
        new_lp = harness.free_port()
        self.write_ssh_config(self.db_block(
            LocalForward="127.0.0.1:%d %s" % (new_lp, self.echo.addr)))
        mark = m.mark()
        r = ctl(m, "reload")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIsNotNone(m.wait_for(r"tunnel t1: local_forward changed, restarting", 10,
                                        mark))
        self.assertIsNotNone(m.wait_transition("t1", mark, new="up", timeout=UP_TIMEOUT))
        self.assertIsNotNone(wait_echo(new_lp, 10), "no echo on the new forward")

        # An alias that no longer resolves: the reload fails, the running tunnel stays.
        self.write_ssh_config(self.db_block(alias="renamed"))
        mark = m.mark()
        r = ctl(m, "reload")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("unknown alias", r.stdout + r.stderr)
        self.assertIsNotNone(wait_echo(new_lp, 5), "the running tunnel was touched")


if __name__ == "__main__":
    harness.main()
