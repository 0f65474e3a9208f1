"""Growing channel windows stay within window_budget: 200 connections through one tunnel
over a path with a 40 ms round trip (a userspace relay in front of sshd), whose clients stop
reading while the target keeps pushing. A few of them read fast first, so their windows
grow; the budget must bound what the grown windows make the daemon hold.

The same scenario runs twice: channel_window_max = 0 (windows stay at their first 256K, the
daemon before growing windows) and growing windows under a 16M budget. The daemon's private
memory (Private_Dirty) with growth may exceed the fixed-window run by at most the budget
plus a small constant; status shows the windows grew and that the window granted beyond
256K per channel stays within the budget. When the clients read again, every byte arrives intact
(SHA-256 of what the target sent against what each client received).
"""

import hashlib
import json
import os
import selectors
import socket
import subprocess
import threading
import time

import harness
from harness import tunnel_section
from test_health import DelayRelay

MIB = 1 << 20
CONNS = 200
FAST = 8  # read fast one after the other first: their windows grow
FAST_BYTES = 12 * MIB
FAST_READ = 6 * MIB  # read before they stop too
# More than a window and the kernel buffers in front of a client that reads nothing hold.
SLOW_BYTES = 6 * MIB
BUDGET = 16 * MIB
WINDOW_MAX = 4 * MIB
SLACK = 12 * MIB  # allocator and timing noise between the two runs
BASE = 256 * 1024  # the window a channel is first granted (FORWARD_WINDOW)
# What a channel with a base window may make the daemon hold for a client that reads
# nothing: the window and libssh2's 64K beyond it, twice (libssh2 keeps every packet whole,
# the same allowance the session memory cap makes), and the conn's 64K buffer.
PER_CONN = 2 * (BASE + 64 * 1024) + 64 * 1024

BLOCK = os.urandom(MIB)


class PushServer(harness._Server):
    """"PUSH ID N\\n": sends N bytes (a random block, rotated by ID) and records their
    SHA-256 in `digests[ID]` once sent; `sent` counts bytes handed to the kernel."""

    def __init__(self, *a, **kw):
        self.digests = {}
        self.sent = 0
        self.count_lock = threading.Lock()
        super().__init__(*a, **kw)

    def handle(self, conn):
        line = b""
        while not line.endswith(b"\n"):
            b = conn.recv(1)
            if not b:
                return
            line += b
        _, ident, n = line.split()
        ident, n = int(ident), int(n)
        k = (ident * 4099) % len(BLOCK)
        block = BLOCK[k:] + BLOCK[:k]
        h = hashlib.sha256()
        left = n
        while left > 0:
            chunk = block[:min(left, 256 * 1024)]
            conn.sendall(chunk)
            h.update(chunk)
            left -= len(chunk)
            with self.count_lock:
                self.sent += len(chunk)
        self.digests[ident] = h.hexdigest()
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(65536):
            pass


def ctl_status(m):
    r = subprocess.run([harness.moletun_bin(), "ctl", "-s", m.control_socket, "status",
                        "--json"], stdout=subprocess.PIPE, universal_newlines=True, timeout=15)
    return json.loads(r.stdout)["tunnels"][0]["forwards"][0]


