"""pmtu: the path MTU to the peer, measured with Don't-Fragment probes, and PMTUD black holes.

Probes of chosen sizes go to the peer with DF set (IPv6 never fragments in the path); the
largest size that gets an answer is the path MTU. A router that cannot forward a packet that
big answers "fragmentation needed" (ICMP type 3 code 4; ICMPv6 "packet too big") with the
next hop's MTU; Path MTU Discovery lives on that answer. When big probes vanish and no such
answer comes back while smaller ones are answered, PMTUD is black-holed: TCP connections
complete the handshake, then stall on the first full-size segment and die of a timeout or
a middlebox's reset.

How the probes travel, best first:

* root / CAP_NET_RAW: ICMP echo on a raw socket (what ``ping -M do -s SIZE`` sends);
* unprivileged with ping sockets allowed (``net.ipv4.ping_group_range``): the same echo
  on a ``SOCK_DGRAM``/``IPPROTO_ICMP`` socket;
* otherwise (or when the peer ignores echo): UDP to a closed port; the peer's ICMP
  port-unreachable is the answer. Hosts rate-limit those (IPv4: a burst of about 6, then one
  per second), so this path probes one size at a time.

A lost size is only believed after a re-check: the lost size and, right behind it, a size that
got through before. If only the small one is answered the loss is real (a rate limit or a
flaky path would have swallowed the second one too); if neither is, the result says it cannot
tell a black hole from a rate limit, and claims nothing.

Every socket uses ``IP_PMTUDISC_PROBE`` (IPv6: ``IPV6_PMTUDISC_PROBE`` + ``IPV6_DONTFRAG``):
DF set, but the kernel's cached route MTU is ignored, so each oversize probe reaches the
router and a frag-needed (if one is sent) comes back for it through ``IP_RECVERR``'s error
queue, with the MTU and the router's address. With ``IP_PMTUDISC_DO`` the first frag-needed
would be cached for the route (``ip route get`` shows ``cache expires ... mtu N``) and later
big probes would fail locally with EMSGSIZE; the check reports that cached value too, as the
proof that the kernel learned the MTU.

Bounded: the whole probe stops after ``budget`` seconds, each round waits a few RTTs at most.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import random
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from tui.checks import CheckResult, Context

ID = "pmtu"
TITLE = "Path MTU (DF probes)"
PLAYBOOK = "third"

# Linux socket options the socket module does not export (uapi/linux/in.h, in6.h).
IP_MTU_DISCOVER = 10
IP_PMTUDISC_PROBE = 3
IP_RECVERR = 11
IPV6_MTU_DISCOVER = 23
IPV6_PMTUDISC_PROBE = 3
IPV6_RECVERR = 25
IPV6_DONTFRAG = 62
SO_EE_ORIGIN_LOCAL = 1
SO_EE_ORIGIN_ICMP = 2
SO_EE_ORIGIN_ICMP6 = 3

UDP_PORT = 33434  # traceroute's first port: nobody listens there, so the peer says "port unreachable"
PROBE_BUDGET = 3.0  # seconds, `rst-triage probe mtu`
CHECK_BUDGET = 2.0  # seconds, inside `rst-triage check`
RESOLVE_TIMEOUT = 1.0
FIRST_WAIT = 1.0  # longest wait for the first answer of a round (RTT unknown)
MIN_WAIT = 0.25
MAX_ROUNDS = 8
PARALLEL = 16  # sizes per refining round (ICMP echo is not rate-limited)
MAGIC = b"rstT"

# Common MTUs (IP packet sizes) worth trying first: Ethernet, PPPoE, GRE, IPsec, VXLAN,
# WireGuard, cloud overlays, jumbo frames.
COMMON_MTUS = (9001, 9000, 8950, 1500, 1492, 1480, 1476, 1472, 1460, 1450, 1440, 1420, 1400,
               1380, 1360, 1350, 1300, 1280, 1200, 1024, 576)


@dataclass
class Probe:
    size: int
    seq: int
    sent: float
    outcome: str = "pending"  # reply | too-big | unreach | lost | local-too-big
    rtt: Optional[float] = None
    mtu: Optional[int] = None  # from a frag-needed / packet-too-big
    source: Optional[str] = None  # who sent the ICMP error
    detail: str = ""


@dataclass
class Search:
    """What the probes found; the numbers the result is built from."""

    method: str = ""
    ceiling: int = 0  # the interface MTU: the largest size that can be sent at all
    probes: list[Probe] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    budget_hit: bool = False
    # The boundary's loss, checked by sending the lost size and then at once a size that got
    # through: True when only the small one was answered (the loss is real: a rate limit or a
    # flaky path would have swallowed the second one too), False when neither was.
    confirmed: Optional[bool] = None

    def answered(self) -> list[Probe]:
        return [p for p in self.probes if p.outcome == "reply"]

    @property
    def lo(self) -> int:
        return max((p.size for p in self.answered()), default=0)

    def failing_above(self, lo: int) -> list[Probe]:
        return [p for p in self.probes if p.size > lo and p.outcome in ("too-big", "lost", "local-too-big")]

    @property
    def hi(self) -> Optional[int]:
        """Smallest size above ``lo`` known not to get through (None: all did).

        A frag-needed that names next-hop MTU M also says that M + 1 does not fit.
        """
        lo = self.lo
        sizes = [p.size for p in self.failing_above(lo)]
        sizes += [p.mtu + 1 for p in self.frag_needed() if p.mtu and p.mtu >= lo and p.mtu + 1 < p.size]
        return min(sizes, default=None)

    def frag_needed(self) -> list[Probe]:
        return [p for p in self.probes if p.outcome == "too-big"]

    def unreachable(self) -> list[Probe]:
        return [p for p in self.probes if p.outcome == "unreach"]


# ---- the sockets ------------------------------------------------------------------------------
def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


class Prober:
    """One connected socket that sends DF probes and collects answers and ICMP errors."""

    def __init__(self, method: str, addr: str, iface: Optional[str]) -> None:
        self.method = method
        self.addr = addr
        self.v6 = ipaddress.ip_address(addr).version == 6
        fam = socket.AF_INET6 if self.v6 else socket.AF_INET
        proto_icmp = socket.IPPROTO_ICMPV6 if self.v6 else socket.IPPROTO_ICMP
        if method == "icmp-raw":
            self.sock = socket.socket(fam, socket.SOCK_RAW, proto_icmp)
        elif method == "icmp-dgram":
            self.sock = socket.socket(fam, socket.SOCK_DGRAM, proto_icmp)
        else:
            self.sock = socket.socket(fam, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        try:
            if self.v6:
                self.sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_PROBE)
                self.sock.setsockopt(socket.IPPROTO_IPV6, IPV6_DONTFRAG, 1)
                self.sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
            else:
                self.sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)
                self.sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
            self.bind_note = ""
            if iface:
                try:
                    self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
                except OSError as e:
                    self.bind_note = f"could not bind to {iface} ({e.strerror}); the route decides"
            self.sock.connect((addr, UDP_PORT if method == "udp" else 0))
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise
        self.ident = (os.getpid() ^ random.getrandbits(16)) & 0xFFFF
        self.header = 40 if self.v6 else 20
        self.probes: dict[int, Probe] = {}
        self._seq = random.randrange(1, 30000)

    def close(self) -> None:
        self.sock.close()

    def send(self, size: int) -> Probe:
        self._seq = (self._seq + 1) & 0xFFFF or 1
        seq = self._seq
        probe = Probe(size, seq, time.monotonic())
        self.probes[seq] = probe
        payload_len = max(size - self.header - 8, len(MAGIC) + 2)
        body = (MAGIC + struct.pack("!H", seq)).ljust(payload_len, b"\xa5")
        if self.method == "udp":
            packet = body
        else:
            kind = 128 if self.v6 else 8
            head = struct.pack("!BBHHH", kind, 0, 0, self.ident, seq)
            if self.method == "icmp-raw" and not self.v6:  # the kernel sums ICMPv6 and ping sockets
                head = struct.pack("!BBHHH", kind, 0, _checksum(head + body), self.ident, seq)
            packet = head + body
        # An ICMP error that arrived for an earlier probe (a frag-needed: EMSGSIZE, a port
        # unreachable: ECONNREFUSED) is reported by the next send: read the error queue (which
        # clears it) and send again. Only a second EMSGSIZE means this size cannot leave here.
        last = ""
        for attempt in range(3):
            try:
                self.sock.send(packet)
                probe.sent = time.monotonic()
                break
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.ENOBUFS):
                    probe.outcome, probe.detail = "lost", "send buffer full"
                    break
                if e.errno == errno.EMSGSIZE and attempt > 0:
                    probe.outcome = "local-too-big"
                    probe.detail = "larger than this host's interface/route allows (EMSGSIZE)"
                    break
                last = e.strerror or str(e)
                self._drain_errors()
        else:  # the send itself keeps failing (no route, neighbour unreachable...)
            probe.outcome, probe.detail = "unreach", f"send failed: {last}"
        return probe

    def wait(self, deadline: float) -> None:
        """Collect answers until ``deadline`` or until no probe is pending."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN | select.POLLERR)
        while any(p.outcome == "pending" for p in self.probes.values()):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            events = poller.poll(max(1, int(left * 1000)))
            if not events:
                continue
            self._drain_errors()
            self._drain_replies()

    def finish_round(self) -> None:
        for p in self.probes.values():
            if p.outcome == "pending":
                p.outcome = "lost"

    # -- answers -----------------------------------------------------------------------------
    def _drain_replies(self) -> None:
        for _ in range(256):  # bounded: more than any round sends
            try:
                data = self.sock.recv(65535)
            except BlockingIOError:
                return
            except OSError:
                self._drain_errors()  # a pending ICMP error reported through recv
                continue
            self._reply(data)

    def _reply(self, data: bytes) -> None:
        seq = parse_reply(data, self.method, self.v6, self.ident)
        probe = self.probes.get(seq) if seq is not None else None
        if probe is None or probe.outcome not in ("pending", "lost"):
            return
        probe.outcome = "reply"
        probe.rtt = time.monotonic() - probe.sent

    def _drain_errors(self) -> None:
        for _ in range(256):
            try:
                data, ancdata, _flags, _addr = self.sock.recvmsg(2048, 1024, socket.MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            for level, kind, cdata in ancdata:
                if (level, kind) in ((socket.IPPROTO_IP, IP_RECVERR), (socket.IPPROTO_IPV6, IPV6_RECVERR)):
                    self._error(data, cdata)

    def _error(self, data: bytes, cdata: bytes) -> None:
        err = parse_error(cdata, data, self.method, self.ident)
        if err is None or err.kind == "local" or err.seq is None:
            return  # a local EMSGSIZE was already recorded by send()
        probe = self.probes.get(err.seq)
        if probe is None:
            return
        if err.kind == "too-big":
            probe.outcome, probe.mtu, probe.source = "too-big", err.mtu, err.source
        elif err.kind == "port-unreachable" and self.method == "udp" and err.source == self.addr:
            probe.outcome = "reply"  # the peer itself answered: this size got there
            probe.rtt = time.monotonic() - probe.sent
        elif probe.outcome in ("pending", "lost"):
            probe.outcome, probe.source, probe.detail = "unreach", err.source, err.detail


@dataclass
class IcmpError:
    """One entry of a socket's error queue (IP_RECVERR / IPV6_RECVERR)."""

    kind: str  # too-big | port-unreachable | unreachable | local
    seq: Optional[int]  # our probe's sequence number, from the quoted packet
    mtu: Optional[int]
    source: Optional[str]  # the ICMP sender (router or peer)
    detail: str


def parse_error(cdata: bytes, data: bytes, method: str, ident: Optional[int]) -> Optional[IcmpError]:
    """Decode ``struct sock_extended_err`` (+ offender address) and the quoted probe."""
    if len(cdata) < 16:
        return None
    ee_errno, origin, icmp_type, icmp_code, _pad, info, _data = struct.unpack("=IBBBBII", cdata[:16])
    source = _offender(cdata[16:])
    seq = quoted_seq(data, method, ident)
    detail = _icmp_name(origin, icmp_type, icmp_code, ee_errno)
    if origin == SO_EE_ORIGIN_LOCAL:
        return IcmpError("local", seq, int(info) or None, None, detail)
    if (origin == SO_EE_ORIGIN_ICMP and icmp_type == 3 and icmp_code == 4) or (
        origin == SO_EE_ORIGIN_ICMP6 and icmp_type == 2
    ):
        return IcmpError("too-big", seq, int(info) or None, source, detail)
    if (origin == SO_EE_ORIGIN_ICMP and icmp_type == 3 and icmp_code == 3) or (
        origin == SO_EE_ORIGIN_ICMP6 and icmp_type == 1 and icmp_code == 4
    ):
        return IcmpError("port-unreachable", seq, None, source, detail)
    return IcmpError("unreachable", seq, None, source, detail)


def quoted_seq(data: bytes, method: str, ident: Optional[int]) -> Optional[int]:
    """Our sequence number in the packet an ICMP error quotes (the kernel strips the IP header)."""
    if method == "udp":
        if len(data) >= 6 and data[:4] == MAGIC:
            return int(struct.unpack("!H", data[4:6])[0])
        return None
    if len(data) < 8 or data[0] not in (8, 128):  # our echo request, quoted
        return None
    probe_ident, seq = struct.unpack("!HH", data[4:8])
    if method == "icmp-raw" and ident is not None and probe_ident != ident:
        return None  # somebody else's ping (the kernel picks the id of ping sockets)
    if len(data) >= 12 and data[8:12] != MAGIC:
        return None
    return int(seq)


def parse_reply(data: bytes, method: str, v6: bool, ident: Optional[int]) -> Optional[int]:
    """The sequence number of an echo reply to one of our probes, else None."""
    if method == "udp":
        return None  # the peer answered on the UDP port after all: no size information
    if method == "icmp-raw" and not v6:  # IPv4 raw sockets see the IP header
        if len(data) < 20:
            return None
        data = data[(data[0] & 0x0F) * 4:]
    if len(data) < 12:
        return None
    kind, _code, _sum, probe_ident, seq = struct.unpack("!BBHHH", data[:8])
    if kind != (129 if v6 else 0) or data[8:12] != MAGIC:
        return None
    if method == "icmp-raw" and ident is not None and probe_ident != ident:
        return None
    return int(seq)


def _offender(raw: bytes) -> Optional[str]:
    if len(raw) >= 8 and struct.unpack("=H", raw[:2])[0] == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[4:8])
    if len(raw) >= 24 and struct.unpack("=H", raw[:2])[0] == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24])
    return None


