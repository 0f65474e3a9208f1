#!/usr/bin/env python3
"""The sidecar kit (conf/sidecar, systemd/moletun-sidecar.*) against real OpenSSH and moletun.

Each "database host" is a network namespace of its own, joined to this one by a veth pair:
its target (an echo server at 127.0.0.1:5432 inside it, named pg_main there) is reachable
only from inside, as PostgreSQL is on the real host; moletun runs here, as on a web node,
and reaches the sidecar's port 2222 over the veth. The kit's files are used as shipped: of
sshd_config only the HostKey and AuthorizedKeysFile paths are moved where the plain run
needs them (the container and the unit use them unchanged), and its "# ADAPT:" lines keep
their values (port 2222, user tunnel, PermitOpen pg_main:5432) except where a test says so.

  KitConfigTest     the file itself (every directive under a comment saying why, exactly the
                    three ADAPT lines), `sshd -t`, and the entrypoint's refusals: root, a
                    missing file, each unhardened setting, a writable authorized_keys.
  KitNetnsTest      sshd run unprivileged, as a test user `tunnel` (uid 64991, bound over
                    /etc/passwd in the sidecar's own mount namespace, so nothing is added to
                    this machine's users): moletun carries data through it; `ssh ... echo x`
                    runs nothing; `ssh -W` to another target, a Unix socket forward, a remote
                    forward, a password login and weak algorithms are refused (a control
                    sidecar with stream-local forwarding on reaches the same socket);
                    moletun's keepalive round trip is measured, with no line in sshd's
                    log, and a 2 x 40 ms relay in front of the sidecar reads as degraded.
  KitContainerTest  conf/sidecar/Containerfile built with buildah (chroot isolation, FROM a
                    debootstrapped Debian 12 imported as localhost/debian:bookworm-slim; the
                    base and buildah's layers are cached in /var/cache/moletun-test/sidecar),
                    its root filesystem run read-only under systemd-nspawn in a namespace of
                    its own, as the image's user with no capability: moletun pins the host key
                    the entrypoint printed and carries data; the keys volume is kept across a
                    restart; an unhardened or missing configuration and root are refused.
  KitSystemdTest    moletun-sidecar.service as meson installs it, in a booted systemd 252
                    (nspawn.py) inside a namespace of its own: starts (Type=notify), sshd runs
                    as user tunnel with no capabilities, moletun tunnels through it, reload
                    checks the configuration first, and a removed key line plus a restart
                    cuts that node off. Also `systemd-analyze verify` and `security` of it.

Needs root (namespaces, nspawn); the container part also buildah and debootstrap
(tests/deps.sh) and Debian's archive. Whatever is missing is skipped with the reason.
Measured here: cold (nothing cached) about 100 s, of which debootstrap 52 s, the import
7 s and the image build 11 s; cached about 30 s. buildah stores with overlay, or vfs
where overlay cannot mount (MOLETUN_TEST_BUILDAH_DRIVER=vfs forces it: cold image 90 s,
cached build 36 s).
"""

import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.request

import harness
import jumpnet
import nspawn
from harness import EchoServer, tunnel_section
from test_health import DelayRelay

TOP = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
KIT = os.path.join(TOP, "conf", "sidecar")
KIT_CONFIG = os.path.join(KIT, "sshd_config")
ENTRYPOINT = os.path.join(KIT, "entrypoint.sh")
CACHE = os.path.join(os.environ.get("MOLETUN_TEST_CACHE", "/var/cache/moletun-test"), "sidecar")
BASE_IMAGE = "localhost/debian:bookworm-slim"
IMAGE = "localhost/moletun-sidecar:test"
MIRROR = "http://deb.debian.org/debian"
PID = os.getpid()
SUBNET = PID % 250 + 1
# The plain run's tunnel user: a uid no account here has, named in a passwd file bound over
# /etc/passwd in the sidecar's mount namespace only.
TEST_UID = 64991
SSHD_PORT = 2222
SLOW = harness.slowdown()

env = {}


