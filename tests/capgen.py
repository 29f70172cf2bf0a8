"""Tiny, independent pcap/pcapng writer for the capture-reader tests.

Everything is built by hand with ``struct`` so the tests cross-check the reader instead of
reusing its code (this module must never import ``tui``). Addresses are given as strings,
timestamps as raw integer ticks of the file's resolution so expectations are exact.
"""
from __future__ import annotations

import ipaddress
import struct
from typing import Iterable, Sequence, Tuple, Union

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 1, 2, 4, 8, 16, 32, 64, 128
ETH_IPV4, ETH_IPV6, ETH_ARP, ETH_8021Q, ETH_8021AD = 0x0800, 0x86DD, 0x0806, 0x8100, 0x88A8

# link-layer type numbers (pcap header / pcapng IDB)
LT_NULL, LT_ETHERNET, LT_FDDI, LT_RAW, LT_LOOP = 0, 1, 10, 101, 108
LT_SLL, LT_IPV4, LT_IPV6, LT_SLL2 = 113, 228, 229, 276


# --------------------------------------------------------------------------- link layers
def mac(s: str) -> bytes:
    return bytes.fromhex(s.replace(":", ""))


def ether(dst: str, src: str, ethertype: int, payload: bytes,
          vlans: Sequence[Tuple[int, int]] = ()) -> bytes:
    """Ethernet II; ``vlans`` is a list of (tpid, tci), outermost first."""
    tags = b"".join(struct.pack("!HH", tpid, tci) for tpid, tci in vlans)
    return mac(dst) + mac(src) + tags + struct.pack("!H", ethertype) + payload


def sll(proto: int, payload: bytes, addr: bytes = b"", pkttype: int = 0, hatype: int = 1) -> bytes:
    """Linux cooked v1 (16-byte header)."""
    return (struct.pack("!HHH", pkttype, hatype, len(addr)) + addr[:8].ljust(8, b"\0")
            + struct.pack("!H", proto) + payload)


def sll2(proto: int, payload: bytes, addr: bytes = b"", ifindex: int = 3, pkttype: int = 4,
         hatype: int = 1) -> bytes:
    """Linux cooked v2 (20-byte header)."""
    return (struct.pack("!HHIHBB", proto, 0, ifindex, hatype, pkttype, len(addr))
            + addr[:8].ljust(8, b"\0") + payload)


def null(af: int, payload: bytes, order: str = "<") -> bytes:
    """BSD loopback: 4-byte address family in the capturing host's byte order (DLT_NULL) or
    network order (DLT_LOOP, use order='>')."""
    return struct.pack(order + "I", af) + payload


def fddi(dst: str, src: str, ethertype: int, payload: bytes, fc: int = 0x50) -> bytes:
    """FDDI: frame control + dst + src (13 bytes), then 802.2 LLC/SNAP."""
    return (bytes([fc]) + mac(dst) + mac(src) + b"\xaa\xaa\x03\x00\x00\x00"
            + struct.pack("!H", ethertype) + payload)


# --------------------------------------------------------------------------- IP / TCP
def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src: str, dst: str, payload: bytes, proto: int = 6, ttl: int = 64, ident: int = 0,
         df: bool = False, mf: bool = False, frag: int = 0, options: bytes = b"",
         total_len: int | None = None) -> bytes:
    """IPv4 with a valid header checksum; ``frag`` is the offset in 8-byte units."""
    options = options + b"\0" * (-len(options) % 4)
    ihl = 5 + len(options) // 4
    tl = 4 * ihl + len(payload) if total_len is None else total_len
    fl = (0x4000 if df else 0) | (0x2000 if mf else 0) | frag
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, tl, ident, fl, ttl, proto, 0,
                      ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    hdr += options
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return hdr + payload


Ext = Tuple[int, bytes]


def frag6(offset: int, more: bool, ident: int = 0x1234) -> Ext:
    """IPv6 fragment extension header; ``offset`` in 8-byte units."""
    return (44, struct.pack("!HI", (offset << 3) | int(more), ident))


