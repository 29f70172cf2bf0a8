#!/usr/bin/env python3
"""Write a large synthetic capture for the rst-triage benchmark.

The file looks like a tcpdump taken on a busy HTTP server (10.20.4.18 / fd00:20:4::18, port 80)
that sits a few hops behind a router: many clients, connections overlapping in time, handshakes
with the usual Linux SYN options, request/response exchanges with delayed ACKs, FIN closes, and
a few hundred resets of the kinds rst-triage has to tell apart:

- refused: a SYN to a closed port answered by the kernel's RST,ACK (IP ID 0, no options);
- client-abort: the client resets a connection in the middle of a response;
- idle-reuse: the server closes an idle keep-alive connection, the client's next request
  crosses the FIN, the server answers it with a RST;
- forged: a RST in the client's name with a TTL (and IP ID) that do not fit the client's
  packets, after which the real client is still talking and the server, which no longer knows
  the connection, answers with RSTs (counted as reply-to-forged).

Output is a classic little-endian pcap with microsecond timestamps and Ethernet framing.
Everything is derived from the seed, so the same arguments always give the same bytes. The
writer streams: memory depends on how many connections are open at once, not on the size of
the file.

    python bench/gencap.py bench/out/big.pcap --packets 1000000 --connections 2000 --seed 7

Use generate() from Python: it returns the same numbers the command prints.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import struct
import sys
import time
from operator import itemgetter
from pathlib import Path
from typing import Any, Dict, Generator, Iterator, List, Tuple

# --- the network -------------------------------------------------------------------------

SERVER4 = bytes((10, 20, 4, 18))
SERVER6 = bytes.fromhex("fd000020000400000000000000000018")
SERVER_MAC = bytes.fromhex("525400a1b2c3")
ROUTER_MAC = bytes.fromhex("001c73f00d01")
HTTP_PORT = 80
CLOSED_PORT = 8443
SERVER_TTL = 64
CLIENT_TTLS = (57, 57, 57, 116)  # Linux clients 7 hops out, now and then a Windows one 12 out
KEEPALIVE_TIMEOUTS_S = (5, 15, 60, 65, 75)  # server idle timeouts seen in the wild
EPOCH_US = 1_731_398_400 * 1_000_000  # 2024-11-12 08:00:00 UTC

C, S = 0, 1  # direction: sent by the client, sent by the server
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
MASK32 = 0xFFFFFFFF
WSCALE = 7

OPT_NONE, OPT_TS, OPT_SYN = 0, 1, 2
_IP4 = "!BBHHHBBH4s4s"
_IP6 = "!IHBB16s16s"
_TCP = "HHIIBBHHH"
_TS = "BBBBII"  # NOP, NOP, timestamps
_SYN = "BBHBBBBIIBBBB"  # MSS, SACK permitted, timestamps, NOP, window scale (Linux order)
PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)
REC = struct.Struct("<IIII")
P4 = {
    OPT_NONE: struct.Struct(_IP4 + _TCP).pack,
    OPT_TS: struct.Struct(_IP4 + _TCP + _TS).pack,
    OPT_SYN: struct.Struct(_IP4 + _TCP + _SYN).pack,
}
P6 = {
    OPT_NONE: struct.Struct(_IP6 + _TCP).pack,
    OPT_TS: struct.Struct(_IP6 + _TCP + _TS).pack,
    OPT_SYN: struct.Struct(_IP6 + _TCP + _SYN).pack,
}
SYN_OPT_SUM = 0x0204 + 0x0402 + 0x080A + 0x0103 + 0x0300 + WSCALE
TS_OPT_SUM = 0x0101 + 0x080A

# --- payloads -----------------------------------------------------------------------------
# Response bodies repeat a block exactly one segment long, and every response header is
# padded to RESP_HDR_LEN bytes, so all full segments after the first carry the same bytes and
# their checksum contribution can be computed once.

RESP_HDR_LEN = 256
_BLOCK = b'{"id":%d,"sku":"WX-%05d","name":"widget","qty":%d,"price":"%d.99","tags":["a","b"]},\n'
_REQ_HEAD = (
    b"GET /api/v1/items/%d HTTP/1.1\r\nHost: app.internal\r\nUser-Agent: loadgen/2.1\r\n"
    b"Accept: */*\r\nCookie: session="
)
_COOKIE = (b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" * 20)[:1000]


def _sum16(data: bytes) -> int:
    """Sum of the 16-bit big-endian words of data, modulo 0xFFFF (odd length: zero-padded)."""
    if len(data) & 1:
        data += b"\0"
    return int.from_bytes(data, "big") % 0xFFFF


def _csum(total: int) -> int:
    s = total % 0xFFFF
    return 0xFFFF - s if s else 0


class _Payloads:
    """Segment-sized body data and precomputed checksum sums for one segment size."""

    def __init__(self, seg: int) -> None:
        text = b"".join(_BLOCK % (i, i * 7, i % 13, 3 + i % 40) for i in range(40))
        block = (text * (seg // len(text) + 1))[:seg]
        split = seg - RESP_HDR_LEN  # body bytes in a response's first segment
        self.seg = seg
        self.block = block
        self.first_body = block[:split]
        self.first_body_sum = _sum16(self.first_body)
        self.rot = block[split:] + block[:split]  # what every later segment carries
        self.block_sums = [_sum16(block[:n]) for n in range(seg + 1)]
        self.rot_sums = [_sum16(self.rot[:n]) for n in range(seg + 1)]


def _response_header(body_len: int, tag: int) -> bytes:
    head = (
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nContent-Type: application/octet-stream\r\n"
        b"Connection: keep-alive\r\nContent-Length: %d\r\nX-Trace: " % body_len
    )
    pad = RESP_HDR_LEN - len(head) - 4
    trace = (b"%016x" % tag) * (pad // 16 + 1)
    return head + trace[:pad] + b"\r\n\r\n"


def _exchange_cost(k: int, early_ack: bool) -> int:
    """Packets in one exchange: request, maybe a bare ACK, k segments, an ACK per 2 segments."""
    return 1 + int(early_ack) + k + (k + 1) // 2


def _fit_exchange(n: int) -> Tuple[int, bool]:
    """An exchange of exactly n >= 3 packets."""
    for early in (False, True):
        m = n - 1 - int(early)  # k + ceil(k/2)
        if m % 3 == 0:
            return 2 * m // 3, early
        if m % 3 == 2:
            return (2 * m - 1) // 3, early
    raise AssertionError(n)


Event = Tuple[int, int, int, int, int, bytes, int]  # time, direction, flags, seq, ack, payload, sum
Frame = Tuple[int, bytes]  # capture time in microseconds, Ethernet frame


class _Conn:
    """One TCP connection; run() yields (time_us, frame) in time order."""

    def __init__(
        self, plan: Dict[str, Any], payloads: Dict[int, _Payloads], stats: Dict[str, Any]
    ) -> None:
        rng = random.Random(plan["seed"])
        self.rng = rng
        self.plan = plan
        self.stats = stats
        self.v6 = v6 = plan["v6"]
        client: bytes = plan["client"]
        server = SERVER6 if v6 else SERVER4
        sport, dport = plan["sport"], plan["dport"]
        etype = b"\x86\xdd" if v6 else b"\x08\x00"
        self.eth = (SERVER_MAC + ROUTER_MAC + etype, ROUTER_MAC + SERVER_MAC + etype)
        self.addr = ((client, server), (server, client))
        self.ports = ((sport, dport), (dport, sport))
        addrsum = int.from_bytes(client, "big") + int.from_bytes(server, "big")
        self.addrsum = addrsum % 0xFFFF
        self.pseudo = (addrsum + 6 + sport + dport) % 0xFFFF
        self.ttl = (plan["client_ttl"], SERVER_TTL)
        self.ipid = [rng.randrange(65536), rng.randrange(65536)]
        self.flow = (0x60000000 | rng.randrange(1 << 20), 0x60000000 | rng.randrange(1 << 20))
        self.tsbase = (rng.randrange(1 << 32), rng.randrange(1 << 32))
        self.tsval = [0, 0]
        self.win = [rng.randint(3000, 12000), rng.randint(501, 1000)]
        self.syn_win = (64800, 64800) if v6 else (64240, 65160)
        self.mss = 1440 if v6 else 1460
        self.pl = payloads[1428 if v6 else 1448]
        self.rtt = rng.randint(2_000, 80_000)
        self.gap = rng.randint(12, 60)
        self.ack_delay = rng.randint(10, 90)
        self.isn = (rng.randrange(1 << 32), rng.randrange(1 << 32))
        self.nxt = [0, 0]
        self.last_client_ack = 0
        self.think_mean = rng.choice((50_000, 300_000, 1_000_000))

    # -- one packet --------------------------------------------------------------------------

    def frame(
        self,
        t: int,
        d: int,
        flags: int,
        seq: int,
        ack: int,
        payload: bytes = b"",
        psum: int = 0,
        opt: int = OPT_TS,
        ttl: int = 0,
        ipid: int = -1,
        win: int = -1,
        df: bool = True,
    ) -> bytes:
        seq &= MASK32
        ack &= MASK32
        if win < 0:
            win = self.win[d]
        if not ttl:
            ttl = self.ttl[d]
        tsval = tsecr = 0
        if opt == OPT_TS:
            tsval = (self.tsbase[d] + t // 1000) & MASK32
            tsecr = self.tsval[1 - d]
            self.tsval[d] = tsval
            hlen = 32
            osum = TS_OPT_SUM + tsval + tsecr
        elif opt == OPT_SYN:
            tsval = (self.tsbase[d] + t // 1000) & MASK32
            tsecr = self.tsval[1 - d]
            self.tsval[d] = tsval
            hlen = 40
            osum = SYN_OPT_SUM + self.mss + tsval + tsecr
        else:
            hlen = 20
            osum = 0
        if flags & RST:
            self.stats["rst_packets"] += 1
        tcp_len = hlen + len(payload)
        tck = _csum(self.pseudo + tcp_len + seq + ack + (hlen << 10) + flags + win + osum + psum)
        sport, dport = self.ports[d]
        src, dst = self.addr[d]
        if self.v6:
            head: Tuple[Any, ...] = (self.flow[d], tcp_len, 6, ttl, src, dst)
            pack = P6[opt]
        else:
            if ipid < 0:
                ipid = self.ipid[d]
                self.ipid[d] = (ipid + 1) & 0xFFFF
            total = 20 + tcp_len
            frag = 0x4000 if df else 0
            ick = _csum(0x4506 + total + ipid + frag + (ttl << 8) + self.addrsum)
            head = (0x45, 0, total, ipid, frag, ttl, 6, ick, src, dst)
            pack = P4[opt]
        tcp = (sport, dport, seq, ack, hlen << 2, flags, win, tck, 0)
        if opt == OPT_TS:
            hdr = pack(*head, *tcp, 1, 1, 8, 10, tsval, tsecr)
        elif opt == OPT_SYN:
            hdr = pack(*head, *tcp, 2, 4, self.mss, 4, 2, 8, 10, tsval, tsecr, 1, 3, 3, WSCALE)
        else:
            hdr = pack(*head, *tcp)
        return self.eth[d] + hdr + payload

    def emit(self, events: List[Event]) -> Iterator[Frame]:
        for t, d, flags, seq, ack, payload, psum in events:
            if d == C and flags & ACK:
                self.last_client_ack = ack
            yield t, self.frame(t, d, flags, seq, ack, payload, psum)

    def rst(self, kind: str) -> None:
        self.stats["rst_by_kind"][kind] += 1

    # -- building blocks -----------------------------------------------------------------------

    def request(self) -> Tuple[bytes, int]:
        rng = self.rng
        head = _REQ_HEAD % rng.randrange(1, 10_000_000)
        size = min(900, len(head) + 20 + int(rng.expovariate(1 / 200)))
        req = head + _COOKIE[: size - len(head) - 4] + b"\r\n\r\n"
        return req, _sum16(req)

    def think(self) -> int:
        return 1_000 + int(self.rng.expovariate(1.0 / self.think_mean))

    def pick_exchange(self) -> Tuple[int, bool]:
        rng = self.rng
        r = rng.random()
        if r < 0.62:
            k = 1
        elif r < 0.82:
            k = rng.randint(2, 3)
        elif r < 0.95:
            k = rng.randint(4, 10)
        elif r < 0.995:
            k = rng.randint(11, 40)
        else:
            k = rng.randint(41, 250)
        return k, rng.random() < 0.12

    def exchange(self, t: int, k: int, early_ack: bool) -> List[Event]:
        """Request at t, response of k segments, client ACKs; sorted by time."""
        rng = self.rng
        pl = self.pl
        seg = pl.seg
        cseq, sseq = self.nxt
        req, rsum = self.request()
        ev: List[Event] = [(t, C, PSH | ACK, cseq, sseq, req, rsum)]
        cseq += len(req)
        if early_ack:  # slow handler: the delayed-ACK timer fires first
            proc = rng.randint(45_000, 400_000)
            ev.append((t + 40_000 + rng.randint(0, 2_000), S, ACK, sseq, cseq, b"", 0))
        else:
            proc = rng.randint(80, 30_000)
        if k == 1:  # mostly small API answers
            last = RESP_HDR_LEN + min(seg - RESP_HDR_LEN, int(rng.expovariate(1 / 300)))
        else:
            last = rng.randint(1, seg)
        body_len = (k - 1) * seg + last - RESP_HDR_LEN
        hdr = _response_header(body_len, rng.randrange(1 << 64))
        ts = t + proc
        acks: List[Tuple[int, int]] = []
        for i in range(k):
            if k == 1:
                payload = hdr + pl.block[:body_len]
                psum = _sum16(hdr) + pl.block_sums[body_len]
            elif i == 0:
                payload = hdr + pl.first_body
                psum = _sum16(hdr) + pl.first_body_sum
            elif i < k - 1:
                payload = pl.rot
                psum = pl.rot_sums[seg]
            else:
                payload = pl.rot[:last]
                psum = pl.rot_sums[last]
            ev.append((ts, S, PSH | ACK if i == k - 1 else ACK, sseq, cseq, payload, psum))
            sseq += len(payload)
            if i & 1 or i == k - 1:
                acks.append((ts, sseq))
            ts += self.gap
        prev = 0
        for n, (t_seg, end) in enumerate(acks):
            t_ack = t_seg + self.rtt + self.ack_delay
            if n == len(acks) - 1 and k & 1 and rng.random() < 0.3:
                t_ack += rng.randint(4_000, 40_000)  # delayed ACK of a lone last segment
            t_ack = max(t_ack, prev + 1)
            prev = t_ack
            ev.append((t_ack, C, ACK, cseq, end, b"", 0))
        ev.sort(key=itemgetter(0))
        self.nxt = [cseq, sseq]
        return ev

    def data_phase(self, t: int, n: int) -> Generator[Frame, None, int]:
        """Exactly n packets of whole exchanges (n == 0 or n >= 3); returns the last time."""
        last = t
        while n > 0:
            k, early = self.pick_exchange()
            cost = _exchange_cost(k, early)
            if cost > n or n - cost < 3:
                k, early = _fit_exchange(n)
                cost = n
            ev = self.exchange(t, k, early)
            yield from self.emit(ev)
            n -= cost
            last = ev[-1][0]
            t = last + self.think()
        return last

    def partial_exchange(self, t: int, m: int) -> Generator[Frame, None, Tuple[int, int]]:
        """The first m >= 2 packets of an exchange whose response is still flowing."""
        cseq0, sseq0 = self.nxt
        ev = self.exchange(t, (2 * m) // 3 + 6, False)
        head = ev[:m]
        self.nxt = [cseq0, sseq0]
        for _, d, _, seq, _, payload, _ in head:
            self.nxt[d] = max(self.nxt[d], seq + len(payload))
        yield from self.emit(head)
        return head[-1][0], ev[m][0]

    def handshake(self, t: int, dport_open: bool = True) -> Generator[Frame, None, int]:
        ci, si = self.isn
        yield t, self.frame(t, C, SYN, ci, 0, opt=OPT_SYN, win=self.syn_win[C])
        t += self.rng.randint(15, 120)
        if not dport_open:  # nothing listening: the kernel answers for the port
            self.rst("refused")
            yield t, self.frame(t, S, RST | ACK, 0, ci + 1, opt=OPT_NONE, ipid=0, win=0)
            return t
        yield t, self.frame(t, S, SYN | ACK, si, ci + 1, opt=OPT_SYN, ipid=0, win=self.syn_win[S])
        t += self.rtt
        yield t, self.frame(t, C, ACK, ci + 1, si + 1)
        self.nxt = [ci + 1, si + 1]
        self.last_client_ack = si + 1
        return t

    def reply_delay(self, d: int) -> int:
        """How long after the other side's packet the vantage sees d's answer."""
        small = self.rng.randint(20, 300)
        return self.rtt + small if d == C else small

    def close(self, t: int, four: bool) -> Iterator[Frame]:
        first = C if self.rng.random() < 0.6 else S
        second = 1 - first
        nxt = self.nxt
        yield t, self.frame(t, first, FIN | ACK, nxt[first], nxt[second])
        nxt[first] += 1
        t += self.reply_delay(second)
        if four:
            yield t, self.frame(t, second, ACK, nxt[second], nxt[first])
            t += self.rng.randint(100, 5_000)
        yield t, self.frame(t, second, FIN | ACK, nxt[second], nxt[first])
        nxt[second] += 1
        t += self.reply_delay(first)
        yield t, self.frame(t, first, ACK, nxt[first], nxt[second])

    # -- whole connections -------------------------------------------------------------------------

    def run(self) -> Iterator[Frame]:
        plan = self.plan
        kind = plan["kind"]
        rng = self.rng
        t = plan["start"]
        if kind == "refused":
            yield from self.handshake(t, dport_open=False)
            return
        t = yield from self.handshake(t)
        t += rng.randint(50, 2_000)
        data, partial = plan["data"], plan["partial"]
        last = t
        if data:
            last = yield from self.data_phase(t, data)
            t = last + self.think()
        if kind == "normal":
            yield from self.close(t, plan["four"])
        elif kind == "idle-reuse":  # the client stays quiet longer than the server waits
            t = last + rng.choice(KEEPALIVE_TIMEOUTS_S) * 1_000_000
            cseq, sseq = self.nxt
            yield t, self.frame(t, S, FIN | ACK, sseq, cseq)
            t += rng.randint(100, max(200, self.rtt - 100))  # sent before the FIN reached it
            req, rsum = self.request()
            yield t, self.frame(t, C, PSH | ACK, cseq, sseq, req, rsum)
            t += rng.randint(15, 80)
            self.rst("idle-reuse")
            yield t, self.frame(t, S, RST | ACK, sseq + 1, cseq)
        elif kind == "client-abort":
            last, upcoming = yield from self.partial_exchange(t, partial)
            t = last + rng.randint(1, max(1, (upcoming - last) // 2))
            self.rst("client-abort")
            yield t, self.frame(t, C, RST | ACK, self.nxt[C], self.last_client_ack)
        elif kind == "forged":
            last, upcoming = yield from self.partial_exchange(t, partial)
            t = last + rng.randint(1, max(1, (upcoming - last) // 2))
            flags = RST | ACK if rng.random() < 0.5 else RST
            self.rst("forged")
            yield (
                t,
                self.frame(
                    t,
                    C,
                    flags,
                    self.nxt[C],
                    self.nxt[S] if flags & ACK else 0,
                    opt=OPT_NONE,
                    ttl=min(255, self.ttl[C] + rng.choice((1, 2, 3, 5))),
                    ipid=rng.randrange(65536),
                    win=rng.choice((0, 8192, 16384)),
                    df=rng.random() < 0.5,
                ),
            )
            # the real client never saw it and keeps acknowledging the response
            t = max(t + 1, upcoming) + rng.randint(0, self.rtt // 2)
            yield t, self.frame(t, C, ACK, self.nxt[C], self.nxt[S])
            t += rng.randint(15, 80)
            self.rst("reply-to-forged")
            yield t, self.frame(t, S, RST, self.nxt[S], 0, opt=OPT_NONE, ipid=0, win=0)
        else:
            raise ValueError(kind)


# --- the plan: who connects when, and how many packets each connection gets --------------------

_FIXED = {"normal": 6, "idle-reuse": 6, "client-abort": 4, "forged": 6, "refused": 2}
_MIN_FLEX = {"normal": 3, "idle-reuse": 3, "client-abort": 2, "forged": 2, "refused": 0}


def _plan(packets: int, connections: int, seed: int) -> List[Dict[str, Any]]:
    if connections < 10:
        raise ValueError("need at least 10 connections")
    rng = random.Random(seed)
    n = connections
    kinds = (
        ["refused"] * max(1, round(0.05 * n))
        + ["client-abort"] * max(1, round(0.04 * n))
        + ["idle-reuse"] * max(1, round(0.04 * n))
        + ["forged"] * max(1, round(0.005 * n))
    )
    kinds += ["normal"] * (n - len(kinds))
    rng.shuffle(kinds)

    n_hosts = max(2, n // 5)
    hosts: List[Dict[str, Any]] = []
    for h in range(n_hosts):
        v6 = h % 10 == 3
        if v6:
            addr = bytes.fromhex("fd000030000000000000000000000000")[:14] + h.to_bytes(2, "big")
        else:
            addr = bytes((10, 30 + h // 65024, (h // 254) % 256, 1 + h % 254))
        hosts.append(
            {
                "addr": addr,
                "v6": v6,
                "ttl": rng.choice(CLIENT_TTLS),
                "port": rng.randint(32768, 45000),
            }
        )

    span = max(5_000_000, n * 100_000)
    starts = sorted(rng.randrange(span) for _ in range(n))
    plans: List[Dict[str, Any]] = []
    for i, (kind, start) in enumerate(zip(kinds, starts)):
        host = hosts[rng.randrange(n_hosts)]
        host["port"] += rng.randint(1, 7)
        if host["port"] > 60999:
            host["port"] = 32768 + host["port"] % 1000
        four = rng.random() < 0.3
        plans.append(
            {
                "seed": seed * 1_000_003 + i,
                "kind": kind,
                "start": start,
                "v6": host["v6"],
                "client": host["addr"],
                "client_ttl": host["ttl"],
                "sport": host["port"],
                "dport": CLOSED_PORT if kind == "refused" else HTTP_PORT,
                "four": four,
                "fixed": _FIXED[kind] + (1 if kind == "normal" and four else 0),
                "weight": 0.0 if kind == "refused" else rng.lognormvariate(0.0, 0.9),
            }
        )

    minimum = sum(p["fixed"] + _MIN_FLEX[p["kind"]] for p in plans)
    spare = packets - minimum
    if spare < 0:
        raise ValueError(
            f"{packets} packets are too few for {connections} connections (need at least {minimum})"
        )
    total_weight = sum(p["weight"] for p in plans)
    extras = [int(spare * p["weight"] / total_weight) for p in plans]
    flexible = [i for i, p in enumerate(plans) if p["kind"] != "refused"]
    for j in range(spare - sum(extras)):
        extras[flexible[j % len(flexible)]] += 1
    for p, extra in zip(plans, extras):
        kind = p["kind"]
        flex = _MIN_FLEX[kind] + extra
        if kind in ("client-abort", "forged"):
            partial = 2 + min(extra, rng.randint(0, 30))
            data = flex - partial
            if data in (1, 2):
                partial, data = partial + data, 0
            p["partial"], p["data"] = partial, data
        else:
            p["partial"], p["data"] = 0, flex
        p["packets"] = p["fixed"] + flex
    assert sum(p["packets"] for p in plans) == packets
    return plans


# --- writing ---------------------------------------------------------------------------------


def generate(
    out: str | os.PathLike[str], packets: int = 1_000_000, connections: int = 2000, seed: int = 7
) -> Dict[str, Any]:
    """Write the capture to out; return what was written (see the module docstring)."""
    started = time.perf_counter()
    plans = _plan(packets, connections, seed)
    payloads = {seg: _Payloads(seg) for seg in (1448, 1428)}
    stats: Dict[str, Any] = {
        "path": str(out),
        "packets": 0,
        "connections": connections,
        "seed": seed,
        "ipv6_connections": sum(1 for p in plans if p["v6"]),
        "connections_by_kind": {},
        "rst_packets": 0,
        "rst_by_kind": {
            k: 0 for k in ("refused", "client-abort", "idle-reuse", "forged", "reply-to-forged")
        },
    }
    for p in plans:
        by_kind = stats["connections_by_kind"]
        by_kind[p["kind"]] = by_kind.get(p["kind"], 0) + 1

    out = Path(out)
    tmp = out.with_name(out.name + ".part")
    heap: List[Tuple[int, int, Iterator[Frame], bytes]] = []
    push, replace, pop = heapq.heappush, heapq.heapreplace, heapq.heappop
    rec = REC.pack
    written = 0
    max_open = 0
    nxt_plan = 0
    chunk: List[bytes] = []
    with open(tmp, "wb", buffering=16 << 20) as f:
        f.write(PCAP_HEADER)
        while True:
            while nxt_plan < len(plans) and (not heap or plans[nxt_plan]["start"] <= heap[0][0]):
                gen = _Conn(plans[nxt_plan], payloads, stats).run()
                t, frame = next(gen)
                push(heap, (t, nxt_plan, gen, frame))
                nxt_plan += 1
                if len(heap) > max_open:
                    max_open = len(heap)
            if not heap:
                break
            t, serial, gen, frame = heap[0]
            ts = EPOCH_US + t
            n = len(frame)
            chunk.append(rec(ts // 1_000_000, ts % 1_000_000, n, n))
            chunk.append(frame)
            written += 1
            if len(chunk) >= 16384:
                f.write(b"".join(chunk))
                chunk.clear()
            item = next(gen, None)
            if item is None:
                pop(heap)
            else:
                replace(heap, (item[0], serial, gen, item[1]))
        f.write(b"".join(chunk))
    if written != packets:
        tmp.unlink()
        raise AssertionError(f"wrote {written} packets, planned {packets}")
    os.replace(tmp, out)
    stats["packets"] = written
    stats["max_open_connections"] = max_open
    stats["bytes"] = out.stat().st_size
    stats["seconds"] = round(time.perf_counter() - started, 2)
    return stats


def describe(stats: Dict[str, Any]) -> str:
    kinds = ", ".join(f"{k} {v}" for k, v in stats["rst_by_kind"].items())
    return (
        f"wrote {stats['path']}: {stats['packets']} packets, {stats['connections']} connections "
        f"({stats['ipv6_connections']} IPv6, up to {stats['max_open_connections']} open at once), "
        f"{stats['rst_packets']} RSTs ({kinds}), {stats['bytes'] / 1e6:.1f} MB "
        f"in {stats['seconds']:.1f} s"
    )


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="pcap file to write")
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--connections", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", action="store_true", help="print the statistics as JSON")
    args = ap.parse_args(argv)
    try:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        stats = generate(args.out, args.packets, args.connections, args.seed)
    except (ValueError, OSError) as exc:
        print(f"gencap: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(stats, indent=2) if args.json else describe(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