def _icmp_name(origin: int, kind: int, code: int, err: int) -> str:
    if origin == SO_EE_ORIGIN_ICMP:
        names = {(3, 0): "net unreachable", (3, 1): "host unreachable", (3, 2): "protocol unreachable",
                 (3, 3): "port unreachable", (3, 9): "net prohibited", (3, 10): "host prohibited",
                 (3, 13): "administratively prohibited", (11, 0): "TTL exceeded in transit"}
        return f"ICMP {names.get((kind, code), f'type {kind} code {code}')}"
    if origin == SO_EE_ORIGIN_ICMP6:
        names = {(1, 0): "no route", (1, 1): "administratively prohibited", (1, 3): "address unreachable",
                 (1, 4): "port unreachable", (1, 6): "reject route", (3, 0): "hop limit exceeded"}
        return f"ICMPv6 {names.get((kind, code), f'type {kind} code {code}')}"
    return os.strerror(err) if err else "error"


# ---- the search -------------------------------------------------------------------------------
def _open(addr: str, iface: Optional[str], methods: list[str], notes: list[str]) -> Optional[Prober]:
    for method in methods:
        try:
            return Prober(method, addr, iface)
        except PermissionError:
            continue  # not root / ping sockets not allowed for this group: next method
        except OSError as e:
            notes.append(f"{method} socket: {e.strerror or e}")
    return None


