"""The daemon's descriptors: the soft RLIMIT_NOFILE is raised to the hard limit at start
(and reported), every descriptor the daemon holds is close-on-exec, and an exec alert
program inherits nothing but stdin, stdout and stderr."""

import json
import os
import re
import resource
import shutil
import subprocess
import threading
import time

import harness
from harness import EchoServer, connect, tunnel_section
from webhook import WebhookReceiver

O_CLOEXEC = 0o2000000
SHELL_SOFT_LIMIT = 1024  # what a login shell gives (bash `ulimit -Sn`)


def ctl(m, *args, timeout=40):
    e = dict(os.environ)
    e.pop("MOLETUN_SOCKET", None)
    return subprocess.run([harness.moletun_bin(), "ctl", "-s", m.control_socket] + list(args),
                          capture_output=True, text=True, timeout=timeout, env=e)


def alert_section(name, url=None, exec_path=None, **keys):
    lines = ["[alert:%s]" % name]
    if url:
        lines.append("url = %s" % url)
    if exec_path:
        lines.append("exec = %s" % exec_path)
    lines += ["%s = %s" % kv for kv in keys.items()]
    return "\n".join(lines) + "\n"


def fd_table(pid):
    """[(fd, open flags, link target)] of every descriptor of pid, by number. The flags
    come from /proc/PID/fdinfo/N ("flags: 02004002", octal)."""
    out = []
    for name in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, name))
            with open("/proc/%d/fdinfo/%s" % (pid, name)) as f:
                flags = next(int(l.split()[1], 8) for l in f if l.startswith("flags:"))
        except OSError:  # closed between listdir and here
            continue
        out.append((int(name), flags, target))
    return sorted(out)


def soft_nofile(pid):
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError("no 'Max open files' in /proc/%d/limits" % pid)


