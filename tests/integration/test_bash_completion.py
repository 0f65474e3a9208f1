#!/usr/bin/env python3
"""conf/bash-completion/moletun in a real bash.

The script is sourced in `bash --norc` (no bash-completion package) and its function is
called with COMP_WORDS / COMP_CWORD as bash sets them (COMP_WORDBREAKS splits "--opt=x"
into "--opt" "=" "x"): subcommands, options, files, users, ctl commands; tunnel and alert
names from a running daemon's control socket (by -s, --socket=, $MOLETUN_SOCKET); nothing
and no error output when no daemon answers or it hangs (SIGSTOP: bounded by the script's
timeout); the same when sourced inside a function, and when bash-completion's own loader
finds and loads it. Then in an interactive bash on a pty, TAB really completes (readline,
COMP_WORDBREAKS).
"""

import fcntl
import os
import pty
import pwd
import select
import shutil
import signal
import struct
import subprocess
import termios
import time

import harness
from harness import tunnel_section

HERE = os.path.dirname(os.path.abspath(__file__))
BASH_COMPLETION = "/usr/share/bash-completion/bash_completion"
SCRIPT = os.path.normpath(os.path.join(HERE, "..", "..", "conf", "bash-completion", "moletun"))

# Calls the completion function for the words in argv[1:] (the last one is the word at the
# cursor) and prints COMPREPLY, one per line. $LOADER is "function": source from inside a
# function, as bash-completion's loader does; "bash-completion": that loader itself, finding
# the script in $BASH_COMPLETION_USER_DIR/completions.
DRIVER = r'''
load() { source "$SCRIPT"; }
case $LOADER in
function) load ;;
bash-completion)
	source /usr/share/bash-completion/bash_completion
	__load_completion moletun || { echo "bash-completion did not load it"; exit 3; }
	;;
*) source "$SCRIPT" ;;
esac
[[ $(complete -p moletun) == "complete -F _moletun moletun" ]] || { echo "not registered"; exit 3; }
COMP_WORDS=("$@")
COMP_CWORD=$(($# - 1))
COMP_LINE="$*"
COMP_POINT=${#COMP_LINE}
_moletun "$1" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
printf '%s\n' "${COMPREPLY[@]}"
'''


def bash_words(line):
    """COMP_WORDS as bash splits a command line without quotes: at blanks, with each run of
    the COMP_WORDBREAKS characters that matter here (= and :) a word of its own."""
    words = []
    for w in line.split(" "):
        part = ""
        for c in w:
            if c in "=:":
                if part:
                    words.append(part)
                words.append(c)
                part = ""
            else:
                part += c
        if part or not w:
            words.append(part)
    return words


