"""Local forwards through a real sshd: integrity, concurrency, EOF, refusals."""

import hashlib
import json
import os
import random
import socket
import subprocess
import threading
import time

import harness
from harness import SinkSource, EchoServer, connect, recv_all, recv_exact


class ForwardTest(harness.TunnelTest):
    def setUp(self):
        super().setUp()
        self.echo = self.server(EchoServer)
        self.sink = self.server(SinkSource)
        self.denied = self.server(EchoServer)  # listening, but not in PermitOpen
        self.dead_port = harness.free_port()   # in PermitOpen, nothing listens
        self.sc = self.sidecar(permit_open=[self.echo.addr, self.sink.addr,
                                            "127.0.0.1:%d" % self.dead_port])
        self.p_echo, self.p_sink, self.p_denied, self.p_dead = (
            harness.free_port() for _ in range(4))
        self.m = self.simple_tunnel(self.sc, local_forward=[
            "127.0.0.1:%d %s" % (self.p_echo, self.echo.addr),
            "127.0.0.1:%d %s" % (self.p_sink, self.sink.addr),
            "127.0.0.1:%d %s" % (self.p_denied, self.denied.addr),
            "%d 127.0.0.1:%d" % (self.p_dead, self.dead_port),
        ])
        self.assertUp(self.m)

    def test_upload_integrity(self):
        for _ in range(2):
            n = random.randint(1 << 20, 4 << 20)
            data = os.urandom(n)
            t0 = time.monotonic()
            with connect(self.p_sink, timeout=20) as s:
                s.sendall(b"SINK %d\n" % n)
                s.sendall(data)
                reply = s.recv(128).strip().decode()
            dt = time.monotonic() - t0
            self.assertEqual(reply, hashlib.sha256(data).hexdigest(),
                             "upload of %d bytes corrupted" % n)
            print("upload %d bytes ok in %.3fs" % (n, dt))

    def test_download_integrity(self):
        for _ in range(2):
            n = random.randint(1 << 20, 4 << 20)
            t0 = time.monotonic()
            with connect(self.p_sink, timeout=20) as s:
                s.sendall(b"SOURCE %d\n" % n)
                size, digest = harness.source_header(s)
                self.assertEqual(size, n)
                data = recv_all(s)  # target closes after sending: EOF must arrive
            dt = time.monotonic() - t0
            self.assertEqual(len(data), n, "download truncated or padded")
            self.assertEqual(hashlib.sha256(data).hexdigest(), digest,
                             "download of %d bytes corrupted" % n)
            print("download %d bytes ok in %.3fs" % (n, dt))

    def test_echo_both_ways_at_once(self):
        # The client sends 4 MB while the echo comes back: only works with backpressure
        # in both directions and no deadlock when both windows fill.
        n = 4 << 20
        data = os.urandom(n)
        with connect(self.p_echo, timeout=20) as s:
            err = []

            def send():
                try:
                    s.sendall(data)
                except OSError as e:
                    err.append(e)
            t = threading.Thread(target=send)
            t.start()
            got = recv_exact(s, n)
            t.join(20)
        self.assertFalse(err)
        self.assertEqual(hashlib.sha256(got).digest(), hashlib.sha256(data).digest())

    def test_many_concurrent_connections(self):
        n = 250
        payloads = [os.urandom(random.randint(1000, 20000)) + b"#%d" % i for i in range(n)]
        socks = [connect(self.p_echo, timeout=30) for _ in range(n)]
        barrier = threading.Barrier(n, timeout=60)
        failures = []

        def worker(i):
            s = socks[i]
            try:
                s.sendall(payloads[i])
                got = recv_exact(s, len(payloads[i]))
                if got != payloads[i]:
                    failures.append((i, "mismatch"))
                barrier.wait()  # all n connections are open at this point
                s.setblocking(False)
                try:
                    extra = s.recv(1)
                    failures.append((i, "closed early" if extra == b"" else "extra data"))
                except BlockingIOError:
                    pass
            except Exception as e:
                failures.append((i, repr(e)))
                barrier.abort()
            finally:
                s.close()
        t0 = time.monotonic()
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        dt = time.monotonic() - t0
        self.assertEqual(failures, [], "%d of %d connections failed" % (len(failures), n))
        self.assertEqual(self.echo.errors, [])
        self.assertEqual(self.echo.total, n, "not one target connection per client")
        self.assertGreaterEqual(self.echo.peak_active, n,
                                "target never saw all connections open at once")
        print("%d concurrent connections echoed in %.3fs" % (n, dt))
        self.assertEqual(self.m.state("t1"), "up")

    def test_client_eof_reaches_target_and_reply_comes_back(self):
        body = os.urandom(100000)
        with connect(self.p_sink, timeout=10) as s:
            s.sendall(b"SINKEOF\n" + body)
            s.shutdown(socket.SHUT_WR)
            reply = recv_all(s)  # the target replies only after it saw EOF
        self.assertEqual(reply.decode().split(),
                         [str(len(body)), hashlib.sha256(body).hexdigest()])

    def test_target_close_reaches_client(self):
        with connect(self.p_sink, timeout=5 * harness.slowdown()) as s:
            s.sendall(b"SOURCE 1000\n")
            t0 = time.monotonic()
            data = recv_all(s)  # socket.timeout here means EOF was not propagated
            dt = time.monotonic() - t0
        self.assertEqual(len(data.split(b"\n", 1)[1]), 1000)
        self.assertLess(dt, 3.0 * harness.slowdown())

    def test_target_half_close_client_can_still_send(self):
        with connect(self.p_sink, timeout=5) as s:
            s.sendall(b"HALF\n")
            self.assertEqual(recv_all(s), b"bye\n")  # target's EOF arrived
            s.sendall(b"after your eof\n")  # our direction is still open
            s.shutdown(socket.SHUT_WR)
            ev = self.sink.wait_event("HALF", 5)
        self.assertIsNotNone(ev, "target never saw the client's EOF")
        self.assertEqual(ev[1], b"after your eof\n")

    def test_permit_open_refusal(self):
        mark = self.m.mark()
        closed, dt, got = harness.closed_promptly(self.p_denied, timeout=5)
        self.assertTrue(closed, "refused channel: client connection left open")
        self.assertEqual(got, b"")
        self.assertEqual(self.denied.total, 0, "sshd must not have reached the target")
        line = self.m.wait_for(r"(?i)channel open.*administratively prohibited", 3, mark)
        self.assertIsNotNone(line, "no log line with the server's reason")
        self.assertEqual(self.m.transitions("t1", mark), [], "tunnel changed state")
        self.assertEqual(harness.echo_once(self.p_echo, b"still fine"), b"still fine")

    def test_target_down(self):
        mark = self.m.mark()
        closed, dt, got = harness.closed_promptly(self.p_dead, timeout=5 * harness.slowdown())
        self.assertTrue(closed, "failed channel: client connection left open")
        self.assertLess(dt, 3.0 * harness.slowdown())
        line = self.m.wait_for(r"(?i)channel open.*(connect failed|refused)", 3, mark)
        self.assertIsNotNone(line, "no log line about the failed channel open")
        self.assertEqual(self.m.transitions("t1", mark), [], "tunnel changed state")
        self.assertEqual(harness.echo_once(self.p_echo, b"still fine"), b"still fine")

    def test_many_refusals_do_not_break_tunnel(self):
        # Failed opens go through the same FIFO as good ones: interleave them.
        mark = self.m.mark()
        results = []

        def good(i):
            payload = b"good %d\n" % i
            try:
                results.append(harness.echo_once(self.p_echo, payload, 10) == payload)
            except OSError:
                results.append(False)

        def bad():
            try:
                harness.closed_promptly(self.p_denied, timeout=10)
            except OSError:
                pass
        threads = []
        for i in range(40):
            threads.append(threading.Thread(target=good, args=(i,)))
            threads.append(threading.Thread(target=bad))
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(results.count(True), 40, "some good connections failed")
        self.assertEqual(self.m.transitions("t1", mark), [])


