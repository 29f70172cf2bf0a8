"""The capture in the first pane, for real: tcpdump on loopback while a connection is refused.

Needs root (tcpdump). Also: killing the app's terminal during a capture (SIGHUP) leaves no
tcpdump behind and the session file intact.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.lab.session import lab_unavailable
from tui.app import RstTriageApp
from tui.findings import Flow, SessionStore
from tui.widgets import StepView

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _needs_tcpdump_as_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0 or shutil.which("tcpdump") is None:
        lab_unavailable("capturing needs root and tcpdump")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def refused_port() -> int:
    """A loopback port with nothing listening (bound and closed again)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int, name: str) -> list[int]:
    """Descendants of ``pid`` whose command name is ``name``."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            if ppid == parent:
                todo.append(int(entry.name))
                if comm == name:
                    found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


async def test_capture_from_the_first_pane_finds_the_refusal() -> None:
    port = refused_port()
    app = RstTriageApp(flow=Flow(peer_host="127.0.0.1", peer_port=port), live=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2", "c")
        deadline = time.monotonic() + 15
        while app.capture_handle is None or app.capture_text in ("starting",) or "0.0 s" in app.capture_text:
            assert time.monotonic() < deadline, app.capture_text
            await pilot.pause(0.1)
        await pilot.pause(0.5)  # tcpdump is listening
        for _ in range(3):
            with socket.socket() as s:
                s.settimeout(1)
                with pytest.raises(ConnectionRefusedError):
                    s.connect(("127.0.0.1", port))
        await pilot.pause(0.5)
        await pilot.press("c")  # stop: the file is analysed
        deadline = time.monotonic() + 20
        while not app.findings.captures:
            assert time.monotonic() < deadline, app.capture_text
            await pilot.pause(0.1)
        cap = app.findings.captures[0]
        assert cap.resets >= 3 and Path(cap.path).stat().st_mode & 0o777 == 0o600
        view = next(v for v in app.query(StepView) if v.key == "first/analysis")
        assert view.summary.startswith("server/no-listener"), view.summary
        assert app.query_one("#path").origin == "server"


def test_sighup_during_a_capture_leaves_no_tcpdump_and_keeps_the_session(tmp_path: Path) -> None:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is needed for this test (scripts/test installs it)")
    session = f"rstc-{uuid.uuid4().hex[:8]}"
    state = tmp_path / "state"
    cmd = (f"env XDG_STATE_HOME={state} PYTHONPATH={REPO} {sys.executable} -m tui"
           f" --peer 127.0.0.1:{refused_port()}")
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24", cmd], check=True)
    try:
        pid = int(subprocess.run(["tmux", "display-message", "-p", "-t", session, "#{pane_pid}"],
                                 capture_output=True, text=True, check=True).stdout)
        time.sleep(2)  # first frame, checks running
        subprocess.run(["tmux", "send-keys", "-t", session, "2"], check=True)
        time.sleep(0.5)
        subprocess.run(["tmux", "send-keys", "-t", session, "c"], check=True)
        deadline = time.monotonic() + 15
        dumps: list[int] = []
        while not dumps:
            assert time.monotonic() < deadline, "tcpdump never started"
            dumps = children(pid, "tcpdump")
            time.sleep(0.2)
        # the terminal goes away: tmux hangs up on the app
        subprocess.run(["tmux", "kill-session", "-t", session], check=True)
        deadline = time.monotonic() + 10
        while (alive(pid) or any(alive(d) for d in dumps)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(pid), "the app survived its terminal"
        assert not any(alive(d) for d in dumps), "tcpdump outlived the app"
        files = list((state / "rst-triage" / "sessions").glob("*.json"))
        assert len(files) == 1
        saved = SessionStore.load(files[0])  # intact: it parses
        assert saved.flow.peer_host == "127.0.0.1"
        json.loads(files[0].read_text())
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
