"""One pass over a capture: per-connection state, and every RST with the packets around it.

The pass touches each packet a few times only (its key, TTL, flags); whole decoding happens
afterwards, for the packets kept around each RST. Memory grows with the number of
connections, never with the number of packets: each direction keeps a ring of its last
``RING`` frames, and each RST keeps at most ``AFTER`` frames that follow it.
"""

from __future__ import annotations

import gc
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

from tui.capture_reader import ACK, FIN, RST, SYN, Capture, Frame, TcpPacket, decode, ip_str

RING = 24
AFTER = 12
MAX_RESETS = 2000  # resets kept in full per capture; beyond that they are only counted
PER_CONN_RESETS = 4  # in one connection the first resets matter; later ones are counted


class Direction:
    """Packets one address:port sent to another in one connection."""

    __slots__ = (
        "key",
        "n",
        "first_ts",
        "last_ts",
        "ttl",
        "ttl_other",
        "seen",
        "history",
        "ring",
        "watch",
        "syn",
        "data",
        "ver",
        "resets_kept",
    )

    def __init__(self, key: bytes, ts: float, ttl: int, ver: int) -> None:
        self.key = key
        self.n = 0
        self.first_ts = ts
        self.last_ts = ts
        self.ttl = ttl  # the TTL of the first packet
        self.ttl_other: dict[int, int] = {}  # other TTLs seen, with counts
        self.seen = 0  # union of TCP flags seen
        self.history: list[tuple[int, int]] = []  # (frame number, flag bit) at first sight
        self.ring: deque = deque(maxlen=RING)
        self.watch: Optional[RstSighting] = None
        self.syn: Optional[tuple] = None  # first SYN frame
        self.data = False  # payload seen
        self.ver = ver
        self.resets_kept = 0

    def ttl_counts(self) -> dict[int, int]:
        counts = dict(self.ttl_other)
        counts[self.ttl] = self.n - sum(self.ttl_other.values())
        return {t: c for t, c in counts.items() if c > 0}


@dataclass
class RstSighting:
    """A RST frame with the frames of its connection kept before and after it."""

    frame: tuple
    before: list
    after: list = field(default_factory=list)
    packet: Optional[TcpPacket] = None  # the RST, decoded once the scan is over


@dataclass
class Endpoint:
    ip: str
    port: int


@dataclass
class Conn:
    """Both directions of one connection, as far as this capture saw them."""

    a: Direction  # the originator when a SYN was seen, else the first direction seen
    b: Optional[Direction]
    orig: Endpoint
    resp: Endpoint
    syn_seen: bool

    @property
    def first_ts(self) -> float:
        return min(d.first_ts for d in self.dirs())

    @property
    def last_ts(self) -> float:
        return max(d.last_ts for d in self.dirs())

    def dirs(self) -> list[Direction]:
        return [d for d in (self.a, self.b) if d is not None]

    def sent_by(self, ip: str, port: int) -> Optional[Direction]:
        if (self.orig.ip, self.orig.port) == (ip, port):
            return self.a
        if (self.resp.ip, self.resp.port) == (ip, port):
            return self.b
        return None

    @property
    def packets(self) -> int:
        return sum(d.n for d in self.dirs())


@dataclass
class CaptureScan:
    path: str
    format: str
    linktype: str
    frames: int
    tcp_packets: int
    warnings: list[str]
    conns: list[Conn]
    resets: list[tuple[Conn, RstSighting]]
    resets_total: int
    capture: Capture  # kept open: sightings point into its mapping until close()

    def close(self) -> None:
        self.capture.close()

    def frames_of(self, conn: Conn) -> list[tuple]:
        """The frames kept for a connection (its rings and SYNs), in capture order."""
        frames = {f[0]: f for d in conn.dirs() for f in d.ring}
        for d in conn.dirs():
            if d.syn is not None:
                frames[d.syn[0]] = d.syn
        return [f if isinstance(f[3], bytes) else self.capture.detach(f) for _n, f in sorted(frames.items())]