def _wait_for(answered: list[Probe]) -> float:
    """How long a round waits: a few RTTs once one is known, FIRST_WAIT before that."""
    rtts = [p.rtt for p in answered if p.rtt is not None]
    if not rtts:
        return FIRST_WAIT
    return min(FIRST_WAIT, max(MIN_WAIT, 4 * max(rtts) + 0.1))


def _spread(lo: int, hi: int, n: int) -> list[int]:
    """Up to ``n`` sizes strictly between lo and hi, evenly spread."""
    if hi - lo <= 1:
        return []
    if hi - lo - 1 <= n:
        return list(range(lo + 1, hi))
    return sorted({lo + round((hi - lo) * (i + 1) / (n + 1)) for i in range(n)} - {lo, hi})


def _tried(search: Search) -> set[int]:
    """Sizes with an outcome to go by (a loss that may have been a rate limit does not count)."""
    return {p.size for p in search.probes if p.outcome != "lost-once"}


def _hinted(search: Search) -> list[int]:
    """MTUs routers reported that have not been tried yet (and could be the answer)."""
    tried = _tried(search)
    lo, hi = search.lo, search.hi
    upper = hi if hi is not None else 1 << 20
    return sorted({p.mtu for p in search.frag_needed() if p.mtu and lo < p.mtu < upper} - tried)


