"""The application of a web node: commits numbered rows through the node's tunnel.

Runs inside the node's network namespace (Debian's python3 with python3-psycopg2):

    writer.py NODE PORT RATE OUT

One connection at a time to 127.0.0.1:PORT (moletun's local forward to the primary),
autocommit, one INSERT of (NODE, seq) per row, at most RATE rows a second. Every attempt
gets a new seq, so a row on the primary twice can only be a duplicate made on the way.
Each outcome is one line in OUT, flushed at once (times are CLOCK_MONOTONIC, which every
namespace shares, so the scenario can put them on its own time line):

    A seq t_start t_ack             acknowledged: the commit is on the primary
    U seq t_start t_end error       sent, then the connection broke: maybe committed
    F seq t_start t_end error       failed before it was sent (no connection)
    C t                             a new connection is ready

While the file OUT.pause exists it writes nothing and keeps its connection (an idle
application). SIGTERM ends it after the write in flight.
"""

import os
import signal
import sys
import time

import psycopg2

CONNECT_TIMEOUT = 5  # seconds; longer than the tunnel's down_hold
RETRY_PAUSE = 0.05


def main():
    node, port, rate, out_path = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    stop = [False]

    def on_term(signum, frame):
        stop[0] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    interval = 1.0 / rate
    out = open(out_path, "a", buffering=1)
    conn = None
    seq = 0
    next_at = time.monotonic()
    pause = out_path + ".pause"
    while not stop[0]:
        if os.path.exists(pause):
            time.sleep(0.01)
            next_at = time.monotonic()
            continue
        now = time.monotonic()
        if now < next_at:
            time.sleep(next_at - now)
            continue
        next_at = max(next_at + interval, time.monotonic())
        if conn is None:
            t0 = time.monotonic()
            try:
                conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres",
                                        dbname="app", connect_timeout=CONNECT_TIMEOUT,
                                        application_name="writer-" + node)
                conn.autocommit = True
                out.write("C %.6f\n" % time.monotonic())
            except psycopg2.Error as e:
                conn = None
                seq += 1
                out.write("F %d %.6f %.6f %s\n" % (seq, t0, time.monotonic(),
                                                  _oneline(e)))
                next_at = time.monotonic() + RETRY_PAUSE
                continue
        seq += 1
        t0 = time.monotonic()
        try:
            with conn.cursor() as cur:
                cur.execute("INSERT INTO rows (node, seq) VALUES (%s, %s)", (node, seq))
            out.write("A %d %.6f %.6f\n" % (seq, t0, time.monotonic()))
        except psycopg2.Error as e:
            out.write("U %d %.6f %.6f %s\n" % (seq, t0, time.monotonic(), _oneline(e)))
            try:
                conn.close()
            except psycopg2.Error:
                pass
            conn = None
            next_at = time.monotonic() + RETRY_PAUSE
    if conn is not None:
        conn.close()
    out.close()


def _oneline(e):
    text = " ".join(str(e).split())
    return (type(e).__name__ + ": " + text)[:200]


if __name__ == "__main__":
    main()
