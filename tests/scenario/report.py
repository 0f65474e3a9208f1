"""Numbers, checks and the timeline picture of a scenario run (see scenario.py).

    report.py RESULTS.json OUTDIR     writes OUTDIR/summary.txt and OUTDIR/timeline.png,
                                      prints the summary; exits 1 when a check failed

Everything here is computed from results.json, so the picture can be redrawn without
running the scenario again.
"""

import bisect
import json
import os
import re
import sys

TRANSITION_RE = re.compile(r"tunnel (\S+): state (\w+) -> (\w+)(?:: (.*))?")

SHORT = {
    "sidecar": "sidecar killed",
    "blackhole": "path dropped",
    "sigkill": "moletun SIGKILL",
    "pgrestart": "primary restart",
    "clock_fwd": "idle, clock +1 h",
    "clock_back": "idle, clock -1 h + path dropped",
    "rotate": "key rotation",
}


def parse_writes(path):
    out = {"acks": [], "unknown": [], "failed": [], "connects": []}
    try:
        f = open(path)
    except OSError:
        return out
    with f:
        for line in f:
            p = line.rstrip("\n").split(" ", 4)
            if not p or not line.endswith("\n"):
                continue
            if p[0] == "A":
                out["acks"].append((int(p[1]), float(p[2]), float(p[3])))
            elif p[0] in ("U", "F"):
                out["unknown" if p[0] == "U" else "failed"].append(
                    (int(p[1]), float(p[2]), float(p[3]), p[4] if len(p) > 4 else ""))
            elif p[0] == "C":
                out["connects"].append(float(p[1]))
    return out


# ---------------------------------------------------------------------------------------
# Derived series
# ---------------------------------------------------------------------------------------


def state_segments(node, t_end):
    """[(from, to, state)] of the node's tunnel from its daemons' logs: a started daemon
    is `connecting` until it logs otherwise; a killed one is `no daemon` until restarted."""
    events = [(t, "start") for t in node["starts"]] + [(t, "kill") for t in node["kills"]]
    for t, line in node["log"]:
        m = TRANSITION_RE.search(line)
        if m:
            events.append((t, m.group(3)))
    events.sort(key=lambda e: e[0])
    segs, cur, since = [], None, None
    for t, what in events:
        new = {"start": "connecting", "kill": "no daemon"}.get(what, what)
        if cur is not None and new != cur:
            segs.append((since, t, cur))
        if new != cur:
            cur, since = new, t
    if cur is not None:
        segs.append((since, t_end, cur))
    return segs


def outages(node, t_end):
    """[(start, end, daemon_start)]: the tunnel not up (after it first was), with the start
    of the daemon that ended it (its own view of the outage begins there at the latest)."""
    out, first_up, start = [], False, None
    segs = state_segments(node, t_end)
    for a, b, s in segs:
        if s == "up":
            if start is not None:
                ds = max([t for t in node["starts"] if t <= a] or [start])
                out.append((start, a, max(start, ds)))
                start = None
            first_up = True
        elif first_up and start is None:
            start = a
    if start is not None:
        out.append((start, t_end, start))
    return out


def replica_lag(node, primary):
    """[(t, seconds)]: how long ago the primary first had WAL the replica has not replayed
    (0 when it has replayed all the primary had at its last sample)."""
    pt = [p[0] for p in primary]
    pl = [p[1] for p in primary]
    out = []
    for t, replay, _ in node["replica"]:
        if replay is None:
            continue
        # first primary sample beyond what the replica replayed, among those up to t
        hi = bisect.bisect_right(pt, t)
        i = bisect.bisect_right(pl, replay, 0, hi)
        out.append((t, 0.0 if i >= hi else max(0.0, t - pt[i])))
    return out


# ---------------------------------------------------------------------------------------
# Analysis and checks
# ---------------------------------------------------------------------------------------