class OpenQueueTest(harness.TunnelTest):
    """Channel opens go one at a time; the clients queued behind one reserve no window."""

    CLIENTS = 100

    def test_queued_clients_reserve_no_window(self):
        # A target whose accept queue is full: the kernel drops further SYNs, so sshd's
        # connect for the first channel open hangs, and every later open waits behind it.
        stuck = socket.socket()
        self.addCleanup(stuck.close)
        stuck.bind(("127.0.0.1", 0))
        stuck.listen(0)
        fillers = []
        for _ in range(2):
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex(stuck.getsockname())
            fillers.append(f)
            self.addCleanup(f.close)
        target = "127.0.0.1:%d" % stuck.getsockname()[1]
        sc = self.sidecar(permit_open=[target])
        port = harness.free_port()
        m = self.simple_tunnel(sc, local_forward=["127.0.0.1:%d %s" % (port, target)],
                               probe_interval="0")
        self.assertUp(m)
        clients = [connect(port, timeout=30) for _ in range(self.CLIENTS)]
        for s in clients:
            self.addCleanup(s.close)
            s.sendall(b"hello\n")
        time.sleep(1.5 * harness.slowdown())
        status = json.loads(subprocess.run(
            [harness.moletun_bin(), "ctl", "-s", m.control_socket, "status", "--json"],
            capture_output=True, text=True, timeout=15).stdout)
        by_kind = status["memory"]["by_kind"]
        print("%d clients queued behind one open: account %s" % (self.CLIENTS, by_kind))
        # the client whose open is in flight holds its first window (256K), no other does
        self.assertLessEqual(by_kind["window"], 256 * 1024)
        # Now the target takes its connections: every queued client is served in turn.
        stuck.listen(128)  # a listening socket takes a new backlog
        stuck.setblocking(False)
        served = 0
        deadline = time.monotonic() + 60 * harness.slowdown()
        pending = list(clients)
        conns = []
        while pending and time.monotonic() < deadline:
            try:
                while True:
                    conns.append(stuck.accept()[0])
            except BlockingIOError:
                pass
            for c in conns:
                try:
                    c.setblocking(False)
                    data = c.recv(64)
                    if data:
                        c.sendall(data)
                except (BlockingIOError, OSError):
                    pass
            for s in list(pending):
                s.setblocking(False)
                try:
                    if s.recv(64) == b"hello\n":
                        served += 1
                        pending.remove(s)
                except BlockingIOError:
                    pass
            time.sleep(0.02)
        for c in conns:
            c.close()
        self.assertEqual(served, self.CLIENTS, "queued clients served")


if __name__ == "__main__":
    harness.main()
