"""Streaming reader for pcap and pcapng captures, TCP over IPv4/IPv6 only.

Pure Python on ``struct``: the file is read in fixed-size chunks, so memory stays flat however
large the capture is. Two levels are offered:

* :meth:`Capture.tcp_frames` yields the location of each TCP segment inside the current chunk
  (cheap; the analysis uses it to scan millions of packets);
* :meth:`Capture.tcp_packets` yields decoded :class:`TcpPacket` tuples.

Every expected problem (missing file, empty, garbage, truncated header, unknown link type)
raises :class:`CaptureError` with a one-line message. A truncated last record is not an error:
the packets before it are yielded and a warning is recorded.
"""

from __future__ import annotations

import mmap
import os
import socket
import struct
from typing import IO, Iterator, NamedTuple, Optional, Union

_RELEASE = 1 << 24  # drop pages already parsed every 16 MiB, so RSS stays flat
MAX_RECORD = 1 << 26  # a record or block bigger than 64 MiB means the file is corrupt

LINKTYPE_NAMES = {
    0: "null",
    1: "ethernet",
    10: "fddi",
    12: "raw",
    14: "raw",
    101: "raw",
    108: "loop",
    113: "linux-sll",
    228: "ipv4",
    229: "ipv6",
    276: "linux-sll2",
}

# Link-layer decoding strategies (small ints keep the hot loop cheap).
L_ETH, L_NULL, L_LOOP, L_RAW, L_IPV4, L_IPV6, L_SLL, L_SLL2, L_FDDI = range(9)
_LINK_KIND = {
    0: L_NULL,
    1: L_ETH,
    10: L_FDDI,
    12: L_RAW,
    14: L_RAW,
    101: L_RAW,
    108: L_LOOP,
    113: L_SLL,
    228: L_IPV4,
    229: L_IPV6,
    276: L_SLL2,
}
_VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
_AF_INET6_VALUES = (10, 24, 28, 30)  # Linux, BSD, FreeBSD, macOS

FIN, SYN, RST, PSH, ACK, URG = 1, 2, 4, 8, 16, 32


Buf = Union[bytes, mmap.mmap]


class CaptureError(Exception):
    """A capture that cannot be read; ``str(err)`` is one line for the user."""


class TcpPacket(NamedTuple):
    num: int
    ts: float
    iface: int
    src_mac: Optional[str]
    dst_mac: Optional[str]
    ip_version: int
    src: str
    dst: str
    ttl: int
    ip_id: Optional[int]
    df: bool
    sport: int
    dport: int
    flags: int
    seq: int
    ack: int
    window: int
    options: tuple
    tsval: Optional[int]
    tsecr: Optional[int]
    payload_len: int
    payload: bytes
    vlan: tuple


class Frame(NamedTuple):
    """Where a TCP segment sits in the reader's current chunk (valid until the next frame)."""

    num: int
    ts: float
    iface: int
    buf: Buf
    l2off: int
    link: int
    ipoff: int
    tcpoff: int
    ipver: int
    end: int


def _mac(b: bytes) -> str:
    return b.hex(":")