def analyze(res):
    """(per-fault rows, checks): rows are dicts of numbers per (fault, node); checks are
    (ok, text)."""
    p = res["params"]
    faults = res["faults"]
    checks = [tuple(c) for c in res.get("checks", [])]
    rows = []
    t_end = res["t_end"]
    for i, f in enumerate(faults):
        w_end = faults[i + 1]["start"] if i + 1 < len(faults) else t_end
        for name, node in res["nodes"].items():
            rows.append(fault_row(f, w_end, name, node, p, checks))
    check_alerts(res, checks)
    check_rows(res, checks)
    for name, node in res["nodes"].items():
        # the sidecar refuses session channels (MaxSessions 0): keepalives must still time
        # the round trip, or health cannot be degraded and windows cannot grow
        rtts = [s["rtt_ms"] for t, s in node["status"] if s and s["rtt_ms"] is not None]
        checks.append((bool(rtts), "%s: keepalive round trip measured against the hardened "
                                   "sidecar (%d of %d status samples have rtt_ms)" % (
                                       name, len(rtts), len([s for t, s in node["status"]
                                                             if s]))))
        if node["sanitizer"]:
            checks.append((False, "%s: sanitizer reports: %s" % (name, node["sanitizer"][:5])))
        checks.append((node["replica_caught_up_at_end"],
                       "%s: replica caught up with the primary at the end" % name))
    return rows, checks


def fault_row(f, w_end, name, node, p, checks):
    label = "%s, %s" % (f["key"], name)
    exp = {k: name in v if isinstance(v, list) else v for k, v in f["expect"].items()}
    w = node["writes"]
    acks = sorted(w["acks"], key=lambda a: a[2])
    errs = sorted(w["unknown"] + w["failed"], key=lambda e: e[2])
    ack_t = [a[2] for a in acks]
    # the longest time without an acknowledged write from the fault on (a gap that began
    # just before it counts whole; one that runs into the next fault, up to its start)
    gap = 0.0
    idle = f.get("idle") or [0, 0]  # the writers were paused: not an outage
    i = max(0, bisect.bisect_left(ack_t, f["start"]) - 1)
    while i + 1 < len(ack_t) and ack_t[i] < w_end:
        a, b = ack_t[i], min(ack_t[i + 1], w_end)
        gap = max(gap, b - a - max(0.0, min(b, idle[1]) - max(a, idle[0])))
        i += 1
    j = bisect.bisect_left(ack_t, f["end"])
    first = ack_t[j] - f["end"] if j < len(ack_t) and ack_t[j] < w_end else None
    later_errs = [e for e in errs if first is not None and f["end"] + first < e[2] < w_end]
    errs_in = [e for e in errs if f["start"] <= e[2] < w_end]
    conns_in = [c for c in w["connects"] if f["start"] <= c < w_end]
    catch = f["catchup"].get(name)
    catch = catch - f["end"] if catch is not None else None
    trans = [(t, l) for t, l in node["log"]
             if f["start"] <= t < w_end and TRANSITION_RE.search(l)]
    outs = [o for o in outages(node, w_end) if o[1] > f["start"] and o[0] < w_end]
    down = sum(min(b, w_end) - max(a, f["start"]) for a, b, _ in outs)
    alerts = [a["event"] for t, a in node["alerts"]
              if f["start"] <= t < w_end and a["event"] != "test"]
    samples = [s for t, s in node["status"] if f["start"] <= t < w_end]
    row = {"fault": f["key"], "label": f["label"], "node": name, "writer_gap": gap,
           "first_write": first, "catchup": catch, "tunnel_down": down,
           "transitions": len(trans), "alerts": alerts, "errors": len(errs_in),
           "bound": node["write_bound"], "detected": None}

    checks.append((first is not None and first <= node["write_bound"],
                   "%s: writes again %s after the fault ended (bound %.0f s)" % (
                       label, fmt_s(first), node["write_bound"])))
    checks.append((not later_errs, "%s: no failed write once writing again (%d)" % (
        label, len(later_errs))))
    checks.append((catch is not None and catch <= p["catchup_bound"],
                   "%s: replica at the primary's end-of-fault position %s after the fault "
                   "ended (bound %.0f s)" % (label, fmt_s(catch), p["catchup_bound"])))
    if exp.get("down"):
        checks.append((any(s is not None and s["state"] in ("backoff", "connecting")
                           for s in samples) and bool(outs),
                       "%s: tunnel left `up` during the fault (status and log)" % label))
        if exp.get("detect_bound"):
            left = [t for t, l in trans if " up -> " in l]
            det = left[0] - f.get("drop", f["start"]) if left else None
            row["detected"] = det
            checks.append((det is not None and det <= exp["detect_bound"],
                           "%s: dead path found %s after it went silent (bound %.1f s)" % (
                               label, fmt_s(det), exp["detect_bound"])))
    if exp.get("killed"):
        checks.append((any(s is None for s in samples),
                       "%s: status showed no daemon while it was dead" % label))
    if exp.get("restarted"):
        checks.append((any("changed, restarting" in l for t, l in node["log"]
                           if f["start"] <= t < w_end),
                       "%s: the reload restarted the tunnel with the new key" % label))
    if exp.get("stay_up"):
        checks.append((not trans, "%s: tunnel stayed up (%s)" % (
            label, "; ".join(l.split(": ", 1)[-1] for t, l in trans[:3]) or "no transition")))
        checks.append((all(s is not None and s["state"] == "up" for s in samples),
                       "%s: every status sample up" % label))
    if exp.get("quiet"):
        checks.append((not errs_in and not conns_in,
                       "%s: the writer's connection held (%d failed writes, %d new "
                       "connections)" % (label, len(errs_in), len(conns_in))))
    end_ok = f.get("recovered_status", {}).get(name)
    if end_ok is not None:
        checks.append((end_ok, "%s: up and ok again before the next fault" % label))
    return row