class DescriptorTest(harness.TunnelTest):
    def setUp(self):
        super().setUp()
        self.echo = self.server(EchoServer)
        self.lp = harness.free_port()

    def tunnel(self, sc, name="t1", port=None, **keys):
        kh = self.known_hosts(sc, name="known_hosts_" + name)
        return tunnel_section(name, sc, known_hosts_file=kh, local_forward=[
            "127.0.0.1:%d %s" % (port or self.lp, self.echo.addr)], **keys)

    def status_json(self, m):
        r = ctl(m, "status", "--json")
        self.assertIn(r.returncode, (0, 3), r.stderr)
        return json.loads(r.stdout)

    def test_nofile_limit_raised_to_hard(self):
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard <= SHELL_SOFT_LIMIT:
            self.skipTest("hard RLIMIT_NOFILE is %d: nothing above %d to raise to" % (
                hard, SHELL_SOFT_LIMIT))
        sc = self.sidecar(permit_open=[self.echo.addr])
        m = self.moletun(self.tunnel(sc), start=False)
        m.start(nofile=(SHELL_SOFT_LIMIT, hard))
        self.assertUp(m)
        doc = self.status_json(m)
        daemon = doc.get("daemon")
        self.assertIsNotNone(daemon, "no daemon object in status --json: %r" % sorted(doc))
        self.assertEqual(set(daemon), {"pid", "nofile_limit", "metrics_textfile_stale",
                                       "metrics_textfile_error"})
        self.assertIsNone(daemon["metrics_textfile_stale"])  # none configured
        self.assertEqual(daemon["pid"], m.proc.pid)
        limit = daemon["nofile_limit"]
        lines = m.grep(r"descriptor limit \d+")
        print("started with soft %d, hard %d: %s; status reports %d" % (
            SHELL_SOFT_LIMIT, hard, [l for _, l in lines], limit))
        self.assertEqual(len(lines), 1, "the limit is not logged once")
        if harness.under_wrapper():
            # valgrind keeps descriptors of its own above the soft limit it was started
            # with and pins the daemon's hard limit there: nothing to raise to
            print("under %s the daemon's hard limit is the soft one it got: not raised" %
                  os.environ["MOLETUN_WRAPPER"].split()[0])
            self.assertRegex(lines[0][1], r"info: descriptor limit %d( \(raised from %d\))?$"
                             % (limit, SHELL_SOFT_LIMIT))
            self.assertGreaterEqual(limit, SHELL_SOFT_LIMIT)
        else:
            self.assertRegex(lines[0][1], r"info: descriptor limit %d \(raised from %d\)$" % (
                limit, SHELL_SOFT_LIMIT))
            self.assertEqual(limit, hard)
            self.assertEqual(soft_nofile(m.proc.pid), hard)
        r = ctl(m, "metrics")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("# TYPE moletun_daemon_nofile_limit gauge\n", r.stdout)
        self.assertRegex(r.stdout, r"(?m)^moletun_daemon_nofile_limit %d$" % limit)

    def test_nofile_limit_already_at_hard(self):
        """Soft already equal to hard: logged without "raised from", nothing else."""
        sc = self.sidecar(permit_open=[self.echo.addr])
        m = self.moletun(self.tunnel(sc), start=False)
        m.start(nofile=512)
        self.assertUp(m)
        limit = self.status_json(m)["daemon"]["nofile_limit"]
        self.assertIsNotNone(m.wait_for(r"info: descriptor limit %d$" % limit, 1))
        if not harness.under_wrapper():
            self.assertEqual(limit, 512)

    def test_every_descriptor_is_close_on_exec(self):
        """A daemon with all kinds of descriptors open at once: local and remote forward
        clients, an ssh-agent session, a control client, a webhook request in flight
        (libcurl) and an exec target; every descriptor above 2 must carry O_CLOEXEC."""
        rport = harness.free_port()
        sc = self.sidecar(permit_open=[self.echo.addr],
                          permit_listen=["127.0.0.1:%d" % rport])
        hook = WebhookReceiver(hang=True)
        self.addCleanup(hook.cleanup)
        out = os.path.join(self.tmp, "exec-ran")
        script = os.path.join(self.tmp, "on-alert.sh")
        with open(script, "w") as f:
            f.write("#!/bin/sh\ntouch %s\n" % out)
        os.chmod(script, 0o755)
        tunnels = [self.tunnel(sc, remote_forward=["127.0.0.1:%d %s" % (rport,
                                                                          self.echo.addr)])]
        lp2 = harness.free_port()
        agent_sock = self.start_agent(sc)
        if agent_sock:
            section = self.tunnel(sc, "t2", port=lp2, use_agent="yes",
                                  agent_socket=agent_sock)
            tunnels.append("\n".join(l for l in section.splitlines()
                                     if not l.startswith("identity_file")) + "\n")
        m = self.moletun(tunnels + [alert_section("hook", hook.url(), timeout="10s"),
                                    alert_section("script", exec_path=script)])
        self.assertUp(m)
        if agent_sock:
            self.assertUp(m, "t2")
        clients = [connect(self.lp) for _ in range(3)] + [connect(rport) for _ in range(2)]
        if agent_sock:
            clients.append(connect(lp2))
        self.addCleanup(lambda: [c.close() for c in clients])
        for c in clients:
            c.sendall(b"x\n")
            self.assertEqual(c.recv(16), b"x\n")
        # `alert-test` runs both targets; the webhook never answers, so the HTTP request
        # (and the ctl client waiting for the result) stay open while we look.
        th = threading.Thread(target=ctl, args=(m, "alert-test"))
        th.start()
        self.addCleanup(th.join, 30)
        self.addCleanup(hook.cleanup)
        self.assertEqual(len(hook.wait_requests(1, 5)), 1, "no webhook request")
        deadline = time.monotonic() + 5 * harness.slowdown()
        while not os.path.exists(out) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertTrue(os.path.exists(out), "the exec target did not run")

        table = fd_table(m.proc.pid)
        inherited = [t for t in table if t[0] <= 2]
        own = [t for t in table if t[0] > 2]
        if harness.under_wrapper():
            # valgrind moves its own descriptors above the hard limit it gives the daemon
            # (which the daemon reports), and leaves its --log-file open at the lowest free
            # number as well: those are not moletun's
            limit = self.status_json(m)["daemon"]["nofile_limit"]
            log = os.path.join(m.dir, "valgrind.%d.log" % m.proc.pid)
            tool = [t for t in own if t[0] >= limit or t[2] == log]
            own = [t for t in own if t not in tool]
            print("not checked, %s's own (its log, and at or above the daemon's limit %d): "
                  "%s" % (os.environ["MOLETUN_WRAPPER"].split()[0], limit,
                          ", ".join("%d %s" % (t[0], t[2]) for t in tool)))
        for fd, flags, target in table:
            print("fd %3d  flags %08o  %-8s  %s" % (
                fd, flags, "cloexec" if flags & O_CLOEXEC else "INHERIT", target))
        print("fds 0-2 are the daemon's stdin/stdout/stderr (%s): not checked" % (
            ", ".join(t[2] for t in inherited)))
        kinds = {re.sub(r"[:\[].*", "", t[2]) for t in own}
        self.assertGreaterEqual(len(own), 12, "fewer descriptors than the setup opens")
        self.assertIn("anon_inode", kinds)  # libev's epoll and eventfd
        leaking = [t for t in own if not t[1] & O_CLOEXEC]
        self.assertEqual(leaking, [], "descriptors an exec would inherit: %r" % leaking)

    def start_agent(self, sc):
        """An ssh-agent holding the sidecar's user key; its socket path, or None."""
        if not shutil.which("ssh-agent") or not shutil.which("ssh-add"):
            print("ssh-agent/ssh-add not installed: no agent-authenticated tunnel")
            return None
        sock = os.path.join(self.tmp, "agent.sock")
        agent = subprocess.Popen(["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        self.addCleanup(agent.wait)
        self.addCleanup(agent.kill)
        deadline = time.monotonic() + 5 * harness.slowdown()
        while not os.path.exists(sock) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertTrue(os.path.exists(sock), "ssh-agent did not create its socket")
        subprocess.run(["ssh-add", sc.user_key], env=dict(os.environ, SSH_AUTH_SOCK=sock),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return sock

    def test_exec_target_inherits_only_stdio(self):
        """The program of an exec alert lists its own descriptors (`ls -l /proc/self/fd`,
        run by /bin/sh with stdout redirected to a file): it must see 0, 1, 2 and the one
        descriptor ls itself opens to read that directory, nothing else."""
        sc = self.sidecar(permit_open=[self.echo.addr])
        hook = WebhookReceiver()
        self.addCleanup(hook.cleanup)
        out = os.path.join(self.tmp, "fds")
        script = os.path.join(self.tmp, "list-fds.sh")
        with open(script, "w") as f:
            f.write("#!/bin/sh\nls -l /proc/self/fd > %s.tmp\nmv %s.tmp %s\n" % (
                out, out, out))
        os.chmod(script, 0o755)
        m = self.moletun([self.tunnel(sc), alert_section("hook", hook.url()),
                          alert_section("script", exec_path=script)])
        self.assertUp(m)
        clients = [connect(self.lp) for _ in range(3)]
        self.addCleanup(lambda: [c.close() for c in clients])
        for c in clients:
            c.sendall(b"x\n")
            self.assertEqual(c.recv(16), b"x\n")
        r = ctl(m, "alert-test")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        with open(out) as f:
            listing = f.read()
        print("the exec target's `ls -l /proc/self/fd`:\n" + listing)
        fds = {}
        for line in listing.splitlines():
            mm = re.search(r" (\d+) -> (.*)$", line)
            if mm:
                fds[int(mm.group(1))] = mm.group(2)
        # ls's own: the directory it reads, /proc/<its pid>/fd, opened after the exec
        own = [fd for fd, target in fds.items() if re.fullmatch(r"/proc/\d+/fd", target)]
        self.assertEqual(len(own), 1, fds)
        self.assertEqual(fds[0], "/dev/null")
        self.assertEqual(fds[1], out + ".tmp")
        self.assertEqual(sorted(set(fds) - set(own)), [0, 1, 2],
                         "the exec target inherited descriptors: %r" % fds)


if __name__ == "__main__":
    harness.main()
