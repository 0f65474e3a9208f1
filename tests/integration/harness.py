"""Test harness for moletun's integration tests (python3 standard library only).

Everything here talks to real peers: a real OpenSSH sshd ("the sidecar") configured like
the production sidecar, real TCP targets, and the real `moletun run` binary ($MOLETUN_BIN).

Main pieces:
  Sidecar     sshd on a free loopback port in its own temp dir (host key, user key,
              authorized_keys, hardened sshd_config); start/stop/kill/restart,
              SIGSTOP/SIGCONT of the per-connection processes, known_hosts writers.
  EchoServer  threaded echo target; tracks concurrent and total connections.
  SinkSource  target speaking a tiny line protocol (see its docstring) for checksums and
              half-close (EOF) tests.
  CloseServer accepts and closes at once.
  Moletun     writes a config, runs the binary, tails its stderr, waits for log lines and
              state transitions, stops it and reports exit code and duration.
  TunnelTest  unittest.TestCase base class: temp dir, helpers, cleanup that leaves no
              process behind, log dumps when a test fails.

Exit code 77 tells meson a test was skipped; `skip_module()` prints the reason first.

MOLETUN_WRAPPER (e.g. "valgrind --leak-check=full --log-file={logdir}/valgrind.%p.log")
runs every `moletun run` under that command; {logdir} becomes the daemon's work dir, and
each valgrind.*.log there is checked like the sanitizer output (tests/valgrind.sh).

slowdown() is the one scale factor for time in the tests (valgrind, ASan): the waits here
(wait_for, wait_state, wait_transition, assertUp, wait_echo, stop, and the webhook
receiver's wait_requests) apply it themselves; a test multiplies its own deadlines and the
upper bounds it asserts on durations by it, never a bound the daemon keeps exactly.
"""

import base64
import hashlib
import hmac
import os
import pwd
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

SKIP_EXIT = 77
EXIT_WAIT = 3.0  # seconds from SIGTERM to exit at the end of a test (times slowdown())
SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
NOLOGIN = "/usr/sbin/nologin"

# Every process this module starts, so a crash in a test still leaves nothing behind.
_live_objects = []
_live_lock = threading.Lock()


def skip_module(reason):
    """Prints why and exits with meson's skip code: a missing prerequisite is never a pass."""
    print("SKIP: " + reason, flush=True)
    sys.exit(SKIP_EXIT)


def moletun_bin():
    path = os.environ.get("MOLETUN_BIN")
    if not path:
        here = os.path.dirname(os.path.abspath(__file__))
        guess = os.path.normpath(os.path.join(here, "..", "..", "build", "moletun"))
        if os.access(guess, os.X_OK):
            return guess
        raise RuntimeError("MOLETUN_BIN is not set and build/moletun does not exist")
    return path


def current_user():
    return pwd.getpwuid(os.getuid()).pw_name


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ---------------------------------------------------------------------------------------
# Ports and processes
# ---------------------------------------------------------------------------------------

_handed_out_ports = set()
_port_lock = threading.Lock()


def free_port(host="127.0.0.1"):
    """A port nothing listens on right now and that this process has not handed out yet.

    Binding port 0 and closing leaves a small race with other programs; not handing out the
    same port twice removes the race between the pieces of one test.
    """
    with _port_lock:
        for _ in range(100):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((host, 0))
                port = s.getsockname()[1]
            finally:
                s.close()
            if port not in _handed_out_ports:
                _handed_out_ports.add(port)
                return port
    raise RuntimeError("no free port found")


def _children_map():
    """{ppid: [pid, ...]} for every process visible in /proc."""
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                data = f.read()
        except OSError:
            continue
        # comm may contain spaces and parentheses: the ppid follows the last ')'.
        rest = data[data.rfind(b")") + 2:].split()
        if len(rest) < 2:
            continue
        kids.setdefault(int(rest[1]), []).append(int(name))
    return kids


def descendants(pid):
    """All descendants of pid (children, grandchildren...), parents before children."""
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def _signal(pid, sig):
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def _pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return False
    state = data[data.rfind(b")") + 2:].split()[0]
    return state != b"Z"


def kill_tree(pid):
    """SIGKILLs pid and every descendant, freezing the tree first so nothing forks or gets
    reparented (and lost) while we collect it."""
    frozen = set()
    for _ in range(20):
        tree = [pid] + descendants(pid)
        new = [p for p in tree if p not in frozen]
        if not new:
            break
        for p in new:
            _signal(p, signal.SIGSTOP)
            frozen.add(p)
    for p in frozen:
        _signal(p, signal.SIGKILL)
        _signal(p, signal.SIGCONT)


def run(cmd, check=True, **kw):
    return subprocess.run(cmd, check=check, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, **kw)


def wrapper_command(logdir):
    """The MOLETUN_WRAPPER command prefix with {logdir} filled in ([] when unset)."""
    text = os.environ.get("MOLETUN_WRAPPER", "").strip()
    return [w.replace("{logdir}", logdir) for w in shlex.split(text)] if text else []