def _key_parts(key: bytes) -> tuple[str, str, int, int]:
    n = 4 if len(key) == 12 else 16
    sport, dport = struct.unpack_from("!HH", key, 2 * n)
    return ip_str(key[:n]), ip_str(key[n : 2 * n]), sport, dport


def _reverse(key: bytes) -> bytes:
    n = 4 if len(key) == 12 else 16
    return key[n : 2 * n] + key[:n] + key[2 * n + 2 : 2 * n + 4] + key[2 * n : 2 * n + 2]


def scan(cap: Capture) -> CaptureScan:
    """Read the whole capture once and group it into connections."""
    # The loop allocates a tuple per packet and frees it soon after; it makes no reference
    # cycles, so the cyclic collector would only walk the rings again and again.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _scan(cap)
    finally:
        if enabled:
            gc.enable()


def _scan(cap: Capture) -> CaptureScan:
    dirs: dict[bytes, Direction] = {}
    resets: list[tuple[bytes, RstSighting]] = []
    resets_total = 0
    get = dirs.get
    for fr in cap.tcp_frames():
        _num, _ts, _if, buf, _l2, _link, ip, tcp, ver, _end = fr
        if ver == 4:
            key = buf[ip + 12 : ip + 24] if tcp == ip + 20 else buf[ip + 12 : ip + 20] + buf[tcp : tcp + 4]
            ttl = buf[ip + 8]
        else:
            key = buf[ip + 8 : ip + 40] + buf[tcp : tcp + 4]
            ttl = buf[ip + 7]
        d = get(key)
        if d is None:
            d = dirs[key] = Direction(key, _ts, ttl, ver)
        d.n += 1
        d.last_ts = _ts
        if ttl != d.ttl:
            d.ttl_other[ttl] = d.ttl_other.get(ttl, 0) + 1
        d.ring.append(fr)
        w = d.watch
        if w is not None:
            if len(w.after) < AFTER:
                w.after.append(fr)
            else:
                d.watch = None
        flags = buf[tcp + 13]
        if flags & 7 or not d.data:
            _rare(d, fr, flags, buf, ip, tcp, ver)
            if flags & RST:
                resets_total += 1
                if len(resets) < MAX_RESETS and d.resets_kept < PER_CONN_RESETS:
                    d.resets_kept += 1
                    rev = get(_reverse(key))
                    before = list(d.ring)[:-1] + (list(rev.ring) if rev is not None else [])
                    before.sort(key=_frame_num)
                    sighting = RstSighting(fr, before)
                    d.watch = sighting
                    if rev is not None:
                        rev.watch = sighting
                    resets.append((key, sighting))
    _detach_all(cap, dirs, resets)
    conns = _pair(dirs)
    by_key = {}
    for c in conns:
        for d in c.dirs():
            by_key[d.key] = c
    return CaptureScan(
        path=cap.path,
        format=cap.format,
        linktype=cap.linktype,
        frames=cap.frames,
        tcp_packets=sum(d.n for d in dirs.values()),
        warnings=list(cap.warnings),
        conns=conns,
        resets=[(by_key[k], s) for k, s in resets],
        resets_total=resets_total,
        capture=cap,
    )


def _detach_all(cap: Capture, dirs: dict[bytes, Direction], resets: list) -> None:
    """Copy the frames analysis needs first out of the file mapping, then unmap it.

    Ring frames stay as offsets: :meth:`CaptureScan.frames_of` reads them when asked.
    """
    copies: dict[int, tuple] = {}

    def copy(fr: tuple) -> tuple:
        c = copies.get(fr[0])
        if c is None:
            c = copies[fr[0]] = cap.detach(fr)
        return c

    for d in dirs.values():
        if d.syn is not None:
            d.syn = copy(d.syn)
        d.watch = None
    for _key, sg in resets:
        sg.frame = copy(sg.frame)
        sg.before = [copy(f) for f in sg.before]
        sg.after = [copy(f) for f in sg.after]
        sg.packet = decode_frame(sg.frame)
    cap.release_mapping()


