"""Resource limits: max_connections per forward, running out of file descriptors, and 50
sidecar restarts in which no memory, heap block or descriptor is left behind.

Bounded control connections (500 idle control clients neither lock `ctl` out nor slow the
tunnel) are tested in test_control_plane.py, test_hostile_control_clients, and in
test_control_eviction.py.
"""

import json
import re
import select
import socket
import subprocess
import time

import harness
from harness import EchoServer, closed_promptly, connect, echo_once, wait_echo


def valgrind_leak_summary(pid):
    """{"definitely": bytes, "indirectly": ..., "possibly": ..., "reachable": ...} of a
    daemon running under valgrind, asked now through its gdbserver (vgdb)."""
    out = subprocess.run(["vgdb", "--pid=%d" % pid, "leak_check", "summary"],
                         capture_output=True, text=True, timeout=60).stdout
    summary = {}
    for kind, key in (("definitely lost", "definitely"), ("indirectly lost", "indirectly"),
                      ("possibly lost", "possibly"), ("still reachable", "reachable")):
        m = re.search(kind + r": ([\d,]+)", out)
        if not m:
            raise AssertionError("no '%s' in vgdb output:\n%s" % (kind, out))
        summary[key] = int(m.group(1).replace(",", ""))
    return summary


def collect(socks, payload, timeout, want=None):
    """Waits up to timeout for payload to arrive on each socket (or until `want` of them
    got it); returns the set of sockets that received it in full."""
    got = {s: b"" for s in socks}
    done = set()
    deadline = time.monotonic() + timeout
    want = len(socks) if want is None else want
    while len(done) < len(socks) and sum(1 for s in done if got[s] == payload) < want:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        readable, _, _ = select.select([s for s in socks if s not in done], [], [], left)
        for s in readable:
            try:
                b = s.recv(4096)
            except OSError:
                b = b""
            if not b:
                got[s] = None  # closed
                done.add(s)
                continue
            got[s] += b
            if len(got[s]) >= len(payload):
                done.add(s)
    return {s for s in socks if got[s] == payload}


def echo_all(socks, payload, timeout, want=None):
    """Sends payload on every socket; returns the set of those that echoed it in time."""
    for s in socks:
        s.sendall(payload)
    return collect(socks, payload, timeout, want)


def tunnel_status(m, name="t1"):
    r = harness.run([harness.moletun_bin(), "ctl", "-s", m.control_socket, "status",
                     "--json"], check=False)
    doc = json.loads(r.stdout)
    return next(t for t in doc["tunnels"] if t["name"] == name)


