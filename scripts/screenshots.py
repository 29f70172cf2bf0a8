"""Write SVG screenshots of every pane into screenshots/ (run by scripts/screenshots).

The app runs offline over the lab's forged-reset captures (tests/fixtures/lab), at 80x24 as
an on-call engineer's laptop terminal would show it; the help and export dialogs too.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHOTS = [
    ("1-flow", ["1"]),
    ("2-first", ["2"]),
    ("3-second", ["3", "down", "down"]),
    ("4-third", ["4"]),
    ("5-verdict", ["5"]),
    ("6-help", ["question_mark"]),
    ("7-export", ["e"]),
]


async def main(out: Path, size: tuple[int, int]) -> None:
    from tui.app import RstTriageApp

    os.chdir(REPO / "tests" / "fixtures" / "lab")
    out.mkdir(exist_ok=True)
    for name, keys in SHOTS:
        app = RstTriageApp(pcaps=["injected-client.pcap", "injected-server.pcap"])
        async with app.run_test(size=size) as pilot:
            deadline = time.monotonic() + 20
            while app.findings.analysis is None:
                if time.monotonic() > deadline:
                    raise SystemExit("screenshots: the analysis did not finish")
                await pilot.pause(0.05)
            await pilot.press(*keys)
            await pilot.pause(0.3)
            path = out / f"{name}.svg"
            path.write_text(app.export_screenshot(title=f"rst-triage: {name[2:]}"))
            print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as state:
        os.environ["XDG_STATE_HOME"] = state  # never touch the user's own sessions
        asyncio.run(main(REPO / "screenshots", (80, 24)))
