#!/usr/bin/env python3
"""moletun's benchmark (issue 6): moletun side by side with `ssh -N -L` and autossh.

Run it through tests/bench/run.sh (installs packages, builds moletun, then runs this as root):

    bash tests/bench/run.sh [--quick]

Directly: MOLETUN_BIN=build-bench/moletun python3 tests/bench/bench.py [--quick] [--only 1,3]

Everything runs on this machine: a real OpenSSH sshd sidecar on loopback (the integration
harness's, tests/integration/harness.py), a C target server (tcpbench.c, compiled here into
the temp dir), a throwaway PostgreSQL cluster for pgbench, and for the blackhole item a
network namespace with its own veth pair. Every figure for moletun and for ssh -L comes from
the same run. Output: progress lines, one `BENCH name=... tool=... value=... unit=...` line
per figure as it is measured, and the table at the end. No pass/fail: exit 0 unless the
bench itself could not run.

Tools (columns):
  direct       the client talks to the target with no tunnel (the floor / the ceiling)
  moletun      one `moletun run` process (defaults unless the item says otherwise)
  ssh_aes128   ssh -N -L -o Ciphers=aes128-ctr -o MACs=hmac-sha2-256 (libssh2 1.10's best)
  ssh_default  ssh -N -L with OpenSSH's default cipher (chacha20-poly1305 here)
  autossh      AUTOSSH_GATETIME=0 autossh -M 0 ... (reconnect and footprint items)
The ratio column is moletun / ssh_aes128 (or / autossh where there is no ssh -L figure).
"""

import argparse
import datetime
import os
import random
import re
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import harness  # noqa: E402
from harness import Sidecar, kill_tree, descendants, free_port, tunnel_section  # noqa: E402

PG_BIN = "/usr/lib/postgresql/15/bin"
MIB = 1 << 20

FULL = dict(reps=3, up_bytes=1024 * MIB, par_bytes=1024 * MIB, ping_count=5000, ping_warmup=200,
            conn_count=500, burst=200, hold=1000, idle_window=10.0, outages=(1, 3, 8, 30), pg_secs=10,
            pg_scale=10)
QUICK = dict(reps=1, up_bytes=64 * MIB, par_bytes=64 * MIB, ping_count=1000, ping_warmup=50,
             conn_count=100, burst=100, hold=200, idle_window=3.0, outages=(1,), pg_secs=3, pg_scale=1)

TOOL_LABEL = {
    "direct": "direct",
    "moletun": "moletun",
    "ssh_aes128": "ssh -L aes128",
    "ssh_default": "ssh -L default",
    "autossh": "autossh+ssh",
}
COLUMNS = ["direct", "moletun", "ssh_aes128", "ssh_default", "autossh"]

# ---------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------


class Results:
    def __init__(self):
        self.rows = {}  # name -> dict(unit, better, values{tool: value}, section)
        self.order = []
        self.notes = []   # free text shown under the table
        self.errors = []  # what looks like a bug or a failed measurement

    def add(self, section, name, unit, tool, value, better="higher"):
        if name not in self.rows:
            self.rows[name] = dict(unit=unit, better=better, values={}, section=section)
            self.order.append(name)
        self.rows[name]["values"][tool] = value
        shown = "ERR" if value is None else fmt(value)
        print("BENCH name=%s tool=%s value=%s unit=%s" % (name, tool, shown, unit), flush=True)

    def note(self, text):
        self.notes.append(text)
        print("NOTE " + text, flush=True)

    def error(self, text):
        self.errors.append(text)
        print("ERROR " + text, flush=True)

    def ratio(self, name):
        row = self.rows[name]
        v = row["values"]
        m = v.get("moletun")
        ref = v.get("ssh_aes128")
        if ref is None:
            ref = v.get("autossh")
        if m is None or ref is None or ref == 0:
            return None
        return m / ref

    def table(self):
        head = ["figure", "unit"] + [TOOL_LABEL[c] for c in COLUMNS] + ["ratio", "better"]
        lines = []
        section = None
        body = []
        for name in self.order:
            row = self.rows[name]
            if row["section"] != section:
                section = row["section"]
                body.append(None)
                body.append(["[%s]" % section] + [""] * (len(head) - 1))
            cells = [name, row["unit"]]
            for c in COLUMNS:
                if c in row["values"]:
                    val = row["values"][c]
                    cells.append("ERR" if val is None else fmt(val))
                else:
                    cells.append("-")
            r = self.ratio(name)
            cells.append("-" if r is None else "%.2fx" % r)
            cells.append(row["better"] or "")
            body.append(cells)
        widths = [len(h) for h in head]
        for cells in body:
            if cells:
                for i, c in enumerate(cells):
                    if not (i == 0 and c.startswith("[")):
                        widths[i] = max(widths[i], len(c))

        def line(cells):
            out = []
            for i, c in enumerate(cells):
                out.append(c.ljust(widths[i]) if i < 2 else c.rjust(widths[i]))
            return "  ".join(out).rstrip()

        lines.append(line(head))
        lines.append("-" * len(lines[0]))
        for cells in body:
            if cells is None:
                continue
            if cells[0].startswith("["):
                lines.append(cells[0])
            else:
                lines.append(line(cells))
        return "\n".join(lines)


def fmt(v):
    if isinstance(v, int):
        return str(v)
    a = abs(v)
    if a >= 1000:
        return "%.0f" % v
    if a >= 100:
        return "%.1f" % v
    if a >= 1:
        return "%.2f" % v
    return "%.3f" % v


R = Results()

# ---------------------------------------------------------------------------------------
# processes and measurements
# ---------------------------------------------------------------------------------------

_procs = []
_cleanups = []


def spawn(cmd, log_path, env=None):
    e = dict(os.environ)
    if env:
        e.update(env)
    log = open(log_path, "ab")
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=e,
                         start_new_session=True)
    log.close()
    p.log_path = log_path
    _procs.append(p)
    return p


def stop_proc(p):
    if p.poll() is None:
        kill_tree(p.pid)
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        pass
    if p in _procs:
        _procs.remove(p)


def tree(pid):
    return [pid] + descendants(pid)


