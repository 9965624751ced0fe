"""The agent-memory figure of docs/BENCHMARKS.md (bench/agent_memory.sh): the agent's RSS,
PSS and anonymous memory when idle and connected, then after N short commands run one
after another through the dashboard (REST POST, then the command's end polled every 5 ms).
A leak per command shows as growth of the anonymous memory; the file-backed part is the
binary's clean pages, which the page cache decides."""

import json
import sys
import time

from deck_api import Deck

url, password, host, agent_pid, commands = sys.argv[1:6]
commands = int(commands)


def memory():
    """kB figures of the agent process (smaps_rollup: Rss, Pss, Anonymous)."""
    out = {}
    with open(f"/proc/{agent_pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if parts[0] in ("Rss:", "Pss:", "Anonymous:", "Pss_Anon:", "Pss_File:"):
                out[parts[0].rstrip(":").lower()] = int(parts[1])
    with open(f"/proc/{agent_pid}/status") as f:
        for line in f:
            if line.startswith(("RssAnon:", "RssFile:", "VmHWM:")):
                k, v = line.split()[:2]
                out[k.rstrip(":").lower()] = int(v)
    return out


deck = Deck(url, password)

time.sleep(10)  # settled: registered, a few heartbeats sent
idle = memory()
print(f"idle: {json.dumps(idle)}", file=sys.stderr)

failed = 0
t0 = time.monotonic()
for i in range(commands):
    c = deck.run(host, "test")
    if c["status"] != "ok":
        failed += 1
    if (i + 1) % 1000 == 0:
        print(f"{i + 1} commands in {time.monotonic() - t0:.0f} s: {json.dumps(memory())}",
              file=sys.stderr)
elapsed = time.monotonic() - t0
time.sleep(10)
after = memory()
print(json.dumps({"commands": commands, "failed": failed, "seconds": round(elapsed, 1),
                  "idle_kb": idle, "after_kb": after,
                  "rss_ratio": round(after["rss"] / idle["rss"], 3),
                  "anon_ratio": round(after["anonymous"] / idle["anonymous"], 3)}))