def check_alerts(res, checks):
    """One down/up pair per outage longer than down_after (as the daemon saw it), none for
    shorter ones; nothing else. Outages within 0.5 s of down_after may go either way."""
    da = res["params"]["down_after"]
    for name, node in res["nodes"].items():
        # test events are the scenario reading the daemon's wall clock
        events = sorted((t, a["event"]) for t, a in node["alerts"] if a["event"] != "test")
        used = set()
        for start, end, seen_from in outages(node, res["t_end"]):
            dur = end - seen_from
            near = [k for k, (t, e) in enumerate(events)
                    if seen_from - 0.2 <= t <= end + 3.0 and e in ("down", "up")]
            downs = [k for k in near if events[k][1] == "down"]
            ups = [k for k in near if events[k][1] == "up" and events[k][0] >= end - 0.2]
            what = "%s: tunnel down %.1fs at %.1fs" % (name, end - start, start - res["t0"])
            if seen_from > start:
                what += " (%.1fs of it seen by the restarted daemon)" % dur
            if dur > da + 0.5:
                ok = len(downs) == 1 and len(ups) == 1 and \
                    events[downs[0]][0] >= seen_from + da - 0.5
                checks.append((ok, "%s (> down_after %.0fs): one down and one up alert "
                                   "(got %d down, %d up)" % (what, da, len(downs), len(ups))))
            elif dur < da - 0.5:
                checks.append((not downs and not ups,
                               "%s (< down_after %.0fs): no alert (got %d down, %d up)" % (
                                   what, da, len(downs), len(ups))))
            used.update(downs + ups)
        stray = [events[k] for k in range(len(events)) if k not in used]
        checks.append((not stray, "%s: no other alerts (%s)" % (
            name, ", ".join("%s at %.1fs" % (e, t - res["t0"]) for t, e in stray) or "none")))


def check_rows(res, checks):
    rows = {k: {(n, s): c for n, s, c in v} for k, v in res["rows"].items()}
    prim = rows["primary"]
    for name, node in res["nodes"].items():
        acked = {(name, a[0]) for a in node["writes"]["acks"]}
        unknown = {(name, u[0]) for u in node["writes"]["unknown"]}
        missing = sorted(k for k in acked if k not in prim)
        checks.append((not missing, "%s: all %d acknowledged rows on the primary (missing: "
                                    "%s)" % (name, len(acked), missing[:10] or "none")))
        phantom = sorted(k for k in prim if k[0] == name and k not in acked | unknown)
        checks.append((not phantom, "%s: every row on the primary was written by its writer "
                                    "(%s)" % (name, phantom[:10] or "yes")))
        on_prim = len([k for k in unknown if k in prim])
        checks.append((True, "%s: %d writes unacknowledged when the connection broke, %d of "
                             "them committed" % (name, len(unknown), on_prim)))
    for k, r in rows.items():
        dups = sorted(key for key, c in r.items() if c > 1)
        checks.append((not dups, "%s: no row twice (%s)" % (k, dups[:10] or "none")))
        if k != "primary":
            diff = sorted(set(r) ^ set(prim))
            checks.append((not diff, "replica of %s holds exactly the primary's %d rows "
                                     "(differ: %s)" % (k, len(prim), diff[:10] or "none")))


