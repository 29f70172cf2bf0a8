"""The analyzer against real resets: every lab scenario, all captures together and each alone.

The lab (tests/lab) reproduces each reset cause with real kernels, nginx and haproxy and
captures it at several vantage points; its ground truth is what the scenario did. Needs root.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.lab.netlab import REPO_ROOT, count_resets
from tests.lab.scenarios import SCENARIOS
from tests.lab.session import LabSession

pytestmark = pytest.mark.lab

SCENARIO_NAMES = list(SCENARIOS)
SCHEMA = "rst-triage/analysis/1"
CONFIDENT = 0.7  # a wrong verdict at or above this is the worst outcome (DESIGN §4)


def analyze(*captures: Path) -> dict[str, Any]:
    """`rst-triage analyze --json CAPTURE...` as a user runs it; returns the parsed JSON."""
    argv = [sys.executable, "-m", "tui", "analyze", "--json", *map(str, captures)]
    proc = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, (
        f"analyze exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    try:
        data: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        pytest.fail(f"analyze --json printed no JSON ({exc}): {proc.stdout[:500]!r}")
    assert data.get("schema") == SCHEMA
    for key in ("captures", "roles", "resets", "verdict"):
        assert key in data, f"analyze JSON lacks {key!r}"
    assert len(data["captures"]) == len(captures)
    return data


def _verdict_text(verdict: dict[str, Any]) -> str:
    return (f"origin={verdict.get('origin')} cause={verdict.get('cause')} "
            f"confidence={verdict.get('confidence')}: {verdict.get('summary')}")


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_lab_reproduces_the_reset(lab_session: LabSession, name: str) -> None:
    """Sanity of the lab itself (tshark, not the analyzer): RSTs where the scenario says."""
    result = lab_session.result(name)
    counts = {vantage: count_resets(path) for vantage, path in result.captures.items()}
    assert any(counts.values()), f"no RST in any capture: {counts}"
    for vantage, expected in result.rst_expected.items():
        if expected:
            assert counts[vantage] > 0, f"no RST at {vantage}: {counts}"
        else:
            assert counts[vantage] == 0, f"a RST at {vantage}, expected none: {counts}"


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_verdict_from_all_captures(lab_session: LabSession, name: str) -> None:
    result = lab_session.result(name)
    data = analyze(*result.captures.values())
    assert data["resets"], "the analyzer found no reset in captures that have them"
    verdict = data["verdict"]
    assert (verdict["origin"], verdict["cause"]) == (result.origin, result.cause), (
        f"expected origin={result.origin} cause={result.cause}; got {_verdict_text(verdict)}")


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_verdict_from_each_capture_alone(lab_session: LabSession, name: str) -> None:
    """One vantage may not settle it, but it must never be confidently wrong."""
    result = lab_session.result(name)
    wrong = []
    for vantage, path in result.captures.items():
        verdict = analyze(path)["verdict"]
        right = (verdict["origin"], verdict["cause"]) == (result.origin, result.cause)
        humble = verdict["origin"] == "unknown" or float(verdict["confidence"]) < CONFIDENT
        if not (right or humble):
            wrong.append(f"{vantage}: {_verdict_text(verdict)}")
    assert not wrong, (f"confidently wrong (truth: origin={result.origin} "
                       f"cause={result.cause}):\n" + "\n".join(wrong))
