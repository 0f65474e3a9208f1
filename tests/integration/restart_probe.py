"""Clients that keep connecting through a local forward while its daemon restarts.

Prober opens a new connection every `interval` seconds, each in its own thread (so one
waiting in the kernel's backlog does not slow the others down), sends a line and waits for
its echo. Each attempt ends as one of:
  served   the echo came back
  refused  connect() got ECONNREFUSED: nothing listened on the port
  closed   the connection was accepted, then closed (EOF or RST) before the echo
  timeout  no echo within `timeout` seconds
  error    anything else (recorded with its text)
ProcessWatch records when a process is gone (exited or a zombie).
Used by test_systemd_real.py and the restart-gap benchmark.
"""

import errno
import os
import socket
import threading
import time


class Attempt:
    __slots__ = ("start", "end", "outcome", "detail")

    def __init__(self, start):
        self.start = start
        self.end = None
        self.outcome = None
        self.detail = ""

    def __repr__(self):
        return "<%s at %.3f +%.3fs %s>" % (self.outcome, self.start,
                                           (self.end or self.start) - self.start, self.detail)


class Prober:
    def __init__(self, port, host="127.0.0.1", interval=0.02, timeout=20.0):
        self.port = port
        self.host = host
        self.interval = interval
        self.timeout = timeout
        self.attempts = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = []
        self.seq = 0

    def start(self):
        self.spawner = threading.Thread(target=self._spawn, daemon=True)
        self.spawner.start()
        return self

    def _spawn(self):
        next_at = time.monotonic()
        while not self.stopping.is_set():
            a = Attempt(time.monotonic())
            with self.lock:
                self.attempts.append(a)
                self.seq += 1
            t = threading.Thread(target=self._one, args=(a, self.seq), daemon=True)
            t.start()
            self.threads.append(t)
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay > 0:
                self.stopping.wait(delay)
            else:
                next_at = time.monotonic()

    def _one(self, a, seq):
        payload = b"probe %d\n" % seq
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.connect((self.host, self.port))
            s.sendall(payload)
            got = b""
            while len(got) < len(payload):
                b = s.recv(4096)
                if not b:
                    break
                got += b
            if got == payload:
                a.outcome = "served"
            else:
                a.outcome = "closed"
                a.detail = "got %r" % got
        except ConnectionRefusedError:
            a.outcome = "refused"
        except (ConnectionResetError, BrokenPipeError) as e:
            a.outcome = "closed"
            a.detail = repr(e)
        except socket.timeout:
            a.outcome = "timeout"
        except OSError as e:
            a.outcome = "refused" if e.errno == errno.ECONNREFUSED else "error"
            a.detail = repr(e)
        finally:
            a.end = time.monotonic()
            s.close()

    def stop(self):
        self.stopping.set()
        self.spawner.join(5)
        for t in self.threads:
            t.join(self.timeout + 5)
        return self

    def counts(self):
        out = {}
        for a in self.attempts:
            out[a.outcome] = out.get(a.outcome, 0) + 1
        return out

    def served_after(self, t):
        """The first attempt started at or after t that was served, or None."""
        for a in self.attempts:
            if a.start >= t and a.outcome == "served":
                return a
        return None


class ProcessWatch:
    """Polls a pid every 2 ms; `gone` is the monotonic time it was first seen dead."""

    def __init__(self, pid):
        self.pid = pid
        self.gone = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop.is_set():
            if not _alive(self.pid):
                self.gone = time.monotonic()
                return
            time.sleep(0.002)

    def wait(self, timeout):
        self.thread.join(timeout)
        return self.gone

    def stop(self):
        self._stop.set()
        self.thread.join(1)


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rfind(b")") + 2:].split()[0] != b"Z"


def tcp_listener_inode(port, host="127.0.0.1"):
    """The inode of the socket listening on host:port (IPv4) per /proc/net/tcp, or None.
    The same inode before and after a restart means the very same socket was kept."""
    want = "%08X:%04X" % (int.from_bytes(socket.inet_aton(host), "little"), port)
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1] == want and fields[3] == "0A":
                return int(fields[9])
    return None


def unix_listener_inode(path):
    """The inode of a listening unix socket bound to path per /proc/net/unix, or None."""
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            fields = line.split()
            # Num RefCount Protocol Flags Type St Inode Path; flag 00010000 = listening
            if len(fields) >= 8 and fields[7] == path and int(fields[3], 16) & 0x10000:
                return int(fields[6])
    return None