def fmt_s(v):
    return "never" if v is None else "%.2fs" % v


# ---------------------------------------------------------------------------------------
# Text and picture
# ---------------------------------------------------------------------------------------


def summary_text(res, rows, checks):
    p = res["params"]
    out = ["moletun deployment scenario: 2 web nodes (web2 behind %d ms each way), writers "
           "at up to %d rows/s, keepalive %gs x %d, down_after %gs" % (
               p["long_delay_ms"], p["rate"], p["keepalive_interval"], p["keepalive_count_max"],
               p["down_after"])]
    if p.get("scale", 1.0) != 1.0:
        out.append("sanitizer build (%s): time bounds x%g" % (p["moletun"], p["scale"]))
    out.append("")
    hdr = "%-44s %-5s %9s %11s %9s %8s  %s" % ("fault", "node", "writer", "writes", "replica",
                                               "tunnel", "alerts")
    out.append(hdr)
    out.append("%-44s %-5s %9s %11s %9s %8s" % ("", "", "outage", "again", "caught up",
                                                "down"))
    for r in rows:
        out.append("%-44s %-5s %8.2fs %10s %9s %7.1fs  %s" % (
            r["label"][:44], r["node"], r["writer_gap"],
            fmt_s(r["first_write"]) + ("" if r["first_write"] is not None and
                                       r["first_write"] <= r["bound"] else "!"),
            fmt_s(r["catchup"]), r["tunnel_down"], ",".join(r["alerts"]) or "-"))
    out.append("")
    out.append("writer outage: longest time between two acknowledged writes around the fault;"
               " writes again / replica caught up: after the fault ended")
    out.append("")
    for name, node in res["nodes"].items():
        w = node["writes"]
        out.append("%s: %d rows acknowledged, %d unacknowledged (connection broke), %d "
                   "failed to connect" % (name, len(w["acks"]), len(w["unknown"]),
                                          len(w["failed"])))
    if res.get("status_no_answer"):
        out.append("ctl status samples without an answer within 1 s (left out): %d" %
                   res["status_no_answer"])
    out.append("")
    for ok, text in checks:
        out.append("%s %s" % ("ok  " if ok else "FAIL", text))
    nfail = len([c for c in checks if not c[0]])
    out.append("")
    out.append("%d checks, %d failed" % (len(checks), nfail))
    return "\n".join(out) + "\n"


STATE_COLOURS = {"up": "#4caf50", "connecting": "#ffc107", "backoff": "#f44336",
                 "no daemon": "#424242"}
HEALTH_COLOURS = {"ok": "#4caf50", "target_down": "#9c27b0", "degraded": "#ff9800"}
FAULT_HERE = "#ffcdd2"
FAULT_ELSEWHERE = "#e0e0e0"
IDLE = "#90a4ae"
IDLE_LIGHT = "#eceff1"


def fault_span(f):
    """(from, to) of the fault itself: a clock step is an instant, shown 0.4 s wide."""
    if "drop" in f:
        return f["drop"], f["end"]
    if "step" in f:
        return f["step"], f["step"] + 0.4
    return f["start"], max(f["end"], f["start"] + 0.4)