def under_wrapper():
    """True when moletun runs under MOLETUN_WRAPPER (valgrind): slower, and its CPU time
    includes the tool's."""
    return bool(os.environ.get("MOLETUN_WRAPPER", "").strip())


_slowdown = None


def slowdown():
    """How many times slower than a plain build moletun runs here: 4 under
    MOLETUN_WRAPPER (valgrind), 2 when built with AddressSanitizer, else 1. Deadlines and
    upper bounds on durations are multiplied by it; a bound the daemon guarantees exactly
    (a threshold, a count) is not."""
    global _slowdown
    if _slowdown is None:
        asan = False
        if not under_wrapper():
            try:
                with open(moletun_bin(), "rb") as f:
                    asan = b"libasan.so" in f.read()
            except (OSError, RuntimeError):
                pass
        _slowdown = 4 if under_wrapper() else 2 if asan else 1
    return _slowdown


def proc_cpu_seconds(pid):
    """User + system CPU time the process has used so far (/proc/PID/stat)."""
    with open("/proc/%d/stat" % pid, "rb") as f:
        data = f.read()
    fields = data[data.rfind(b")") + 2:].split()
    # fields[0] is field 3 (state): utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def proc_memory_kb(pid):
    """{"Rss": kB, "Private_Dirty": kB, ...} from /proc/PID/smaps_rollup."""
    out = {}
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[0].endswith(":") and parts[2] == "kB":
                out[parts[0][:-1]] = int(parts[1])
    return out


def proc_uses_asan(pid):
    """True when the process runs with AddressSanitizer (its shadow memory makes a core
    dump huge, and its quarantine makes private memory grow by design)."""
    with open("/proc/%d/maps" % pid) as f:
        return "libasan" in f.read()


class CpuMeter:
    """CPU time a process used between start() and stop(), against wall time."""

    def __init__(self, pid):
        self.pid = pid
        self.cpu = self.wall = None

    def start(self):
        self._cpu0 = proc_cpu_seconds(self.pid)
        self._wall0 = time.monotonic()
        return self

    def stop(self):
        self.cpu = proc_cpu_seconds(self.pid) - self._cpu0
        self.wall = time.monotonic() - self._wall0
        return self

    @property
    def share(self):
        return self.cpu / self.wall if self.wall else 0.0

    def __str__(self):
        return "%.2fs CPU in %.1fs (%.1f%%)" % (self.cpu, self.wall, 100 * self.share)


def openssh_key_blob(pem):
    """The openssh-key-v1 blob inside an OpenSSH private key file's armour."""
    lines = [l.strip() for l in pem.strip().splitlines()]
    return base64.b64decode("".join(lines[1:-1]))


def openssh_key_fields(blob):
    """(kdf options offset, fields): splits an openssh-key-v1 blob into its SSH strings
    (cipher, kdf, kdf options, then after the key count the public key and the private
    section)."""
    p = len(b"openssh-key-v1\0")
    fields, offsets = [], []
    for i in range(5):
        if i == 3:
            p += 4  # the key count
        n = int.from_bytes(blob[p:p + 4], "big")
        offsets.append(p + 4)
        fields.append(blob[p + 4:p + 4 + n])
        p += 4 + n
    return offsets, fields


def with_bcrypt_rounds(pem, rounds):
    """The encrypted OpenSSH key `pem` with its bcrypt rounds (stored in the clear) set to
    `rounds`: ssh-keygen would take forever to write a key with 2^32 rounds."""
    blob = bytearray(openssh_key_blob(pem))
    offsets, fields = openssh_key_fields(blob)
    salt_len = int.from_bytes(fields[2][:4], "big")
    at = offsets[2] + 4 + salt_len
    blob[at:at + 4] = rounds.to_bytes(4, "big")
    lines = pem.strip().splitlines()
    text = base64.b64encode(bytes(blob)).decode()
    return "\n".join([lines[0]] + [text[i:i + 70] for i in range(0, len(text), 70)] +
                     [lines[-1]]) + "\n"


def ed25519_private_bytes(pem):
    """The secret of an unencrypted ed25519 OpenSSH key: its 64-byte private key (the 32-byte
    seed, then the public key), as found in the private section."""
    _, fields = openssh_key_fields(openssh_key_blob(pem))
    section = fields[4]
    p = 8  # the two check ints
    parts = []
    for _ in range(3):  # key type, public key, private key
        n = int.from_bytes(section[p:p + 4], "big")
        parts.append(section[p + 4:p + 4 + n])
        p += 4 + n
    if parts[0] != b"ssh-ed25519" or len(parts[2]) != 64:
        raise ValueError("not an unencrypted ed25519 key")
    return parts[2]


def keygen(path, key_type="ed25519", passphrase="", comment="moletun-test"):
    """Generates an OpenSSH-format key pair; returns the path of the private key (mode 0600)."""
    args = [SSH_KEYGEN, "-q", "-t", key_type, "-N", passphrase, "-C", comment, "-f", path]
    if key_type == "ecdsa":
        args[4:4] = ["-b", "256"]
    if os.path.exists(path):
        os.unlink(path)
    run(args)
    os.chmod(path, 0o600)
    return path


