#!/usr/bin/env python3
"""README.md and doc/*.md hold only examples that work.

Every fenced block of those files is either exercised here or listed in SKIP with the
reason; a block that is neither fails the test, and so does a SKIP entry that matches no
block. Exercised:
  - every configuration example (```ini) through the built `moletun check -c FILE`, with the
    files it names made real under a temporary root (see Root); drop-ins (sections of
    tunnels and alerts only) in conf.d/ under the package's /etc/moletun/moletun.conf, the
    one "From source" installs; all of "Getting started" together in one conf.d, so that no
    two of them define the same section; an example the README presents as an error
    (marked `<!-- test_readme: check fails with "..." -->`) must fail with that message;
  - `moletun help`'s usage, `moletun check`'s ssh_config listing and the sample of
    `moletun ctl status` against the binary's output;
  - the ctl, alert and enrollment commands, as written, against a daemon of the test's own
    with the README's first tunnel (see test_commands_against_a_daemon for what is pointed
    at the test's peers);
  - doc/tests.md names every integration test with its `meson test` name.
"""

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import harness  # noqa: E402
import webhook  # noqa: E402

DOCS = ["README.md"] + sorted(os.path.relpath(p, TOP)
                              for p in glob.glob(os.path.join(TOP, "doc", "*.md")))

# Blocks not exercised here, each with the reason: (file, start of its first line, reason).
SKIP = [
    ("README.md", "   web node", "a diagram"),
    ("README.md", "apt-get build-dep ./",
     "builds and installs the package: tests/deb/readme_install.py runs its apt line in a "
     "booted systemd, tests/deb/run.sh the build"),
    ("README.md", "ssh-keygen -q -t ed25519 -N ''",
     "writes /etc/moletun: tests/deb/readme_install.py runs it verbatim"),
    ("README.md", "ssh-keyscan -p 2222",
     "writes /etc/moletun: tests/deb/readme_install.py runs it verbatim against its sidecar"),
    ("README.md", "bash tests/demo/run.sh", "the demo: tests/run.sh runs it with --selftest"),
    ("README.md", "bash tests/run.sh", "the whole suite, which runs this test"),
    ("README.md", " web1: moletun, key web1", "a diagram"),
    ("README.md", 'restrict,port-forwarding,permitopen="pg_main:5432",command=',
     "a sidecar's authorized_keys line: test_sidecar_kit.py logs in with it and is refused "
     "a command and another target"),
    ("README.md", "apt install prometheus-node-exporter", "installs a package"),
    ("README.md", "[Service]",
     "a systemd drop-in, not moletun's: the same lines are in moletun.service's comment"),
    ("README.md", "scrape_configs:",
     "Prometheus's configuration: needs a Prometheus server (test_grafana_dashboard.py runs "
     "one with its own)"),
    ("README.md", "# /etc/grafana/provisioning", "Grafana's provisioning: needs Grafana"),
    ("doc/architecture.md", "tunnel     tunnel.c", "a diagram"),
]

CHECK_FAILS = re.compile(r'<!-- test_readme: check fails with "(.*)" -->')
FENCE = re.compile(r"^( *)```(\S*)\s*$")


class Block:
    def __init__(self, path, line, lang, text, marker, heading):
        self.path, self.line, self.lang, self.text = path, line, lang, text
        self.marker, self.heading = marker, heading
        self.first = next((l for l in text.splitlines() if l.strip()), "")

    def __str__(self):
        return "%s:%d (%s: %s)" % (self.path, self.line, self.heading, self.first[:50])


def parse(path):
    """The fenced blocks of one Markdown file, with the marker comment right above each."""
    with open(os.path.join(TOP, path)) as f:
        lines = f.read().split("\n")
    blocks, heading, i = [], "", 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if lines[i].startswith("#"):
            heading = lines[i].lstrip("# ")
        elif m:
            indent, start, body = len(m.group(1)), i, []
            i += 1
            while not re.match(r"^ *```\s*$", lines[i]):
                body.append(lines[i][indent:])
                i += 1
            before = [l for l in lines[:start] if l.strip()]
            marker = before[-1] if before and before[-1].startswith("<!--") else ""
            blocks.append(Block(path, start + 1, m.group(2), "\n".join(body) + "\n", marker,
                                heading))
        i += 1
    return blocks