class LimitsTest(harness.TunnelTest):
    def setUp(self):
        super().setUp()
        self.echo = self.server(EchoServer)
        self.lp = harness.free_port()

    def start(self, nofile=None, **keys):
        self.sc = self.sidecar(permit_open=[self.echo.addr])
        kh = self.known_hosts(self.sc)
        self.m = self.moletun(harness.tunnel_section(
            "t1", self.sc, known_hosts_file=kh,
            local_forward=["127.0.0.1:%d %s" % (self.lp, self.echo.addr)], **keys),
            start=False)
        self.m.start(nofile=nofile)
        self.assertUp(self.m, timeout=20)
        self.assertEqual(echo_once(self.lp, b"hello\n"), b"hello\n")
        self.wait_idle()
        return self.m

    def wait_idle(self, timeout=5.0):
        """Waits until no client is counted on the forward: a client that closed stays
        counted until its channel has closed too."""
        deadline = time.monotonic() + timeout * harness.slowdown()
        while tunnel_status(self.m)["forwards"][0]["active"] != 0:
            self.assertLess(time.monotonic(), deadline, "clients still counted as active")
            time.sleep(0.05)

    def test_max_connections(self):
        m = self.start(max_connections="4")
        clients = [connect(self.lp) for _ in range(4)]
        self.addCleanup(lambda: [c.close() for c in clients])
        self.assertEqual(len(echo_all(clients, b"in\n", 5)), 4)

        # Over the limit: closed at once, nothing queued; the others keep working.
        mark = m.mark()
        for _ in range(3):
            closed, dt, got = closed_promptly(self.lp, timeout=3 * harness.slowdown())
            self.assertTrue(closed, "client over max_connections was not closed")
            self.assertEqual(got, b"")
            self.assertLess(dt, 1.0 * harness.slowdown())
        deadline = time.monotonic() + 3 * harness.slowdown()
        while len(m.grep(r"max_connections \(4\) reached", mark)) < 3:
            self.assertLess(time.monotonic(), deadline, "not every rejection logged")
            time.sleep(0.02)
        self.assertEqual(len(echo_all(clients, b"still\n", 5)), 4)
        self.assertEqual(m.transitions("t1", mark), [])

        # A freed slot is usable again.
        clients.pop().close()
        self.assertIsNotNone(wait_echo(self.lp, 5.0), "no client served after one left")
        print("3 clients over max_connections = 4 closed at once; the 4 others kept "
              "echoing")

    def assert_rejected(self, m, tunnel, listen_port, max_connections, down):
        """The forward's rejection counters, by reason, in `status --json` and metrics."""
        forward = tunnel_status(m, tunnel)["forwards"][0]
        self.assertEqual(forward["rejected"], max_connections + down, forward)
        self.assertEqual(forward["rejected_by_reason"],
                         {"max_connections": max_connections, "down": down, "memory": 0},
                         forward)
        r = harness.run([harness.moletun_bin(), "ctl", "-s", m.control_socket, "metrics"],
                        check=False)
        self.assertIn("# TYPE moletun_forward_rejected_total counter\n", r.stdout)
        for reason, n in (("max_connections", max_connections), ("down", down)):
            self.assertRegex(r.stdout, r'(?m)^moletun_forward_rejected_total\{tunnel="%s",'
                             r'type="local",forward="127\.0\.0\.1:%d",reason="%s"\} %d$' % (
                                 tunnel, listen_port, reason, n))

    def test_rejections_are_counted(self):
        m = self.start(max_connections="1")
        keep = connect(self.lp)
        self.addCleanup(keep.close)
        self.assertEqual(len(echo_all([keep], b"in\n", 5)), 1)
        for _ in range(3):
            self.assertTrue(closed_promptly(self.lp, timeout=3)[0])
        self.assert_rejected(m, "t1", self.lp, max_connections=3, down=0)

    def test_rejections_while_down_are_counted(self):
        """Both ways a client is turned away because the tunnel is not up count as
        reason "down": closed at once (down_hold 0, t1), and held until down_hold ran out
        (t2)."""
        lp2 = harness.free_port()
        self.sc = self.sidecar(permit_open=[self.echo.addr])
        kh = self.known_hosts(self.sc)
        self.m = m = self.moletun([harness.tunnel_section(
            name, self.sc, known_hosts_file=kh, down_hold=hold,
            local_forward=["127.0.0.1:%d %s" % (port, self.echo.addr)])
            for name, port, hold in (("t1", self.lp, "0"), ("t2", lp2, "300ms"))])
        self.assertUp(m, "t1", timeout=20)
        self.assertUp(m, "t2", timeout=20)
        self.assertEqual(echo_once(self.lp, b"up\n"), b"up\n")
        mark = m.mark()
        self.sc.kill()
        for name in ("t1", "t2"):
            self.assertIsNotNone(m.wait_transition(name, mark, old="up", timeout=5))
        for _ in range(2):
            closed, dt, got = closed_promptly(self.lp, timeout=3)
            self.assertTrue(closed and got == b"", "client not closed while down")
        closed, dt, got = closed_promptly(lp2, timeout=5)
        self.assertTrue(closed and got == b"", "held client not closed")
        print("held client closed after %.3fs (down_hold 300ms)" % dt)
        self.assertGreater(dt, 0.25, "closed before down_hold ran out")
        self.assert_rejected(m, "t1", self.lp, max_connections=0, down=2)
        self.assert_rejected(m, "t2", lp2, max_connections=0, down=1)

    def test_remote_max_connections(self):
        """The sidecar's remote listener is capped like a local one: each channel it opens
        beyond max_connections is closed and counted, never connected to the target."""
        rport = harness.free_port()
        sc = self.sidecar(permit_open=[self.echo.addr],
                          permit_listen=["127.0.0.1:%d" % rport])
        m = self.moletun(harness.tunnel_section(
            "t1", sc, known_hosts_file=self.known_hosts(sc), max_connections="3",
            remote_forward=["127.0.0.1:%d %s" % (rport, self.echo.addr)]))
        self.assertUp(m, timeout=20)
        self.assertIsNotNone(wait_echo(rport, 5.0), "remote forward not working")
        deadline = time.monotonic() + 5 * harness.slowdown()
        while self.echo.active:
            self.assertLess(time.monotonic(), deadline, "probe connection still open")
            time.sleep(0.05)

        clients = [connect(rport) for _ in range(3)]
        self.addCleanup(lambda: [c.close() for c in clients])
        self.assertEqual(len(echo_all(clients, b"in\n", 5)), 3)
        # One at a time: a burst would also meet libssh2's own queue of 16 unaccepted
        # channels, which refuses the rest before moletun sees (and counts) them.
        for _ in range(20):
            with connect(rport) as c:
                c.sendall(b"over\n")
                # sshd closes each client whose channel moletun closed.
                self.assertEqual(collect([c], b"over\n", 3), set())
        self.assertLessEqual(self.echo.peak_active, 3)
        self.assertEqual(len(echo_all(clients, b"still\n", 5)), 3)
        forward = tunnel_status(m)["forwards"][0]
        self.assertEqual(forward["active"], 3, forward)
        self.assertEqual(forward["rejected_by_reason"]["max_connections"], 20, forward)
        print("20 remote clients over max_connections = 3: none reached the target "
              "(peak %d there)" % self.echo.peak_active)

    def exhaust_descriptors(self):
        """Starts moletun under `ulimit -n 64` and opens 100 clients: those accepted are
        served, the rest wait in the listen backlog. Returns (served, waiting, fds at
        rest, log mark)."""
        if harness.under_wrapper():
            self.skipTest("valgrind keeps descriptors of its own and its CPU time is not "
                          "moletun's")
        harness.raise_fd_limit()
        m = self.start(nofile=64)
        base_fds = harness.proc_fd_count(m.proc.pid)
        mark = m.mark()
        self.clients = [connect(self.lp) for _ in range(100)]
        self.addCleanup(lambda: [c.close() for c in self.clients])
        served = echo_all(self.clients, b"x\n", 2 * harness.slowdown())
        waiting = [c for c in self.clients if c not in served]
        print("ulimit -n 64: %d descriptors at rest, %d of 100 clients served, %d waiting"
              % (base_fds, len(served), len(waiting)))
        self.assertGreater(len(served), 20)
        self.assertGreater(len(waiting), 0, "never ran out of descriptors")
        self.assertTrue(m.grep(r"accept: Too many open files", mark))
        return served, waiting, base_fds, mark

    def assert_no_spin(self, what, seconds=3.0):
        meter = harness.CpuMeter(self.m.proc.pid).start()
        time.sleep(seconds)
        meter.stop()
        print("%s: %s; %d log lines so far" % (what, meter, len(self.m.lines)))
        self.assertLess(meter.share, 0.20, "daemon spins: %s" % what)

    # Guards a fixed bug: the accept pause restarted its timer without ev_timer_set(), and
    # a libev one-shot timer that already fired restarts with its remaining time (~0), so
    # every pause after the first lasted 0 ms: the daemon spun and logged "accept: Too many
    # open files; pausing accepts for 100ms" ~200,000 times a second.
    def test_fd_exhaustion(self):
        served, waiting, base_fds, mark = self.exhaust_descriptors()
        m, pid = self.m, self.m.proc.pid

        # No busy loop while out of descriptors, and the tunnel stays up.
        self.assert_no_spin("out of descriptors for 3 s (forward listener)")
        print("%d 'accept: Too many open files' lines" % len(
            m.grep(r"accept: Too many open files", mark)))
        self.assertEqual(m.transitions("t1", mark), [])
        self.assertEqual(len(echo_all(list(served), b"again\n", 5)), len(served))

        # Freed descriptors take clients from the backlog; their bytes were waiting.
        for c in list(served)[:10]:
            self.clients.remove(c)
            c.close()
        now_served = collect(waiting, b"x\n", 5, want=10)
        print("%d waiting clients served after 10 others left" % len(now_served))
        self.assertGreaterEqual(len(now_served), 5)

        # Everyone leaves: the tunnel serves again and no descriptor is left behind.
        for c in self.clients:
            c.close()
        self.clients.clear()
        self.assertIsNotNone(wait_echo(self.lp, 5.0), "not serving once clients left")
        deadline = time.monotonic() + 5 * harness.slowdown()
        while harness.proc_fd_count(pid) > base_fds and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(harness.proc_fd_count(pid), base_fds)
        self.assertEqual(m.state("t1"), "up")

    # BUG (reported to the lead): control.c accept_cb restarts s->accept_retry without
    # ev_timer_set(), the same libev pitfall as test_fd_exhaustion: after the first 1 s
    # pause the control socket's accept is retried in a busy loop. Remove expectedFailure
    # once src/control/control.c sets the timer before starting it.
    def test_fd_exhaustion_control_socket(self):
        if harness.under_wrapper():
            self.skipTest("valgrind keeps descriptors of its own and its CPU time is not "
                          "moletun's")
        harness.raise_fd_limit()
        m = self.start(nofile=64)
        pid = m.proc.pid
        # Exactly as many clients as descriptors are left, each served: nothing waits on
        # the forward's listener, so only the control socket meets EMFILE.
        clients = []
        self.addCleanup(lambda: [c.close() for c in clients])
        while harness.proc_fd_count(pid) < 64:
            c = connect(self.lp)
            clients.append(c)
            self.assertEqual(len(echo_all([c], b"x\n", 5)), 1,
                             "client %d not served" % len(clients))
        mark = m.mark()
        ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(ctl.close)
        ctl.settimeout(10)
        ctl.connect(m.control_socket)
        ctl.sendall(b"status t1\n")
        self.assertTrue(m.wait_for(r"control: accept: Too many open files", 3, mark))
        print("%d clients hold every descriptor; a control client waits" % len(clients))
        self.assert_no_spin("out of descriptors for 3 s (control socket)")
        self.assertFalse(m.grep(r"tunnel t1: accept: Too many open files", mark))
        # Once descriptors are free again the waiting control client gets its answer.
        for c in clients:
            c.close()
        clients.clear()
        reply = ctl.recv(4096)
        self.assertTrue(reply.startswith(b"ok "), reply)
        self.assertEqual(m.state("t1"), "up")

    def test_reconnect_loop_leaves_nothing_behind(self):
        """50 sidecar restarts with traffic in each: descriptors back to where they were,
        and no memory growth between restart 20 and restart 50 (exact heap numbers under
        valgrind, private memory otherwise; ASan builds check leaks at exit). Restart 20,
        not 1: OpenSSL's per-thread error queue, which libssh2 fills at each
        authentication and never clears, is a ring of 16 entries that fills up first."""
        m = self.start(backoff_initial="20ms", backoff_max="100ms")
        pid = m.proc.pid
        samples = {}
        t0 = time.monotonic()
        for i in range(1, 51):
            mark = m.mark()
            self.sc.kill()
            self.assertIsNotNone(m.wait_transition("t1", mark, old="up", timeout=5),
                                 "restart %d: tunnel never left up" % i)
            self.sc.restart()
            self.assertIsNotNone(wait_echo(self.lp, 10.0), "restart %d: not usable" % i)
            if i in (20, 50):
                time.sleep(0.2)  # let closed channels be freed
                sample = {"fds": harness.proc_fd_count(pid)}
                sample.update(harness.proc_memory_kb(pid))
                if harness.under_wrapper():
                    sample.update(valgrind_leak_summary(pid))
                samples[i] = sample
        elapsed = time.monotonic() - t0
        first, last = samples[20], samples[50]
        print("50 restarts in %.1fs; after restart 20 / 50: fds %d / %d, Private_Dirty "
              "%d / %d kB" % (elapsed, first["fds"], last["fds"], first["Private_Dirty"],
                              last["Private_Dirty"]))
        self.assertEqual(last["fds"], first["fds"])
        self.assertEqual(tunnel_status(m)["reconnects"], 50)
        if harness.under_wrapper():
            print("valgrind heap after restart 20 / 50: %s / %s" % (
                {k: first[k] for k in ("definitely", "indirectly", "reachable")},
                {k: last[k] for k in ("definitely", "indirectly", "reachable")}))
            self.assertEqual(last["definitely"] + last["indirectly"],
                             first["definitely"] + first["indirectly"],
                             "lost heap blocks grew with reconnects")
            self.assertLess(last["reachable"] - first["reachable"], 1024,
                            "reachable heap grew with reconnects")
        elif not harness.proc_uses_asan(pid):  # ASan: LeakSanitizer checks at exit
            self.assertLess(last["Private_Dirty"] - first["Private_Dirty"], 256,
                            "private memory grew with reconnects")


if __name__ == "__main__":
    harness.main()
