"""Wall-clock steps do not touch the engine: the daemon runs under libfaketime, which moves
its CLOCK_REALTIME while it runs and leaves CLOCK_MONOTONIC alone (an NTP step, a VM
resume). Three tunnels to three sidecars: t1 carries a held connection that echoes
throughout, t2 stays idle (keepalives only) until its sshd session process is stopped, t3
stays idle against a sidecar that refuses session channels (MaxSessions 0), whose keepalive
round trip is measured all the same.

  +1 h   no reconnect on any tunnel, the held connection still echoes, the log's
         timestamps moved (so the step reached the daemon), no alert
  -2 h   (to -1 h) the same; then t2's server stops answering and is declared dead within
         keepalive_interval x keepalive_count_max; `since` ages stay sane throughout; no
         alert for the short outage (down_after is longer) and none for a round trip that
         spans a step (degraded_rtt).

Runs in the plain, ASan (its runtime first in LD_PRELOAD) and valgrind (MOLETUN_WRAPPER)
builds; margins grow with the build's slowdown.
"""

import calendar
import json
import os
import re
import subprocess
import time

import harness
from harness import EchoServer, connect, tunnel_section
from webhook import WebhookReceiver

FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
INTERVAL = 1.0
COUNT = 3
STAMP_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.\d{3}Z ")


def ctl(m, *args, timeout=30):
    e = dict(os.environ)
    e.pop("MOLETUN_SOCKET", None)
    return subprocess.run([harness.moletun_bin(), "ctl", "-s", m.control_socket] + list(args),
                          capture_output=True, text=True, timeout=timeout, env=e)


def parse_age(text):
    """Seconds of a SINCE cell: "12s", "3m04s", "2h05m", "1d02h"."""
    m = re.fullmatch(r"(\d+)([smhd])(?:(\d+)([smh]))?", text)
    if not m:
        raise AssertionError("not an age: %r" % text)
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    secs = int(m.group(1)) * unit[m.group(2)]
    if m.group(3):
        secs += int(m.group(3)) * unit[m.group(4)]
    return secs


