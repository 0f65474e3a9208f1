#!/usr/bin/env python3
"""`moletun check` against the config corpus in tests/configs, conf/moletun.conf and the
man pages.

tests/configs/good/NAME.conf must pass and print exactly NAME.out on stdout.
tests/configs/bad/NAME.conf must fail with exit 1 and print exactly NAME.expected on
stderr. Both trees are copied into a temporary directory with "@DIR@" replaced by its path
(git does not keep file modes, and key files must be 0600); the expected texts use "@DIR@"
too. Keys are generated there with ssh-keygen.

Set MOLETUN_UPDATE_EXPECTED=1 to rewrite the .out/.expected files from the current
output (then read the diff before committing it).

Needs MOLETUN_BIN (meson sets it). Python standard library only.
"""
import base64
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(ROOT, "tests", "configs")
MOLETUN = os.environ.get("MOLETUN_BIN", os.path.join(ROOT, "build", "moletun"))
UPDATE = os.environ.get("MOLETUN_UPDATE_EXPECTED") == "1"

FAKE_KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\n"
            "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
            "-----END OPENSSH PRIVATE KEY-----\n")


def write(path, text, mode):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, mode)


def with_rounds(pem, rounds):
    """The OpenSSH key `pem` with its bcrypt rounds (stored in the clear) set to `rounds`:
    ssh-keygen itself would take forever to write a key with 2^32 rounds."""
    lines = pem.strip().splitlines()
    blob = bytearray(base64.b64decode("".join(lines[1:-1])))
    p = len(b"openssh-key-v1\0")
    for _ in range(2):  # cipher name, kdf name
        p += 4 + int.from_bytes(blob[p:p + 4], "big")
    p += 4  # the kdf options string's length, then the salt string, then the rounds
    p += 4 + int.from_bytes(blob[p:p + 4], "big")
    blob[p:p + 4] = rounds.to_bytes(4, "big")
    text = base64.b64encode(bytes(blob)).decode()
    body = [text[i:i + 70] for i in range(0, len(text), 70)]
    return "\n".join([lines[0]] + body + [lines[-1]]) + "\n"


