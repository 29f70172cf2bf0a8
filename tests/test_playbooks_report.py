"""Playbooks as data (validation, user playbooks), the ticket (formats, redaction, report CLI),
and the app's start-up promises (lazy imports, NO_COLOR)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tui.analysis import analyze_files
from tui.findings import CaptureRef, Findings, Flow, SessionStore, StepNote, sha256_of
from tui.playbooks import PlaybookError, load_all
from tui.report import Redactor, render, verdict_of

REPO = Path(__file__).resolve().parents[1]
LAB = REPO / "tests" / "fixtures" / "lab"

GOOD = """
id = "mine"
title = "Our own checks"
[[steps]]
id = "lb"
title = "Ask the LB team"
why = "They own the idle timeout."
commands = ["ssh lb1 show timeouts"]
manual = true
[steps.outcomes.done]
meaning = "Asked."
decision = "Compare with the pool."
"""


def test_builtin_playbooks_load_in_order() -> None:
    books = load_all(extra_dir=Path("/nonexistent"))
    assert [b.id for b in books] == ["first", "second", "third"]
    checks = {s.check for b in books for s in b.steps}
    assert {"route", "capture", "analysis", "conntrack", "keepalive", "nft-rules"} <= checks
    for b in books:
        for s in b.steps:
            assert s.why and (s.manual or s.check) and s.outcomes


def test_user_playbooks_are_added(tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text(GOOD)
    books = load_all(extra_dir=tmp_path)
    assert [b.id for b in books] == ["first", "second", "third", "mine"]
    assert books[3].steps[0].outcome("done").decision == "Compare with the pool."


@pytest.mark.parametrize(
    "change, words",
    [
        (
            lambda t: t.replace('why = "They own the idle timeout."\n', ""),
            "steps[0] (lb): 'why' must be a non-empty string",
        ),
        (lambda t: t.replace("manual = true", 'check = "nosuch"'), "unknown check 'nosuch'"),
        (
            lambda t: t.replace("[steps.outcomes.done]", "[steps.outcomes.maybe]"),
            "outcome 'maybe' is not one of",
        ),
        (
            lambda t: t.replace("manual = true", 'manual = true\ncheck = "route"'),
            "cannot also name a 'check'",
        ),
        (lambda t: t.replace('id = "mine"', 'id = "first"'), "already used by another playbook"),
        (lambda t: t + "\n[[steps\n", "not valid TOML"),
    ],
)
def test_bad_playbook_names_file_and_field(tmp_path: Path, change, words: str) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(change(GOOD))
    with pytest.raises(PlaybookError) as e:
        load_all(extra_dir=tmp_path)
    msg = str(e.value)
    assert str(path) in msg and words in msg, msg


def test_bad_playbook_stops_the_app_with_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "rst-triage" / "playbooks"
    cfg.mkdir(parents=True)
    (cfg / "broken.toml").write_text("id = 3\n")
    proc = subprocess.run(
        [sys.executable, "-m", "tui"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "XDG_CONFIG_HOME": str(tmp_path), "HOME": str(tmp_path)},
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "broken.toml: 'id' must be a non-empty string" in lines[0]


def _findings() -> Findings:
    paths = [str(LAB / "injected-client.pcap"), str(LAB / "injected-server.pcap")]
    f = Findings.new()
    f.flow = Flow(peer_host="10.201.3.10", peer_port=8006, client="10.201.1.10")
    result = analyze_files(paths)
    f.analysis = result.to_json()
    f.captures = [
        CaptureRef(c.path, sha256_of(c.path), c.packets, c.resets_total, c.vantage) for c in result.captures
    ]
    f.notes["second/server-logs"] = StepNote("done", "nothing at 10.201.3.10 in the journal", time.time())
    f.checks["conntrack"] = {
        "id": "conntrack",
        "title": "Conntrack",
        "status": "ok",
        "summary": "12/262144 entries",
        "command": "conntrack -C",
    }
    return f


def test_ticket_formats() -> None:
    f = _findings()
    md = render(f, "md")
    assert md.startswith(
        "## Connection resets (peer 10.201.3.10:8006, client 10.201.1.10): reset from the middlebox"
    )
    for part in (
        "### Verdict",
        "### First reset at each vantage",
        "### Checks",
        "`conntrack -C`",
        "### Notes from the playbooks",
        "### Next steps",
        "### Capture files",
        f.captures[0].sha256,
    ):
        assert part in md
    jira = render(f, "jira")
    assert (
        jira.startswith("h2. Connection resets")
        and "||capture||time||" in jira
        and "{{conntrack -C}}" in jira
    )
    doc = json.loads(render(f, "json"))
    assert doc["schema"] == "rst-triage/ticket/1" and doc["verdict"]["cause"] == "injected"
    assert doc["findings"]["captures"][0]["sha256"] == f.captures[0].sha256


def test_redaction_is_consistent_and_complete() -> None:
    f = _findings()
    plain = render(f, "md")
    red = render(f, "md", redact=True)
    for addr in ("10.201.3.10", "10.201.1.10"):
        assert addr in plain and addr not in red
    # one address, one pseudonym, everywhere (notes included)
    n = plain.count("10.201.3.10")
    assert red.count("ip-1") >= n and "nothing at ip-1 in the journal" in red
    assert f.host not in red
    assert (
        Redactor(f).apply("fd00:201:1::10 and fd00:201:1:0::10 and 2001:db8::1")
        == "ip6-1 and ip6-1 and ip6-2"
    )


def test_suspects_without_packets_stay_below_half() -> None:
    f = Findings.new()
    f.checks["keepalive"] = {
        "id": "keepalive",
        "title": "HTTP keep-alive",
        "status": "fail",
        "summary": "server closes idle connections after 5 s; the client pool keeps them 90 s",
        "decision": "lower the pool idle timeout",
    }
    v = verdict_of(f)
    assert (v["origin"], v["cause"]) == ("server", "idle-close-reuse")
    assert v["confidence"] <= 0.5 and not v["proven"] and v["summary"].startswith("Suspects only")


def test_report_cli_from_the_autosaved_session(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "XDG_STATE_HOME": str(tmp_path), "HOME": str(tmp_path)}
    none = subprocess.run(
        [sys.executable, "-m", "tui", "report"], capture_output=True, text=True, cwd=REPO, env=env, timeout=60
    )
    assert none.returncode == 1 and "no saved session" in none.stderr
    SessionStore(tmp_path / "rst-triage").save(_findings())
    out = tmp_path / "ticket.txt"
    proc = subprocess.run(
        [sys.executable, "-m", "tui", "report", "--format", "jira", "--redact", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    text = out.read_text()
    assert text.startswith("h2. Connection resets") and "10.201." not in text


def test_the_app_module_imports_nothing_heavy() -> None:
    code = (
        "import sys, tui.app, tui.cli; "
        "print([m for m in ('scapy', 'pyroute2', 'httpx', 'tui.analysis', 'tui.checks') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


async def test_no_color_is_honoured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tui.app import RstTriageApp

    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    app = RstTriageApp(pcaps=[str(LAB / "injected-client.pcap")])
    async with app.run_test(size=(80, 24)) as pilot:
        while app.findings.analysis is None:
            await pilot.pause(0.05)
        await pilot.press("2")
        assert app.no_color
        screen = app.export_screenshot()
        assert "PASS" in screen  # the status is in words, not in colour


def test_report_out_over_an_existing_file_makes_it_private(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "XDG_STATE_HOME": str(tmp_path), "HOME": str(tmp_path)}
    SessionStore(tmp_path / "rst-triage").save(_findings())
    out = tmp_path / "ticket.md"
    out.write_text("old")
    out.chmod(0o644)
    proc = subprocess.run([sys.executable, "-m", "tui", "report", "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_mode & 0o777 == 0o600 and out.read_text().startswith("## Connection resets")
