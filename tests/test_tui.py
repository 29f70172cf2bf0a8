"""The TUI, driven with Textual's Pilot: panes, steps by hand, verdict, export, resume.

Captures come from the lab (tests/fixtures/lab). Snapshot tests are in test_tui_snapshots.py,
the real-terminal test in test_tui_terminal.py.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from tui import checks
from tui.app import RstTriageApp
from tui.checks import CheckResult, Context
from tui.findings import SessionStore
from tui.playbooks import Outcome, Playbook, Step, load_all
from tui.widgets import PathDiagram, StepView

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LAB = FIXTURES / "lab"
GOLDEN = FIXTURES / "golden"


@pytest.fixture(autouse=True)
def _state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Sessions and tickets go to a temporary state directory."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state"


def injected(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.chdir(LAB)  # relative names keep paths in the output stable
    return ["injected-client.pcap", "injected-server.pcap"]


def step(app: RstTriageApp, key: str) -> StepView:
    return next(v for v in app.query(StepView) if v.key == key)


async def settle(pilot, until, timeout: float = 10.0) -> None:
    """Let workers report back until ``until()`` holds (bounded)."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "the app did not get there in time"
        await pilot.pause(0.05)


def normalise(text: str) -> str:
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} UTC", "<time>", text)
    text = re.sub(r"\d\d:\d\d:\d\d\.\d{6} UTC", "<clock>", text)
    text = re.sub(r"Session \S+,", "Session <id>,", text)
    return re.sub(r"Host: [^.]+\.", "Host: <host>.", text)


async def test_walk_panes_reach_verdict_mark_steps_and_export(
    monkeypatch: pytest.MonkeyPatch, _state_home: Path
) -> None:
    app = RstTriageApp(pcaps=injected(monkeypatch))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, lambda: app.findings.analysis is not None)
        await pilot.pause(0.1)
        # the app opens on the verdict when given captures
        assert app.query_one("#panes").active == "verdict"
        path = app.query_one("#path", PathDiagram)
        assert path.origin == "middlebox" and path.proven
        text = str(app.query_one("#verdict-text").render())
        assert "VERDICT: origin MIDDLEBOX, cause injected, confidence 0.90" in text
        # first pane: the analysis step and the capture step carry the result
        await pilot.press("2")
        assert app.query_one("#panes").active == "first"
        assert step(app, "first/analysis").status == "ok"
        assert "middlebox/injected" in step(app, "first/analysis").summary
        assert step(app, "first/import").status == "done"  # two captures are in
        # second pane: tick the server-logs step by hand, with a note
        await pilot.press("3")
        assert app.focused is step(app, "second/sockets")
        await pilot.press("down", "down")
        assert app.focused is step(app, "second/server-logs")
        await pilot.press("d")
        await pilot.press("n")
        await pilot.press(*"no restart in the journal")
        await pilot.press("enter")
        assert step(app, "second/server-logs").status == "done"
        await pilot.press("down", "s")
        assert step(app, "second/tls").status == "skipped"
        # third pane, then export as Markdown
        await pilot.press("4")
        assert app.focused is step(app, "third/conntrack")
        await pilot.press("e")
        await pilot.press("m")
        await pilot.pause(0.1)
    ticket = app.last_ticket
    assert ticket is not None and ticket.is_file()
    assert ticket.stat().st_mode & 0o777 == 0o600
    got = normalise(ticket.read_text())
    golden = GOLDEN / "ticket-injected.md"
    if os.environ.get("RST_TRIAGE_UPDATE_GOLDEN") == "1":  # then review the diff and commit it
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(got)
    assert got == golden.read_text()
    # autosaved as it went: the session file has the notes and the analysis
    saved = SessionStore().load(SessionStore().path(app.findings))
    assert saved.notes["second/server-logs"].note == "no restart in the journal"
    assert saved.analysis is not None and saved.analysis["verdict"]["cause"] == "injected"


async def test_resume_restores_a_session(monkeypatch: pytest.MonkeyPatch) -> None:
    app = RstTriageApp(pcaps=injected(monkeypatch))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, lambda: app.findings.analysis is not None)
        await pilot.press("2", "down", "down", "d")
    store = SessionStore()
    latest = store.latest()
    assert latest is not None
    resumed = RstTriageApp(findings=store.load(latest), live=False)
    async with resumed.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.2)
        assert step(resumed, "first/import").status == "done"
        assert resumed.query_one("#path", PathDiagram).origin == "middlebox"


def _slow_playbook(monkeypatch: pytest.MonkeyPatch, release: threading.Event) -> list[Playbook]:
    """The built-in playbooks plus one step whose check blocks until released (30 s at most)."""

    def run(ctx: Context) -> CheckResult:
        release.wait(30)
        return CheckResult("t_slow", "slow", "ok", "finally")

    mod = types.ModuleType("tui.checks.t_slow")
    mod.TITLE = "A deliberately slow check"  # type: ignore[attr-defined]
    mod.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tui.checks.t_slow", mod)
    monkeypatch.setitem(checks.CHECKS, "t_slow", "t_slow")
    books = load_all()
    books[2].steps.insert(
        0, Step("slow", "A slow check", "to prove the UI never waits", [], "t_slow", False,
                {"ok": Outcome("fine", "nothing")}),
    )
    return books