BLOCKS = [b for p in DOCS for b in parse(p)]


def skipped(b):
    return next((s for s in SKIP if s[0] == b.path and b.first.startswith(s[1])), None)


def sections(text):
    return re.findall(r"(?m)^\[([^\]]+)\]", text)


def is_dropin(b):
    """Tunnel and alert sections only: a file for conf.d/."""
    names = sections(b.text)
    return bool(names) and all(n.startswith(("tunnel:", "alert:")) for n in names)


# Which test exercises which blocks; every block is claimed by one or skipped.
CLAIMS = {
    "usage": lambda b: b.lang == "" and b.first.startswith("usage: moletun"),
    "ssh_config": lambda b: (b.lang == "ini" and "ssh_host =" in b.text) or (
        b.lang == "" and b.first.startswith("primary  tunnel@")),
    "config": lambda b: b.lang == "ini" and "ssh_host =" not in b.text,
    "first_tunnel": lambda b: b.lang == "sh" and "<<'CONF'" in b.text,
    "source_install": lambda b: b.lang == "sh" and "meson install -C build" in b.text,
    "status_output": lambda b: b.lang == "" and b.first.startswith("TUNNEL "),
    "daemon": lambda b: b.lang == "sh" and re.match(r"moletun (ctl|authorize)", b.first) or (
        b.lang == "sh" and "moletun ctl alert-test" in b.text),
}


def claimed(name):
    return [b for b in BLOCKS if not skipped(b) and CLAIMS[name](b)]


def one(name, pred=lambda b: True):
    found = [b for b in claimed(name) if pred(b)]
    if len(found) != 1:
        raise AssertionError("expected one %s block, found %s" % (name, [str(b) for b in found]))
    return found[0]


def heredoc(b):
    """The configuration the first-tunnel block writes with `cat > FILE <<'CONF'`."""
    m = re.search(r"cat > (\S+) <<'CONF'\n(.*?)^CONF$", b.text, re.S | re.M)
    return m.group(1), m.group(2)


