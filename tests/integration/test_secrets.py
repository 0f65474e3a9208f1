"""Secrets stay secret: the key passphrase, webhook header values and URL credentials, and
the private key itself never appear in moletun's logs (at log_level = debug), in
`moletun check` output or its configuration errors, in `moletun ctl` output (status, JSON,
metrics, reload errors), nor in a webhook's failure messages, even when the webhook server
echoes the request back. The passphrase is zeroed once the key is decrypted: a core dump
of the running daemon (gcore) must not contain it.
"""

import http.server
import os
import shutil
import subprocess
import threading
import time

import unittest

import harness
from harness import EchoServer, echo_once, tunnel_section


PASSPHRASE = "pass-" + os.urandom(12).hex()
HEADER_VALUE = "Bearer hdr-" + os.urandom(12).hex()
URL_PASSWORD = "urlpw-" + os.urandom(8).hex()
URL_TOKEN = "tok-" + os.urandom(8).hex()


class EchoingWebhook(http.server.ThreadingHTTPServer):
    """Answers every POST with 401 and a body that repeats the request's headers (a
    server that reflects what it got must not make moletun log the secret)."""

    def __init__(self):
        handler = self._handler()
        super().__init__(("127.0.0.1", 0), handler)
        self.requests = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def _handler(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                server.requests.append((self.path, dict(self.headers), body))
                reply = ("unauthorized: %s %s" % (self.path, dict(self.headers))).encode()
                self.send_response(401)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        return Handler

    def cleanup(self):
        self.shutdown()
        self.server_close()


class SecretsTest(harness.TunnelTest):
    def setUp(self):
        super().setUp()
        self.echo = self.server(EchoServer)
        self.lp = harness.free_port()
        self.sc = self.sidecar(permit_open=[self.echo.addr], passphrase=PASSPHRASE)
        self.kh = self.known_hosts(self.sc)
        self.pass_file = self.sc.write_passphrase_file(os.path.join(self.tmp, "id.pass"))
        with open(self.sc.user_key) as f:
            # every base64 line of the (encrypted) key file, and of the key decrypted
            self.key_lines = [l.strip() for l in f if len(l.strip()) >= 16 and
                              "PRIVATE KEY" not in l]
        plain = os.path.join(self.tmp, "id_plain")
        shutil.copy(self.sc.user_key, plain)
        os.chmod(plain, 0o600)
        harness.run([harness.SSH_KEYGEN, "-q", "-p", "-P", PASSPHRASE, "-N", "", "-f", plain])
        with open(plain) as f:
            self.plain_pem = f.read()
        # the lines of the decrypted key that hold its private section (the first two
        # hold the header and the public key)
        self.plain_private_lines = [l.strip() for l in self.plain_pem.splitlines()[3:-1]
                                    if len(l.strip()) >= 16]
        self.key_lines += [l.strip() for l in self.plain_pem.splitlines()
                           if len(l.strip()) >= 16 and "PRIVATE KEY" not in l]
        os.unlink(plain)

    def secrets(self):
        return [PASSPHRASE, HEADER_VALUE, HEADER_VALUE.split()[1], URL_PASSWORD,
                URL_TOKEN] + self.key_lines

    def assertNoSecret(self, text, where):
        for s in self.secrets():
            self.assertNotIn(s, text, "a secret (%s...) appears in %s" % (s[:8], where))
        self.assertNotIn("PRIVATE KEY", text, "key material in %s" % where)

    def alert_section(self, port, name="ops"):
        return ("[alert:%s]\nurl = http://hook:%s@127.0.0.1:%d/hook/%s?token=%s\n"
                "format = json\ndown_after = 0\ntimeout = 1s\n"
                "header = Authorization: %s\nheader = X-Other: plain\n" % (
                    name, URL_PASSWORD, port, URL_TOKEN, URL_TOKEN, HEADER_VALUE))

    def tunnel(self, **keys):
        return tunnel_section("t1", self.sc, known_hosts_file=self.kh,
                              identity_passphrase_file=self.pass_file,
                              local_forward=["127.0.0.1:%d %s" % (self.lp, self.echo.addr)],
                              **keys)

    def ctl(self, m, *args, rc=None):
        """Output (stdout and stderr) of `moletun ctl ARGS`; checks the exit code if given."""
        r = subprocess.run([harness.moletun_bin(), "ctl", "-s", m.control_socket] +
                           list(args), capture_output=True, text=True, timeout=30)
        if rc is not None:
            self.assertEqual(r.returncode, rc, r.stdout + r.stderr)
        return r.stdout + r.stderr

    def check(self, path):
        r = subprocess.run([harness.moletun_bin(), "check", "-c", path], capture_output=True,
                           text=True, timeout=30)
        return r.returncode, r.stdout + r.stderr

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_logs_and_ctl_output(self):
        hook = EchoingWebhook()
        self.addCleanup(hook.cleanup)
        m = self.moletun([self.tunnel(), self.alert_section(hook.server_port)],
                         log_level="debug")
        self.assertUp(m, timeout=20)
        self.assertEqual(echo_once(self.lp, b"hi\n"), b"hi\n")

        outputs = {
            "ctl status": self.ctl(m, "status"),
            "ctl status t1": self.ctl(m, "status", "t1"),
            "ctl status --json": self.ctl(m, "status", "--json"),
            "ctl metrics": self.ctl(m, "metrics"),
            "ctl alert-test": self.ctl(m, "alert-test"),
            "moletun check": self.check(m.config_path)[1],
        }
        # a reconnect and an outage: the key is used again, the webhook is called (and
        # answers 401 with the request's headers in its body)
        mark = m.mark()
        self.ctl(m, "reconnect", "t1")
        self.assertIsNotNone(m.wait_transition("t1", mark, new="up", timeout=10))
        self.sc.kill()
        self.assertIsNotNone(m.wait_state("t1", "backoff", 5))
        deadline = time.monotonic() + 5 * harness.slowdown()
        while not hook.requests and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        outputs["ctl status while down"] = self.ctl(m, "status", "--json")
        self.sc.restart()
        self.assertUp(m, timeout=10)
        # reload of a broken configuration: its error list goes back over ctl
        with open(m.config_path, "a") as f:
            f.write("\nheader = Authorization %s\n" % HEADER_VALUE)
        outputs["ctl reload (invalid)"] = self.ctl(m, "reload")
        m.stop()
        outputs["daemon log"] = m.log_text()

        for where, text in outputs.items():
            self.assertNoSecret(text, where)
        self.assertIn("invalid", outputs["ctl reload (invalid)"])
        print("webhook called %d times (headers reached it: %s); %d log lines, none with "
              "a secret" % (len(hook.requests), any(
                  HEADER_VALUE == h.get("Authorization") for _, h, _ in hook.requests),
                  len(outputs["daemon log"].splitlines())))
        if hook.requests:
            self.assertEqual(hook.requests[0][1].get("Authorization"), HEADER_VALUE)

    def test_configuration_errors(self):
        """`moletun check` and the daemon's start-up errors name keys and files, never the
        secret values."""
        long_header = "header = Authorization: Bearer " + HEADER_VALUE + "x" * 200
        cases = {
            # header without ':' is invalid: the message must not repeat the value
            "bad-header.conf": self.tunnel() + "[alert:a]\nurl = https://h.example/x\n"
            "header = Authorization %s\n" % HEADER_VALUE,
            # cut by the line limit
            "long-header.conf": self.tunnel() + "[alert:a]\nurl = https://h.example/x\n" +
            long_header + "\n",
            # url with credentials, path and query, but otherwise invalid
            "bad-url.conf": self.tunnel() + "[alert:a]\nurl = ftp://u:%s@h/%s?t=%s\n" % (
                URL_PASSWORD, URL_TOKEN, URL_TOKEN),
            # a valid one: check prints the URL redacted
            "good-url.conf": self.tunnel() + self.alert_section(9),
            # '@' in the password: everything up to the last '@' is dropped
            "at-url.conf": self.tunnel() + "[alert:a]\nurl = http://hook:pw@%s@127.0.0.1:9/h\n"
            % URL_PASSWORD,
            # a secret where a key name should be
            "unknown-key.conf": self.tunnel() + "identity_passphrase = %s\n" % PASSPHRASE,
            "garbage-line.conf": self.tunnel() + "%s\n" % PASSPHRASE,
            # a header where the daemon's [moletun] section would not take it
            "misplaced.conf": self.tunnel() + "header = Authorization: %s\n" % HEADER_VALUE,
        }
        for name, text in cases.items():
            rc, out = self.check(self.write(name, text))
            self.assertNoSecret(out, "moletun check of %s" % name)
            self.assertEqual(rc, 0 if name in ("good-url.conf", "at-url.conf") else 1,
                             "%s: %s" % (name, out))
            if name == "at-url.conf":
                self.assertIn("alert:a  json http://127.0.0.1:9/...", out)

        # A world-readable passphrase file is refused by name; a wrong passphrase is
        # reported without it.
        os.chmod(self.pass_file, 0o644)
        rc, out = self.check(self.write("open-pass.conf", self.tunnel()))
        self.assertEqual(rc, 1)
        self.assertIn("id.pass", out)
        self.assertNoSecret(out, "moletun check with an unprotected passphrase file")
        wrong = self.write("wrong.pass", "not-" + PASSPHRASE + "\n")
        os.chmod(wrong, 0o600)
        os.chmod(self.pass_file, 0o600)
        m = self.moletun(tunnel_section(
            "t1", self.sc, known_hosts_file=self.kh, identity_passphrase_file=wrong,
            local_forward=["127.0.0.1:%d %s" % (self.lp, self.echo.addr)]),
            log_level="debug")
        m.proc.wait(10)
        m.reader.join(2)
        self.assertRegex(m.log_text(), r"identity file \S+: wrong passphrase")
        self.assertNoSecret(m.log_text().replace("not-" + PASSPHRASE, ""),
                            "the daemon's log with a wrong passphrase")
        self.assertNotIn("not-" + PASSPHRASE, m.log_text())

    def test_passphrase_not_in_core_dump(self):
        gcore = shutil.which("gcore")
        if not gcore:
            self.skipTest("gcore (gdb) is not installed: cannot dump the daemon's memory")
        if harness.under_wrapper():
            self.skipTest("the core of valgrind is not the daemon's")
        hook = EchoingWebhook()
        self.addCleanup(hook.cleanup)
        m = self.moletun([self.tunnel(), self.alert_section(hook.server_port)])
        self.assertUp(m, timeout=20)
        self.assertEqual(echo_once(self.lp, b"hi\n"), b"hi\n")
        # a reconnect uses the key again; a reload re-reads what changed
        mark = m.mark()
        self.ctl(m, "reconnect", "t1", rc=0)
        self.assertIsNotNone(m.wait_transition("t1", mark, new="up", timeout=10))
        with open(m.config_path, "a") as f:
            f.write("\n[tunnel:t2]\n" + self.tunnel().split("\n", 1)[1].replace(
                "%d " % self.lp, "%d " % harness.free_port()))
        self.ctl(m, "reload", rc=0)
        self.assertUp(m, "t2", timeout=20)

        data = self.core_of(m)
        print("core of the running daemon: %.1f MB" % (len(data) / 1e6))
        self.assertGreater(len(data), 1 << 20)
        # sanity: strings the daemon keeps on its heap are found
        self.assertTrue(self.kh.encode() in data)
        self.assertTrue(HEADER_VALUE.encode() in data)
        self.assertFalse(PASSPHRASE.encode() in data, "the passphrase is still in memory")
        # The decrypted key must stay in memory (reconnects never read the file again),
        # and the webhook header is sent with every alert: only the passphrase can go.
        self.assertTrue(m.running())


    def running_core(self):
        """A gcore of a daemon whose tunnel authenticated twice (start and a reconnect)."""
        gcore = shutil.which("gcore")
        if not gcore:
            self.skipTest("gcore (gdb) is not installed: cannot dump the daemon's memory")
        if harness.under_wrapper():
            self.skipTest("the core of valgrind is not the daemon's")
        m = self.moletun([self.tunnel()])
        self.assertUp(m, timeout=20)
        self.assertEqual(echo_once(self.lp, b"hi\n"), b"hi\n")
        mark = m.mark()
        self.ctl(m, "reconnect", "t1", rc=0)
        self.assertIsNotNone(m.wait_transition("t1", mark, new="up", timeout=10))
        data = self.core_of(m)
        # sanity: the public half, kept on the ordinary heap, is found
        with open(self.sc.user_key + ".pub") as f:
            self.assertTrue(f.read().split()[1].encode() in data)
        self.assertTrue(m.running())
        return data

    def test_decrypted_key_not_in_core_dump(self):
        """The decrypted key must stay in memory (reconnects never read the file again), but
        on pages a core dump leaves out (MADV_DONTDUMP): the text of the unencrypted key,
        which moletun hands libssh2 at every authentication, is not in a gcore."""
        data = self.running_core()
        self.assertGreater(len(self.plain_private_lines), 2)
        # (assertFalse: assertNotIn would print the whole core)
        for line in self.plain_private_lines:
            self.assertFalse(line.encode() in data, "the decrypted key file is in the core")

    # libssh2 1.10 decodes the key text at every authentication into session memory it
    # frees without zeroing: sessmem.c wipes every block it frees or moves.
    def test_raw_private_key_not_in_core_dump(self):
        """Nor are the raw ed25519 private key bytes anywhere in the daemon's memory."""
        secret = harness.ed25519_private_bytes(self.plain_pem)
        data = self.running_core()
        self.assertFalse(secret[:32] in data, "the ed25519 private key is in the core")

    def test_key_with_absurd_rounds_is_refused_at_start(self):
        """A key file asking for 2^32 bcrypt rounds would hang the daemon's start for years:
        it is refused at once, naming the file and the limit."""
        with open(self.sc.user_key) as f:
            pem = f.read()
        key = os.path.join(self.tmp, "id_rounds")
        with open(key, "w") as f:
            f.write(harness.with_bcrypt_rounds(pem, 0xffffffff))
        os.chmod(key, 0o600)
        m = self.moletun(tunnel_section(
            "t1", self.sc, known_hosts_file=self.kh, identity_file=key,
            identity_passphrase_file=self.pass_file,
            local_forward=["127.0.0.1:%d %s" % (self.lp, self.echo.addr)]))
        try:
            m.proc.wait(60 if harness.under_wrapper() else 10)
        except subprocess.TimeoutExpired:
            self.fail("moletun still running 10 s after start: the KDF is running")
        m.reader.join(2)
        self.assertNotEqual(m.proc.returncode, 0)
        self.assertRegex(m.log_text(), r"identity file %s: encrypted with more bcrypt rounds "
                         r"than moletun's limit of 500" % key)

    def test_reload_with_key_that_does_not_open_keeps_tunnel(self):
        """A rotated passphrase that does not open the key fails the reload before the
        running tunnel is touched: it stays up on its session, and ctl reload says why."""
        m = self.moletun([self.tunnel()])
        self.assertUp(m, timeout=20)
        self.assertEqual(echo_once(self.lp, b"hi\n"), b"hi\n")
        mark = m.mark()
        with open(self.pass_file, "w") as f:
            f.write("not-" + PASSPHRASE + "\n")
        out = self.ctl(m, "reload")
        self.assertRegex(out, r"identity file \S+: wrong passphrase")
        self.assertNoSecret(out, "ctl reload with a wrong passphrase")
        self.assertIsNotNone(m.wait_for(r"reload failed: keeping the running configuration",
                                        5, since=mark))
        self.assertEqual(echo_once(self.lp, b"still\n"), b"still\n")
        self.assertEqual(m.transitions("t1", mark), [], "the tunnel was restarted")
        self.assertEqual(m.state("t1"), "up")
        # the right passphrase again: the reload goes through (its contents changed back,
        # so the tunnel is compared with what it was started with and left alone)
        self.sc.write_passphrase_file(self.pass_file)
        self.ctl(m, "reload", rc=0)
        self.assertEqual(echo_once(self.lp, b"again\n"), b"again\n")

    # identity_load() decrypts a passphrase-protected PEM key (ssh-keygen -m PEM) once, with
    # OpenSSL, and keeps it unencrypted like an OpenSSH key: the passphrase is released
    # instead of being kept (and handed to libssh2 at every authentication, which left
    # copies behind in freed memory).
    def test_pem_key_passphrase_not_in_core_dump(self):
        gcore = shutil.which("gcore")
        if not gcore:
            self.skipTest("gcore (gdb) is not installed: cannot dump the daemon's memory")
        if harness.under_wrapper():
            self.skipTest("the core of valgrind is not the daemon's")
        sc = self.sidecar(permit_open=[self.echo.addr], passphrase=PASSPHRASE,
                          user_key_type="ecdsa")
        harness.run([harness.SSH_KEYGEN, "-q", "-p", "-m", "PEM", "-P", PASSPHRASE, "-N",
                     PASSPHRASE, "-f", sc.user_key])
        with open(sc.user_key) as f:
            self.assertIn("ENCRYPTED", f.read())
        m = self.moletun(tunnel_section(
            "t1", sc, known_hosts_file=self.known_hosts(sc, name="kh_pem"),
            identity_passphrase_file=self.pass_file,
            local_forward=["127.0.0.1:%d %s" % (self.lp, self.echo.addr)]))
        self.assertUp(m, timeout=20)
        data = self.core_of(m)
        self.assertTrue(self.tmp.encode() in data)
        self.assertFalse(PASSPHRASE.encode() in data, "the passphrase is still in memory")

    def core_of(self, m):
        if harness.proc_uses_asan(m.proc.pid):
            self.skipTest("AddressSanitizer build: its shadow memory makes a core dump "
                          "take minutes (the plain build runs this test)")
        core = os.path.join(self.tmp, "core")
        try:
            r = subprocess.run([shutil.which("gcore"), "-o", core, str(m.proc.pid)],
                               capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            self.skipTest("gcore took more than 60 s")
        path = "%s.%d" % (core, m.proc.pid)
        if r.returncode != 0 or not os.path.exists(path):
            self.skipTest("gcore failed: %s" % (r.stdout + r.stderr)[-500:])
        with open(path, "rb") as f:
            data = f.read()
        os.unlink(path)
        return data


if __name__ == "__main__":
    harness.main()
