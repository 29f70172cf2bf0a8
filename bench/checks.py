"""All live checks together, in a lab namespace: `rst-triage check` against the shell commands
a human would run for the same facts (one after another), in the same run.

Needs root (it builds the lab's namespaces). The target: every check (keepalive and capture
excluded) done in under 3 s with the default 1 s sampling window.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.lab.netlab import Lab  # noqa: E402

# Counters are facts only as deltas: a human samples them, waits the window, samples again.
COUNTERS = [["nstat", "-az"], ["conntrack", "-S"], ["ip", "-s", "-s", "link"]]
HUMAN = [
    ["ip", "route", "get", "{peer}"],
    ["ss", "-tanpio"],
    ["conntrack", "-C"],
    ["conntrack", "-S"],
    ["sysctl", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_keepalive_time"],
    ["nft", "-j", "list", "ruleset"],
    ["ip", "-s", "-s", "link"],
    ["ping", "-c", "1", "-W", "1", "-M", "do", "-s", "1472", "{peer}"],
]


def main() -> int:
    rounds = 5
    with Lab() as lab:
        peer = lab.addr("server")
        ours, theirs, slowest = [], [], []
        for _ in range(rounds):
            t = time.monotonic()
            proc = lab.run(
                "client",
                [sys.executable, "-m", "tui", "check", "--peer", f"{peer}:8080", "--json"],
                check=False,
                timeout=60,
            )
            ours.append(time.monotonic() - t)
            results = json.loads(proc.stdout)["results"]
            slowest.append(max(results, key=lambda r: r["duration_s"]))
            t = time.monotonic()
            for argv in COUNTERS + HUMAN:
                lab.run("client", [a.format(peer=peer) for a in argv], check=False, timeout=30)
            time.sleep(1.0)  # the same sampling window as the checks' default
            for argv in COUNTERS:
                lab.run("client", argv, check=False, timeout=30)
            theirs.append(time.monotonic() - t)
    o, h = statistics.median(ours), statistics.median(theirs)
    runs = ", ".join(f"{x:.2f}" for x in ours)
    print(f"rst-triage check (11 checks, concurrent): median {o:.2f} s  runs {runs}")
    print(f"the same facts by hand (sequential, 1 s window): median {h:.2f} s")
    print(f"ratio: {o / h:.2f}x; slowest check: {slowest[-1]['id']} {slowest[-1]['duration_s']:.2f} s")
    print(f"{'PASS' if o < 3.0 else 'FAIL'}  all checks under 3 s ({o:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