class WindowMemoryTest(harness.TunnelTest):
    def scenario(self, window_max):
        """Runs the scenario; returns (private kB when up, private kB while held,
        the forward's status while held, under ASan)."""
        target = self.server(PushServer)
        sc = self.sidecar(permit_open=[target.addr])
        relay = self.server(DelayRelay, target_port=sc.port)
        relay.delay = 0.020
        lp = harness.free_port()
        kh = self.known_hosts(sc, name="kh_%d" % window_max, port=relay.port)
        m = self.moletun(tunnel_section(
            "t1", sc, local_forward=["127.0.0.1:%d %s" % (lp, target.addr)],
            known_hosts_file=kh, port=str(relay.port), channel_window_max=str(window_max),
            keepalive_interval="2s", max_connections="1024"),
            # the budget is what this test bounds; 200 connections would put the default
            # memory account past the half where windows stop growing
            extra_global="window_budget = %d\nmemory_limit = 1G" % BUDGET)
        self.assertUp(m, timeout=20)
        time.sleep(1.0)  # a keepalive round trip measured
        pid = m.proc.pid
        asan = harness.proc_uses_asan(pid)
        private_up = harness.proc_memory_kb(pid)["Private_Dirty"]

        socks, hashes, got = [], [], []
        for i in range(CONNS):
            # the ones that stall get a small receive buffer: their bytes wait in the
            # daemon, not in the kernel; the fast ones read like an application does
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if i >= FAST:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            s.settimeout(30)
            s.connect(("127.0.0.1", lp))
            s.sendall(b"PUSH %d %d\n" % (i, FAST_BYTES if i < FAST else SLOW_BYTES))
            socks.append(s)
            hashes.append(hashlib.sha256())
            got.append(0)
        # the fast ones, one after the other: alone on the path, their windows are the limit
        peak_window = 0
        for i in range(FAST):
            s = socks[i]
            s.settimeout(60)
            while got[i] < FAST_READ:
                b = s.recv(min(1 << 20, FAST_READ - got[i]))
                self.assertTrue(b, "connection %d closed early" % i)
                hashes[i].update(b)
                got[i] += len(b)
            peak_window = max(peak_window, ctl_status(m)["window_largest_bytes"])
        # nobody reads now: wait until the target cannot push any more
        last, still = -1, 0
        deadline = time.monotonic() + 120
        while still < 3 and time.monotonic() < deadline:
            time.sleep(0.5)
            with target.count_lock:
                now = target.sent
            still = still + 1 if now == last else 0
            last = now
        held = harness.proc_memory_kb(pid)["Private_Dirty"]
        status = ctl_status(m)
        status["peak_window"] = peak_window

        # everyone reads to the end: every byte intact
        sel = selectors.DefaultSelector()
        for i, s in enumerate(socks):
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, i)
        open_left = CONNS
        deadline = time.monotonic() + 300
        while open_left and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=5):
                i = key.data
                try:
                    b = key.fileobj.recv(1 << 20)
                except BlockingIOError:
                    continue
                if not b:
                    sel.unregister(key.fileobj)
                    key.fileobj.close()
                    open_left -= 1
                    continue
                hashes[i].update(b)
                got[i] += len(b)
        self.assertEqual(open_left, 0, "connections still open after 300 s")
        for i in range(CONNS):
            want = FAST_BYTES if i < FAST else SLOW_BYTES
            self.assertEqual(got[i], want, "connection %d: %d of %d bytes" % (i, got[i], want))
            self.assertEqual(hashes[i].hexdigest(), target.digests.get(i),
                             "connection %d: data differs" % i)
        self.assertEqual(len(m.grep(r"session memory|too much unsolicited")), 0)
        left_up = [tr for tr in m.transitions("t1") if tr[2] == "up"]
        self.assertEqual(left_up, [], "the tunnel left up")
        return private_up, held, status, asan

    def test_budget_bounds_held_memory(self):
        fixed_up, fixed_held, fixed_status, asan = self.scenario(0)
        grow_up, grow_held, grow_status, _ = self.scenario(WINDOW_MAX)
        print("private kB: fixed windows up %d held %d (+%d); growing windows up %d held %d "
              "(+%d); budget %d kB; largest window while reading %d, held: largest %d total %d"
              % (fixed_up, fixed_held, fixed_held - fixed_up, grow_up, grow_held,
                 grow_held - grow_up, BUDGET // 1024, grow_status["peak_window"],
                 grow_status["window_largest_bytes"], grow_status["window_total_bytes"]),
              flush=True)
        self.assertEqual(fixed_status["peak_window"], BASE)
        # the fast readers' windows grew (to channel_window_max, or as far as the budget let)
        self.assertGreaterEqual(grow_status["peak_window"], 2 * MIB)
        self.assertLessEqual(grow_status["peak_window"], WINDOW_MAX)
        # window granted beyond the base, summed: within the budget (+64K a channel that
        # libssh2 may grant for one read)
        beyond = grow_status["window_total_bytes"] - CONNS * BASE
        self.assertLessEqual(beyond, BUDGET + CONNS * 64 * 1024)
        if asan:
            print("AddressSanitizer build: its quarantine makes private memory grow by "
                  "design; memory bounds not checked", flush=True)
            return
        self.assertLessEqual((fixed_held - fixed_up) * 1024, CONNS * PER_CONN + SLACK)
        self.assertLessEqual((grow_held - grow_up) * 1024, BUDGET + CONNS * PER_CONN + SLACK)
        extra_kb = (grow_held - grow_up) - (fixed_held - fixed_up)
        self.assertLessEqual(extra_kb * 1024, BUDGET + SLACK,
                             "growing windows held %d kB more than fixed ones (budget %d kB)"
                             % (extra_kb, BUDGET // 1024))


if __name__ == "__main__":
    harness.main()
