"""A webhook receiver for the alert tests: a real HTTP server that records every request.

    hook = WebhookReceiver(responses=[500, 500])   # then the default, 200
    hook.url("/json")                              # http://127.0.0.1:PORT/json
    hook.wait_requests(1, timeout=5)               # [Request(...)]

`responses` are the status codes of the first requests, in order; `hang=True` makes it
read each request and then never answer (until cleanup). Requests are recorded when they
have been read completely, before any answer. `tls_dir` serves HTTPS with a self-signed
certificate made in a new directory under it (which a verifying client must refuse), or
with one issued by `ca`, a TestCA:

    ca = TestCA(tmp)                               # ca.cert: the PEM file to trust
    hook = WebhookReceiver(tls_dir=tmp, ca=ca)     # https://127.0.0.1:PORT/...
"""

import http.server
import json
import os
import ssl
import subprocess
import tempfile
import threading
import time

import harness


def _openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, capture_output=True)


class TestCA:
    """A certificate authority of its own (P-256, one day): `cert` is its PEM certificate."""

    def __init__(self, parent_dir, name="moletun test CA"):
        self.dir = tempfile.mkdtemp(prefix="ca-", dir=parent_dir)
        self.cert = os.path.join(self.dir, "ca.pem")
        self.key = os.path.join(self.dir, "ca.key")
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-days", "1", "-subj", "/CN=" + name, "-addext",
                 "basicConstraints=critical,CA:TRUE", "-addext",
                 "keyUsage=critical,keyCertSign,cRLSign", "-keyout", self.key, "-out", self.cert)

    def issue(self, out_dir, ip="127.0.0.1"):
        """A server certificate for `ip`: (cert, key) paths in out_dir."""
        cert, key, csr = (os.path.join(out_dir, n) for n in ("cert.pem", "key.pem", "req.csr"))
        ext = os.path.join(out_dir, "ext.cnf")
        with open(ext, "w") as f:
            f.write("subjectAltName=IP:%s\nextendedKeyUsage=serverAuth\n" % ip)
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-subj", "/CN=" + ip, "-keyout", key, "-out", csr)
        _openssl("x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
                 "-CAcreateserial", "-days", "1", "-extfile", ext, "-out", cert)
        return cert, key


class Request:
    def __init__(self, handler, body):
        self.time = time.monotonic()
        self.method = handler.command
        self.path = handler.path
        self.headers = {k.lower(): v for k, v in handler.headers.items()}
        self.body = body

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "Request(%s %s %r)" % (self.method, self.path, self.body[:200])


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        receiver = self.server.receiver
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status = receiver._record(Request(self, body))
        if status is None:
            receiver._release.wait()
            return
        payload = b"ok\n" if status < 300 else b"nope\n"
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, fmt, *args):
        pass


class WebhookReceiver:
    def __init__(self, responses=(), default=200, hang=False, tls_dir=None, ca=None):
        self.responses = list(responses)
        self.default = default
        self.hang = hang
        self.requests = []
        self.cv = threading.Condition()
        self._release = threading.Event()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.receiver = self
        self.port = self.httpd.server_address[1]
        self.scheme = "http"
        if tls_dir:
            out = tempfile.mkdtemp(prefix="tls-", dir=tls_dir)
            if ca:
                cert, key = ca.issue(out)
            else:
                cert, key = os.path.join(out, "cert.pem"), os.path.join(out, "key.pem")
                _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
                         "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        with harness._live_lock:
            harness._live_objects.append(self)

    def url(self, path="/hook", userinfo=""):
        return "%s://%s127.0.0.1:%d%s" % (self.scheme, userinfo + "@" if userinfo else "",
                                          self.port, path)

    def _record(self, req):
        """Returns the status to answer with, or None to hang."""
        with self.cv:
            self.requests.append(req)
            self.cv.notify_all()
            if self.hang:
                return None
            return self.responses.pop(0) if self.responses else self.default

    def received(self, path=None):
        with self.cv:
            return [r for r in self.requests if path is None or r.path == path]

    def wait_requests(self, n, timeout, path=None):
        """Waits until at least n requests (to path, if given) arrived; returns them all.
        The timeout is multiplied by harness.slowdown(), as the harness's waits are."""
        deadline = time.monotonic() + timeout * harness.slowdown()
        with self.cv:
            while True:
                got = [r for r in self.requests if path is None or r.path == path]
                left = deadline - time.monotonic()
                if len(got) >= n or left <= 0:
                    return got
                self.cv.wait(left)

    def cleanup(self):
        self._release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        with harness._live_lock:
            if self in harness._live_objects:
                harness._live_objects.remove(self)
