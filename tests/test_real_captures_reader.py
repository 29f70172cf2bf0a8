"""Cross-check tui.capture_reader against tshark on the real-world captures in shared/.

CI checks out shared/ beside the repository clone; a missing directory (or tshark) is a failure,
not a skip, so the cross-check cannot silently vanish.
"""
from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tui.capture_reader import open_capture

REAL = Path(__file__).resolve().parents[1].parent / "shared/captures/real"
FILES = sorted(p.name for p in REAL.glob("*.pcap*")) if REAL.is_dir() else []

FIELDS = [
    "frame.number", "frame.time_epoch", "frame.interface_id", "frame.protocols",
    "eth.src", "eth.dst", "sll.src.eth", "fddi.src", "fddi.dst", "vlan.id",
    "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "ip.ttl", "ipv6.hlim", "ip.id", "ip.flags.df",
    "ip.flags.mf", "ip.frag_offset", "ipv6.fraghdr.nxt",
    "tcp.srcport", "tcp.dstport", "tcp.flags", "tcp.seq_raw", "tcp.ack_raw",
    "tcp.window_size_value", "tcp.len", "tcp.option_kind",
    "tcp.options.timestamp.tsval", "tcp.options.timestamp.tsecr",
]
PREFS = ["-o", "tcp.desegment_tcp_streams:FALSE", "-o", "ip.defragment:FALSE",
         "-o", "ipv6.defragment:FALSE"]
LINK_NAME = {"eth": "ethernet", "sll": "linux-sll", "fddi": "fddi", "null": "null"}


