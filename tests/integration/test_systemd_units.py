#!/usr/bin/env python3
"""Checks the systemd files in systemd/ with systemd's own tools.

- `systemd-analyze verify` accepts moletun.service without a word about it;
- `systemd-analyze security --offline=true` rates it "OK" with exposure <= 2.0;
- the settings the daemon relies on (Type=notify, watchdog, restart policy) are there,
  and the ones that bound it (MemoryHigh= below MemoryMax=, LimitCORE=0);
- systemd-sysusers and systemd-tmpfiles accept moletun.sysusers / moletun.tmpfiles in a
  scratch root.

Exits 77 (skipped, for meson) when systemd-analyze is not installed.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

SOURCE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "systemd")
MAX_EXPOSURE = 2.0

# Lines that must be in the unit exactly: what the daemon and the issue rely on.
REQUIRED = [
    "Type=notify",
    "Restart=always",
    "RestartSec=1",
    "StartLimitIntervalSec=0",
    "WatchdogSec=30s",
    "FileDescriptorStoreMax=512",
    "RuntimeDirectoryPreserve=restart",
    "RuntimeDirectory=moletun",
    "RuntimeDirectoryMode=0750",
    "User=moletun",
    "Group=moletun",
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    # metrics_textfile in Debian's node_exporter directory, optional ("-")
    "ReadWritePaths=-/var/lib/prometheus/node-exporter",
    "CapabilityBoundingSet=",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    "SystemCallFilter=@system-service",
    # the decrypted key lives in the daemon's memory: no core files (SECURITY.md)
    "LimitCORE=0",
]

failures = []
passed = 0


def check(ok, what, detail=""):
    global passed
    if ok:
        passed += 1
        print(f"ok: {what}")
    else:
        failures.append(what)
        print(f"FAIL: {what}\n{detail}".rstrip())


def run(args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, timeout=60, **kwargs)


def built_unit():
    """The configured unit (ExecStart points into the install prefix)."""
    binary = os.environ.get("MOLETUN_BIN")
    if not binary:
        sys.exit("MOLETUN_BIN is not set (run through meson test)")
    path = os.path.join(os.path.dirname(binary), "systemd", "moletun.service")
    if not os.path.exists(path):
        sys.exit(f"{path} not found: is systemd/ built?")
    return binary, path


def test_unit(workdir):
    binary, path = built_unit()
    with open(path) as f:
        text = f.read()
    lines = {line.strip() for line in text.splitlines()}
    for required in REQUIRED:
        check(required in lines, f"unit has {required}")
    check(not re.search(r"@[a-z_]+@", text), "no unsubstituted @var@")
    # a bounded daemon gets a bounded cgroup: MemoryHigh= below MemoryMax=
    high = re.search(r"^MemoryHigh=([0-9]+)M$", text, re.M)
    high_max = re.search(r"^MemoryMax=([0-9]+)M$", text, re.M)
    check(high is not None and high_max is not None and
          0 < int(high.group(1)) < int(high_max.group(1)),
          "unit has MemoryHigh= below MemoryMax= (in M)")
    match = re.search(r"^ExecStart=(\S+)/moletun run$", text, re.M)
    check(match is not None and match.group(1).startswith("/"), "ExecStart is absolute")
    # a refused configuration fails `systemctl reload`, which returns once it is applied
    check(match is not None and
          re.search(r"^ExecReload=%s/moletun ctl reload$" % re.escape(match.group(1)), text, re.M),
          "ExecReload runs moletun ctl reload from ExecStart's directory")

    # verify insists that ExecStart exists: point it at the binary just built.
    unit = os.path.join(workdir, "moletun.service")
    with open(unit, "w") as f:
        f.write(re.sub(r"^(ExecStart|ExecReload)=\S+", f"\\1={binary}", text, flags=re.M))
    r = run(["systemd-analyze", "verify", "--man=no", unit])
    complaints = [l for l in (r.stdout + r.stderr).splitlines() if "moletun" in l]
    check(r.returncode == 0 and not complaints, "systemd-analyze verify",
          r.stdout + r.stderr)

    r = run(["systemd-analyze", "security", "--offline=true", "--no-pager", unit])
    out = r.stdout + r.stderr
    m = re.search(r"Overall exposure level for moletun\.service: ([0-9.]+) (\S+)", out)
    if not m:
        check(False, "systemd-analyze security reports an exposure level", out)
        return
    exposure, verdict = float(m.group(1)), m.group(2)
    print(f"exposure {exposure} {verdict}")
    check(exposure <= MAX_EXPOSURE and verdict == "OK",
          f"exposure {exposure} {verdict} <= {MAX_EXPOSURE} OK",
          "\n".join(l for l in out.splitlines() if "\u2717" in l))


def test_sysusers_tmpfiles(workdir):
    root = os.path.join(workdir, "root")
    os.makedirs(os.path.join(root, "etc"))
    if not shutil.which("systemd-sysusers"):
        print("skip: systemd-sysusers not installed")
        return
    with open(os.path.join(SOURCE_DIR, "moletun.sysusers")) as f:
        r = run(["systemd-sysusers", f"--root={root}", "-"], stdin=f)
    check(r.returncode == 0, "systemd-sysusers accepts moletun.sysusers", r.stderr)
    with open(os.path.join(root, "etc", "passwd")) as f:
        entry = [l for l in f if l.startswith("moletun:")]
    check(len(entry) == 1 and ":/var/lib/moletun:" in entry[0], "sysusers creates moletun",
          "".join(entry))
    if not shutil.which("systemd-tmpfiles") or os.geteuid() != 0:
        print("skip: systemd-tmpfiles check needs the tool and root (it chowns)")
        return
    with open(os.path.join(SOURCE_DIR, "moletun.tmpfiles")) as f:
        r = run(["systemd-tmpfiles", f"--root={root}", "--create", "-"], stdin=f)
    check(r.returncode == 0, "systemd-tmpfiles accepts moletun.tmpfiles", r.stderr)
    st = os.stat(os.path.join(root, "etc", "moletun"))
    check(st.st_mode & 0o7777 == 0o750, "/etc/moletun is 0750", oct(st.st_mode))
    st = os.stat(os.path.join(root, "etc", "moletun", "conf.d"))
    check(st.st_mode & 0o7777 == 0o750, "/etc/moletun/conf.d is 0750", oct(st.st_mode))


def main():
    if not shutil.which("systemd-analyze"):
        print("skip: systemd-analyze not installed (Debian package systemd)")
        return 77
    with tempfile.TemporaryDirectory(prefix="moletun-units-") as workdir:
        test_unit(workdir)
        test_sysusers_tmpfiles(workdir)
    print(f"{passed} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
