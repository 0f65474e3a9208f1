"""A booted systemd in a systemd-nspawn container, for tests that need a real service manager.

The container runs this machine's own /usr read-only on a tmpfs root (`--volatile=yes`), so
nothing is installed into it: the build is installed with `meson install --destdir` into a
temp dir (mode 0755, so the service user can traverse it) and bound in read-only. It shares
the host's network namespace, so a sidecar sshd and targets started on 127.0.0.1 by the
test harness are reachable from inside, and the test reaches moletun's listeners from
outside.

Container  boot(), run(cmd) inside (nsenter into its mount/uts/ipc/pid namespaces),
           write(path, text), shutdown(); every process is ended by its own pid.
unavailable_reason()  why nspawn cannot run here, or None.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time

import harness

NSPAWN = shutil.which("systemd-nspawn") or "/usr/bin/systemd-nspawn"
NSENTER = shutil.which("nsenter") or "/usr/bin/nsenter"
# Units of other packages that would bind ports in the host's network namespace.
MASKED_UNITS = ("ssh.socket", "ssh.service", "postgresql.service", "exim4.service")


def unavailable_reason():
    """None when a container can boot here, else the reason (printed when skipping)."""
    if os.geteuid() != 0:
        return "systemd-nspawn needs root"
    if not os.access(NSPAWN, os.X_OK):
        return "systemd-nspawn not found (apt-get install systemd-container)"
    if not os.access(NSENTER, os.X_OK):
        return "nsenter not found (util-linux)"
    if not os.path.exists("/lib/systemd/systemd") and not os.path.exists("/usr/lib/systemd/systemd"):
        return "systemd is not installed"
    return None


def meson_install(build_dir, workdir):
    """`meson install --destdir` of build_dir into a new 0755 dir under workdir; its path."""
    dest = tempfile.mkdtemp(prefix="destdir-", dir=workdir)
    os.chmod(dest, 0o755)
    r = subprocess.run(["meson", "install", "-C", build_dir, "--destdir", dest, "--no-rebuild",
                        "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError("meson install failed:\n" + r.stdout[-3000:])
    # Every directory on the way must be traversable by the service user.
    for root, dirs, _ in os.walk(dest):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
    return dest


def find_installed(dest, name, under=()):
    """The path of an installed file called `name` below dest (optionally in a dir ending in
    one of `under`)."""
    for root, _, files in os.walk(dest):
        if name in files and (not under or any(root.endswith(u) for u in under)):
            return os.path.join(root, name)
    raise RuntimeError("%s not installed under %s" % (name, dest))


class Container:
    """One booted container. binds: {host_dir: container_dir}, bound read-only."""

    def __init__(self, workdir, binds, name=None, timeout=600, root="/", netns=None):
        """root: "/" boots this machine's own /usr on a tmpfs root (--volatile=yes); any
        other directory (an overlay of / that dpkg may write into) is booted as it is.
        netns: the name of a network namespace (ip netns) to boot into, else the host's."""
        self.name = name or "moletun-test-%d" % os.getpid()
        self.binds = dict(binds)
        self.timeout = timeout
        self.root = root
        self.netns = netns
        self.console_path = os.path.join(workdir, "console-%s.log" % self.name)
        self.proc = None
        self.init_pid = None

    def boot(self, wait=60.0):
        args = ["timeout", "-s", "KILL", str(self.timeout), NSPAWN, "-D", self.root]
        if self.root == "/":
            args.append("--volatile=yes")
        if self.netns:
            args.append("--network-namespace-path=/run/netns/%s" % self.netns)
        args += ["-M", self.name, "--register=no", "--keep-unit", "--console=pipe", "-b"]
        args += ["--bind-ro=%s:%s" % (h, c) for h, c in self.binds.items()]
        args += ["--", "systemd.firstboot=off"]
        args += ["systemd.mask=%s" % u for u in MASKED_UNITS]
        self._console = open(self.console_path, "ab")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._console,
                                     stderr=self._console, start_new_session=True)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and self.init_pid is None:
            if self.proc.poll() is not None:
                raise RuntimeError("systemd-nspawn exited %s:\n%s" % (
                    self.proc.returncode, self.console()[-3000:]))
            self.init_pid = self._find_init()
            time.sleep(0.05)
        if self.init_pid is None:
            raise RuntimeError("container init not found:\n" + self.console()[-3000:])
        # Until systemd's private bus socket exists, systemctl cannot connect: try again.
        state = ""
        while time.monotonic() < deadline:
            left = max(1.0, deadline - time.monotonic())
            r = self.run(["systemctl", "is-system-running", "--wait"], check=False, timeout=left)
            state = r.stdout.strip()
            if state in ("running", "degraded") or self.proc.poll() is not None:
                break
            time.sleep(0.1)
        if state not in ("running", "degraded"):
            raise RuntimeError("container did not boot (%s):\n%s" % (state, self.console()[-3000:]))
        return self

    def _find_init(self):
        for pid in harness.descendants(self.proc.pid):
            try:
                with open("/proc/%d/comm" % pid) as f:
                    if f.read().strip() == "systemd":
                        return pid
            except OSError:
                pass
        return None

    def console(self):
        try:
            with open(self.console_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def run(self, cmd, check=True, input=None, timeout=60.0):
        """Runs cmd (a list) inside; returns CompletedProcess with stdout+stderr together."""
        ns = ["-m", "-u", "-i", "-p"] + (["-n"] if self.netns else [])
        full = [NSENTER, "-t", str(self.init_pid)] + ns + ["--"] + list(cmd)
        r = subprocess.run(full, input=input, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           universal_newlines=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError("%s exited %d:\n%s" % (" ".join(cmd), r.returncode, r.stdout))
        return r

    def sh(self, script, check=True, timeout=60.0):
        return self.run(["sh", "-c", script], check=check, timeout=timeout)

    def write(self, path, text, mode=0o644, owner="root:root"):
        self.run(["sh", "-c", 'cat > "$1" && chmod %o "$1" && chown %s "$1"' % (mode, owner),
                  "sh", path], input=text)

    def show(self, unit, *props):
        """{prop: value} from systemctl show."""
        r = self.run(["systemctl", "show", unit, "-p", ",".join(props)])
        out = {}
        for line in r.stdout.splitlines():
            k, _, v = line.partition("=")
            out[k] = v
        return out

    def host_pids(self, comm, cmdline_has=""):
        """Host pids of processes in the container named comm (and whose command line
        contains cmdline_has)."""
        out = []
        for pid in harness.descendants(self.init_pid):
            try:
                with open("/proc/%d/comm" % pid) as f:
                    if f.read().strip() != comm:
                        continue
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    if cmdline_has.encode() not in f.read().replace(b"\0", b" "):
                        continue
            except OSError:
                continue
            out.append(pid)
        return out

    def shutdown(self, timeout=20.0):
        """Halts the container (SIGTERM to nspawn asks its init to halt), then SIGKILLs the
        timeout/nspawn pair and the whole tree if it is not gone in time."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            nspawn = [p for p in harness.descendants(self.proc.pid)
                      if _comm(p) == "systemd-nspawn"]
            for p in nspawn:
                harness._signal(p, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                harness.kill_tree(self.proc.pid)
                self.proc.wait(5)
        self._console.close()
        self.proc = None


def _comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return ""
