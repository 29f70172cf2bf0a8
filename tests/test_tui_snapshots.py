"""Snapshots of every pane at 80x24 and 120x40 (pytest-textual-snapshot).

The app runs offline over fixed lab captures, so every frame is deterministic. After an
intended change of the UI, regenerate with `pytest tests/test_tui_snapshots.py
--snapshot-update`, look at the SVGs, and commit them.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tui.app import RstTriageApp

LAB = Path(__file__).resolve().parent / "fixtures" / "lab"
PANES = {"flow": "1", "first": "2", "second": "3", "third": "4", "verdict": "5"}


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
@pytest.mark.parametrize("pane", list(PANES))
def test_pane_snapshot(
    snap_compare, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pane: str, size
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.chdir(LAB)
    app = RstTriageApp(pcaps=["injected-client.pcap", "injected-server.pcap"])

    async def ready(pilot) -> None:
        deadline = time.monotonic() + 10
        while app.findings.analysis is None:
            assert time.monotonic() < deadline
            await pilot.pause(0.05)
        await pilot.press(PANES[pane])
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=size, run_before=ready)
