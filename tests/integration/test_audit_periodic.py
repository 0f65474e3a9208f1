"""The daemon's own sidecar audit (audit_interval) over each tunnel's live session.

Against real OpenSSH sshd sidecars:
  kit    the shipped conf/sidecar/sshd_config, only what a test directory needs adapted
         (port, address, user, paths, PermitOpen the echo target, StrictModes no): status
         says hardened, the metric is 1, no alert goes.
  stock  a Debian-like sshd_config with a plain key line (test_audit.StockSidecar): status
         says not_hardened and names the failed checks, the metric is 0, one audit_failed
         alert reaches the webhook however many audits run, and a client's echoes through
         the forward keep coming back while the audits run on the same session.
  off    audit_interval = 0: no audit runs (sshd starts no session for the tunnel's user),
         status says unknown and why, no metric, no alert.
"""

import json
import os
import re
import socket
import subprocess
import threading
import time

import harness
from harness import EchoServer, wait_echo
from test_audit import StockSidecar
from webhook import WebhookReceiver

SLOW = harness.slowdown()
CONNECT_TIMEOUT = "%ds" % (10 * SLOW)
KIT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "conf",
                          "sidecar", "sshd_config")
# sshd logs every command it runs at VERBOSE: "Starting session: command for USER ..."
SESSION_RE = r"Starting session: command"


def set_directives(text, values):
    """sshd_config text with each uncommented directive of `values` given that value (the
    first occurrence; later ones dropped) and the ones not there appended."""
    out, done = [], set()
    for line in text.splitlines():
        key = line.split()[0] if line.strip() and not line.startswith("#") else None
        if key in values:
            if key not in done:
                out.append("%s %s" % (key, values[key]))
                done.add(key)
            continue
        out.append(line)
    out += ["%s %s" % (k, v) for k, v in values.items() if k not in done]
    return "\n".join(out) + "\n"


class KitSidecar(harness.Sidecar):
    """The shipped hardened sshd_config, run in the test's directory."""

    def write_config(self):
        with open(KIT_CONFIG) as f:
            text = f.read()
        text = set_directives(text, {
            "Port": str(self.port),
            "ListenAddress": self.listen,
            "HostKey": self.host_keys["ed25519"],
            "AuthorizedKeysFile": self.authorized_keys,
            "AllowUsers": self.user,
            # the tests run as root in temporary directories
            "PermitRootLogin": "prohibit-password" if self.user == "root" else "no",
            "StrictModes": "no",
            "PermitOpen": " ".join(self.permit_open) or "none",
        })
        with open(self.config_path, "w") as f:
            f.write(text)


def ctl(m, *args, timeout=15):
    return subprocess.run([harness.moletun_bin(), "ctl", "-s", m.control_socket] + list(args),
                          capture_output=True, text=True, timeout=timeout)


