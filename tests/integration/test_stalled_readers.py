"""Nothing outside the data path can freeze the loop: a service manager that stops reading
$NOTIFY_SOCKET and a journal that stops reading stderr, both for 25 s while tunnels
flap every ~100 ms (a state change, a STATUS= and debug lines each time) and another
carries echoes. Every echo and every `ctl status` must still be answered at once; when the
readers come back, a fresh STATUS= and WATCHDOG=1 arrive and the dropped lines are counted.
"""

import os
import re
import socket
import subprocess
import threading
import time
import unittest

import harness
from harness import CloseServer, EchoServer, connect, tunnel_section

STALL_SECONDS = 25.0
ECHO_LIMIT = 0.5 * harness.slowdown()  # seconds, each round trip
CTL_LIMIT = 1.0 * harness.slowdown()  # seconds, each `ctl status`


def max_dgram_qlen():
    with open("/proc/sys/net/unix/max_dgram_qlen") as f:
        return int(f.read())


class EchoLoop(threading.Thread):
    """Echoes through the tunnel without pause: one held connection, and a fresh one every
    second (a new channel open); records every round trip and every failure."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.times = []
        self.failures = []

    def round_trip(self, s, payload):
        t0 = time.monotonic()
        s.sendall(payload)
        got = b""
        s.settimeout(5.0)
        while len(got) < len(payload):
            b = s.recv(len(payload) - len(got))
            if not b:
                raise ConnectionError("closed by the tunnel")
            got += b
        if got != payload:
            raise ValueError("echo %r for %r" % (got, payload))
        return time.monotonic() - t0

    def run(self):
        held = None
        last_fresh = 0.0
        n = 0
        try:
            while not self.stop.is_set():
                n += 1
                try:
                    held = held or connect(self.port)
                    self.times.append(self.round_trip(held, b"held %d\n" % n))
                    if time.monotonic() - last_fresh >= 1.0:
                        last_fresh = time.monotonic()
                        t0 = time.monotonic()
                        with connect(self.port) as s:
                            self.round_trip(s, b"fresh %d\n" % n)
                        self.times.append(time.monotonic() - t0)
                except (OSError, ValueError) as e:
                    self.failures.append("%.1fs: %s" % (time.monotonic(), e))
                    if held:
                        held.close()
                    held = None
                time.sleep(0.02)
        finally:
            if held:
                held.close()


class StalledReadersTest(harness.TunnelTest):
    def test_unread_notify_socket_and_stderr(self):
        echo = self.server(EchoServer)
        sc = self.sidecar(permit_open=[echo.addr])
        flapper = self.server(CloseServer)  # accepts and closes: connect, fail, back off
        lp = harness.free_port()

        notify_path = os.path.join(self.tmp, "notify.sock")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        self.addCleanup(notify.close)

        # Four flapping tunnels at debug level write ~15 KB/s: more than the pipe and
        # moletun's log queue hold in 25 s, so lines must be dropped.
        sections = [
            tunnel_section("carrier", sc, known_hosts_file=self.known_hosts(sc),
                           local_forward=["127.0.0.1:%d %s" % (lp, echo.addr)]),
        ] + [
            tunnel_section("flapper%d" % i, sc,
                           known_hosts_file=self.known_hosts(sc, name="kh%d" % i),
                           local_forward=["127.0.0.1:%d %s" % (harness.free_port(), echo.addr)],
                           host="127.0.0.1", port=str(flapper.port), backoff_initial="100ms",
                           backoff_max="100ms")
            for i in range(4)
        ]
        m = self.moletun(sections, start=False, log_level="debug")
        m.start(env={"NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "1000000"})
        self.assertUp(m, "carrier", timeout=20)

        m.pause_reading()
        echoes = EchoLoop(lp)
        echoes.start()
        self.addCleanup(echoes.stop.set)
        ctl_times = []
        t_end = time.monotonic() + STALL_SECONDS
        while time.monotonic() < t_end:
            t0 = time.monotonic()
            r = subprocess.run([harness.moletun_bin(), "ctl", "-s", m.control_socket, "status"],
                               capture_output=True, text=True, timeout=30)
            ctl_times.append(time.monotonic() - t0)
            self.assertEqual(r.returncode, 3, r.stderr)  # 3: a tunnel is not up
            self.assertRegex(r.stdout, r"carrier\s+up", r.stdout + r.stderr)
            time.sleep(0.5)
        echoes.stop.set()
        echoes.join(10)
        self.assertTrue(m.running(), "the daemon died while its readers were stalled")

        print("%d echoes while stalled, worst %.1f ms; %d ctl status, worst %.1f ms" % (
            len(echoes.times), 1000 * max(echoes.times), len(ctl_times),
            1000 * max(ctl_times)))
        self.assertEqual(echoes.failures, [])
        self.assertGreater(len(echoes.times), 100)
        self.assertLess(max(echoes.times), ECHO_LIMIT, sorted(echoes.times)[-5:])
        self.assertLess(max(ctl_times), CTL_LIMIT, sorted(ctl_times)[-5:])

        # The manager reads again: its queue (max_dgram_qlen + 1 datagrams, sent before it
        # filled) comes first, then what moletun kept: the latest STATUS= and a WATCHDOG=1.
        backlog = max_dgram_qlen() + 1
        notify.settimeout(3.0)
        got = []
        deadline = time.monotonic() + 5.0 * harness.slowdown()
        while time.monotonic() < deadline:
            try:
                got.append(notify.recv(4096).decode())
            except socket.timeout:
                break
            fresh = got[backlog:]
            if any(x.startswith("STATUS=") for x in fresh) and "WATCHDOG=1" in fresh:
                break
        self.assertGreaterEqual(len(got), backlog, "the notify queue never filled: %r" % got)
        fresh = got[backlog:]
        self.assertTrue(any(x.startswith("STATUS=") for x in fresh), fresh)
        self.assertIn("WATCHDOG=1", fresh)

        # The journal reads again: the lines that did not fit were counted, then reported.
        mark = m.mark()
        m.resume_reading()
        line = m.wait_for(r"warning: (\d+) log lines dropped", 10, since=0)
        self.assertIsNotNone(line, "no dropped-lines report after the reader came back")
        print("stderr: %s (%d lines in all)" % (line[1], len(m.lines)))
        self.assertGreater(int(line[2].group(1)), 0)
        self.assertTrue(m.running())
        # Lines arrive whole: every line after the stall still starts with a timestamp.
        stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \w+: ")
        bad = [l for _, l in m.lines[mark:] if not stamp.match(l) and "==" not in l[:12]]
        self.assertEqual(bad[:5], [])


if __name__ == "__main__":
    harness.main()