def make_keys(keys):
    """Key material the corpus refers to as @DIR@/keys/..., with the modes it needs."""
    os.makedirs(keys)
    key = os.path.join(keys, "id_ed25519")
    if shutil.which("ssh-keygen"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "moletun-test",
                        "-f", key], check=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-C",
                        "moletun-test", "-f", os.path.join(keys, "id_encrypted")],
                       check=True)
        os.remove(os.path.join(keys, "id_encrypted.pub"))
    else:  # only the first lines of a key are looked at
        write(key, FAKE_KEY, 0o600)
        write(key + ".pub", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG moletun-test\n", 0o644)
        write(os.path.join(keys, "id_encrypted"),
              FAKE_KEY.replace("AAAABG5vbmUAAAAEbm9uZQ", "AAAACmFlczI1Ni1jdHIAAAAGYmNyeXB0"),
              0o600)
    os.chmod(key, 0o600)
    with open(key, encoding="utf-8") as f:
        write(os.path.join(keys, "id_open"), f.read(), 0o644)
    with open(key + ".pub", encoding="utf-8") as f:
        public = f.read().split()
    write(os.path.join(keys, "known_hosts"),
          "db.example.com,db2.example.com %s %s\n" % (public[0], public[1]), 0o644)
    write(os.path.join(keys, "passphrase"), "secret\n", 0o600)
    write(os.path.join(keys, "wrong_passphrase"), "not-the-secret\n", 0o600)
    with open(os.path.join(keys, "id_encrypted"), encoding="utf-8") as f:
        write(os.path.join(keys, "id_rounds"), with_rounds(f.read(), 0xffffffff), 0o600)
    os.symlink("id_ed25519", os.path.join(keys, "id_link"))
    os.symlink("passphrase", os.path.join(keys, "passphrase_link"))
    os.symlink("known_hosts", os.path.join(keys, "known_hosts_link"))
    with open(os.path.join(keys, "known_hosts"), encoding="utf-8") as f:
        write(os.path.join(keys, "known_hosts_writable"), f.read(), 0o664)
    write(os.path.join(keys, "passphrase_open"), "secret\n", 0o644)
    write(os.path.join(keys, "hook"), "#!/bin/sh\nexit 0\n", 0o755)
    write(os.path.join(keys, "not_executable"), "#!/bin/sh\nexit 0\n", 0o644)


def copy_tree(src, dst, directory):
    """Copies src to dst, replacing @DIR@ in every file with `directory`."""
    for base, dirs, files in os.walk(src):
        target = os.path.join(dst, os.path.relpath(base, src))
        os.makedirs(target, exist_ok=True)
        for name in files:
            with open(os.path.join(base, name), encoding="utf-8") as f:
                text = f.read()
            write(os.path.join(target, name), text.replace("@DIR@", directory), 0o644)


def check(path, cwd=None):
    return subprocess.run([MOLETUN, "check", "-c", path], capture_output=True, text=True,
                          cwd=cwd, timeout=30)


class CheckTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="moletun-check-")
        make_keys(os.path.join(cls.dir, "keys"))
        copy_tree(CONFIGS, cls.dir, cls.dir)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir)

    def templated(self, text):
        return text.replace(self.dir, "@DIR@")

    def compare(self, fixture, suffix, actual):
        """Compares with the checked-in fixture NAME.suffix (or rewrites it)."""
        expected_path = os.path.join(CONFIGS, os.path.splitext(fixture)[0] + suffix)
        actual = self.templated(actual)
        if UPDATE:
            with open(expected_path, "w", encoding="utf-8") as f:
                f.write(actual)
            return
        with open(expected_path, encoding="utf-8") as f:
            expected = f.read()
        self.assertEqual(actual, expected, "%s differs from %s" % (fixture, expected_path))

    def corpus(self, kind):
        names = sorted(n for n in os.listdir(os.path.join(CONFIGS, kind))
                       if n.endswith(".conf"))
        return [os.path.join(kind, n) for n in names]

    def test_good_configs(self):
        good = self.corpus("good")
        self.assertGreaterEqual(len(good), 5)
        for fixture in good:
            with self.subTest(fixture=fixture):
                r = check(os.path.join(self.dir, fixture))
                self.assertEqual(r.stderr, "", fixture)
                self.assertEqual(r.returncode, 0, fixture)
                self.compare(fixture, ".out", r.stdout)

    def test_bad_configs(self):
        bad = self.corpus("bad")
        self.assertGreaterEqual(len(bad), 15)
        for fixture in bad:
            with self.subTest(fixture=fixture):
                r = check(os.path.join(self.dir, fixture))
                self.assertEqual(r.returncode, 1, fixture + ": " + r.stderr)
                self.assertEqual(r.stdout, "", fixture)
                self.assertNotEqual(r.stderr, "", fixture)
                self.compare(fixture, ".expected", r.stderr)

    def test_every_error_has_file_and_line(self):
        pattern = re.compile(r"^@DIR@/[^:]+:[0-9]+: [a-z\[].*[^.]$")
        for fixture in self.corpus("bad"):
            path = os.path.join(CONFIGS, os.path.splitext(fixture)[0] + ".expected")
            with open(path, encoding="utf-8") as f:
                for line in f.read().splitlines():
                    with self.subTest(fixture=fixture, line=line):
                        self.assertRegex(line, pattern)

    def test_secrets_not_echoed(self):
        r = check(os.path.join(self.dir, "bad", "23-alert-values.conf"))
        self.assertNotIn("secret-token", r.stderr)
        r = check(os.path.join(self.dir, "good", "full.conf"))
        self.assertNotIn("0123456789", r.stdout)
        self.assertNotIn("XXXX", r.stdout)

    @unittest.skipUnless(os.geteuid() == 0, "needs root to give a file to another user")
    def test_key_files_of_another_user(self):
        """A key, passphrase or known_hosts file owned by neither root nor the daemon's
        user is refused, whatever its mode: that user could swap it for their own."""
        keys = os.path.join(self.dir, "keys")
        other = os.path.join(self.dir, "other")
        os.makedirs(other)
        for name in ("id_ed25519", "passphrase", "known_hosts"):
            shutil.copy(os.path.join(keys, name), os.path.join(other, name))
            os.chown(os.path.join(other, name), 65534, 65534)
        os.chmod(os.path.join(other, "id_ed25519"), 0o600)
        path = os.path.join(self.dir, "other.conf")
        write(path, "[tunnel:t]\nhost = db.example.com\nuser = tunnel\n"
              "identity_file = %s/id_ed25519\nidentity_passphrase_file = %s/passphrase\n"
              "known_hosts_file = %s/known_hosts\nlocal_forward = 127.0.0.1:5433 x:1\n" % (
                  other, other, other), 0o644)
        r = check(path)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(self.templated(r.stderr), "".join(
            "@DIR@/other.conf:%d: %s @DIR@/other/%s: is owned by uid 65534 (must be root, "
            "the user moletun runs as here: chown root: @DIR@/other/%s)\n" % (
                line, what, name, name) for line, what, name in (
                (4, "identity file", "id_ed25519"),
                (5, "identity passphrase file", "passphrase"),
                (6, "known_hosts file", "known_hosts"))))

    @unittest.skipUnless(shutil.which("ssh-keygen"), "needs ssh-keygen to make RSA keys")
    def test_rsa_user_key_is_refused_with_the_fix(self):
        """An RSA key loads but cannot log in to OpenSSH >= 8.8 through libssh2 1.10
        (SHA-1 signatures only): check fails at its line, saying why and what to run."""
        for fmt, name in (([], "id_rsa"), (["-m", "PEM"], "id_rsa_pem")):
            key = os.path.join(self.dir, name)
            subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", ""] + fmt +
                           ["-f", key], check=True)
            path = os.path.join(self.dir, name + ".conf")
            write(path, "[tunnel:t]\nhost = db.example.com\nuser = tunnel\n"
                  "identity_file = %s\nknown_hosts_file = %s/keys/known_hosts\n"
                  "local_forward = 127.0.0.1:5433 x:1\n" % (key, self.dir), 0o644)
            r = check(path)
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            self.assertEqual(self.templated(r.stderr), (
                "@DIR@/%s.conf:4: identity file @DIR@/%s is an RSA key: libssh2 1.10 signs "
                "RSA keys only with SHA-1 (ssh-rsa), which OpenSSH >= 8.8 refuses; make an "
                "ed25519 key: ssh-keygen -t ed25519 -N '' -f @DIR@/%s (and authorize its "
                ".pub on the server)\n") % (name, name, name))

    def test_relative_path_from_working_directory(self):
        r = check("minimal.conf", cwd=os.path.join(self.dir, "good"))
        self.assertEqual(r.returncode, 0, r.stderr)
        r = check("13-no-forwards.conf", cwd=os.path.join(self.dir, "bad"))
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr, "13-no-forwards.conf:1: no forwards in [tunnel:primary] "
                         "(add local_forward or remote_forward)\n")

    def test_missing_file(self):
        r = check(os.path.join(self.dir, "nope.conf"))
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stdout, "")
        self.assertEqual(self.templated(r.stderr),
                         "@DIR@/nope.conf: No such file or directory\n")

    def test_documented_example(self):
        """conf/moletun.conf, with /etc/moletun/ pointed at generated files."""
        etc = os.path.join(self.dir, "etc", "moletun")
        os.makedirs(os.path.join(etc, "conf.d"))
        keys = os.path.join(self.dir, "keys")
        shutil.copy(os.path.join(keys, "id_ed25519"), os.path.join(etc, "id_ed25519"))
        shutil.copy(os.path.join(keys, "passphrase"), os.path.join(etc, "id_ed25519.pass"))
        shutil.copy(os.path.join(keys, "known_hosts"), os.path.join(etc, "known_hosts"))
        for name in ("id_ed25519", "id_ed25519.pass"):
            os.chmod(os.path.join(etc, name), 0o600)
        with open(os.path.join(ROOT, "conf", "moletun.conf"), encoding="utf-8") as f:
            text = f.read()
        self.assertIn("/etc/moletun/", text)
        path = os.path.join(self.dir, "example.conf")
        write(path, text.replace("/etc/moletun/", etc + "/"), 0o644)
        r = check(path)
        self.assertEqual(r.stderr, "")
        self.assertEqual(r.returncode, 0)
        self.assertEqual(r.stdout,
                         "primary  tunnel@db.example.com:22  L 127.0.0.1:5433 -> pg_main:5432"
                         "  R 127.0.0.1:9000 -> 127.0.0.1:9000  probe=postgres\n"
                         "alert:ops  json https://hooks.example.com/...\n")

    def test_packaged_config(self):
        """debian/moletun.conf, the Debian package's conffile: accepted as shipped, no
        tunnels, and its conf.d include (pointed at an empty directory) is live."""
        with open(os.path.join(ROOT, "debian", "moletun.conf"), encoding="utf-8") as f:
            text = f.read()
        self.assertIn("files = /etc/moletun/conf.d/*.conf\n", text)
        confd = os.path.join(self.dir, "packaged", "conf.d")
        os.makedirs(confd)
        path = os.path.join(self.dir, "packaged", "moletun.conf")
        write(path, text.replace("/etc/moletun/conf.d/", confd + "/"), 0o644)
        r = check(path)
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "no tunnels configured\n", ""))
        # a tunnel dropped into conf.d is read
        write(os.path.join(confd, "bad.conf"), "[tunnel:t]\nhost = h\n", 0o644)
        r = check(path)
        self.assertEqual(r.returncode, 1)
        self.assertIn("bad.conf", r.stderr)

    def test_example_documents_every_key(self):
        keys = set(re.findall(r"^\\fB([a-z_]+)\\fR = ", self.help_config(), re.M))
        self.assertGreater(len(keys), 30)
        with open(os.path.join(ROOT, "conf", "moletun.conf"), encoding="utf-8") as f:
            documented = set(re.findall(r"^[;#]?\s*([a-z_]+)\s*=", f.read(), re.M))
        self.assertEqual(keys - documented, set(), "keys missing from conf/moletun.conf")
        self.assertEqual(documented - keys, set(), "conf/moletun.conf names unknown keys")

    def help_config(self, *args):
        r = subprocess.run([MOLETUN, "help", "config", "--man"] + list(args),
                           capture_output=True, text=True, check=True)
        return r.stdout

    def test_help_config_is_text_with_every_key(self):
        r = subprocess.run([MOLETUN, "help", "config"], capture_output=True, text=True,
                           check=True)
        self.assertNotRegex(r.stdout, r"(?m)^\.[A-Z]{2}|\\f[BIRP]", "roff in help config")
        keys = re.findall(r"^\\fB([a-z_]+)\\fR = ", self.help_config(), re.M)
        text_keys = re.findall(r"^  ([a-z_]+) = ", r.stdout, re.M)
        self.assertEqual(text_keys, keys)
        self.assertEqual([l for l in r.stdout.splitlines() if len(l) > 90], [])

    def test_help_ctl_lists_what_ctl_accepts(self):
        """Every command in `help ctl` is one ctl parses, and every one it parses is there:
        a word ctl does not know is a usage error (2), a known one gets as far as the
        socket (1: nothing listens)."""
        r = subprocess.run([MOLETUN, "help", "ctl"], capture_output=True, text=True, check=True)
        listed = re.findall(r"^  ([a-z-]+)", r.stdout, re.M)
        self.assertIn("alert-test", listed)
        self.assertIn("Exit status", r.stdout)
        self.assertIn(" 4 ", r.stdout)
        sock = os.path.join(self.dir, "nothing.sock")
        for cmd in listed:
            args = {"reconnect": ["--all"]}.get(cmd, [])
            c = subprocess.run([MOLETUN, "ctl", "-s", sock, cmd] + args, capture_output=True,
                               text=True)
            self.assertEqual(c.returncode, 1, "%s: %s" % (cmd, c.stderr))
            self.assertIn("cannot connect", c.stderr)
        c = subprocess.run([MOLETUN, "ctl", "-s", sock, "frobnicate"], capture_output=True,
                           text=True)
        self.assertEqual(c.returncode, 2)
        self.assertEqual(re.findall(r"^  ([a-z-]+)", c.stderr, re.M), listed)

    def test_help_names_every_subcommand_once(self):
        r = subprocess.run([MOLETUN, "help"], capture_output=True, text=True, check=True)
        self.assertEqual(re.findall(r"moletun ([a-z-]+)", r.stdout),
                         ["run", "check", "ctl", "authorize", "audit", "help", "--version"])
        # one command per line, each with what it does
        for line in r.stdout.splitlines():
            self.assertEqual(line.count("moletun "), 1, line)
            self.assertRegex(line, r"\S  +[a-z]", line)
        for sub in ("run", "check", "ctl", "authorize", "audit", "config"):
            h = subprocess.run([MOLETUN, "help", sub], capture_output=True, text=True)
            self.assertEqual(h.returncode, 0, sub)

    def test_man_pages(self):
        sys.dont_write_bytecode = True
        sys.path.insert(0, os.path.join(ROOT, "doc"))
        import mkconfman  # noqa: E402

        page = mkconfman.render(MOLETUN, os.path.join(ROOT, "doc", "moletun.conf.5.in"),
                                "test")
        self.assertIn(self.help_config(), page)
        self.assertNotIn("@KEYS@", page)
        if not shutil.which("groff"):
            self.skipTest("groff not installed")
        pages = {"moletun.conf.5": page}
        with open(os.path.join(ROOT, "doc", "moletun.8"), encoding="utf-8") as f:
            pages["moletun.8"] = f.read()
        for name, text in pages.items():
            with self.subTest(page=name):
                r = subprocess.run(["groff", "-man", "-ww", "-z"], input=text,
                                   capture_output=True, text=True)
                self.assertEqual(r.stderr, "")
                self.assertEqual(r.returncode, 0)


if __name__ == "__main__":
    if not os.access(MOLETUN, os.X_OK):
        sys.exit("MOLETUN_BIN (%s) is not an executable" % MOLETUN)
    unittest.main(verbosity=2)