def read_pubkey(path):
    """'TYPE BASE64' of a .pub file (comment dropped)."""
    with open(path) as f:
        fields = f.read().split()
    return fields[0] + " " + fields[1]


def known_hosts_host(host, port):
    return host if port == 22 else "[%s]:%d" % (host, port)


def hash_known_host(name, salt=None):
    """OpenSSH HashKnownHosts form: |1|base64(salt)|base64(HMAC-SHA1(salt, name))."""
    salt = salt if salt is not None else os.urandom(20)
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return "|1|%s|%s" % (base64.b64encode(salt).decode(), base64.b64encode(digest).decode())


# ---------------------------------------------------------------------------------------
# sshd sidecar
# ---------------------------------------------------------------------------------------


class Sidecar:
    """A real OpenSSH sshd configured like moletun's production sidecar.

    host_key_types: host keys to generate, the first is the one known_hosts helpers use by
    default ("ed25519", "ecdsa", "rsa"). user_key_type / passphrase: the user key authorized
    for the current user. permit_open: list of "host:port" targets (empty = none allowed).
    permit_listen: list of "[host:]port" for remote forwards (empty = none). wrapper: a
    command prefix such as ["ip", "netns", "exec", "NS"]. listen: the address sshd binds.
    """

    def __init__(self, workdir, permit_open=(), permit_listen=(), host_key_types=("ed25519",),
                 user_key_type="ed25519", passphrase="", allow_tcp_forwarding="yes",
                 listen="127.0.0.1", port=None, wrapper=(), extra_config=""):
        self.dir = tempfile.mkdtemp(prefix="sidecar-", dir=workdir)
        self.listen = listen
        self.port = port or free_port(listen if listen.startswith("127.") else "127.0.0.1")
        self.wrapper = list(wrapper)
        self.user = current_user()
        self.proc = None
        self.log_path = os.path.join(self.dir, "sshd.log")
        self._log = None
        self.host_keys = {}
        for t in host_key_types:
            self.host_keys[t] = keygen(os.path.join(self.dir, "ssh_host_%s_key" % t), t,
                                       comment="sidecar-host")
        self.host_key_types = tuple(host_key_types)
        self.passphrase = passphrase
        self.user_key = keygen(os.path.join(self.dir, "id_user"), user_key_type, passphrase,
                               comment="moletun-user")
        self.authorized_keys = os.path.join(self.dir, "authorized_keys")
        with open(self.authorized_keys, "w") as f:
            f.write(read_pubkey(self.user_key + ".pub") + " moletun-user\n")
        self.config_path = os.path.join(self.dir, "sshd_config")
        self.permit_open = list(permit_open)
        self.permit_listen = list(permit_listen)
        self.allow_tcp_forwarding = allow_tcp_forwarding
        self.extra_config = extra_config
        self.write_config()
        with _live_lock:
            _live_objects.append(self)

    def write_config(self):
        lines = [
            "Port %d" % self.port,
            "ListenAddress %s" % self.listen,
        ]
        lines += ["HostKey %s" % p for p in self.host_keys.values()]
        lines += [
            "AuthorizedKeysFile %s" % self.authorized_keys,
            "AllowUsers %s" % self.user,
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "HostbasedAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PermitTTY no",
            "ForceCommand %s" % NOLOGIN,
            "AllowTcpForwarding %s" % self.allow_tcp_forwarding,
            "PermitOpen %s" % (" ".join(self.permit_open) if self.permit_open else "none"),
            "PermitListen %s" % (" ".join(self.permit_listen) if self.permit_listen else "none"),
            "GatewayPorts no",
            "AllowAgentForwarding no",
            "AllowStreamLocalForwarding no",
            "X11Forwarding no",
            "PermitTunnel no",
            "PermitUserEnvironment no",
            # Sessions run the user's shell; SHLVL=1 keeps bash from sourcing the
            # user's ~/.bashrc (which it does for commands from sshd), so a test's
            # session never depends on, or waits for, the host's shell start-up files.
            "SetEnv SHLVL=1",
            "PrintMotd no",
            "UseDNS no",
            "PidFile none",
            "LogLevel VERBOSE",
            "MaxStartups 100:30:200",
            "LoginGraceTime 20",
        ]
        if self.extra_config:
            lines.append(self.extra_config)
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines) + "\n")

    # -- lifecycle ------------------------------------------------------------------

    def start(self, timeout=10.0):
        """Starts sshd and returns once it logged that it listens."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("sidecar already running")
        if not os.path.isdir("/run/sshd"):
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        mark = self.log_size()
        self._log = open(self.log_path, "ab")
        cmd = self.wrapper + [SSHD, "-D", "-e", "-f", self.config_path]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=self._log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_text(since=mark)
            if re.search(r"Server listening on \S+ port %d" % self.port, text):
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        text = self.log_text(since=mark)
        self.kill()
        raise RuntimeError("sshd did not start (port %d): %s" % (self.port, text[-2000:]))

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def session_pids(self):
        """The per-connection sshd processes (everything below the listener)."""
        if not self.running():
            return []
        return descendants(self.proc.pid)

    def stop(self, timeout=5.0):
        """SIGTERM to the listener and to every session process; waits for them."""
        if not self.running():
            return
        pids = self.session_pids()
        _signal(self.proc.pid, signal.SIGTERM)
        for p in pids:
            _signal(p, signal.SIGCONT)
            _signal(p, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + timeout
        while any(_pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.kill()

    def kill(self):
        """SIGKILL to the listener and all its session processes (a crashed sidecar)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            kill_tree(self.proc.pid)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        if self._log:
            self._log.close()
            self._log = None

    def restart(self, timeout=10.0):
        """Starts again on the same port (after stop() or kill())."""
        if self.running():
            self.kill()
        return self.start(timeout)

    def stop_children(self):
        """SIGSTOP every per-connection process: the peer hangs, TCP stays open."""
        pids = self.session_pids()
        for p in pids:
            _signal(p, signal.SIGSTOP)
        return pids

    def cont_children(self):
        for p in self.session_pids():
            _signal(p, signal.SIGCONT)

    def stop_listener(self):
        """SIGSTOP the listener only: TCP connects still complete (backlog), no banner."""
        _signal(self.proc.pid, signal.SIGSTOP)

    def cont_listener(self):
        _signal(self.proc.pid, signal.SIGCONT)

    def wait_commands(self, timeout=10.0):
        """Waits, up to timeout, for the programs the sessions run (the user's shell and
        what it starts) to end by themselves. Killed halfway through its start-up files, a
        shell can leave a lock behind that makes every later session wait on it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            commands = []
            for p in self.session_pids():
                try:
                    with open("/proc/%d/comm" % p) as f:
                        if not f.read().startswith("sshd"):
                            commands.append(p)
                except OSError:
                    pass
            if not commands:
                return
            time.sleep(0.05)

    def cleanup(self):
        try:
            if self.running():
                self.wait_commands()
            self.kill()
        finally:
            with _live_lock:
                if self in _live_objects:
                    _live_objects.remove(self)

    # -- logs -----------------------------------------------------------------------

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def log_text(self, since=0):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def count(self, regex, since=0):
        return len(re.findall(regex, self.log_text(since), re.M))

    def connection_count(self, since=0):
        """TCP connections sshd accepted (LogLevel VERBOSE logs each)."""
        return self.count(r"^Connection from \S+ port \d+ on ", since)

    def accepted_count(self, since=0):
        """Successful user authentications."""
        return self.count(r"Accepted \S+ for ", since)

    # -- known_hosts ----------------------------------------------------------------

    def host_pubkey(self, key_type=None):
        return read_pubkey(self.host_keys[key_type or self.host_key_types[0]] + ".pub")

    def known_hosts_line(self, key_type=None, hashed=False, wrong=False, host=None, port=None):
        """One known_hosts line for this sidecar.

        Plain form is `[127.0.0.1]:PORT TYPE KEY` (bare host for port 22), hashed is the
        `|1|salt|hmac` form, wrong uses a freshly generated key of the same type.
        """
        key_type = key_type or self.host_key_types[0]
        name = known_hosts_host(host or self.listen, self.port if port is None else port)
        if hashed:
            name = hash_known_host(name)
        if wrong:
            other = keygen(os.path.join(self.dir, "wrong_%s_%d" % (key_type, time.monotonic_ns())),
                           key_type, comment="wrong")
            key = read_pubkey(other + ".pub")
        else:
            key = self.host_pubkey(key_type)
        return "%s %s\n" % (name, key)

    def write_known_hosts(self, path, lines=None, **kw):
        """Writes known_hosts at path: the given lines, or one line from known_hosts_line(**kw)."""
        if lines is None:
            lines = [self.known_hosts_line(**kw)]
        with open(path, "w") as f:
            f.write("".join(lines))
        return path

    def write_passphrase_file(self, path, newline=True):
        with open(path, "w") as f:
            f.write(self.passphrase + ("\n" if newline else ""))
        os.chmod(path, 0o600)
        return path


# ---------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------


class _Server:
    """Threaded TCP server skeleton: one thread per accepted connection."""

    def __init__(self, host="127.0.0.1", port=0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(1024)
        self.host = host
        self.port = self.sock.getsockname()[1]
        with _port_lock:
            _handed_out_ports.add(self.port)
        self.lock = threading.Lock()
        self.active = 0
        self.peak_active = 0
        self.total = 0
        self.conns = set()
        self.closed = False
        self.errors = []
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()
        with _live_lock:
            _live_objects.append(self)

    @property
    def addr(self):
        return "%s:%d" % (self.host, self.port)

    def _accept_loop(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.active += 1
                self.total += 1
                self.peak_active = max(self.peak_active, self.active)
                self.conns.add(conn)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn):
        try:
            self.handle(conn)
        except OSError as e:
            with self.lock:
                self.errors.append(repr(e))
        finally:
            with self.lock:
                self.active -= 1
                self.conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    def handle(self, conn):
        raise NotImplementedError

    def cleanup(self):
        # Wake the accept thread with shutdown() and wait for it before closing: closing
        # under a thread that is about to call accept() lets it accept on whatever socket
        # reuses the descriptor number next (seen: another test's target stealing a
        # connection).
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(5)
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with _live_lock:
            if self in _live_objects:
                _live_objects.remove(self)


class EchoServer(_Server):
    """Echoes everything; on EOF from the client it closes its side too."""

    def handle(self, conn):
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)


class CloseServer(_Server):
    """Accepts and closes at once."""

    def handle(self, conn):
        pass


def _recv_line(conn, limit=256):
    buf = b""
    while not buf.endswith(b"\n"):
        b = conn.recv(1)
        if not b:
            break
        buf += b
        if len(buf) > limit:
            break
    return buf


def recv_exact(sock, n):
    chunks, got = [], 0
    while got < n:
        b = sock.recv(min(n - got, 1 << 20))
        if not b:
            raise EOFError("EOF after %d of %d bytes" % (got, n))
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def recv_all(sock):
    """Reads until EOF (the socket's timeout bounds each recv)."""
    chunks = []
    while True:
        b = sock.recv(1 << 20)
        if not b:
            return b"".join(chunks)
        chunks.append(b)



def source_header(sock):
    """SinkSource's reply to SOURCE: (size, hex SHA-256), read a byte at a time so that
    nothing of the data after it is taken. AssertionError on EOF before it."""
    header = b""
    while not header.endswith(b"\n"):
        b = sock.recv(1)
        assert b, "EOF before header"
        header += b
    size, digest = header.split()
    return int(size), digest.decode()

class SinkSource(_Server):
    """Target with a one-line command protocol:

      SINK N\\n     reads N bytes, replies "HEXSHA256\\n", then reads to EOF and closes.
      SINKEOF\\n    reads until EOF, then replies "LEN HEXSHA256\\n" and closes: a reply
                   proves the client's EOF arrived and the way back still works.
      SOURCE N\\n   replies "N HEXSHA256\\n" + N random bytes, then closes (target-side EOF).
      HALF\\n       replies "bye\\n", shuts down its write side, reads until EOF and records
                   what arrived after its EOF in `self.half_received` (a list).
    Every finished command appends (command, info) to `self.events`.
    """

    def __init__(self, *a, **kw):
        self.events = []
        self.half_received = []
        self.event_cv = threading.Condition()
        super().__init__(*a, **kw)

    def _event(self, what, info):
        with self.event_cv:
            self.events.append((what, info))
            self.event_cv.notify_all()

    def wait_event(self, what, timeout):
        deadline = time.monotonic() + timeout
        with self.event_cv:
            while True:
                for e in self.events:
                    if e[0] == what:
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.event_cv.wait(left)

    def handle(self, conn):
        line = _recv_line(conn).decode(errors="replace").split()
        if not line:
            return
        cmd = line[0]
        if cmd == "SINK":
            n = int(line[1])
            data = recv_exact(conn, n)
            conn.sendall(hashlib.sha256(data).hexdigest().encode() + b"\n")
            self._event("SINK", n)
            recv_all(conn)
        elif cmd == "SINKEOF":
            data = recv_all(conn)
            conn.sendall(b"%d %s\n" % (len(data), hashlib.sha256(data).hexdigest().encode()))
            self._event("SINKEOF", len(data))
        elif cmd == "SOURCE":
            n = int(line[1])
            data = os.urandom(n)
            conn.sendall(b"%d %s\n" % (n, hashlib.sha256(data).hexdigest().encode()) + data)
            self._event("SOURCE", n)
        elif cmd == "HALF":
            conn.sendall(b"bye\n")
            conn.shutdown(socket.SHUT_WR)
            data = recv_all(conn)
            self.half_received.append(data)
            self._event("HALF", data)


# ---------------------------------------------------------------------------------------
# moletun
# ---------------------------------------------------------------------------------------

TEST_TUNNEL_DEFAULTS = {
    "connect_timeout": "2s",
    "keepalive_interval": "1s",
    "keepalive_count_max": "3",
    "backoff_initial": "50ms",
    "backoff_max": "500ms",
    "auth_retry_interval": "2s",
    # Probes open channels to the targets, which tests counting target connections would
    # see; the health tests turn them on.
    "probe": "none",
    # The sidecar audit opens session channels, which run the user's login shell on the
    # sidecar (its start-up files and all) in every test; the audit tests turn it on.
    "audit_interval": "0",
}


def tunnel_section(name, sidecar, local_forward=(), remote_forward=(), known_hosts_file=None,
                   identity_file=None, defaults=True, **keys):
    """Text of one [tunnel:NAME] section pointing at `sidecar`.

    local_forward / remote_forward: lists of "[bind:]port host:port" strings. Extra keys are
    written as given (value None drops a key, e.g. known_hosts_file=None with
    strict_host_key_checking="no"). `defaults` adds the short test intervals.
    """
    vals = {
        "host": sidecar.listen,
        "port": str(sidecar.port),
        "user": sidecar.user,
        "identity_file": identity_file or sidecar.user_key,
        "known_hosts_file": known_hosts_file,
        "strict_host_key_checking": "yes",
    }
    if defaults:
        vals.update(TEST_TUNNEL_DEFAULTS)
    vals.update(keys)
    lines = ["[tunnel:%s]" % name]
    for k, v in vals.items():
        if v is not None:
            lines.append("%s = %s" % (k, v))
    lines += ["local_forward = %s" % f for f in local_forward]
    lines += ["remote_forward = %s" % f for f in remote_forward]
    return "\n".join(lines) + "\n"


VALGRIND_ERRORS_RE = re.compile(r"ERROR SUMMARY: (\d+) errors")


def valgrind_reports(logdir):
    """[(log path, error count, text)] for every valgrind.*.log in logdir."""
    out = []
    try:
        names = sorted(os.listdir(logdir))
    except OSError:
        return out
    for name in names:
        if not (name.startswith("valgrind.") and name.endswith(".log")):
            continue
        path = os.path.join(logdir, name)
        with open(path, errors="replace") as f:
            text = f.read()
        m = VALGRIND_ERRORS_RE.search(text)
        out.append((path, int(m.group(1)) if m else None, text))
    return out


SANITIZER_RE = re.compile(r"(ERROR: (Address|Leak|Thread|Memory)Sanitizer|runtime error:|"
                          r"SUMMARY: \w+Sanitizer)")
TRANSITION_RE = re.compile(r"tunnel (\S+): state (\w+) -> (\w+)(?:: (.*))?")


class Moletun:
    """Runs `moletun run -c CONFIG` with stdout+stderr captured, timestamped and tailed."""

    def __init__(self, workdir, sections, log_level="info", extra_global=""):
        self.dir = workdir
        self.config_path = os.path.join(workdir, "moletun.conf")
        self.control_socket = os.path.join(workdir, "control.sock")
        self.log_path = os.path.join(workdir, "moletun.log")
        text = "[moletun]\ncontrol_socket = %s\nlog_level = %s\n%s\n" % (
            self.control_socket, log_level, extra_global)
        text += "\n".join(sections if isinstance(sections, (list, tuple)) else [sections])
        with open(self.config_path, "w") as f:
            f.write(text)
        self.proc = None
        self.lines = []  # (monotonic time, line)
        self.cv = threading.Condition()
        self.reader = None
        self.reading = threading.Event()  # cleared: stop reading stderr (a stalled journal)
        self.reading.set()
        self.exit_time = None
        self.needed_kill = False
        with _live_lock:
            _live_objects.append(self)

    def start(self, env=None, nofile=None):
        """nofile: RLIMIT_NOFILE for the daemon, like `ulimit -n`: N sets soft and hard to
        N, (soft, hard) sets them apart, as a login shell does (soft 1024, hard higher)."""
        e = dict(os.environ)
        e.pop("JOURNAL_STREAM", None)
        e.pop("NOTIFY_SOCKET", None)
        if env:
            e.update(env)
        preexec = None
        if nofile is not None:
            limits = tuple(nofile) if isinstance(nofile, (tuple, list)) else (nofile, nofile)

            def preexec():
                resource.setrlimit(resource.RLIMIT_NOFILE, limits)
        self.start_time = time.monotonic()
        self.proc = subprocess.Popen(wrapper_command(self.dir) +
                                     [moletun_bin(), "run", "-c", self.config_path],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=e, start_new_session=True,
                                     preexec_fn=preexec)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        return self

    def _read(self):
        with open(self.log_path, "ab") as log:
            for raw in iter(self.read_line, b""):
                now = time.monotonic()
                log.write(raw)
                log.flush()
                with self.cv:
                    self.lines.append((now, raw.decode("utf-8", "replace").rstrip("\n")))
                    self.cv.notify_all()
        self.proc.stdout.close()
        with self.cv:
            self.exit_time = time.monotonic()
            self.cv.notify_all()

    def read_line(self):
        self.reading.wait()
        return self.proc.stdout.readline()

    def pause_reading(self):
        """Stops reading the daemon's output after the current line: its pipe fills up."""
        self.reading.clear()

    def resume_reading(self):
        self.reading.set()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def mark(self):
        """Index of the next log line; pass as `since` to look only at what comes after."""
        with self.cv:
            return len(self.lines)

    def log_text(self, since=0):
        with self.cv:
            return "\n".join(l for _, l in self.lines[since:])

    def grep(self, regex, since=0):
        r = re.compile(regex)
        with self.cv:
            return [(t, l) for t, l in self.lines[since:] if r.search(l)]

    def wait_for(self, regex, timeout, since=0):
        """Waits for a log line matching regex (at index >= since); returns (time, line, match)
        or None on timeout or when the process ended without printing it. Like every wait
        here, timeout is multiplied by slowdown()."""
        r = re.compile(regex)
        deadline = time.monotonic() + timeout * slowdown()
        i = since
        with self.cv:
            while True:
                while i < len(self.lines):
                    t, line = self.lines[i]
                    m = r.search(line)
                    if m:
                        return t, line, m
                    i += 1
                if self.exit_time is not None:
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cv.wait(min(left, 0.1))

    def transitions(self, tunnel=None, since=0):
        """[(time, tunnel, old, new, reason)] in log order."""
        out = []
        with self.cv:
            lines = self.lines[since:]
        for t, line in lines:
            m = TRANSITION_RE.search(line)
            if m and (tunnel is None or m.group(1) == tunnel):
                out.append((t, m.group(1), m.group(2), m.group(3), m.group(4) or ""))
        return out

    def state(self, tunnel):
        """The tunnel's current state per the last transition logged, or None."""
        tr = self.transitions(tunnel)
        return tr[-1][3] if tr else None

    def wait_state(self, tunnel, state, timeout):
        """Waits until the tunnel's latest transition ends in `state`; returns the transition
        tuple or None."""
        deadline = time.monotonic() + timeout * slowdown()
        while True:
            tr = self.transitions(tunnel)
            if tr and tr[-1][3] == state:
                return tr[-1]
            left = deadline - time.monotonic()
            if left <= 0 or (self.exit_time is not None and not self.running()):
                return None
            with self.cv:
                self.cv.wait(min(left, 0.05))

    def wait_transition(self, tunnel, since, old=None, new=None, timeout=5.0):
        """Waits for a transition logged at index >= since matching old/new (None = any)."""
        deadline = time.monotonic() + timeout * slowdown()
        while True:
            for tr in self.transitions(tunnel, since):
                if (old is None or tr[2] == old) and (new is None or tr[3] == new):
                    return tr
            left = deadline - time.monotonic()
            if left <= 0 or not self.running():
                return None
            with self.cv:
                self.cv.wait(min(left, 0.05))

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Sends sig and waits; returns (exit code or None on timeout, seconds until exit)."""
        if self.proc is None:
            return None, 0.0
        self.resume_reading()
        t0 = time.monotonic()
        _signal(self.proc.pid, sig)
        try:
            rc = self.proc.wait(timeout * slowdown())
        except subprocess.TimeoutExpired:
            return None, time.monotonic() - t0
        dt = time.monotonic() - t0
        if self.reader:
            self.reader.join(2)
        return rc, dt

    def sanitizer_reports(self):
        return [l for _, l in self.grep(SANITIZER_RE)]

    def valgrind_errors(self):
        """Excerpts of the valgrind logs of this daemon that report errors (definite leaks
        count as errors with --errors-for-leak-kinds=definite)."""
        out = []
        for path, errors, text in valgrind_reports(self.dir):
            if errors:
                out.append("%s: %d errors\n%s" % (path, errors, text[-6000:]))
        return out

    def cleanup(self):
        self.resume_reading()
        try:
            if self.proc is not None and self.proc.poll() is None:
                # A clean exit first, so every test also runs the shutdown path (and, in a
                # sanitizer build, LeakSanitizer); SIGKILL if it does not come.
                _signal(self.proc.pid, signal.SIGTERM)
                try:
                    # the leak check at exit takes a while under valgrind, and ASan's too
                    self.proc.wait(EXIT_WAIT * (10 if under_wrapper() else slowdown()))
                except subprocess.TimeoutExpired:
                    self.needed_kill = True
                    kill_tree(self.proc.pid)
                    self.proc.wait(5)
            if self.reader:
                self.reader.join(2)
        finally:
            with _live_lock:
                if self in _live_objects:
                    _live_objects.remove(self)


def cleanup_everything():
    """Kills every process and closes every server this module started and still tracks."""
    with _live_lock:
        objs = list(_live_objects)
    for o in reversed(objs):
        try:
            o.cleanup()
        except Exception as e:  # cleanup must go on with the rest
            sys.stderr.write("cleanup of %r failed: %r\n" % (o, e))


# ---------------------------------------------------------------------------------------
# Client helpers
# ---------------------------------------------------------------------------------------


def connect(port, host="127.0.0.1", timeout=5.0):
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def echo_once(port, payload=b"ping\n", timeout=3.0, host="127.0.0.1"):
    """Sends payload through a forward to an echo target and returns what came back (b""
    if the connection was closed first). Raises on connect errors and timeouts."""
    with connect(port, host, timeout) as s:
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                break
            if not b:
                break
            got += b
        return got


def wait_echo(port, timeout, payload=b"ping\n", attempt_timeout=1.0, pause=0.02):
    """Retries echo_once until it echoes payload; returns seconds taken or None (after
    timeout x slowdown())."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout * slowdown():
        try:
            if echo_once(port, payload, attempt_timeout) == payload:
                return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(pause)
    return None


def closed_promptly(port, timeout=3.0, payload=b"x"):
    """Connects, sends payload, and measures how long until the connection is closed.

    Returns (closed: bool, seconds, data_received). Connection refused counts as closed
    with 0 s but is reported through the exception, as a refused connect means the
    listener is gone (which the tests treat as a failure of its own).
    """
    t0 = time.monotonic()
    s = connect(port, timeout=timeout)
    got = b""
    try:
        try:
            s.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            return True, time.monotonic() - t0, got
        while True:
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                return True, time.monotonic() - t0, got
            except socket.timeout:
                return False, time.monotonic() - t0, got
            if not b:
                return True, time.monotonic() - t0, got
            got += b
    finally:
        s.close()


# ---------------------------------------------------------------------------------------
# unittest base
# ---------------------------------------------------------------------------------------


def require_sshd():
    if not os.access(SSHD, os.X_OK):
        skip_module("%s not found (apt-get install openssh-server)" % SSHD)
    if not os.access(NOLOGIN, os.X_OK):
        skip_module("%s not found" % NOLOGIN)
    if not os.path.isdir("/run/sshd") and os.geteuid() != 0:
        skip_module("/run/sshd is missing and creating it needs root")


class TunnelTest(unittest.TestCase):
    """Base class: a temp dir per test, helpers that register their own cleanup, and a dump
    of the moletun and sshd logs to stderr when the test fails."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="moletun-it-")
        os.chmod(self.tmp, 0o700)
        self.addCleanup(self._remove_tmp)
        self.addCleanup(self._dump_logs_on_failure)
        self._moletuns = []
        self._sidecars = []

    def _remove_tmp(self):
        if os.environ.get("MOLETUN_KEEP_TMP"):
            print("kept %s" % self.tmp)
            return
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _failed(self):
        # During a cleanup, _Outcome.success only covers that cleanup: look at the result.
        result = getattr(getattr(self, "_outcome", None), "result", None)
        if result is None:
            return True
        return any(t is self for t, _ in list(result.failures) + list(result.errors))

    def _dump_logs_on_failure(self):
        if not self._failed():
            return
        err = sys.stderr
        for m in self._moletuns:
            lines = m.log_text().splitlines()
            first = next((i for i, l in enumerate(lines) if SANITIZER_RE.search(l)), None)
            if first is not None:  # the whole report, stack traces included
                tail = lines[max(0, first - 5):][:300]
            else:
                tail = lines[-80:]
            err.write("---- moletun log (%s), %d of %d lines ----\n" % (
                self.id(), len(tail), len(lines)))
            err.write("\n".join(tail) + "\n")
        for s in self._sidecars:
            tail = s.log_text().splitlines()[-40:]
            err.write("---- sshd log port %d, last %d lines ----\n" % (s.port, len(tail)))
            err.write("\n".join(tail) + "\n")
        err.flush()

    def sidecar(self, start=True, **kw):
        s = Sidecar(self.tmp, **kw)
        self.addCleanup(s.cleanup)
        self._sidecars.append(s)
        if start:
            s.start()
        return s

    def server(self, cls=EchoServer, **kw):
        srv = cls(**kw)
        self.addCleanup(srv.cleanup)
        return srv

    def known_hosts(self, sidecar, name="known_hosts", **kw):
        return sidecar.write_known_hosts(os.path.join(self.tmp, name), **kw)

    def moletun(self, sections, start=True, check_sanitizers=True, **kw):
        workdir = tempfile.mkdtemp(prefix="moletun-", dir=self.tmp)
        m = Moletun(workdir, sections, **kw)
        self._moletuns.append(m)
        if check_sanitizers:
            self.addCleanup(self._check_sanitizers, m)
        self.addCleanup(m.cleanup)
        if start:
            m.start()
        return m

    def _check_sanitizers(self, m):
        reports = m.sanitizer_reports()
        if reports:
            self.fail("sanitizer reports in moletun's log:\n" + "\n".join(reports[:20]))
        reports = m.valgrind_errors()
        if reports:
            self.fail("valgrind reports errors:\n" + "\n".join(reports))
        if m.needed_kill:
            self.fail("moletun did not exit within %g s of SIGTERM at the end of the test" %
                      (EXIT_WAIT * (10 if under_wrapper() else slowdown())))

    def simple_tunnel(self, sidecar, local_forward=(), name="t1", known_hosts=None, **keys):
        """One-tunnel moletun against `sidecar` with a plain known_hosts file; started."""
        kh = known_hosts or self.known_hosts(sidecar, name="known_hosts_" + name)
        return self.moletun(tunnel_section(name, sidecar, local_forward=local_forward,
                                           known_hosts_file=kh, **keys))

    def assertUp(self, m, tunnel="t1", timeout=10.0):
        tr = m.wait_state(tunnel, "up", timeout)
        if tr is None:
            self.fail("tunnel %s not up within %.1fs; transitions: %s; running: %s" % (
                tunnel, timeout * slowdown(), [x[2:] for x in m.transitions(tunnel)],
                m.running()))
        return tr


def main():
    """Runs the unittest module; leaves no process behind whatever happens."""
    raise_fd_limit()
    require_sshd()
    try:
        prog = unittest.main(verbosity=2, exit=False, buffer=False)
        ok = prog.result.wasSuccessful()
        if ok and prog.result.testsRun == len(prog.result.skipped) and prog.result.testsRun:
            sys.exit(SKIP_EXIT)
    finally:
        cleanup_everything()
    sys.exit(0 if ok else 1)
