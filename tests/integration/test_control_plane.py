"""The control plane against the real daemon: `moletun ctl` commands and exit codes, the
JSON and metrics formats, sd_notify messages, reload, and hostile control clients while a
tunnel keeps carrying data."""

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import threading
import time

import harness
from harness import EchoServer, connect, echo_once, tunnel_section

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
TUNNEL_KEYS = {"name", "state", "health", "rtt_ms", "rtt_last_ms", "since", "host", "port",
               "user", "via", "reconnects", "last_error", "sidecar", "sidecar_failed",
               "sidecar_failed_count", "sidecar_checked", "sidecar_error", "forwards"}
FORWARD_KEYS = {"type", "listen", "target", "active", "connections_total", "bytes_in",
                "bytes_out", "open_failures", "rejected", "rejected_by_reason", "target_state",
                "target_error", "probe_rtt_ms", "probe_failures", "window_largest_bytes",
                "window_total_bytes"}
NOT_COUNTS = {"type", "listen", "target", "rejected_by_reason", "target_state", "target_error",
              "probe_rtt_ms"}
REJECT_REASONS = {"max_connections", "down", "memory"}


def ctl(m, *args, env=None, timeout=15):
    e = dict(os.environ)
    e.pop("MOLETUN_SOCKET", None)
    if env:
        e.update(env)
    return subprocess.run([harness.moletun_bin(), "ctl", "-s", m.control_socket] + list(args),
                          capture_output=True, text=True, timeout=timeout, env=e)


def control_exchange(path, data, timeout=5.0):
    """Raw request/reply on the control socket; returns bytes until EOF."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(data)
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                break
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks)
    finally:
        s.close()


class NotifySocket:
    """A datagram socket standing in for systemd's $NOTIFY_SOCKET; collects messages."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.messages = []
        self.cv = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.sock.settimeout(0.2)
        while not self.closed:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            with self.cv:
                self.messages.append((time.monotonic(), data.decode()))
                self.cv.notify_all()

    def wait_for(self, regex, since=0, timeout=10.0):
        """Index of the first message at index >= since matching regex, or None."""
        r = re.compile(regex, re.S)
        deadline = time.monotonic() + timeout * harness.slowdown()
        with self.cv:
            while True:
                for i in range(since, len(self.messages)):
                    if r.fullmatch(self.messages[i][1]):
                        return i
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cv.wait(left)

    def texts(self, since=0):
        with self.cv:
            return [t for _, t in self.messages[since:]]

    def close(self):
        self.closed = True
        self.thread.join(2)
        self.sock.close()