def ip_str(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


_PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"


class _Iface:
    __slots__ = ("linktype", "kind", "scale", "offset", "snaplen")

    def __init__(self, linktype: int, snaplen: int) -> None:
        self.linktype = linktype
        self.kind = _LINK_KIND.get(linktype)
        self.scale = 1e-6
        self.offset = 0
        self.snaplen = snaplen


class Capture:
    """One capture file. Iterate :meth:`tcp_packets` (or :meth:`tcp_frames`) once per pass."""

    def __init__(self, path: str) -> None:
        self.path = str(path)
        self.frames = 0
        self.warnings: list[str] = []
        self._ifaces: list[_Iface] = []  # interfaces of the current pcapng section
        self._all_ifaces: list[_Iface] = []  # every interface of the file, in order
        self._mm: Optional[mmap.mmap] = None
        try:
            if os.path.isdir(self.path):
                raise CaptureError(f"{self.path}: is a directory, not a capture file")
            self._f: IO[bytes] = open(self.path, "rb")
        except CaptureError:
            raise
        except FileNotFoundError:
            raise CaptureError(f"{self.path}: no such file") from None
        except PermissionError:
            raise CaptureError(f"{self.path}: permission denied (try sudo, or copy the file)") from None
        except OSError as e:
            raise CaptureError(f"{self.path}: cannot open: {e.strerror}") from None
        head = self._f.read(28)
        if not head:
            self.close()
            raise CaptureError(f"{self.path}: empty file, no packets to analyse")
        magic = head[:4]
        if magic in _PCAP_MAGIC:
            self.format = "pcap"
            if len(head) < 24:
                self.close()
                raise CaptureError(f"{self.path}: truncated pcap file header ({len(head)} of 24 bytes)")
            self._endian, scale = _PCAP_MAGIC[magic]
            snaplen, linktype = struct.unpack(self._endian + "16xII", head[:24])
            linktype &= 0x0FFFFFFF  # upper bits may carry FCS information
            iface = _Iface(linktype, snaplen)
            iface.scale = scale
            if iface.kind is None:
                self.close()
                raise CaptureError(
                    f"{self.path}: unsupported link type {linktype}"
                    " (supported: Ethernet, Linux cooked SLL/SLL2, raw IP, loopback, FDDI)"
                )
            self._ifaces.append(iface)
            self._all_ifaces.append(iface)
        elif magic == _PCAPNG_SHB:
            self.format = "pcapng"
            if len(head) < 28:
                self.close()
                raise CaptureError(f"{self.path}: truncated pcapng section header ({len(head)} of 28 bytes)")
            bom = head[8:12]
            if bom not in (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"):
                self.close()
                raise CaptureError(f"{self.path}: not a capture file (bad pcapng byte-order magic)")
        else:
            self.close()
            raise CaptureError(f"{self.path}: not a pcap or pcapng capture (starts with {head[:4].hex()})")
        self._f.seek(0)
        self._scanned = False

    # -- public -----------------------------------------------------------------------------

    @property
    def linktype(self) -> str:
        names: list[str] = []
        for i in self._all_ifaces:
            name = LINKTYPE_NAMES.get(i.linktype, f"linktype-{i.linktype}")
            if name not in names:
                names.append(name)
        if not names and self.format == "pcapng" and not self._scanned:
            self._peek_pcapng_interfaces()
            return self.linktype if self._all_ifaces else "unknown"
        return ",".join(names) or "unknown"

    def release_mapping(self) -> None:
        """Unmap the file (frames from :meth:`detach` stay valid; others do not)."""
        mm = getattr(self, "_mm", None)
        if mm is not None:
            mm.close()
            self._mm = None

    def close(self) -> None:
        self.release_mapping()
        f = getattr(self, "_f", None)
        if f is not None:
            f.close()

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def tcp_frames(self) -> Iterator[tuple]:
        """Iterate ``(num, ts, iface, buf, l2off, link, ipoff, tcpoff, ipver, end)`` per TCP segment.

        A plain tuple (see :class:`Frame` for the field names) because this is the hot path;
        ``buf`` is the file's mapping and stays valid until :meth:`release_mapping`.
        """
        self.frames = 0
        self.warnings = []
        self._scanned = True
        mm = self._map()
        if mm is None:
            return iter(())
        if self.format == "pcap":
            return self._pcap_frames(mm)
        return self._pcapng_frames(mm)

    def _pcapng_frames(self, mm: mmap.mmap) -> Iterator[tuple]:
        self._ifaces = []
        self._all_ifaces = []
        for num, ts, iface, buf, off, caplen in self._pcapng_records(mm):
            kind = self._ifaces[iface].kind
            end = off + caplen
            loc = _locate(kind, buf, off, end)
            if loc is not None:
                yield num, ts, iface, buf, off, kind, loc[0], loc[1], loc[2], end

    def detach(self, fr: tuple) -> tuple:
        """A copy of frame ``fr`` that no longer points into the mapping.

        Read with pread, not through the mapping: touching scattered pages of a released
        mapping would map them (and their neighbours) back and grow the resident set.
        """
        num, ts, iface, _buf, l2, link, ip, tcp, ver, end = fr
        # headers only (TCP's are at most 60 bytes), and the payload of a RST
        data = os.pread(self._f.fileno(), min(end, tcp + 60) - l2, l2)
        if len(data) > tcp - l2 + 13 and data[tcp - l2 + 13] & RST and end > tcp + 60:
            data = os.pread(self._f.fileno(), end - l2, l2)
        return (num, ts, iface, data, 0, link, ip - l2, tcp - l2, ver, l2 + len(data) - l2)

    def tcp_packets(self) -> Iterator[TcpPacket]:
        for fr in self.tcp_frames():
            pkt = decode(Frame(*fr))
            if pkt is not None:
                yield pkt

    def _map(self) -> Optional[mmap.mmap]:
        """The file mapped read-only; it stays open (frames point into it) until close()."""
        if self._mm is None:
            size = os.fstat(self._f.fileno()).st_size
            if size == 0:
                return None
            self._mm = mmap.mmap(self._f.fileno(), 0, access=mmap.ACCESS_READ)
        return self._mm

    # -- pcap -------------------------------------------------------------------------------

    def _pcap_frames(self, mm: mmap.mmap) -> Iterator[tuple]:
        unpack = struct.Struct(self._endian + "IIII").unpack_from
        itf = self._ifaces[0]
        scale, kind = itf.scale, itf.kind
        eth = kind == L_ETH
        n = len(mm)
        pos = 24
        num = 0
        release_at = _RELEASE
        locate = _locate
        eth_ip = _ETH_IP.unpack_from
        try:
            while pos + 16 <= n:
                sec, frac, caplen, _origlen = unpack(mm, pos)
                off = pos + 16
                end = off + caplen
                if end > n or caplen > MAX_RECORD:
                    break
                pos = end
                num += 1
                if pos > release_at:
                    release_at = _release(mm, pos) + _RELEASE
                # Fast path: Ethernet, IPv4 without options, TCP, not a fragment.
                if eth and caplen >= 54:
                    et, vihl, frag, proto = eth_ip(mm, off)
                    if et == 0x0800 and vihl == 0x45 and proto == 6 and not frag & 0x3FFF:
                        self.frames = num
                        yield num, sec + frac * scale, 0, mm, off, L_ETH, off + 14, off + 34, 4, end
                        continue
                loc = locate(kind, mm, off, end)
                if loc is not None:
                    self.frames = num
                    yield num, sec + frac * scale, 0, mm, off, kind, loc[0], loc[1], loc[2], end
        finally:
            self.frames = num
        if pos + 16 <= n:
            (caplen,) = struct.unpack_from(self._endian + "I", mm, pos + 8)
            if caplen > MAX_RECORD:
                self._corrupt(num, f"record {num + 1} claims {caplen} bytes")
                return
        if pos < n:
            self._truncated(num, n - pos)

    # -- pcapng -----------------------------------------------------------------------------

    def _pcapng_blocks(self, mm: mmap.mmap) -> Iterator[tuple[int, mmap.mmap, int, int, str]]:
        """Yield (type, buf, body_start, body_end, endian) for each block."""
        n = len(mm)
        pos = 0
        endian = "<"
        released = 0
        while pos < n:
            if n - pos < 12:
                self._truncated(self.frames, n - pos)
                return
            if mm[pos : pos + 4] == _PCAPNG_SHB:
                bom = mm[pos + 8 : pos + 12]
                if bom == b"\x4d\x3c\x2b\x1a":
                    endian = "<"
                elif bom == b"\x1a\x2b\x3c\x4d":
                    endian = ">"
                else:
                    self._corrupt(self.frames, "bad section header byte-order magic")
                    return
                self._ifaces = []
            elif pos == 0:
                raise CaptureError(f"{self.path}: pcapng file does not start with a section header")
            btype, blen = struct.unpack_from(endian + "II", mm, pos)
            if blen < 12 or blen % 4 or blen > MAX_RECORD:
                self._corrupt(self.frames, f"block of {blen} bytes")
                return
            if pos + blen > n:
                self._truncated(self.frames, n - pos)
                return
            yield btype, mm, pos + 8, pos + blen - 4, endian
            pos += blen
            if pos - released > _RELEASE:
                released = _release(mm, pos)

    def _pcapng_records(self, mm: mmap.mmap) -> Iterator[tuple[int, float, int, mmap.mmap, int, int]]:
        num = 0
        section = 0
        warned: set[tuple[int, int]] = set()
        bad_length = False
        for btype, buf, start, end, endian in self._pcapng_blocks(mm):
            if btype == 0x0A0D0D0A:
                section += 1
            elif btype == 6 or btype == 2:  # enhanced packet / obsolete packet block
                if btype == 6:
                    if end - start < 20:
                        continue
                    iface, hi, lo, caplen, _ = struct.unpack_from(endian + "IIIII", buf, start)
                else:
                    if end - start < 20:
                        continue
                    iface, _drops, hi, lo, caplen, _ = struct.unpack_from(endian + "HHIIII", buf, start)
                data = start + 20
                num += 1
                self.frames = num
                if data + caplen > end:
                    if not bad_length:
                        bad_length = True
                        self.warnings.append(
                            f"{self.path}: packet {num} claims {caplen} bytes but its block holds"
                            f" {end - data}; such packets were skipped"
                        )
                    continue
                if iface >= len(self._ifaces):
                    continue
                itf = self._ifaces[iface]
                if itf.kind is None:
                    if (section, iface) not in warned:
                        warned.add((section, iface))
                        self.warnings.append(
                            f"interface {iface} has unsupported link type {itf.linktype};"
                            " its packets were skipped"
                        )
                    continue
                ts = ((hi << 32) | lo) * itf.scale + itf.offset
                yield num, ts, iface, buf, data, caplen
            elif btype == 3:  # simple packet block: interface 0, no timestamp
                num += 1
                self.frames = num
                if not self._ifaces or self._ifaces[0].kind is None or end - start < 4:
                    continue
                (origlen,) = struct.unpack_from(endian + "I", buf, start)
                caplen = min(origlen, end - start - 4)
                if self._ifaces[0].snaplen:
                    caplen = min(caplen, self._ifaces[0].snaplen)
                yield num, 0.0, 0, buf, start + 4, caplen
            elif btype == 1:  # interface description
                if end - start < 8:
                    continue
                linktype, _, snaplen = struct.unpack_from(endian + "HHI", buf, start)
                itf = _Iface(linktype, snaplen)
                _read_idb_options(itf, buf, start + 8, end, endian)
                self._ifaces.append(itf)
                self._all_ifaces.append(itf)
        if self._all_ifaces and all(i.kind is None for i in self._all_ifaces):
            kinds = sorted({str(i.linktype) for i in self._all_ifaces})
            raise CaptureError(
                f"{self.path}: unsupported link type {', '.join(kinds)}"
                " (supported: Ethernet, Linux cooked SLL/SLL2, raw IP, loopback, FDDI)"
            )

    def _peek_pcapng_interfaces(self) -> None:
        """Read interface descriptions up to the first packet (for ``linktype``)."""
        self._ifaces = []
        self._all_ifaces = []
        mm = self._map()
        if mm is None:
            return
        try:
            for btype, buf, start, end, endian in self._pcapng_blocks(mm):
                if btype == 1 and end - start >= 8:
                    linktype, _, snaplen = struct.unpack_from(endian + "HHI", buf, start)
                    self._all_ifaces.append(_Iface(linktype, snaplen))
                elif btype in (2, 3, 6):
                    break
        finally:
            self.warnings = []
            self.frames = 0

    # -- problems ---------------------------------------------------------------------------

    def _truncated(self, frames: int, nbytes: int) -> None:
        if frames == 0 and self.format == "pcap":
            raise CaptureError(
                f"{self.path}: truncated: the first packet record is cut short ({nbytes} bytes)"
            )
        self.warnings.append(
            f"{self.path}: truncated: the last record is cut short ({nbytes} bytes);"
            f" analysed the {frames} packets before it"
        )

    def _corrupt(self, frames: int, what: str) -> None:
        if frames == 0:
            raise CaptureError(f"{self.path}: corrupt capture: {what}")
        self.warnings.append(
            f"{self.path}: corrupt data after packet {frames} ({what}); analysed the packets before it"
        )


def _read_idb_options(itf: _Iface, buf: Buf, pos: int, end: int, endian: str) -> None:
    while pos + 4 <= end:
        code, length = struct.unpack_from(endian + "HH", buf, pos)
        if code == 0:
            break
        val = pos + 4
        if val + length > end:
            break
        if code == 9 and length >= 1:  # if_tsresol
            r = buf[val]
            itf.scale = 2.0 ** -(r & 0x7F) if r & 0x80 else 10.0**-r
        elif code == 14 and length >= 8:  # if_tsoffset, seconds
            (itf.offset,) = struct.unpack_from(endian + "q", buf, val)
        pos = val + ((length + 3) & ~3)


def _release(mm: mmap.mmap, upto: int) -> int:
    """Tell the kernel we are done with ``[0, upto)``; return ``upto`` rounded to a page.

    Always from 0: releasing only the newest window left a slowly growing residue mapped
    (measured: +1 MB per 8 MB read on kernel 6.18 with large page-cache folios).
    """
    upto -= upto % mmap.PAGESIZE
    if upto > 0 and hasattr(mm, "madvise"):
        mm.madvise(mmap.MADV_DONTNEED, 0, upto)
    return upto


def open_capture(path: str) -> Capture:
    return Capture(path)


def _locate(kind: Optional[int], buf: Buf, off: int, end: int) -> Optional[tuple[int, int, int]]:
    """Return (ip offset, tcp offset, ip version) when the frame holds a whole TCP header."""
    if kind == L_ETH:
        p = off + 12
        if p + 2 > end:
            return None
        et = (buf[p] << 8) | buf[p + 1]
        while et in _VLAN_TPIDS:
            p += 4
            if p + 2 > end:
                return None
            et = (buf[p] << 8) | buf[p + 1]
        ip = p + 2
        if et == 0x0800:
            ver = 4
        elif et == 0x86DD:
            ver = 6
        else:
            return None
    elif kind == L_SLL:
        if off + 16 > end:
            return None
        et = (buf[off + 14] << 8) | buf[off + 15]
        ip = off + 16
        ver = 4 if et == 0x0800 else 6 if et == 0x86DD else 0
    elif kind == L_SLL2:
        if off + 20 > end:
            return None
        et = (buf[off] << 8) | buf[off + 1]
        ip = off + 20
        ver = 4 if et == 0x0800 else 6 if et == 0x86DD else 0
    elif kind == L_RAW:
        ip = off
        ver = buf[off] >> 4 if off < end else 0
    elif kind == L_IPV4:
        ip, ver = off, 4
    elif kind == L_IPV6:
        ip, ver = off, 6
    elif kind == L_NULL or kind == L_LOOP:
        if off + 4 > end:
            return None
        if kind == L_LOOP:
            af = int.from_bytes(buf[off : off + 4], "big")
        else:
            af = int.from_bytes(buf[off : off + 4], "little")
            if af > 0xFFFF:
                af = int.from_bytes(buf[off : off + 4], "big")
        ip = off + 4
        ver = 4 if af == 2 else 6 if af in _AF_INET6_VALUES else 0
    elif kind == L_FDDI:
        # frame control, dst, src, then LLC/SNAP: AA AA 03 OUI(3) ethertype
        p = off + 13
        if p + 8 > end or buf[p] != 0xAA or buf[p + 1] != 0xAA:
            return None
        et = (buf[p + 6] << 8) | buf[p + 7]
        ip = p + 8
        ver = 4 if et == 0x0800 else 6 if et == 0x86DD else 0
    else:
        return None
    if ver == 4:
        if ip + 20 > end:
            return None
        vihl = buf[ip]
        if vihl >> 4 != 4 or buf[ip + 9] != 6:
            return None
        if (buf[ip + 6] & 0x3F) or buf[ip + 7]:  # MF set or fragment offset: a fragment
            return None
        tcp = ip + (vihl & 0x0F) * 4
        if vihl & 0x0F < 5 or tcp + 20 > end:
            return None
        return ip, tcp, 4
    if ver == 6:
        if ip + 40 > end or buf[ip] >> 4 != 6:
            return None
        nh = buf[ip + 6]
        p = ip + 40
        for _ in range(8):
            if nh == 6:
                break
            if nh in (0, 43, 60, 135, 139, 140):
                if p + 2 > end:
                    return None
                nh, p = buf[p], p + (buf[p + 1] + 1) * 8
            elif nh == 51:  # authentication header
                if p + 2 > end:
                    return None
                nh, p = buf[p], p + (buf[p + 1] + 2) * 4
            elif nh == 44:  # fragment header: any fragment is skipped
                return None
            else:
                return None
        if nh != 6 or p + 20 > end:
            return None
        return ip, p, 6
    return None


_ETH_IP = struct.Struct("!12xHB5xHxB")  # ethertype, IP version/IHL, flags/fragment, protocol
_V4 = struct.Struct("!BxHHHBxxx4s4s")
_TCP = struct.Struct("!HHIIBBH")
_TS = struct.Struct("!II")


def decode(fr: Frame) -> Optional[TcpPacket]:
    """Decode the located TCP segment into a :class:`TcpPacket`."""
    buf, ip, tcp, end = fr.buf, fr.ipoff, fr.tcpoff, fr.end
    if fr.ipver == 4:
        _vihl, total, ip_id, frag, ttl, s, d = _V4.unpack_from(buf, ip)
        df = bool(frag & 0x4000)
        ip_payload = total - (tcp - ip) if total else end - tcp
        ip_id_v: Optional[int] = ip_id
        src, dst = socket.inet_ntop(socket.AF_INET, s), socket.inet_ntop(socket.AF_INET, d)
    else:
        (plen,) = struct.unpack_from("!H", buf, ip + 4)
        ttl = buf[ip + 7]
        ip_payload = plen - (tcp - ip - 40) if plen else end - tcp
        ip_id_v = None
        df = False
        src = socket.inet_ntop(socket.AF_INET6, buf[ip + 8 : ip + 24])
        dst = socket.inet_ntop(socket.AF_INET6, buf[ip + 24 : ip + 40])
    sport, dport, seq, ack, doff, flags, window = _TCP.unpack_from(buf, tcp)
    hlen = (doff >> 4) * 4
    if hlen < 20:
        return None
    options: list[int] = []
    tsval = tsecr = None
    p, oend = tcp + 20, min(tcp + hlen, end)
    while p < oend:
        kind = buf[p]
        if kind == 0:
            break
        if kind == 1:
            p += 1
            continue
        if p + 1 >= oend:
            break
        olen = buf[p + 1]
        if olen < 2:
            break
        options.append(kind)
        if kind == 8 and olen == 10 and p + 10 <= oend:
            tsval, tsecr = _TS.unpack_from(buf, p + 2)
        p += olen
    payload_len = max(ip_payload - hlen, 0)
    payload = buf[tcp + hlen : min(end, tcp + hlen + payload_len)] if flags & RST else b""
    if fr.link in (L_ETH, L_FDDI):
        m = fr.l2off + (1 if fr.link == L_FDDI else 0)
        dst_mac: Optional[str] = _mac(buf[m : m + 6])
        src_mac: Optional[str] = _mac(buf[m + 6 : m + 12])
        vlan: tuple = _vlans(buf, fr.l2off + 12, ip) if fr.link == L_ETH else ()
    elif fr.link == L_SLL and buf[fr.l2off + 5] == 6:
        src_mac, dst_mac, vlan = _mac(buf[fr.l2off + 6 : fr.l2off + 12]), None, ()
    elif fr.link == L_SLL2 and buf[fr.l2off + 11] == 6:
        src_mac, dst_mac, vlan = _mac(buf[fr.l2off + 12 : fr.l2off + 18]), None, ()
    else:
        src_mac = dst_mac = None
        vlan = ()
    return TcpPacket(
        fr.num,
        fr.ts,
        fr.iface,
        src_mac,
        dst_mac,
        fr.ipver,
        src,
        dst,
        ttl,
        ip_id_v,
        df,
        sport,
        dport,
        flags,
        seq,
        ack,
        window,
        tuple(options),
        tsval,
        tsecr,
        payload_len,
        payload,
        vlan,
    )


def _vlans(buf: Buf, p: int, ip: int) -> tuple:
    ids = []
    while p + 4 <= ip and ((buf[p] << 8) | buf[p + 1]) in _VLAN_TPIDS:
        ids.append(((buf[p + 2] << 8) | buf[p + 3]) & 0x0FFF)
        p += 4
    return tuple(ids)