def sh(cmd, check=True, timeout=120, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError("%s exited %d:\n%s" % (" ".join(cmd), r.returncode, r.stdout[-3000:]))
    return r


def read(path):
    with open(path) as f:
        return f.read()


def write(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def kit_config(text=None, port=None, user=None, permit_open=None, state_dir=None,
               keys_dir=None):
    """The shipped sshd_config with its ADAPT lines set (None keeps the shipped value) and
    the host key / authorized_keys directories moved (None keeps them)."""
    lines = (text if text is not None else read(KIT_CONFIG)).splitlines()
    values = {"Port": port, "AllowUsers": user, "PermitOpen": permit_open}
    adapt = False
    for i, line in enumerate(lines):
        if line.startswith("# ADAPT:"):
            adapt = True
        elif adapt and line and not line.startswith("#"):
            key = line.split()[0]
            if values.get(key) is not None:
                lines[i] = "%s %s" % (key, values[key])
            adapt = False
    text = "\n".join(lines) + "\n"
    if state_dir:
        text = text.replace("/var/lib/moletun-sidecar/", state_dir.rstrip("/") + "/")
    if keys_dir:
        text = text.replace("/etc/moletun-sidecar/authorized_keys/", keys_dir.rstrip("/") + "/")
    return text


def proc_status(pid):
    with open("/proc/%d/status" % pid) as f:
        return dict(l.rstrip("\n").split(":\t", 1) for l in f if ":\t" in l)


def ssh_cmd(addr, key, known_hosts, *args, port=SSHD_PORT, user="tunnel", log_level="ERROR"):
    return ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + known_hosts,
            "-o", "ConnectTimeout=10", "-o", "LogLevel=" + log_level, "-i", key,
            "-p", str(port)] + list(args) + ["%s@%s" % (user, addr)]


def ssh(addr, key, known_hosts, *args, command=(), input=None, timeout=30, port=SSHD_PORT,
        user="tunnel", log_level="ERROR"):
    """Runs the OpenSSH client; returns (exit code, stdout, stderr)."""
    try:
        r = subprocess.run(ssh_cmd(addr, key, known_hosts, *args, port=port, user=user,
                                   log_level=log_level) + list(command), input=input,
                           capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return None, e.stdout or b"", e.stderr or b""
    return r.returncode, r.stdout, r.stderr


class Namespace:
    """A database host's network namespace: veth HOST_ADDR (here) <-> ADDR (inside)."""

    def __init__(self, index):
        self.name = "mltsk%d-%d" % (PID, index)
        self.veth = "mtsk%d%d" % (PID % 100000, index)
        self.host_addr = "10.218.%d.%d" % (SUBNET, 4 * index + 1)
        self.addr = "10.218.%d.%d" % (SUBNET, 4 * index + 2)
        self.targets = []

    def up(self):
        sh(["ip", "netns", "add", self.name])
        sh(["ip", "link", "add", self.veth, "type", "veth", "peer", "name", self.veth + "i",
            "netns", self.name])
        sh(["ip", "addr", "add", self.host_addr + "/30", "dev", self.veth])
        sh(["ip", "link", "set", self.veth, "up"])
        inside = ["ip", "-n", self.name]
        sh(inside + ["addr", "add", self.addr + "/30", "dev", self.veth + "i"])
        for dev in ("lo", self.veth + "i"):
            sh(inside + ["link", "set", dev, "up"])
        # pg_main: an echo server on the namespace's own loopback, port 5432.
        self.echo = jumpnet.in_netns(self.name, lambda: EchoServer(host="127.0.0.1", port=5432))
        self.targets.append(self.echo)
        return self

    def down(self):
        for t in self.targets:
            t.cleanup()
        sh(["ip", "netns", "del", self.name], check=False)
        sh(["ip", "link", "del", self.veth], check=False)


class UnixEcho:
    """An echo server on a Unix socket (mode 0666): what a stream-local forward would reach."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        os.chmod(path, 0o666)
        self.sock.listen(16)
        self.accepted = 0
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            with conn:
                try:
                    while True:
                        data = conn.recv(65536)
                        if not data:
                            break
                        conn.sendall(data)
                except OSError:
                    pass

    def cleanup(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def secure_dir(prefix):
    """A new 0755 directory whose every parent is root's and not group/world-writable: sshd's
    StrictModes refuses authorized_keys below /tmp (1777)."""
    base = os.path.join("/run", "moletun-test-sidecar-kit-%d" % PID)
    os.makedirs(base, mode=0o755, exist_ok=True)
    os.chmod(base, 0o755)
    path = tempfile.mkdtemp(prefix=prefix, dir=base)
    os.chmod(path, 0o755)
    return path


class TunnelUser:
    """Files that make a user `tunnel` (uid TEST_UID) and the name pg_main exist in a mount
    namespace of their own: passwd, group and hosts to bind over /etc's."""

    def __init__(self, workdir):
        self.uid = TEST_UID

        def others(path):  # a tunnel user of this machine's (the Debian package's) left out
            return "".join(l for l in read(path).splitlines(True) if not l.startswith("tunnel:"))
        self.passwd = write(os.path.join(workdir, "passwd"), others("/etc/passwd") +
                            "tunnel:x:%d:%d:tunnel:/nonexistent:/usr/sbin/nologin\n" % (
                                TEST_UID, TEST_UID))
        self.group = write(os.path.join(workdir, "group"),
                           others("/etc/group") + "tunnel:x:%d:\n" % TEST_UID)
        self.hosts = write(os.path.join(workdir, "hosts"),
                           "127.0.0.1 localhost\n127.0.0.1 pg_main\n")

    def wrapper(self, netns=None, as_user=True):
        """Command prefix: (in netns,) own mount namespace with the files bound, then (as
        the tunnel user, no groups, no capabilities) the command."""
        script = ('mount --bind "$1" /etc/passwd && mount --bind "$2" /etc/group && '
                  'mount --bind "$3" /etc/hosts && shift 3 && exec "$@"')
        cmd = (["ip", "netns", "exec", netns] if netns else []) + [
            "unshare", "-m", "--", "sh", "-c", script, "sh", self.passwd, self.group,
            self.hosts]
        if as_user:
            cmd += ["setpriv", "--reuid=%d" % self.uid, "--regid=%d" % self.uid,
                    "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]
        return cmd


class KitSidecar(harness.Sidecar):
    """The shipped sshd_config run by the unprivileged tunnel user inside `ns`; the host key
    and authorized_keys/tunnel in its own directory. edit(text) -> text changes the
    configuration beyond the paths (for the controls)."""

    def __init__(self, workdir, ns, user, edit=None, port=SSHD_PORT, key_options=""):
        self.edit = edit
        self.tunnel_user = user
        super().__init__(workdir, listen=ns.addr, port=port,
                         wrapper=user.wrapper(ns.name))
        self.user = "tunnel"
        os.chmod(self.dir, 0o755)
        for key in self.host_keys.values():
            os.chown(key, user.uid, user.uid)
        self.keys_dir = os.path.join(self.dir, "keys")
        os.mkdir(self.keys_dir, 0o755)
        write(os.path.join(self.keys_dir, "tunnel"), "%s%s moletun@test\n" % (
            key_options, harness.read_pubkey(self.user_key + ".pub")))
        self.write_config()

    def write_config(self):
        if not hasattr(self, "keys_dir"):  # called by the base class before the paths exist
            return
        text = kit_config(port=None if self.port == SSHD_PORT else str(self.port),
                          state_dir=self.dir, keys_dir=self.keys_dir)
        if self.edit:
            text = self.edit(text)
        write(self.config_path, text)


def moletun_section(name, addr, key, known_hosts, local_port, **keys):
    """A tunnel to the sidecar at addr:2222 as user tunnel, forwarding local_port to pg_main."""
    class Peer:
        listen = addr
        port = SSHD_PORT
        user = "tunnel"
        user_key = key
    return tunnel_section(name, Peer, local_forward=["127.0.0.1:%d pg_main:5432" % local_port],
                          known_hosts_file=known_hosts, **keys)


def ctl_status(m, name="t1"):
    r = subprocess.run([harness.moletun_bin(), "ctl", "-s", m.control_socket, "status",
                        "--json", name], capture_output=True, text=True, timeout=30)
    return json.loads(r.stdout)["tunnels"][0]


def wait_until(what, predicate, timeout):
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(0.05)


def carries_data(test, port, size=1 << 20):
    """Sends size random bytes through 127.0.0.1:port to the echo target and compares."""
    payload = os.urandom(size)
    with harness.connect(port, timeout=20) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        got = harness.recv_all(s)
    test.assertEqual(hashlib.sha256(got).hexdigest(), hashlib.sha256(payload).hexdigest(),
                     "%d of %d bytes came back" % (len(got), size))


def setUpModule():
    if os.geteuid() != 0:
        harness.skip_module("the sidecar kit tests need root (namespaces, nspawn)")
    harness.require_sshd()
    for tool in ("ip", "unshare", "setpriv", "ssh"):
        if not shutil.which(tool):
            harness.skip_module("%s not found" % tool)
    harness.raise_fd_limit()
    env["work"] = secure_dir("work-")
    env["user"] = TunnelUser(env["work"])


def tearDownModule():
    harness.cleanup_everything()
    base = os.path.join("/run", "moletun-test-sidecar-kit-%d" % PID)
    if not os.environ.get("MOLETUN_KEEP_TMP"):
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# The configuration file and the entrypoint's checks
# ---------------------------------------------------------------------------------------


class KitConfigTest(unittest.TestCase):
    maxDiff = None

    def test_every_directive_under_a_comment_and_three_adapt_lines(self):
        lines = read(KIT_CONFIG).splitlines()
        adapt, tagged, previous = [], False, ""
        for i, line in enumerate(lines):
            if line.startswith("# ADAPT:"):
                tagged = True
            elif line and not line.startswith("#"):
                # A directive opens a group right under its comment (or continues one).
                self.assertTrue(previous != "", "line %d has no comment above it: %s" % (
                    i + 1, line))
                if tagged:
                    adapt.append(line.split()[0])
                tagged = False
            previous = line
        self.assertEqual(sorted(adapt), ["AllowUsers", "PermitOpen", "Port"])

    def test_sshd_accepts_it(self):
        work = secure_dir("t-")
        key = harness.keygen(os.path.join(work, "ssh_host_ed25519_key"))
        path = write(os.path.join(work, "sshd_config"), kit_config(state_dir=work))
        r = sh(["/usr/sbin/sshd", "-t", "-f", path], check=False)
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertTrue(os.path.exists(key))
        # the settings the hardening rests on, as sshd evaluates them
        r = sh(["/usr/sbin/sshd", "-T", "-f", path])
        settings = dict(l.split(" ", 1) for l in r.stdout.splitlines() if " " in l)
        expect = {"maxsessions": "0", "allowtcpforwarding": "local", "permitopen":
                  "pg_main:5432", "permitlisten": "none", "allowstreamlocalforwarding": "no",
                  "permittunnel": "no", "gatewayports": "no", "passwordauthentication": "no",
                  "kbdinteractiveauthentication": "no", "authenticationmethods": "publickey",
                  "permittty": "no", "x11forwarding": "no", "allowagentforwarding": "no",
                  "forcecommand": "/usr/sbin/nologin", "allowusers": "tunnel",
                  "clientaliveinterval": "15", "clientalivecountmax": "3", "port": "2222",
                  "loglevel": "VERBOSE", "permitrootlogin": "no", "usepam": "no",
                  "maxauthtries": "3", "logingracetime": "20",
                  "kexalgorithms": "sntrup761x25519-sha512@openssh.com,curve25519-sha256,"
                                   "curve25519-sha256@libssh.org",
                  "hostkeyalgorithms": "ssh-ed25519"}
        self.assertEqual({k: settings.get(k) for k in expect}, expect)
        self.assertNotIn("subsystem", settings)

    def test_compose_example(self):
        try:
            import yaml
        except ImportError:
            self.skipTest("python3-yaml not installed: compose.yaml not parsed")
        with open(os.path.join(KIT, "compose.yaml")) as f:
            doc = yaml.safe_load(f)
        pg, sc = doc["services"]["pg_main"], doc["services"]["sidecar"]
        self.assertEqual(doc["networks"]["db"], {"internal": True})
        self.assertNotIn("ports", pg)
        self.assertEqual(pg["networks"], ["db"])
        self.assertEqual(sorted(sc["networks"]), ["db", "edge"])
        self.assertEqual(sc["ports"], ["2222:2222"])
        self.assertEqual((sc["read_only"], sc["cap_drop"], sc["security_opt"], sc["user"]),
                         (True, ["ALL"], ["no-new-privileges:true"], "tunnel"))
        self.assertIn("sidecar-keys:/var/lib/moletun-sidecar", sc["volumes"])
        self.assertIn("./authorized_keys:/etc/moletun-sidecar/authorized_keys:ro", sc["volumes"])
        self.assertEqual(sc["build"]["context"], ".")

    def run_entrypoint(self, config, as_user=True, keys_writable=False, prepare=True):
        """The entrypoint as the tunnel user on `config` (a text, or None: no file);
        returns (exit code, output)."""
        work = secure_dir("e-")
        state = os.path.join(work, "state")
        os.mkdir(state, 0o700)
        os.chown(state, TEST_UID, TEST_UID)
        keys = os.path.join(work, "keys")
        os.mkdir(keys, 0o777 if keys_writable else 0o755)
        os.chmod(keys, 0o777 if keys_writable else 0o755)
        path = os.path.join(work, "sshd_config")
        if config is not None:
            write(path, kit_config(config, state_dir=state, keys_dir=keys))
        r = sh(env["user"].wrapper(as_user=as_user) + [
            "env", "MOLETUN_SIDECAR_CONFIG=" + path, "sh", ENTRYPOINT] +
            (["--prepare"] if prepare else ["-t"]), check=False)
        return r.returncode, r.stdout

    def test_entrypoint_accepts_the_kit_and_generates_the_host_key(self):
        rc, out = self.run_entrypoint(read(KIT_CONFIG))
        self.assertEqual(rc, 0, out)
        self.assertRegex(out, r"generated host key \S+/state/ssh_host_ed25519_key")
        self.assertRegex(out, r"host key SHA256:\S+ \(ED25519\): ssh-ed25519 AAAA\S+")
        self.assertRegex(out, r"known_hosts line.*: \[NAME\]:2222 ssh-ed25519 AAAA\S+$|"
                              r"known_hosts line.*: \[NAME\]:2222 ssh-ed25519 AAAA\S+\n")
        self.assertIn("no authorized keys yet", out)
        # without --prepare it execs sshd with the arguments given (-t: test and exit)
        rc, out = self.run_entrypoint(read(KIT_CONFIG), prepare=False)
        self.assertEqual(rc, 0, out)

    def test_entrypoint_refuses(self):
        kit = read(KIT_CONFIG)

        def setting(key, value):
            text, n = re.subn(r"(?m)^%s .*$" % key, "%s %s" % (key, value), kit)
            self.assertEqual(n, 1, key)
            return text

        cases = [
            (setting("MaxSessions", "10"), "maxsessions is '10'"),
            (setting("AllowTcpForwarding", "yes"), "allowtcpforwarding is 'yes'"),
            (setting("PermitOpen", "any"), "permitopen is 'any'"),
            (setting("PermitOpen", "pg_main:5432 *:22"), "permitopen is 'pg_main:5432 *:22'"),
            (setting("PasswordAuthentication", "yes"), "passwordauthentication is 'yes'"),
            (setting("KbdInteractiveAuthentication", "yes"), "kbdinteractiveauthentication"),
            (setting("AllowStreamLocalForwarding", "local"), "allowstreamlocalforwarding"),
            (setting("PermitTunnel", "yes"), "permittunnel is 'yes'"),
            (setting("X11Forwarding", "yes"), "x11forwarding is 'yes'"),
            (setting("PermitTTY", "yes"), "permittty is 'yes'"),
            (setting("AllowAgentForwarding", "yes"), "allowagentforwarding is 'yes'"),
            (setting("Ciphers", "aes128-cbc,aes128-ctr"), "ciphers is 'aes128-cbc"),
            (setting("MACs", "hmac-sha1,hmac-sha2-256"), "macs is 'hmac-sha1"),
            (setting("KexAlgorithms", "diffie-hellman-group14-sha1,curve25519-sha256"),
             "kexalgorithms is 'diffie-hellman-group14-sha1"),
            (re.sub(r"(?m)^MaxSessions .*\n", "", kit), "maxsessions is '10'"),
            (kit + "Match User tunnel\n  MaxSessions 10\n", "Match or Include line"),
            (None, "no readable configuration"),
        ]
        for text, message in cases:
            rc, out = self.run_entrypoint(text)
            self.assertEqual(rc, 1, "accepted (%s):\n%s" % (message, out))
            self.assertIn(message, out)
            if text is not None and "Match" not in message:
                self.assertIn("refusing to start sshd: 1 setting(s) not hardened", out)
        rc, out = self.run_entrypoint(kit, keys_writable=True)
        self.assertEqual(rc, 1, out)
        self.assertRegex(out, r"authorizedkeysfile is '\S+/keys/tunnel'.*cannot write")
        rc, out = self.run_entrypoint(kit, as_user=False)
        self.assertEqual(rc, 1, out)
        self.assertIn("refusing to run as root", out)


# ---------------------------------------------------------------------------------------
# The shipped configuration, run unprivileged in a namespace of its own
# ---------------------------------------------------------------------------------------


class KitNetnsTest(harness.TunnelTest):
    @classmethod
    def setUpClass(cls):
        # unittest skips tearDownClass when setUpClass fails: undo what was done
        try:
            cls.set_up()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def set_up(cls):
        cls.ns = Namespace(0).up()
        cls.kit = KitSidecar(env["work"], cls.ns, env["user"])
        cls.kit.start()
        cls.kh = cls.kit.write_known_hosts(
            os.path.join(cls.kit.dir, "known_hosts"))
        sock_dir = os.path.join(cls.kit.dir, "sock")
        os.mkdir(sock_dir, 0o755)
        cls.unix_echo = UnixEcho(os.path.join(sock_dir, "echo.sock"))

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "unix_echo", None):
            cls.unix_echo.cleanup()
        if getattr(cls, "kit", None):
            cls.kit.cleanup()
        if getattr(cls, "ns", None):
            cls.ns.down()

    def ssh(self, *args, **kw):
        return ssh(self.ns.addr, self.kit.user_key, self.kh, *args, **kw)

    def sshd_log(self):
        return self.kit.log_text()

    def test_a_sshd_runs_as_the_tunnel_user(self):
        pid = self.kit.proc.pid
        st = proc_status(pid)
        self.assertEqual(st["Uid"].split(), [str(TEST_UID)] * 4)
        for cap in ("CapPrm", "CapEff", "CapBnd", "CapAmb"):
            self.assertEqual(int(st[cap], 16), 0, "%s = %s" % (cap, st[cap]))

    def test_b_target_reachable_only_inside(self):
        self.assertTrue(jumpnet.reachable("127.0.0.1", 5432, ns=self.ns.name))
        self.assertFalse(jumpnet.reachable(self.ns.addr, 5432))

    def test_c_moletun_carries_data_and_keepalives(self):
        port = harness.free_port()
        mark = self.kit.log_size()
        m = self.moletun(moletun_section("t1", self.ns.addr, self.kit.user_key,
                                         self.kh, port))
        self.assertUp(m, timeout=15 * SLOW)
        carries_data(self, port)
        # VERBOSE logging: which key (web node) came in, by fingerprint.
        fp = sh(["ssh-keygen", "-l", "-f", self.kit.user_key + ".pub"]).stdout.split()[1]
        self.assertIn("Accepted publickey for tunnel from %s port " % self.ns.host_addr,
                      self.kit.log_text(mark))
        self.assertIn("ED25519 " + fp, self.kit.log_text(mark))
        # Keepalives against MaxSessions 0 (keepalive_interval 1s here): their round trip is
        # measured within a few intervals, and the tunnel stays up while idle.
        since = m.mark()
        t = wait_until("a keepalive round trip", lambda: (
            lambda t: t if t["rtt_ms"] is not None else None)(ctl_status(m)), 3 * SLOW)
        idle_mark = self.kit.log_size()
        time.sleep(5)
        self.assertEqual([t[2:4] for t in m.transitions("t1", since)], [],
                         "the tunnel left up while idle")
        # sshd logs nothing per keepalive at the kit's VERBOSE level
        self.assertEqual(self.kit.log_text(idle_mark).splitlines(), [])
        t = ctl_status(m)
        print("keepalives against the kit's MaxSessions 0: state %s, health %s, rtt_ms %s, "
              "rtt_last_ms %s" % (t["state"], t["health"], t["rtt_ms"], t.get("rtt_last_ms")))
        self.assertEqual(m.grep(r"(?i)keepalive"), [])
        carries_data(self, port, 4096)

    def test_c_keepalive_rtt_through_a_long_path(self):
        # a userspace relay holding each chunk 40 ms per direction in front of the sidecar:
        # the round trip reads about 80 ms, over degraded_rtt 50 ms: degraded, as with an
        # sshd that allows session channels
        relay = self.server(DelayRelay, target_port=SSHD_PORT, target_host=self.ns.addr)
        kh = self.kit.write_known_hosts(os.path.join(self.tmp, "known_hosts_relay"),
                                        host="127.0.0.1", port=relay.port)
        port = harness.free_port()
        m = self.moletun(moletun_section("t1", "127.0.0.1", self.kit.user_key, kh, port,
                                         port=str(relay.port), keepalive_count_max="5",
                                         degraded_rtt="50ms"))
        self.assertUp(m, timeout=15 * SLOW)
        t = wait_until("a keepalive round trip", lambda: (
            lambda t: t if t["rtt_ms"] is not None else None)(ctl_status(m)), 3 * SLOW)
        self.assertEqual(t["health"], "ok")
        relay.delay = 0.040
        t = wait_until("degraded", lambda: (lambda t: t if t["health"] == "degraded"
                                            else None)(ctl_status(m)), 15 * SLOW)
        print("kit sidecar through 2 x 40 ms: rtt %.1f ms (last %.1f ms), health %s" % (
            t["rtt_ms"], t["rtt_last_ms"], t["health"]))
        self.assertGreaterEqual(t["rtt_last_ms"], 64)
        carries_data(self, port, 4096)

    def test_d_no_command_no_shell_no_subsystem(self):
        # the client and path work: a forward to the target through the same login
        rc, out, err = self.ssh("-W", "pg_main:5432", input=b"hello\n")
        self.assertEqual((rc, out), (0, b"hello\n"), err)
        mark = self.kit.log_size()
        rc, out, err = self.ssh(command=["echo", "x"])
        self.assertNotEqual(rc, 0)
        self.assertNotIn(b"x", out)
        rc, out, err = self.ssh("-tt", command=["sh", "-c", "echo y"])
        self.assertNotEqual(rc, 0)
        self.assertNotIn(b"y", out)
        rc, out, err = self.ssh("-s", command=["sftp"])
        self.assertNotEqual(rc, 0)
        self.assertEqual(out, b"")
        # three logins, three refused sessions, nothing run
        self.assertEqual(self.kit.accepted_count(mark), 3)
        self.assertEqual(self.kit.count(r"no more sessions", mark), 3,
                         self.kit.log_text(mark))

    def test_e_other_targets_refused(self):
        mark = self.kit.log_size()
        reached = self.ns.echo.total
        # another port on the sidecar, and the very same target under another name:
        # PermitOpen matches the name the client asks for.
        for target in ("127.0.0.1:%d" % SSHD_PORT, "127.0.0.1:5432", "localhost:5432",
                       "pg_main:5433", self.ns.host_addr + ":22"):
            rc, out, err = self.ssh("-W", target, input=b"hello\n")
            self.assertNotEqual(rc, 0, target)
            self.assertEqual(out, b"", target)
            host, port = target.rsplit(":", 1)
            self.assertIn("to connect to host %s port %s, but the request was denied" % (
                host, port), self.kit.log_text(mark))
        # 127.0.0.1:5432 is the echo target itself: refused by name, it saw nothing
        self.assertEqual(self.ns.echo.total, reached)

    def stream_local(self, sidecar, known_hosts):
        """`ssh -L SOCKET:REMOTE-SOCKET`, then one connection through it; returns (what
        came back, the ssh client's stderr)."""
        local = os.path.join(self.tmp, "local-%d.sock" % time.monotonic_ns())
        args = ssh_cmd(sidecar.listen, sidecar.user_key, known_hosts, "-N", "-o",
                       "ExitOnForwardFailure=yes", "-L", "%s:%s" % (local, self.unix_echo.path),
                       port=sidecar.port, log_level="VERBOSE")
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_until("the local socket", lambda: os.path.exists(local), 15)
            got = b""
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(10)
                s.connect(local)
                s.sendall(b"unix\n")
                try:
                    got = s.recv(100)
                except OSError:
                    pass
        finally:
            p.terminate()
            _, err = p.communicate(timeout=10)
        return got, err.decode(errors="replace")

    def test_f_stream_local_refused(self):
        mark = self.kit.log_size()
        before = self.unix_echo.accepted
        got, err = self.stream_local(self.kit, self.kh)
        self.assertEqual(got, b"")
        self.assertEqual(self.unix_echo.accepted, before)
        self.assertIn("refused streamlocal port forward", self.kit.log_text(mark))
        # OpenSSH 9.2 answers a refused direct-streamlocal with "connect failed", not
        # "administratively prohibited"
        print("client on the refused stream-local forward: " +
              " | ".join(l for l in err.splitlines() if "open failed" in l))
        # The controls: with AllowStreamLocalForwarding local the socket is still out of
        # reach, PermitOpen being a second wall (OpenSSH checks it for paths too)...
        def variant(port, permit_open):
            def edit(text):
                text = text.replace("AllowStreamLocalForwarding no",
                                    "AllowStreamLocalForwarding local")
                return text.replace("PermitOpen pg_main:5432", "PermitOpen " + permit_open)
            sc = KitSidecar(env["work"], self.ns, env["user"], port=port, edit=edit)
            self.addCleanup(sc.cleanup)
            sc.start()
            return sc, sc.write_known_hosts(os.path.join(self.tmp, "known_hosts_%d" % port))

        second, kh = variant(SSHD_PORT + 1, "pg_main:5432")
        got, err = self.stream_local(second, kh)
        self.assertEqual(got, b"")
        self.assertIn("Received request to connect to path %s, but the request was denied" %
                      self.unix_echo.path, second.log_text())
        # ... and with both walls down the same client reaches it: the refusals above are the
        # configuration's doing.
        open_sc, kh = variant(SSHD_PORT + 2, "any")
        got, err = self.stream_local(open_sc, kh)
        self.assertEqual(got, b"unix\n", err + open_sc.log_text())
        self.assertEqual(self.unix_echo.accepted, before + 1)

    def test_g_remote_forward_refused(self):
        port = harness.free_port()
        rc, out, err = self.ssh("-N", "-o", "ExitOnForwardFailure=yes", "-R",
                                "%d:127.0.0.1:22" % port, timeout=20)
        self.assertEqual(rc, 255, err)
        self.assertIn(b"remote port forwarding failed", err)

    def test_h_public_key_only_and_strong_algorithms(self):
        rc, out, err = self.ssh("-o", "PubkeyAuthentication=no", command=["true"])
        self.assertEqual(rc, 255)
        self.assertIn(b"Permission denied (publickey).", err)
        # (a MAC is negotiated only with a cipher that needs one: AES-CTR here)
        for options in (["Ciphers=aes128-cbc"], ["Ciphers=3des-cbc"],
                        ["Ciphers=aes128-ctr", "MACs=hmac-sha1"],
                        ["Ciphers=aes128-ctr", "MACs=hmac-sha1-etm@openssh.com"],
                        ["Ciphers=aes128-ctr", "MACs=umac-64@openssh.com"],
                        ["KexAlgorithms=diffie-hellman-group14-sha1"],
                        ["KexAlgorithms=ecdh-sha2-nistp256"], ["HostKeyAlgorithms=ssh-rsa"]):
            args = sum((["-o", o] for o in options), [])
            rc, out, err = self.ssh(*args, command=["true"], log_level="INFO")
            self.assertEqual(rc, 255, options)
            self.assertIn(b"Unable to negotiate", err, options)
        # and the algorithms libssh2 1.10 has (what moletun uses) are there
        rc, out, err = self.ssh("-o", "Ciphers=aes128-ctr", "-o", "MACs=hmac-sha2-256", "-o",
                                "KexAlgorithms=curve25519-sha256", "-W", "pg_main:5432",
                                input=b"libssh2\n")
        self.assertEqual((rc, out), (0, b"libssh2\n"), err)
        # the banner carries no Debian revision
        with socket.create_connection((self.ns.addr, SSHD_PORT), timeout=10) as s:
            banner = s.recv(256).split(b"\r\n")[0]
        self.assertTrue(banner.startswith(b"SSH-2.0-OpenSSH_"), banner)
        self.assertNotIn(b"Debian", banner)

    def test_i_key_rotation_as_the_readme_says(self):
        port = harness.free_port()
        old_key = self.kit.user_key
        m = self.moletun(moletun_section("t1", self.ns.addr, old_key, self.kh, port))
        self.assertUp(m, timeout=15 * SLOW)
        keys_file = os.path.join(self.kit.keys_dir, "tunnel")
        original = read(keys_file)
        self.addCleanup(write, keys_file, original)
        # add the new key's line, switch the node, remove the old line
        new_key = harness.keygen(os.path.join(self.tmp, "id_new"), comment="moletun@web1-new")
        write(keys_file, original + harness.read_pubkey(new_key + ".pub") + " moletun@web1-new\n")
        write(m.config_path, read(m.config_path).replace("identity_file = " + old_key,
                                                          "identity_file = " + new_key))
        mark, log_mark = m.mark(), self.kit.log_size()
        r = subprocess.run([harness.moletun_bin(), "ctl", "-s", m.control_socket, "reload"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIsNotNone(m.wait_transition("t1", mark, new="up", timeout=15 * SLOW),
                             m.log_text(mark))
        fp = sh(["ssh-keygen", "-l", "-f", new_key + ".pub"]).stdout.split()[1]
        self.assertIn("Accepted publickey for tunnel from %s port " % self.ns.host_addr,
                      self.kit.log_text(log_mark))
        self.assertIn("ED25519 " + fp, self.kit.log_text(log_mark))
        write(keys_file, harness.read_pubkey(new_key + ".pub") + " moletun@web1-new\n")
        carries_data(self, port, 65536)
        rc, out, err = self.ssh("-W", "pg_main:5432", input=b"old\n")
        self.assertEqual(rc, 255)
        self.assertIn(b"Permission denied (publickey)", err)


# ---------------------------------------------------------------------------------------
# The container recipe: built with buildah, run under systemd-nspawn
# ---------------------------------------------------------------------------------------


class Buildah:
    """buildah with its own storage in the cache directory (overlay where the kernel allows
    it, vfs otherwise), so builds here never touch the machine's /var/lib/containers."""

    def __init__(self, driver):
        self.driver = driver
        self.args = ["buildah", "--root", os.path.join(CACHE, "storage-" + driver),
                     "--runroot", "/run/moletun-test-buildah-" + driver,
                     "--storage-driver", driver]

    def __call__(self, *args, check=True, timeout=600):
        return sh(self.args + list(args), check=check, timeout=timeout)

    def has_image(self, name):
        return self("inspect", "--type", "image", name, check=False).returncode == 0

    def works(self):
        """True when a container can be made and mounted with this driver."""
        r = self("from", "scratch", check=False, timeout=60)
        if r.returncode != 0:
            return False
        c = r.stdout.strip().splitlines()[-1]
        ok = self("mount", c, check=False).returncode == 0
        self("rm", c, check=False)
        return ok


def archive_reachable():
    try:
        with urllib.request.urlopen(MIRROR + "/dists/bookworm/Release", timeout=15) as r:
            return r.status == 200
    except OSError:
        return False


def ensure_base(b, timings):
    """localhost/debian:bookworm-slim in b's storage: a debootstrapped minbase Debian 12."""
    if b.has_image(BASE_IMAGE):
        timings["base"] = "cached"
        return
    t0 = time.monotonic()
    rootfs = tempfile.mkdtemp(prefix="bookworm-", dir=CACHE)
    try:
        r = sh(["debootstrap", "--variant=minbase", "bookworm", rootfs, MIRROR], check=False,
               timeout=900)
        if r.returncode != 0:
            raise unittest.SkipTest("debootstrap failed: " + r.stdout[-1500:])
        timings["debootstrap"] = time.monotonic() - t0
        # apt's downloaded packages and lists are not part of an image
        for d in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for f in os.listdir(os.path.join(rootfs, d)):
                p = os.path.join(rootfs, d, f)
                if os.path.isfile(p):
                    os.unlink(p)
        t1 = time.monotonic()
        c = b("from", "scratch").stdout.strip().splitlines()[-1]
        try:
            b("copy", c, rootfs + "/", "/")
            b("commit", "-q", c, BASE_IMAGE)
        finally:
            b("rm", c, check=False)
        timings["import"] = time.monotonic() - t1
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


class KitContainerTest(harness.TunnelTest):
    @classmethod
    def setUpClass(cls):
        try:
            cls.set_up()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def set_up(cls):
        for tool in ("buildah", "debootstrap", "systemd-nspawn"):
            if not shutil.which(tool):
                raise unittest.SkipTest("%s not found (bash tests/deps.sh installs it)" % tool)
        cls.timings = {}
        os.makedirs(CACHE, exist_ok=True)
        cls.lock = open(os.path.join(CACHE, "lock"), "w")
        # one build at a time in the cache (another run of this test waits)
        fcntl.flock(cls.lock, fcntl.LOCK_EX)
        # MOLETUN_TEST_BUILDAH_DRIVER=vfs tries the fallback where overlay works
        b = Buildah(os.environ.get("MOLETUN_TEST_BUILDAH_DRIVER", "overlay"))
        if not b.works():
            print("buildah: %s storage unavailable here, using vfs (slower)" % b.driver)
            b = Buildah("vfs")
        cls.b = b
        if not b.has_image(BASE_IMAGE) and not archive_reachable():
            raise unittest.SkipTest("Debian's archive (%s) is not reachable: cannot "
                                    "debootstrap the base image" % MIRROR)
        t0 = time.monotonic()
        ensure_base(b, cls.timings)
        t1 = time.monotonic()
        # --layers: buildah reuses a step whose instruction and inputs are unchanged
        r = b("bud", "--isolation", "chroot", "--layers", "--build-arg", "BASE=" + BASE_IMAGE,
              "-t", IMAGE, KIT, check=False, timeout=900)
        if r.returncode != 0:
            if not archive_reachable():
                raise unittest.SkipTest("the build failed and Debian's archive is not "
                                        "reachable:\n" + r.stdout[-1500:])
            raise AssertionError("buildah bud failed:\n" + r.stdout[-3000:])
        cls.timings["build"] = time.monotonic() - t1
        cls.timings["total"] = time.monotonic() - t0
        print("container image: %s (%s storage)" % (", ".join(
            "%s %s" % (k, v if isinstance(v, str) else "%.1fs" % v)
            for k, v in cls.timings.items()), b.driver))
        config = json.loads(b("inspect", "--type", "image", IMAGE).stdout)["OCIv1"]["config"]
        cls.image_config = config
        cls.container = b("from", "-q", IMAGE).stdout.strip().splitlines()[-1]
        cls.rootfs = b("mount", cls.container).stdout.strip().splitlines()[-1]
        cls.ns = Namespace(1).up()
        cls.dir = secure_dir("container-")
        user = config["User"]
        pw = [l.split(":") for l in read(os.path.join(cls.rootfs, "etc/passwd")).splitlines()]
        cls.uid = int([p for p in pw if p[0] == user][0][2])
        cls.keys_volume = os.path.join(cls.dir, "keys-volume")
        os.mkdir(cls.keys_volume, 0o700)
        os.chown(cls.keys_volume, cls.uid, cls.uid)
        # authorized_keys/tunnel as README.md writes it: restricted to the target, from
        # this namespace's address only
        cls.user_key = harness.keygen(os.path.join(cls.dir, "id_web1"), comment="moletun@web1")
        cls.authorized = os.path.join(cls.dir, "authorized_keys")
        os.mkdir(cls.authorized, 0o755)
        write(os.path.join(cls.authorized, "tunnel"),
              'restrict,port-forwarding,permitopen="pg_main:5432",command="/usr/sbin/nologin",'
              'from="%s" %s moletun@web1\n' % (cls.ns.host_addr,
                                              harness.read_pubkey(cls.user_key + ".pub")))
        cls.hosts = write(os.path.join(cls.dir, "hosts"), "127.0.0.1 localhost\n"
                          "127.0.0.1 pg_main\n")
        cls.runs = []
        cls.current = cls.run_container()

    @classmethod
    def run_container(cls, binds=(), as_root=False, wait_listening=True):
        """The image's entrypoint under systemd-nspawn as its User (setpriv, as a container
        runtime does it: that user's groups, no capabilities at all), root filesystem
        read-only, in the namespace; returns (process, console path)."""
        name = "mltsk%d-%d" % (PID, len(cls.runs))
        console = os.path.join(cls.dir, name + ".log")
        user = cls.image_config["User"]
        args = ["timeout", "-s", "KILL", "300", nspawn.NSPAWN, "-D", cls.rootfs, "--read-only",
                "-M", name, "--register=no", "--keep-unit", "--as-pid2", "--console=pipe",
                "--network-namespace-path=/run/netns/" + cls.ns.name,
                "--no-new-privileges=yes",
                "--bind=%s:/var/lib/moletun-sidecar" % cls.keys_volume,
                "--bind-ro=%s:/etc/moletun-sidecar/authorized_keys" % cls.authorized,
                "--bind-ro=%s:/etc/hosts" % cls.hosts] + list(binds) + ["--"]
        if not as_root:
            args += ["setpriv", "--reuid=" + user, "--regid=" + user, "--init-groups",
                     "--inh-caps=-all", "--bounding-set=-all"]
        args += cls.image_config["Entrypoint"]
        log = open(console, "ab")
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                             start_new_session=True)
        log.close()
        cls.runs.append(p)
        if wait_listening:
            deadline = time.monotonic() + 60
            while "Server listening on 0.0.0.0 port %d" % SSHD_PORT not in read(console):
                if p.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("the container's sshd did not start:\n" +
                                         read(console)[-3000:])
                time.sleep(0.05)
        return p, console

    @classmethod
    def stop_container(cls, p):
        if p.poll() is None:
            for pid in harness.descendants(p.pid):
                if nspawn._comm(pid) == "systemd-nspawn":
                    harness._signal(pid, 15)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                harness.kill_tree(p.pid)
                p.wait(5)

    @classmethod
    def tearDownClass(cls):
        for p in getattr(cls, "runs", []):
            cls.stop_container(p)
        if getattr(cls, "ns", None):
            cls.ns.down()
        if getattr(cls, "container", None):
            cls.b("umount", cls.container, check=False)
            cls.b("rm", cls.container, check=False)
        if getattr(cls, "lock", None):
            cls.lock.close()

    def printed_known_hosts(self, console):
        """The known_hosts line the entrypoint printed, NAME replaced by the address."""
        m = re.search(r"known_hosts line[^:]*: \[NAME\]:(\d+) (ssh-ed25519 \S+)", read(console))
        self.assertIsNotNone(m, read(console))
        path = os.path.join(self.tmp, "known_hosts")
        write(path, "[%s]:%s %s\n" % (self.ns.addr, m.group(1), m.group(2)))
        return path, m.group(2)

    def sshd_pids(self):
        p, _ = self.current
        return [pid for pid in harness.descendants(p.pid) if nspawn._comm(pid) == "sshd"]

    def test_a_image_as_described(self):
        c = self.image_config
        self.assertEqual(c["User"], "tunnel")
        self.assertEqual(c["Entrypoint"], ["/usr/libexec/moletun-sidecar/entrypoint"])
        self.assertIn("/var/lib/moletun-sidecar", c.get("Volumes") or {})
        self.assertIn("2222/tcp", c.get("ExposedPorts") or {})
        # no host key baked into the image, which every container would share
        self.assertEqual([f for f in os.listdir(os.path.join(self.rootfs, "etc/ssh"))
                          if f.startswith("ssh_host_")], [])
        self.assertEqual(read(os.path.join(self.rootfs, "etc/moletun-sidecar/sshd_config")),
                         read(KIT_CONFIG))

    def test_b_unprivileged_read_only_no_capabilities(self):
        pids = self.sshd_pids()
        self.assertTrue(pids)
        for pid in pids:
            st = proc_status(pid)
            self.assertEqual(st["Uid"].split(), [str(self.uid)] * 4)
            for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
                self.assertEqual(int(st[cap], 16), 0, "%s = %s" % (cap, st[cap]))
            self.assertEqual(st["NoNewPrivs"].strip(), "1")
        # the host key went to the volume, the tunnel user's, 0600
        key = os.path.join(self.keys_volume, "ssh_host_ed25519_key")
        st = os.stat(key)
        self.assertEqual((st.st_uid, st.st_mode & 0o777), (self.uid, 0o600))

    def test_c_moletun_pins_the_printed_key_and_carries_data(self):
        kh, pub = self.printed_known_hosts(self.current[1])
        self.assertEqual(pub, harness.read_pubkey(
            os.path.join(self.keys_volume, "ssh_host_ed25519_key.pub")))
        # README.md's check of a key seen over the network: the fingerprints of
        # ssh-keyscan's line and of the key file on the database host agree
        scanned = write(os.path.join(self.tmp, "scanned"), sh(
            ["ssh-keyscan", "-p", str(SSHD_PORT), "-t", "ed25519", self.ns.addr]).stdout)
        on_host = sh(["ssh-keygen", "-lf", os.path.join(
            self.keys_volume, "ssh_host_ed25519_key.pub")]).stdout.split()[1]
        self.assertEqual(sh(["ssh-keygen", "-lf", scanned]).stdout.split()[1], on_host)
        self.assertIn("host key %s (ED25519)" % on_host, read(self.current[1]))
        port = harness.free_port()
        m = self.moletun(moletun_section("t1", self.ns.addr, self.user_key, kh, port))
        self.assertUp(m, timeout=15 * SLOW)
        carries_data(self, port)
        # the README's key line: no command, and no other target
        rc, out, err = ssh(self.ns.addr, self.user_key, kh, command=["echo", "x"])
        self.assertNotEqual(rc, 0)
        self.assertNotIn(b"x", out)
        rc, out, err = ssh(self.ns.addr, self.user_key, kh, "-W", "127.0.0.1:%d" % SSHD_PORT,
                           input=b"x\n")
        self.assertNotEqual(rc, 0)
        self.assertEqual(out, b"")

    def test_d_keys_volume_kept_across_restart(self):
        before = read(os.path.join(self.keys_volume, "ssh_host_ed25519_key.pub"))
        p, _ = self.current
        self.stop_container(p)
        type(self).current = self.run_container()
        console = read(self.current[1])
        self.assertNotIn("generated host key", console)
        self.assertEqual(read(os.path.join(self.keys_volume, "ssh_host_ed25519_key.pub")), before)
        kh, _ = self.printed_known_hosts(self.current[1])
        rc, out, err = ssh(self.ns.addr, self.user_key, kh, "-W", "pg_main:5432",
                           input=b"again\n")
        self.assertEqual((rc, out), (0, b"again\n"), err)

    def refused_run(self, binds=(), as_root=False):
        p, console = self.run_container(binds, as_root=as_root, wait_listening=False)
        try:
            rc = p.wait(60)
        except subprocess.TimeoutExpired:
            self.stop_container(p)
            self.fail("the container did not stop:\n" + read(console))
        return rc, read(console)

    def test_e_refuses_unhardened_missing_and_root(self):
        bad = write(os.path.join(self.dir, "sshd_config.bad"), kit_config().replace(
            "MaxSessions 0", "MaxSessions 10").replace("PermitOpen pg_main:5432", "PermitOpen any"))
        rc, out = self.refused_run(["--bind-ro=%s:/etc/moletun-sidecar/sshd_config" % bad])
        self.assertNotEqual(rc, 0, out)
        self.assertIn("not hardened: maxsessions is '10'", out)
        self.assertIn("not hardened: permitopen is 'any'", out)
        self.assertNotIn("Server listening", out)
        rc, out = self.refused_run(["--tmpfs=/etc/moletun-sidecar"])
        self.assertNotEqual(rc, 0, out)
        self.assertIn("no readable configuration at /etc/moletun-sidecar/sshd_config", out)
        rc, out = self.refused_run(as_root=True)
        self.assertNotEqual(rc, 0, out)
        self.assertIn("refusing to run as root", out)


# ---------------------------------------------------------------------------------------
# moletun-sidecar.service under systemd
# ---------------------------------------------------------------------------------------

INSTALL = "/opt/moletun"
UNIT = "moletun-sidecar"


class KitSystemdTest(harness.TunnelTest):
    @classmethod
    def setUpClass(cls):
        try:
            cls.set_up()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def set_up(cls):
        reason = nspawn.unavailable_reason()
        if reason:
            raise unittest.SkipTest(reason)
        cls.dir = secure_dir("systemd-")
        build_dir = os.path.dirname(os.path.abspath(harness.moletun_bin()))
        dest = nspawn.meson_install(build_dir, cls.dir)
        cls.dest = dest
        cls.unit_path = nspawn.find_installed(dest, "moletun-sidecar.service", ("systemd/system",))
        cls.sysusers = nspawn.find_installed(dest, "moletun-sidecar.conf", ("sysusers.d",))
        cls.tmpfiles = nspawn.find_installed(dest, "moletun-sidecar.conf", ("tmpfiles.d",))
        cls.kit_config = nspawn.find_installed(dest, "sshd_config", ("moletun/sidecar",))
        cls.ns = Namespace(2).up()
        cls.c = nspawn.Container(cls.dir, {dest: INSTALL}, name="mltsk%d-sd" % PID,
                                 netns=cls.ns.name)
        try:
            cls.c.boot()
        except Exception as e:
            raise unittest.SkipTest("systemd-nspawn could not boot a container: %s" %
                                    str(e)[-800:])

        def inside(path):
            return INSTALL + path[len(dest):]

        c = cls.c
        c.run(["systemd-sysusers", inside(cls.sysusers)])
        c.run(["systemd-tmpfiles", "--create", inside(cls.tmpfiles)])
        cls.uid = int(c.run(["id", "-u", "tunnel"]).stdout.strip())
        # the installed kit's configuration, unchanged; pg_main is this host's loopback
        c.write("/etc/moletun-sidecar/sshd_config", read(cls.kit_config))
        c.write("/etc/hosts", "127.0.0.1 localhost\n127.0.0.1 pg_main\n")
        cls.user_key = harness.keygen(os.path.join(cls.dir, "id_web1"), comment="moletun@web1")
        cls.key_line = ('restrict,port-forwarding,permitopen="pg_main:5432",'
                        'command="/usr/sbin/nologin" %s moletun@web1\n' %
                        harness.read_pubkey(cls.user_key + ".pub"))
        c.write("/etc/moletun-sidecar/authorized_keys/tunnel", cls.key_line)
        # The installed unit; a drop-in only moves the entrypoint to where the install is
        # bound.
        text = read(cls.unit_path)
        entry = re.search(r"^ExecStartPre=(\S+)", text, re.M).group(1)
        c.write("/etc/systemd/system/%s.service" % UNIT, text)
        c.run(["mkdir", "-p", "/etc/systemd/system/%s.service.d" % UNIT])
        c.write("/etc/systemd/system/%s.service.d/test.conf" % UNIT,
                "[Service]\nExecStartPre=\nExecStartPre=%s%s --prepare\nExecReload=\n"
                "ExecReload=%s%s --prepare\nExecReload=/bin/kill -HUP $MAINPID\n" % (
                    INSTALL, entry, INSTALL, entry))
        c.run(["systemctl", "daemon-reload"])

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "c", None):
            cls.c.shutdown()
        if getattr(cls, "ns", None):
            cls.ns.down()

    def systemctl(self, *args, check=True):
        r = self.c.run(["systemctl"] + list(args), check=False, timeout=60)
        if check and r.returncode != 0:
            self.fail("systemctl %s exited %d:\n%s\n%s" % (" ".join(args), r.returncode,
                                                          r.stdout, self.journal()[-3000:]))
        return r

    def journal(self):
        return self.c.run(["journalctl", "--no-pager", "-o", "cat", "-u", UNIT]).stdout

    def printed_known_hosts(self):
        m = wait_until("the printed host key", lambda: re.search(
            r"known_hosts line[^:]*: \[NAME\]:2222 (ssh-ed25519 \S+)", self.journal()), 10)
        return write(os.path.join(self.tmp, "known_hosts"),
                     "[%s]:2222 %s\n" % (self.ns.addr, m.group(1)))

    def ensure_started(self):
        if self.c.show(UNIT, "ActiveState")["ActiveState"] != "active":
            self.systemctl("start", UNIT)

    def test_a_static_checks(self):
        # verify wants ExecStartPre to exist: point it at the installed entrypoint
        work = tempfile.mkdtemp(dir=self.tmp)
        unit = os.path.join(work, UNIT + ".service")
        entry = nspawn.find_installed(self.dest, "entrypoint", ("libexec/moletun-sidecar",))
        write(unit, re.sub(r"^(ExecStartPre|ExecReload)=\S+/entrypoint", r"\1=" + entry,
                           read(self.unit_path), flags=re.M))
        r = sh(["systemd-analyze", "verify", "--man=no", unit], check=False)
        complaints = [l for l in r.stdout.splitlines() if UNIT in l]
        self.assertEqual((r.returncode, complaints), (0, []), r.stdout)
        r = sh(["systemd-analyze", "security", "--offline=true", "--no-pager", unit], check=False)
        m = re.search(r"Overall exposure level for %s\.service: ([0-9.]+) (\S+)" % UNIT, r.stdout)
        self.assertIsNotNone(m, r.stdout)
        print("systemd-analyze security %s.service: %s %s" % (UNIT, m.group(1), m.group(2)))
        self.assertLessEqual(float(m.group(1)), 2.0)
        self.assertEqual(m.group(2), "OK")

    def test_b_starts_unprivileged_and_sandboxed(self):
        t0 = time.monotonic()
        self.systemctl("start", UNIT)
        st = self.c.show(UNIT, "ActiveState", "SubState", "Type")
        self.assertEqual((st["ActiveState"], st["SubState"], st["Type"]),
                         ("active", "running", "notify"), st)
        print("systemctl start %s: %.2fs" % (UNIT, time.monotonic() - t0))
        pids = self.c.host_pids("sshd", "/etc/moletun-sidecar/sshd_config")
        self.assertEqual(len(pids), 1, pids)
        status = proc_status(pids[0])
        self.assertEqual(status["Uid"].split(), [str(self.uid)] * 4)
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            self.assertEqual(int(status[cap], 16), 0, "%s = %s" % (cap, status[cap]))
        self.assertEqual(status["NoNewPrivs"].strip(), "1")
        self.assertEqual(status["Seccomp"].strip(), "2")
        journal = self.journal()
        self.assertIn("generated host key /var/lib/moletun-sidecar/ssh_host_ed25519_key", journal)
        self.assertRegex(journal, r"host key SHA256:\S+ \(ED25519\): ssh-ed25519 ")
        owner = self.c.run(["stat", "-c", "%U %a", "/var/lib/moletun-sidecar",
                            "/var/lib/moletun-sidecar/ssh_host_ed25519_key"]).stdout.split("\n")
        self.assertEqual(owner[:2], ["tunnel 700", "tunnel 600"])

    def test_c_moletun_tunnels_through_it(self):
        self.ensure_started()
        kh = self.printed_known_hosts()
        port = harness.free_port()
        m = self.moletun(moletun_section("t1", self.ns.addr, self.user_key, kh, port))
        self.assertUp(m, timeout=15 * SLOW)
        carries_data(self, port)
        rc, out, err = ssh(self.ns.addr, self.user_key, kh, command=["echo", "x"])
        self.assertNotEqual(rc, 0)
        self.assertNotIn(b"x", out)
        # reload: checked, then sshd re-executes; the tunnel's session is untouched
        since = m.mark()
        self.systemctl("reload", UNIT)
        carries_data(self, port, 4096)
        self.assertEqual(m.transitions("t1", since), [])
        # a reload onto an unhardened configuration fails and leaves sshd as it was
        self.c.run(["sed", "-i", "s/^MaxSessions 0$/MaxSessions 10/",
                    "/etc/moletun-sidecar/sshd_config"])
        r = self.systemctl("reload", UNIT, check=False)
        self.c.write("/etc/moletun-sidecar/sshd_config", read(self.kit_config))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("not hardened: maxsessions is '10'", self.journal())
        self.assertEqual(self.c.show(UNIT, "ActiveState")["ActiveState"], "active")
        carries_data(self, port, 4096)
        # revoking: the key's line removed, then a restart cuts the node's session off and
        # its reconnects are refused
        self.c.write("/etc/moletun-sidecar/authorized_keys/tunnel", "")
        since = m.mark()
        self.systemctl("restart", UNIT)
        self.assertIsNotNone(m.wait_transition("t1", since, old="up", timeout=10))
        self.assertIsNotNone(m.wait_for(r"authentication failed for tunnel@", timeout=10,
                                        since=since), m.log_text(since))
        time.sleep(1)
        self.assertNotEqual(m.state("t1"), "up")
        # and the line back: it comes back on its own (auth_retry_interval)
        self.c.write("/etc/moletun-sidecar/authorized_keys/tunnel", self.key_line)
        self.assertIsNotNone(m.wait_state("t1", "up", 15 * SLOW))

    def test_d_stop(self):
        self.ensure_started()
        self.systemctl("stop", UNIT)
        self.assertEqual(self.c.host_pids("sshd", "/etc/moletun-sidecar/sshd_config"), [])
        self.assertFalse(jumpnet.reachable(self.ns.addr, SSHD_PORT))


if __name__ == "__main__":
    harness.main()
