"""`analyze` over the 42 real captures in shared/: no traceback, sane verdicts.

Where the packets leave no doubt (we read them with tshark), the verdict is pinned.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tui.analysis import analyze_files
from tui.model import CAUSES, ROLES

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "captures" / "real"
FILES = sorted(p for p in REAL.glob("*") if p.suffix in (".pcap", ".pcapng"))


def test_the_real_captures_are_there() -> None:
    assert len(FILES) == 42, f"expected 42 captures in {REAL}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_real_capture_analyses(path: Path) -> None:
    result = analyze_files([str(path)])
    out = result.to_json()
    json.dumps(out)  # serialisable
    assert out["captures"][0]["packets"] > 0
    assert out["resets"], "each of these captures holds at least one RST"
    for r in out["resets"]:
        assert r["origin"] in ROLES and r["cause"] in CAUSES
        assert 0.0 <= r["confidence"] <= 1.0
        assert r["evidence"] and r["evidence"][0].startswith("RST #")
        assert r["conn_state"] in ("REJ", "RSTO", "RSTR", "RSTOS0", "RSTRH")
    v = out["verdict"]
    assert v["origin"] in ROLES and v["cause"] in CAUSES and v["summary"]
    assert v["next_steps"], "a verdict always says what to do next"
    if v["origin"] != "unknown" and v["confidence"] >= 0.7:
        assert len(result.verdict.evidence) >= 2, "a confident verdict cites more than the RST"


@pytest.mark.parametrize(
    "name, origin, cause",
    [
        # SYN answered by RST,ACK (ack = seq + 1): refused.
        ("ppa_tcp_refuseconnection.pcapng", "server", "no-listener"),
        # RST TTL 46 vs the server's 49, then the real SYN-ACK arrives: forged.
        ("zeek_rst-inject-rae.pcap", "middlebox", "injected"),
        # The client's SYN followed by its own RST (TTL 64, captured on the client).
        ("zeek_tcp-syn-then-rst.pcap", "client", "abort"),
    ],
)
def test_pinned_verdicts(name: str, origin: str, cause: str) -> None:
    v = analyze_files([str(REAL / name)]).verdict
    assert (v.origin, v.cause) == (origin, cause), v.summary


def test_forged_rst_without_a_nearer_hop_stays_below_confident() -> None:
    """TTL 59 vs 123: same 5 hops, another initial TTL. Another stack, not proof of a forger."""
    v = analyze_files([str(REAL / "suri_tls-fin-close-ttl-mismatch-rst.pcap")]).verdict
    assert v.origin == "middlebox" and v.confidence < 0.7
    assert any("same distance (5 hops)" in e for e in v.evidence)


def test_all_real_captures_together_in_one_run() -> None:
    """Unrelated captures merged on one timeline must not break the merge."""
    proc = subprocess.run(
        [sys.executable, "-m", "tui", "analyze", "--json", *map(str, FILES)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    out = json.loads(proc.stdout)
    assert len(out["captures"]) == 42
    assert len(out["resets"]) >= 42