def _next_sizes(search: Search, parallel: int) -> list[int]:
    hinted = _hinted(search)
    if hinted:  # a router told us the next hop's MTU: try exactly that first
        return hinted[:parallel]
    hi = search.hi
    tried = _tried(search)
    if hi is None:  # everything tried got through: the interface MTU itself, if not tried yet
        return [search.ceiling] if search.ceiling and search.ceiling not in tried else []
    return [s for s in _spread(search.lo, hi, parallel) if s not in tried][:parallel]


def _ranges(sizes: list[int]) -> str:
    if not sizes:
        return "-"
    if len(sizes) <= 3:
        return ", ".join(map(str, sizes))
    return f"{sizes[0]}..{sizes[-1]}"


def _run_round(prober: Prober, search: Search, sizes: list[int], deadline: float,
               say: Callable[[str], None]) -> None:
    before = search.answered()
    sent = [prober.send(s) for s in sizes]
    search.probes.extend(sent)
    start = min(p.sent for p in sent)
    end = min(deadline, start + _wait_for(before))
    for _ in range(1000):  # bounded: each pass waits up to 50 ms, the round ends at `end`
        if time.monotonic() >= end or not any(p.outcome == "pending" for p in sent):
            break
        prober.wait(min(end, time.monotonic() + 0.05))
        rtts = [p.rtt for p in sent if p.rtt is not None]
        if rtts and not before:  # a blind round: once the RTT is known, do not wait much longer
            end = min(end, start + max(MIN_WAIT, 4 * max(rtts) + 0.1))
    prober.finish_round()
    got = sorted(p.size for p in sent if p.outcome == "reply")
    big = [p for p in sent if p.outcome in ("too-big", "local-too-big")]
    lost = sorted(p.size for p in sent if p.outcome == "lost")
    unreach = [p for p in sent if p.outcome == "unreach"]
    parts = []
    if got:
        parts.append(f"answered up to {got[-1]}")
    if big:
        mtus = sorted({p.mtu for p in big if p.mtu})
        parts.append(f"too big: {_ranges(sorted(p.size for p in big))}"
                     + (f" (frag-needed, mtu {', '.join(map(str, mtus))})" if mtus else ""))
    if lost:
        parts.append(f"no answer: {_ranges(lost)}")
    if unreach:
        parts.append(f"{unreach[0].detail} from {unreach[0].source or '?'}")
    what = "UDP" if prober.method == "udp" else "ICMP echo"
    say(f"{len(sent)} {what} DF probe(s), {_ranges(sorted(sizes))} bytes: " + ("; ".join(parts) or "nothing"))


