"""The deployment moletun exists for, as one test: web nodes whose PostgreSQL replicas stream
WAL through their tunnels and whose application writes through them to the primary behind
a hardened sidecar, run through a schedule of faults.

    netns web1 (LAN)                          netns db
    writer ──> 127.0.0.1:5433 ─┐               sidecar sshd :22 ───> primary PG_ADDR:5432
    replica (slot web1) ───────┴─ moletun ─────> (MaxSessions 0,        (an address of this
      pg_basebackup, then streaming    veth       AllowTcpForwarding     namespace only)
      through the tunnel                          local, PermitOpen
                                                  PG_ADDR:5432 only)
    netns web2: the same, but its path is long: moletun ── veth ──> socat ──> delayrelay
      (60 ms each way) ──> sshd on 127.0.0.1 of netns db

Faults, each followed by recovery: the sidecar killed and restarted; the path dropped
(iptables DROP: a blackhole); moletun SIGKILLed and restarted (as a plain process, after
the unit's RestartSec=1); the primary restarted; the wall clock of web1's moletun stepped
+1 h while the node is idle, then -1 h as its path goes silent (libfaketime); a reload that
rotates both nodes' keys. The run records every acknowledged write, replica replay positions,
`ctl status` samples, the daemons' state lines and the alerts, asserts what
README "What a failure looks like" promises, and writes results.json, summary.txt and
timeline.png (report.py) into the output directory.

    scenario.py --moletun build/moletun --out build/scenario [--keep]

Needs root, iproute2, iptables, socat, cc, OpenSSH's sshd, PostgreSQL 15, libfaketime and
Debian's python3-psycopg2 and python3-matplotlib; tests/scenario/run.sh checks them and
prints SKIP with the reason otherwise.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import harness  # noqa: E402
import jumpnet  # noqa: E402
import psycopg2  # noqa: E402
import report  # noqa: E402
from webhook import WebhookReceiver  # noqa: E402

PG_BIN = "/usr/lib/postgresql/15/bin"
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
PYTHON = "/usr/bin/python3"  # Debian's, with python3-psycopg2

PID = os.getpid()
NS_DB = "mtsc%d-db" % PID
# Interface names: at most 15 characters, unique on the machine while they exist.
SUFFIX = PID % 100000
# The namespaces are joined only to each other, so these addresses meet nothing else.
PG_ADDR = "10.223.0.1"  # the primary's own address, on the db namespace's loopback
TUNNEL = "primary"
LOCAL_PORT = 5433
RELAY_PORT = 2222  # delayrelay on 127.0.0.1 of the db namespace

RATE = 20  # rows a second per writer (the long path allows fewer: one at a time)
LONG_DELAY_MS = 60  # each way: a 120 ms round trip
KEEPALIVE_INTERVAL = 1.0
KEEPALIVE_COUNT_MAX = 3
DOWN_AFTER = 5.0
MIN_SETTLE = 4.0  # seconds after each fault before the next one, at least
MAX_SETTLE = 25.0


def log(msg):
    print("[%7.2f] %s" % (time.monotonic() - T_START, msg), flush=True)


T_START = time.monotonic()


def sh(*args, check=True, timeout=120, input=None):
    r = subprocess.run(list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True, timeout=timeout, input=input)
    if check and r.returncode != 0:
        raise RuntimeError("%s exited %d:\n%s" % (" ".join(args), r.returncode, r.stdout))
    return r


def in_ns(ns):
    return ["ip", "netns", "exec", ns]


def lsn_int(text):
    if text is None:
        return None
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


# ---------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------


class Node:
    """One web node: its namespace, veth pair to the db namespace, and what runs in it."""

    def __init__(self, index, long_path, workdir):
        self.name = "web%d" % index
        self.index = index
        self.ns = "mtsc%d-%s" % (PID, self.name)
        self.veth_node = "mts%c%d" % ("ac"[index - 1], SUFFIX)
        self.veth_db = "mts%c%d" % ("bd"[index - 1], SUFFIX)
        self.addr = "10.22%d.0.1" % index
        self.db_addr = "10.22%d.0.2" % index
        self.long_path = long_path
        self.write_bound = 2.0 if long_path else 1.0
        self.dir = os.path.join(workdir, self.name)
        os.makedirs(self.dir, mode=0o700)
        self.daemon = None
        self.hook = None
        self.replica = None
        self.writer = None
        self.writer_log = os.path.join(self.dir, "writes.log")
        self.keys = []  # identity files, newest last
        self.clock_file = None
        self.kills = []  # times the daemon was SIGKILLed
        self.starts = []


def net_up(nodes):
    sh("ip", "netns", "add", NS_DB)
    sh(*in_ns(NS_DB), "ip", "link", "set", "lo", "up")
    sh(*in_ns(NS_DB), "ip", "addr", "add", PG_ADDR + "/32", "dev", "lo")
    for n in nodes:
        sh("ip", "netns", "add", n.ns)
        sh(*in_ns(n.ns), "ip", "link", "set", "lo", "up")
        sh("ip", "link", "add", n.veth_node, "type", "veth", "peer", "name", n.veth_db)
        sh("ip", "link", "set", n.veth_node, "netns", n.ns)
        sh("ip", "link", "set", n.veth_db, "netns", NS_DB)
        sh(*in_ns(n.ns), "ip", "addr", "add", n.addr + "/30", "dev", n.veth_node)
        sh(*in_ns(n.ns), "ip", "link", "set", n.veth_node, "up")
        sh(*in_ns(NS_DB), "ip", "addr", "add", n.db_addr + "/30", "dev", n.veth_db)
        sh(*in_ns(NS_DB), "ip", "link", "set", n.veth_db, "up")


def net_down(nodes):
    for n in nodes:
        sh("ip", "netns", "del", n.ns, check=False)
        sh("ip", "link", "del", n.veth_node, check=False)  # normally gone with the ns
    sh("ip", "netns", "del", NS_DB, check=False)


def blackhole(nodes, on):
    """Drops every packet between the web nodes and the db host (no RST, no FIN), or stops.
    Only on the veth ends: sshd, the relay and PostgreSQL keep their loopback."""
    op = "-I" if on else "-D"
    for n in nodes:
        sh(*in_ns(NS_DB), "iptables", op, "INPUT", "-i", n.veth_db, "-j", "DROP")
        sh(*in_ns(NS_DB), "iptables", op, "OUTPUT", "-o", n.veth_db, "-j", "DROP")


# ---------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------


class Cluster:
    """A PostgreSQL 15 cluster run as `postgres` inside namespace `ns`; its Unix socket
    (in its own directory) is how this script queries it from outside the namespace."""

    def __init__(self, name, ns, workdir):
        self.name = name
        self.ns = ns
        self.dir = os.path.join(workdir, "pg-" + name)
        os.makedirs(self.dir)
        shutil.chown(self.dir, "postgres", "postgres")
        os.chmod(self.dir, 0o700)
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "postgresql.log")

    def tool(self, name, *args, ns=None, timeout=120, check=True):
        return sh(*in_ns(ns or self.ns), "runuser", "-u", "postgres", "--",
                  os.path.join(PG_BIN, name), *args, timeout=timeout, check=check)

    def append_conf(self, text):
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(text)

    def init_primary(self):
        self.tool("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync")
        self.append_conf(
            "listen_addresses = '%s'\n"
            "port = 5432\n"
            "unix_socket_directories = '%s'\n"
            # a scratch cluster: no crash is simulated, so skip the disk flushes that
            # would only load a shared test machine
            "fsync = off\n"
            "max_wal_senders = 10\n"
            "max_replication_slots = 10\n" % (PG_ADDR, self.dir))
        # Clients arrive from the sidecar, on this host: PG_ADDR is an address of its own.
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\n"
                    "local replication all trust\n"
                    "host all all samehost trust\n"
                    "host replication all samehost trust\n")

    def init_replica(self, slot, node_ns):
        """pg_basebackup through the node's tunnel; then streams through it from `slot`."""
        self.tool("pg_basebackup", "-h", "127.0.0.1", "-p", str(LOCAL_PORT), "-U",
                  "postgres", "-D", self.data, "-X", "stream", "-C", "-S", slot, "-R", "-c",
                  "fast", "--no-sync", ns=node_ns, timeout=300)
        self.append_conf(
            "listen_addresses = ''\n"
            "unix_socket_directories = '%s'\n"
            # PostgreSQL waits this long before it tries the primary again after the
            # stream broke; its default, 5 s, would be most of every outage here
            "wal_retrieve_retry_interval = 200ms\n" % self.dir)

    def start(self):
        self.tool("pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "120", "start")

    def restart(self):
        self.tool("pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "120", "-m", "fast",
                  "restart")

    def stop(self, mode="fast"):
        if not os.path.exists(os.path.join(self.data, "postmaster.pid")):
            return
        r = self.tool("pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "30", "stop",
                      check=False)
        if r.returncode != 0:
            pid = self.postmaster_pid()
            if pid:
                harness.kill_tree(pid)

    def postmaster_pid(self):
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def connect(self, dbname="postgres", timeout=2):
        c = psycopg2.connect(host=self.dir, port=5432, user="postgres", dbname=dbname,
                             connect_timeout=timeout)
        c.autocommit = True
        return c

    def query(self, sql, dbname="postgres", timeout=2):
        c = self.connect(dbname, timeout)
        try:
            with c.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall() if cur.description else None
        finally:
            c.close()


# ---------------------------------------------------------------------------------------
# moletun on a node
# ---------------------------------------------------------------------------------------


class NodeDaemon(harness.Moletun):
    """`moletun run` inside the node's namespace, optionally under libfaketime."""

    def __init__(self, node, binary, faketime_file=None):
        self.node = node
        self.binary = binary
        self.faketime_file = faketime_file
        workdir = os.path.join(node.dir, "moletun")
        os.makedirs(workdir, mode=0o700)
        super().__init__(workdir, [self.sections()])

    def sections(self):
        n = self.node
        host, port = n.db_addr, 22
        return "\n".join([
            "[tunnel:%s]" % TUNNEL,
            "host = %s" % host,
            "port = %d" % port,
            "user = root",
            "identity_file = %s" % n.keys[-1],
            "known_hosts_file = %s" % os.path.join(n.dir, "known_hosts"),
            "local_forward = 127.0.0.1:%d %s:5432" % (LOCAL_PORT, PG_ADDR),
            "keepalive_interval = %ds" % KEEPALIVE_INTERVAL,
            "keepalive_count_max = %d" % KEEPALIVE_COUNT_MAX,
            # a node that must write again within a second of the sidecar coming back
            # (2 s behind the long path, whose handshake alone takes ~0.75 s): the default
            # backoff_max, 1 s, could use all of it waiting
            "backoff_max = 500ms",
            "connect_timeout = 2s",
            # clients that connect while it is down wait for it (served the moment it is
            # up) instead of being closed and trying again later
            "down_hold = 2s",
            "probe = postgres",  # every probe_interval (10 s)
            "",
            "[alert:ops]",
            "url = %s" % n.hook.url("/hook"),
            "format = json",
            "down_after = %ds" % DOWN_AFTER,
            "",
        ])

    def rewrite_config(self):
        text = "[moletun]\ncontrol_socket = %s\nlog_level = info\n\n%s" % (
            self.control_socket, self.sections())
        with open(self.config_path, "w") as f:
            f.write(text)

    def start(self, env=None, nofile=None):
        os.makedirs(self.dir, exist_ok=True)
        cmd = in_ns(self.node.ns) + ["env"]
        if self.faketime_file:
            # A sanitizer build wants its runtime first; its clock_gettime interceptor then
            # calls libfaketime's (the other way round, the step never arrives).
            preload = sanitizer_runtimes(self.binary) + [FAKETIME_LIB]
            cmd += ["LD_PRELOAD=" + " ".join(preload),
                    "FAKETIME_TIMESTAMP_FILE=" + self.faketime_file, "FAKETIME_NO_CACHE=1",
                    "DONT_FAKE_MONOTONIC=1"]
        cmd += [self.binary, "run", "-c", self.config_path]
        e = dict(os.environ)
        e.pop("JOURNAL_STREAM", None)
        e.pop("NOTIFY_SOCKET", None)
        self.exit_time = None
        self.start_time = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=e, start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.node.starts.append(self.start_time)
        return self

    def sigkill(self):
        t = time.monotonic()
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.reader.join(5)
        self.node.kills.append(t)
        return t

    def ctl(self, *args, timeout=30):
        return sh(self.binary, "ctl", "-s", self.control_socket, *args, check=False,
                  timeout=timeout)


def sanitizer_runtimes(binary):
    """Paths of the ASan/UBSan runtimes the binary links ([] for a plain build)."""
    out = sh("ldd", binary, check=False).stdout
    return re.findall(r"=> (\S*lib[at]san\.so[.\d]*) ", out)


def wall_clock_offset(node):
    """How far the node's moletun's wall clock is from ours, in seconds: asks for a test
    alert and reads its timestamp (the daemon's CLOCK_REALTIME)."""
    mark = len(node.hook.received())
    t = time.time()
    r = node.daemon.ctl("alert-test")
    got = node.hook.received()[mark:]
    if r.returncode != 0 or not got:
        return None
    stamp = got[-1].json()["timestamp"]
    when = datetime.datetime.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")
    return when.replace(tzinfo=datetime.timezone.utc).timestamp() - t


class NoAnswer(Exception):
    """The daemon took longer than the timeout to answer (a loaded machine): no sample."""


def control_status(path, timeout=1.0):
    """The daemon's `status --json` through its control socket, or None (no daemon
    listening); raises NoAnswer when the answer does not come in time."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(b"status --json\n")
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    except socket.timeout:
        raise NoAnswer()
    except OSError:
        return None
    finally:
        s.close()
    head, _, body = b"".join(chunks).partition(b"\n")
    if not head.startswith(b"ok"):
        return None
    try:
        return json.loads(body.decode())
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------


class Sampler:
    """Background threads: `ctl status` of each node every 200 ms, replay positions of the
    replicas and the primary's WAL position every 100 ms."""

    def __init__(self, nodes, primary):
        self.nodes = nodes
        self.primary = primary
        self.status = {n.name: [] for n in nodes}
        self.replica = {n.name: [] for n in nodes}
        self.primary_lsn = []
        self.no_answer = 0
        self.stop_ev = threading.Event()
        self.threads = [threading.Thread(target=self._status_loop, daemon=True),
                        threading.Thread(target=self._pg_loop, daemon=True)]

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(10)

    def _status_loop(self):
        while not self.stop_ev.wait(0.2):
            for n in self.nodes:
                t = time.monotonic()
                try:
                    st = control_status(n.daemon.control_socket)
                except NoAnswer:
                    self.no_answer += 1
                    continue
                rec = None
                if st and st.get("tunnels"):
                    tu = st["tunnels"][0]
                    fw = (tu.get("forwards") or [{}])[0]
                    rec = {"state": tu.get("state"), "health": tu.get("health"),
                           "rtt_ms": tu.get("rtt_ms"), "rtt_last_ms": tu.get("rtt_last_ms"),
                           "probe_rtt_ms": fw.get("probe_rtt_ms"),
                           "target_state": fw.get("target_state"),
                           "reconnects": tu.get("reconnects")}
                self.status[n.name].append((t, rec))

    def _pg_loop(self):
        conns = {}

        def q(key, cluster, sql):
            try:
                if key not in conns:
                    conns[key] = cluster.connect(timeout=1)
                with conns[key].cursor() as cur:
                    cur.execute(sql)
                    return cur.fetchone()
            except psycopg2.Error:
                c = conns.pop(key, None)
                if c is not None:
                    try:
                        c.close()
                    except psycopg2.Error:
                        pass
                return None

        while not self.stop_ev.wait(0.1):
            t = time.monotonic()
            row = q("primary", self.primary, "SELECT pg_current_wal_lsn()::text")
            if row:
                self.primary_lsn.append((t, lsn_int(row[0])))
            for n in self.nodes:
                t = time.monotonic()
                row = q(n.name, n.replica, "SELECT pg_last_wal_replay_lsn()::text, "
                        "pg_last_wal_receive_lsn()::text")
                if row:
                    self.replica[n.name].append((t, lsn_int(row[0]), lsn_int(row[1])))
        for c in conns.values():
            c.close()


# ---------------------------------------------------------------------------------------
# The scenario
# ---------------------------------------------------------------------------------------


class Scenario:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="moletun-scenario-")
        os.chmod(self.tmp, 0o755)  # postgres must traverse it to its own directories
        self.nodes = [Node(1, False, self.tmp), Node(2, True, self.tmp)]
        # A sanitizer build runs slower: its time bounds are scaled as the integration
        # tests' are, and the summary says so. The plain build (tests/run.sh) is held to the
        # bounds themselves.
        os.environ["MOLETUN_BIN"] = args.moletun
        self.scale = float(harness.slowdown())
        for n in self.nodes:
            n.write_bound *= self.scale
        self.procs = []  # (name, Popen) of helpers: relay, socat, writers
        self.primary = None
        self.sidecar = None
        self.sampler = None
        self.faults = []
        self.checks = []  # (ok, text)
        self.t0 = None

    # -- set-up ---------------------------------------------------------------------

    def spawn(self, name, cmd, log_path):
        f = open(log_path, "ab")
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                             start_new_session=True)
        f.close()
        self.procs.append((name, p))
        return p

    def setup(self):
        net_down(self.nodes)  # leftovers of a crashed run with the same pid
        net_up(self.nodes)
        log("namespaces %s, %s up" % (NS_DB, ", ".join(n.ns for n in self.nodes)))

        self.primary = Cluster("primary", NS_DB, self.tmp)
        self.primary.init_primary()
        self.primary.start()
        self.primary.query("CREATE DATABASE app")
        self.primary.query("CREATE TABLE rows (node text NOT NULL, seq integer NOT NULL, "
                           "at timestamptz NOT NULL DEFAULT clock_timestamp())", "app")
        log("primary up on %s:5432 in %s" % (PG_ADDR, NS_DB))

        self.start_sidecar()
        self.start_long_path()
        for n in self.nodes:
            n.hook = jumpnet.in_netns(n.ns, WebhookReceiver)
            n.keys.append(harness.keygen(os.path.join(n.dir, "id_%s_1" % n.name),
                                         comment="moletun@" + n.name))
            self.sidecar.write_known_hosts(os.path.join(n.dir, "known_hosts"),
                                           host=n.db_addr, port=22)
        self.write_authorized_keys()
        for n in self.nodes:
            if n.index == 1:
                n.clock_file = os.path.join(n.dir, "faketime")
                with open(n.clock_file, "w") as f:
                    f.write("+0\n")
            n.daemon = NodeDaemon(n, self.args.moletun, n.clock_file)
            n.daemon.start()
        for n in self.nodes:
            if not n.daemon.wait_state(TUNNEL, "up", 30):
                raise RuntimeError("%s: tunnel not up:\n%s" % (n.name, n.daemon.log_text()))
        log("moletun up on both nodes")

        for n in self.nodes:
            n.replica = Cluster("replica-" + n.name, n.ns, self.tmp)
            t = time.monotonic()
            n.replica.init_replica(n.name, n.ns)
            n.replica.start()
            log("%s: replica from pg_basebackup through its tunnel in %.1fs, streaming" % (
                n.name, time.monotonic() - t))
        for n in self.nodes:
            n.writer = self.spawn("writer-" + n.name, in_ns(n.ns) + [
                PYTHON, os.path.join(HERE, "writer.py"), n.name, str(LOCAL_PORT), str(RATE),
                n.writer_log], os.path.join(n.dir, "writer.err"))
        self.sampler = Sampler(self.nodes, self.primary)
        self.sampler.start()
        for n in self.nodes:
            if not self.wait_for(lambda n=n: self.acks_after(n, 0), 30):
                raise RuntimeError("%s: the writer wrote nothing in 30 s" % n.name)
        log("writers committing; schedule starts")

    def start_sidecar(self):
        """The hardened, tunnel-only sshd of the db host (as the sidecar kit configures it)."""
        extra = "\n".join([
            "ListenAddress 127.0.0.1",  # for the long path's relay
            "MaxSessions 0",
            "ClientAliveInterval 5",
            "ClientAliveCountMax 3",
        ])
        self.sidecar = harness.Sidecar(self.tmp, permit_open=["%s:5432" % PG_ADDR],
                                       allow_tcp_forwarding="local", listen=self.nodes[0].db_addr,
                                       port=22, wrapper=in_ns(NS_DB), extra_config=extra)
        self.sidecar.start()

    def write_authorized_keys(self, keep_old=True):
        """One key per node, limited to the primary as SECURITY.md recommends."""
        lines = []
        for n in self.nodes:
            for k in (n.keys if keep_old else n.keys[-1:]):
                lines.append('restrict,port-forwarding,permitopen="%s:5432" %s %s\n' % (
                    PG_ADDR, harness.read_pubkey(k + ".pub"), os.path.basename(k)))
        with open(self.sidecar.authorized_keys, "w") as f:
            f.write("".join(lines))

    def start_long_path(self):
        """web2's path: socat on its db-side address hands each connection to the delay
        relay (60 ms each way), which connects to sshd on the db host's loopback. The relay
        only connects on loopback, where its blocking connect cannot hang."""
        relay = os.path.join(self.tmp, "delayrelay")
        sh("cc", "-O2", "-o", relay, os.path.join(HERE, "..", "bench", "delayrelay.c"))
        p = self.spawn("delayrelay", in_ns(NS_DB) + [relay, str(RELAY_PORT), "22",
                                                     str(LONG_DELAY_MS)],
                       os.path.join(self.tmp, "delayrelay.log"))
        n = self.nodes[1]
        self.spawn("socat", in_ns(NS_DB) + [
            "socat", "TCP-LISTEN:22,bind=%s,reuseaddr,fork,nodelay" % n.db_addr,
            "TCP:127.0.0.1:%d,nodelay" % RELAY_PORT], os.path.join(self.tmp, "socat.log"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if p.poll() is not None:
                raise RuntimeError("delayrelay exited")
            if jumpnet.reachable(n.db_addr, 22, ns=n.ns) and \
                    jumpnet.reachable("127.0.0.1", RELAY_PORT, ns=NS_DB):
                return
            time.sleep(0.05)
        raise RuntimeError("long path not reachable")

    # -- helpers ----------------------------------------------------------------------

    def wait_for(self, pred, timeout, step=0.05):
        deadline = time.monotonic() + timeout
        while True:
            v = pred()
            if v or time.monotonic() > deadline:
                return v
            time.sleep(step)

    def writes(self, n):
        return report.parse_writes(n.writer_log)

    def acks_after(self, n, t):
        return [w for w in self.writes(n)["acks"] if w[2] >= t]

    def tunnel_status(self, n):
        try:
            st = control_status(n.daemon.control_socket, timeout=5.0)
        except NoAnswer:
            return None
        return st and st["tunnels"][0]

    def replay_lsn(self, n):
        try:
            row = n.replica.query("SELECT pg_last_wal_replay_lsn()::text", timeout=1)
            return lsn_int(row[0][0])
        except psycopg2.Error:
            return None

    def primary_lsn(self, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            try:
                return lsn_int(self.primary.query("SELECT pg_current_wal_lsn()::text")[0][0])
            except psycopg2.Error:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    # -- the schedule -------------------------------------------------------------------

    def fault(self, key, label, nodes, action, **expect):
        """Runs action() (which returns once the fault has ended), then waits for recovery:
        both writers writing, both replicas at the primary's position at the fault's end,
        both tunnels up and ok; at least MIN_SETTLE, at most MAX_SETTLE.

        expect (lists of node names; report.py checks them): down (the tunnel must leave
        `up`), detect_bound (... within this many seconds of the start), stay_up (no state
        change at all), quiet (the writer's connection held: no error, no new connection),
        killed (status shows no daemon), restarted (a reload restarted the tunnel)."""
        log("fault %s: %s" % (key, label))
        f = {"key": key, "label": label, "nodes": [n.name for n in nodes], "expect": expect}
        f["start"] = time.monotonic()
        extra = action(f) or {}
        f["end"] = extra.pop("end", None) or time.monotonic()
        f.update(extra)
        f["lsn_end"] = self.primary_lsn()
        f["catchup"] = {}
        self.faults.append(f)
        log("fault %s ended after %.2fs" % (key, f["end"] - f["start"]))
        deadline = f["end"] + MAX_SETTLE
        pending = {n.name: n for n in self.nodes}
        while time.monotonic() < deadline:
            for name, n in list(pending.items()):
                lsn = self.replay_lsn(n)
                if lsn is not None and lsn >= f["lsn_end"]:
                    f["catchup"][name] = time.monotonic()
                    del pending[name]
            done = not pending and all(self.acks_after(n, f["end"]) for n in self.nodes)
            if done:
                for n in self.nodes:
                    tu = self.tunnel_status(n)
                    if not tu or tu["state"] != "up" or tu["health"] != "ok":
                        done = False
            if done and time.monotonic() >= f["end"] + MIN_SETTLE:
                break
            time.sleep(0.02 if pending else 0.1)
        f["settled"] = time.monotonic()
        f["recovered_status"] = {}
        for n in self.nodes:
            tu = self.tunnel_status(n)
            f["recovered_status"][n.name] = bool(tu and tu["state"] == "up" and
                                                 tu["health"] == "ok")

    def kill_sidecar(self, f):
        self.sidecar.kill()
        time.sleep(7.0)
        self.sidecar.restart()

    def drop_path(self, f):
        blackhole(self.nodes, True)
        time.sleep(10.0)
        blackhole(self.nodes, False)

    def kill_moletun(self, f):
        for n in self.nodes:
            n.daemon.sigkill()
        time.sleep(1.0)  # the unit's RestartSec=1
        for n in self.nodes:
            n.daemon.start()

    def restart_primary(self, f):
        self.primary.restart()

    def set_clock(self, n, offset):
        """Steps the wall clock of n's moletun (libfaketime reads the file at every call)."""
        with open(n.clock_file + ".new", "w") as fh:
            fh.write("%+d\n" % offset)
        os.rename(n.clock_file + ".new", n.clock_file)

    def check_clock(self, n, offset):
        """The step reached the daemon (a test alert carries its wall clock): without it
        the clock faults would pass for nothing."""
        got = wall_clock_offset(n)
        self.checks.append((got is not None and abs(got - offset) < 60,
                            "%s: moletun's wall clock is %s s from the real one (set: %+d s)"
                            % (n.name, "?" if got is None else "%+.0f" % got, offset)))

    def pause_writers(self, on):
        for n in self.nodes:
            if on:
                open(n.writer_log + ".pause", "w").close()
            else:
                os.unlink(n.writer_log + ".pause")

    def clock_forward(self, f):
        """+1 h on an idle node (writers paused with their connections held, so the WAL
        stream is quiet too): with traffic flowing, every byte received would be stamped in
        the new frame before liveness is judged, and hide the step."""
        self.pause_writers(True)
        f["idle"] = [time.monotonic()]
        time.sleep(2.0)
        f["step"] = time.monotonic()
        self.set_clock(self.nodes[0], 3600)
        time.sleep(KEEPALIVE_INTERVAL * KEEPALIVE_COUNT_MAX + 1.0)
        self.check_clock(self.nodes[0], 3600)
        self.pause_writers(False)
        f["idle"].append(time.monotonic())

    def clock_back_and_drop(self, f):
        """-1 h on the idle node, and at the same moment its path goes silent: the dead
        peer must still be found within keepalive_interval x keepalive_count_max."""
        n = self.nodes[0]
        self.pause_writers(True)
        f["idle"] = [time.monotonic()]
        time.sleep(2.0)
        blackhole([n], True)
        f["step"] = f["drop"] = time.monotonic()
        self.set_clock(n, 0)
        time.sleep(5.0)
        blackhole([n], False)
        self.check_clock(n, 0)
        self.pause_writers(False)
        f["idle"].append(time.monotonic())

    def rotate_keys(self, f):
        marks = {}
        for n in self.nodes:
            path = os.path.join(n.dir, "id_%s_%d" % (n.name, len(n.keys) + 1))
            n.keys.append(harness.keygen(path, comment="moletun@" + n.name))
        self.write_authorized_keys(keep_old=True)
        for n in self.nodes:
            marks[n.name] = n.daemon.mark()
            n.daemon.rewrite_config()
        f["sshd_mark"] = self.sidecar.log_size()
        # web1 as `systemctl reload` does it, web2 through the control socket
        os.kill(self.nodes[0].daemon.proc.pid, signal.SIGHUP)
        r = self.nodes[1].daemon.ctl("reload")
        if r.returncode != 0:
            self.checks.append((False, "web2: `moletun ctl reload` exited %d: %s" % (
                r.returncode, r.stdout.strip())))
        for n in self.nodes:
            if not n.daemon.wait_for(r"reload", 5, since=marks[n.name]):
                self.checks.append((False, "%s: no reload logged" % n.name))
        return {"end": time.monotonic()}

    def after_rotation(self):
        """The old keys are gone from the sidecar; the sessions used the new ones."""
        f = self.faults[-1]
        self.write_authorized_keys(keep_old=False)
        text = self.sidecar.log_text(since=f["sshd_mark"])
        for n in self.nodes:
            fp = sh("ssh-keygen", "-l", "-f", n.keys[-1] + ".pub").stdout.split()[1]
            ok = fp in text
            self.checks.append((ok, "%s: the sidecar accepted the rotated key %s after the "
                                    "reload" % (n.name, fp)))

    def run(self):
        self.setup()
        self.t0 = time.monotonic()
        time.sleep(3.0)  # a calm start on the time line
        both = [n.name for n in self.nodes]
        detect = KEEPALIVE_INTERVAL * KEEPALIVE_COUNT_MAX + 1.5 * self.scale  # + scheduling
        self.fault("sidecar", "sidecar sshd killed, restarted after 7 s", self.nodes,
                   self.kill_sidecar, down=both)
        self.fault("blackhole", "path dropped (iptables DROP) for 10 s", self.nodes,
                   self.drop_path, down=both, detect_bound=detect)
        self.fault("sigkill", "moletun SIGKILLed, restarted after 1 s", self.nodes,
                   self.kill_moletun, killed=both)
        self.fault("pgrestart", "primary restarted (pg_ctl restart -m fast)", self.nodes,
                   self.restart_primary, stay_up=both)
        self.fault("clock_fwd", "web1's wall clock +1 h (writers idle)", self.nodes[:1],
                   self.clock_forward, stay_up=both, quiet=both)
        self.fault("clock_back", "web1's wall clock -1 h, its path dropped 5 s",
                   self.nodes[:1], self.clock_back_and_drop, down=both[:1],
                   detect_bound=detect, stay_up=both[1:])
        self.fault("rotate", "keys rotated, reload (SIGHUP / ctl reload)", self.nodes,
                   self.rotate_keys, restarted=both)
        self.after_rotation()
        time.sleep(2.0)
        self.finish()

    # -- the end --------------------------------------------------------------------------

    def finish(self):
        for name, p in self.procs:
            if name.startswith("writer-"):
                p.send_signal(signal.SIGTERM)
        for name, p in self.procs:
            if name.startswith("writer-"):
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    harness.kill_tree(p.pid)
        end_lsn = self.primary_lsn()
        caught = {}
        for n in self.nodes:
            ok = self.wait_for(lambda n=n: (self.replay_lsn(n) or 0) >= end_lsn, 30)
            caught[n.name] = bool(ok)
        self.t_end = time.monotonic()
        self.sampler.stop()
        # a clean exit also runs the shutdown path (and, in a sanitizer build, LeakSanitizer)
        for n in self.nodes:
            rc, dt = n.daemon.stop(timeout=30)
            self.checks.append((rc == 0 and dt < 3.0, "%s: moletun exited %s %.1fs after "
                                                      "SIGTERM" % (n.name, rc, dt)))
        rows = {"primary": self.row_counts(self.primary)}
        for n in self.nodes:
            rows[n.name] = self.row_counts(n.replica)
        self.results = self.collect(rows, caught)

    def row_counts(self, cluster):
        return [[node, seq, cnt] for node, seq, cnt in cluster.query(
            "SELECT node, seq, count(*) FROM rows GROUP BY node, seq", "app", timeout=5)]

    def collect(self, rows, caught):
        nodes = {}
        for n in self.nodes:
            d = n.daemon
            lines = [(t, l) for t, l in d.lines]
            nodes[n.name] = {
                "long_path": n.long_path,
                "write_bound": n.write_bound,
                "writes": self.writes(n),
                "status": self.sampler.status[n.name],
                "replica": self.sampler.replica[n.name],
                "log": lines,
                "kills": n.kills,
                "starts": n.starts,
                "alerts": [(r.time, r.json()) for r in n.hook.received()],
                "replica_caught_up_at_end": caught[n.name],
                "sanitizer": d.sanitizer_reports(),
            }
        return {
            "t0": self.t0,
            "t_end": self.t_end,
            "params": {"rate": RATE, "long_delay_ms": LONG_DELAY_MS,
                       "keepalive_interval": KEEPALIVE_INTERVAL,
                       "keepalive_count_max": KEEPALIVE_COUNT_MAX, "down_after": DOWN_AFTER,
                       "catchup_bound": 2.0 * self.scale, "scale": self.scale,
                       "moletun": self.args.moletun},
            "nodes": nodes,
            "primary_lsn": self.sampler.primary_lsn,
            "faults": self.faults,
            "rows": rows,
            "status_no_answer": self.sampler.no_answer,
            "checks": list(self.checks),
        }

    def save_logs(self, out):
        d = os.path.join(out, "logs")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        pairs = [(self.sidecar and self.sidecar.log_path, "sshd.log"),
                 (self.primary and self.primary.log, "primary.log"),
                 (os.path.join(self.tmp, "socat.log"), "socat.log"),
                 (os.path.join(self.tmp, "delayrelay.log"), "delayrelay.log")]
        for n in self.nodes:
            pairs += [(n.daemon and n.daemon.log_path, "moletun-%s.log" % n.name),
                      (n.replica and n.replica.log, "replica-%s.log" % n.name),
                      (n.writer_log, "writes-%s.log" % n.name),
                      (os.path.join(n.dir, "writer.err"), "writer-%s.err" % n.name)]
        for src, name in pairs:
            if src and os.path.exists(src):
                shutil.copy(src, os.path.join(d, name))

    def cleanup(self):
        """Stops everything this run started, whatever state it is in; each step on its
        own, so one that fails leaves the others to run."""
        steps = []
        if self.sampler:
            steps.append(self.sampler.stop)
        for name, p in self.procs:
            steps.append(lambda p=p: stop_process(p))
        for n in self.nodes:
            if n.daemon:
                steps.append(n.daemon.cleanup)
        for c in [n.replica for n in self.nodes] + [self.primary]:
            if c:
                steps.append(lambda c=c: c.stop("immediate"))
        steps.append(harness.cleanup_everything)  # sshd, webhook receivers
        steps.append(lambda: net_down(self.nodes))
        for step in steps:
            try:
                step()
            except Exception as e:
                print("cleanup: %r" % e, flush=True)
        for n in self.nodes:
            if n.daemon and n.daemon.needed_kill:
                self.checks.append((False, "%s: moletun did not exit within 3 s of SIGTERM"
                                    % n.name))
        if self.args.keep:
            print("kept %s" % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def stop_process(p):
    if p.poll() is None:
        harness.kill_tree(p.pid)
        p.wait(5)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moletun", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()
    args.moletun = os.path.abspath(args.moletun)
    os.makedirs(args.out, exist_ok=True)

    def on_term(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)

    # also SIGINT: a shell starts background jobs with it ignored, and Python then leaves it so
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_term)
    sc = Scenario(args)
    failed, interrupted = True, None
    try:
        sc.run()
        path = os.path.join(args.out, "results.json")
        with open(path, "w") as f:
            json.dump(sc.results, f)
        failed = report.main([path, args.out], announce=False) != 0
    except KeyboardInterrupt as e:
        interrupted = e
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # cleanup runs to its end
            signal.signal(sig, signal.SIG_IGN)
        try:
            sc.save_logs(args.out)
        except Exception as e:  # the logs are a help, not the result
            print("saving logs failed: %r" % e)
        sc.cleanup()
        print("logs: %s" % os.path.join(args.out, "logs"))
    png = os.path.join(args.out, "timeline.png")
    if os.path.exists(png) and not interrupted:
        print("summary: %s" % os.path.join(args.out, "summary.txt"))
        print("timeline: %s" % png)
    if interrupted:
        print("interrupted (%s): stopped and removed everything it had started" % interrupted)
        return 130
    # what cleanup found (a daemon that would not stop)
    late = [t for ok, t in sc.checks[len(sc.results["checks"]):] if not ok]
    for t in late:
        print("FAIL: " + t)
    return 1 if failed or late else 0


if __name__ == "__main__":
    sys.exit(main())