def plot(res, rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10})
    t0 = res["t0"]
    names = list(res["nodes"])
    ratios = [0.55] + [1.25, 0.8, 0.8] * len(names)
    fig, axes = plt.subplots(len(ratios), 1, sharex=True, figsize=(12.5, 12.5),
                             gridspec_kw={"height_ratios": ratios, "hspace": 0.12})
    ax_f = axes[0]
    ax_f.set_ylim(0, 1)
    ax_f.set_yticks([])
    for spine in ("left", "right", "top"):
        ax_f.spines[spine].set_visible(False)
    ax_f.set_title("moletun deployment scenario: faults (shaded), then recovery", loc="left",
                   fontweight="bold")
    for f in res["faults"]:
        a, b = fault_span(f)
        if f.get("idle"):
            ax_f.axvspan(f["idle"][0] - t0, f["idle"][1] - t0, ymax=0.3, color=IDLE, lw=0)
        ax_f.axvspan(a - t0, b - t0, ymax=0.3, color="#e53935", lw=0)
    for i, f in enumerate(res["faults"]):  # two rows of labels, so neighbours never meet
        ax_f.text(f["start"] - t0, 0.42 + 0.3 * (i % 2), SHORT.get(f["key"], f["key"]),
                  fontsize=8.5, va="bottom", ha="left", color="#b71c1c")
    for k, name in enumerate(names):
        node = res["nodes"][name]
        ax_w, ax_r, ax_t = axes[1 + 3 * k:4 + 3 * k]
        where = "long path: %d ms each way" % res["params"]["long_delay_ms"] \
            if node["long_path"] else "LAN"
        w = node["writes"]
        ax_w.scatter([a[2] - t0 for a in w["acks"]],
                     [max(0.3, (a[2] - a[1]) * 1000) for a in w["acks"]],
                     s=4, color="#1565c0", lw=0, zorder=3)
        errs = w["unknown"] + w["failed"]
        ax_w.scatter([e[2] - t0 for e in errs], [max(0.3, (e[2] - e[1]) * 1000) for e in errs],
                     s=14, marker="x", color="#d32f2f", lw=0.8, zorder=3)
        ax_w.set_yscale("log")
        ax_w.set_ylim(0.3, 3e5)
        ax_w.set_yticks([1, 10, 100, 1000, 10000])
        ax_w.set_yticklabels(["1", "10", "100", "1 s", "10 s"])
        ax_w.set_ylabel("write (ms)")
        ax_w.text(0.003, 0.96, "%s (%s)" % (name, where), transform=ax_w.transAxes,
                  fontsize=10.5, fontweight="bold", va="top",
                  bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})
        for f in res["faults"]:
            r = next((r for r in rows if r["fault"] == f["key"] and r["node"] == name), None)
            if not r or f["key"] == "clock_fwd":
                continue
            bad = r["first_write"] is None or r["first_write"] > r["bound"]
            ax_w.text(f["end"] - t0 + 0.15, 3.5e4, fmt_s(r["first_write"]) + (" !" if bad else ""),
                      fontsize=8.5 if bad else 8, va="center", ha="left",
                      fontweight="bold" if bad else "normal",
                      color="#d50000" if bad else "#1b5e20")

        lag = replica_lag(node, res["primary_lsn"])
        ax_r.plot([t - t0 for t, _ in lag], [v for _, v in lag], color="#6a1b9a", lw=1.2)
        ax_r.set_ylabel("replica\nlag (s)")
        top = max([v for _, v in lag] + [1.0])
        ax_r.set_ylim(-0.08 * top, top * 1.15)

        # tunnel state (its log) and health (`ctl status`) as strips, probe RTT above
        segs = state_segments(node, res["t_end"])
        for state, colour in STATE_COLOURS.items():
            xr = [(a - t0, b - a) for a, b, s in segs if s == state]
            if xr:
                ax_t.broken_barh(xr, (0.0, 0.16), transform=ax_t.get_xaxis_transform(),
                                 color=colour, zorder=3)
        hs = health_segments(node, res["t_end"])
        for h, colour in HEALTH_COLOURS.items():
            xr = [(a - t0, b - a) for a, b, s in hs if s == h]
            if xr:
                ax_t.broken_barh(xr, (0.19, 0.1), transform=ax_t.get_xaxis_transform(),
                                 color=colour, zorder=3)
        ax_t.text(1.003, 0.08, "state", transform=ax_t.transAxes, fontsize=8, va="center")
        ax_t.text(1.003, 0.24, "health", transform=ax_t.transAxes, fontsize=8, va="center")
        rtt = [(t - t0, s["rtt_ms"]) for t, s in node["status"] if s and s["rtt_ms"] is not None]
        prtt = [(t - t0, s["probe_rtt_ms"]) for t, s in node["status"]
                if s and s["probe_rtt_ms"] is not None]
        ymax = 1.0
        if rtt:
            ax_t.plot(*zip(*rtt), color="#00838f", lw=1.2)
            ymax = max(ymax, max(v for _, v in rtt))
        if prtt:
            ax_t.plot(*zip(*prtt), color="#5d4037", lw=1, ls="--", drawstyle="steps-post")
            ymax = max(ymax, max(v for _, v in prtt))
        ax_t.set_ylim(-ymax * 0.55, ymax * 1.3)
        ax_t.set_yticks([0, round(ymax / 2, 1 if ymax < 10 else -1)])
        ax_t.set_ylabel("RTT (ms)")
        if not rtt:
            ax_t.text(0.003, 0.93, "keepalive RTT: none (the sidecar refuses session channels, "
                      "MaxSessions 0); dashed: probe RTT", transform=ax_t.transAxes,
                      fontsize=8, va="top", color="#4e342e")
        for ax in (ax_w, ax_r, ax_t):
            ax.grid(axis="x", color="#e0e0e0", lw=0.5)
            for f in res["faults"]:
                a, b = fault_span(f)
                if f.get("idle"):
                    ax.axvspan(f["idle"][0] - t0, f["idle"][1] - t0, lw=0, zorder=0,
                               color=IDLE_LIGHT)
                ax.axvspan(a - t0, b - t0, lw=0, zorder=0,
                           color=FAULT_HERE if name in f["nodes"] else FAULT_ELSEWHERE)
    legend = [Line2D([], [], ls="", marker="o", ms=4, color="#1565c0",
                     label="write acknowledged (latency)"),
              Line2D([], [], ls="", marker="x", ms=5, color="#d32f2f",
                     label="write failed (at the time it took)"),
              Line2D([], [], color="#1b5e20", ls="", marker="$1.0s$", ms=14,
                     label="writing again after the fault"),
              Line2D([], [], color="#6a1b9a", label="replica lag"),
              Line2D([], [], color="#5d4037", ls="--", label="probe RTT")]
    legend += [Patch(color=c, label=s) for s, c in STATE_COLOURS.items()]
    legend += [Patch(color=c, label=s) for s, c in HEALTH_COLOURS.items() if s != "ok"]
    legend += [Patch(color=FAULT_HERE, label="fault on this node"),
               Patch(color=FAULT_ELSEWHERE, label="fault elsewhere"),
               Patch(color=IDLE_LIGHT, label="writers paused")]
    fig.legend(handles=legend, loc="lower center", ncol=7, fontsize=8.5, frameon=False)
    axes[-1].set_xlabel("seconds")
    axes[-1].set_xlim(0, res["t_end"] - t0)
    fig.subplots_adjust(left=0.065, right=0.955, top=0.965, bottom=0.085)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def health_segments(node, t_end):
    out, cur, since = [], None, None
    for t, s in node["status"]:
        h = s["health"] if s and s["state"] == "up" else None
        if h != cur:
            if cur is not None:
                out.append((since, t, cur))
            cur, since = h, t
    if cur is not None:
        out.append((since, t_end, cur))
    return out


def main(argv, announce=True):
    path, outdir = argv[0], argv[1]
    with open(path) as f:
        res = json.load(f)
    rows, checks = analyze(res)
    text = summary_text(res, rows, checks)
    with open(os.path.join(outdir, "summary.txt"), "w") as f:
        f.write(text)
    png = os.path.join(outdir, "timeline.png")
    plot(res, rows, png)
    print(text, end="")
    if announce:
        print("timeline: %s" % png)
        print("summary: %s" % os.path.join(outdir, "summary.txt"))
    return 0 if all(ok for ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
