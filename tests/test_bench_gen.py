"""The benchmark's capture generator writes what it claims, in a form tshark accepts."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKETS, CONNECTIONS, SEED = 20_000, 100, 7


def _load_gencap() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gencap", ROOT / "bench" / "gencap.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gencap = _load_gencap()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _count_records(path: Path) -> int:
    """Walk the pcap record headers; fails on a truncated or inconsistent file."""
    data = path.read_bytes()
    magic, major, minor, _, _, snaplen, linktype = struct.unpack_from("<IHHiIII", data)
    assert (magic, major, minor, linktype) == (0xA1B2C3D4, 2, 4, 1)
    offset, count = 24, 0
    while offset < len(data):
        _, usec, incl, orig = struct.unpack_from("<IIII", data, offset)
        assert usec < 1_000_000 and incl == orig and 54 <= incl <= snaplen
        offset += 16 + incl
        count += 1
    assert offset == len(data)
    return count


@pytest.fixture(scope="module")
def tshark() -> str:
    path = shutil.which("tshark")
    if path is None:
        if os.environ.get("RST_TRIAGE_REQUIRE_LAB"):
            pytest.fail("tshark is not installed and RST_TRIAGE_REQUIRE_LAB is set")
        pytest.skip("tshark is not installed")
    return path


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, Dict[str, Any]]:
    path = tmp_path_factory.mktemp("bench") / "small.pcap"
    stats = gencap.generate(path, PACKETS, CONNECTIONS, SEED)
    return path, stats


def _tshark_lines(tshark: str, path: Path, *args: str) -> list[str]:
    proc = subprocess.run(
        [tshark, "-n", "-r", str(path), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if line.strip()]


def test_stats_describe_the_file(generated: Tuple[Path, Dict[str, Any]]) -> None:
    path, stats = generated
    assert stats["packets"] == PACKETS == _count_records(path)
    assert stats["bytes"] == path.stat().st_size
    assert stats["connections"] == CONNECTIONS
    assert sum(stats["connections_by_kind"].values()) == CONNECTIONS
    assert 0 < stats["ipv6_connections"] < CONNECTIONS
    by_kind = stats["rst_by_kind"]
    assert sum(by_kind.values()) == stats["rst_packets"]
    assert all(by_kind[kind] > 0 for kind in ("refused", "client-abort", "idle-reuse", "forged"))
    assert "RSTs" in gencap.describe(stats)


def test_exact_packet_count_at_other_sizes(tmp_path: Path) -> None:
    for packets, connections in ((500, 10), (12_345, 37)):
        stats = gencap.generate(tmp_path / "x.pcap", packets, connections, seed=3)
        assert stats["packets"] == packets == _count_records(tmp_path / "x.pcap")


def test_too_few_packets_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="too few"):
        gencap.generate(tmp_path / "x.pcap", 100, 50, seed=1)


def test_same_seed_same_bytes(tmp_path: Path, generated: Tuple[Path, Dict[str, Any]]) -> None:
    path, _ = generated
    again = gencap.generate(tmp_path / "again.pcap", PACKETS, CONNECTIONS, SEED)
    assert again["rst_packets"] == generated[1]["rst_packets"]
    assert _sha256(tmp_path / "again.pcap") == _sha256(path)
    gencap.generate(tmp_path / "other.pcap", PACKETS, CONNECTIONS, SEED + 1)
    assert _sha256(tmp_path / "other.pcap") != _sha256(path)


def test_tshark_counts_every_packet(tshark: str, generated: Tuple[Path, Dict[str, Any]]) -> None:
    path, _ = generated
    assert len(_tshark_lines(tshark, path, "-T", "fields", "-e", "frame.number")) == PACKETS


def test_tshark_finds_nothing_malformed(
    tshark: str, generated: Tuple[Path, Dict[str, Any]]
) -> None:
    path, stats = generated
    report = "\n".join(_tshark_lines(tshark, path, "-q", "-z", "expert"))
    assert "malformed" not in report.lower()
    assert "bogus" not in report.lower()
    resets = re.search(r"^\s*(\d+)\s+Sequence\s+TCP\s+Connection reset", report, re.M)
    assert resets is not None and int(resets.group(1)) == stats["rst_packets"]
    assert _tshark_lines(tshark, path, "-Y", "_ws.malformed || _ws.expert.severity >= error") == []


def test_tcp_streams_are_consistent(tshark: str, generated: Tuple[Path, Dict[str, Any]]) -> None:
    """No retransmissions, gaps, dup ACKs or ACKs of unseen data: seq/ack add up.

    A window update is expected once per forged RST: the real client's next ACK carries its
    own window again after the forged RST advertised another one.
    """
    path, stats = generated
    flagged = _tshark_lines(tshark, path, "-Y", "tcp.analysis.flags && !tcp.analysis.window_update")
    assert flagged == []
    updates = _tshark_lines(tshark, path, "-Y", "tcp.analysis.window_update")
    assert len(updates) <= stats["rst_by_kind"]["forged"]


def test_checksums_are_valid(tshark: str, generated: Tuple[Path, Dict[str, Any]]) -> None:
    path, _ = generated
    bad = _tshark_lines(
        tshark,
        path,
        "-o",
        "tcp.check_checksum:TRUE",
        "-o",
        "ip.check_checksum:TRUE",
        "-Y",
        "tcp.checksum.status != 1 || ip.checksum.status != 1",
    )
    assert bad == []


def test_rst_count_and_forged_ttls(tshark: str, generated: Tuple[Path, Dict[str, Any]]) -> None:
    path, stats = generated
    rows = _tshark_lines(
        tshark,
        path,
        "-Y",
        "tcp.flags.reset == 1",
        "-T",
        "fields",
        "-e",
        "ip.ttl",
        "-e",
        "ipv6.hlim",
    )
    assert len(rows) == stats["rst_packets"]
    normal_ttls = {"64", "57", "116"}  # the server, Linux clients, Windows clients
    odd = [row for row in rows if row.split()[0] not in normal_ttls]
    assert len(odd) == stats["rst_by_kind"]["forged"]