def _frame_num(fr: tuple) -> int:
    return fr[0]


def _rare(d: Direction, fr: tuple, flags: int, buf, ip: int, tcp: int, ver: int) -> None:
    """Flags seen for the first time, the first payload, the first SYN of a direction."""
    new = flags & ~d.seen & (FIN | SYN | RST | ACK)
    if flags & SYN:
        new &= ~ACK  # a SYN-ACK is 'h' in the history, not also an 'a'
    if new:
        d.seen |= new
        for bit in (SYN, ACK, FIN, RST):
            if new & bit:
                d.history.append((fr[0], bit))
    if not d.data and _payload_len(buf, ip, tcp, ver) > 0:
        d.data = True
        d.history.append((fr[0], 0))
    if flags & SYN and d.syn is None:
        d.syn = fr


def _payload_len(buf, ip: int, tcp: int, ver: int) -> int:
    hlen = (buf[tcp + 12] >> 4) * 4
    if ver == 4:
        total = (buf[ip + 2] << 8) | buf[ip + 3]
        return total - (tcp - ip) - hlen
    plen = (buf[ip + 4] << 8) | buf[ip + 5]
    return plen - (tcp - ip - 40) - hlen


def _pair(dirs: dict[bytes, Direction]) -> list[Conn]:
    conns: list[Conn] = []
    done: set[bytes] = set()
    for key, d in dirs.items():
        if key in done:
            continue
        rkey = _reverse(key)
        r = dirs.get(rkey)
        done.add(key)
        if r is not None:
            done.add(rkey)
        a: Optional[Direction] = d
        b: Optional[Direction] = r
        syn_seen = False
        # The originator sent a SYN without ACK; fall back to the side that sent data first
        # from an ephemeral port when no SYN was captured.
        if _is_pure_syn(b) and not _is_pure_syn(a):
            a, b = b, a
        if _is_pure_syn(a):
            syn_seen = True
        elif b is not None and _is_synack(a) and not _is_synack(b):
            a, b = b, a
            syn_seen = True
        elif b is not None and _is_synack(b):
            syn_seen = True
        elif a is not None:
            a, b = _guess_orig(a, b)
        assert a is not None
        src, dst, sport, dport = _key_parts(a.key)
        conns.append(Conn(a, b, Endpoint(src, sport), Endpoint(dst, dport), syn_seen))
    return conns


def _is_pure_syn(d: Optional[Direction]) -> bool:
    return d is not None and d.syn is not None and not (d.syn[3][d.syn[7] + 13] & ACK)


def _is_synack(d: Optional[Direction]) -> bool:
    return d is not None and d.syn is not None and bool(d.syn[3][d.syn[7] + 13] & ACK)


def _guess_orig(a: Direction, b: Optional[Direction]) -> tuple[Direction, Optional[Direction]]:
    """Without a handshake, the side on the lower (service) port is the responder."""
    _, _, sport, dport = _key_parts(a.key)
    if b is not None and sport < dport and sport < 49152 and (sport < 1024 or dport >= 32768):
        return b, a
    return a, b


def decode_frame(fr: tuple) -> Optional[TcpPacket]:
    return decode(Frame(*fr))


def syn_options(fr: tuple) -> dict[int, bytes]:
    """TCP options of a (SYN) frame with their values, e.g. {3: b'\\x07'} for window scale 7."""
    buf, tcp, end = fr[3], fr[7], fr[9]
    hlen = (buf[tcp + 12] >> 4) * 4
    p, oend = tcp + 20, min(tcp + hlen, end)
    out: dict[int, bytes] = {}
    while p < oend:
        kind = buf[p]
        if kind == 0:
            break
        if kind == 1:
            p += 1
            continue
        if p + 1 >= oend or buf[p + 1] < 2:
            break
        out[kind] = bytes(buf[p + 2 : p + buf[p + 1]])
        p += buf[p + 1]
    return out