def faketime_env(path):
    """libfaketime reading its offset from `path` at every call, monotonic clock untouched
    (DONT_FAKE_MONOTONIC is the older name of FAKETIME_DONT_FAKE_MONOTONIC)."""
    return {
        "LD_PRELOAD": FAKETIME_LIB,
        "FAKETIME_TIMESTAMP_FILE": path,
        "FAKETIME_NO_CACHE": "1",
        "DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


def asan_runtime(binary):
    """The ASan runtime the binary links, or None (a plain build)."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    m = re.search(r"libasan\.so\S*\s+=>\s+(\S+)", out)
    return m.group(1) if m else None


class ClockStepTest(harness.TunnelTest):
    def setUp(self):
        super().setUp()
        if not os.path.exists(FAKETIME_LIB):
            self.skipTest("libfaketime not installed (apt-get install faketime)")
        self.slow = 4.0 if harness.under_wrapper() else 1.0
        self.fake = os.path.join(self.tmp, "faketime.rc")
        self.set_offset(0)

    def set_offset(self, seconds):
        """Steps the daemon's wall clock to real time + seconds (atomically: libfaketime
        rereads the file on every call and must never see it half written)."""
        tmp = self.fake + ".new"
        with open(tmp, "w") as f:
            f.write("%+d\n" % seconds)
        os.replace(tmp, self.fake)
        self.offset = seconds

    def stamp_offset(self, m, since):
        """Daemon log time minus real time, from the first stamped line at index >= since."""
        for t, line in m.grep(STAMP_RE.pattern, since):
            stamp = calendar.timegm(time.strptime(STAMP_RE.match(line).group(1),
                                                  "%Y-%m-%dT%H:%M:%S"))
            # the line was read at monotonic t; map that to real wall time now
            return stamp - (time.time() - (time.monotonic() - t))
        return None

    def status(self, m, name):
        r = ctl(m, "status", "--json", name)
        self.assertIn(r.returncode, (0, 3, 4), r.stderr)
        js = json.loads(r.stdout)["tunnels"][0]
        table = ctl(m, "status", name).stdout.splitlines()
        cols = table[0].split()
        row = table[1].split()
        self.assertIn("SINCE", cols)
        return js, parse_age(row[cols.index("SINCE")])

    def echo(self, s, n):
        payload = b"held %d\n" % n
        s.sendall(payload)
        self.assertEqual(harness.recv_exact(s, len(payload)), payload,
                         "held connection stopped echoing")

    def hold(self, s, seconds, tunnels, mark):
        """Echoes on the held connection every 0.25 s for `seconds`; no state may change."""
        deadline = time.monotonic() + seconds
        n = 0
        while time.monotonic() < deadline:
            self.echo(s, n)
            n += 1
            for name in tunnels:
                self.assertEqual(self.m.transitions(name, mark), [],
                                 "tunnel %s changed state after a wall-clock step" % name)
            time.sleep(0.25)
        return n

    def check_sane(self, name, up_at, label):
        """The tunnel is up, never reconnected, and its age matches the monotonic time since
        it came up; JSON `since` is that age before the daemon's (stepped) wall clock."""
        js, age = self.status(self.m, name)
        real_age = time.monotonic() - up_at
        print("%s: %s since %s (age %ds, %.1fs by the test's clock), rtt %s ms, health %s" %
              (label, name, js["since"], age, real_age, js["rtt_ms"], js["health"]))
        self.assertEqual(js["state"], "up")
        self.assertEqual(js["reconnects"], 0, "%s reconnected" % name)
        self.assertEqual(js["health"], "ok")
        self.assertGreaterEqual(age, int(real_age) - 2, "SINCE lost time after a step")
        self.assertLessEqual(age, real_age + 2 * self.slow, "SINCE gained time after a step")
        since = calendar.timegm(time.strptime(js["since"], "%Y-%m-%dT%H:%M:%SZ"))
        want = time.time() + self.offset - real_age
        self.assertLess(abs(since - want), 3 + 2 * self.slow,
                        "since %s is not now - age on the daemon's wall clock" % js["since"])
        self.assertIsNotNone(js["rtt_ms"])
        self.assertGreaterEqual(js["rtt_ms"], 0)
        self.assertLess(js["rtt_ms"], 1000)

    def test_wall_clock_steps(self):
        env = faketime_env(self.fake)
        asan = asan_runtime(harness.moletun_bin())
        if asan:
            # ASan must come first in the initial library list
            env["LD_PRELOAD"] = asan + " " + FAKETIME_LIB
            self.slow = max(self.slow, 2.0)
        bound = INTERVAL * COUNT + 1.5 * self.slow
        down_after = 8 * self.slow

        echo = self.server(EchoServer)
        sc1 = self.sidecar(permit_open=[echo.addr])
        sc2 = self.sidecar(permit_open=[echo.addr])
        sc3 = self.sidecar(permit_open=[echo.addr], extra_config="MaxSessions 0")
        lp1, lp2, lp3 = harness.free_port(), harness.free_port(), harness.free_port()
        hook = WebhookReceiver()
        self.addCleanup(hook.cleanup)
        keys = {"keepalive_interval": "%ds" % INTERVAL, "keepalive_count_max": str(COUNT),
                "degraded_rtt": "2s"}
        sections = [
            tunnel_section("t1", sc1, known_hosts_file=self.known_hosts(sc1, name="kh1"),
                           local_forward=["127.0.0.1:%d %s" % (lp1, echo.addr)], **keys),
            tunnel_section("t2", sc2, known_hosts_file=self.known_hosts(sc2, name="kh2"),
                           local_forward=["127.0.0.1:%d %s" % (lp2, echo.addr)], **keys),
            tunnel_section("t3", sc3, known_hosts_file=self.known_hosts(sc3, name="kh3"),
                           local_forward=["127.0.0.1:%d %s" % (lp3, echo.addr)], **keys),
            "[alert:hook]\nurl = %s\ndown_after = %ds\ntimeout = 3s\n" % (hook.url(),
                                                                          down_after),
        ]
        self.m = m = self.moletun(sections, start=False)
        m.start(env=env)
        up1 = self.assertUp(m, "t1")[0]
        up2 = self.assertUp(m, "t2")[0]
        up3 = self.assertUp(m, "t3")[0]
        if self.stamp_offset(m, 0) is None:
            self.fail("no timestamped log line")
        s = connect(lp1)
        self.addCleanup(s.close)
        self.echo(s, -1)
        time.sleep(2)
        self.check_sane("t1", up1, "before")

        # +1 h
        mark = m.mark()
        self.set_offset(3600)
        n = self.hold(s, 3 * INTERVAL * COUNT, ["t1", "t2", "t3"], mark)
        self.assertEqual(ctl(m, "reload").returncode, 0)
        self.assertIsNotNone(m.wait_for(r"reloaded", 10 * self.slow, mark))
        off = self.stamp_offset(m, mark)
        print("+1h: %d echoes on the held connection; the daemon's log is %+.0fs off" %
              (n, off))
        self.assertLess(abs(off - 3600), 30, "the step did not reach the daemon")
        for name, up in (("t1", up1), ("t2", up2), ("t3", up3)):
            self.check_sane(name, up, "+1h")
        self.assertEqual(m.grep(r"restarting|keepalive|state up ->", mark), [])

        # -2 h, to real time - 1 h: t2 stays idle from here until its server stops
        mark = m.mark()
        self.set_offset(-3600)
        n = self.hold(s, 2 * INTERVAL * COUNT, ["t1", "t2", "t3"], mark)
        self.assertEqual(ctl(m, "reload").returncode, 0)
        self.assertIsNotNone(m.wait_for(r"reloaded", 10 * self.slow, mark))
        off = self.stamp_offset(m, mark)
        print("-2h: %d echoes on the held connection; the daemon's log is %+.0fs off" %
              (n, off))
        self.assertLess(abs(off + 3600), 30, "the step did not reach the daemon")
        for name, up in (("t1", up1), ("t2", up2), ("t3", up3)):
            self.check_sane(name, up, "-2h")

        mark = m.mark()
        self.assertTrue(sc2.stop_children(), "no sshd session process to stop")
        self.addCleanup(sc2.cont_children)
        t0 = time.monotonic()
        tr = m.wait_transition("t2", mark, old="up", timeout=bound + 10)
        took = time.monotonic() - t0
        self.assertIsNotNone(tr, "silent server not declared dead within %.0fs" %
                             (bound + 10))
        print("-2h: silent server declared dead after %.3fs (bound %.1fs): %s" %
              (took, bound, tr[4]))
        self.assertIn("keepalive timeout", tr[4])
        self.assertLess(took, bound)
        self.assertGreater(took, INTERVAL * (COUNT - 1) - 0.2)
        self.assertIsNotNone(m.wait_transition("t2", mark, new="up", timeout=10 * self.slow),
                             "t2 not back up after its server was declared dead")
        up2 = time.monotonic()
        self.assertEqual(m.transitions("t1", mark), [])
        self.assertEqual(m.transitions("t3", mark), [])
        self.echo(s, n)

        # the outage was shorter than down_after: no alert, then or later
        time.sleep(down_after + 2 * self.slow)
        self.echo(s, n + 1)
        js, age = self.status(m, "t2")
        print("after: t2 since %s, age %ds; %d webhook requests" %
              (js["since"], age, len(hook.received())))
        self.assertEqual(js["state"], "up")
        self.assertEqual(js["reconnects"], 1)
        self.assertGreaterEqual(age, int(time.monotonic() - up2) - 2)
        self.check_sane("t1", up1, "after")
        self.check_sane("t3", up3, "after")
        self.assertEqual(hook.received(), [], "an alert went out")
        self.assertEqual(m.grep(r"alert hook"), [])


if __name__ == "__main__":
    harness.main()
