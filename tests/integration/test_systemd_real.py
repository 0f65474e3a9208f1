#!/usr/bin/env python3
"""moletun as a real systemd service: the shipped unit in a booted systemd 252.

The build is installed with `meson install --destdir` and bound into a systemd-nspawn
container (nspawn.py) that shares the host's network: the sidecar sshd and the echo target
run on the host's 127.0.0.1, moletun runs inside as the installed moletun.service, and the
test talks to its local forward from outside. The unit, sysusers and tmpfiles files are
the installed ones, unmodified; a drop-in only points ExecStart at the bound-in binary and
shortens WatchdogSec to 3 s. The tunnel keeps moletun's defaults for holding clients
(start_hold 5s, down_hold 0): restarts fail no client with them.

In order (one container, one daemon, ~1 minute):
  1 start returns after READY=1: active/running at once, listener accepting, STATUS= shown
    by systemctl status;
  2 the sandbox holds while the tunnel works: uid moletun, no capabilities, no new
    privileges, seccomp on, /etc read-only and /home hidden in the service's namespace;
  3 `moletun ctl` works for root and a member of group moletun, is refused to others;
  4 journald gets each line at its priority (journalctl -p);
  5 reload goes RELOADING=1 -> READY=1 and applies the change: an added forward listens
    and is stored, a removed one stops listening and leaves the FD store, the unchanged
    listener is the very same socket throughout;
  6-8 `systemctl restart`, SIGKILL (Restart=always) and SIGSTOP (watchdog) with a client
    connecting every 20 ms: no connection refused, every attempt that began after the old
    process was gone is served, the listener and control socket are the same sockets;
  9 the same restart with FileDescriptorStoreMax=0 does refuse clients (the probe can see
    a refusal, and it is the FD store that prevents them);
  x ssh_host: ssh -G runs inside the sandbox as the service's user (reload, start, check);
  y metrics_textfile in node_exporter's directory (root's, 0755, as Debian ships it): the
    unit's ReadWritePaths= lets the sandboxed service write there once the directory's
    ACL allows user moletun (what the Debian package adds), not before; the file is mode
    0644, and the stop leaves the tunnel marked down in it;
  z stop is clean and quick, and closes the listeners for good.

Hardening that nspawn cannot show: KeyringMode=private (nspawn's seccomp filter denies
the keyring system calls, which are not namespaced, so systemd logs "Kernel keyring
access prohibited, ignoring" and sets up no keyring); and checks that would pass in the
container with or without the directive are left out (ProtectKernelTunables: nspawn
mounts /proc/sys read-only already; ProtectKernelModules: there are no modules here).

Exits 77 with the reason when systemd-nspawn cannot run here (not root, not installed).
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import harness
import nspawn
from harness import EchoServer, Sidecar, free_port, tunnel_section
from restart_probe import Prober, ProcessWatch, tcp_listener_inode, unix_listener_inode

UNIT = "moletun"
WATCHDOG_SEC = 3
CONTROL_SOCKET = "/run/moletun/control.sock"
INSTALL = "/opt/moletun"      # the meson destdir, inside the container
FILES = "/opt/moletun-test"   # key and known_hosts, inside the container
CONFIG = "/etc/moletun/moletun.conf"
# A restart's gap is RestartSec=1 plus start-up plus the SSH handshake; the watchdog adds
# up to its interval. Attempts wait in the backlog meanwhile: allow for a loaded machine.
PROBE_TIMEOUT = 20.0

env = {}


def setUpModule():
    try:
        set_up()
    except BaseException:
        # unittest does not call tearDownModule when setUpModule fails
        tearDownModule()
        raise


def set_up():
    reason = nspawn.unavailable_reason()
    if reason:
        harness.skip_module(reason)
    harness.require_sshd()
    harness.raise_fd_limit()
    tmp = tempfile.mkdtemp(prefix="moletun-systemd-")
    os.chmod(tmp, 0o755)
    env["tmp"] = tmp
    build_dir = os.path.dirname(os.path.abspath(harness.moletun_bin()))
    dest = nspawn.meson_install(build_dir, tmp)
    env["unit_path"] = nspawn.find_installed(dest, "moletun.service", ("systemd/system",))
    env["sysusers"] = nspawn.find_installed(dest, "moletun.conf", ("sysusers.d",))
    env["tmpfiles"] = nspawn.find_installed(dest, "moletun.conf", ("tmpfiles.d",))
    files = os.path.join(tmp, "files")
    os.mkdir(files, 0o755)
    os.chmod(files, 0o755)
    env["files"] = files

    echo = EchoServer()
    env["echo"] = echo
    sc = Sidecar(tmp, permit_open=[echo.addr])
    sc.start()
    env["sidecar"] = sc

    c = nspawn.Container(tmp, {dest: INSTALL, files: FILES})
    env["container"] = c
    try:
        c.boot()
    except Exception as e:
        # A machine where nspawn is installed but cannot boot a container is a platform
        # limit, not a moletun failure: say why and skip.
        harness.skip_module("systemd-nspawn could not boot a container: %s" % str(e)[-800:])

    def inside(path):
        return INSTALL + path[len(dest):]

    # The installed sysusers and tmpfiles files, by name (others' files trip over the host).
    c.run(["systemd-sysusers", inside(env["sysusers"])])
    c.run(["systemd-tmpfiles", "--create", inside(env["tmpfiles"])])
    uid = int(c.run(["id", "-u", "moletun"]).stdout.strip())
    gid = int(c.run(["id", "-g", "moletun"]).stdout.strip())
    env["uid"] = uid
    # Key readable by the service only: owned by its user (the same uid outside), 0600.
    key = os.path.join(files, "id_moletun")
    shutil.copy(sc.user_key, key)
    os.chown(key, uid, gid)
    os.chmod(key, 0o600)
    kh = sc.write_known_hosts(os.path.join(files, "known_hosts"))
    os.chmod(kh, 0o644)

    # The installed unit, unmodified; the drop-in only moves ExecStart, ExecReload and the
    # watchdog.
    with open(env["unit_path"]) as f:
        unit_text = f.read()
    exec_start = re.search(r"^ExecStart=(\S+)(.*)$", unit_text, re.M)
    exec_reload = re.search(r"^ExecReload=(\S+)(.*)$", unit_text, re.M)
    env["bin"] = INSTALL + exec_start.group(1)
    c.write("/etc/systemd/system/moletun.service", unit_text)
    c.run(["mkdir", "-p", "/etc/systemd/system/moletun.service.d"])
    extra = ""
    if "libasan" in subprocess.run(["ldd", harness.moletun_bin()], capture_output=True,
                                   text=True).stdout:
        # The unit's environment has no LSAN_OPTIONS with tests/lsan.supp (libssh2 1.10's
        # known leak would fail the exit status); the other suites check leaks at exit.
        print("AddressSanitizer build: leak check at exit off inside the container")
        extra = "Environment=ASAN_OPTIONS=detect_leaks=0\n"
    c.write("/etc/systemd/system/moletun.service.d/test.conf",
            "[Service]\nExecStart=\nExecStart=%s%s%s\nExecReload=\nExecReload=%s%s%s\n"
            "WatchdogSec=%ds\n%s" % (
                INSTALL, exec_start.group(1), exec_start.group(2), INSTALL, exec_reload.group(1),
                exec_reload.group(2), WATCHDOG_SEC, extra))
    env["port"] = free_port()
    env["port2"] = free_port()
    write_config([env["port"]])
    # Users for the ctl checks, and something in /home the service must not see.
    c.run(["useradd", "-m", "-G", "moletun", "alice"])
    c.run(["useradd", "-m", "bob"])
    c.write("/home/alice/secret", "top secret 4711\n", mode=0o644, owner="alice")
    c.run(["systemctl", "daemon-reload"])
    # Debug level: systemd logs each notification message it gets (checked in test 5).
    c.run(["systemd-analyze", "log-level", "debug"])


def tearDownModule():
    c = env.get("container")
    if c:
        c.shutdown()
    for k in ("sidecar", "echo"):
        if env.get(k):
            env[k].cleanup()
    if env.get("tmp") and not os.environ.get("MOLETUN_KEEP_TMP"):
        shutil.rmtree(env["tmp"], ignore_errors=True)


def write_config(ports, broken=False, extra_global=""):
    sc, echo = env["sidecar"], env["echo"]
    # memory_limit: the restart tests' prober connects every 10 ms, and a watchdog
    # restart on a loaded machine releases 300+ clients at once; the default account
    # reserves a first window for each queued channel open and has room for ~330, so the
    # excess would be closed for memory. Capacity is test_memory_bound's subject; these
    # tests are about restarts.
    text = "[moletun]\nlog_level = info\nmemory_limit = 1G\n%s\n" % extra_global + tunnel_section(
        "db", sc, local_forward=["127.0.0.1:%d %s" % (p, echo.addr) for p in ports],
        identity_file=FILES + "/id_moletun", known_hosts_file=FILES + "/known_hosts")
    if broken:
        text += "no_such_key = 1\n"
    env["container"].write(CONFIG, text, mode=0o640, owner="root:moletun")


class SystemdTest(unittest.TestCase):
    maxDiff = None

    @property
    def c(self):
        return env["container"]

    def systemctl(self, *args, check=True, timeout=60):
        return self.c.run(["systemctl"] + list(args), check=check, timeout=timeout)

    def show(self, *props):
        return self.c.show(UNIT, *props)

    def main_host_pid(self):
        pids = self.c.host_pids("moletun", " run")
        self.assertEqual(len(pids), 1, "moletun run processes: %s" % pids)
        return pids[0]

    def wait_status(self, regex, timeout=15.0):
        deadline = time.monotonic() + timeout * harness.slowdown()
        while True:
            text = self.show("StatusText")["StatusText"]
            if re.search(regex, text):
                return text
            if time.monotonic() > deadline:
                self.fail("StatusText %r never matched %r" % (text, regex))
            time.sleep(0.05)

    def journal(self, *args):
        return self.c.run(["journalctl", "--no-pager", "-u", UNIT] + list(args)).stdout

    def wait_journal(self, regex, *args, timeout=10.0):
        deadline = time.monotonic() + timeout * harness.slowdown()
        while True:
            text = self.journal(*args)
            if re.search(regex, text, re.M):
                return text
            if time.monotonic() > deadline:
                self.fail("journal never showed %r:\n%s" % (regex, text[-3000:]))
            time.sleep(0.1)

    def ensure_up(self):
        if self.show("ActiveState")["ActiveState"] != "active":
            self.systemctl("start", UNIT)
        self.wait_status(r"^1/1 tunnels up$")

    def test_1_start_returns_after_ready(self):
        t0 = time.monotonic()
        self.systemctl("start", UNIT)
        took = time.monotonic() - t0
        # Type=notify: start returns, and the unit is active, only once READY=1 arrived.
        st = self.show("ActiveState", "SubState", "Type", "MainPID", "NotifyAccess")
        self.assertEqual((st["ActiveState"], st["SubState"], st["Type"]),
                         ("active", "running", "notify"), st)
        self.wait_journal(r"moletun started: 1 tunnel,", "-o", "cat")
        # READY=1 comes after the listeners are bound: a client is accepted at once and
        # held (start_hold) until the tunnel is up.
        got = harness.echo_once(env["port"], b"first\n", timeout=10)
        self.assertEqual(got, b"first\n")
        status = self.wait_status(r"^1/1 tunnels up$")
        out = self.systemctl("status", "--no-pager", UNIT, check=False).stdout
        self.assertIn('Status: "%s"' % status, out)
        print("start took %.2fs; status %r" % (took, status))

    def test_2_sandbox_in_force_while_tunnel_works(self):
        self.ensure_up()
        self.assertEqual(harness.echo_once(env["port"]), b"ping\n")
        pid = self.main_host_pid()
        with open("/proc/%d/status" % pid) as f:
            status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        uid = str(env["uid"])
        self.assertEqual(status["Uid"].split(), [uid] * 4)
        self.assertEqual(status["Gid"].split(), [str(self._gid())] * 4)
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            self.assertEqual(int(status[cap], 16), 0, "%s = %s" % (cap, status[cap]))
        self.assertEqual(status["NoNewPrivs"].strip(), "1")
        self.assertEqual(status["Seccomp"].strip(), "2")
        # In the service's own mount namespace, even root cannot write /etc or see /home.
        ns = ["nsenter", "-t", str(pid), "-m", "--"]
        r = harness.run(ns + ["sh", "-c", "echo x > /etc/moletun-probe"], check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("Read-only file system", r.stdout)
        r = harness.run(ns + ["sh", "-c", "echo x > /opt/moletun-test/probe"], check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertTrue(self.c.run(["test", "-e", "/home/alice/secret"], check=False).returncode == 0)
        r = harness.run(ns + ["sh", "-c", "ls -a /home; cat /home/alice/secret"], check=False)
        self.assertNotIn("4711", r.stdout)
        self.assertNotRegex(r.stdout, r"(?m)^alice$")
        self.assertNotEqual(r.returncode, 0)
        # PrivateTmp: its own /tmp.
        self.c.run(["touch", "/tmp/container-marker"])
        r = harness.run(ns + ["test", "-e", "/tmp/container-marker"], check=False)
        self.assertNotEqual(r.returncode, 0)
        # ProtectProc=invisible, ProcSubset=pid: as the service user, other users' processes
        # and system-wide /proc files are not there.
        as_service = ["nsenter", "-t", str(pid), "-m", "-S", uid, "-G", str(self._gid()), "--"]
        r = harness.run(as_service + ["sh", "-c", "test -e /proc/1 || echo no-pid1;"
                                      " test -e /proc/meminfo || echo no-meminfo"], check=False)
        self.assertEqual(r.stdout.split(), ["no-pid1", "no-meminfo"])
        # ... and /run/moletun, its runtime directory, is writable (its socket lives there).
        r = harness.run(ns + ["test", "-w", "/run/moletun"], check=False)
        self.assertEqual(r.returncode, 0)
        # PrivateUsers=yes: only root, moletun and nobody are mapped in its user namespace.
        with open("/proc/%d/uid_map" % pid) as f:
            uid_map = f.read().split("\n")
        mapped = sorted(int(l.split()[1]) for l in uid_map if l.strip())
        self.assertIn(env["uid"], mapped)
        self.assertLessEqual(len(mapped), 3, uid_map)

    def _gid(self):
        return int(self.c.run(["id", "-g", "moletun"]).stdout.strip())

    def test_3_ctl_root_group_and_others(self):
        self.ensure_up()
        ctl = env["bin"]
        r = self.c.run([ctl, "ctl", "status"], check=False)
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertIn("db", r.stdout)
        def as_user(name):
            gid = self.c.run(["id", "-g", name]).stdout.strip()
            return ["setpriv", "--reuid=" + name, "--regid=" + gid, "--init-groups", "--"]
        self.assertIn("moletun", self.c.run(["id", "-nG", "alice"]).stdout.split())
        r = self.c.run(as_user("alice") + [ctl, "ctl", "status"], check=False)
        self.assertEqual(r.returncode, 0, "group member alice: " + r.stdout)
        self.assertIn("db", r.stdout)
        r = self.c.run(as_user("bob") + [ctl, "ctl", "status"], check=False)
        self.assertNotEqual(r.returncode, 0, "bob is not in group moletun: " + r.stdout)
        self.assertNotIn("db", r.stdout)
        self.assertRegex(r.stdout, r"(?i)permission denied|not allowed|refused")

    def test_4_journal_priorities(self):
        self.ensure_up()
        write_config([env["port"]], broken=True)
        try:
            # A refused configuration is a failed reload, with the reason in status.
            r = self.systemctl("reload", UNIT, check=False)
            self.assertNotEqual(r.returncode, 0, r.stdout)
            status = self.systemctl("status", "--no-pager", "-n", "20", UNIT, check=False)
            self.assertRegex(status.stdout, r"unknown key|no_such_key")
            self.assertRegex(status.stdout, r"reload failed")
            self.wait_journal(r"reload failed", "-o", "cat")
        finally:
            write_config([env["port"]])
        warn = self.journal("-p", "warning", "-o", "cat")
        notice = self.journal("-p", "notice", "-o", "cat")
        info = self.journal("-p", "info", "-o", "cat")
        # err: the failed reload; notice: start-up; info: the reload attempt itself.
        self.assertRegex(warn, r"reload failed: keeping the running configuration")
        self.assertRegex(warn, r"unknown key|no_such_key")
        self.assertNotRegex(warn, r"moletun started")
        self.assertNotRegex(warn, r"reloading /etc/moletun")
        self.assertRegex(notice, r"moletun started")
        self.assertNotRegex(notice, r"reloading /etc/moletun")
        self.assertRegex(info, r"reloading /etc/moletun")
        # No "<3>" prefixes left in the text: journald parsed them.
        self.assertNotRegex(info, r"(?m)^<\d>")
        self.assertEqual(self.show("ActiveState")["ActiveState"], "active")

    def _listeners(self):
        return (tcp_listener_inode(env["port"]), unix_listener_inode(CONTROL_SOCKET))

    def test_5_reload_applies_and_updates_fd_store(self):
        self.ensure_up()
        p1, p2 = env["port"], env["port2"]
        before = tcp_listener_inode(p1)
        self.assertIsNotNone(before)
        self.assertEqual(self.show("NFileDescriptorStore")["NFileDescriptorStore"], "2")
        mark = self._journal_cursor()
        write_config([p1, p2])
        self.systemctl("reload", UNIT)
        self.assertEqual(self.show("ActiveState")["ActiveState"], "active")
        # ExecReload returns once the daemon has applied the configuration: the new forward
        # listens and is in status as soon as `systemctl reload` returns.
        r = self.c.run([env["bin"], "ctl", "status", "--json"], check=False)
        self.assertIn("127.0.0.1:%d" % p2, r.stdout)
        self._wait_store(3)
        self.assertEqual(harness.echo_once(p2, timeout=10), b"ping\n")
        self.assertEqual(harness.echo_once(p1, timeout=10), b"ping\n")
        # The tunnel restarted (its forwards changed) but kept its listener: same socket.
        self.assertEqual(tcp_listener_inode(p1), before)
        # systemd saw RELOADING=1, then READY=1.
        text = self.c.run(["journalctl", "--no-pager", "--after-cursor", mark, "-o", "cat",
                           "-u", UNIT]).stdout
        notes = re.findall(r"Got notification message from PID \d+ \(([^)]*)\)", text)
        kinds = [n.split(",")[0] for n in notes if n.startswith(("RELOADING", "READY"))]
        self.assertIn("RELOADING=1", kinds, text[-3000:])
        self.assertEqual(kinds[kinds.index("RELOADING=1"):][:2], ["RELOADING=1", "READY=1"],
                         notes)
        # Drop the first forward: it stops listening and leaves the FD store.
        write_config([p2])
        self.systemctl("reload", UNIT)
        self._wait_store(2)
        with self.assertRaises(ConnectionRefusedError):
            harness.echo_once(p1, timeout=5)
        self.assertEqual(harness.echo_once(p2, timeout=10), b"ping\n")
        # Back to the first one only; after a restart the store still holds exactly it.
        write_config([p1])
        self.systemctl("reload", UNIT)
        self._wait_store(2)
        self.systemctl("restart", UNIT)
        self.wait_status(r"^1/1 tunnels up$")
        self.assertEqual(harness.echo_once(p1, timeout=10), b"ping\n")
        with self.assertRaises(ConnectionRefusedError):
            harness.echo_once(p2, timeout=5)
        self.assertEqual(self.show("NFileDescriptorStore")["NFileDescriptorStore"], "2")

    def _journal_cursor(self):
        out = self.c.run(["journalctl", "--no-pager", "-n", "0", "--show-cursor"]).stdout
        return re.search(r"cursor: (\S+)", out).group(1)

    def _wait_store(self, n, timeout=5.0):
        deadline = time.monotonic() + timeout * harness.slowdown()
        while True:
            got = self.show("NFileDescriptorStore")["NFileDescriptorStore"]
            if got == str(n):
                return
            if time.monotonic() > deadline:
                self.fail("NFileDescriptorStore is %s, expected %d" % (got, n))
            time.sleep(0.05)

    def restart_with_clients(self, action, expect_refusals=False, min_in_gap=3):
        """Runs action() while a client connects every 10 ms; returns (prober, watch, t0).
        Checks that a new process took over and served clients again, that at least
        min_in_gap clients arrived while none was running, and that none was refused."""
        self.ensure_up()
        before = self._listeners()
        cursor = self._journal_cursor()
        restarts = int(self.show("NRestarts")["NRestarts"])
        old = self.main_host_pid()
        prober = Prober(env["port"], interval=0.01, timeout=PROBE_TIMEOUT).start()
        time.sleep(0.3)
        watch = ProcessWatch(old)
        t0 = time.monotonic()
        try:
            action(old)
            gone = watch.wait(30)
            self.assertIsNotNone(gone, "the old moletun (pid %d) never went away" % old)
            self.wait_status(r"^1/1 tunnels up$", timeout=30)
            deadline = time.monotonic() + 15
            while prober.served_after(gone) is None and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)
        finally:
            watch.stop()
            prober.stop()
        new = self.main_host_pid()
        self.assertNotEqual(new, old)
        counts = prober.counts()
        after = [a for a in prober.attempts if a.start >= watch.gone and a.outcome == "served"]
        self.assertTrue(after, "no client served after the restart: %s" % counts)
        # Served again from here on; clients that came in between found no moletun running.
        back = min(a.end for a in after)
        in_gap = [a for a in prober.attempts if watch.gone <= a.start < back]
        waits = [a.end - a.start for a in prober.attempts if a.outcome == "served"]
        print("%s: counts %s; old process gone at +%.3fs, clients served again at +%.3fs; "
              "%d clients arrived in between; longest wait of a served client %.3fs" % (
                  action.__name__, counts, watch.gone - t0, back - t0, len(in_gap),
                  max(waits)))
        if expect_refusals:
            return prober, watch, t0
        self.assertEqual(counts.get("refused", 0), 0,
                         [a for a in prober.attempts if a.outcome == "refused"][:5])
        # The gap was really exercised: clients arrived while no moletun ran.
        self.assertGreaterEqual(len(in_gap), min_in_gap, "too few clients in the restart gap")
        # Every client that came after the old process was gone was served.
        late = [a for a in prober.attempts if a.start >= watch.gone and a.outcome != "served"]
        if late:
            # what the new process said about its clients, for the failure message
            journal = self.c.run(["journalctl", "--no-pager", "--after-cursor", cursor, "-o",
                                  "short-monotonic", "-u", UNIT]).stdout
            self.fail("clients that came after the old process was gone were not served: "
                      "%s; gone at %.3f; journal:\n%s" % (late, watch.gone, journal[-4000:]))
        # Clients the old process had accepted die with it (a restart ends its
        # connections); there can only be a few, those in flight at that moment.
        early = [a for a in prober.attempts if a.start < watch.gone and a.outcome != "served"]
        self.assertTrue(all(a.outcome == "closed" for a in early), early)
        self.assertLessEqual(len(early), 10, early)
        # The very same sockets serve again.
        self.assertEqual(self._listeners(), before)
        self.assertGreaterEqual(int(self.show("NRestarts")["NRestarts"]), restarts)
        return prober, watch, t0

    def test_6_systemctl_restart_refuses_no_client(self):
        def systemctl_restart(old):
            self.systemctl("restart", UNIT)
        # No RestartSec on a manual restart: the gap is start-up alone, ~0.1 s.
        self.restart_with_clients(systemctl_restart, min_in_gap=1)
        r = self.c.run([env["bin"], "ctl", "status"], check=False)
        self.assertEqual(r.returncode, 0, r.stdout)

    def test_7_sigkill_restart_refuses_no_client(self):
        restarts = int(self.show("NRestarts")["NRestarts"])

        def sigkill(old):
            self.systemctl("kill", "-s", "KILL", UNIT)
        self.restart_with_clients(sigkill)
        self.assertEqual(int(self.show("NRestarts")["NRestarts"]), restarts + 1)

    def test_8_watchdog_restart_refuses_no_client(self):
        restarts = int(self.show("NRestarts")["NRestarts"])
        mark = self._journal_cursor()

        def sigstop(old):
            os.kill(old, signal.SIGSTOP)
        _, watch, t0 = self.restart_with_clients(sigstop)
        self.assertEqual(int(self.show("NRestarts")["NRestarts"]), restarts + 1)
        text = self.c.run(["journalctl", "--no-pager", "--after-cursor", mark, "-o", "cat",
                           "-u", UNIT]).stdout
        self.assertRegex(text, r"Failed with result 'watchdog'")
        # Killed by the watchdog, not earlier: the last ping came at most WatchdogSec/2
        # before the stop, so the kill comes WatchdogSec/2 .. WatchdogSec after it.
        self.assertGreater(watch.gone - t0, WATCHDOG_SEC / 2 * 0.9)

    def test_9_without_fd_store_clients_are_refused(self):
        # The control experiment: the same restart, the FD store switched off.
        dropin = "/etc/systemd/system/moletun.service.d/zz-no-fdstore.conf"
        self.systemctl("stop", UNIT)
        self.c.write(dropin, "[Service]\nFileDescriptorStoreMax=0\n")
        self.systemctl("daemon-reload")
        try:
            def systemctl_restart_without_store(old):
                self.systemctl("restart", UNIT)
            prober, _, _ = self.restart_with_clients(systemctl_restart_without_store,
                                                     expect_refusals=True)
            self.assertGreater(prober.counts().get("refused", 0), 0)
        finally:
            self.systemctl("stop", UNIT)
            self.c.run(["rm", "-f", dropin])
            self.systemctl("daemon-reload")

    def test_x_ssh_host_alias_in_the_sandbox(self):
        """ssh_host: ssh -G runs as the service's user inside its sandbox (seccomp filter,
        NoNewPrivileges, ProtectHome, no capabilities), at reload and at start, and moletun
        check (as that user) shows where each value came from."""
        self.ensure_up()
        sc, echo, port = env["sidecar"], env["echo"], env["port2"]
        self.c.write("/etc/moletun/ssh_config",
                     "Host db-alias\n    HostName 127.0.0.1\n    Port %d\n    User %s\n"
                     "    IdentityFile %s/id_moletun\n    UserKnownHostsFile %s/known_hosts\n"
                     "    LocalForward 127.0.0.1:%d %s\n" % (
                         sc.port, sc.user, FILES, FILES, port, echo.addr), mode=0o644)
        self.c.write(CONFIG, "[moletun]\nlog_level = info\n\n[tunnel:db]\nssh_host = db-alias\n"
                     "ssh_config = /etc/moletun/ssh_config\nprobe = none\n",
                     mode=0o640, owner="root:moletun")
        try:
            r = self.c.run([env["bin"], "check", "-c", CONFIG], check=False)
            self.assertEqual(r.returncode, 0, r.stdout)
            self.assertIn("checking as user moletun", r.stdout)
            self.assertIn("host = 127.0.0.1  (from ssh_config)", r.stdout)
            self.systemctl("reload", UNIT)
            self.wait_status(r"^1/1 tunnels up$")
            self.assertEqual(harness.echo_once(port, timeout=10), b"ping\n")
            self.systemctl("restart", UNIT)
            self.wait_status(r"^1/1 tunnels up$")
            self.assertEqual(harness.echo_once(port, timeout=10), b"ping\n")
            self.assertNotRegex(self.journal("-p", "err"), r"ssh_host|ssh -G")
        finally:
            write_config([env["port"]])
            self.systemctl("restart", UNIT)
            self.wait_status(r"^1/1 tunnels up$")

    def test_y_metrics_textfile_in_the_sandbox(self):
        textfile_dir = "/var/lib/prometheus/node-exporter"
        prom = textfile_dir + "/moletun.prom"
        self.systemctl("stop", UNIT)
        # ReadWritePaths= applies to directories that exist when the service starts
        self.c.run(["mkdir", "-p", "-m", "0755", textfile_dir])
        write_config([env["port"]], extra_global="metrics_textfile = %s\n"
                     "metrics_interval = 200ms\n" % prom)
        try:
            self.ensure_up()
            # writable for the sandbox, but not yet for user moletun
            self.wait_journal(r"metrics_textfile %s: Permission denied" % re.escape(prom),
                              "-o", "cat")
            self.c.run(["setfacl", "-m", "u:moletun:rwx", textfile_dir])
            self.wait_journal(r"metrics_textfile %s: written again" % re.escape(prom),
                              "-o", "cat")
            self.assertEqual(self.c.run(["stat", "-c", "%U %a", prom]).stdout.strip(),
                             "moletun 644")
            self.assertIn('moletun_tunnel_up{tunnel="db"} 1\n',
                          self.c.run(["cat", prom]).stdout)
            self.systemctl("stop", UNIT)
            text = self.c.run(["cat", prom]).stdout
            self.assertIn('moletun_tunnel_up{tunnel="db"} 0\n', text)
            self.assertIn('moletun_tunnel_health{tunnel="db",health="down"} 1\n', text)
        finally:
            self.systemctl("stop", UNIT, check=False)
            write_config([env["port"]])
            self.c.run(["rm", "-rf", "/var/lib/prometheus"])

    def test_z_stop_is_clean_and_quick(self):
        self.ensure_up()
        t0 = time.monotonic()
        self.systemctl("stop", UNIT)
        took = time.monotonic() - t0
        st = self.show("ActiveState", "Result", "ExecMainStatus", "ExecMainCode",
                       "NFileDescriptorStore")
        print("stop took %.2fs: %s" % (took, st))
        self.assertLess(took, 5.0)
        self.assertEqual(st["ActiveState"], "inactive")
        self.assertEqual(st["Result"], "success")
        self.assertEqual(st["ExecMainStatus"], "0")
        # A stop is not a restart: the store is emptied and the port is closed for good.
        self.assertEqual(st["NFileDescriptorStore"], "0")
        with self.assertRaises(ConnectionRefusedError):
            harness.echo_once(env["port"], timeout=5)
        self.assertIsNone(tcp_listener_inode(env["port"]))
        self.assertIsNone(unix_listener_inode(CONTROL_SOCKET))
        self.wait_journal(r"^stopped$", "-o", "cat")


if __name__ == "__main__":
    unittest.main(verbosity=2)
