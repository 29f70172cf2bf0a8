"""One test in a real terminal: tmux runs `rst-triage --pcap <lab captures>` at 80x24."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parent / "fixtures" / "lab"
REPO = Path(__file__).resolve().parents[1]


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, timeout=10).stdout


def wait_for(session: str, text: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux("capture-pane", "-p", "-t", session)
        if text in screen:
            return screen
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never appeared; the screen was:\n{screen}")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_verdict_in_a_real_terminal_and_q_exits_cleanly(tmp_path: Path) -> None:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is needed for this test (scripts/test installs it)")
    session = f"rstt-{uuid.uuid4().hex[:8]}"
    env = f"XDG_STATE_HOME={tmp_path} PYTHONPATH={REPO}"
    argv = f"{sys.executable} -m tui --pcap injected-client.pcap injected-server.pcap"
    tmux("new-session", "-d", "-s", session, "-x", "80", "-y", "24", "-c", str(LAB), f"env {env} {argv}")
    try:
        pid = int(tmux("display-message", "-p", "-t", session, "#{pane_pid}").strip())
        screen = wait_for(session, "VERDICT:")
        assert "origin MIDDLEBOX, cause injected" in screen
        assert "[MIDDLEBOX]" in screen and "RST sent here" in screen
        tmux("send-keys", "-t", session, "2")
        screen = wait_for(session, "Find the first RST at each vantage")
        assert "middlebox/injected (0.90)" in screen
        tmux("send-keys", "-t", session, "q")
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(pid), "rst-triage still running after q"
        # the session ended with the program: nothing left behind
        left = subprocess.run(["tmux", "has-session", "-t", session], capture_output=True)
        assert left.returncode != 0
        sessions = list((tmp_path / "rst-triage" / "sessions").glob("*.json"))
        assert len(sessions) == 1 and sessions[0].stat().st_mode & 0o777 == 0o600
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