def _search_rounds(prober: Prober, search: Search, first: list[int], floors: list[int],
                   parallel: int, deadline: float, say: Callable[[str], None]) -> None:
    """Rounds of probes: each narrows (largest answered, smallest lost/too big).

    The last lost size is probed once more before it is believed: a single lost echo, or (for
    UDP) the peer's ICMP rate limit, must not pass for a black hole.
    """
    sizes = first
    rechecked: set[int] = set()
    for _ in range(MAX_ROUNDS if parallel > 1 else 32):
        if not sizes:
            return
        if time.monotonic() >= deadline:
            search.budget_hit = True
            return
        _run_round(prober, search, sizes, deadline, say)
        if not search.answered():
            tried = _tried(search)
            sizes = (_hinted(search) or [f for f in floors if f not in tried])[:1]
            continue
        sizes = _next_sizes(search, parallel)
        if sizes:
            continue
        hi = search.hi
        if hi is None or hi in rechecked:
            return
        if not any(p.size == hi and p.outcome == "lost" for p in search.probes):
            return  # the boundary is a frag-needed or a local limit: nothing to confirm
        rechecked.add(hi)
        if prober.method == "udp":  # let the peer's ICMP rate limit refill a little
            time.sleep(max(0.0, min(1.0, deadline - time.monotonic() - 0.6)))
        if time.monotonic() >= deadline:
            search.budget_hit = True
            return
        lo = search.lo
        _run_round(prober, search, [hi, lo], deadline, say)  # in this order: see Search.confirmed
        big, small = search.probes[-2:]
        if big.outcome == "reply":
            search.notes.append(f"{hi} bytes got through on a second try (packet loss or an ICMP rate "
                                "limit): losses above it are asked again")
            for p in search.probes:
                if p.outcome == "lost" and p.size > hi:
                    p.outcome = "lost-once"
            sizes = _next_sizes(search, parallel)
            continue
        search.confirmed = small.outcome == "reply"
        if not search.confirmed:
            search.notes.append(f"re-check of {hi} against {lo} bytes: neither answered (the peer's ICMP "
                                "rate limit or loss): the losses above are not proof")
        return


def _search(addr: str, iface: Optional[str], iface_mtu: int, budget: float,
            say: Callable[[str], None]) -> Search:
    search = Search(ceiling=iface_mtu)
    deadline = time.monotonic() + budget
    v6 = ipaddress.ip_address(addr).version == 6
    floors = [s for s in ((1280,) if v6 else (1280, 576)) if s < iface_mtu]
    prober = _open(addr, iface, ["icmp-raw", "icmp-dgram"], search.notes)
    if prober is not None:
        search.method = prober.method
        if prober.bind_note:
            search.notes.append(prober.bind_note)
        floor = min(floors or [iface_mtu])
        first = sorted({iface_mtu, *floors} | {m for m in COMMON_MTUS if floor < m < iface_mtu}, reverse=True)
        try:
            _search_rounds(prober, search, first, [], PARALLEL, deadline, say)
        finally:
            prober.close()
        if search.answered() or time.monotonic() >= deadline - 0.3:
            return search
        if any(p.outcome == "unreach" and "prohibited" not in p.detail for p in search.probes):
            return search  # a router says there is no way there: UDP will not fare better
        say("no answer to ICMP echo: trying UDP probes (answered by ICMP port-unreachable)")
        search.notes.append(f"ICMP echo ({search.method}) got no answer; UDP probes tried instead")
        icmp = search
        search = Search(ceiling=iface_mtu, notes=icmp.notes)
        search.probes = [p for p in icmp.probes if p.outcome in ("too-big", "unreach")]
    else:
        search.notes.append("no raw or ping socket here (not root; net.ipv4.ping_group_range excludes "
                            "this group): UDP probes, answered by the peer's ICMP port-unreachable")
    udp = _open(addr, iface, ["udp"], search.notes)
    if udp is None:
        return search
    search.method = "udp"
    try:
        # the full size and a small one together: the small one's answer gives the RTT, so a lost
        # big one is not waited for long; then one size at a time (the peer rate-limits answers)
        _search_rounds(udp, search, [iface_mtu, *floors[:1]], floors[1:], 1, deadline, say)
    finally:
        udp.close()
    return search


# ---- route and interface ----------------------------------------------------------------------
@dataclass
class Egress:
    iface: Optional[str] = None
    iface_mtu: Optional[int] = None
    route_mtu: Optional[int] = None  # RTAX_MTU: configured, or learned from a frag-needed
    cache_expires: Optional[int] = None  # seconds; set when the route MTU is a learned exception
    gateway: Optional[str] = None
    error: Optional[str] = None


