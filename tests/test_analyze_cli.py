"""`rst-triage analyze` as a user runs it: output contract, bad input, exit codes."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "captures" / "real"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tui", *args], capture_output=True, text=True, cwd=REPO, timeout=120
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("rst-triage")
    for w in words:
        assert w in lines[0], lines[0]


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.pcap"
    p.write_bytes(b"")
    assert_one_line_error(run("analyze", str(p)), 1, "empty")


def test_garbage_file(tmp_path: Path) -> None:
    p = tmp_path / "garbage.pcap"
    p.write_bytes(b"this is not a capture at all\n" * 20)
    assert_one_line_error(run("analyze", str(p)), 1, "not a pcap or pcapng")


def test_truncated_file_header(tmp_path: Path) -> None:
    p = tmp_path / "cut.pcap"
    p.write_bytes((REAL / "zeek_tcp-syn-then-rst.pcap").read_bytes()[:13])
    assert_one_line_error(run("analyze", str(p)), 1, "truncated")


def test_unsupported_link_type(tmp_path: Path) -> None:
    p = tmp_path / "usb.pcap"
    p.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 189))
    assert_one_line_error(run("analyze", str(p)), 1, "unsupported link type 189")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    assert_one_line_error(run("analyze", str(tmp_path / "nope.pcap")), 1, "no such file")
    assert_one_line_error(run("analyze", str(tmp_path)), 1, "directory")


def test_truncated_last_record_warns_and_analyses(tmp_path: Path) -> None:
    data = (REAL / "zeek_rst-inject-rae.pcap").read_bytes()
    p = tmp_path / "tail.pcap"
    p.write_bytes(data[:-20])
    proc = run("analyze", "--json", str(p))
    assert proc.returncode == 0, proc.stderr
    assert "truncated" in proc.stderr and "Traceback" not in proc.stderr
    out = json.loads(proc.stdout)
    assert out["captures"][0]["packets"] == 8  # the 9th record was cut
    assert out["resets"], "the resets before the cut are still analysed"


@pytest.mark.parametrize(
    "args, words",
    [
        (["analyze", "x.pcap", "--client", "10.0.0.300"], ["--client", "not an IPv4 or IPv6"]),
        (["analyze", "x.pcap", "--vantage", "x.pcap"], ["FILE=ROLE"]),
        (["analyze", "x.pcap", "--vantage", "x.pcap=router"], ["ROLE must be one of"]),
        (["analyze", "x.pcap", "--vantage", "y.pcap=client"], ["not one of the captures"]),
        (["analyze"], ["CAPTURE"]),
        (["analyze", "x.pcap", "--json", "--md"], ["not allowed"]),
        (["frobnicate"], ["invalid choice"]),
    ],
)
def test_usage_errors(args: list[str], words: list[str]) -> None:
    assert_one_line_error(run(*args), 2, *words)


def test_help_teaches() -> None:
    proc = run("analyze", "--help")
    assert proc.returncode == 0
    for word in ("--vantage", "--json", "examples:", "nat-conntrack-invalid", "exit codes"):
        assert word in proc.stdout


def test_json_contract() -> None:
    proc = run("analyze", "--json", str(REAL / "zeek_rst-inject-rae.pcap"))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["schema"] == "rst-triage/analysis/1"
    assert set(out) == {"schema", "captures", "roles", "resets", "verdict"}
    cap = out["captures"][0]
    assert set(cap) == {"path", "format", "linktype", "packets", "vantage", "vantage_host"}
    assert cap["format"] == "pcap" and cap["linktype"] == "ethernet" and cap["packets"] == 9
    assert out["roles"] == {"1.2.0.2": "client", "1.2.0.3": "server"}
    assert len(out["resets"]) == 3
    r = out["resets"][0]
    assert set(r) == {
        "time", "capture", "src", "sport", "dst", "dport", "conn_state", "origin", "cause",
        "confidence", "evidence",
    }
    assert (r["src"], r["sport"], r["dst"], r["dport"]) == ("1.2.0.3", 6649, "1.2.0.2", 2527)
    assert isinstance(r["time"], float) and r["time"] > 1e9
    assert r["conn_state"] == "REJ"
    assert any("TTL 46 vs 49" in e for e in r["evidence"])
    v = out["verdict"]
    assert set(v) == {"origin", "cause", "confidence", "summary", "next_steps"}
    assert (v["origin"], v["cause"]) == ("middlebox", "injected")


def test_no_reset_means_unknown_verdict(tmp_path: Path) -> None:
    """A capture with TCP but no RST: unknown/unknown and a summary saying so."""
    src = (REAL / "zeek_rst-inject-rae.pcap").read_bytes()
    # keep the file header and the first record (the SYN) only
    caplen = struct.unpack_from("<I", src, 24 + 8)[0]
    p = tmp_path / "syn-only.pcap"
    p.write_bytes(src[: 24 + 16 + caplen])
    out = json.loads(run("analyze", "--json", str(p)).stdout)
    assert out["resets"] == []
    v = out["verdict"]
    assert (v["origin"], v["cause"], v["confidence"]) == ("unknown", "unknown", 0.0)
    assert "No TCP reset was captured" in v["summary"]
    assert v["next_steps"]


def test_text_and_markdown_outputs() -> None:
    f = str(REAL / "ppa_tcp_refuseconnection.pcapng")
    text = run("analyze", f)
    assert text.returncode == 0
    assert "Verdict: origin SERVER, cause no-listener" in text.stdout
    assert "First reset at each vantage:" in text.stdout
    md = run("analyze", "--md", f)
    assert md.stdout.startswith("## Reset analysis: server / no-listener")
    assert "| capture | frame |" in md.stdout


def test_console_script_installed() -> None:
    exe = shutil.which("rst-triage") or str(Path(sys.executable).with_name("rst-triage"))
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("rst-triage ")


def test_vantage_and_role_hints_take_effect() -> None:
    f = str(REAL / "zeek_rst-inject-rae.pcap")
    plain = json.loads(run("analyze", "--json", f).stdout)
    assert plain["captures"][0]["vantage"] == "middlebox"  # TTLs 62 and 49: neither end's own
    hinted = json.loads(
        run("analyze", "--json", f, "--vantage", f"{f}=client", "--proxy", "1.2.0.3").stdout
    )
    assert hinted["captures"][0]["vantage"] == "client"
    assert hinted["captures"][0]["vantage_host"] == "1.2.0.2"
    assert hinted["roles"]["1.2.0.3"] == "proxy"