async def test_a_slow_check_leaves_the_keys_responsive(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    books = _slow_playbook(monkeypatch, release)
    app = RstTriageApp(playbooks=books, live=False)
    async with app.run_test(size=(80, 24)) as pilot:
        app.run_check("t_slow")
        step(app, "third/slow").set_result("running", "checking…")
        await pilot.pause(0.1)
        started = time.monotonic()
        for pane in ("2", "3", "4", "5", "1", "4"):
            await pilot.press(pane)
        assert app.query_one("#panes").active == "third"
        assert step(app, "third/slow").status == "running"  # still at it
        await pilot.press("question_mark")
        assert app.screen.__class__.__name__ == "HelpScreen"
        await pilot.press("escape")
        # every key above was handled while the check was still blocked in its thread
        assert not release.is_set() and time.monotonic() - started < 25
        release.set()
        await settle(pilot, lambda: step(app, "third/slow").status == "ok")


async def test_flow_form_validates_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    app = RstTriageApp(live=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.1)
        app.query_one("#in-peer").focus()
        await pilot.press(*"10.0.0.300:443")
        err = str(app.query_one("#err-peer").render())
        assert "neither an IP address nor a valid host name" in err
        await pilot.press("enter")  # refused: stays on the form, says why
        assert app.query_one("#panes").active == "flow"
        assert app.findings.flow.peer_host is None


async def test_flow_form_starts_the_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Submitting a flow runs the real checks on this host; every automated step reports."""
    app = RstTriageApp()
    async with app.run_test(size=(80, 24)) as pilot:
        app.query_one("#in-peer").focus()
        await pilot.press(*"127.0.0.1:9")
        await pilot.press("enter")
        assert app.query_one("#panes").active == "first"
        automated = [v for v in app.query(StepView) if v.step.check in checks.CHECKS]
        await settle(pilot, lambda: all(v.status not in ("running", "pending") for v in automated), 30)
        for v in automated:
            assert v.status in ("ok", "warn", "fail", "info", "skipped", "error"), v.key
            assert v.summary
        assert app.findings.flow.peer_port == 9
        saved = json.loads(SessionStore().path(app.findings).read_text())
        assert set(saved["checks"]) >= {v.step.check for v in automated}


async def test_footer_keys_follow_the_focused_step(monkeypatch: pytest.MonkeyPatch) -> None:
    app = RstTriageApp(pcaps=injected(monkeypatch))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, lambda: app.findings.analysis is not None)
        await pilot.press("3", "down", "down")  # second/server-logs: a hand step
        shown = {k for k, b in app.active_bindings.items() if b.binding.show and b.enabled}
        assert {"d", "s", "n"} <= shown and "c" not in shown and "r" not in shown
        await pilot.press("2")  # first/route: an automated step on the capture pane
        shown = {k for k, b in app.active_bindings.items() if b.binding.show and b.enabled}
        assert {"c", "i", "r"} <= shown and "d" not in shown


async def test_import_a_capture_from_another_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """One vantage first; importing the server's capture confirms the forger."""
    client, server = injected(monkeypatch)
    app = RstTriageApp(pcaps=[client])
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, lambda: app.findings.analysis is not None)
        one = app.findings.analysis["verdict"]["confidence"]
        await pilot.press("2", "i")
        await pilot.press(*server)
        await pilot.press("enter")
        await settle(pilot, lambda: len(app.findings.captures) == 2)
        await pilot.pause(0.1)
        v = app.findings.analysis["verdict"]
        assert (v["origin"], v["cause"]) == ("middlebox", "injected") and v["confidence"] > one
        assert step(app, "first/import").status == "done"
        text = str(app.query_one("#verdict-text").render())
        assert "has this connection but not this RST" in text
        # a path that is not there: one notification, nothing lost
        await pilot.press("i", *"nope.pcap", "enter")
        await pilot.pause(0.1)
        assert len(app.findings.captures) == 2


async def test_url_in_the_form_reaches_the_keepalive_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    app = RstTriageApp(live=False)
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.check_context().url is None  # no peer, no URL: the probe is skipped
        app.query_one("#in-peer").value = "10.20.4.18:443"
        app.query_one("#in-url").value = "http://10.20.4.18:8080/health"
        await pilot.pause(0.05)  # let the fields' Changed events settle
        app.submit_flow()
        await pilot.pause(0.05)
        assert app.findings.flow.url == "http://10.20.4.18:8080/health"
        assert app.check_context().url == "http://10.20.4.18:8080/health"
        # the checks started on submit; let them report before the app goes away
        views = [v for v in app.query(StepView) if v.step.check in checks.CHECKS]
        await settle(pilot, lambda: all(v.status != "running" for v in views), 60)
