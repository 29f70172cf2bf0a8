"""Launch to first frame: `rst-triage` in tmux at 80x24 against a minimal Textual app.

Each round starts the program in a fresh tmux session and polls the pane until the first
frame shows (the header text), alternating the two programs. Prints the medians and the
ratio; the target is rst-triage's first frame in under 1 s on this machine.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PEER = """
from textual.app import App
from textual.widgets import Header, Footer, Static
class Hello(App):
    TITLE = "hello-peer"
    def compose(self):
        yield Header()
        yield Static("hello")
        yield Footer()
Hello().run()
"""


def first_frame(cmd: str, marker: str, timeout: float = 20.0) -> float:
    session = f"rstb-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24", cmd], check=True)
    try:
        while time.monotonic() - started < timeout:
            screen = subprocess.run(
                ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True
            ).stdout
            if marker in screen:
                return time.monotonic() - started
            time.sleep(0.01)
        raise SystemExit(f"no first frame within {timeout:.0f}s: {cmd}")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        peer = Path(tmp) / "peer.py"
        peer.write_text(PEER)
        env = f"env XDG_STATE_HOME={tmp} PYTHONPATH={REPO}"
        ours = f"{env} {sys.executable} -m tui --peer 127.0.0.1:9"
        theirs = f"{env} {sys.executable} {peer}"
        times: dict[str, list[float]] = {"rst-triage": [], "minimal Textual app": []}
        for i in range(args.rounds):
            order = [("rst-triage", ours, "rst-triage"), ("minimal Textual app", theirs, "hello-peer")]
            for name, cmd, marker in order if i % 2 == 0 else order[::-1]:
                times[name].append(first_frame(cmd, marker))
    ours_m = statistics.median(times["rst-triage"])
    peer_m = statistics.median(times["minimal Textual app"])
    for name, ts in times.items():
        print(
            f"{name:22} first frame: median {statistics.median(ts):.3f} s  (runs: "
            + ", ".join(f"{t:.2f}" for t in ts)
            + ")"
        )
    print(f"ratio rst-triage / minimal app: {ours_m / peer_m:.2f}x")
    print(f"{'PASS' if ours_m < 1.0 else 'FAIL'}  rst-triage first frame under 1 s ({ours_m:.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
