"""A bastion path for proxy_jump tests and benchmarks (python3 standard library only).

Three network namespaces' worth of addresses, two of them new:

  root (moletun, ssh)  ROOT_ADDR ----veth---- BASTION_ADDR  netns NS_BASTION
                                               (bastion sshd listens here)
                                          BASTION_INNER ----veth---- SIDE_ADDR  netns NS_SIDE
                                                                     (sidecar sshd listens
                                                                      here; its targets on
                                                                      127.0.0.1 of NS_SIDE)

The root namespace has no route to SIDE_NET and NS_BASTION does not forward (ip_forward is
set to 0 in it), so the only way from moletun to the sidecar is an SSH channel opened by
the bastion sshd. Needs root, iproute2 and iptables; check_prerequisites() exits 77 with the
reason otherwise.
"""

import ctypes
import os
import shutil
import socket
import subprocess
import threading

import harness

PID = os.getpid()
SUBNET = 1 + PID % 250
NS_BASTION = "mtjb%d" % PID
NS_SIDE = "mtjs%d" % PID
# Interface names: at most 15 characters, unique on the machine while they are created.
VETH_ROOT = "mtjr%d" % (PID % 100000)
VETH_BASTION = "mtjb%d" % (PID % 100000)
VETH_BASTION_INNER = "mtjc%d" % (PID % 100000)
VETH_SIDE = "mtjs%d" % (PID % 100000)
ROOT_ADDR = "10.216.%d.1" % SUBNET
BASTION_ADDR = "10.216.%d.2" % SUBNET
BASTION_INNER = "10.217.%d.1" % SUBNET
SIDE_ADDR = "10.217.%d.2" % SUBNET
SIDE_NET = "10.217.%d.0/30" % SUBNET

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def sh(*args, check=True):
    return subprocess.run(list(args), check=check, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True)


def netns_exec(ns):
    """Command prefix that runs a program inside `ns` (for Sidecar's wrapper)."""
    return ["ip", "netns", "exec", ns]


def check_prerequisites(what="proxy_jump test"):
    if os.geteuid() != 0:
        harness.skip_module("%s needs root (network namespaces, veth, iptables)" % what)
    for tool in ("ip", "iptables"):
        if not shutil.which(tool):
            harness.skip_module("%s needs `%s` (apt-get install iproute2 iptables)" % (
                what, tool))
    probe = "mtjprobe%d" % PID
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


def up():
    """Creates both namespaces and veth pairs (call down() first to clear leftovers)."""
    sh("ip", "netns", "add", NS_BASTION)
    sh("ip", "netns", "add", NS_SIDE)
    sh("ip", "link", "add", VETH_ROOT, "type", "veth", "peer", "name", VETH_BASTION)
    sh("ip", "link", "set", VETH_BASTION, "netns", NS_BASTION)
    sh("ip", "link", "add", VETH_BASTION_INNER, "type", "veth", "peer", "name", VETH_SIDE)
    sh("ip", "link", "set", VETH_BASTION_INNER, "netns", NS_BASTION)
    sh("ip", "link", "set", VETH_SIDE, "netns", NS_SIDE)
    sh("ip", "addr", "add", ROOT_ADDR + "/30", "dev", VETH_ROOT)
    sh("ip", "link", "set", VETH_ROOT, "up")
    b = netns_exec(NS_BASTION)
    sh(*b, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
    sh(*b, "ip", "addr", "add", BASTION_ADDR + "/30", "dev", VETH_BASTION)
    sh(*b, "ip", "addr", "add", BASTION_INNER + "/30", "dev", VETH_BASTION_INNER)
    for dev in ("lo", VETH_BASTION, VETH_BASTION_INNER):
        sh(*b, "ip", "link", "set", dev, "up")
    s = netns_exec(NS_SIDE)
    sh(*s, "ip", "addr", "add", SIDE_ADDR + "/30", "dev", VETH_SIDE)
    for dev in ("lo", VETH_SIDE):
        sh(*s, "ip", "link", "set", dev, "up")


def down():
    sh("ip", "netns", "del", NS_SIDE, check=False)
    sh("ip", "netns", "del", NS_BASTION, check=False)
    sh("ip", "link", "del", VETH_ROOT, check=False)  # normally gone with the namespace


def blackhole(ns, on):
    """Drops every packet in and out of `ns` (no RST, no FIN), or stops doing so."""
    op = "-I" if on else "-D"
    for chain in ("INPUT", "OUTPUT"):
        sh(*netns_exec(ns), "iptables", op, chain, "-j", "DROP")


def in_netns(ns, fn):
    """Runs fn() on a thread that entered `ns` and returns its result. Sockets keep the
    namespace they were created in, so a server or client made here works from any
    thread afterwards (the harness servers' accept threads start from this thread)."""
    out = {}

    def run():
        fd = os.open("/var/run/netns/" + ns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, "setns(%s): %s" % (ns, os.strerror(err)))
            out["value"] = fn()
        except BaseException as e:  # handed to the caller
            out["error"] = e
        finally:
            os.close(fd)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def reachable(host, port, ns=None, timeout=1.0):
    """True when a TCP connection to host:port opens from `ns` (None: this namespace)."""
    def attempt():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:
            return False
    return in_netns(ns, attempt) if ns else attempt()
