#!/usr/bin/env python3
"""The alert rules against the series a running daemon really emits.

conf/prometheus/moletun-rules.yml names labels in its annotations ({{ $labels.X }}) and its
unit tests (moletun-rules.test.yml) feed it made-up input series. Both are checked here
against `moletun ctl metrics` of a daemon with a local forward whose target is probed
(so every family that can appear does) and a remote forward:
- every $labels.X of an alert is a label of every moletun series its expression selects,
  or one Prometheus adds to a node_exporter target's series (instance, job), or one of
  node_exporter's own textfile series (file);
- every moletun input series of the unit tests has exactly the label names that the
  daemon's series of that name have, plus instance and job.
"""

import os
import re
import subprocess
import time

import yaml

import harness
from harness import tunnel_section

RULES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "conf",
                         "prometheus")
# Added by Prometheus to every series scraped from a node_exporter target.
SCRAPE_LABELS = {"instance", "job"}
# node_exporter's own series about the textfile collector's files.
NODE_EXPORTER_LABELS = {"node_textfile_mtime_seconds": {"file"}}
SERIES_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"')


def label_sets(metrics_text):
    """{metric name: [frozenset of label names, ...]} of every sample."""
    out = {}
    for line in metrics_text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SERIES_RE.match(line.rsplit(" ", 1)[0])
        assert m, line
        names = frozenset(LABEL_RE.findall(m.group(2) or ""))
        out.setdefault(m.group(1), set()).add(names)
    return out


def selected_metrics(expr):
    """The metric names an expression selects (identifiers that are not functions,
    keywords or label names)."""
    words = set(re.findall(r'[a-zA-Z_:][a-zA-Z0-9_:]*', re.sub(r'"[^"]*"', '', expr)))
    return {w for w in words if w.startswith(("moletun_", "node_"))}


class RulesLabelsTest(harness.TunnelTest):
    def metrics(self):
        echo = self.server()
        rport = harness.free_port()
        sc = self.sidecar(permit_open=[echo.addr], permit_listen=["127.0.0.1:%d" % rport])
        kh = self.known_hosts(sc)
        port = harness.free_port()
        section = tunnel_section("t1", sc, local_forward=["127.0.0.1:%d %s" % (port, echo.addr)],
                                 remote_forward=["127.0.0.1:%d %s" % (rport, echo.addr)],
                                 known_hosts_file=kh, probe="tcp", probe_interval="1s",
                                 audit_interval="1d")
        m = self.moletun(section)
        self.assertUp(m)
        harness.echo_once(port)
        # generous: under valgrind the first probe and keepalive take their time
        deadline = time.monotonic() + (60 if harness.under_wrapper() else 20)
        while True:
            r = subprocess.run([harness.moletun_bin(), "ctl", "-s", m.control_socket,
                                "metrics"], capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
            # the probe answered, the RTT was measured and the sidecar audited: every
            # family has its series
            if ("moletun_forward_target_up{" in r.stdout and
                    "moletun_tunnel_rtt_seconds{" in r.stdout and
                    "moletun_tunnel_sidecar_hardened{" in r.stdout):
                return label_sets(r.stdout)
            self.assertLess(time.monotonic(), deadline, r.stdout)
            time.sleep(0.2)

    def test_rules_use_only_emitted_labels(self):
        emitted = self.metrics()
        with open(os.path.join(RULES_DIR, "moletun-rules.yml")) as f:
            rules = yaml.safe_load(f)
        checked = 0
        for group in rules["groups"]:
            for rule in group["rules"]:
                text = " ".join(str(v) for v in rule.get("annotations", {}).values())
                used = set(re.findall(r"\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)", text))
                for metric in selected_metrics(rule["expr"]):
                    if metric in NODE_EXPORTER_LABELS:
                        sets = [frozenset(NODE_EXPORTER_LABELS[metric])]
                    else:
                        self.assertIn(metric, emitted, "%s: %s is not a metric moletun "
                                      "emits" % (rule["alert"], metric))
                        sets = emitted[metric]
                    # absent() keeps no label of its argument
                    if "absent(" in rule["expr"]:
                        sets = [frozenset()]
                    for names in sets:
                        missing = used - names - SCRAPE_LABELS
                        self.assertFalse(missing, "%s uses $labels.%s, which %s{%s} does not "
                                         "carry" % (rule["alert"], ", ".join(sorted(missing)),
                                                    metric, ",".join(sorted(names))))
                        checked += 1
        self.assertGreaterEqual(checked, 6)

    def test_unit_test_series_are_real(self):
        emitted = self.metrics()
        with open(os.path.join(RULES_DIR, "moletun-rules.test.yml")) as f:
            tests = yaml.safe_load(f)
        checked = 0
        for t in tests["tests"]:
            for s in t.get("input_series", []):
                m = SERIES_RE.match(s["series"])
                self.assertTrue(m, s["series"])
                name = m.group(1)
                if not name.startswith("moletun_"):
                    continue
                names = frozenset(LABEL_RE.findall(m.group(2) or ""))
                self.assertIn(name, emitted, "input series of a metric moletun does not emit: "
                              + s["series"])
                self.assertIn(names - SCRAPE_LABELS, emitted[name],
                              "input series %s has labels moletun's %s does not have: %s"
                              % (s["series"], name, sorted(emitted[name])))
                checked += 1
        self.assertGreaterEqual(checked, 5)


if __name__ == "__main__":
    harness.main()
