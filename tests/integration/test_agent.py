"""Authentication through ssh-agent (use_agent, agent_socket), alone and as the fallback
after an identity file the server does not accept."""

import os
import shutil
import subprocess
import time

import harness
from harness import EchoServer


def without_identity_file(section):
    return "\n".join(l for l in section.splitlines() if not l.startswith("identity_file")) + "\n"


class AgentTest(harness.TunnelTest):
    def setUp(self):
        super().setUp()
        if not shutil.which("ssh-agent") or not shutil.which("ssh-add"):
            self.skipTest("ssh-agent/ssh-add not installed (openssh-client)")
        self.echo = self.server(EchoServer)
        self.lp = harness.free_port()
        self.sc = self.sidecar(permit_open=[self.echo.addr])
        self.sock = os.path.join(self.tmp, "agent.sock")
        self.agent = subprocess.Popen(["ssh-agent", "-D", "-a", self.sock],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(self.agent.wait)
        self.addCleanup(self.agent.kill)
        deadline = time.monotonic() + 5
        while not os.path.exists(self.sock) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertTrue(os.path.exists(self.sock), "ssh-agent did not create its socket")

    def add_key(self, path):
        subprocess.run(["ssh-add", path], env=dict(os.environ, SSH_AUTH_SOCK=self.sock),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def section(self, **keys):
        kh = self.known_hosts(self.sc)
        return harness.tunnel_section("t1", self.sc, local_forward=[
            "127.0.0.1:%d %s" % (self.lp, self.echo.addr)], known_hosts_file=kh,
            use_agent="yes", agent_socket=self.sock, **keys)

    def test_agent_only(self):
        self.add_key(self.sc.user_key)
        m = self.moletun(without_identity_file(self.section()))
        self.assertUp(m)
        self.assertEqual(harness.echo_once(self.lp), b"ping\n")

    def test_agent_after_rejected_identity_file(self):
        self.add_key(self.sc.user_key)
        other = harness.keygen(os.path.join(self.tmp, "id_other"), "ed25519")
        m = self.moletun(self.section(identity_file=other))
        self.assertUp(m)
        self.assertTrue(m.grep("trying ssh-agent"))
        self.assertEqual(harness.echo_once(self.lp), b"ping\n")

    def test_agent_without_accepted_key(self):
        other = harness.keygen(os.path.join(self.tmp, "id_other"), "ed25519")
        self.add_key(other)
        m = self.moletun(without_identity_file(self.section()))
        tr = m.wait_state("t1", "backoff", 10)
        self.assertIsNotNone(tr)
        self.assertIn("authentication failed", tr[4])


if __name__ == "__main__":
    harness.main()