def egress(addr: str, iface: Optional[str]) -> Egress:
    """``ip route get ADDR [oif IFACE]`` and the egress link's MTU, through pyroute2."""
    out = Egress()
    try:
        from pyroute2 import IPRoute
    except ImportError:
        out.error = "pyroute2 is not installed"
        return out
    try:
        with IPRoute() as ipr:
            kw: dict[str, Any] = {"dst": addr}
            if iface:
                idx = ipr.link_lookup(ifname=iface)
                if not idx:
                    out.error = f"no interface {iface}"
                    return out
                kw["oif"] = idx[0]
            msg = ipr.route("get", **kw)[0]
            metrics = msg.get_attr("RTA_METRICS")
            mtu = metrics.get_attr("RTAX_MTU") if metrics is not None else None
            out.route_mtu = int(mtu) if mtu else None
            cache = msg.get_attr("RTA_CACHEINFO")
            expires = int(cache.get("rta_expires", 0)) if isinstance(cache, dict) else 0
            out.cache_expires = expires // 100 if expires else None  # clock_t: USER_HZ is 100
            gw = msg.get_attr("RTA_GATEWAY")
            out.gateway = str(gw) if gw else None
            oif = msg.get_attr("RTA_OIF")
            if oif:
                link = ipr.link("get", index=int(oif))[0]
                out.iface = link.get_attr("IFLA_IFNAME")
                out.iface_mtu = int(link.get_attr("IFLA_MTU") or 0) or None
    except Exception as e:  # NetlinkError (no route, network unreachable) and friends
        out.error = str(e.args[-1]) if getattr(e, "args", None) else str(e)
    return out


def resolve(host: str) -> tuple[Optional[str], str]:
    """(address, error): a literal address as is, a name resolved within RESOLVE_TIMEOUT."""
    try:
        return str(ipaddress.ip_address(host.strip("[]"))), ""
    except ValueError:
        pass
    out: dict[str, Any] = {}

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
            out["addr"] = str(infos[0][4][0])
        except (OSError, IndexError) as e:
            out["error"] = str(e)

    t = threading.Thread(target=lookup, name="pmtu-resolve", daemon=True)
    t.start()
    t.join(RESOLVE_TIMEOUT)
    if "addr" in out:
        return out["addr"], ""
    return None, out.get("error") or f"no answer within {RESOLVE_TIMEOUT:.0f}s"


# ---- the result -------------------------------------------------------------------------------
MSS_CLAMP = "nft add rule inet filter forward tcp flags syn tcp option maxseg size set rt mtu"


def _ping(host: str, size: int, v6: bool) -> str:
    """The ping that sends one IP packet of ``size`` bytes with DF set."""
    return f"ping {'-6 ' if v6 else ''}-M do -c 3 -s {max(size - (48 if v6 else 28), 0)} {host}"


def _commands(host: str, addr: str, v6: bool, *sizes: int) -> str:
    return "; ".join([f"ip route get {addr}", *(_ping(host, s, v6) for s in sizes), f"tracepath -n {host}"])


def probe(host: str, iface: Optional[str] = None, progress: Optional[Callable[[str], None]] = None,
          budget: float = PROBE_BUDGET) -> CheckResult:
    """Find the path MTU to ``host`` with DF probes; never raises for expected conditions."""
    started = time.monotonic()

    def say(msg: str) -> None:
        if progress is not None:
            progress(msg)

    addr, err = resolve(host)
    if addr is None:
        return CheckResult(ID, TITLE, "skipped", f"not checked: cannot resolve {host}: {err}",
                           {"host": host}, command=f"getent ahosts {host}")
    v6 = ipaddress.ip_address(addr).version == 6
    route = egress(addr, iface)
    if route.error:
        return CheckResult(
            ID, TITLE, "skipped", f"not checked: no route to {addr} ({route.error})",
            {"host": host, "address": addr, "iface": iface}, [f"ip route get {addr}: {route.error}"],
            f"ip route get {addr}",
        )
    iface_mtu = route.iface_mtu or 1500
    say(f"{addr} goes out {route.iface or '?'} (mtu {iface_mtu})"
        + (f"; route MTU {route.route_mtu} cached" if route.route_mtu else ""))
    search = _search(addr, iface, iface_mtu, max(0.5, budget - (time.monotonic() - started)), say)
    after = egress(addr, iface)  # the kernel's view once our probes drew any frag-needed
    result = _judge(host, addr, v6, route, after, iface_mtu, search)
    result.duration_s = time.monotonic() - started
    return result