class Pinger:
    """One client connection through the forward that sends a line and waits for its echo
    over and over; counts the round trips and remembers the first failure."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5 * SLOW)
        self.count = 0
        self.error = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            while not self.stop.is_set():
                payload = b"ping %d\n" % self.count
                self.sock.sendall(payload)
                got = b""
                while len(got) < len(payload):
                    b = self.sock.recv(len(payload) - len(got))
                    if not b:
                        raise OSError("connection closed after %d echoes" % self.count)
                    got += b
                if got != payload:
                    raise OSError("echo %r came back as %r" % (payload, got))
                self.count += 1
                time.sleep(0.02)
        except OSError as e:
            self.error = e

    def finish(self):
        self.stop.set()
        self.thread.join(10)
        self.sock.close()
        return self.count, self.error


class AuditPeriodicTest(harness.TunnelTest):
    def setUp(self):
        super().setUp()
        self.echo = self.server(EchoServer)
        self.lp = harness.free_port()
        self.hook = WebhookReceiver()

    def sidecar(self, cls=KitSidecar, **kw):
        s = cls(self.tmp, **kw)
        self.addCleanup(s.cleanup)
        self._sidecars.append(s)
        s.start()
        return s

    def start(self, sc, **keys):
        keys.setdefault("connect_timeout", CONNECT_TIMEOUT)
        keys.setdefault("audit_interval", "1d")
        section = harness.tunnel_section(
            "t1", sc, local_forward=["127.0.0.1:%d %s" % (self.lp, self.echo.addr)],
            known_hosts_file=self.known_hosts(sc), **keys)
        alerts = ["[alert:%s]\nurl = %s\nformat = %s\n" % (fmt, self.hook.url("/" + fmt), fmt)
                  for fmt in ("json", "slack", "alertmanager")]
        m = self.moletun([section] + alerts)
        self.assertUp(m, "t1", 15 * SLOW)
        return m

    def status(self, m):
        r = ctl(m, "status", "--json")
        self.assertEqual(r.returncode in (0, 4), True, r.stdout + r.stderr)
        return json.loads(r.stdout)["tunnels"][0]

    def wait_sidecar(self, m, state, timeout):
        deadline = time.monotonic() + timeout * SLOW
        t = None
        while time.monotonic() < deadline:
            t = self.status(m)
            if t["sidecar"] == state:
                return t
            time.sleep(0.1)
        self.fail("sidecar not %s within %ds: %s" % (state, timeout * SLOW, t))

    def metric(self, m):
        r = ctl(m, "metrics")
        self.assertEqual(r.returncode, 0, r.stderr)
        found = re.findall(r'^moletun_tunnel_sidecar_hardened\{tunnel="t1"\} (\d+)$',
                           r.stdout, re.M)
        self.assertIn("# TYPE moletun_tunnel_sidecar_hardened gauge", r.stdout)
        return int(found[0]) if found else None

    def audit_failed_alerts(self):
        return [r.json() for r in self.hook.received("/json")
                if r.json()["event"] == "audit_failed"]

    def other_format_alerts(self):
        """The audit_failed events of the slack and alertmanager targets."""
        slack = [r.json()["text"] for r in self.hook.received("/slack")
                 if "NOT HARDENED" in r.json()["text"]]
        am = [a for r in self.hook.received("/alertmanager") for a in r.json()
              if a["labels"]["alertname"] == "MoletunSidecarNotHardened"]
        return slack, am

    def settle(self, m, sc):
        """Stops moletun and lets the commands the audits started on the sidecar end by
        themselves: a shell killed by the sidecar's cleanup in the middle of its startup
        files can leave their locks behind."""
        m.stop()
        deadline = time.monotonic() + 10 * SLOW
        while sc.session_pids() and time.monotonic() < deadline:
            time.sleep(0.1)

    def test_kit_sidecar_is_hardened(self):
        sc = self.sidecar(permit_open=[self.echo.addr])
        m = self.start(sc)
        t = self.wait_sidecar(m, "hardened", 20)
        self.assertEqual(t["sidecar_failed"], [])
        self.assertIsNotNone(t["sidecar_checked"])
        self.assertIsNone(t["sidecar_error"])
        self.assertEqual(self.metric(m), 1)
        self.assertRegex(ctl(m, "status").stdout, r"\nt1 +up +ok +hardened ")
        m.wait_for(r"tunnel t1: sidecar audit: hardened", 5 * SLOW)
        self.assertIsNotNone(wait_echo(self.lp, 10 * SLOW), "no echo through the tunnel")
        time.sleep(1)
        self.assertEqual(self.audit_failed_alerts(), [])
        self.assertEqual(self.other_format_alerts(), ([], []))
        # the kit refuses session channels: sshd never ran a command
        self.assertEqual(sc.count(SESSION_RE), 0)

    def test_stock_sidecar_not_hardened_one_alert_data_flows(self):
        sc = self.sidecar(cls=StockSidecar)
        # audits every 2 s: several run on the session while a client's echoes go through it
        m = self.start(sc, audit_interval="2s")
        pinger = Pinger(self.lp)
        t = self.wait_sidecar(m, "not_hardened", 20)
        for want in ("session", "pty", "direct_tcpip 127.0.0.1:22", "tcpip_forward 127.0.0.1:0"):
            self.assertIn(want, t["sidecar_failed"], t)
        self.assertEqual(t["sidecar_failed_count"], len(t["sidecar_failed"]))
        self.assertEqual(self.metric(m), 0)
        self.assertRegex(ctl(m, "status").stdout, r"\nt1 +up +ok +not_hardened ")
        # three audits in all, the connection carrying echoes throughout
        # new clients get their channels while the audits' opens take turns with theirs
        deadline = time.monotonic() + 20 * SLOW
        fresh = 0
        while (len(m.grep(r"tunnel t1: sidecar audit: not hardened")) < 3 and
               time.monotonic() < deadline):
            payload = b"fresh %d\n" % fresh
            self.assertEqual(harness.echo_once(self.lp, payload, timeout=5 * SLOW), payload)
            fresh += 1
            time.sleep(0.1)
        self.assertGreater(fresh, 5)
        self.assertGreaterEqual(len(m.grep(r"tunnel t1: sidecar audit: not hardened")), 3)
        count, error = pinger.finish()
        self.assertIsNone(error, "the forward stopped carrying data during the audits")
        self.assertGreater(count, 20)
        self.assertEqual(self.status(m)["reconnects"], 0)
        self.assertGreaterEqual(sc.count(SESSION_RE), 3)  # the marker's echo, per audit
        # one alert for the change, not one per audit, to each target in its format
        self.hook.wait_requests(3, timeout=10 * SLOW)
        time.sleep(1)
        alerts = self.audit_failed_alerts()
        self.assertEqual(len(alerts), 1, alerts)
        self.assertEqual(alerts[0]["tunnel"], "t1")
        self.assertIn("session", alerts[0]["reason"])
        self.assertIn("tcpip_forward", alerts[0]["reason"])
        self.settle(m, sc)
        slack, am = self.other_format_alerts()
        self.assertEqual(len(slack), 1, slack)
        self.assertIn("tunnel t1", slack[0])
        self.assertEqual(len(am), 1, am)
        self.assertEqual(am[0]["labels"]["tunnel"], "t1")
        self.assertIn("session", am[0]["annotations"]["description"])

    def test_interval_zero_runs_no_audit(self):
        sc = self.sidecar(cls=StockSidecar)
        m = self.start(sc, audit_interval="0")
        self.assertIsNotNone(wait_echo(self.lp, 10 * SLOW), "no echo through the tunnel")
        time.sleep(3)
        t = self.status(m)
        self.assertEqual(t["sidecar"], "unknown")
        self.assertIn("audit_interval is 0", t["sidecar_error"])
        self.assertIsNone(t["sidecar_checked"])
        self.assertIsNone(self.metric(m))
        self.assertEqual(sc.count(SESSION_RE), 0)
        self.assertEqual(m.grep(r"sidecar audit"), [])
        self.assertEqual(self.audit_failed_alerts(), [])
        self.assertEqual(self.other_format_alerts(), ([], []))


if __name__ == "__main__":
    harness.main()
