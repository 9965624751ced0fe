#!/usr/bin/env python3
"""A replica's failover as another replica sees it (bench/replicas.sh MODE=failover): signs
in to the surviving replica, kills the other with SIGKILL, then reads the survivor's
`GET /api/hosts` every POLL_S seconds and prints, as JSON, when its view was whole again:
every host online with a heartbeat sent after the kill. Heartbeats carry their send time
in `metrics.load` (fleet-sim writes ms of CLOCK_MONOTONIC there, bench/src/clock.rs), and
Python's time.monotonic() is the same clock, so "sent after the kill" needs no guess. What
the survivor's REST answers is its hub's state, the one its browsers' snapshots and events
come from.

    failover_watch.py SURVIVOR_URL KILL_PID HOSTS [WATCH_S] [POLL_S]

Reads the admin password from NIXDECK_ADMIN_PASSWORD. Watches WATCH_S seconds (default
40: past the killed replica's lease, 10 s by default, so that hosts the survivor would wrongly
mark offline when the lease runs out show in `min_online_after_whole`)."""

import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from deck_api import Deck  # noqa: E402


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    url, pid, hosts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    watch_s = float(sys.argv[4]) if len(sys.argv) > 4 else 40.0
    poll_s = float(sys.argv[5]) if len(sys.argv) > 5 else 0.5
    deck = Deck(url, os.environ["NIXDECK_ADMIN_PASSWORD"])

    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    t0_ms = t0 * 1000.0
    timeline, whole_s, not_before, min_after = [], None, None, None
    while time.monotonic() - t0 < watch_s:
        asked = time.monotonic()
        _, listed = deck.request("GET", "/api/hosts")
        at = time.monotonic() - t0
        online = sum(1 for h in listed if h.get("online"))
        fresh = sum(
            1 for h in listed
            if h.get("online") and ((h.get("metrics") or {}).get("load") or 0) > t0_ms)
        timeline.append({"t_s": round(at, 3), "request_s": round(at - (asked - t0), 3),
                         "hosts": len(listed), "online": online, "fresh": fresh})
        if whole_s is None and fresh >= hosts:
            # Whole by the end of this answer (an upper bound), and not yet at the start of
            # the previous one (a lower bound): the poll's step is the figure's resolution.
            whole_s = round(at, 3)
            not_before = timeline[-2]["t_s"] - timeline[-2]["request_s"] if len(timeline) > 1 else 0.0
        elif whole_s is not None:
            min_after = online if min_after is None else min(min_after, online)
        time.sleep(max(0.0, poll_s - (time.monotonic() - asked)))
    print(json.dumps({
        "killed_pid": pid,
        "hosts_expected": hosts,
        "whole_after_s": whole_s,
        "whole_not_before_s": None if not_before is None else round(not_before, 3),
        "min_online_after_whole": min_after,
        "min_online": min((r["online"] for r in timeline), default=None),
        "timeline": timeline,
    }, indent=1))


if __name__ == "__main__":
    main()