def smaps(pids):
    """Sums of Rss, Pss and Private_Dirty (kB) over pids."""
    tot = {"Rss": 0, "Pss": 0, "Private_Dirty": 0}
    for pid in pids:
        try:
            with open("/proc/%d/smaps_rollup" % pid) as f:
                for l in f:
                    k, _, rest = l.partition(":")
                    if k in tot:
                        tot[k] += int(rest.split()[0])
        except OSError:
            pass
    return tot


def ctx_switches(pids):
    """voluntary + nonvoluntary context switches, summed over every thread of pids."""
    n = 0
    for pid in pids:
        try:
            tids = os.listdir("/proc/%d/task" % pid)
        except OSError:
            continue
        for tid in tids:
            try:
                with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                    for l in f:
                        if l.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                            n += int(l.split()[1])
            except OSError:
                pass
    return n


CLK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids):
    t = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid, "rb") as f:
                data = f.read()
            rest = data[data.rfind(b")") + 2:].split()
            t += int(rest[11]) + int(rest[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return t / CLK


def echo_rt(port, host="127.0.0.1", timeout=1.0, payload=b"ping"):
    """One round trip through `port` to a tcpbench target in echo mode; True on success."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(b"E" + payload)
            got = b""
            while len(got) < len(payload):
                b = s.recv(4096)
                if not b:
                    return False
                got += b
            return got == payload
    except OSError:
        return False


def wait_usable(port, timeout, pause=0.02, host="127.0.0.1"):
    """Seconds until an echo round trip through port succeeds (polled every `pause`), or None."""
    t0 = time.monotonic()
    while True:
        if echo_rt(port, host=host):
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            return None
        time.sleep(pause)


TB = None  # path of the compiled tcpbench


def tb(args, timeout=600):
    """Runs tcpbench; returns the list of numbers after OK, or (None, error text)."""
    try:
        r = subprocess.run([TB] + [str(a) for a in args], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, universal_newlines=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "tcpbench %s timed out after %ds" % (" ".join(map(str, args)), timeout)
    out = r.stdout.strip().splitlines()
    last = out[-1] if out else "(no output, exit %d)" % r.returncode
    if last.startswith("OK "):
        return last.split()[1:], None
    return None, last


def start_target(workdir, host="127.0.0.1"):
    port = free_port("127.0.0.1") if host.startswith("127.") else free_port("127.0.0.1")
    p = spawn([TB, "serve", host, str(port)], os.path.join(workdir, "target-%d.log" % port))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            with open(p.log_path) as f:
                if "ready" in f.read():
                    return p, port
        except OSError:
            pass
        if p.poll() is not None:
            break
        time.sleep(0.02)
    raise RuntimeError("target server did not start on %s:%d" % (host, port))


# ---------------------------------------------------------------------------------------
# tunnels
# ---------------------------------------------------------------------------------------


def ssh_args(sidecar, known_hosts, aes128=True):
    """The options every ssh -N peer runs with (after "ssh"): the sidecar's key and
    known_hosts only, batch mode, no multiplexing; aes128-ctr + hmac-sha2-256 (the pair
    libssh2 1.10 negotiates) unless aes128 is false. Forwards and the destination follow."""
    args = ["-N", "-F", "/dev/null", "-p", str(sidecar.port), "-i", sidecar.user_key,
            "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "BatchMode=yes",
            "-o", "UserKnownHostsFile=" + known_hosts, "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes", "-o", "ExitOnForwardFailure=yes",
            "-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "LogLevel=ERROR"]
    if aes128:
        args += ["-o", "Ciphers=aes128-ctr", "-o", "MACs=hmac-sha2-256"]
    return args


class SshTunnel:
    """ssh -N -L (or autossh -M 0 around it) with one or more forwards."""

    def __init__(self, ctx, sidecar, forwards, tool="ssh_aes128", extra=(), autossh=False,
                 name="ssh"):
        self.tool = tool
        self.forwards = forwards  # [(local port, "host:port")]
        kh = sidecar.write_known_hosts(os.path.join(ctx.tmp, "known_hosts_%s" % name))
        args = ssh_args(sidecar, kh,
                        aes128=tool == "ssh_aes128" or (autossh and tool == "autossh"))
        for lp, tgt in forwards:
            args += ["-L", "127.0.0.1:%d:%s" % (lp, tgt)]
        args += list(extra)
        args.append("%s@%s" % (sidecar.user, sidecar.listen))
        log = os.path.join(ctx.tmp, "%s.log" % name)
        if autossh:
            self.proc = spawn(["autossh", "-M", "0"] + args, log,
                              env={"AUTOSSH_GATETIME": "0", "AUTOSSH_PATH": shutil.which("ssh"),
                                   "AUTOSSH_LOGFILE": log + ".autossh"})
        else:
            self.proc = spawn(["ssh"] + args, log)
        self.log = log

    def pids(self):
        return tree(self.proc.pid) if self.proc.poll() is None else []

    def wait_up(self, timeout=20):
        for lp, _ in self.forwards[:1]:
            if wait_usable(lp, timeout) is None:
                raise RuntimeError("%s tunnel not usable within %ds; log: %s" % (
                    self.tool, timeout, open(self.log, errors="replace").read()[-1500:]))
        return self

    def stop(self):
        stop_proc(self.proc)


class MoletunTunnels:
    """One `moletun run` process with the given tunnels: [(name, sidecar, [(lp, tgt)], keys)]."""

    def __init__(self, ctx, tunnels, name="moletun", expect_drops=False, log_level="info"):
        self.expect_drops = expect_drops
        workdir = tempfile.mkdtemp(prefix=name + "-", dir=ctx.tmp)
        sections = []
        self.ports = []
        self.names = []
        for tname, sc, fwds, keys in tunnels:
            kh = sc.write_known_hosts(os.path.join(workdir, "known_hosts_" + tname))
            k = {"max_connections": "4096"}
            k.update(keys)
            sections.append(tunnel_section(
                tname, sc, local_forward=["127.0.0.1:%d %s" % (lp, t) for lp, t in fwds],
                known_hosts_file=kh, defaults=False, **k))
            self.ports += [lp for lp, _ in fwds]
            self.names.append(tname)
        self.m = harness.Moletun(workdir, sections, log_level=log_level)
        self.m.start()
        self.name = name

    @property
    def proc(self):
        return self.m.proc

    def pids(self):
        return tree(self.m.proc.pid) if self.m.running() else []

    def wait_up(self, timeout=20):
        for t in self.names:
            if self.m.wait_state(t, "up", timeout) is None:
                raise RuntimeError("moletun tunnel %s not up within %ds; log tail:\n%s" % (
                    t, timeout, self.m.log_text()[-2000:]))
        return self

    def problems(self):
        """Log lines at warning level or worse other than state transitions (moletun's own
        words for what went wrong), and the transitions away from "up"."""
        out, drops = [], []
        for _, l in self.m.lines:
            if harness.TRANSITION_RE.search(l):
                m = harness.TRANSITION_RE.search(l)
                if m.group(2) == "up":
                    drops.append(l)
            elif re.search(r"\b(warn|warning|err|error|crit|alert|emerg)\b", l, re.I) or \
                    harness.SANITIZER_RE.search(l):
                out.append(l)
        return out, drops

    def stop(self):
        probs, drops = self.problems()
        if probs:
            R.error("moletun (%s) logged %d warning/error lines, first: %s" % (
                self.name, len(probs), " | ".join(probs[:3])))
        if drops and not self.expect_drops:
            R.error("moletun (%s): a tunnel left state up during the run: %s" % (
                self.name, " | ".join(drops[:3])))
        rc, dt = self.m.stop(timeout=10)
        if rc is None:
            R.error("moletun (%s) did not exit within 10 s of SIGTERM" % self.name)
        elif rc != 0:
            R.error("moletun (%s) exited with %s after SIGTERM" % (self.name, rc))
        self.m.cleanup()


# ---------------------------------------------------------------------------------------
# the items
# ---------------------------------------------------------------------------------------


class Ctx:
    pass


def item_cipher_probe(ctx):
    """Which cipher/MAC each client negotiates (sshd at LogLevel DEBUG1 tells)."""
    sc = Sidecar(ctx.tmp, permit_open=[ctx.target_addr])
    with open(sc.config_path) as f:
        text = f.read()
    with open(sc.config_path, "w") as f:
        f.write(text.replace("LogLevel VERBOSE", "LogLevel DEBUG1"))
    sc.start()
    try:
        found = {}
        for tool in ("moletun", "ssh_aes128", "ssh_default"):
            mark = sc.log_size()
            lp = free_port()
            if tool == "moletun":
                t = MoletunTunnels(ctx, [("probe", sc, [(lp, ctx.target_addr)], {})], "probe")
            else:
                t = SshTunnel(ctx, sc, [(lp, ctx.target_addr)], tool=tool, name="probe-" + tool)
            try:
                t.wait_up()
                m = re.search(r"kex: client->server cipher: (\S+) MAC: (\S+)", sc.log_text(mark))
                found[tool] = "%s / %s" % (m.group(1), m.group(2)) if m else "?"
            finally:
                t.stop()
        ctx.ciphers = found
        R.note("negotiated cipher / MAC: " + "; ".join("%s: %s" % (k, v) for k, v in found.items()))
    finally:
        sc.cleanup()


def _medians(vals):
    ok = [v for v in vals if v is not None]
    return statistics.median(ok) if ok else None


def item_throughput(ctx):
    P = ctx.P
    for conns, nbytes, label in ((1, P["up_bytes"], "1conn"), (8, P["par_bytes"], "8conn")):
        print("== throughput, %d connection(s), %d MiB per transfer, %d rep(s)" % (
            conns, nbytes // MIB, P["reps"]), flush=True)
        for direction in ("up", "down"):
            vals = {t: [] for t in ctx.main_tools}
            cpu = {t: [] for t in ctx.main_tools}
            for rep in range(P["reps"]):
                order = ctx.main_tools[rep % len(ctx.main_tools):] + \
                    ctx.main_tools[:rep % len(ctx.main_tools)]
                for tool in order:
                    port = ctx.ports[tool]
                    pids = ctx.tunnel_pids(tool)
                    c0 = cpu_seconds(pids)
                    res, err = tb([direction, port, nbytes, conns, 20], timeout=300)
                    c1 = cpu_seconds(pids)
                    if err:
                        R.error("throughput %s %s %s rep %d: %s" % (label, direction, tool, rep + 1, err))
                        vals[tool].append(None)
                        if tool in ("moletun",) and not ctx.main[tool].m.running():
                            R.error("moletun died during the transfer; log tail: " +
                                    ctx.main[tool].m.log_text()[-800:])
                        continue
                    vals[tool].append(float(res[0]))
                    if pids:
                        cpu[tool].append((c1 - c0) / (nbytes / 1e9))
                    print("   %s %s %s rep %d: %s MB/s" % (label, direction, tool, rep + 1, res[0]),
                          flush=True)
            name = "throughput_%s_%s" % (label, direction)
            for tool in ctx.main_tools:
                R.add("throughput (median of %d)" % P["reps"], name, "MB/s", tool,
                      _medians(vals[tool]))
            for tool in ctx.main_tools:
                if tool != "direct":
                    R.add("throughput (median of %d)" % P["reps"], name + "_cpu", "cpu-s/GB",
                          tool, _medians(cpu[tool]), better="lower")


def item_latency(ctx):
    P = ctx.P
    print("== 64-byte ping-pong, %d round trips (+%d warm-up), %d rep(s)" % (
        P["ping_count"], P["ping_warmup"], P["reps"]), flush=True)
    stats = {t: {"p50": [], "p99": [], "mean": []} for t in ctx.main_tools}
    for rep in range(P["reps"]):
        for tool in ctx.main_tools:
            res, err = tb(["pingpong", ctx.ports[tool], P["ping_count"], 64, P["ping_warmup"]])
            if err:
                R.error("pingpong %s rep %d: %s" % (tool, rep + 1, err))
                continue
            for k, v in zip(("p50", "p99", "mean"), res[:3]):
                stats[tool][k].append(float(v))
    sec = "64 B ping-pong latency (median of %d)" % P["reps"]
    med = {t: {k: _medians(v) for k, v in s.items()} for t, s in stats.items()}
    for k in ("p50", "p99", "mean"):
        for tool in ctx.main_tools:
            R.add(sec, "pingpong_%s" % k, "us", tool, med[tool][k], better="lower")
    for k in ("p50", "p99"):
        d = med["direct"][k]
        for tool in ctx.main_tools:
            if tool == "direct":
                continue
            v = med[tool][k]
            R.add(sec, "pingpong_added_%s" % k, "us", tool,
                  None if v is None or d is None else v - d, better="lower")


def item_connect(ctx):
    P = ctx.P
    print("== connection setup: connect + one 64-byte round trip, %d per rep, %d rep(s)" % (
        P["conn_count"], P["reps"]), flush=True)
    stats = {t: {"p50": [], "p99": [], "mean": [], "err": 0} for t in ctx.main_tools}
    for rep in range(P["reps"]):
        for tool in ctx.main_tools:
            res, err = tb(["connect", ctx.ports[tool], P["conn_count"], 64], timeout=900)
            if err:
                R.error("connect %s rep %d: %s" % (tool, rep + 1, err))
                stats[tool]["err"] += P["conn_count"]
                continue
            for k, v in zip(("p50", "p99", "mean"), res[:3]):
                stats[tool][k].append(float(v))
            nerr = int(res[4])
            stats[tool]["err"] += nerr
            if nerr:
                R.error("connect %s rep %d: %d of %d attempts failed (%s)" % (
                    tool, rep + 1, nerr, P["conn_count"], " ".join(res[5:])))
    sec = "connection setup (median of %d x %d)" % (P["reps"], P["conn_count"])
    for k in ("p50", "p99", "mean"):
        for tool in ctx.main_tools:
            R.add(sec, "connect_rtt_%s" % k, "us", tool, _medians(stats[tool][k]), better="lower")
    for tool in ctx.main_tools:
        R.add(sec, "connect_rtt_errors", "count", tool, stats[tool]["err"], better="lower")
    # The same with everything at once (a pool warming up): BURST connections opened back to
    # back, each sends its 64 bytes at once; time until the last echo is back.
    n = ctx.P["burst"]
    print("== connection burst: %d connections at once, %d rep(s)" % (n, P["reps"]), flush=True)
    # Two kernel counters explain most of the spread (system-wide, so other load adds to
    # them): ListenOverflows (a full accept queue drops the SYN; the client retries after
    # 1 s) and DelayedACKs (a peer that waits ~40 ms for an ACK before sending more).
    vals = {t: [] for t in ctx.main_tools}
    for rep in range(P["reps"]):
        for tool in ctx.main_tools:
            c0 = tcp_counters()
            secs, ok = burst(ctx.ports[tool], n)
            c1 = tcp_counters()
            if ok != n:
                R.error("burst %s rep %d: only %d of %d connections echoed" % (tool, rep + 1, ok, n))
            vals[tool].append(secs if ok == n else None)
            print("   burst %s rep %d: %.1f ms (system-wide during it: DelayedACKs +%d, "
                  "ListenOverflows +%d)" % (tool, rep + 1, secs * 1e3,
                                            c1[0] - c0[0], c1[1] - c0[1]), flush=True)
    for tool in ctx.main_tools:
        v = [x for x in vals[tool] if x is not None]
        R.add(sec, "connect_burst_%d_all_echoed" % n, "ms", tool,
              statistics.median(v) * 1e3 if v else None, better="lower")
        R.add(sec, "connect_burst_%d_best" % n, "ms", tool, min(v) * 1e3 if v else None,
              better="lower")


def tcp_counters():
    """(TcpExt DelayedACKs, TcpExt ListenOverflows) from /proc/net/netstat."""
    try:
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
    except OSError:
        return (0, 0)
    d = {}
    for head, vals in zip(lines[::2], lines[1::2]):
        if head.startswith("TcpExt:"):
            d = dict(zip(head.split()[1:], (int(x) for x in vals.split()[1:])))
    return (d.get("DelayedACKs", 0), d.get("ListenOverflows", 0))


def _collect(pairs, deadline):
    """Waits for every (socket, expected bytes) to read its bytes back. Returns (ok pairs,
    closed early, still waiting at the deadline)."""
    sel = selectors.DefaultSelector()
    got = {}
    for s, want in pairs:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, want)
        got[s] = b""
    ok = []
    bad = 0
    while got and time.monotonic() < deadline:
        for key, _ in sel.select(0.5):
            s, want = key.fileobj, key.data
            try:
                b = s.recv(64)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                b = b""
            if not b:
                sel.unregister(s)
                del got[s]
                bad += 1
                continue
            got[s] += b
            if len(got[s]) >= len(want):
                sel.unregister(s)
                if got[s] == want:
                    ok.append((s, want))
                else:
                    bad += 1
                del got[s]
    timed_out = len(got)
    sel.close()
    return ok, bad, timed_out


def burst(port, n, timeout=30):
    socks = []
    t0 = time.monotonic()
    try:
        for i in range(n):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
            except OSError:
                continue
            socks.append((s, b"%08d" % i))
            try:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.sendall(b"E" + b"%08d" % i)
            except OSError:
                pass
        ok, _, _ = _collect(socks, t0 + timeout)
        return time.monotonic() - t0, len(ok)
    finally:
        for s in socks:
            s[0].close()


def hold_connections(port, n, results_prefix, tool, pids_fn):
    """Opens n connections through port, one echo round trip on each, holds them; measures
    memory of pids_fn() before/after. Returns a dict of figures."""
    out = {}
    pids = pids_fn()
    time.sleep(1.0)
    before = smaps(pids) if pids else None
    socks = []
    errors = {}
    t0 = time.monotonic()
    for i in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(b"E" + b"%08d" % i)
            socks.append((s, b"%08d" % i))
        except OSError as e:
            errors[type(e).__name__ + ": " + str(e)] = errors.get(type(e).__name__ + ": " + str(e), 0) + 1

    ok, closed, timed_out = _collect(socks, time.monotonic() + 60)
    t_all = time.monotonic() - t0
    out["ok"] = len(ok)
    out["secs"] = t_all
    if errors:
        R.error("hold %s: connect errors: %s" % (tool, errors))
    if closed or timed_out:
        R.error("hold %s: %d of %d connections closed before their echo, %d got no echo "
                "within 60 s" % (tool, closed, n, timed_out))
    time.sleep(1.0)
    after = smaps(pids) if pids else None
    # Still alive after being held? A second round trip on each.
    for s, want in ok:
        s.setblocking(True)
        try:
            s.sendall(want)
        except OSError:
            pass
    ok2, closed2, timeout2 = _collect(ok, time.monotonic() + 30)
    out["ok2"] = len(ok2)
    if len(ok2) != len(ok):
        R.error("hold %s: second round trip failed on %d connections" % (tool, len(ok) - len(ok2)))
    for s, _ in socks:
        s.close()
    time.sleep(2.0)
    closed_mem = smaps(pids) if pids else None
    if before:
        out["before"], out["after"], out["closed"] = before, after, closed_mem
    return out


def item_hold(ctx):
    n = ctx.P["hold"]
    print("== %d concurrent idle connections through one tunnel" % n, flush=True)
    sec = "%d concurrent idle connections" % n
    for tool in ("direct", "moletun", "ssh_aes128"):
        t = None
        if tool == "direct":
            port, pids_fn = ctx.target_port, lambda: []
        elif tool == "moletun":
            port = free_port()
            t = MoletunTunnels(ctx, [("hold", ctx.sc, [(port, ctx.target_addr)], {})], "hold")
            pids_fn = t.pids
        else:
            port = free_port()
            t = SshTunnel(ctx, ctx.sc, [(port, ctx.target_addr)], tool=tool, name="hold-ssh")
            pids_fn = t.pids
        try:
            if t:
                t.wait_up()
            res = hold_connections(port, n, "hold", tool, pids_fn)
        finally:
            if t:
                t.stop()
        R.add(sec, "hold_ok", "conns", tool, res["ok"])
        R.add(sec, "hold_ok_after_1s", "conns", tool, res["ok2"])
        R.add(sec, "hold_open_all_secs", "s", tool, res["secs"], better="lower")
        if "before" in res:
            b, a, c = res["before"], res["after"], res["closed"]
            R.add(sec, "hold_rss_before", "kB", tool, b["Rss"], better="lower")
            R.add(sec, "hold_rss_after", "kB", tool, a["Rss"], better="lower")
            R.add(sec, "hold_private_before", "kB", tool, b["Private_Dirty"], better="lower")
            R.add(sec, "hold_private_after", "kB", tool, a["Private_Dirty"], better="lower")
            R.add(sec, "hold_private_after_close", "kB", tool, c["Private_Dirty"], better="lower")
            per = (a["Private_Dirty"] - b["Private_Dirty"]) / max(res["ok"], 1)
            R.add(sec, "hold_private_per_conn", "kB", tool, per, better="lower")


def item_idle(ctx):
    P = ctx.P
    print("== idle footprint, 10 tunnels (keepalive 5s x 3 everywhere, moletun's default)",
          flush=True)
    sec = "idle footprint, 10 tunnels"
    ka = ["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
    groups = {}
    started = []
    try:
        ports = [free_port() for _ in range(10)]
        m = MoletunTunnels(ctx, [("i%d" % i, ctx.sc, [(ports[i], ctx.target_addr)], {})
                                 for i in range(10)], "idle10")
        started.append(m)
        groups["moletun"] = (m, ports)
        sshs = []
        ports_s = [free_port() for _ in range(10)]
        for i in range(10):
            s = SshTunnel(ctx, ctx.sc, [(ports_s[i], ctx.target_addr)], tool="ssh_aes128",
                          extra=ka, name="idle-ssh%d" % i)
            started.append(s)
            sshs.append(s)
        groups["ssh_aes128"] = (sshs, ports_s)
        autos = []
        ports_a = [free_port() for _ in range(10)]
        for i in range(10):
            s = SshTunnel(ctx, ctx.sc, [(ports_a[i], ctx.target_addr)], tool="autossh",
                          extra=ka, autossh=True, name="idle-autossh%d" % i)
            started.append(s)
            autos.append(s)
        groups["autossh"] = (autos, ports_a)
        m.wait_up()
        for tool, (_, prts) in groups.items():
            for p in prts:
                if wait_usable(p, 20) is None:
                    R.error("idle: %s forward on port %d not usable" % (tool, p))
        time.sleep(3.0)

        def pids_of(tool):
            obj = groups[tool][0]
            objs = obj if isinstance(obj, list) else [obj]
            out = []
            for o in objs:
                out += o.pids()
            return out

        for tool in groups:
            pids = pids_of(tool)
            mem = smaps(pids)
            R.add(sec, "idle10_private_dirty", "kB", tool, mem["Private_Dirty"], better="lower")
            R.add(sec, "idle10_rss", "kB", tool, mem["Rss"], better="lower")
            R.add(sec, "idle10_pss", "kB", tool, mem["Pss"], better="lower")
            R.add(sec, "idle10_processes", "procs", tool, len(pids), better="lower")
        snap0 = {tool: ctx_switches(pids_of(tool)) for tool in groups}
        time.sleep(P["idle_window"])
        snap1 = {tool: ctx_switches(pids_of(tool)) for tool in groups}
        for tool in groups:
            R.add(sec, "idle10_wakeups", "per s", tool,
                  (snap1[tool] - snap0[tool]) / P["idle_window"], better="lower")
    finally:
        for s in started:
            s.stop()


def item_reconnect(ctx):
    P = ctx.P
    print("== time to usable after the sidecar returns (outages %s s)" % (P["outages"],),
          flush=True)
    sec = "reconnect: usable after sidecar returns"
    sc = Sidecar(ctx.tmp, permit_open=[ctx.target_addr]).start()
    m = a = None
    try:
        lp_m, lp_a = free_port(), free_port()
        m = MoletunTunnels(ctx, [("rc", sc, [(lp_m, ctx.target_addr)], {})], "reconnect",
                           expect_drops=True)
        a = SshTunnel(ctx, sc, [(lp_a, ctx.target_addr)], tool="autossh", autossh=True,
                      name="reconnect-autossh",
                      extra=["-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=3"])
        m.wait_up()
        a.wait_up()
        for outage in P["outages"]:
            if wait_usable(lp_m, 30) is None or wait_usable(lp_a, 30) is None:
                R.error("reconnect: a tunnel was not usable before the %ds outage" % outage)
            sc.stop()
            time.sleep(outage)
            sc.start()
            t_back = time.monotonic()
            res = {}

            def poll(tool, port):
                ok = wait_usable(port, 60, pause=0.02)
                res[tool] = ok if ok is None else time.monotonic() - t_back

            ths = [threading.Thread(target=poll, args=("moletun", lp_m)),
                   threading.Thread(target=poll, args=("autossh", lp_a))]
            for th in ths:
                th.start()
            for th in ths:
                th.join()
            for tool in ("moletun", "autossh"):
                if res.get(tool) is None:
                    R.error("reconnect: %s not usable within 60 s after a %ds outage" % (tool, outage))
                R.add(sec, "usable_after_outage_%ds" % outage, "s", tool, res.get(tool),
                      better="lower")
            time.sleep(2.0)
    finally:
        for t in (m, a):
            if t:
                t.stop()
        sc.cleanup()
    item_reconnect_fleet(ctx, sec)


FLEET = 50


def entered(line):
    """The state a moletun log line says a tunnel entered, or None."""
    m = harness.TRANSITION_RE.search(line)
    return m.group(3) if m else None


def log_wall_time(line):
    """The wall-clock time (epoch seconds) of a moletun log line's own timestamp."""
    stamp = line.split(" ", 1)[0]
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def item_reconnect_fleet(ctx, sec):
    """FLEET tunnels in one daemon, one sidecar: how hard they knock while it is away and
    when it returns. Connect attempts are the tunnels' "-> connecting" transitions (one TCP
    connect each to a single address; the daemon logs at debug level, where the quick
    retries' transitions are), counted per second of the outage and in the first second
    after sshd listens again, then the time until all are up."""
    outage = 8
    print("== a fleet of %d tunnels across an %d s sidecar outage" % (FLEET, outage), flush=True)
    sc = Sidecar(ctx.tmp, permit_open=[ctx.target_addr]).start()
    f = None
    try:
        f = MoletunTunnels(ctx, [("f%d" % i, sc, [(free_port(), ctx.target_addr)], {})
                                 for i in range(FLEET)], "fleet", expect_drops=True,
                           log_level="debug")  # quick retries log their transitions at debug
        f.wait_up(60)
        mark = f.m.mark()
        sc.stop()
        t_down = time.time()
        time.sleep(outage)
        sc.start()
        t_back = time.time()
        deadline = t_back + 60
        while time.time() < deadline:
            if all(f.m.state(n) == "up" for n in f.names):
                break
            time.sleep(0.02)
        up = [log_wall_time(l) for _, l in f.m.lines[mark:] if entered(l) == "up"]
        all_up = max(up) - t_back if len(up) >= FLEET else None
        if all_up is None:
            R.error("fleet: not all %d tunnels up within 60 s of the sidecar's return" % FLEET)
        # the daemon's own timestamps: the reader thread may fall behind 500 lines/s
        times = [log_wall_time(l) for _, l in f.m.lines[mark:] if entered(l) == "connecting"]
        # the outage as the tunnels see it: from the first session lost
        lost = [(log_wall_time(l), l) for _, l in f.m.lines[mark:] if entered(l) == "backoff"]
        t_lost = min(lost)[0] if lost else t_down
        R.note("fleet: first session lost %.2f s after sshd was stopped (%s)" % (
            t_lost - t_down, min(lost)[1].split(": ", 2)[-1][:100] if lost else "none"))
        seconds = max(1, int(t_back - t_lost))
        during = [t for t in times if t_lost <= t < t_back]
        per_s = [sum(1 for t in during if t_lost + i <= t < t_lost + i + 1)
                 for i in range(seconds)]
        first_s = sum(1 for t in times if t_back <= t < t_back + 1)
        R.add(sec, "fleet%d_connects_per_s_outage_mean" % FLEET, "/s", "moletun",
              len(during) / (t_back - t_lost), better="lower")
        R.add(sec, "fleet%d_connects_per_s_outage_peak" % FLEET, "/s", "moletun",
              max(per_s) if per_s else 0, better="lower")
        R.add(sec, "fleet%d_connects_last_s_of_outage" % FLEET, "n", "moletun",
              per_s[-1] if per_s else 0, better="lower")
        R.add(sec, "fleet%d_connects_first_s_back" % FLEET, "n", "moletun", first_s,
              better="lower")
        R.add(sec, "fleet%d_all_up_after_return" % FLEET, "s", "moletun", all_up, better="lower")
        R.note("fleet: connects per second from the first session lost: %s" % (per_s,))
    finally:
        if f:
            f.stop()
        sc.cleanup()


def item_blackhole(ctx):
    sec = "blackhole detection (keepalive 1s x 3)"
    print("== blackholed sidecar: time to detect, keepalive 1s x 3", flush=True)
    if os.geteuid() != 0:
        R.note("blackhole item skipped: needs root (network namespaces, iptables)")
        return
    for tool in ("ip", "iptables"):
        if not shutil.which(tool):
            R.note("blackhole item skipped: `%s` is missing (apt-get install iproute2 iptables)" % tool)
            return
    tag = ctx.tag % 100000
    ns, vh, vn = "mbbh%d" % tag, "mbva%d" % tag, "mbvb%d" % tag
    subnet = 1 + ctx.tag % 250
    host_addr, ns_addr = "10.214.%d.1" % subnet, "10.214.%d.2" % subnet

    def sh(*args, check=True):
        return subprocess.run(list(args), check=check, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True)

    def down():
        sh("ip", "netns", "del", ns, check=False)
        sh("ip", "link", "del", vh, check=False)

    down()
    r = sh("ip", "netns", "add", ns, check=False)
    if r.returncode != 0:
        R.note("blackhole item skipped: cannot create a network namespace: " + r.stdout.strip())
        return
    _cleanups.append(down)
    m = s = target = sc = None
    try:
        r = sh("ip", "netns", "exec", ns, "iptables", "-L", "INPUT", "-n", check=False)
        if r.returncode != 0:
            R.note("blackhole item skipped: iptables does not work in a namespace: " + r.stdout.strip())
            return
        sh("ip", "link", "add", vh, "type", "veth", "peer", "name", vn)
        sh("ip", "link", "set", vn, "netns", ns)
        sh("ip", "addr", "add", host_addr + "/30", "dev", vh)
        sh("ip", "link", "set", vh, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", ns_addr + "/30", "dev", vn)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", vn, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        target, tport = start_target(ctx.tmp, host=host_addr)
        taddr = "%s:%d" % (host_addr, tport)
        sc = Sidecar(ctx.tmp, listen=ns_addr, wrapper=["ip", "netns", "exec", ns],
                     permit_open=[taddr]).start()
        lp_m, lp_s = free_port(), free_port()
        m = MoletunTunnels(ctx, [("bh", sc, [(lp_m, taddr)],
                                  {"keepalive_interval": "1s", "keepalive_count_max": "3"})],
                           "blackhole", expect_drops=True)
        s = SshTunnel(ctx, sc, [(lp_s, taddr)], tool="ssh_aes128", name="blackhole-ssh",
                      extra=["-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=3"])
        m.wait_up()
        s.wait_up()
        clients = []
        for lp in (lp_m, lp_s):  # one open, idle client connection on each, as in real life
            c = socket.create_connection(("127.0.0.1", lp), timeout=5)
            c.sendall(b"Eopen")
            if c.recv(16) != b"open":
                R.error("blackhole: open client connection on port %d did not echo" % lp)
            clients.append(c)
        # A random phase against the keepalive ticks, so the figure is not an artefact of
        # when the blackhole starts relative to them.
        time.sleep(2.0 + random.random())
        exit_time = {}

        def waiter():
            s.proc.wait()
            exit_time["ssh"] = time.monotonic()

        th = threading.Thread(target=waiter, daemon=True)
        th.start()
        mark = m.m.mark()
        for chain in ("INPUT", "OUTPUT"):
            sh("ip", "netns", "exec", ns, "iptables", "-I", chain, "-j", "DROP")
        t0 = time.monotonic()
        tr = m.m.wait_transition("bh", mark, old="up", timeout=30)
        th.join(max(0.0, 30 - (time.monotonic() - t0)))
        det_m = tr[0] - t0 if tr else None
        det_s = exit_time["ssh"] - t0 if "ssh" in exit_time else None
        if tr is None:
            R.error("blackhole: moletun still up 30 s after the blackhole")
        else:
            R.note("blackhole: moletun logged `%s -> %s: %s`" % (tr[2], tr[3], tr[4]))
        if det_s is None:
            R.error("blackhole: ssh -L still running 30 s after the blackhole")
        R.add(sec, "blackhole_detect", "s", "moletun", det_m, better="lower")
        R.add(sec, "blackhole_detect", "s", "ssh_aes128", det_s, better="lower")
        for c in clients:
            c.close()
    finally:
        for t in (m, s):
            if t:
                t.stop()
        if sc:
            sc.cleanup()
        if target:
            stop_proc(target)
        down()
        if down in _cleanups:
            _cleanups.remove(down)


# -- PostgreSQL ---------------------------------------------------------------------------


def pg_start(ctx):
    """A throwaway cluster as the postgres user; returns None (and notes why) if impossible."""
    initdb = os.path.join(PG_BIN, "initdb")
    if not os.access(initdb, os.X_OK) or not shutil.which("pgbench"):
        R.note("pgbench item skipped: PostgreSQL 15 is not installed (apt-get install postgresql)")
        return None
    try:
        import pwd
        pw = pwd.getpwnam("postgres")
    except KeyError:
        R.note("pgbench item skipped: no postgres user")
        return None
    d = tempfile.mkdtemp(prefix="moletun-bench-pg-")
    os.chown(d, pw.pw_uid, pw.pw_gid)
    ctx.pgdir = d

    def pgstop():
        subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(PG_BIN, "pg_ctl"),
                        "-D", os.path.join(d, "data"), "-m", "immediate", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(d, ignore_errors=True)

    _cleanups.append(pgstop)
    port = ctx.pg_port
    r = subprocess.run(["runuser", "-u", "postgres", "--", initdb, "-D", os.path.join(d, "data"),
                        "-A", "trust", "-U", "postgres", "--no-sync"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    if r.returncode != 0:
        R.note("pgbench item skipped: initdb failed: " + r.stdout[-500:])
        return None
    opts = ("-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=200" % (port, d))
    r = subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(PG_BIN, "pg_ctl"),
                        "-D", os.path.join(d, "data"), "-l", os.path.join(d, "log"), "-w",
                        "-t", "60", "-o", opts, "start"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    if r.returncode != 0:
        R.note("pgbench item skipped: pg_ctl start failed: " + r.stdout[-500:])
        return None
    r = subprocess.run(["pgbench", "-i", "-q", "-s", str(ctx.P["pg_scale"]), "-h", "127.0.0.1",
                        "-p", str(port), "-U", "postgres", "postgres"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    if r.returncode != 0:
        R.note("pgbench item skipped: pgbench -i failed: " + r.stdout[-500:])
        return None
    return port


def item_pgbench(ctx):
    if not ctx.pg_ok:
        return
    secs = ctx.P["pg_secs"]
    print("== pgbench -S, %d s per run" % secs, flush=True)
    sec = "pgbench -S (select-only), %d s each" % secs
    for label, extra, clients in (("S_c4", [], 4), ("SC_c1", ["-C"], 1), ("SC_c4", ["-C"], 4)):
        for tool in ctx.main_tools:
            port = ctx.pg_port if tool == "direct" else ctx.pg_ports[tool]
            cmd = ["pgbench", "-S", "-n", "-T", str(secs), "-c", str(clients), "-h", "127.0.0.1",
                   "-p", str(port), "-U", "postgres"] + extra + ["postgres"]
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               universal_newlines=True, timeout=secs + 120)
            tps = re.search(r"^tps = ([\d.]+)", r.stdout, re.M)
            lat = re.search(r"latency average = ([\d.]+) ms", r.stdout)
            conn = re.search(r"average connection time = ([\d.]+) ms", r.stdout)
            failed = re.search(r"number of failed transactions: (\d+)", r.stdout)
            if r.returncode != 0 or not tps:
                R.error("pgbench %s %s exited %d: %s" % (label, tool, r.returncode,
                                                         r.stdout.strip()[-600:]))
            if failed and int(failed.group(1)):
                R.error("pgbench %s %s: %s failed transactions" % (label, tool, failed.group(1)))
            R.add(sec, "pgbench_%s_tps" % label, "tps", tool,
                  float(tps.group(1)) if tps else None)
            R.add(sec, "pgbench_%s_latency" % label, "ms", tool,
                  float(lat.group(1)) if lat else None, better="lower")
            if extra:
                R.add(sec, "pgbench_%s_connect" % label, "ms", tool,
                      float(conn.group(1)) if conn else None, better="lower")
            print("   %s %s: %s tps" % (label, tool, tps.group(1) if tps else "ERR"), flush=True)


# ---------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------


def cleanup(ctx):
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # cleanup runs to its end
        signal.signal(sig, signal.SIG_IGN)
    for p in list(_procs):
        try:
            stop_proc(p)
        except Exception as e:
            sys.stderr.write("cleanup: %r\n" % e)
    harness.cleanup_everything()
    for f in reversed(list(_cleanups)):
        try:
            f()
        except Exception as e:
            sys.stderr.write("cleanup: %r\n" % e)
    if getattr(ctx, "tmp", None):
        if os.environ.get("MOLETUN_BENCH_KEEP"):
            print("kept " + ctx.tmp)
        else:
            shutil.rmtree(ctx.tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs (a smoke test)")
    ap.add_argument("--only", default="", help="comma list of item numbers (1-9) to run")
    args = ap.parse_args()
    only = set(int(x) for x in args.only.split(",") if x.strip())

    def want(n):
        return not only or n in only

    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    signal.signal(signal.SIGHUP, lambda *a: sys.exit(129))
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, lambda *a: sys.exit(130))
    # 1000 connections = 1000+ fds in the client, the tunnel, sshd's session and the target.
    # Without CAP_SYS_RESOURCE the hard limit is the ceiling (20000 on these machines).
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))
    except (ValueError, OSError):
        harness.raise_fd_limit()
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    harness.require_sshd()

    ctx = Ctx()
    ctx.P = QUICK if args.quick else FULL
    ctx.tag = int(os.environ.get("BENCH_TAG", os.getpid()))
    ctx.tmp = tempfile.mkdtemp(prefix="moletun-bench-")
    os.chmod(ctx.tmp, 0o700)
    try:
        global TB
        TB = os.path.join(ctx.tmp, "tcpbench")
        subprocess.run(["cc", "-O2", "-pthread", "-o", TB, os.path.join(HERE, "tcpbench.c")],
                       check=True)
        binpath = harness.moletun_bin()
        ver = subprocess.run([binpath, "--version"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, universal_newlines=True).stdout.strip()
        sshv = subprocess.run(["ssh", "-V"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True).stdout.strip()
        print("moletun: %s (%s)\nssh: %s\nmode: %s\nload average: %s" % (
            binpath, ver, sshv, "quick" if args.quick else "full",
            open("/proc/loadavg").read().strip()), flush=True)

        ctx.target_proc, ctx.target_port = start_target(ctx.tmp)
        ctx.target_addr = "127.0.0.1:%d" % ctx.target_port
        ctx.pg_port = free_port()
        ctx.pg_ok = bool(want(9) and pg_start(ctx))
        permit = [ctx.target_addr] + (["127.0.0.1:%d" % ctx.pg_port] if ctx.pg_ok else [])
        ctx.sc = Sidecar(ctx.tmp, permit_open=permit).start()

        if want(1) or want(2):
            item_cipher_probe(ctx)

        ctx.main_tools = ["direct", "moletun", "ssh_aes128", "ssh_default"]
        if any(want(n) for n in (1, 2, 3, 4, 9)):
            ctx.ports = {"direct": ctx.target_port}
            ctx.pg_ports = {}
            ctx.main = {}
            for tool in ctx.main_tools[1:]:
                ctx.ports[tool] = free_port()
                fwds = [(ctx.ports[tool], ctx.target_addr)]
                if ctx.pg_ok:
                    ctx.pg_ports[tool] = free_port()
                    fwds.append((ctx.pg_ports[tool], "127.0.0.1:%d" % ctx.pg_port))
                if tool == "moletun":
                    ctx.main[tool] = MoletunTunnels(ctx, [("main", ctx.sc, fwds, {})], "main")
                else:
                    ctx.main[tool] = SshTunnel(ctx, ctx.sc, fwds, tool=tool, name="main-" + tool)
            for t in ctx.main.values():
                t.wait_up()
            ctx.tunnel_pids = lambda tool: ctx.main[tool].pids() if tool in ctx.main else []
            if want(1) or want(2):
                item_throughput(ctx)
            if want(3):
                item_latency(ctx)
            if want(4):
                item_connect(ctx)
            if want(9):
                item_pgbench(ctx)
            for t in ctx.main.values():
                if not (t.proc.poll() is None):
                    R.error("%s tunnel process exited during the run (code %s)" % (
                        getattr(t, "tool", "moletun"), t.proc.poll()))
                t.stop()
        if want(5):
            item_hold(ctx)
        if want(6):
            item_idle(ctx)
        if want(7):
            item_reconnect(ctx)
        if want(8):
            item_blackhole(ctx)
    finally:
        cleanup(ctx)

    print()
    print("== results (%s run; ratio = moletun / ssh -L aes128-ctr, or / autossh) ==" % (
        "quick" if args.quick else "full"))
    if getattr(ctx, "ciphers", None):
        print("ciphers: " + "; ".join("%s: %s" % kv for kv in ctx.ciphers.items()))
    print(R.table())
    if R.notes:
        print("\nnotes:")
        for n in R.notes:
            print("  - " + n)
    if R.errors:
        print("\nerrors seen (%d):" % len(R.errors))
        for e in R.errors:
            print("  - " + e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