def ipv6(src: str, dst: str, payload: bytes, nh: int = 6, hlim: int = 64,
         ext: Sequence[Ext] = ()) -> bytes:
    """IPv6; ``ext`` is a list of (type, body) extension headers in order. Bodies of
    hop-by-hop (0) / routing (43) / dest-opts (60) are zero-padded (Pad1) to a multiple of 8."""
    chain = b""
    for i, (typ, body) in enumerate(ext):
        nxt = ext[i + 1][0] if i + 1 < len(ext) else nh
        if typ == 44:
            chain += bytes([nxt, 0]) + body
        else:
            body = body + b"\0" * (-(len(body) + 2) % 8)
            chain += bytes([nxt, (len(body) + 2) // 8 - 1]) + body
    first = ext[0][0] if ext else nh
    rest = chain + payload
    return (struct.pack("!IHBB", 0x60000000, len(rest), first, hlim)
            + ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed + rest)


Opt = Union[int, Tuple[int, bytes]]


def opt_mss(v: int) -> Opt:
    return (2, struct.pack("!H", v))


def opt_ws(v: int) -> Opt:
    return (3, bytes([v]))


def opt_ts(val: int, ecr: int) -> Opt:
    return (8, struct.pack("!II", val, ecr))


OPT_SACKOK: Opt = (4, b"")


def tcp(sport: int, dport: int, flags: int, seq: int = 0, ack: int = 0, window: int = 65535,
        options: Iterable[Opt] = (), payload: bytes = b"") -> bytes:
    """TCP; options are ints (0 EOL / 1 NOP) or (kind, data); padded with EOL. No checksum."""
    ob = b"".join(bytes([o]) if isinstance(o, int) else bytes([o[0], len(o[1]) + 2]) + o[1]
                  for o in options)
    ob += b"\0" * (-len(ob) % 4)
    doff = (20 + len(ob)) // 4
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, window, 0,
                       0) + ob + payload


def udp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


# --------------------------------------------------------------------------- files
# A pcap record: (ts_sec, ts_frac, data) or (ts_sec, ts_frac, data, orig_len); ts_frac is in
# microseconds, or nanoseconds when nsec=True. Pass truncated data + larger orig_len to mimic
# a snaplen-limited capture.
Rec = Tuple


def pcap_header(linktype: int = LT_ETHERNET, order: str = "<", nsec: bool = False,
                snaplen: int = 262144) -> bytes:
    magic = 0xA1B23C4D if nsec else 0xA1B2C3D4
    return struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)


def pcap_record(rec: Rec, order: str = "<") -> bytes:
    sec, frac, data = rec[0], rec[1], rec[2]
    orig = rec[3] if len(rec) > 3 else len(data)
    return struct.pack(order + "IIII", sec, frac, len(data), orig) + data


def pcap(records: Iterable[Rec], linktype: int = LT_ETHERNET, order: str = "<",
         nsec: bool = False, snaplen: int = 262144) -> bytes:
    return pcap_header(linktype, order, nsec, snaplen) + b"".join(
        pcap_record(r, order) for r in records)


def _pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


class Pcapng:
    """Block-by-block pcapng builder. ``shb()`` starts a section (optionally switching byte
    order); timestamps are raw ticks of the interface's if_tsresol."""

    def __init__(self, order: str = "<"):
        self.order = order
        self.out = bytearray()

    def _opts(self, opts: Sequence[Tuple[int, bytes]]) -> bytes:
        if not opts:
            return b""
        o = self.order
        return b"".join(struct.pack(o + "HH", c, len(v)) + _pad4(v) for c, v in opts) + \
            struct.pack(o + "HH", 0, 0)

    def block(self, btype: int, body: bytes) -> Pcapng:
        body = _pad4(body)
        total = 12 + len(body)
        self.out += struct.pack(self.order + "II", btype, total) + body + \
            struct.pack(self.order + "I", total)
        return self

    def shb(self, order: str | None = None, options: Sequence[Tuple[int, bytes]] = ()) -> Pcapng:
        if order:
            self.order = order
        body = struct.pack(self.order + "IHHq", 0x1A2B3C4D, 1, 0, -1) + self._opts(options)
        return self.block(0x0A0D0D0A, body)

    def idb(self, linktype: int, snaplen: int = 0, tsresol: int | None = None,
            name: str | None = None, tsoffset: int | None = None) -> Pcapng:
        opts = []
        if tsoffset is not None:
            opts.append((14, struct.pack(self.order + "q", tsoffset)))
        if name is not None:
            opts.append((2, name.encode()))
        if tsresol is not None:
            opts.append((9, bytes([tsresol])))
        body = struct.pack(self.order + "HHI", linktype, 0, snaplen) + self._opts(opts)
        return self.block(1, body)

    def epb(self, iface: int, ticks: int, data: bytes, orig_len: int | None = None,
            options: Sequence[Tuple[int, bytes]] = ()) -> Pcapng:
        orig = len(data) if orig_len is None else orig_len
        body = struct.pack(self.order + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF,
                           len(data), orig) + _pad4(data) + self._opts(options)
        return self.block(6, body)

    def spb(self, data: bytes, orig_len: int | None = None) -> Pcapng:
        orig = len(data) if orig_len is None else orig_len
        return self.block(3, struct.pack(self.order + "I", orig) + _pad4(data))

    def pb(self, iface: int, ticks: int, data: bytes, orig_len: int | None = None) -> Pcapng:
        """Obsolete Packet Block (type 2)."""
        orig = len(data) if orig_len is None else orig_len
        body = struct.pack(self.order + "HHIIII", iface, 0, ticks >> 32, ticks & 0xFFFFFFFF,
                           len(data), orig) + _pad4(data)
        return self.block(2, body)

    def nrb(self) -> Pcapng:
        """A Name Resolution Block (ignored by packet readers)."""
        rec = struct.pack(self.order + "HH", 1, 4 + 5) + b"\x0a\x00\x00\x01host\0"
        return self.block(4, _pad4(rec) + struct.pack(self.order + "HH", 0, 0))

    def isb(self, iface: int = 0) -> Pcapng:
        """An Interface Statistics Block (ignored by packet readers)."""
        return self.block(5, struct.pack(self.order + "III", iface, 0, 0))

    def bytes(self) -> bytes:
        return bytes(self.out)