def _judge(host: str, addr: str, v6: bool, route: Egress, after: Egress, iface_mtu: int,
           search: Search) -> CheckResult:
    lo, hi = search.lo, search.hi
    frag = search.frag_needed()
    frag_mtus = sorted({p.mtu for p in frag if p.mtu})
    frag_from = sorted({p.source for p in frag if p.source})
    # losses that could be a black hole: above the largest answer, not above a size a router
    # already called too big (those are explained)
    ceiling = min(frag_mtus, default=iface_mtu)
    lost_above = sorted(p.size for p in search.probes if lo < p.size and p.outcome == "lost"
                        and (p.size <= ceiling or not frag_mtus))
    learned = after.route_mtu if after.cache_expires else None
    value: dict[str, Any] = {
        "host": host,
        "address": addr,
        "family": "ipv6" if v6 else "ipv4",
        "method": search.method or None,
        "iface": route.iface,
        "iface_mtu": iface_mtu,
        "route_mtu_before": route.route_mtu,
        "route_mtu_learned": learned,
        "path_mtu": None,
        "path_mtu_range": None,
        "frag_needed": bool(frag),
        "frag_needed_mtu": frag_mtus[0] if frag_mtus else None,
        "frag_needed_from": frag_from,
        "black_hole": False,
        "black_hole_from": None,
        "probes": len(search.probes),
        "answered": len(search.answered()),
        "rtt_ms": None,
        "measured": bool(search.answered()),
    }
    rtts = [p.rtt for p in search.answered() if p.rtt is not None]
    if rtts:
        value["rtt_ms"] = round(min(rtts) * 1000, 3)
    command = _commands(host, addr, v6, lo or iface_mtu)
    evidence = [f"egress {route.iface or '?'} mtu {iface_mtu}"
                + (f", via {route.gateway}" if route.gateway else ", directly connected")
                + (f"; route MTU {route.route_mtu} already cached"
                   + (f" (learned, expires in {route.cache_expires}s)" if route.cache_expires else "")
                   if route.route_mtu else "")]
    evidence.append(f"probes: {search.method or 'none'}, {len(search.probes)} sent, "
                    f"{len(search.answered())} answered" + (f", rtt {value['rtt_ms']} ms" if rtts else ""))
    for p in frag[:1]:
        evidence.append(f"frag-needed for {p.size} bytes from {p.source or '?'}: next-hop mtu {p.mtu}")
    if len(frag) > 1:
        evidence.append(f"{len(frag)} frag-needed answers in all, mtu {', '.join(map(str, frag_mtus))}"
                        f" from {', '.join(frag_from) or '?'}")
    if learned:
        evidence.append(f"kernel route cache after probing: mtu {learned} (ip route get {addr} shows "
                        f"'cache expires {after.cache_expires}sec mtu {learned}')")
    evidence.extend(search.notes)
    tcp_header = 60 if v6 else 40

    if not search.answered():
        unreach = search.unreachable()
        why = (f"{unreach[0].detail} from {unreach[0].source or '?'}" if unreach
               else "no answer to ICMP echo or UDP probes")
        summary = f"can't measure the path MTU to {addr}: {why}"
        if frag_mtus:
            value["path_mtu_range"] = [None, frag_mtus[0]]
            summary += f"; a router ({', '.join(frag_from) or '?'}) reports a next hop of mtu {frag_mtus[0]}"
        return CheckResult(
            ID, TITLE, "info", summary, value, evidence, command,
            meaning=("Without any answer from the peer no size can be proven to get through, so "
                     "this is not evidence of a black hole: the host may be down, or it (or a firewall) "
                     "drops ICMP echo and UDP to closed ports. Interface MTU here: "
                     f"{iface_mtu}."),
            decision=(f"Measure with TCP instead: capture a transfer (rst-triage capture --peer {host}:PORT) "
                      "and look for full-size segments retransmitted without an ACK; or run "
                      f"'{_ping(host, iface_mtu, v6)}' from a host the peer answers."),
        )

    exact = hi is None or hi == lo + 1
    value["path_mtu"] = lo if exact else None
    value["path_mtu_range"] = [lo, lo] if exact else [lo, hi - 1 if hi else lo]
    mtu_txt = f"{lo}" if exact else f"between {lo} and {(hi or lo) - 1}"
    if search.budget_hit and not exact:
        evidence.append(f"stopped at the time budget: the path MTU is {mtu_txt}")
    doubtful = sorted(p.size for p in search.probes if p.size > lo and p.outcome == "lost-once")
    unexplained = lo < iface_mtu and not frag_mtus and not any(
        p.outcome == "local-too-big" for p in search.probes)
    if (lost_above and not search.confirmed) or (not lost_above and unexplained):
        first = min(lost_above or doubtful or [lo + 1])
        evidence.append(f"no answer and no frag-needed for {_ranges(lost_above)} bytes, while {lo} got "
                        "through - not confirmed")
        return CheckResult(
            ID, TITLE, "info",
            f"path MTU to {addr} at least {lo} (interface mtu {iface_mtu}); {first}+ got no answer, but "
            "answers to smaller probes went missing too: can't tell a black hole from an ICMP rate limit",
            value, evidence, _commands(host, addr, v6, lo, first),
            meaning=("Bigger probes went unanswered without a frag-needed, which would be a PMTUD black "
                     "hole, but a size that gets through went unanswered too. Hosts rate-limit "
                     "the ICMP errors the unprivileged (UDP) probe relies on, and a lossy path drops some "
                     "of anything, so these losses prove nothing yet."),
            decision=(f"Run it again in a few seconds, or as root (ICMP echo is not rate-limited): sudo "
                      f"rst-triage probe mtu {host}; or by hand: '{_ping(host, first, v6)}' against "
                      f"'{_ping(host, lo, v6)}'."),
        )
    if lost_above:
        first = min(lost_above)
        value["black_hole"] = True
        value["black_hole_from"] = first
        evidence.append(f"no answer and no frag-needed for {_ranges(lost_above)} bytes, "
                        f"while {lo} bytes got through")
        nexthop = f"via {route.gateway}" if route.gateway else f"dev {route.iface or 'IFACE'}"
        pin = f"ip {'-6 ' if v6 else ''}route replace {addr} {nexthop} mtu lock {lo}"
        return CheckResult(
            ID, TITLE, "fail",
            f"PMTUD black hole to {addr}: {lo}-byte packets get through, {first}+ vanish without an ICMP "
            f"frag-needed (path MTU {mtu_txt}, interface mtu {iface_mtu})",
            value, evidence, _commands(host, addr, v6, lo, first),
            meaning=("Packets bigger than the path MTU are dropped somewhere on the way and the router "
                     "that drops them does not (or may not) say 'fragmentation needed' "
                     + ("(ICMPv6 packet-too-big)" if v6 else "(ICMP type 3 code 4)")
                     + (". " if route.gateway else
                        ", or the peer sits on the same link with a smaller MTU (no router in between "
                        "to say so). ")
                     + "TCP connects fine and small requests work, then the first full-size segment "
                     "never arrives: the connection stalls until a timeout, and a proxy or load balancer "
                     "in between often gives up with a RST. Typical behind tunnels, VPNs and overlays "
                     "(VXLAN, WireGuard, GRE, IPsec) where a firewall drops all ICMP."),
            decision=(f"Clamp the TCP MSS on the router/firewall in the path: '{MSS_CLAMP}'; and allow "
                      + ("ICMPv6 packet-too-big (type 2)" if v6 else "ICMP type 3 code 4 (frag-needed)")
                      + " through every firewall in the path: e.g. 'nft add rule inet filter forward "
                      + ("icmpv6 type packet-too-big accept" if v6 else
                         "icmp type destination-unreachable icmp code frag-needed accept")
                      + "'. Until then this host can stay under the hole for its own connections: "
                      f"'{pin}'."),
        )
    if lo < iface_mtu and not frag_mtus:  # sends above lo failed here, with EMSGSIZE
        return CheckResult(
            ID, TITLE, "ok",
            f"path MTU {mtu_txt}: this host refuses to send bigger packets to {addr} (EMSGSIZE; "
            f"interface mtu {iface_mtu})",
            value, evidence, command + f"; ip route show cache {addr}",
            meaning=("A route MTU (configured, e.g. 'mtu lock', or learned) caps packets to the peer "
                     "below the interface MTU, so TCP already uses a smaller segment size and PMTUD is "
                     "not needed."),
            decision="Rule MTU out unless that route MTU is wrong for the path; move on to the other checks.",
        )
    if lo < iface_mtu:
        via = f" from {', '.join(frag_from)}" if frag_from else ""
        return CheckResult(
            ID, TITLE, "ok",
            f"path MTU {mtu_txt} < interface mtu {iface_mtu}; bigger packets draw ICMP frag-needed"
            f"{via}: PMTUD works",
            value, evidence, command,
            meaning=("The path is narrower than this host's interface, and the router at the narrow "
                     "link says so ('fragmentation needed' with the MTU), so TCP lowers its segment "
                     f"size (MSS {lo - tcp_header}) and carries on. MTU is not a reset cause here unless "
                     "that ICMP is filtered only for some flows or at some times."),
            decision=("Nothing to fix for PMTUD. If resets happen only on large transfers, capture them "
                      "and check for retransmitted full-size segments; clamping the MSS at the narrow "
                      f"link ('{MSS_CLAMP}') saves one round trip per connection."),
        )
    return CheckResult(
        ID, TITLE, "ok",
        f"path MTU {mtu_txt} = interface mtu {iface_mtu}: full-size packets reach {addr}",
        value, evidence, command,
        meaning=("Packets as big as the interface allows reach the peer with Don't Fragment set, so "
                 "MTU and PMTUD are not part of this reset."),
        decision="Rule MTU out; move on to the other systemic checks (conntrack, keep-alive, nft rules).",
    )


def run(ctx: Context) -> CheckResult:
    if not ctx.peer_host:
        return CheckResult(ID, TITLE, "skipped", "not checked: needs the peer (--peer HOST:PORT)",
                           command="rst-triage probe mtu HOST")
    budget = max(0.5, min(CHECK_BUDGET, ctx.timeout - 0.4))
    return probe(ctx.peer_host, ctx.iface, lambda m: ctx.say(ID, m), budget=budget)