def tshark(*args: str) -> str:
    r = subprocess.run(["tshark", *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout


def tshark_rows(path: Path) -> list[dict]:
    out = tshark("-r", str(path), "-n", *PREFS, "-T", "fields", "-E", "separator=/t",
                 "-E", "occurrence=a", "-E", "aggregator=,",
                 *[a for f in FIELDS for a in ("-e", f)])
    rows = []
    for line in out.splitlines():
        vals = line.split("\t")
        assert len(vals) == len(FIELDS), line
        rows.append({f: [x for x in v.split(",") if x] for f, v in zip(FIELDS, vals)})
    return rows


def first(row: dict, field: str) -> str | None:
    return row[field][0] if row[field] else None


def protocols(row: dict) -> list[str]:
    return row["frame.protocols"][0].split(":") if row["frame.protocols"] else []


def outer_ip(row: dict) -> str | None:
    """'ip' or 'ipv6': the outermost IP layer of the frame, None if there is none."""
    return next((p for p in protocols(row) if p in ("ip", "ipv6")), None)


def direct_tcp(row: dict) -> bool:
    """True when the OUTERMOST IP layer carries TCP directly (IPv6 extension headers show up
    as 'ipv6.hopopts' etc. in frame.protocols). Frames where TCP only appears inside a tunnel
    (Teredo, IP-in-IP, GRE) or inside an ICMP error are not TCP to the reader, by design."""
    protos = protocols(row)
    ip = outer_ip(row)
    if ip is None:
        return False
    rest = [p for p in protos[protos.index(ip) + 1:] if not p.startswith("ipv6.")]
    return bool(rest) and rest[0] == "tcp"


def is_fragment(row: dict) -> bool:
    """IPv4 fragments (first and later ones) are skipped by the reader by contract; IPv6 first
    fragments 'may' be, so any frame with an IPv6 fragment header is left out of the comparison
    (there are none in the current set)."""
    mf = first(row, "ip.flags.mf") in ("1", "True")
    off = int(first(row, "ip.frag_offset") or 0)
    return mf or off > 0 or bool(row["ipv6.fraghdr.nxt"])


def has_rst(row: dict) -> bool:
    return any(int(f, 16) & 0x04 for f in row["tcp.flags"])


def bitswap_mac(mac: str) -> str:
    return ":".join(f"{int(f'{int(b, 16):08b}'[::-1], 2):02x}" for b in mac.split(":"))


def rst_payloads(path: Path) -> dict[int, bytes]:
    """Captured payload bytes of RST segments carrying data, straight from the frame bytes.
    (tshark shows RST data as tcp.reset_cause rather than tcp.payload, and nothing at all when
    the capture is snaplen-truncated, so locate the TCP header via tcp.hdr_len's position.)"""
    out = tshark("-r", str(path), "-n", *PREFS, "-Y", "tcp.flags.reset==1 && tcp.len>0",
                 "-T", "json", "-x")
    result = {}
    for pkt in json.loads(out or "[]"):
        layers = pkt["_source"]["layers"]
        raw = bytes.fromhex(layers["frame_raw"][0])
        tcp = layers["tcp"]
        start = tcp["tcp.hdr_len_raw"][1] - 12 + int(tcp["tcp.hdr_len"])
        result[int(layers["frame"]["frame.number"])] = raw[start:start + int(tcp["tcp.len"])]
    return result


def test_real_capture_directory_present():
    assert REAL.is_dir(), f"{REAL} is missing: shared/ must be checked out beside the repo"
    assert len(FILES) >= 30, FILES
    assert shutil.which("tshark"), "tshark is required for the real-capture cross-check"


@pytest.mark.parametrize("name", FILES)
def test_real_capture_matches_tshark(name):
    path = REAL / name
    rows = tshark_rows(path)
    with open_capture(path) as cap:
        pkts = list(cap.tcp_packets())
    by_num = {p.num: p for p in pkts}
    assert len(by_num) == len(pkts), "duplicate frame numbers"

    assert cap.frames == len(rows)
    assert cap.format == ("pcapng" if path.read_bytes()[:4] == b"\n\r\r\n" else "pcap")
    # None of these files is cut mid-record, and no packet sits on an unsupported interface
    # (zeek_ldap-gap-ipv6-vlan.pcapng declares mPacket interfaces but has no packets on them).
    assert cap.warnings == []
    links = {protocols(r)[0] for r in rows}
    for link in links:
        assert LINK_NAME[link] in cap.linktype.split(",")

    direct = {int(r["frame.number"][0]): r for r in rows if direct_tcp(r)}
    compared = {n: r for n, r in direct.items() if not is_fragment(r)}
    assert compared, "every file in the set has TCP"
    ipv6_frags = {n for n, r in direct.items() if r["ipv6.fraghdr.nxt"]}
    # exactly the frames whose outer IP carries TCP, minus fragments (IPv6 ones optional)
    assert set(by_num) - ipv6_frags == set(compared)
    # every frame the reader skipped or that is out of scope for it, justified above
    assert not set(by_num) - set(direct)

    for num, r in compared.items():
        p = by_num[num]
        v6 = outer_ip(r) == "ipv6"
        got = dict(
            ts=p.ts, iface=p.iface, ip_version=p.ip_version, src=p.src, dst=p.dst, ttl=p.ttl,
            ip_id=p.ip_id, df=p.df, sport=p.sport, dport=p.dport, flags=p.flags, seq=p.seq,
            ack=p.ack, window=p.window, payload_len=p.payload_len, options=p.options,
            tsval=p.tsval, tsecr=p.tsecr, vlan=p.vlan)
        want = dict(
            ts=pytest.approx(float(first(r, "frame.time_epoch")), abs=1e-6),
            iface=int(first(r, "frame.interface_id") or 0),
            ip_version=6 if v6 else 4,
            src=str(ipaddress.ip_address(first(r, "ipv6.src" if v6 else "ip.src"))),
            dst=str(ipaddress.ip_address(first(r, "ipv6.dst" if v6 else "ip.dst"))),
            ttl=int(first(r, "ipv6.hlim" if v6 else "ip.ttl")),
            ip_id=None if v6 else int(first(r, "ip.id"), 16),
            df=False if v6 else first(r, "ip.flags.df") in ("1", "True"),
            sport=int(first(r, "tcp.srcport")), dport=int(first(r, "tcp.dstport")),
            flags=int(first(r, "tcp.flags"), 16) & 0xFF,
            seq=int(first(r, "tcp.seq_raw")), ack=int(first(r, "tcp.ack_raw")),
            window=int(first(r, "tcp.window_size_value")),
            payload_len=int(first(r, "tcp.len")),
            options=tuple(int(k) for k in r["tcp.option_kind"] if int(k) > 1),
            tsval=int(first(r, "tcp.options.timestamp.tsval"))
            if r["tcp.options.timestamp.tsval"] else None,
            tsecr=int(first(r, "tcp.options.timestamp.tsecr"))
            if r["tcp.options.timestamp.tsecr"] else None,
            vlan=tuple(int(x) for x in r["vlan.id"]),
        )
        assert got == want, f"{name} frame {num}"

        link = protocols(r)[0]
        if link == "eth":
            assert (p.src_mac, p.dst_mac) == (first(r, "eth.src"), first(r, "eth.dst")), num
        elif link == "sll":
            assert (p.src_mac, p.dst_mac) == (first(r, "sll.src.eth"), None), num
        elif link == "fddi":
            # Wireshark treats pcap linktype 10 as "fddi-swapped" and bit-reverses the
            # addresses for display; the reader reports the bytes as stored (here the canonical
            # DECnet aa:00:04:00:xx:xx form), so compare against the bit-reversed tshark value.
            assert (p.src_mac, p.dst_mac) == (bitswap_mac(first(r, "fddi.src")),
                                              bitswap_mac(first(r, "fddi.dst"))), num
        else:
            assert (p.src_mac, p.dst_mac) == (None, None), num
        if not p.flags & 0x04:
            assert p.payload == b"", num

    # RST count equals tshark's tcp.flags.reset==1 count, minus RSTs the reader is not meant to
    # see (tunnelled/ICMP-quoted TCP, IPv4 fragments) -- zero in the current file set.
    tshark_rsts = {int(r["frame.number"][0]) for r in rows if has_rst(r)}
    out_of_scope = {n for n in tshark_rsts if n not in compared}
    assert not out_of_scope - ipv6_frags, f"RSTs out of the reader's scope: {out_of_scope}"
    ours = {p.num for p in pkts if p.flags & 0x04}
    assert ours == tshark_rsts - (out_of_scope - ours)

    rst_with_data = [n for n in ours if by_num[n].payload_len > 0]
    if rst_with_data:
        expected = rst_payloads(path)
        assert {n: by_num[n].payload for n in rst_with_data} == expected
