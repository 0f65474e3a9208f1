"""Dead-peer detection: the sidecar sits in a network namespace behind a veth pair, then
all its traffic is dropped (a real blackhole: no RST, no FIN, nothing).

Needs root, `ip` (iproute2) and `iptables`; otherwise exits 77 (skipped) with the reason.
"""

import os
import shutil
import socket
import subprocess
import time

import harness
from harness import EchoServer, echo_once, wait_echo

PID = os.getpid()
NS = "mtbh%d" % PID
VETH_HOST = "mtva%d" % (PID % 100000)
VETH_NS = "mtvb%d" % (PID % 100000)
SUBNET = 1 + PID % 250
HOST_ADDR = "10.213.%d.1" % SUBNET
NS_ADDR = "10.213.%d.2" % SUBNET

KEEPALIVE_INTERVAL = 1.0
KEEPALIVE_COUNT_MAX = 3
BOUND = KEEPALIVE_INTERVAL * KEEPALIVE_COUNT_MAX + 1.0 + 1.5 * harness.slowdown()  # + margin


def sh(*args, check=True):
    return subprocess.run(list(args), check=check, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True)


def check_prerequisites():
    if os.geteuid() != 0:
        harness.skip_module("blackhole test needs root (network namespaces, iptables)")
    for tool in ("ip", "iptables"):
        if not shutil.which(tool):
            harness.skip_module("blackhole test needs `%s` (apt-get install iproute2 iptables)"
                                % tool)
    probe = "mtprobe%d" % PID
    r = sh("ip", "netns", "add", probe, check=False)
    if r.returncode != 0:
        harness.skip_module("cannot create a network namespace: " + r.stdout.strip())
    try:
        r = sh("ip", "netns", "exec", probe, "iptables", "-L", "INPUT", "-n", check=False)
        if r.returncode != 0:
            harness.skip_module("iptables does not work in a network namespace: "
                                + r.stdout.strip())
    finally:
        sh("ip", "netns", "del", probe, check=False)