class Root:
    """A temporary stand-in for `/`: every absolute path in a configuration value is
    rewritten to lie under it (`/etc/moletun/id_ed25519` -> ROOT/etc/moletun/id_ed25519),
    which is the only substitution made in a configuration that is checked; the files the
    configuration names are then made there: an ed25519 key (mode 0600; encrypted when an
    identity_passphrase_file names its passphrase), a known_hosts line for the host, an
    ssh_config with the alias, the directories of sockets, metrics files and include
    globs."""

    PASSPHRASE = "readme passphrase"

    def __init__(self, parent):
        self.dir = tempfile.mkdtemp(prefix="root-", dir=parent)

    def path(self, p):
        return self.dir + p

    def rewrite(self, text):
        return re.sub(r"(?m)^(\s*;?\s*[a-z_]+\s*=\s*)(/\S*)",
                      lambda m: m.group(1) + self.path(m.group(2)), text)

    def write(self, p, text, mode=0o644):
        full = self.path(p)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write(text)
        os.chmod(full, mode)
        return full

    def provide(self, text):
        """Makes real the files named by `text` (a configuration already rewritten)."""
        for sect in re.split(r"(?m)^(?=\[)", text):
            keys = {}
            for k, v in re.findall(r"(?m)^\s*([a-z_]+)\s*=\s*(.*?)\s*(?:;.*)?$", sect):
                keys.setdefault(k, v)
            passphrase = keys.get("identity_passphrase_file")
            if passphrase:
                self._file(passphrase, self.PASSPHRASE + "\n", 0o600)
            for k in ("identity_file", "proxy_jump_identity_file"):
                if k in keys and not os.path.exists(keys[k]):
                    os.makedirs(os.path.dirname(keys[k]), exist_ok=True)
                    harness.keygen(keys[k], passphrase=self.PASSPHRASE if
                                   (passphrase and k == "identity_file") else "")
            if "known_hosts_file" in keys:
                host = keys.get("host", "db.example.com")
                port = keys.get("port", "22")
                name = host if port == "22" else "[%s]:%s" % (host, port)
                self._file(keys["known_hosts_file"], "%s %s\n" % (name, self.host_key()))
            for k in ("control_socket", "metrics_textfile", "files"):
                if k in keys:
                    os.makedirs(os.path.dirname(keys[k]), exist_ok=True)

    def _file(self, full, text, mode=0o644):
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "a") as f:
            f.write(text)
        os.chmod(full, mode)

    def host_key(self):
        if not hasattr(self, "_host_key"):
            key = harness.keygen(os.path.join(self.dir, "host_key"), comment="host")
            self._host_key = harness.read_pubkey(key + ".pub")
        return self._host_key

    def conffile(self):
        """The package's /etc/moletun/moletun.conf, the one "From source" installs."""
        src = re.search(r"(\S+) /etc/moletun/moletun\.conf",
                        one("source_install").text).group(1)
        with open(os.path.join(TOP, src)) as f:
            text = self.rewrite(f.read())
        path = self.write("/etc/moletun/moletun.conf", text)
        self.provide(text)
        return path

    def dropin(self, name, text):
        text = self.rewrite(text)
        self.write("/etc/moletun/conf.d/" + name, text)
        self.provide(text)


def dropin_name(b):
    return sections(b.text)[0].split(":", 1)[1] + ".conf"


def check(config, *args):
    r = subprocess.run([harness.moletun_bin(), "check", "-c", config] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True, timeout=30)
    return r.returncode, r.stdout


