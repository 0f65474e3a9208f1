#!/usr/bin/env python3
"""metrics_textfile: the daemon's metrics in a file for node_exporter's textfile collector.

Against a real sshd and echo target, with metrics_interval = 100ms:
- 500 reads while the file is being replaced each find a whole exposition (every family,
  a newline at the end, each sample well-formed) across many rewrites (new inodes), the
  same series as `moletun ctl metrics`, accepted by `promtool check metrics`;
- at SIGTERM the last write marks every tunnel down (moletun_tunnel_up 0, health down, no
  target or RTT series) and no temporary file is left;
- a directory that is missing is logged once (not at every 100 ms), the tunnel works
  regardless, and the file appears once the directory does; a reload that moves the file
  removes the old one;
- a real prometheus-node-exporter reading the directory serves the moletun series and
  the file's mtime.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request

import harness
from harness import tunnel_section
from webhook import WebhookReceiver

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
PROMTOOL = shutil.which("promtool")
SAMPLE_RE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-z_]+="(?:[^"\\]|\\.)*"'
                       r'(,[a-z_]+="(?:[^"\\]|\\.)*")*\})? -?[0-9.e+]+$')


def ctl_metrics(m):
    r = subprocess.run([harness.moletun_bin(), "ctl", "-s", m.control_socket, "metrics"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def ctl_status(m):
    r = subprocess.run([harness.moletun_bin(), "ctl", "-s", m.control_socket, "status",
                        "--json"], capture_output=True, text=True, timeout=30)
    assert r.returncode in (0, 3, 4), r.stderr
    return json.loads(r.stdout)


def series(text):
    """{name{labels}} of every sample, without values."""
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if not line.startswith("#")}


def families(text):
    return [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]


def wait_until(what, predicate, timeout):
    timeout *= harness.slowdown()
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(0.02)


def read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


class MetricsTextfileTest(harness.TunnelTest):
    def setUp(self):
        super().setUp()
        self.echo = self.server()
        self.sc = self.sidecar(permit_open=[self.echo.addr])
        self.port = harness.free_port()
        self.metrics_dir = os.path.join(self.tmp, "textfile")
        os.mkdir(self.metrics_dir)
        self.path = os.path.join(self.metrics_dir, "moletun.prom")

    def start(self, path=None):
        kh = self.known_hosts(self.sc)
        section = tunnel_section("t1", self.sc, local_forward=["127.0.0.1:%d %s" % (
            self.port, self.echo.addr)], known_hosts_file=kh, probe="tcp", probe_interval="1s")
        m = self.moletun(section, extra_global="metrics_textfile = %s\nmetrics_interval = 100ms"
                         % (path or self.path))
        self.assertUp(m)
        harness.echo_once(self.port)
        # the probe has answered and a rewrite since shows it
        wait_until("target_up 1 in the file", lambda: 'moletun_forward_target_up{' in (
            read_text(path or self.path) or ""), 10)
        return m

    def test_never_a_partial_file(self):
        m = self.start()
        expected_families = families(ctl_metrics(m))
        self.assertIn("moletun_tunnel_up", expected_families)
        inodes = set()
        last = None
        for i in range(500):
            with open(self.path) as f:
                st = os.fstat(f.fileno())
                # inode numbers are reused once the replaced file is gone: with the
                # change time, each file renamed into place is told apart
                inodes.add((st.st_ino, st.st_ctime_ns))
                text = f.read()
            self.assertTrue(text.endswith("\n"), "read %d ends mid-line: %r" % (i, text[-80:]))
            self.assertEqual(families(text), expected_families, "read %d" % i)
            for line in text.splitlines():
                if not line.startswith("#"):
                    self.assertRegex(line, SAMPLE_RE, "read %d" % i)
            self.assertIn('moletun_tunnel_up{tunnel="t1"} 1\n', text)
            last = text
            if i % 50 == 0:
                harness.echo_once(self.port)  # counters move between rewrites
            time.sleep(0.003)
        # the reads spanned many rewrites, each a new file renamed into place
        self.assertGreaterEqual(len(inodes), 5, "file replaced %d times" % len(inodes))
        # the same renderer as ctl metrics: the same series
        self.assertEqual(series(last), series(ctl_metrics(m)))
        if PROMTOOL:
            r = subprocess.run([PROMTOOL, "check", "metrics"], input=last, capture_output=True,
                               text=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        else:
            print("promtool not installed: promtool check metrics skipped")
        # mode 0644 whatever the umask: node_exporter runs as another user
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o644)

    def test_shutdown_marks_tunnels_down(self):
        m = self.start()
        text = read_text(self.path)
        self.assertIn('moletun_tunnel_up{tunnel="t1"} 1\n', text)
        self.assertIn('moletun_tunnel_health{tunnel="t1",health="ok"} 1\n', text)
        rc, _ = m.stop()
        self.assertEqual(rc, 0)
        text = read_text(self.path)
        self.assertIn('moletun_tunnel_up{tunnel="t1"} 0\n', text)
        self.assertIn('moletun_tunnel_health{tunnel="t1",health="down"} 1\n', text)
        self.assertIn('moletun_tunnel_health{tunnel="t1",health="ok"} 0\n', text)
        self.assertNotIn("moletun_forward_target_up{", text)
        self.assertNotIn("moletun_tunnel_rtt_seconds{", text)
        # counters survive: the connection made through the tunnel is still counted
        self.assertRegex(text, r'moletun_forward_connections_total\{tunnel="t1",[^}]*\} [1-9]')
        self.assertEqual(os.listdir(self.metrics_dir), ["moletun.prom"])

    def test_write_failures_logged_once_and_retried(self):
        later = os.path.join(self.tmp, "later")
        path = os.path.join(later, "moletun.prom")
        kh = self.known_hosts(self.sc)
        section = tunnel_section("t1", self.sc, local_forward=["127.0.0.1:%d %s" % (
            self.port, self.echo.addr)], known_hosts_file=kh)
        m = self.moletun(section, extra_global="metrics_textfile = %s\nmetrics_interval = 100ms"
                         % path)
        self.assertUp(m)
        self.assertTrue(m.wait_for(r"warning: metrics_textfile .*: No such file or directory", 5))
        time.sleep(1.0)  # about ten more failed writes
        self.assertEqual(len(m.grep(r"warning: metrics_textfile .*No such file")), 1, m.log_text())
        self.assertTrue(m.running())
        harness.echo_once(self.port)
        os.mkdir(later)
        self.assertTrue(m.wait_for(r"notice: metrics_textfile .*: written again", 5))
        self.assertIn('moletun_tunnel_up{tunnel="t1"} 1\n', read_text(path))

        # a reload that moves the file removes the old one
        with open(m.config_path) as f:
            config = f.read()
        with open(m.config_path, "w") as f:
            f.write(config.replace(path, self.path))
        mark = m.mark()
        os.kill(m.proc.pid, signal.SIGHUP)
        self.assertTrue(m.wait_for(r"reloaded", 5, since=mark))
        wait_until("the new file", lambda: read_text(self.path), 5)
        wait_until("the old file gone", lambda: not os.path.exists(path), 5)

    def test_stale_file_is_an_error_and_an_alert(self):
        # node_exporter would go on serving the last file written (moletun_tunnel_up 1 for
        # a tunnel long down): not written for 3 intervals is an error, an alert event, and
        # shows in status and metrics; written again resolves it.
        hook = WebhookReceiver()
        self.addCleanup(hook.cleanup)
        later = os.path.join(self.tmp, "later")
        path = os.path.join(later, "moletun.prom")
        kh = self.known_hosts(self.sc)
        section = tunnel_section("t1", self.sc, local_forward=["127.0.0.1:%d %s" % (
            self.port, self.echo.addr)], known_hosts_file=kh)
        alert = "[alert:ops]\nurl = %s\nformat = json\n" % hook.url()
        m = self.moletun([section, alert], extra_global="metrics_textfile = %s\n"
                         "metrics_interval = 200ms" % path)
        self.assertUp(m)
        got = hook.wait_requests(1, timeout=5)
        self.assertEqual([r.json()["event"] for r in got], ["metrics_stale"])
        event = got[0].json()
        self.assertIn(path, event["reason"])
        self.assertIn("No such file or directory", event["reason"])
        # 3 failed writes x 200 ms; the payload rounds to 0.1 s
        self.assertGreaterEqual(event["down_for_seconds"], 0.6)
        line = m.wait_for(r"err: metrics_textfile %s: not written for " % re.escape(path), 5)
        self.assertIsNotNone(line, m.log_text())
        self.assertIn("moletun_metrics_textfile_stale 1\n", ctl_metrics(m))
        daemon = ctl_status(m)["daemon"]
        self.assertTrue(daemon["metrics_textfile_stale"])
        self.assertIn("No such file or directory", daemon["metrics_textfile_error"])

        os.mkdir(later)
        got = hook.wait_requests(2, timeout=5)
        self.assertEqual([r.json()["event"] for r in got], ["metrics_stale", "metrics_fresh"])
        self.assertIn('moletun_tunnel_up{tunnel="t1"} 1\n', read_text(path))
        self.assertIn("moletun_metrics_textfile_stale 0\n", ctl_metrics(m))
        daemon = ctl_status(m)["daemon"]
        self.assertFalse(daemon["metrics_textfile_stale"])
        self.assertIsNone(daemon["metrics_textfile_error"])
        time.sleep(1.0)  # nothing more comes
        self.assertEqual(len(hook.received()), 2)

    def test_directory_writable_by_every_user_refused(self):
        # Like /tmp: another user's file put there first could not be replaced, and
        # node_exporter would serve it. check refuses it, and so does the daemon.
        shared = os.path.join(self.tmp, "shared")
        os.mkdir(shared)
        os.chmod(shared, 0o1777)
        kh = self.known_hosts(self.sc)
        section = tunnel_section("t1", self.sc, local_forward=["127.0.0.1:%d %s" % (
            self.port, self.echo.addr)], known_hosts_file=kh)
        m = self.moletun(section, start=False, extra_global="metrics_textfile = %s" %
                         os.path.join(shared, "moletun.prom"))
        r = subprocess.run([harness.moletun_bin(), "check", "-c", m.config_path],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("metrics_textfile %s/moletun.prom: directory %s is writable by every "
                      "user (mode 1777, sticky like /tmp): a file another user puts there "
                      "first cannot be replaced by moletun" % (shared, shared), r.stderr)
        os.chmod(shared, 0o755)
        r = subprocess.run([harness.moletun_bin(), "check", "-c", m.config_path],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_node_exporter_serves_the_series(self):
        if not os.access(NODE_EXPORTER, os.X_OK):
            self.skipTest("prometheus-node-exporter not installed")
        m = self.start()
        port = harness.free_port()
        log = open(os.path.join(self.tmp, "node_exporter.log"), "w")
        self.addCleanup(log.close)
        proc = subprocess.Popen([NODE_EXPORTER, "--collector.disable-defaults",
                                 "--collector.textfile",
                                 "--collector.textfile.directory=" + self.metrics_dir,
                                 "--web.listen-address=127.0.0.1:%d" % port],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.addCleanup(proc.wait, 10)
        self.addCleanup(proc.terminate)

        def scrape():
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port,
                                            timeout=5) as r:
                    return r.read().decode()
            except OSError:
                return None
        first = wait_until("node_exporter answering", scrape, 10)
        self.assertIn('moletun_tunnel_up{tunnel="t1"} 1\n', first)
        self.assertIn('moletun_tunnel_health{health="ok",tunnel="t1"} 1\n', first)
        self.assertIn("node_textfile_scrape_error 0\n", first)
        mtime_re = re.compile(r'^node_textfile_mtime_seconds\{file="(?:[^"]*/)?moletun\.prom"\} '
                              r'(\S+)$', re.M)
        t1 = float(mtime_re.search(first).group(1))
        self.assertLess(abs(time.time() - t1), 30)
        # the daemon keeps rewriting: the mtime node_exporter reports moves on
        time.sleep(1.1)
        t2 = float(mtime_re.search(scrape()).group(1))
        self.assertGreater(t2, t1)
        self.assertTrue(m.running())


if __name__ == "__main__":
    harness.main()
