#!/usr/bin/env python3
"""The README's install steps, verbatim, under a real systemd.

Boots systemd 252 in systemd-nspawn on an overlay of this machine's root (lower `/`, upper
on a tmpfs: dpkg writes the container's /usr and nothing reaches the host), installs the
package there with the README's `apt install` line, then runs the README's first-tunnel
blocks as they are written (the key, the sidecar's host key by ssh-keyscan, the tunnel)
against a real sidecar: an OpenSSH sshd on port 2222 in a network namespace of its own ("the
database host", reached as db.example.com) in front of a real PostgreSQL 15 at pg_main:5432. The container lives in a
second namespace ("the web node") joined to the first by a veth pair. Asserts:
  - the install started the service (no tunnels);
  - `moletun check` as root judges the key as user moletun will open it; the fingerprint
    the README's ssh-keyscan block prints is the sidecar's; the blocks bring the tunnel up: psql through 127.0.0.1:5433 from outside the container reaches
    the primary;
  - a refused configuration makes `systemctl reload` fail with the reason in `systemctl
    status`, and the tunnel carries on; a good one is in `ctl status` when reload returns;
  - postinst grants nothing through a symbolic link planted in node_exporter's directory;
  - `apt-get purge` leaves what the README says: the files the blocks added, the user.

  python3 tests/deb/readme_install.py DEB
Skips (exit 0, with the reason) when not root or systemd-nspawn cannot run here.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(TOP, "tests", "integration"))

import harness  # noqa: E402
import nspawn  # noqa: E402

PG_BIN = "/usr/lib/postgresql/15/bin"
PREFIX = "10.231.%d" % (os.getpid() % 200 + 20)
DB_ADDR, WEB_ADDR = PREFIX + ".1", PREFIX + ".2"
TAG = "mlt%d" % os.getpid()
DB_NS, WEB_NS = TAG + "db", TAG + "web"
SIDECAR_PORT = 2222  # the kit's port, which the README's blocks connect to

passed = 0
failed = 0


def ok(what):
    global passed
    passed += 1
    print("ok: " + what, flush=True)


def fail(what, detail=""):
    global failed
    failed += 1
    print(("FAIL: %s\n%s" % (what, detail)).rstrip(), flush=True)


def check(cond, what, detail=""):
    if cond:
        ok(what)
    else:
        fail(what, detail)
    return cond


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=isinstance(cmd, str), check=kw.pop("check", True),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=kw.pop("timeout", 60), **kw)


def readme_blocks():
    """The fenced blocks that follow a `tests/deb/readme_install.py runs` marker, in order."""
    with open(os.path.join(TOP, "README.md")) as f:
        text = f.read()
    return re.findall(r"<!-- tests/deb/readme_install\.py runs[^>]*-->\n```sh\n(.*?)```",
                      text, re.S)


def unavailable_reason():
    if os.geteuid() != 0:
        return "needs root (network namespaces, overlay mount, systemd-nspawn)"
    why = nspawn.unavailable_reason()
    if why:
        return why
    for tool in ("ip", "psql"):
        if not shutil.which(tool):
            return "%s not found" % tool
    if not os.access(os.path.join(PG_BIN, "postgres"), os.X_OK):
        return "PostgreSQL 15 not installed (%s)" % PG_BIN
    return None


class Setup:
    """The two namespaces, the database host's PostgreSQL and sidecar, the overlay root."""

    def __init__(self, deb):
        self.deb = deb
        self.work = tempfile.mkdtemp(prefix="moletun-readme-")
        os.chmod(self.work, 0o755)
        self.mounts = []
        self.netns = []
        self.pg_dir = None
        self.sidecar = None
        self.container = None

    # -- the network: db (sidecar, PostgreSQL) <-veth-> web (the container) --
    def network(self):
        for ns in (DB_NS, WEB_NS):
            sh(["ip", "netns", "add", ns])
            self.netns.append(ns)
            sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        sh(["ip", "link", "add", TAG + "a", "netns", DB_NS, "type", "veth", "peer", "name",
            TAG + "b", "netns", WEB_NS])
        for ns, dev, addr in ((DB_NS, TAG + "a", DB_ADDR), (WEB_NS, TAG + "b", WEB_ADDR)):
            sh(["ip", "-n", ns, "addr", "add", addr + "/24", "dev", dev])
            sh(["ip", "-n", ns, "link", "set", dev, "up"])

    def in_db(self, cmd):
        """cmd in the database host: its namespace, with its own /etc/hosts (pg_main) and
        /etc/passwd (the tunnel user) bound over the machine's in a private mount ns."""
        script = ('mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/passwd && '
                  'shift 2 && exec "$@"')
        return ["ip", "netns", "exec", DB_NS, "unshare", "-m", "--", "sh", "-c", script, "sh",
                self.db_hosts, self.db_passwd] + cmd

    def database_host(self):
        self.db_hosts = os.path.join(self.work, "db-hosts")
        with open(self.db_hosts, "w") as f:
            f.write("127.0.0.1 localhost\n127.0.0.1 pg_main\n")
        self.db_passwd = os.path.join(self.work, "db-passwd")
        with open("/etc/passwd") as f:
            users = f.read()
        with open(self.db_passwd, "w") as f:
            f.write(users + "tunnel:x:64990:64990:tunnel:/nonexistent:/usr/sbin/nologin\n")
        os.chmod(self.db_hosts, 0o644)
        os.chmod(self.db_passwd, 0o644)
        # PostgreSQL 15, listening on the database host's loopback only.
        self.pg_dir = os.path.join(self.work, "pg")
        os.mkdir(self.pg_dir, 0o700)
        shutil.chown(self.pg_dir, "postgres", "postgres")
        as_pg = ["runuser", "-u", "postgres", "--"]
        sh(as_pg + [PG_BIN + "/initdb", "-D", self.pg_dir + "/data", "-A", "trust",
                    "-U", "postgres"], timeout=120)
        r = sh(["ip", "netns", "exec", DB_NS] + as_pg + [
            PG_BIN + "/pg_ctl", "-D", self.pg_dir + "/data", "-l", self.pg_dir + "/log", "-w",
            "-o", "-c listen_addresses=127.0.0.1 -c port=5432 -c unix_socket_directories=" +
            self.pg_dir, "start"], check=False, timeout=120)
        if r.returncode != 0:
            raise RuntimeError("PostgreSQL did not start: " + r.stdout)
        # The sidecar: sshd on the database host's port 22, user tunnel, PermitOpen pg_main.
        self.sidecar = harness.Sidecar(self.work, permit_open=["pg_main:5432"],
                                       listen=DB_ADDR, port=SIDECAR_PORT, wrapper=[])
        self.sidecar.user = "tunnel"
        self.sidecar.write_config()
        self.sidecar.wrapper = self.in_db([])
        open(self.sidecar.authorized_keys, "w").close()
        # sshd reads authorized_keys as the tunnel user
        os.chmod(self.sidecar.dir, 0o755)
        os.chmod(self.sidecar.authorized_keys, 0o644)
        self.sidecar.start()

    def authorize(self, line):
        with open(self.sidecar.authorized_keys, "w") as f:
            f.write('restrict,port-forwarding,permitopen="pg_main:5432" %s\n' % line.strip())

    # -- the web node: an overlay of / booted by systemd-nspawn --
    def overlay(self):
        tmp = os.path.join(self.work, "tmpfs")
        os.mkdir(tmp)
        sh(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", tmp])
        self.mounts.append(tmp)
        upper, workdir, root = (os.path.join(tmp, d) for d in ("upper", "work", "root"))
        for d in (upper, workdir, root):
            os.mkdir(d)
        sh(["mount", "-t", "overlay", "overlay", "-o",
            "lowerdir=/,upperdir=%s,workdir=%s" % (upper, workdir), root])
        self.mounts.append(root)
        # A real Debian host lets services start; this machine's image forbids it.
        for f in ("usr/sbin/policy-rc.d",):
            if os.path.lexists(os.path.join(root, f)):
                os.unlink(os.path.join(root, f))
        units = os.path.join(root, "etc/systemd/system")
        for u in nspawn.MASKED_UNITS + ("prometheus.service",
                                        "prometheus-node-exporter.service"):
            path = os.path.join(units, u)
            if os.path.lexists(path):
                os.unlink(path)
            os.symlink("/dev/null", path)
        with open(os.path.join(root, "etc/hosts"), "a") as f:
            f.write("%s db.example.com\n" % DB_ADDR)
        # The tree the README's commands run in: the .deb one level up, as dpkg-buildpackage
        # leaves it.
        os.makedirs(os.path.join(root, "root/moletun"), exist_ok=True)
        shutil.copy(self.deb, os.path.join(root, "root"))
        self.root = root

    def boot(self):
        self.container = nspawn.Container(self.work, {}, name=TAG, root=self.root,
                                          netns=WEB_NS).boot(wait=120)

    def run(self, script, timeout=120):
        """A README block in the container, by bash, from the tree's directory."""
        return self.container.run(["bash", "-e", "-c", "cd /root/moletun\n" + script],
                                  check=False, timeout=timeout)

    def cleanup(self):
        if self.container:
            self.container.shutdown()
        if self.sidecar:
            self.sidecar.cleanup()
        if self.pg_dir and os.path.isdir(self.pg_dir + "/data"):
            sh(["ip", "netns", "exec", DB_NS, "runuser", "-u", "postgres", "--",
                PG_BIN + "/pg_ctl", "-D", self.pg_dir + "/data", "-m", "immediate", "stop"],
               check=False)
        for m in reversed(self.mounts):
            sh(["umount", "-l", m], check=False)
        for ns in self.netns:
            sh(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(self.work, ignore_errors=True)


def psql_through_tunnel(query="select 'through the tunnel: ' || current_setting('port')"):
    """psql from outside the container (the web node's namespace) to 127.0.0.1:5433."""
    return sh(["ip", "netns", "exec", WEB_NS, "psql", "-X", "-A", "-t", "-h", "127.0.0.1",
               "-p", "5433", "-U", "postgres", "-d", "postgres", "-c", query],
              check=False, timeout=30, env=dict(os.environ, PGCONNECT_TIMEOUT="10"))


def wait_for(pred, timeout):
    deadline = time.monotonic() + timeout
    while True:
        r = pred()
        if r or time.monotonic() > deadline:
            return r
        time.sleep(0.2)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: readme_install.py DEB")
    why = unavailable_reason()
    if why:
        print("SKIP: readme_install: " + why)
        return 0
    blocks = readme_blocks()
    if len(blocks) != 4:
        print("FAIL: README.md has %d marked blocks, expected 4 (install, key, host key, "
              "tunnel)" % len(blocks))
        return 1
    install = [l for l in blocks[0].splitlines() if "apt install" in l]
    key_block, scan_block, tunnel_block = blocks[1], blocks[2], blocks[3]
    s = Setup(os.path.abspath(sys.argv[1]))
    start = time.monotonic()
    try:
        s.network()
        s.database_host()
        s.overlay()
        s.boot()
        c = s.container
        print("readme_install: container up after %.1fs" % (time.monotonic() - start))

        r = s.run(install[0].split("#")[0], timeout=300)
        check(len(install) == 1 and r.returncode == 0, "README: %s" % install[0].strip(),
              r.stdout[-3000:])
        active = wait_for(lambda: c.run(["systemctl", "is-active", "moletun"],
                                        check=False).stdout.strip() == "active", 30)
        check(active, "the install started the service",
              c.run(["systemctl", "status", "--no-pager", "moletun"], check=False).stdout)
        r = c.run(["moletun", "ctl", "status"], check=False)
        check(r.returncode == 0 and "no tunnels" in r.stdout,
              "moletun ctl status answers, with no tunnels", r.stdout)

        r = s.run(key_block)
        pub = [l for l in r.stdout.splitlines() if l.startswith("ssh-ed25519 ")]
        check(r.returncode == 0 and len(pub) == 1, "README: the key block", r.stdout)
        owner = c.run(["stat", "-c", "%U %a", "/etc/moletun/id_ed25519"]).stdout.strip()
        check(owner == "moletun 600", "the key is moletun's, mode 0600 (%s)" % owner)
        s.authorize(pub[0])

        # Before the key is given to moletun, check names the chown (as the README says).
        c.run(["chown", "root:", "/etc/moletun/id_ed25519"])
        c.write("/etc/moletun/conf.d/primary.conf",
                tunnel_block.split("<<'CONF'\n")[1].split("CONF\n")[0])
        c.run(["sh", "-c", ": > /etc/moletun/known_hosts"])
        r = c.run(["moletun", "check"], check=False)
        check(r.returncode == 1 and "Permission denied (moletun runs as moletun here: chown "
              "moletun: /etc/moletun/id_ed25519)" in r.stdout,
              "moletun check refuses a root-owned key, naming the chown", r.stdout)
        c.run(["chown", "moletun:", "/etc/moletun/id_ed25519"])

        r = s.run(scan_block)
        fingerprint = sh(["ssh-keygen", "-lf", s.sidecar.host_keys["ed25519"] + ".pub"]
                         ).stdout.split()[1]
        check(r.returncode == 0 and fingerprint in r.stdout, "README: the host key block "
              "prints the fingerprint of the sidecar's key file (%s)" % fingerprint, r.stdout)
        r = s.run(tunnel_block)
        check(r.returncode in (0, 3) and "checking as user moletun" in r.stdout and
              re.search(r"(?m)^primary\s", r.stdout), "README: the tunnel block (exit %d: "
              "check as user moletun, reload, status shows primary)" % r.returncode, r.stdout)
        up = wait_for(lambda: c.run(["moletun", "ctl", "status", "primary"],
                                    check=False).returncode == 0, 30)
        check(up, "tunnel primary up and ok",
              c.run(["moletun", "ctl", "status"], check=False).stdout +
              c.run(["journalctl", "--no-pager", "-u", "moletun", "-n", "40"],
                    check=False).stdout)
        r = psql_through_tunnel()
        check(r.returncode == 0 and "through the tunnel: 5432" in r.stdout,
              "psql from outside the container reaches the primary through 127.0.0.1:5433",
              r.stdout)

        # A refused configuration: reload fails, says why, and the tunnel carries on.
        c.write("/etc/moletun/conf.d/broken.conf", "[tunnel:broken]\nno_such_key = 1\n")
        r = c.run(["systemctl", "reload", "moletun"], check=False)
        check(r.returncode != 0, "systemctl reload fails on a refused configuration "
              "(exit %d)" % r.returncode, r.stdout)
        st = c.run(["systemctl", "status", "--no-pager", "-n", "20", "moletun"],
                   check=False).stdout
        check("no_such_key" in st and "reload failed" in st,
              "systemctl status shows the reason", st)
        check(c.run(["systemctl", "is-active", "moletun"], check=False).stdout.strip()
              == "active", "the service stays active")
        r = psql_through_tunnel()
        check(r.returncode == 0, "the tunnel still carries data", r.stdout)
        c.run(["rm", "/etc/moletun/conf.d/broken.conf"])

        # A good one: the new tunnel is in status as soon as reload returns.
        second = tunnel_block.split("<<'CONF'\n")[1].split("CONF\n")[0]
        second = second.replace("[tunnel:primary]", "[tunnel:second]").replace(
            "127.0.0.1:5433", "127.0.0.1:5434")
        c.write("/etc/moletun/conf.d/second.conf", second)
        r = c.run(["systemctl", "reload", "moletun"], check=False)
        st = c.run(["moletun", "ctl", "status"], check=False).stdout
        check(r.returncode == 0 and re.search(r"(?m)^second\s", st),
              "systemctl reload returns with the new tunnel in ctl status", r.stdout + st)
        c.run(["rm", "/etc/moletun/conf.d/second.conf"])
        r = c.run(["systemctl", "reload", "moletun"], check=False)
        check(r.returncode == 0, "reload without it", r.stdout)

        # postinst never grants through a link planted by the prometheus user (who owns
        # /var/lib/prometheus) in node_exporter's place.
        if c.run(["test", "-d", "/var/lib/prometheus/node-exporter"], check=False).returncode == 0:
            c.run(["sh", "-c", "mkdir -p /root/victim && cd /var/lib/prometheus && "
                   "runuser -u prometheus -- mv node-exporter node-exporter.moved && "
                   "runuser -u prometheus -- ln -s /root/victim node-exporter"])
            r = c.run(["env", "DPKG_MAINTSCRIPT_PACKAGE=moletun", "DPKG_MAINTSCRIPT_NAME=postinst",
                       "/var/lib/dpkg/info/moletun.postinst", "configure"], check=False)
            acl = c.run(["getfacl", "-cp", "/root/victim"], check=False).stdout
            check("user:moletun" not in acl, "postinst grants nothing through a symlinked "
                  "textfile directory", r.stdout + acl)
            c.run(["sh", "-c", "cd /var/lib/prometheus && rm node-exporter && "
                   "runuser -u prometheus -- mv node-exporter.moved node-exporter"])

        r = c.run(["apt-get", "purge", "-y", "-q", "moletun"], check=False, timeout=300)
        check(r.returncode == 0, "apt-get purge moletun", r.stdout[-3000:])
        check("left in place" in r.stdout, "the purge says what it left", r.stdout[-2000:])
        left = c.run(["sh", "-c", "cd /etc/moletun && find . | sort"], check=False).stdout
        expect = ".\n./conf.d\n./conf.d/primary.conf\n./id_ed25519\n./id_ed25519.pub\n" \
                 "./known_hosts\n"
        check(left == expect, "the purge leaves the files the README's blocks added",
              left)
        owner = c.run(["stat", "-c", "%U", "/etc/moletun/id_ed25519"], check=False).stdout
        check(owner.strip() == "moletun", "the key still belongs to user moletun, who stays",
              owner)
        gone = c.run(["sh", "-c", "test ! -e /var/lib/moletun && test ! -e /usr/bin/moletun "
                      "&& ! systemctl cat moletun.service"], check=False)
        check(gone.returncode == 0, "the state directory, the binary and the unit are gone",
              gone.stdout)
        r = psql_through_tunnel()
        check(r.returncode != 0, "nothing listens on 127.0.0.1:5433 any more")
    except Exception as e:  # an error in the set-up is a failure, with the console
        fail("readme_install: %s: %s" % (type(e).__name__, e),
             s.container.console()[-3000:] if s.container else "")
    finally:
        s.cleanup()
    print("readme_install: %.0fs, %d passed, %d failed" % (time.monotonic() - start, passed,
                                                          failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