class ReadmeTest(harness.TunnelTest):

    def test_every_block_exercised_or_skipped(self):
        for b in BLOCKS:
            claims = [n for n, pred in CLAIMS.items() if pred(b)]
            if not skipped(b):
                self.assertEqual(len(claims), 1, "%s is exercised by %s: neither exercised "
                                 "nor in SKIP with a reason" % (b, claims or "no test"))
        for s in SKIP:
            n = len([b for b in BLOCKS if skipped(b) == s])
            self.assertEqual(n, 1, "SKIP entry %r matches %d blocks" % (s[:2], n))

    def test_tests_md_names_every_integration_test(self):
        """doc/tests.md describes every tests/integration/test_*.py, with the name meson
        runs it by."""
        with open(os.path.join(TOP, "tests", "meson.build")) as f:
            names = dict((f, n) for n, f in re.findall(
                r"'(\w+)': \['integration/(test_\w+\.py)'", f.read()))
        with open(os.path.join(TOP, "doc", "tests.md")) as f:
            text = f.read()
        for path in sorted(glob.glob(os.path.join(HERE, "test_*.py"))):
            name = os.path.basename(path)
            self.assertIn(name, names, "%s is not registered in tests/meson.build" % name)
            self.assertIn("`%s` (`%s`)" % (name, names[name]), text)

    def test_usage_is_moletun_help(self):
        r = subprocess.run([harness.moletun_bin(), "help"], stdout=subprocess.PIPE,
                           universal_newlines=True, timeout=10)
        self.assertEqual(r.returncode, 0)
        self.assertEqual(one("usage").text, r.stdout)

    def test_config_examples_pass_check(self):
        for b in claimed("config"):
            with self.subTest(block=str(b)):
                root = Root(self.tmp)
                expect_error = CHECK_FAILS.match(b.marker)
                if is_dropin(b):
                    config = root.conffile()
                    root.dropin(dropin_name(b), b.text)
                else:
                    text = root.rewrite(b.text)
                    config = root.write("/etc/moletun/moletun.conf", text)
                    root.provide(text)
                rc, out = check(config)
                if expect_error:
                    self.assertEqual(rc, 1, out)
                    self.assertIn(expect_error.group(1), out)
                    self.assertRegex(out, r"(?m)^%s" % re.escape(root.dir))
                else:
                    self.assertEqual(rc, 0, "%s\n%s" % (b.text, out))

    def test_getting_started_together(self):
        """The first tunnel's drop-in and every other "Getting started" drop-in, in one
        conf.d under the package's configuration: no section twice."""
        root = Root(self.tmp)
        config = root.conffile()
        path, text = heredoc(one("first_tunnel"))
        self.assertTrue(path.startswith("/etc/moletun/conf.d/"), path)
        root.dropin(os.path.basename(path), text)
        names = {os.path.basename(path)}
        for b in claimed("config"):
            if is_dropin(b) and not CHECK_FAILS.match(b.marker) and b.line < self.reference():
                self.assertNotIn(dropin_name(b), names)
                names.add(dropin_name(b))
                root.dropin(dropin_name(b), b.text)
        rc, out = check(config)
        self.assertEqual(rc, 0, out)
        self.assertRegex(out, r"(?m)^primary\s+tunnel@db\.example\.com:2222\s+L "
                         r"127\.0\.0\.1:5433 -> pg_main:5432")

    @staticmethod
    def reference():
        with open(os.path.join(TOP, "README.md")) as f:
            return f.read().split("\n").index("# Reference") + 1

    def test_ssh_config_alias_and_its_listing(self):
        """The ssh_config example, with an ssh_config that gives what its listing shows;
        the listing must match `check`'s, `...` standing for any lines."""
        conf = one("ssh_config", lambda b: b.lang == "ini")
        listing = one("ssh_config", lambda b: b.lang == "")
        root = Root(self.tmp)
        config = root.conffile()
        text = root.rewrite(conf.text)
        ssh_config = re.search(r"(?m)^ssh_config = (\S+)", text).group(1)
        alias = re.search(r"(?m)^ssh_host = (\S+)", text).group(1)
        key = root.path("/etc/moletun/id_ed25519")
        os.makedirs(os.path.dirname(key), exist_ok=True)
        harness.keygen(key)
        kh = root.path("/etc/moletun/known_hosts")
        with open(kh, "w") as f:
            f.write("[10.1.0.2]:2222 %s\n10.0.0.1 %s\n" % (root.host_key(), root.host_key()))
        with open(ssh_config, "w") as f:
            # the bastion by an alias: `ssh -G` prints a ProxyJump to an IPv4 address as
            # ops@[10.0.0.1], which moletun refuses (the README says so)
            f.write("Host %s\n  HostName 10.1.0.2\n  Port 2222\n  User tunnel\n"
                    "  ProxyJump ops@bastion\n  ServerAliveInterval 30\n  IdentityFile %s\n"
                    "  UserKnownHostsFile %s\n"
                    "  LocalForward 127.0.0.1:5433 pg_main:5432\n"
                    "Host bastion\n  HostName 10.0.0.1\n" % (alias, key, kh))
        root.dropin(dropin_name(conf), conf.text)
        rc, out = check(config)
        self.assertEqual(rc, 0, out)
        pattern = []
        for line in listing.text.rstrip("\n").split("\n"):
            if line.strip() == "...":
                pattern.append(r"(?:.*\n)*?")
            else:
                pattern.append(re.escape(line.replace("/etc/", root.path("/etc/"))) +
                               r"[ \t]*\n")
        self.assertRegex(out, "".join(pattern), "README's listing:\n%s" % listing.text)

    def test_commands_against_a_daemon(self):
        """Daemon: the first tunnel as the README writes it, with its peers pointed at the
        test's: host, port and user at harness's sshd, the key authorized there, known_hosts
        holding that sshd's host key, the forward listening on a free port towards an echo
        target the sshd may open, the alert's url at a webhook receiver. The blocks then run
        as written, through two commands on PATH: `moletun` adds `-c CONFIG` to check,
        authorize and audit (authorize and check get the README's configuration, paths
        rewritten only; audit the daemon's), and `systemctl reload moletun` runs what
        moletun.service's ExecReload= runs, `moletun ctl reload`."""
        echo = self.server()
        sidecar = self.sidecar(permit_open=["127.0.0.1:%d" % echo.port])
        hook = webhook.WebhookReceiver()
        self.addCleanup(hook.cleanup)
        port = harness.free_port()
        _, first = heredoc(one("first_tunnel"))
        alert = one("config", lambda b: is_dropin(b) and sections(b.text)[0].startswith(
            "alert:") and b.line < self.reference())

        written = Root(self.tmp)
        written_config = written.conffile()
        written.dropin("primary.conf", first)
        written.dropin(dropin_name(alert), alert.text)

        live = Root(self.tmp)
        live_config = live.conffile()
        socket_path = os.path.join(live.dir, "control.sock")
        with open(live_config) as f:
            text = re.sub(r"(?m)^\[moletun\]$", "[moletun]\ncontrol_socket = %s" % socket_path,
                          f.read(), count=1)
        live.write("/etc/moletun/moletun.conf", text)
        tunnel = first
        for key, value in (("host", sidecar.listen), ("port", str(sidecar.port)),
                           ("user", sidecar.user)):
            tunnel = re.sub(r"(?m)^%s = .*$" % key, "%s = %s" % (key, value), tunnel)
        tunnel = tunnel.replace("127.0.0.1:5433 pg_main:5432",
                                "127.0.0.1:%d 127.0.0.1:%d" % (port, echo.port))
        live.dropin("primary.conf", tunnel)
        key = live.path("/etc/moletun/id_ed25519")
        with open(sidecar.authorized_keys, "a") as f:
            f.write(harness.read_pubkey(key + ".pub") + " readme\n")
        sidecar.write_known_hosts(live.path("/etc/moletun/known_hosts"))
        live.dropin(dropin_name(alert), re.sub(r"(?m)^url = .*$", "url = " + hook.url("/ops"),
                                               alert.text))
        self.assertEqual(check(live_config)[0], 0, check(live_config)[1])

        bindir = os.path.join(self.tmp, "bin")
        os.mkdir(bindir)
        with open(os.path.join(bindir, "moletun"), "w") as f:
            f.write('#!/bin/sh\ncase "$1" in\n'
                    'check|authorize) c=$1; shift; exec "%s" "$c" -c "%s" "$@";;\n'
                    'audit) shift; exec "%s" audit -c "%s" "$@";;\n'
                    'esac\nexec "%s" "$@"\n' % (harness.moletun_bin(), written_config,
                                                harness.moletun_bin(), live_config,
                                                harness.moletun_bin()))
        with open(os.path.join(bindir, "systemctl"), "w") as f:
            f.write('#!/bin/sh\n[ "$*" = "reload moletun" ] && exec moletun ctl reload\n'
                    'echo "test_readme: no systemctl $* here" >&2\nexit 1\n')
        for name in ("moletun", "systemctl"):
            os.chmod(os.path.join(bindir, name), 0o755)
        env = dict(os.environ, PATH=bindir + ":" + os.environ["PATH"],
                   MOLETUN_SOCKET=socket_path)

        m = harness.Moletun(tempfile.mkdtemp(prefix="moletun-", dir=self.tmp), [])
        m.config_path = live_config
        self._moletuns.append(m)
        self.addCleanup(self._check_sanitizers, m)
        self.addCleanup(m.cleanup)
        m.start()
        self.assertUp(m, tunnel="primary", timeout=10)

        def sh(script):
            r = subprocess.run(["bash", "-c", script], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, universal_newlines=True, env=env,
                               timeout=30)
            return r.returncode, r.stdout

        def wait_ok():
            for _ in range(int(100 * harness.slowdown())):
                if sh("moletun ctl status primary")[0] == 0:
                    return
                time.sleep(0.1)
            self.fail(sh("moletun ctl status")[1])

        wait_ok()
        self.status_sample(sh, {"%s@%s:%d" % (sidecar.user, sidecar.listen, sidecar.port):
                                "tunnel@db.example.com:2222",
                                "127.0.0.1:%d " % port: "127.0.0.1:5433 ",
                                "127.0.0.1:%d " % echo.port: "pg_main:5432 "})
        self.alerts_sent = 0
        for b in claimed("daemon"):
            with self.subTest(block=str(b)):
                if b.first.startswith("moletun authorize"):
                    self.enroll(b, sh)
                elif "alert-test" in b.text and "&&" in b.text:
                    rc, out = sh(b.text)
                    self.assertEqual(rc, 0, out)
                    self.alerts_sent += 1
                    reqs = hook.wait_requests(self.alerts_sent, timeout=10)
                    self.assertTrue(len(reqs) >= self.alerts_sent and reqs[-1].path == "/ops",
                                    reqs)
                else:
                    for line in b.text.splitlines():
                        wait_ok()
                        self.command(line, sh, hook)
        self.assertIsNotNone(harness.echo_once(port))

    def status_sample(self, sh, names):
        """The README's sample of `ctl status` is the daemon's, the test's names replaced
        by the README's, with any round trip, age and column widths."""
        def norm(text):
            text = re.sub(r"(?<= )\d+(\.\d+)?ms(?= )", "RTT", text)
            text = re.sub(r"(?<= )\d+[smhd](?= )", "AGE", text)
            return "\n".join(re.sub(r" {2,}", "  ", l).rstrip() for l in text.splitlines())
        want = norm(one("status_output").text)
        # the sidecar's verdict comes with the daemon's first audit
        for _ in range(int(50 * harness.slowdown())):
            out = sh("moletun ctl status")[1]
            for live, shown in names.items():
                out = out.replace(live, shown)
            if norm(out) == want:
                return
            time.sleep(0.1)
        self.assertEqual(norm(out), want)

    def command(self, line, sh, hook):
        """One line of a ctl block: it must do what its comment says."""
        cmd = line.split("  #")[0].strip()
        rc, out = sh(cmd)
        if ">/dev/null ||" in cmd:  # the health check: silent while up and ok
            self.assertEqual((rc, out), (0, ""), cmd)
            return
        self.assertEqual(rc, 0, "%s\n%s" % (cmd, out))
        words = cmd.split()[2:]
        if words == ["status"]:
            self.assertRegex(out, r"(?m)^primary\s+up\b")
        elif words == ["status", "--json"]:
            doc = json.loads(out)
            self.assertIn("primary", json.dumps(doc))
        elif words == ["metrics"]:
            self.assertIn('moletun_tunnel_up{tunnel="primary"} 1', out)
        elif words[0] == "alert-test":
            self.alerts_sent += 1
            self.assertGreaterEqual(len(hook.wait_requests(self.alerts_sent, timeout=10)),
                                    self.alerts_sent)

    def enroll(self, b, sh):
        """`moletun authorize` prints the README's lines (the key and the node's name
        aside); `moletun audit` runs its checks against the test's sshd."""
        lines = b.text.splitlines()
        self.assertTrue(lines[-1].startswith("moletun audit "), b)
        rc, out = sh(lines[0])
        self.assertEqual(rc, 0, out)
        shown = "\n".join(lines[1:-1]) + "\n"
        pattern = re.escape(shown).replace(re.escape("AAAA…"), r"AAAA\S+")
        pattern = re.sub(r"moletun@web1", r"moletun@\\S+", pattern)
        self.assertRegex(out, "^" + pattern + "$")
        rc, out = sh(lines[-1])
        self.assertIn(rc, (0, 1), out)
        self.assertRegex(out, r"(?m)\b(pass|fail)\b")


if __name__ == "__main__":
    harness.main()