def netns_up():
    sh("ip", "netns", "add", NS)
    sh("ip", "link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_NS)
    sh("ip", "link", "set", VETH_NS, "netns", NS)
    sh("ip", "addr", "add", HOST_ADDR + "/30", "dev", VETH_HOST)
    sh("ip", "link", "set", VETH_HOST, "up")
    sh("ip", "netns", "exec", NS, "ip", "addr", "add", NS_ADDR + "/30", "dev", VETH_NS)
    sh("ip", "netns", "exec", NS, "ip", "link", "set", VETH_NS, "up")
    sh("ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up")


def netns_down():
    sh("ip", "netns", "del", NS, check=False)
    sh("ip", "link", "del", VETH_HOST, check=False)  # normally gone with the namespace


def blackhole(on):
    op = "-I" if on else "-D"
    for chain in ("INPUT", "OUTPUT"):
        sh("ip", "netns", "exec", NS, "iptables", op, chain, "-j", "DROP")


class BlackholeTest(harness.TunnelTest):
    def setUp(self):
        super().setUp()
        netns_down()  # leftovers of a crashed run with the same pid
        self.addCleanup(netns_down)
        netns_up()
        self.echo = self.server(EchoServer, host=HOST_ADDR)
        self.sc = self.sidecar(listen=NS_ADDR, wrapper=["ip", "netns", "exec", NS],
                               permit_open=[self.echo.addr])
        self.lp = harness.free_port()
        self.m = self.simple_tunnel(
            self.sc, local_forward=["127.0.0.1:%d %s" % (self.lp, self.echo.addr)],
            keepalive_interval="%dms" % (KEEPALIVE_INTERVAL * 1000),
            keepalive_count_max=str(KEEPALIVE_COUNT_MAX))
        self.assertUp(self.m)
        self.assertEqual(echo_once(self.lp, b"before\n"), b"before\n")

    def test_blackhole_detected(self):
        # An idle but healthy peer must not be declared dead.
        mark = self.m.mark()
        time.sleep(KEEPALIVE_INTERVAL * KEEPALIVE_COUNT_MAX + 2.0)
        self.assertEqual(self.m.transitions("t1", mark), [],
                         "tunnel dropped while idle with a healthy peer")

        client = harness.connect(self.lp, timeout=10)
        self.addCleanup(client.close)
        client.sendall(b"open\n")
        self.assertEqual(client.recv(100), b"open\n")

        mark = self.m.mark()
        t0 = time.monotonic()
        blackhole(True)
        left = self.m.wait_transition("t1", mark, old="up", timeout=BOUND + 5)
        self.assertIsNotNone(left, "tunnel still up %.1fs after the blackhole" % (BOUND + 5))
        detect = left[0] - t0
        print("blackhole detected after %.3fs (keepalive %gs x %d; %s -> %s: %s)" % (
            detect, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT_MAX, left[2], left[3], left[4]))
        self.assertLessEqual(detect, BOUND)

        # The open client's channel died with the session.
        client.settimeout(3 * harness.slowdown())
        try:
            data = client.recv(100)
        except ConnectionResetError:
            data = b""
        except socket.timeout:
            self.fail("client connection still open after the session was declared dead")
        self.assertEqual(data, b"")

        # The way back: traffic flows again, the tunnel reconnects.
        time.sleep(1.0)
        self.assertNotEqual(self.m.state("t1"), "up")
        blackhole(False)
        t1 = time.monotonic()
        dt = wait_echo(self.lp, 8.0)
        self.assertIsNotNone(dt, "not usable again within 8 s after the blackhole ended")
        print("usable again %.3fs after the blackhole ended" % (time.monotonic() - t1))

    def test_usable_soon_after_path_returns(self):
        # The connect that starts after the peer is declared dead sends its SYN into the
        # blackhole; the kernel resends it only after 1 s (every second for the first few
        # on kernels with tcp_syn_linear_timeouts, else 1 s, then 3 s, 7 s...). The resends
        # keep a fixed phase: the peer is declared dead 3 s after the last byte, the connect
        # follows at once. So the path returns at three phases of that grid, and each time
        # the tunnel must be usable within 0.6 s: a connect still waiting gets a fresh
        # attempt beside it every 250 ms. connect_timeout is the default 5 s, so the attempts
        # around the return belong to one round (a round that times out is followed by the
        # backoff wait, which is another matter).
        self.m.stop()
        self.lp = harness.free_port()
        self.m = self.simple_tunnel(
            self.sc, local_forward=["127.0.0.1:%d %s" % (self.lp, self.echo.addr)],
            keepalive_interval="%dms" % (KEEPALIVE_INTERVAL * 1000),
            keepalive_count_max=str(KEEPALIVE_COUNT_MAX), connect_timeout="5s")
        self.assertUp(self.m)
        bound = 0.6 * harness.slowdown()
        usable = []
        for i, length in enumerate((5.15, 5.45, 5.75)):
            self.assertIsNotNone(wait_echo(self.lp, 5.0), "round %d: not usable" % i)
            mark = self.m.mark()
            blackhole(True)
            time.sleep(length)
            self.assertIsNotNone(self.m.wait_transition("t1", mark, old="up", timeout=0.1),
                                 "round %d: still up after %.2f s of blackhole" % (i, length))
            blackhole(False)
            t1 = time.monotonic()
            self.assertIsNotNone(wait_echo(self.lp, 8.0, pause=0.02),
                                 "round %d: not usable within 8 s of the path's return" % i)
            usable.append(time.monotonic() - t1)
        print("after blackholes of 5.15/5.45/5.75 s, usable again %s s after the path "
              "returned (bound %.2f s)" % (", ".join("%.3f" % u for u in usable), bound))
        self.assertLessEqual(max(usable), bound)

if __name__ == "__main__":
    check_prerequisites()
    harness.main()
