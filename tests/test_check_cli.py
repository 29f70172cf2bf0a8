"""`rst-triage check` as a whole: as root, as nobody, human and JSON output, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unprivileged import nobody_python
from tui.checks import CHECKS, SLOW

REPO = Path(__file__).resolve().parents[1]
DEFAULT = [c for c in CHECKS if c not in SLOW]


def run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=60)


def results(proc: subprocess.CompletedProcess) -> dict[str, dict]:
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "rst-triage/checks/1"
    return {r["id"]: r for r in doc["results"]}


def test_check_as_nobody_completes_and_says_what_it_could_not_see() -> None:
    got = results(run([*nobody_python(), "-m", "tui", "check", "--peer", "127.0.0.1:9", "--json"]))
    assert list(got) == DEFAULT
    for r in got.values():
        assert r["status"] != "error", r  # an answer within the deadline, never a crash
        if r["status"] == "skipped":
            assert r["summary"].startswith("not checked: ") and len(r["summary"]) > 15, r
            assert r["command"], f"{r['id']}: a skipped check names the command to run by hand"
    skipped = [r["id"] for r in got.values() if r["status"] == "skipped"]
    assert "nft-rules" in skipped  # reading the ruleset needs root
    assert got["route"]["status"] != "skipped"  # and what anyone may read is still read


def test_check_as_root_human_output() -> None:
    proc = run([sys.executable, "-m", "tui", "check", "--peer", "127.0.0.1:9"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n\n", 1)[0].splitlines()  # the summary block, one per check
    words = {"PASS", "WARN", "FAIL", "INFO", "SKIP", "ERR"}
    status_lines = [line for line in lines if line.split(" ", 1)[0] in words]
    assert len(status_lines) == len(DEFAULT)
    assert not any(line.startswith("ERR") for line in status_lines), proc.stdout


@pytest.mark.parametrize(
    "args, words",
    [
        (["--only", "conntrack,nosuch"], "unknown check nosuch"),
        (["--peer", "10.0.0.1"], "expected HOST:PORT"),
        (["--window", "0"], "--window"),
        (["--iface", "nosuchif0"], "does not exist"),
        (["--url", "ftp://x/"], "only http"),
        (["--log", "/nonexistent/error.log"], "does not exist"),
    ],
)
def test_check_usage_errors(args: list[str], words: str) -> None:
    proc = run([sys.executable, "-m", "tui", "check", *args])
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and words in err[0] and "Traceback" not in proc.stderr