class ControlPlaneTest(harness.TunnelTest):
    def setUp(self):
        super().setUp()
        self.echo = self.server(EchoServer)
        self.sc = self.sidecar(permit_open=[self.echo.addr])
        self.dead = self.sidecar(start=False)  # nothing listens: that tunnel backs off
        self.lp1, self.lp2, self.lp_dead = (harness.free_port() for _ in range(3))

    def sections(self, t2_extra=None):
        kh = self.known_hosts(self.sc, name="known_hosts")
        kh_dead = self.known_hosts(self.dead, name="known_hosts_dead")
        t2_keys = dict(t2_extra or {})
        return [
            tunnel_section("t1", self.sc, known_hosts_file=kh, local_forward=[
                "127.0.0.1:%d %s" % (self.lp1, self.echo.addr)]),
            tunnel_section("t2", self.sc, known_hosts_file=kh, local_forward=[
                "127.0.0.1:%d %s" % (self.lp2, self.echo.addr)], **t2_keys),
            tunnel_section("down", self.dead, known_hosts_file=kh_dead, local_forward=[
                "127.0.0.1:%d %s" % (self.lp_dead, self.echo.addr)]),
        ]

    def start_daemon(self, env=None, **kw):
        self.m = self.moletun(self.sections(**kw), start=False)
        self.m.start(env=env)
        self.assertUp(self.m, "t1")
        self.assertUp(self.m, "t2")
        self.assertIsNotNone(self.m.wait_state("down", "backoff", 10))
        return self.m

    def test_ctl_commands_and_exit_codes(self):
        m = self.start_daemon()
        st = os.stat(m.control_socket)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(st.st_mode & 0o7777, 0o660)

        r = ctl(m, "status")
        self.assertEqual(r.returncode, 3, r.stderr)  # "down" is not up
        self.assertRegex(r.stdout,
                         r"^TUNNEL +STATE +HEALTH +SIDECAR +RTT +SINCE +ENDPOINT +RECONNECTS +LAST ERROR\n")
        self.assertRegex(r.stdout, r"\nt1 +up +ok +(hardened|unknown) +([\d.]+ms|-) +\d+s +\S+@127\.0\.0\.1:%d +0 +-\n"
                         % self.sc.port)
        self.assertRegex(r.stdout, r"\ndown +(backoff|connecting) ")
        self.assertIn("127.0.0.1:%d" % self.lp1, r.stdout)
        print(r.stdout)

        r = ctl(m, "status", "t1")
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        self.assertNotIn("\ndown ", r.stdout)
        r = ctl(m, "status", "down")
        self.assertEqual(r.returncode, 3)
        r = ctl(m, "status", "nosuch")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr, "moletun ctl: status: no such tunnel: nosuch\n")

        # MOLETUN_SOCKET instead of -s.
        r = subprocess.run([harness.moletun_bin(), "ctl", "status", "t1"], capture_output=True,
                           text=True, timeout=15,
                           env=dict(os.environ, MOLETUN_SOCKET=m.control_socket))
        self.assertEqual(r.returncode, 0, r.stderr)

        mark = m.mark()
        r = ctl(m, "reconnect", "t1")
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "", ""))
        self.assertIsNotNone(m.wait_transition("t1", mark, old="up", timeout=5))
        self.assertUp(m, "t1")
        mark = m.mark()
        r = ctl(m, "reconnect", "--all")
        self.assertEqual(r.returncode, 0, r.stderr)
        for name in ("t1", "t2"):
            self.assertIsNotNone(m.wait_transition(name, mark, old="up", timeout=5))
            self.assertUp(m, name)
        r = ctl(m, "reconnect", "nosuch")
        self.assertEqual(r.returncode, 1)
        r = ctl(m, "reconnect")
        self.assertEqual(r.returncode, 2)
        self.assertIn("usage:", r.stderr)

        r = ctl(m, "reload")
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "", ""))

        r = ctl(m, "frobnicate")
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown command 'frobnicate'", r.stderr)

        r = ctl(m, "metrics")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('moletun_tunnel_up{tunnel="t1"} 1\n', r.stdout)
        self.assertIn('moletun_tunnel_up{tunnel="down"} 0\n', r.stdout)
        promtool = shutil.which("promtool")
        if promtool:
            p = subprocess.run([promtool, "check", "metrics"], input=r.stdout,
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        else:
            print("promtool not installed: the unit test's linter covers the format")

        # The daemon gone: exit 1 and a hint.
        m.stop()
        r = ctl(m, "status")
        self.assertEqual(r.returncode, 1)
        self.assertRegex(r.stderr, r"^moletun ctl: cannot connect to .*control\.sock: No such "
                                   r"file or directory \(is moletun running\?\)\n$")

    def test_json_schema(self):
        m = self.start_daemon()
        self.assertEqual(echo_once(self.lp1, b"count me\n"), b"count me\n")
        r = ctl(m, "status", "--json")
        self.assertEqual(r.returncode, 3, r.stderr)
        doc = json.loads(r.stdout)
        self.assertEqual(set(doc), {"tunnels", "daemon", "memory"})
        self.assertEqual(doc["daemon"]["pid"], m.proc.pid)
        self.assertIsInstance(doc["daemon"]["nofile_limit"], int)
        mem = doc["memory"]
        self.assertEqual(set(mem), {"limit_bytes", "used_bytes", "peak_bytes", "stage",
                                    "by_kind"})
        self.assertEqual(mem["limit_bytes"], 160 << 20)  # the default memory_limit
        self.assertEqual(set(mem["by_kind"]), {"session", "window", "buffer", "socket"})
        self.assertEqual(sum(mem["by_kind"].values()), mem["used_bytes"])
        # three tunnels up or trying, no client connected: libssh2's sessions and little else
        self.assertGreater(mem["by_kind"]["session"], 0)
        self.assertLessEqual(mem["used_bytes"], mem["peak_bytes"])
        self.assertEqual(mem["stage"], "ok")
        names = [t["name"] for t in doc["tunnels"]]
        self.assertEqual(sorted(names), ["down", "t1", "t2"])
        for t in doc["tunnels"]:
            self.assertEqual(set(t), TUNNEL_KEYS)
            self.assertIn(t["state"], ("connecting", "up", "backoff"))
            self.assertIn(t["health"], ("ok", "degraded", "target_down", "down"))
            self.assertEqual(t["health"] == "down", t["state"] != "up")
            self.assertRegex(t["since"], RFC3339_UTC)
            self.assertIsInstance(t["port"], int)
            self.assertIsInstance(t["reconnects"], int)
            self.assertEqual(t["via"], [])  # direct: no proxy_jump
            self.assertIn(t["sidecar"], ("hardened", "not_hardened", "unknown"))
            self.assertIsInstance(t["sidecar_failed"], list)
            self.assertEqual(t["sidecar_failed_count"] > 0, t["sidecar"] == "not_hardened")
            if t["sidecar_checked"] is not None:
                self.assertRegex(t["sidecar_checked"], RFC3339_UTC)
            self.assertEqual(t["sidecar_error"] is None, t["sidecar"] != "unknown")
            for f in t["forwards"]:
                self.assertEqual(set(f), FORWARD_KEYS)
                self.assertIn(f["type"], ("local", "remote"))
                for k in FORWARD_KEYS - NOT_COUNTS:
                    self.assertIsInstance(f[k], int)
                self.assertIn(f["target_state"], ("unknown", "reachable", "unreachable"))
                self.assertEqual(set(f["rejected_by_reason"]), REJECT_REASONS)
                self.assertEqual(sum(f["rejected_by_reason"].values()), f["rejected"])
        t1 = next(t for t in doc["tunnels"] if t["name"] == "t1")
        self.assertEqual((t1["state"], t1["host"], t1["port"], t1["last_error"]),
                         ("up", "127.0.0.1", self.sc.port, None))
        self.assertEqual(t1["forwards"][0]["listen"], "127.0.0.1:%d" % self.lp1)
        self.assertEqual(t1["forwards"][0]["target"], self.echo.addr)
        self.assertGreaterEqual(t1["forwards"][0]["connections_total"], 1)
        down = next(t for t in doc["tunnels"] if t["name"] == "down")
        self.assertNotEqual(down["state"], "up")
        self.assertIsInstance(down["last_error"], (str, type(None)))

        # `status --json NAME` prints exactly the daemon's reply body.
        raw = control_exchange(m.control_socket, b"status --json t1\n").decode()
        header, body = raw.split("\n", 1)
        self.assertEqual(header, "ok tunnels=1 up=1 healthy=1")
        r = ctl(m, "status", "--json", "t1")
        self.assertEqual(r.returncode, 0)
        self.assertEqual(json.loads(r.stdout)["tunnels"][0]["name"], "t1")
        self.assertEqual(set(json.loads(body)), {"tunnels", "daemon", "memory"})

    def test_notify_sequence(self):
        notify = NotifySocket(os.path.join(self.tmp, "notify.sock"))
        self.addCleanup(notify.close)
        m = self.start_daemon(env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000"})
        ready = notify.wait_for(r"READY=1")
        self.assertIsNotNone(ready, notify.texts())
        self.assertIsNotNone(notify.wait_for(r"STATUS=\d+/3 tunnels up.*"), notify.texts())
        self.assertIsNotNone(notify.wait_for(r"STATUS=2/3 tunnels up; down: .*"),
                             notify.texts())
        # WATCHDOG=1 every 500 ms (half of WATCHDOG_USEC), well within the 1 s systemd allows.
        first = notify.wait_for(r"WATCHDOG=1")
        self.assertIsNotNone(first)
        time.sleep(2.0)
        pings = [t for t, x in notify.messages[first:] if x == "WATCHDOG=1"]
        self.assertGreaterEqual(len(pings), 3, notify.texts())
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        self.assertLess(max(gaps), 1.0 * harness.slowdown(), gaps)

        for trigger in ("sighup", "ctl"):
            mark = len(notify.messages)
            if trigger == "sighup":
                os.kill(m.proc.pid, 1)
            else:
                self.assertEqual(ctl(m, "reload").returncode, 0)
            i = notify.wait_for(r"RELOADING=1\nMONOTONIC_USEC=\d+", since=mark)
            self.assertIsNotNone(i, notify.texts(mark))
            usec = int(notify.messages[i][1].split("MONOTONIC_USEC=")[1])
            self.assertLess(abs(usec / 1e6 - time.clock_gettime(time.CLOCK_MONOTONIC)), 10)
            self.assertIsNotNone(notify.wait_for(r"READY=1", since=i + 1), notify.texts(mark))

        mark = len(notify.messages)
        rc, _ = m.stop()
        self.assertEqual(rc, 0)
        self.assertIsNotNone(notify.wait_for(r"STOPPING=1", since=mark, timeout=2),
                             notify.texts(mark))
        # Nothing but watchdog pings repeats: STATUS= only when it changed.
        statuses = [x for x in notify.texts() if x.startswith("STATUS=")]
        for a, b in zip(statuses, statuses[1:]):
            self.assertNotEqual(a, b)

    def test_reload_invalid_config_keeps_running(self):
        m = self.start_daemon()
        with connect(self.lp1, timeout=5) as s:
            s.sendall(b"before\n")
            self.assertEqual(s.recv(64), b"before\n")
            with open(m.config_path) as f:
                good = f.read()
            with open(m.config_path, "w") as f:
                f.write(good + "\n[tunnel:broken]\nhots = nowhere\n")
            mark = m.mark()
            r = ctl(m, "reload")
            self.assertEqual(r.returncode, 1)
            self.assertTrue(r.stderr.startswith("moletun ctl: reload: invalid configuration\n"),
                            r.stderr)
            self.assertIn("hots", r.stderr)
            self.assertIn(m.config_path, r.stderr)
            # The open connection through the old tunnel still works; nothing restarted.
            s.sendall(b"after\n")
            self.assertEqual(s.recv(64), b"after\n")
            self.assertEqual(m.transitions("t1", mark), [])
            self.assertEqual(ctl(m, "status", "t1").returncode, 0)

    def test_reload_changes_one_tunnel(self):
        m = self.start_daemon()
        with connect(self.lp1, timeout=5) as s1, connect(self.lp2, timeout=5) as s2:
            for s in (s1, s2):
                s.sendall(b"hi\n")
                self.assertEqual(s.recv(64), b"hi\n")
            with open(m.config_path) as f:
                text = f.read()
            # Change t2 only (a longer keepalive interval).
            head, t2, rest = re.split(r"(?=\[tunnel:t2\]\n)|(?=\[tunnel:down\]\n)", text)
            t2 = t2.replace("keepalive_interval = 1s", "keepalive_interval = 2s")
            with open(m.config_path, "w") as f:
                f.write(head + t2 + rest)
            mark = m.mark()
            r = ctl(m, "reload")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIsNotNone(m.wait_transition("t2", mark, timeout=5),
                                 "t2 was not restarted")
            s1.sendall(b"still here\n")
            self.assertEqual(s1.recv(64), b"still here\n")
            self.assertEqual(m.transitions("t1", mark), [])
        self.assertUp(m, "t2")
        self.assertEqual(echo_once(self.lp2, b"t2 back\n", 5), b"t2 back\n")

    def test_hostile_control_clients(self):
        m = self.start_daemon()
        harness.raise_fd_limit()
        stop = threading.Event()
        errors, rounds = [], [0]

        def keep_echoing():
            try:
                with connect(self.lp1, timeout=5) as s:
                    while not stop.is_set():
                        msg = b"round %d\n" % rounds[0]
                        s.sendall(msg)
                        got = b""
                        while len(got) < len(msg):
                            b = s.recv(64)
                            if not b:
                                raise EOFError("tunnel connection closed")
                            got += b
                        if got != msg:
                            raise ValueError("echo mismatch")
                        rounds[0] += 1
                        time.sleep(0.01)
            except Exception as e:  # reported by the main thread
                errors.append(e)

        pump = threading.Thread(target=keep_echoing)
        pump.start()
        try:
            self.assertEqual(control_exchange(m.control_socket, b"hello\n"),
                             b"error unknown command\n")
            self.assertEqual(control_exchange(m.control_socket, os.urandom(200) + b"\n")[:6],
                             b"error ")
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(m.control_socket)
            try:
                s.sendall(b"A" * (1 << 20))
            except (BrokenPipeError, ConnectionResetError):
                pass
            reply = b""
            try:
                while True:
                    b = s.recv(4096)
                    if not b:
                        break
                    reply += b
            except ConnectionResetError:
                pass
            s.close()
            self.assertEqual(reply, b"error request too long\n")

            idle = []
            for _ in range(500):
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                c.connect(m.control_socket)
                idle.append(c)
            before = rounds[0]
            time.sleep(1.0)
            self.assertGreater(rounds[0], before + 10, "tunnel stalled under 500 idle clients")
            # Idle connections make way: ctl is answered while they hold every slot.
            r = ctl(m, "status", "t1")
            self.assertEqual(r.returncode, 0, r.stderr)
            for c in idle:
                c.close()
            r = ctl(m, "status", "t1")
            self.assertEqual(r.returncode, 0, r.stderr)
        finally:
            stop.set()
            pump.join(10)
        self.assertEqual(errors, [])
        self.assertTrue(m.running())
        print("%d echo rounds through the tunnel during the abuse" % rounds[0])



def write_in_place(path, data):
    """Rewrites a file's contents as `cp new old` does: same path, inode and mode."""
    with open(path, "wb") as f:
        f.write(data)


def closed_within(sock, timeout):
    """True when the peer closes the connection (EOF or reset) within timeout."""
    sock.settimeout(timeout)
    try:
        return sock.recv(64) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def roundtrip(sock, payload):
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        b = sock.recv(64)
        if not b:
            break
        got += b
    return got


class ReloadFileContentsTest(harness.TunnelTest):
    """A reload compares what identity_file and known_hosts_file hold, not only their
    paths: a key rotated in place restarts its tunnel, a file rewritten with the same bytes
    does not, and a file that cannot be read fails the reload without touching anything."""

    # sanitizers and valgrind slow the daemon down (the harness's waits scale themselves)
    SLOW = harness.slowdown()

    def setUp(self):
        super().setUp()
        self.echo = self.server(EchoServer)
        self.sc = self.sidecar(permit_open=[self.echo.addr])
        self.lp1, self.lp2 = harness.free_port(), harness.free_port()
        # t1 has a key of its own, so that rotating it concerns t1 only
        self.key1 = harness.keygen(os.path.join(self.tmp, "id_t1"), comment="t1")
        self.authorize([self.sc.user_key, self.key1])

    def authorize(self, keys):
        """authorized_keys on the sidecar holds exactly these keys (sshd reads it at each
        authentication, so the change applies to the next connection)."""
        with open(self.sc.authorized_keys, "w") as f:
            for k in keys:
                f.write(harness.read_pubkey(k + ".pub") + "\n")

    def start_daemon(self, **t1_keys):
        kh = self.known_hosts(self.sc)
        t1 = dict(known_hosts_file=kh, identity_file=self.key1)
        t1.update(t1_keys)
        m = self.moletun([
            tunnel_section("t1", self.sc, local_forward=[
                "127.0.0.1:%d %s" % (self.lp1, self.echo.addr)], **t1),
            tunnel_section("t2", self.sc, known_hosts_file=kh, local_forward=[
                "127.0.0.1:%d %s" % (self.lp2, self.echo.addr)]),
        ])
        self.assertUp(m, "t1", 10)
        self.assertUp(m, "t2", 10)
        return m, kh

    def test_reload_restarts_tunnel_whose_key_was_rotated_in_place(self):
        m, _ = self.start_daemon()
        new = harness.keygen(os.path.join(self.tmp, "id_new"), comment="t1-rotated")
        with connect(self.lp1, timeout=5) as s1, connect(self.lp2, timeout=5) as s2:
            for s in (s1, s2):
                self.assertEqual(roundtrip(s, b"before\n"), b"before\n")
            # The old key no longer opens the server: only the new one can bring t1 back.
            self.authorize([self.sc.user_key, new])
            with open(new, "rb") as f:
                write_in_place(self.key1, f.read())
            self.assertEqual(stat.S_IMODE(os.stat(self.key1).st_mode), 0o600)
            mark, sshd_mark = m.mark(), self.sc.log_size()
            r = ctl(m, "reload")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIsNotNone(
                m.wait_for(r"tunnel t1: identity_file contents changed, restarting", 5,
                           since=mark), "t1 was not restarted")
            # The held connection belonged to the old session.
            self.assertTrue(closed_within(s1, 5 * self.SLOW),
                            "client connection of the old session still open")
            # t2 shares nothing that changed: its connection and session carry on.
            self.assertEqual(roundtrip(s2, b"t2 still here\n"), b"t2 still here\n")
        self.assertIsNotNone(m.wait_transition("t1", mark, new="up", timeout=10),
                             "t1 did not come back up with the new key")
        self.assertEqual(echo_once(self.lp1, b"new key\n", 5 * self.SLOW), b"new key\n")
        fp = harness.run([harness.SSH_KEYGEN, "-lf", new + ".pub"]).stdout.split()[1]
        self.assertIn("ssh2: ED25519 " + fp, self.sc.log_text(sshd_mark))
        self.assertEqual(m.transitions("t2", mark), [])

    def test_reload_keeps_tunnels_whose_files_did_not_change(self):
        m, kh = self.start_daemon()
        with connect(self.lp1, timeout=5) as s1:
            self.assertEqual(roundtrip(s1, b"before\n"), b"before\n")
            # Same bytes written again, and newer times: nothing to restart for.
            later = time.time() + 60
            for path in (self.key1, kh):
                with open(path, "rb") as f:
                    write_in_place(path, f.read())
                os.utime(path, (later, later))
            mark = m.mark()
            r = ctl(m, "reload")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIsNotNone(m.wait_for(r"reloaded: 2 tunnels", 5, since=mark))
            self.assertEqual(m.grep(r"restarting|removed", mark), [])
            self.assertEqual(m.transitions(None, mark), [])
            self.assertEqual(roundtrip(s1, b"kept\n"), b"kept\n")

            # A key file that cannot be read fails the reload; the tunnel keeps running.
            os.rename(self.key1, self.key1 + ".away")
            mark = m.mark()
            r = ctl(m, "reload")
            self.assertEqual(r.returncode, 1)
            self.assertIn("identity file %s: No such file or directory" % self.key1, r.stderr)
            self.assertIsNotNone(m.wait_for(r"reload failed: keeping the running configuration",
                                            5, since=mark))
            self.assertEqual(m.transitions(None, mark), [])
            self.assertEqual(roundtrip(s1, b"still kept\n"), b"still kept\n")

    def test_reload_after_accept_new_learned_a_key_keeps_tunnel(self):
        # moletun writes the file itself under accept-new: that must not count as a change.
        kh_new = self.known_hosts(self.sc, name="known_hosts_learned", lines=[])
        m, _ = self.start_daemon(known_hosts_file=kh_new,
                                 strict_host_key_checking="accept-new")
        self.assertIsNotNone(m.wait_for(r"tunnel t1: added host key", 5))
        self.assertGreater(os.path.getsize(kh_new), 0)
        with connect(self.lp1, timeout=5) as s1:
            self.assertEqual(roundtrip(s1, b"before\n"), b"before\n")
            mark = m.mark()
            r = ctl(m, "reload")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIsNotNone(m.wait_for(r"reloaded: 2 tunnels", 5, since=mark))
            self.assertEqual(m.transitions(None, mark), [])
            self.assertEqual(roundtrip(s1, b"kept\n"), b"kept\n")


class ReloadKnownHostsRelevanceTest(harness.TunnelTest):
    """Two tunnels to two servers share one known_hosts file. A reload after a line for
    another host (or a comment) was added restarts neither; a new key line for one
    tunnel's server restarts that tunnel only."""

    SLOW = 4 if harness.under_wrapper() else 1

    def setUp(self):
        super().setUp()
        self.echo = self.server(EchoServer)
        self.sc1 = self.sidecar(permit_open=[self.echo.addr])
        self.sc2 = self.sidecar(permit_open=[self.echo.addr],
                                host_key_types=("ed25519", "ecdsa"))
        self.lp1, self.lp2 = harness.free_port(), harness.free_port()
        self.kh = os.path.join(self.tmp, "known_hosts")
        self.lines = [self.sc1.known_hosts_line(), self.sc2.known_hosts_line()]
        self.write_kh()
        self.m = self.moletun([
            tunnel_section("t1", self.sc1, known_hosts_file=self.kh, local_forward=[
                "127.0.0.1:%d %s" % (self.lp1, self.echo.addr)]),
            tunnel_section("t2", self.sc2, known_hosts_file=self.kh, local_forward=[
                "127.0.0.1:%d %s" % (self.lp2, self.echo.addr)]),
        ])
        self.assertUp(self.m, "t1", 10 * self.SLOW)
        self.assertUp(self.m, "t2", 10 * self.SLOW)

    def write_kh(self):
        data = "".join(self.lines).encode()
        if os.path.exists(self.kh):
            write_in_place(self.kh, data)
        else:
            with open(self.kh, "wb") as f:
                f.write(data)

    def reconnects(self):
        r = ctl(self.m, "status", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        return {t["name"]: t["reconnects"] for t in json.loads(r.stdout)["tunnels"]}

    def reload(self):
        mark = self.m.mark()
        r = ctl(self.m, "reload")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIsNotNone(self.m.wait_for(r"reloaded: 2 tunnels", 5, since=mark))
        return mark

    def test_unrelated_lines_restart_nothing(self):
        before = self.reconnects()
        other = harness.keygen(os.path.join(self.tmp, "other_host"), comment="other")
        with connect(self.lp1, timeout=5) as s1, connect(self.lp2, timeout=5) as s2:
            for s in (s1, s2):
                self.assertEqual(roundtrip(s, b"before\n"), b"before\n")
            self.lines += ["# the new replica\n",
                           "db2.example.com %s\n" % harness.read_pubkey(other + ".pub"),
                           # the same server name on another port is another host
                           self.sc1.known_hosts_line(wrong=True, port=self.sc1.port + 1)]
            self.write_kh()
            mark = self.reload()
            self.assertEqual(self.m.grep(r"restarting|removed", mark), [])
            self.assertEqual(self.m.transitions(None, mark), [])
            for s in (s1, s2):
                self.assertEqual(roundtrip(s, b"kept\n"), b"kept\n")
        self.assertEqual(self.reconnects(), before)

    def test_a_new_key_of_one_server_restarts_its_tunnel_only(self):
        with connect(self.lp1, timeout=5) as s1, connect(self.lp2, timeout=5) as s2:
            for s in (s1, s2):
                self.assertEqual(roundtrip(s, b"before\n"), b"before\n")
            self.lines.append(self.sc2.known_hosts_line(key_type="ecdsa"))
            self.write_kh()
            mark = self.reload()
            self.assertIsNotNone(self.m.wait_for(
                r"tunnel t2: known_hosts_file contents changed, restarting", 5, since=mark))
            self.assertEqual(self.m.grep(r"tunnel t1: .*(restarting|removed)", mark), [])
            self.assertTrue(closed_within(s2, 5 * self.SLOW),
                            "client connection of t2's old session still open")
            self.assertEqual(roundtrip(s1, b"t1 still here\n"), b"t1 still here\n")
        self.assertEqual(self.m.transitions("t1", mark), [])
        self.assertIsNotNone(self.m.wait_transition("t2", mark, new="up",
                                                    timeout=10 * self.SLOW))
        self.assertEqual(echo_once(self.lp2, b"back\n", 5 * self.SLOW), b"back\n")


if __name__ == "__main__":
    harness.main()
