#!/usr/bin/env python3
"""conf/grafana/moletun.json: every panel's queries against a real Prometheus.

A daemon with four tunnels to a real sshd, each in a state a fleet shows: web.main up and
ok (a probed local forward with max_connections = 1 and a remote forward), slow-link
degraded (through a relay adding 2 x 30 ms, degraded_rtt = 20ms), pg.target with an
unreachable target (probed), gone down (nothing listens on its port); an exec alert
target. Its metrics_textfile is read by a real prometheus-node-exporter (node A); a copy
of that file an hour old is read by a second one (node B: a node whose daemon died). A
real Prometheus scrapes both every second. Then the events the panels show are caused:
five `ctl reconnect`s (flapping), a client held open and a second one rejected
(max_connections), a client of the down tunnel rejected (down), a client of the
unreachable target (open failure), traffic both ways and through the remote forward, an
alert-test.

Then every target expression of every panel, with the template variables substituted as
Grafana does (multi-value regex escaping; All as .*) and $__rate_interval etc. given
values, goes through Prometheus's HTTP API (instant query, and query_range for the panels
that draw over time): each must parse and return series, and each panel's values must be
what a user should see here (e.g. exactly one tunnel down, degraded and with a target
down on node A, one stale metrics file on node B). The template variable queries
(label_values) must list both nodes and the four tunnels.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import harness
from harness import tunnel_section
from test_health import DelayRelay

HERE = os.path.dirname(os.path.abspath(__file__))
DASHBOARD = os.path.join(HERE, "..", "..", "conf", "grafana", "moletun.json")
PROMETHEUS = "/usr/bin/prometheus"
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
TUNNELS = ["web.main", "slow-link", "pg.target", "gone"]
# Grafana's built-in interval variables, as a dashboard at a few minutes' range has them
# with a 1s scrape interval.
BUILTINS = {"__rate_interval": "30s", "__interval": "2s", "__range": "60s"}
# Panels drawn over time: Grafana runs their targets as range queries.
RANGE_PANELS = {"timeseries", "state-timeline"}


def grafana_regex_escape(value):
    """What Grafana's Prometheus data source does to each value of a multi-value or
    include-All variable before it goes into a query: a backslash (itself escaped for the
    PromQL string) before each regex metacharacter."""
    return re.sub(r"([\\^$*+?.()|{}\[\]'])", r"\\\\\1", value)


def multi(values):
    """A multi-value selection as Grafana renders it in a query."""
    esc = [grafana_regex_escape(v) for v in values]
    return esc[0] if len(esc) == 1 else "(" + "|".join(esc) + ")"


def substitute(expr, variables):
    def repl(m):
        name = m.group(1) or m.group(2)
        if name in variables:
            return variables[name]
        if name in BUILTINS:
            return BUILTINS[name]
        raise AssertionError("unknown variable $%s in %r" % (name, expr))
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, expr)


def wait_until(what, predicate, timeout):
    deadline = time.monotonic() + timeout * harness.slowdown()
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(0.1)


def panel_list(dashboard):
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows hold their panels
    return out


class Prometheus:
    def __init__(self, tmp, targets):
        self.port = harness.free_port()
        self.dir = os.path.join(tmp, "prometheus")
        os.mkdir(self.dir)
        config = os.path.join(self.dir, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: node\n    static_configs:\n"
                    "      - targets: [%s]\n" % ", ".join('"%s"' % t for t in targets))
        self.log = open(os.path.join(self.dir, "prometheus.log"), "w")
        self.proc = subprocess.Popen(
            [PROMETHEUS, "--config.file=" + config,
             "--storage.tsdb.path=" + os.path.join(self.dir, "data"),
             "--web.listen-address=127.0.0.1:%d" % self.port, "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
            start_new_session=True)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                harness.kill_tree(self.proc.pid)
                self.proc.wait(5)
        self.log.close()

    def get(self, path, params=None):
        url = "http://127.0.0.1:%d%s" % (self.port, path)
        if params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.loads(r.read().decode())
        except urllib.error.HTTPError as e:  # 400 for a query that does not parse
            return json.loads(e.read().decode())

    def ready(self):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/-/ready" % self.port,
                                        timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def query(self, expr):
        return self.get("/api/v1/query", {"query": expr})

    def query_range(self, expr, seconds=60, step=2):
        now = time.time()
        return self.get("/api/v1/query_range", {"query": expr, "start": "%.3f" % (now - seconds),
                                                "end": "%.3f" % now, "step": str(step)})

    def value(self, expr):
        """The single value of an instant query, or None."""
        r = self.query(expr)
        res = r.get("data", {}).get("result", [])
        return float(res[0]["value"][1]) if len(res) == 1 else None


class NodeExporter:
    def __init__(self, tmp, name, textfile_dir, port=None):
        self.port = port or harness.free_port()
        self.log = open(os.path.join(tmp, "node_exporter_%s.log" % name), "w")
        self.proc = subprocess.Popen(
            [NODE_EXPORTER, "--collector.disable-defaults", "--collector.textfile",
             "--collector.textfile.directory=" + textfile_dir,
             "--web.listen-address=127.0.0.1:%d" % self.port],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
            start_new_session=True)
        self.instance = "127.0.0.1:%d" % self.port

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.log.close()


def series_key(series, labels, seen):
    key = tuple(series["metric"].get(l, "") for l in labels)
    key = key if len(key) > 1 else key[0]
    assert key not in seen, "%r does not tell the series apart: %r" % (labels, series)
    return key


def series_by(result, *labels):
    """{(label values...): last value} of a query result (vector or matrix)."""
    out = {}
    for s in result:
        key = series_key(s, labels, out)
        value = s["value"] if "value" in s else s["values"][-1]
        out[key] = float(value[1])
    return out


def series_max(result, *labels):
    """{(label values...): largest value over the range} of a matrix."""
    out = {}
    for s in result:
        out[series_key(s, labels, out)] = max(float(v[1]) for v in s["values"])
    return out


class GrafanaDashboardTest(harness.TunnelTest):
    def setUp(self):
        super().setUp()
        for path in (PROMETHEUS, NODE_EXPORTER):
            if not os.access(path, os.X_OK):
                self.skipTest("%s not installed (tests/deps.sh installs it)" % path)
        with open(DASHBOARD) as f:
            self.dashboard = json.load(f)

    def start_services(self):
        self.dir_a = os.path.join(self.tmp, "node-a")
        self.dir_b = os.path.join(self.tmp, "node-b")
        os.mkdir(self.dir_a)
        os.mkdir(self.dir_b)
        self.node_a = NodeExporter(self.tmp, "a", self.dir_a)
        self.addCleanup(self.node_a.stop)
        # node B is started once its stale file exists; Prometheus scrapes its port anyway
        self.node_b_port = harness.free_port()
        self.prom = Prometheus(self.tmp, [self.node_a.instance,
                                          "127.0.0.1:%d" % self.node_b_port])
        self.addCleanup(self.prom.stop)

        self.echo = self.server()
        dead = socket.socket()  # a port nothing listens on: bound, never listening
        dead.bind(("127.0.0.1", 0))
        self.addCleanup(dead.close)
        self.dead_target = "127.0.0.1:%d" % dead.getsockname()[1]
        self.rport = harness.free_port()
        self.sc = self.sidecar(permit_open=[self.echo.addr, self.dead_target],
                               permit_listen=["127.0.0.1:%d" % self.rport])
        self.relay = self.server(DelayRelay, target_port=self.sc.port)
        self.relay.delay = 0.030
        kh = self.sc.write_known_hosts(os.path.join(self.tmp, "known_hosts"), lines=[
            self.sc.known_hosts_line(), self.sc.known_hosts_line(port=self.relay.port)])
        down_sock = socket.socket()  # the gone tunnel's sshd port: refused
        down_sock.bind(("127.0.0.1", 0))
        self.addCleanup(down_sock.close)

        self.ports = {t: harness.free_port() for t in TUNNELS}
        probed = dict(probe="tcp", probe_interval="1s")
        sections = [
            tunnel_section("web.main", self.sc, known_hosts_file=kh, max_connections="1",
                           local_forward=["127.0.0.1:%d %s" % (self.ports["web.main"],
                                                               self.echo.addr)],
                           remote_forward=["127.0.0.1:%d %s" % (self.rport, self.echo.addr)],
                           **probed),
            tunnel_section("slow-link", self.sc, known_hosts_file=kh,
                           port=str(self.relay.port), degraded_rtt="20ms",
                           connect_timeout="10s",
                           local_forward=["127.0.0.1:%d %s" % (self.ports["slow-link"],
                                                               self.echo.addr)]),
            tunnel_section("pg.target", self.sc, known_hosts_file=kh,
                           local_forward=["127.0.0.1:%d %s" % (self.ports["pg.target"],
                                                               self.dead_target)], **probed),
            tunnel_section("gone", self.sc, known_hosts_file=kh,
                           port=str(down_sock.getsockname()[1]),
                           local_forward=["127.0.0.1:%d %s" % (self.ports["gone"],
                                                               self.echo.addr)]),
            "[alert:ops]\nexec = /bin/true\ndown_after = 1s\n",
        ]
        self.m = self.moletun(sections, extra_global="metrics_textfile = %s\n"
                              "metrics_interval = 200ms" % os.path.join(self.dir_a,
                                                                         "moletun.prom"))
        for t in ("web.main", "slow-link", "pg.target"):
            self.assertUp(self.m, t, timeout=20 * harness.slowdown())
        wait_until("Prometheus ready", self.prom.ready, 30)

    def ctl(self, *args):
        return subprocess.run([harness.moletun_bin(), "ctl", "-s", self.m.control_socket] +
                              list(args), capture_output=True, text=True, timeout=30)

    def prom_has(self, expr):
        r = self.prom.query(expr)
        self.assertEqual(r["status"], "success", r)
        return r["data"]["result"]

    def settle(self):
        """Waits until Prometheus holds each tunnel in its state, with the reconnect counter
        at 0: increase() over 30 minutes counts from there."""
        a = 'instance="%s"' % self.node_a.instance
        for expr in ('moletun_tunnel_reconnects_total{%s,tunnel="web.main"} == 0' % a,
                     'moletun_tunnel_health{%s,tunnel="web.main",health="ok"} == 1' % a,
                     'moletun_tunnel_health{%s,tunnel="slow-link",health="degraded"} == 1' % a,
                     'moletun_tunnel_health{%s,tunnel="pg.target",health="target_down"} == 1'
                     % a,
                     'moletun_forward_target_up{%s,tunnel="pg.target"} == 0' % a,
                     'moletun_forward_target_up{%s,tunnel="web.main"} == 1' % a,
                     'moletun_tunnel_health{%s,tunnel="gone",health="down"} == 1' % a):
            wait_until(expr, lambda: self.prom_has(expr), 30)

    def stale_node(self):
        """Node B: the file of a daemon that stopped rewriting it an hour ago."""
        path = os.path.join(self.dir_b, "moletun.prom")
        shutil.copy(os.path.join(self.dir_a, "moletun.prom"), path)
        old = time.time() - 3600
        os.utime(path, (old, old))
        node_b = NodeExporter(self.tmp, "b", self.dir_b, self.node_b_port)
        self.addCleanup(node_b.stop)
        return node_b

    def cause_events(self):
        # five reconnects: MoletunTunnelFlapping's condition
        for i in range(5):
            mark = self.m.mark()
            r = self.ctl("reconnect", "web.main")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIsNotNone(self.m.wait_transition("web.main", mark, new="up",
                                                        timeout=10 * harness.slowdown()))
        wait_until("web.main's target reachable again",
                   lambda: '"target_state":"reachable"' in self.ctl(
                       "status", "--json", "web.main").stdout, 10)
        port = self.ports["web.main"]
        # a client held open (the forward is full, its channel has a receive window) ...
        held = harness.connect(port)
        self.addCleanup(held.close)
        payload = os.urandom(256 * 1024)
        held.sendall(payload)
        self.assertEqual(harness.recv_exact(held, len(payload)), payload)
        # ... so the next one is rejected (max_connections)
        closed, _, got = harness.closed_promptly(port)
        self.assertTrue(closed)
        self.assertEqual(got, b"")
        # a client of the down tunnel is rejected (down)
        closed, _, _ = harness.closed_promptly(self.ports["gone"])
        self.assertTrue(closed)
        # a client of the unreachable target: the channel open fails
        closed, _, _ = harness.closed_promptly(self.ports["pg.target"])
        self.assertTrue(closed)
        # traffic through the degraded tunnel and the remote forward
        self.assertEqual(harness.echo_once(self.ports["slow-link"], b"x" * 1000), b"x" * 1000)
        self.assertEqual(harness.echo_once(self.rport), b"ping\n")
        r = self.ctl("alert-test")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_every_panel_query(self):
        t0 = time.monotonic()
        self.start_services()
        self.settle()
        node_b = self.stale_node()
        self.cause_events()
        a = 'instance="%s"' % self.node_a.instance
        for expr in ('moletun_tunnel_reconnects_total{%s,tunnel="web.main"} == 5' % a,
                     'moletun_forward_rejected_total{%s,reason="max_connections"} > 0' % a,
                     'moletun_forward_rejected_total{%s,reason="down"} > 0' % a,
                     'moletun_forward_open_failures_total{%s,tunnel="pg.target"} > 0' % a,
                     'moletun_forward_active_connections{%s,tunnel="web.main",type="local"}'
                     ' == 1' % a,
                     'moletun_alerts_sent_total{%s,event="test"} > 0' % a,
                     'moletun_forward_bytes_total{%s,tunnel="web.main",type="remote"} > 0' % a,
                     'node_textfile_mtime_seconds{instance="%s"}' % node_b.instance):
            wait_until(expr, lambda: self.prom_has(expr), 20)
        # a few more scrapes, so every rate has samples on both sides of the events
        time.sleep(3)
        print("services up and events in Prometheus after %.1fs" % (time.monotonic() - t0))

        self.check_layout()
        self.check_variables(node_b)
        contexts = {
            # node A and every tunnel, picked one by one (a multi-value selection)
            "A": {"instance": multi([self.node_a.instance]), "tunnel": multi(TUNNELS)},
            "B": {"instance": multi([node_b.instance]), "tunnel": ".*"},
            "all": {"instance": ".*", "tunnel": ".*"},
            "one": {"instance": multi([self.node_a.instance]), "tunnel": multi(["web.main"])},
        }
        checked = 0
        for p in panel_list(self.dashboard):
            if p["type"] == "row":
                continue
            results = {}
            for name, variables in contexts.items():
                results[name] = {}
                for t in p["targets"]:
                    expr = substitute(t["expr"], dict(variables, datasource="prometheus"))
                    r = self.prom.query(expr)
                    self.assertEqual(r.get("status"), "success",
                                     "%s [%s]: %s\n%s" % (p["title"], name, expr, r))
                    res = {"instant": r["data"]["result"]}
                    if p["type"] in RANGE_PANELS:
                        rr = self.prom.query_range(expr)
                        self.assertEqual(rr.get("status"), "success",
                                         "%s [%s] range: %s\n%s" % (p["title"], name, expr, rr))
                        res["range"] = rr["data"]["result"]
                    if name in ("A", "all"):
                        for kind, got in res.items():
                            self.assertTrue(got, "%s [%s] %s query returns no series: %s" % (
                                p["title"], name, kind, expr))
                    results[name][t["refId"]] = res
                    checked += 1
            expect = getattr(self, "expect_" + re.sub(r"\W+", "_", p["title"]).strip("_")
                             .lower(), None)
            self.assertIsNotNone(expect, "no expected values for panel %r" % p["title"])
            expect(results)
        print("%d panel queries checked in %.1fs in all" % (checked, time.monotonic() - t0))

    def check_layout(self):
        d = self.dashboard
        self.assertGreaterEqual(d["schemaVersion"], 36)
        variables = {v["name"]: v for v in d["templating"]["list"]}
        self.assertEqual(variables["datasource"]["type"], "datasource")
        self.assertEqual(variables["datasource"]["query"], "prometheus")
        ids, cells = set(), set()
        for p in panel_list(d):
            self.assertNotIn(p["id"], ids, "duplicate panel id")
            ids.add(p["id"])
            g = p["gridPos"]
            self.assertLessEqual(g["x"] + g["w"], 24, p["title"])
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    self.assertNotIn((x, y), cells, "%s overlaps another panel" % p["title"])
                    cells.add((x, y))
            if p["type"] == "row":
                continue
            # the data source is the variable, so the dashboard imports anywhere
            self.assertEqual(p["datasource"]["uid"], "${datasource}", p["title"])
            self.assertTrue(p["targets"], p["title"])
            for t in p["targets"]:
                self.assertEqual(t["datasource"]["uid"], "${datasource}", p["title"])

    def check_variables(self, node_b):
        variables = {v["name"]: v for v in self.dashboard["templating"]["list"]}
        chosen = {"instance": multi([self.node_a.instance])}
        expected = {"instance": {self.node_a.instance, node_b.instance},
                    "tunnel": set(TUNNELS)}
        for name in ("instance", "tunnel"):
            v = variables[name]
            query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query)
            self.assertTrue(m, query)
            selector = substitute(m.group(1), chosen)
            r = self.prom.get("/api/v1/label/%s/values" % m.group(2), {"match[]": selector})
            self.assertEqual(r["status"], "success", r)
            self.assertEqual(set(r["data"]), expected[name], query)

    # -- what each panel shows here -----------------------------------------------------
    # results[context][refId] = {"instant": [...], "range": [...]}

    def expect_tunnels_by_health(self, res):
        self.assertEqual(series_by(res["A"]["A"]["instant"], "health"),
                         {"ok": 1, "degraded": 1, "target_down": 1, "down": 1})

    def expect_tunnels_per_node(self, res):
        a = self.node_a.instance
        cols = {ref: series_by(r["instant"], "instance") for ref, r in res["all"].items()}
        self.assertEqual([cols[r][a] for r in "ABCD"], [3, 1, 1, 1])
        self.assertLess(cols["E"][a], 30)
        self.assertGreater(series_by(res["B"]["E"]["instant"], "instance").popitem()[1], 3000)

    def expect_tunnels(self, res):
        r = res["A"]
        self.assertEqual(series_by(r["A"]["instant"], "tunnel"),
                         {"web.main": 1, "slow-link": 1, "pg.target": 1, "gone": 0})
        health = {s["metric"]["tunnel"]: s["metric"]["health"] for s in r["B"]["instant"]}
        self.assertEqual(health, {"web.main": "ok", "slow-link": "degraded",
                                  "pg.target": "target_down", "gone": "down"})
        self.assertEqual(set(series_by(r["C"]["instant"], "tunnel")),
                         {"web.main", "slow-link", "pg.target"})
        self.assertEqual(series_by(r["E"]["instant"], "tunnel")["web.main"], 5)
        self.assertTrue(all(0 <= v < 600 for v in series_by(r["D"]["instant"], "tunnel").values()))

    def expect_tunnel_health_over_time(self, res):
        self.assertEqual(series_by(res["A"]["A"]["range"], "tunnel"),
                         {"web.main": 0, "slow-link": 1, "pg.target": 2, "gone": 3})

    def local(self, tunnel):
        """The listen address of the tunnel's local forward (the forward label)."""
        return "127.0.0.1:%d" % self.ports[tunnel]

    def one_value(self, res, context="A"):
        got = res[context]["A"]["instant"]
        self.assertEqual(len(got), 1, got)
        return float(got[0]["value"][1])

    def expect_tunnels_down(self, res):
        self.assertEqual(self.one_value(res), 1)
        self.assertEqual(self.one_value(res, "one"), 0)  # web.main alone: or vector(0)

    def expect_targets_unreachable(self, res):
        self.assertEqual(self.one_value(res), 1)

    def expect_tunnels_degraded(self, res):
        self.assertEqual(self.one_value(res), 1)

    def expect_tunnels_flapping(self, res):
        self.assertEqual(self.one_value(res), 1)

    def expect_stale_metrics_files(self, res):
        self.assertEqual(self.one_value(res), 0)
        self.assertEqual(self.one_value(res, "B"), 1)

    def expect_nodes_exporting_moletun_prom(self, res):
        self.assertEqual(self.one_value(res), 2)

    def expect_ssh_round_trip_smoothed(self, res):
        rtt = series_by(res["A"]["A"]["range"], "tunnel")
        self.assertEqual(set(rtt), {"web.main", "slow-link", "pg.target"})
        self.assertGreaterEqual(rtt["slow-link"], 0.050)  # 2 x 30 ms in the relay
        self.assertLess(rtt["web.main"], rtt["slow-link"])

    def expect_target_reachability(self, res):
        # slow-link is not probed: its target is known from the client that went through
        self.assertEqual(series_by(res["A"]["A"]["range"], "tunnel", "target"),
                         {("web.main", self.echo.addr): 1, ("slow-link", self.echo.addr): 1,
                          ("pg.target", self.dead_target): 0})

    def expect_probe_failures(self, res):
        got = series_max(res["A"]["A"]["range"], "tunnel")
        self.assertGreater(got["pg.target"], 0)
        self.assertEqual(got["web.main"], 0)

    def expect_channel_open_failures(self, res):
        got = series_max(res["A"]["A"]["range"], "tunnel", "forward")
        self.assertGreater(got[("pg.target", self.local("pg.target"))], 0)
        self.assertEqual(got[("web.main", self.local("web.main"))], 0)

    def expect_reconnects(self, res):
        got = series_max(res["A"]["A"]["range"], "tunnel")
        self.assertGreater(got["web.main"], 0)
        self.assertEqual(got["slow-link"], 0)

    def expect_reconnects_in_the_last_30_minutes(self, res):
        got = series_by(res["A"]["A"]["instant"], "tunnel")
        self.assertGreater(got["web.main"], 4)  # above the panel's threshold line
        self.assertEqual(got["slow-link"], 0)

    def expect_rejected_clients(self, res):
        got = series_max(res["A"]["A"]["range"], "tunnel", "forward", "reason")
        self.assertGreater(got[("web.main", self.local("web.main"), "max_connections")], 0)
        self.assertGreater(got[("gone", self.local("gone"), "down")], 0)
        self.assertEqual(got[("slow-link", self.local("slow-link"), "down")], 0)

    def expect_throughput_per_forward(self, res):
        got = series_max(res["A"]["A"]["range"], "tunnel", "forward", "direction")
        local = self.local("web.main")
        self.assertGreater(got[("web.main", local, "in")], 0)
        self.assertGreater(got[("web.main", local, "out")], 0)
        self.assertGreater(got[("web.main", "127.0.0.1:%d" % self.rport, "in")], 0)

    def expect_new_connections_per_forward(self, res):
        got = series_max(res["A"]["A"]["range"], "tunnel", "forward")
        self.assertGreater(got[("web.main", self.local("web.main"))], 0)
        self.assertGreater(got[("web.main", "127.0.0.1:%d" % self.rport)], 0)
        self.assertEqual(got[("gone", self.local("gone"))], 0)

    def expect_open_connections_per_forward(self, res):
        got = series_by(res["A"]["A"]["range"], "tunnel", "type")
        self.assertEqual(got[("web.main", "local")], 1)
        self.assertEqual(got[("slow-link", "local")], 0)

    def expect_largest_receive_window_per_forward(self, res):
        got = series_by(res["A"]["A"]["range"], "tunnel", "type")
        self.assertGreater(got[("web.main", "local")], 0)  # the held client's channel
        self.assertEqual(got[("slow-link", "local")], 0)

    def expect_receive_windows_per_node(self, res):
        got = series_by(res["all"]["A"]["range"], "instance")
        self.assertGreater(got[self.node_a.instance], 0)

    def expect_metrics_file_age(self, res):
        got = series_by(res["all"]["A"]["range"], "instance")
        self.assertLess(got[self.node_a.instance], 30)
        self.assertGreater(min(got.values()), -1)
        self.assertEqual(len(got), 2)
        self.assertGreater(max(got.values()), 3000)  # node B's file, an hour old

    def expect_alert_notifications(self, res):
        sent = series_max(res["A"]["A"]["range"], "alert", "event")
        self.assertGreater(sent[("ops", "test")], 0)
        failed = series_max(res["A"]["B"]["range"], "alert")
        self.assertEqual(failed, {"ops": 0})

    def expect_descriptor_limit(self, res):
        self.assertGreater(self.one_value(res), 0)


if __name__ == "__main__":
    harness.main()