class BashCompletionTest(harness.TunnelTest):
    def complete(self, line, env=None, loader="source", cwd=None, timeout=10):
        """COMPREPLY (a set) for `line` with the cursor at its end (a trailing space: a new,
        empty word). The command word is moletun's binary."""
        words = bash_words(line)
        self.assertEqual(words[0], "moletun", line)
        words[0] = os.path.abspath(harness.moletun_bin())
        e = {k: v for k, v in os.environ.items() if k != "MOLETUN_SOCKET"}
        e.update({"SCRIPT": SCRIPT, "LOADER": loader}, **(env or {}))
        r = subprocess.run(["bash", "--norc", "--noprofile", "-c", DRIVER, "driver"] + words,
                           capture_output=True, text=True, env=e, cwd=cwd or self.tmp,
                           timeout=timeout)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stderr, "", line)
        return set(r.stdout.splitlines()) - {""}

    def daemon(self):
        echo = self.server()
        sc = self.sidecar(permit_open=[echo.addr])
        kh = self.known_hosts(sc)
        sections = [tunnel_section(name, sc, known_hosts_file=kh, local_forward=[
            "127.0.0.1:%d %s" % (harness.free_port(), echo.addr)])
            for name in ("web.main", "pg-replica", "w2")]
        sections.append("[alert:ops]\nexec = /bin/true\n")
        sections.append("[alert:pager]\nexec = /bin/true\n")
        m = self.moletun(sections)
        for name in ("web.main", "pg-replica", "w2"):
            self.assertUp(m, name)
        return m

    def test_subcommands_and_options(self):
        self.assertEqual(self.complete("moletun "), {"run", "check", "ctl", "authorize",
                                                     "audit", "help"})
        self.assertEqual(self.complete("moletun c"), {"check", "ctl"})
        self.assertEqual(self.complete("moletun a"), {"authorize", "audit"})
        self.assertEqual(self.complete("moletun audit --"), {"--config", "--json", "--socket",
                                                             "--help"})
        self.assertEqual(self.complete("moletun -"), {"--version", "--help"})
        self.assertEqual(self.complete("moletun run -"), {"-c", "--config"})
        self.assertEqual(self.complete("moletun run "), {"-c", "--config"})
        self.assertEqual(self.complete("moletun check --"), {"--config", "--user"})
        self.assertEqual(self.complete("moletun check -c x -"), {"-c", "--config", "-u",
                                                                  "--user"})
        self.assertEqual(self.complete("moletun help "), {"run", "check", "ctl", "authorize",
                                                          "audit", "config"})
        self.assertEqual(self.complete("moletun help run "), set())
        self.assertEqual(self.complete("moletun bogus "), set())
        self.assertEqual(self.complete("moletun ctl "), {"status", "reconnect", "reload",
                                                         "metrics", "alert-test", "help"})
        self.assertEqual(self.complete("moletun ctl re"), {"reconnect", "reload"})
        self.assertEqual(self.complete("moletun ctl -"), {"-s", "--socket", "--help"})
        self.assertEqual(self.complete("moletun ctl -s /x "), {
            "status", "reconnect", "reload", "metrics", "alert-test", "help"})

    def test_option_arguments(self):
        conf = os.path.join(self.tmp, "conf")
        os.mkdir(conf)
        for name in ("moletun.conf", "moletun-test.conf", "other.conf"):
            open(os.path.join(conf, name), "w").close()
        os.mkdir(os.path.join(conf, "moletun.d"))
        mo = {os.path.join(conf, n) for n in ("moletun.conf", "moletun-test.conf", "moletun.d")}
        self.assertEqual(self.complete("moletun run -c %s/mo" % conf), mo)
        self.assertEqual(self.complete("moletun check --config %s/mo" % conf), mo)
        # --config=FILE: bash splits at "=", the reply replaces only what follows it
        self.assertEqual(self.complete("moletun run --config=%s/mo" % conf), mo)
        self.assertEqual(self.complete("moletun run --config=", cwd=conf),
                         {"moletun.conf", "moletun-test.conf", "other.conf", "moletun.d"})
        self.assertEqual(self.complete("moletun ctl -s %s/mo" % conf), mo)
        self.assertEqual(self.complete("moletun ctl --socket=%s/mo" % conf), mo)
        # users for check -u
        me = pwd.getpwuid(os.getuid()).pw_name
        users = self.complete("moletun check -u " + me[:2])
        self.assertIn(me, users)
        self.assertTrue(all(u.startswith(me[:2]) for u in users), users)
        self.assertIn("root", self.complete("moletun check --user=ro"))
        # run has no -u: its options, not users
        self.assertEqual(self.complete("moletun run -u "), {"-c", "--config"})
        # a word after the option's argument is options again
        self.assertEqual(self.complete("moletun run -c %s/moletun.conf -" % conf),
                         {"-c", "--config"})

    def test_names_from_the_daemon(self):
        m = self.daemon()
        sock = m.control_socket
        tunnels = {"web.main", "pg-replica", "w2"}
        self.assertEqual(self.complete("moletun ctl -s %s status " % sock), tunnels | {"--json"})
        self.assertEqual(self.complete("moletun ctl -s %s status --json " % sock), tunnels)
        self.assertEqual(self.complete("moletun ctl -s %s status --json w" % sock),
                         {"web.main", "w2"})
        self.assertEqual(self.complete("moletun ctl -s %s status w2 " % sock), {"--json"})
        self.assertEqual(self.complete("moletun ctl -s %s status -" % sock), {"--json"})
        self.assertEqual(self.complete("moletun ctl -s %s reconnect " % sock),
                         tunnels | {"--all"})
        self.assertEqual(self.complete("moletun ctl -s %s reconnect p" % sock), {"pg-replica"})
        self.assertEqual(self.complete("moletun ctl -s %s reconnect w2 " % sock), set())
        self.assertEqual(self.complete("moletun ctl -s %s alert-test " % sock), {"ops", "pager"})
        self.assertEqual(self.complete("moletun ctl -s %s alert-test ops " % sock), set())
        self.assertEqual(self.complete("moletun ctl -s %s reload " % sock), set())
        self.assertEqual(self.complete("moletun ctl -s %s metrics " % sock), set())
        # the socket given as --socket=, or by $MOLETUN_SOCKET as ctl itself takes it
        self.assertEqual(self.complete("moletun ctl --socket=%s reconnect " % sock),
                         tunnels | {"--all"})
        self.assertEqual(self.complete("moletun ctl status --json ",
                                       env={"MOLETUN_SOCKET": sock}), tunnels)
        # as bash-completion's loader sources it: inside a function
        self.assertEqual(self.complete("moletun ctl -s %s status --json " % sock,
                                       loader="function"), tunnels)
        self.assertEqual(self.complete("moletun check -", loader="function"),
                         {"-c", "--config", "-u", "--user"})
        if os.path.exists(BASH_COMPLETION):
            user_dir = os.path.join(self.tmp, "bash-completion")
            os.makedirs(os.path.join(user_dir, "completions"))
            shutil.copy(SCRIPT, os.path.join(user_dir, "completions", "moletun"))
            env = {"BASH_COMPLETION_USER_DIR": user_dir}
            self.assertEqual(self.complete("moletun ctl -s %s status --json " % sock,
                                           loader="bash-completion", env=env), tunnels)
            self.assertEqual(self.complete("moletun check -", loader="bash-completion",
                                           env=env), {"-c", "--config", "-u", "--user"})
        else:
            print("bash-completion not installed: its loader not tried (tests/deps.sh "
                  "installs it)")

        # nothing answers: no names, no error output, at once
        t0 = time.monotonic()
        self.assertEqual(self.complete("moletun ctl -s %s/nothing.sock status " % self.tmp),
                         {"--json"})
        self.assertEqual(self.complete("moletun ctl status ", env={
            "MOLETUN_SOCKET": os.path.join(self.tmp, "none")}), {"--json"})
        self.assertLess(time.monotonic() - t0, 5)
        # a hung daemon: the script gives up after its 2 s, ctl's own timeout is 5 s
        os.kill(m.proc.pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            got = self.complete("moletun ctl -s %s reconnect " % sock)
            took = time.monotonic() - t0
        finally:
            os.kill(m.proc.pid, signal.SIGCONT)
        print("completion against a stopped daemon took %.2fs" % took)
        self.assertEqual(got, {"--all"})
        self.assertLess(took, 4.5)
        self.assertGreaterEqual(took, 1.9)
        self.assertEqual(self.complete("moletun ctl -s %s reconnect " % sock),
                         tunnels | {"--all"})

    def test_interactive_tab(self):
        """Readline itself: TAB in an interactive bash completes through the function."""
        m = self.daemon()
        conf = os.path.join(self.tmp, "conf")
        os.mkdir(conf)
        open(os.path.join(conf, "moletun.conf"), "w").close()
        bin_ = os.path.abspath(harness.moletun_bin())
        pid, fd = pty.fork()
        if pid == 0:
            # wide enough that readline does not scroll the long lines
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 1000, 0, 0))
            os.execvpe("bash", ["bash", "--norc", "--noprofile", "-i"], dict(
                os.environ, PS1="$ ", TERM="dumb", INPUTRC="/dev/null"))
        self.addCleanup(lambda: (os.kill(pid, signal.SIGKILL), os.waitpid(pid, 0)))
        out = [b""]

        def expect(text, timeout=10):
            deadline = time.monotonic() + timeout
            while text.encode() not in out[0]:
                left = deadline - time.monotonic()
                self.assertGreater(left, 0, "no %r in %r" % (text, out[0][-500:]))
                if select.select([fd], [], [], left)[0]:
                    out[0] += os.read(fd, 4096)

        def send(text):
            out[0] = b""
            os.write(fd, text.encode())

        send("source %s\n" % SCRIPT)
        expect("$ ")
        # one match: readline puts it in the line (what follows "=" only)
        send("%s ctl -s %s reconnect pg\t" % (bin_, m.control_socket))
        expect("reconnect pg-replica ")
        send("\x15")  # kill the line
        send("%s run --config=%s/mol\t" % (bin_, conf))
        expect("--config=%s/moletun.conf" % conf)
        send("\x15")
        send("%s ctl -s %s rel\t" % (bin_, m.control_socket))
        expect("ctl -s %s reload " % m.control_socket)
        send("\x15exit\n")


if __name__ == "__main__":
    harness.main()
