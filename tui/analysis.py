"""Who sent each RST, and why: roles, vantage, per-reset classification, merged captures.

The signals are those of DESIGN section 4. Each classification carries evidence lines that
cite packet numbers, times and values, and a confidence earned by independent signals. When
the evidence is thin the answer is ``unknown`` (or a low confidence) with the capture or check
that would settle it: a wrong origin stated with confidence is the worst output we can give.
"""

from __future__ import annotations

import statistics
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Optional

from tui import rst_payload
from tui.capture_reader import ACK, FIN, RST, SYN, TcpPacket, open_capture
from tui.flows import CaptureScan, Conn, Direction, RstSighting, decode_frame, scan, syn_options
from tui.model import Analysis, CaptureInfo, Hints, ResetEvent
from tui.verdict import decide

INITIAL_TTLS = (64, 128, 255, 32)
IDLE_MIN = 0.5  # seconds: below this a pause is not an "idle" connection


@dataclass
class Scanned:
    """A capture's scan plus what we inferred about it."""

    scan: CaptureScan
    info: CaptureInfo
    local_ips: set[str] = field(default_factory=set)  # addresses of the vantage host
    host_ttl: dict[str, int] = field(default_factory=dict)  # usual TTL per sender address
    ip_packets: Counter = field(default_factory=Counter)  # packets sent per address
    rst_ttls: dict[int, Counter] = field(default_factory=dict)  # id(conn) -> (src, ttl) counts
    served: dict[tuple[str, int], float] = field(default_factory=dict)  # (ip, port) -> SYN-ACK time
    rst_sigs: set[tuple] = field(default_factory=set)  # (seq, ack, flags) of every RST kept
    isns: set[int] = field(default_factory=set)  # the originators' initial sequence numbers
    isn_of_rst: dict[int, int] = field(default_factory=dict)  # RST frame number -> conn's ISN
    span: tuple[float, float] = (0.0, 0.0)  # first and last packet time


def analyze_files(paths: list[str], hints: Optional[Hints] = None) -> Analysis:
    """Analyse one or more captures of the same incident (raises CaptureError)."""
    hints = hints or Hints()
    scanned: list[Scanned] = []
    try:
        for path in paths:
            cap = open_capture(path)
            try:
                sc = scan(cap)
            except BaseException:
                cap.close()
                raise
            scanned.append(_describe(sc, hints))
        roles = infer_roles(scanned, hints)
        for s in scanned:
            _assign_vantage(s, roles, hints)
        _align_clocks(scanned)
        events = []
        for s in scanned:
            for conn, sighting in s.scan.resets:
                events.append(_classify(s, conn, sighting, roles))
        _cross_check(events, scanned, roles)
        events.sort(key=lambda e: (e.aligned_time, e.capture, e.frame))
        verdict = decide(events, [s.info for s in scanned], roles)
        return Analysis(
            captures=[s.info for s in scanned],
            roles=dict(sorted(roles.items())),
            resets=events,
            verdict=verdict,
            resets_total=sum(s.scan.resets_total for s in scanned),
        )
    finally:
        for s in scanned:
            s.scan.close()


# --- describing one capture ------------------------------------------------------------------


def _describe(sc: CaptureScan, hints: Hints) -> Scanned:
    info = CaptureInfo(
        path=sc.path,
        format=sc.format,
        linktype=sc.linktype,
        packets=sc.frames,
        vantage="unknown",
        vantage_host=None,
        warnings=list(sc.warnings),
        resets_total=sc.resets_total,
    )
    s = Scanned(sc, info)
    ttl_votes: dict[str, Counter] = defaultdict(Counter)
    for conn in sc.conns:
        for d, ep in ((conn.a, conn.orig), (conn.b, conn.resp)):
            if d is not None:
                for ttl, n in d.ttl_counts().items():
                    ttl_votes[ep.ip][ttl] += n
    s.host_ttl = {ip: c.most_common(1)[0][0] for ip, c in ttl_votes.items()}
    s.local_ips = _local_ips(sc, s.host_ttl)
    for ip, votes in ttl_votes.items():
        s.ip_packets[ip] = sum(votes.values())
    isn_of_conn: dict[int, int] = {}
    for conn in sc.conns:
        if conn.b is not None and conn.b.syn is not None and conn.b.syn[3][conn.b.syn[7] + 13] & ACK:
            s.served.setdefault((conn.resp.ip, conn.resp.port), conn.b.syn[1])
        if conn.syn_seen and conn.a.syn is not None:
            p = decode_frame(conn.a.syn)
            if p is not None:
                s.isns.add(p.seq)
                isn_of_conn[id(conn)] = p.seq
    for conn, sg in sc.resets:
        p = sg.packet
        if p is None:
            continue
        s.rst_ttls.setdefault(id(conn), Counter())[(p.src, p.ttl)] += 1
        s.rst_sigs.add((p.seq, p.ack, p.flags & (SYN | ACK | RST)))
        if id(conn) in isn_of_conn:
            s.isn_of_rst[p.num] = isn_of_conn[id(conn)]
    if sc.conns:
        s.span = (min(c.first_ts for c in sc.conns), max(c.last_ts for c in sc.conns))
    return s


def _local_ips(sc: CaptureScan, host_ttl: dict[str, int]) -> set[str]:
    """Addresses of the host the capture was taken on (empty for a capture on a router).

    The vantage's address is an endpoint of nearly every connection; when that does not single
    one out (one connection, or a host with two addresses such as a proxy captured with
    ``-i any``), the vantage host's own packets still carry an initial TTL (64, 128, 255)
    while everything that crossed a router arrives decremented.
    """
    if not sc.conns:
        return set()
    count: Counter = Counter()
    for c in sc.conns:
        count.update({c.orig.ip, c.resp.ip})
    n = len(sc.conns)
    common = [ip for ip, k in count.items() if k >= 0.9 * n]
    initial = {ip for ip, ttl in host_ttl.items() if ttl in INITIAL_TTLS}
    if len(common) == 1:
        return set(common)
    if common:
        # one connection (or all between the same two hosts): the end whose packets were not
        # yet decremented by a router is the one we captured on
        cands = [ip for ip in common if ip in initial]
        return set(cands) if len(cands) == 1 else set()
    # A dual-stack host: its IPv4 and its IPv6 address between them are in every connection.
    v4 = max((ip for ip in count if ":" not in ip), key=count.__getitem__, default=None)
    v6 = max((ip for ip in count if ":" in ip), key=count.__getitem__, default=None)
    if v4 and v6 and count[v4] + count[v6] >= 0.9 * n and count[v4] >= 2 and count[v6] >= 2:
        if all(v4 in (c.orig.ip, c.resp.ip) or v6 in (c.orig.ip, c.resp.ip) for c in sc.conns):
            return {v4, v6}
    # A proxy captured with ``-i any`` accepts on one address and connects from another,
    # inside the inbound connection's lifetime; both of its addresses send with an
    # initial TTL.
    pairs = set()
    handshaken = sorted((c for c in sc.conns if c.syn_seen), key=lambda c: c.first_ts)
    starts = [c.first_ts for c in handshaken]
    for c1 in handshaken:
        if c1.resp.ip not in initial:
            continue
        for c2 in handshaken[bisect_left(starts, c1.first_ts) : bisect_right(starts, c1.last_ts)]:
            if (
                c2 is not c1
                and c2.orig.ip in initial
                and c2.orig.ip not in (c1.orig.ip, c1.resp.ip)
                and c2.resp.ip != c1.orig.ip
            ):
                pairs.add((c1.resp.ip, c2.orig.ip))
                if len(pairs) > 1:
                    return set()
    if len(pairs) == 1:
        local = set(next(iter(pairs)))
        if all(c.orig.ip in local or c.resp.ip in local for c in sc.conns):
            return local
    return set()


def infer_roles(scanned: list[Scanned], hints: Hints) -> dict[str, str]:
    """Role of every address: hints first, then the proxy pattern, then SYN direction."""
    roles: dict[str, str] = {}
    accepts: dict[str, list[Conn]] = defaultdict(list)
    opens: dict[str, list[Conn]] = defaultdict(list)
    for s in scanned:
        for c in s.scan.conns:
            if c.syn_seen:
                accepts[c.resp.ip].append(c)
                opens[c.orig.ip].append(c)
    proxies: set[str] = set()
    for ip, accepted in accepts.items():
        for out in opens.get(ip, ()):
            if any(_overlaps(a, out) and a.orig.ip != out.resp.ip for a in accepted):
                proxies.add(ip)
                break
    # A proxy captured on its own host may accept on one address and connect from another.
    for s in scanned:
        if len(s.local_ips) > 1:
            inbound = [c for c in s.scan.conns if c.resp.ip in s.local_ips]
            outbound = [c for c in s.scan.conns if c.orig.ip in s.local_ips]
            if any(_overlaps(a, o) for a in inbound for o in outbound):
                proxies |= s.local_ips
    everyone = {ip for s in scanned for c in s.scan.conns for ip in (c.orig.ip, c.resp.ip)}
    responders = {c.resp.ip for s in scanned for c in s.scan.conns}
    for ip in everyone:
        hinted = hints.role_of(ip)
        if hinted:
            roles[ip] = hinted
        elif ip in proxies:
            roles[ip] = "proxy"
        elif (ip in accepts or ip in responders) and not opens.get(ip):
            roles[ip] = "server"
        else:
            roles[ip] = "client"
    for role in ("client", "proxy", "server"):
        for ip in getattr(hints, role):
            roles.setdefault(ip, role)
    return roles


def _overlaps(inbound: Conn, outbound: Conn) -> bool:
    return inbound.first_ts - 0.5 <= outbound.first_ts <= inbound.last_ts + 0.5


def _assign_vantage(s: Scanned, roles: dict[str, str], hints: Hints) -> None:
    hinted = hints.vantage.get(s.info.path)
    if s.local_ips:
        host = sorted(s.local_ips)[0]
        s.info.vantage_host = host
        s.info.vantage = roles.get(host, "unknown")
    elif s.scan.conns:
        # Nobody's own packets: both ends arrive decremented, so this is a box in between.
        if all(s.host_ttl.get(ip, 0) not in INITIAL_TTLS for ip in _endpoints(s.scan)):
            s.info.vantage = "middlebox"
    if hinted:
        s.info.vantage = hinted
        if s.info.vantage_host is None or roles.get(s.info.vantage_host) != hinted:
            match = [ip for ip in _endpoints(s.scan) if roles.get(ip) == hinted]
            s.info.vantage_host = match[0] if len(match) == 1 else s.info.vantage_host
            if s.info.vantage_host:
                s.local_ips = {s.info.vantage_host}


def _endpoints(sc: CaptureScan) -> set[str]:
    out: set[str] = set()
    for c in sc.conns:
        out.update((c.orig.ip, c.resp.ip))
    return out


# --- clocks ----------------------------------------------------------------------------------


def _signatures(s: Scanned) -> dict[tuple, float]:
    """Packets that identify themselves across vantages: SYNs and RSTs (seq, ack, flags)."""
    sig: dict[tuple, float] = {}
    for c in s.scan.conns:
        for d in c.dirs():
            if d.syn is not None:
                p = decode_frame(d.syn)
                if p is not None:
                    sig[(p.seq, p.ack, p.flags & (SYN | ACK | RST))] = p.ts
    for _c, sighting in s.scan.resets:
        p = sighting.packet
        if p is not None:
            sig[(p.seq, p.ack, p.flags & (SYN | ACK | RST))] = p.ts
    return sig


def _align_clocks(scanned: list[Scanned]) -> None:
    """Shift every capture onto the first one's clock, through packets two captures share.

    Captures of different legs (client side, upstream side) share nothing directly, but a
    proxy's capture shares packets with both; offsets are chained through such links.
    """
    if len(scanned) < 2:
        return
    sigs = [_signatures(s) for s in scanned]
    done = {0}
    queue = [0]
    while queue:
        i = queue.pop(0)
        for j in range(len(scanned)):
            if j in done:
                continue
            diffs = [sigs[i][k] - t for k, t in sigs[j].items() if k in sigs[i]]
            if not diffs:
                continue
            off = statistics.median(diffs)
            # Captures on one machine (or well synchronised) differ by the path delay only;
            # leave those alone so that ordering inside a lab is not disturbed.
            own = off if abs(off) > 0.05 else 0.0
            scanned[j].info.clock_offset = scanned[i].info.clock_offset + own
            done.add(j)
            queue.append(j)
    for j, s in enumerate(scanned):
        if j not in done and s.scan.conns:
            s.info.warnings.append(
                f"{s.info.path}: no packet in common with the other captures; clocks assumed synchronised"
            )


# --- classification --------------------------------------------------------------------------


@dataclass
class Ctx:
    """The decoded neighbourhood of one RST."""

    rst: TcpPacket
    before: list[TcpPacket]
    after: list[TcpPacket]
    conn: Conn
    sender: Optional[Direction]
    peer_ip: str


def _decode_all(frames: Iterable[tuple]) -> list[TcpPacket]:
    out = []
    for fr in frames:
        p = decode_frame(fr)
        if p is not None:
            out.append(p)
    return out


def _fmt_t(t: float, t0: float) -> str:
    return f"t={t - t0:.3f}s"


def _classify(s: Scanned, conn: Conn, sighting: RstSighting, roles: dict[str, str]) -> ResetEvent:
    rst = sighting.packet
    assert rst is not None
    before = _decode_all(sighting.before)
    after = _decode_all(sighting.after)
    sender = conn.sent_by(rst.src, rst.sport)
    ctx = Ctx(rst, before, after, conn, sender, rst.dst)
    t0 = conn.first_ts
    ev = ResetEvent(
        time=rst.ts,
        capture=s.info.path,
        frame=rst.num,
        src=rst.src,
        sport=rst.sport,
        dst=rst.dst,
        dport=rst.dport,
        conn_state=conn_state(conn, rst, before),
        history=history(conn),
        origin="unknown",
        cause="unknown",
        confidence=0.2,
        evidence=[],
        seq=rst.seq,
        ack=rst.ack,
        flags=rst.flags,
        ttl=rst.ttl,
        ip_id=rst.ip_id,
        aligned_time=rst.ts + s.info.clock_offset,
    )
    role = roles.get(rst.src, "unknown")
    ev.evidence.append(
        f"RST #{rst.num} at {_fmt_t(rst.ts, t0)} from {rst.src}:{rst.sport} ({role}) to"
        f" {rst.dst}:{rst.dport}: flags {_flag_str(rst.flags)}, seq {rst.seq}, ack {rst.ack},"
        f" TTL {rst.ttl}, IP ID {_ipid(rst)}, window {rst.window},"
        f" options {_opt_str(rst.options)}"
    )
    if rst.payload_len:
        diag = rst_payload.describe(rst.payload)
        if diag:
            ev.evidence.append(f"RST diagnostic payload from the sender: {diag}")
        else:
            ev.evidence.append(f"RST carries {rst.payload_len} payload bytes: {_printable(rst.payload)}")
    local = rst.src in s.local_ips
    mine = [p for p in before if (p.src, p.sport) == (rst.src, rst.sport) and not p.flags & RST]
    peer = [p for p in before if (p.src, p.sport) != (rst.src, rst.sport)]
    ttl_view = _ttl_view(s, conn, rst)
    fp = _fingerprint(rst, mine)

    # 0. The sender had itself received a RST in this connection: a consequence, not a cause.
    earlier = [p for p in peer if p.flags & RST]
    if earlier:
        ev.origin = _origin(role)
        ev.confidence = 0.3
        ev.evidence.append(
            f"{rst.src} had already received RST #{earlier[-1].num} on this connection: this RST"
            " answers traffic for a connection that no longer exists there (a consequence)"
        )
        return ev
    # 1. An answer to a SYN: nothing listening, or a reject rule.
    syn = _answered_syn(rst, peer, mine)
    if syn is not None:
        _syn_reply(ev, s, conn, rst, syn, ttl_view, role, roles, t0)
        return ev
    # 2. The sender had closed (FIN) and the other side reused the connection.
    if _idle_close_reuse(ev, ctx, mine, peer, role, t0, ttl_view):
        return ev
    # 3. A NAT host's own RST to a segment its conntrack found out of window.
    if _nat_invalid(ev, ctx, mine, peer, ttl_view, t0):
        return ev
    # 4. A TTL that is not the sender's: somebody else sent it.
    if ttl_view.mismatch and not local:
        _forged(ev, ctx, peer, ttl_view, t0)
        return ev
    # 5. No socket wrote this RST, mid-connection, and nothing above explains why.
    if fp.reject_like and mine:
        ev.origin = _origin(role)
        ev.cause = "unknown"
        ev.confidence = 0.5 if ttl_view.known else 0.4
        ev.evidence.append(f"the RST was not written by {rst.src}'s socket: {fp.why}")
        ev.evidence.append(
            f"either a 'reject with tcp reset' rule on {rst.src} answered, or {rst.src} had"
            " already lost the connection (restart, or an earlier RST this capture did not see)"
        )
        if ttl_view.known:
            ev.evidence.append(f"TTL {rst.ttl} matches {rst.src}'s other packets: it came from that host")
        ev.next_steps.append(f"on {rst.src}: nft list ruleset | grep -n 'reject with tcp reset'")
        ev.next_steps.append(
            f"capture on {rst.src}'s side as well: a RST that reached it first would show there"
        )
        return ev
    # 6. An endpoint aborting: its own TTL and IP ID pattern, no FIN before.
    _abort(ev, ctx, mine, role, fp, ttl_view, local)
    return ev


def _origin(role: str) -> str:
    return role if role in ("client", "proxy", "server") else "unknown"


@dataclass
class TtlView:
    usual: Optional[int]  # the sender's usual TTL in this connection (or host-wide)
    others: int  # how many other packets from the sender back it up
    source: str  # "connection" | "host" | ""
    mismatch: bool
    delta: int  # RST TTL - usual

    @property
    def known(self) -> bool:
        return self.usual is not None


def _ttl_view(s: Scanned, conn: Conn, rst: TcpPacket) -> TtlView:
    d = conn.sent_by(rst.src, rst.sport)
    counts: Counter = Counter()
    if d is not None:
        counts.update(d.ttl_counts())
        # take the resets themselves out: we compare the RST with everything else
        for (src, ttl), n in s.rst_ttls.get(id(conn), Counter()).items():
            if src == rst.src:
                counts[ttl] -= n
    counts = Counter({t: n for t, n in counts.items() if n > 0})
    if counts:
        usual, n = counts.most_common(1)[0]
        stable = n >= 0.9 * sum(counts.values())
        return TtlView(usual, n, "connection", stable and rst.ttl != usual, rst.ttl - usual)
    host = s.host_ttl.get(rst.src)
    if host is not None and host != rst.ttl:
        # host-wide TTL includes this RST itself; only use it when other packets dominate
        total = s.ip_packets[rst.src]
        if total >= 3:
            return TtlView(host, total, "host", True, rst.ttl - host)
    return TtlView(None, 0, "", False, 0)


@dataclass
class Fingerprint:
    reject_like: bool
    socket_like: bool
    why: str


def _fingerprint(rst: TcpPacket, mine: list[TcpPacket]) -> Fingerprint:
    """Was the RST written by the sender's socket, or by a stack/netfilter without one?"""
    had_ts = any(p.tsval is not None for p in mine)
    ids = [p.ip_id for p in mine if p.ip_id is not None]
    reasons = []
    reject = rst.window == 0 and not rst.options
    if rst.ip_id == 0 and ids and any(i != 0 for i in ids):
        reasons.append(f"IP ID 0 while the sender's other packets use {ids[-1]}")
    elif rst.ip_id is not None and rst.ip_id != 0:
        reject = False
    if had_ts and rst.tsval is None:
        reasons.append("no TCP timestamp although the connection uses timestamps")
    if rst.window == 0 and not rst.options:
        reasons.append("window 0 and no TCP options")
    socket_like = (had_ts and rst.tsval is not None) or (
        rst.ip_id is not None and bool(ids) and 0 < (rst.ip_id - ids[-1]) % 65536 < 64
    )
    return Fingerprint(reject and not socket_like and bool(reasons), socket_like, "; ".join(reasons))


def _answered_syn(rst: TcpPacket, peer: list[TcpPacket], mine: list[TcpPacket]) -> Optional[TcpPacket]:
    if not rst.flags & ACK:
        return None
    if any(p.flags & SYN for p in mine):  # the sender had completed its half of the handshake
        return None
    for p in reversed(peer):
        if p.flags & SYN and not p.flags & ACK and rst.ack == (p.seq + 1) % 2**32:
            return p
    return None


def _syn_reply(
    ev: ResetEvent,
    s: Scanned,
    conn: Conn,
    rst: TcpPacket,
    syn: TcpPacket,
    tv: TtlView,
    role: str,
    roles: dict[str, str],
    t0: float,
) -> None:
    ev.evidence.append(
        f"it answers the SYN #{syn.num} from {syn.src}:{syn.sport} (ack {rst.ack} = SYN seq + 1)"
        f" {1000 * (rst.ts - syn.ts):.2f} ms later, with no SYN-ACK: the connection was refused"
    )
    served = s.served.get((rst.src, rst.sport))
    host_ttl = s.host_ttl.get(rst.src)
    mine_here = conn.sent_by(rst.src, rst.sport)
    other_pkts = s.ip_packets[rst.src] - (mine_here.n if mine_here is not None else 0)
    if host_ttl is not None and other_pkts >= 2 and host_ttl != rst.ttl and rst.src not in s.local_ips:
        ev.origin = "middlebox"
        ev.cause = "firewall-reject"
        ev.confidence = 0.6
        ev.evidence.append(
            f"TTL {rst.ttl} vs {host_ttl} on {rst.src}'s {other_pkts} packets in other"
            f" connections: a device {abs(rst.ttl - host_ttl)} hop(s)"
            f" {'nearer' if rst.ttl > host_ttl else 'farther'} refused it in {rst.src}'s name"
        )
        ev.next_steps.append(
            "capture on the server too: if the SYN never reaches it, a firewall in the path rejects it"
        )
        return
    ev.origin = _origin(role if role != "client" else "server")
    if served is not None:
        ev.cause = "firewall-reject"
        ev.confidence = 0.75
        ev.evidence.append(
            f"{rst.src}:{rst.sport} accepted another connection in this capture (SYN-ACK at"
            f" {_fmt_t(served, t0)}), so a listener exists: a reject rule refused this one"
        )
        ev.next_steps.append(f"on {rst.src}: nft list ruleset | grep -n 'reject with tcp reset'")
        return
    ev.cause = "no-listener"
    ev.confidence = 0.75
    ev.evidence.append(
        f"nothing accepted {rst.src}:{rst.sport} in this capture; a host firewall rule"
        " 'reject with tcp reset' looks the same on the wire"
    )
    ev.next_steps.append(f"on {rst.src}: ss -ltn 'sport = :{rst.sport}' (is anything listening?)")
    ev.next_steps.append(f"on {rst.src}: nft list ruleset | grep -n 'reject with tcp reset'")


def _idle_close_reuse(
    ev: ResetEvent,
    ctx: Ctx,
    mine: list[TcpPacket],
    peer: list[TcpPacket],
    role: str,
    t0: float,
    tv: TtlView,
) -> bool:
    rst = ctx.rst
    fins = [p for p in mine if p.flags & FIN]
    if not fins:
        return False
    fin = fins[0]
    reuse = [p for p in peer if p.ts >= fin.ts and p.payload_len > 0 and not p.flags & RST]
    if not reuse:
        return False
    data = reuse[0]
    earlier = [p for p in ctx.before if p.ts < fin.ts]
    last_activity = max((p.ts for p in earlier), default=ctx.conn.first_ts)
    idle = fin.ts - last_activity
    if idle < IDLE_MIN or idle < 5 * _typical_gap(earlier):
        return False  # a close right after traffic is not an idle timeout
    wait = data.ts - fin.ts
    peer_role = ctx.peer_ip
    ev.origin = _origin(role)
    ev.cause = "idle-close-reuse"
    ev.confidence = 0.85 if not tv.mismatch else 0.5
    ev.evidence.append(
        f"{rst.src} closed the connection first: FIN #{fin.num} at {_fmt_t(fin.ts, t0)}"
        f" after {idle:.2f}s without traffic (its keep-alive idle timeout is about {idle:.1f}s)"
    )
    ev.evidence.append(
        f"{peer_role} kept the connection and sent {data.payload_len} bytes on it"
        f" (#{data.num}, {wait:.2f}s after the FIN): reuse of a connection the other side had closed"
    )
    ev.evidence.append(f"{rst.src} no longer had the socket and answered with RST #{rst.num}")
    if tv.mismatch:
        ev.evidence.append(
            f"but the RST's TTL {rst.ttl} differs from {rst.src}'s usual {tv.usual}:"
            " check for a device in between"
        )
    ev.next_steps.append(
        f"make the client's pool idle timeout shorter than {rst.src}'s keep-alive timeout"
        f" (~{idle:.1f}s), or retry idempotent requests on a reset of a reused connection"
    )
    return True


def _nat_invalid(
    ev: ResetEvent, ctx: Ctx, mine: list[TcpPacket], peer: list[TcpPacket], tv: TtlView, t0: float
) -> bool:
    rst = ctx.rst
    if not peer or not tv.known or tv.delta != 1:
        return False
    trigger = peer[-1]
    if not trigger.flags & ACK or rst.seq != trigger.ack or rst.ts - trigger.ts > 1.0:
        return False
    acked = [p.ack for p in mine if p.flags & ACK]
    if not acked:
        return False
    expected = acked[-1]
    ahead = (trigger.seq - expected) % 2**32
    wscale = _wscale(ctx.conn, rst.src, rst.sport)
    windows = [p.window for p in mine if not p.flags & (SYN | RST)]
    window = (windows[-1] if windows else 65535) << wscale
    if ahead == 0 or ahead >= 2**31 and ahead != 0:
        # at or below the window's left edge: a late retransmission, not INVALID on new kernels
        below = (expected - trigger.seq) % 2**32
        if ahead == 0 or below > 2**30:
            return False
    beyond = 0 < ahead < 2**31 and ahead > window
    if not beyond:
        return False
    ev.origin = "middlebox"
    ev.cause = "nat-conntrack-invalid"
    ev.confidence = 0.8
    ev.evidence.append(
        f"segment #{trigger.num} from {trigger.src} at {_fmt_t(trigger.ts, t0)} has seq {trigger.seq},"
        f" {ahead} bytes beyond what {rst.src} had acknowledged ({expected}) and beyond its"
        f" window ({window} bytes): conntrack marks such a segment INVALID"
    )
    ev.evidence.append(
        f"the RST's seq {rst.seq} equals that segment's ack: the reply of a stack with no socket"
        f" for it, {1000 * (rst.ts - trigger.ts):.2f} ms later"
    )
    ev.evidence.append(
        f"RST TTL {rst.ttl} vs {tv.usual} on {rst.src}'s other {tv.others} packets: it was made"
        " one hop nearer, on the NAT host, not by the endpoint whose packets it forwards"
    )
    ev.next_steps.append(
        "on the NAT host: conntrack -S (invalid rising?), sysctl net.netfilter.nf_conntrack_tcp_be_liberal"
    )
    ev.next_steps.append(
        "fix: nft insert rule inet filter input ct state invalid drop (the untranslated segment"
        " is addressed to the NAT host itself, so a forward-chain drop does not help),"
        " or set nf_conntrack_tcp_be_liberal=1"
    )
    return True


def _wscale(conn: Conn, ip: str, port: int) -> int:
    d = conn.sent_by(ip, port)
    other = conn.b if d is conn.a else conn.a
    if d is None or d.syn is None or other is None or other.syn is None:
        return 0
    ws = syn_options(d.syn).get(3)
    if ws is None or syn_options(other.syn).get(3) is None:
        return 0
    return min(ws[0], 14) if ws else 0


def _forged(ev: ResetEvent, ctx: Ctx, peer: list[TcpPacket], tv: TtlView, t0: float) -> None:
    rst = ctx.rst
    ev.origin = "middlebox"
    scope = "in this connection" if tv.source == "connection" else "in this capture"
    assert tv.usual is not None
    same_distance = hops(rst.ttl) == hops(tv.usual)
    if tv.delta > 0:
        ev.evidence.append(
            f"RST TTL {rst.ttl} vs {tv.usual} on {rst.src}'s other {tv.others} packets ({scope}):"
            f" a device {tv.delta} hop(s) nearer than {rst.src} sent it"
        )
    elif same_distance:
        ev.evidence.append(
            f"RST TTL {rst.ttl} vs {tv.usual} on {rst.src}'s other {tv.others} packets ({scope}):"
            f" the same distance ({hops(rst.ttl)} hops) but another initial TTL, so another TCP stack"
            f" next to {rst.src} (a load balancer or firewall in front of it) sent it"
        )
    else:
        ev.evidence.append(
            f"RST TTL {rst.ttl} vs {tv.usual} on {rst.src}'s other {tv.others} packets ({scope}):"
            " not the same sender (farther away, or another initial TTL)"
        )
    trigger = peer[-1] if peer else None
    gap = 0.0
    if trigger is not None:
        prior = [p for p in ctx.before if p.ts < trigger.ts]
        gap = trigger.ts - max((p.ts for p in prior), default=trigger.ts)
    typical = _typical_gap(ctx.before)
    real_after = [
        p
        for p in ctx.after
        if (p.src, p.sport) == (rst.src, rst.sport) and not p.flags & RST and p.ttl == tv.usual
    ]
    if trigger is not None and gap >= IDLE_MIN and gap >= 10 * max(typical, 0.001) and not real_after:
        ev.cause = "state-expired"
        ev.confidence = 0.7
        ev.evidence.append(
            f"the connection was idle {gap:.1f}s before #{trigger.num} (usual gap {typical * 1000:.1f} ms):"
            " a stateful device in the path had forgotten it and answered for the endpoint"
        )
        ev.next_steps.append(
            "compare the idle gap with conntrack/NAT/LB idle timeouts on the path"
            " (nf_conntrack_tcp_timeout_established, cloud NAT ~350 s); enable TCP keepalive below it"
        )
        return
    ev.cause = "injected"
    ev.confidence = 0.55 if same_distance and tv.delta < 0 else 0.7
    if real_after:
        ev.confidence = 0.8
        ev.evidence.append(
            f"{rst.src} kept sending after the RST (#{real_after[0].num}, TTL {real_after[0].ttl}):"
            " the real endpoint never reset the connection"
        )
    if trigger is not None:
        ev.evidence.append(
            f"it follows #{trigger.num} from {trigger.src} by {1000 * (rst.ts - trigger.ts):.2f} ms"
        )
    ev.next_steps.append(f"capture on {rst.src} at the same time: a forged RST never appears there")


def hops(ttl: int) -> int:
    """Routers crossed, assuming the smallest common initial TTL at or above ``ttl``."""
    return min(i for i in (32, 64, 128, 255) if i >= ttl) - ttl


def _typical_gap(pkts: list[TcpPacket]) -> float:
    gaps = [b.ts - a.ts for a, b in zip(pkts, pkts[1:]) if b.ts >= a.ts]
    return statistics.median(gaps) if gaps else 0.0


def _abort(
    ev: ResetEvent,
    ctx: Ctx,
    mine: list[TcpPacket],
    role: str,
    fp: Fingerprint,
    tv: TtlView,
    local: bool,
) -> None:
    rst = ctx.rst
    ev.origin = _origin(role)
    ev.cause = "abort"
    ev.confidence = 0.6
    if local:
        ev.confidence = 0.8
        ev.evidence.append(f"captured on {rst.src} itself: the RST left that host (TTL {rst.ttl})")
    elif tv.known:
        ev.confidence = 0.7
        ev.evidence.append(
            f"TTL {rst.ttl} matches {rst.src}'s other {tv.others} packets: the endpoint itself sent it"
        )
    else:
        ev.confidence = 0.45
        ev.evidence.append("no other packet from the sender to compare TTL and IP ID with")
    if fp.socket_like:
        ev.evidence.append(
            "written by the sender's socket (timestamp option / IP ID in sequence):"
            " the application closed with SO_LINGER 0, closed with unread data, or timed out"
        )
        ev.confidence += 0.05
    data_from_peer = [p for p in ctx.before if (p.src, p.sport) != (rst.src, rst.sport) and p.payload_len]
    data_from_me = [p for p in mine if p.payload_len]
    if data_from_peer and (not data_from_me or data_from_me[-1].ts < data_from_peer[-1].ts):
        last = data_from_peer[-1]
        ev.evidence.append(
            f"{rst.src} had received {last.payload_len} bytes (#{last.num}) and not answered yet"
            f" ({1000 * (rst.ts - last.ts):.1f} ms before the RST)"
        )
    if role == "proxy":
        ev.evidence.append(
            "the sender is a proxy: the upstream side decides between proxy-abort and upstream-reset"
        )
    if not ctx.conn.syn_seen:
        ev.confidence = min(ev.confidence, 0.5)
        ev.evidence.append("the capture has no handshake for this connection: roles are guessed from ports")
    ev.next_steps.append(
        f"on {rst.src}: ss -tnpi dst {rst.dst} (which process owns the socket), and its logs at that time"
    )


# --- several vantages ------------------------------------------------------------------------


def _cross_check(events: list[ResetEvent], scanned: list[Scanned], roles: dict[str, str]) -> None:
    """Use the other captures: was the RST seen leaving its claimed sender, or missing there?"""
    if len(scanned) < 2:
        _proxy_upstream(events, scanned, roles)
        _single_capture_caps(events, scanned, roles)
        return
    for ev in events:
        key = (ev.seq, ev.ack, ev.flags & (SYN | ACK | RST))
        here = next(i for i, s in enumerate(scanned) if s.info.path == ev.capture)
        conn_isn = scanned[here].isn_of_rst.get(ev.frame)
        seen_at, missing_at = [], []
        for i, s in enumerate(scanned):
            if i == here:
                continue
            if key in s.rst_sigs:
                seen_at.append(s)
            elif conn_isn is not None and conn_isn in s.isns and _covers(s, ev):
                missing_at.append(s)
        sender_role = roles.get(ev.src, "unknown")
        for s in seen_at:
            if ev.src in s.local_ips or (
                s.info.vantage_host and roles.get(ev.src) == s.info.vantage and ev.src == s.info.vantage_host
            ):
                ev.evidence.append(
                    f"also captured leaving {ev.src} itself ({s.info.path}): that host sent it"
                )
                if ev.origin != "middlebox" and ev.cause not in ("nat-conntrack-invalid", "unknown"):
                    ev.confidence = max(ev.confidence, 0.85)
                elif ev.origin == "middlebox":
                    # we thought it forged; the sender's own capture shows it. Trust the packets.
                    ev.origin = _origin(sender_role)
                    ev.cause = "abort" if ev.cause in ("injected", "state-expired") else ev.cause
                    ev.confidence = 0.6
            else:
                ev.evidence.append(f"also seen at {s.info.vantage} vantage ({s.info.path})")
        for s in missing_at:
            host = s.info.vantage_host or s.info.vantage
            claimed_here = ev.src in s.local_ips
            ev.evidence.append(
                f"the capture on {host} ({s.info.path}) has this connection but not this RST"
                + (f": {ev.src} never sent it" if claimed_here else "")
            )
            if claimed_here:
                # the capture that would have settled it is here: point at the path instead
                ev.next_steps = [n for n in ev.next_steps if not n.startswith(f"capture on {ev.src}")]
                ev.next_steps.insert(
                    0,
                    f"capture on the devices between {ev.dst} and {ev.src} (routers, firewalls,"
                    " load balancers, IDS) to find the one that sends it",
                )
            if claimed_here and ev.origin == "middlebox":
                ev.confidence = max(ev.confidence, 0.9)
            elif claimed_here and ev.origin != "middlebox":
                ev.evidence.append(f"so the RST was made in {ev.src}'s name by a device between the vantages")
                ev.origin = "middlebox"
                ev.cause = (
                    "injected" if ev.cause not in ("state-expired", "nat-conntrack-invalid") else ev.cause
                )
                ev.confidence = 0.75
            elif ev.origin == "middlebox":
                ev.confidence = min(0.95, ev.confidence + 0.1)
    _proxy_upstream(events, scanned, roles)
    _single_capture_caps(events, scanned, roles)


def _covers(s: Scanned, ev: ResetEvent) -> bool:
    """Did capture ``s`` run at the time of the RST (after clock alignment)?"""
    if not s.scan.conns:
        return False
    start, end = s.span
    off = s.info.clock_offset
    return start + off <= ev.aligned_time <= end + off + 0.5


def _proxy_upstream(events: list[ResetEvent], scanned: list[Scanned], roles: dict[str, str]) -> None:
    """Resets around a proxy: its upstream failed first (upstream-reset) or it gave up itself."""
    proxy_ips = {ip for ip, r in roles.items() if r == "proxy"}
    if not proxy_ips:
        return
    client_side = [e for e in events if e.src in proxy_ips and roles.get(e.dst) != "server"]
    for ev in events:
        # A server's RST (or FIN) to a proxy that then resets its own client.
        if ev.dst in proxy_ips and roles.get(ev.src) == "server" and ev.origin == "server":
            follow = [c for c in client_side if 0 <= c.aligned_time - ev.aligned_time <= 5.0]
            if follow:
                c = follow[0]
                ev.cause = "upstream-reset"
                ev.confidence = max(ev.confidence, 0.8)
                ev.evidence.append(
                    f"the proxy {ev.dst} then reset its client {c.dst}:{c.dport}"
                    f" {1000 * (c.aligned_time - ev.aligned_time):.1f} ms later ({c.capture}):"
                    " the client's 'connection reset' started here, at the server"
                )
                ev.next_steps.append(
                    f"on {ev.src}: why did the server abort? (application log, crash, restart, SO_LINGER 0)"
                )
    for ev in events:
        if ev.src not in proxy_ips or ev.origin not in ("proxy", "unknown"):
            continue
        if ev.cause not in ("abort", "unknown"):
            continue
        upstream = _upstream_conns(ev, scanned, roles, proxy_ips)
        if not upstream:
            continue
        s, up = upstream[-1]
        closed_first = None
        for p in _decode_all(s.scan.frames_of(up)):
            at = p.ts + s.info.clock_offset
            if (p.src, p.sport) == (up.resp.ip, up.resp.port) and p.flags & (RST | FIN):
                if at <= ev.aligned_time + 0.0005:
                    closed_first = p
                break
        if closed_first is not None:
            kind = "RST" if closed_first.flags & RST else "FIN"
            ev.origin = "server"
            ev.cause = "upstream-reset"
            ev.confidence = 0.8
            ev.evidence.append(
                f"upstream {up.resp.ip}:{up.resp.port} sent {kind} #{closed_first.num} ({s.info.path})"
                f" {1000 * (ev.aligned_time - closed_first.ts - s.info.clock_offset):.1f} ms before"
                " the proxy reset its client: the proxy passed on its upstream's failure"
            )
            ev.next_steps.append(
                f"on {up.resp.ip}: why did the server {'abort' if kind == 'RST' else 'close'} the"
                " upstream connection? (application log, crash, restart, keep-alive timeout)"
            )
        else:
            waited = ev.aligned_time - (up.first_ts + s.info.clock_offset)
            ev.origin = "proxy"
            ev.cause = "proxy-abort"
            ev.confidence = 0.8
            ev.evidence.append(
                f"its upstream connection to {up.resp.ip}:{up.resp.port} ({s.info.path}) had no RST"
                f" or FIN from the server before this RST, {waited:.2f}s after the proxy opened it:"
                " the proxy gave up on its own (timeout, limit or policy)"
            )
            ev.next_steps.append(
                "read the proxy's log for this request (haproxy termination state sH--/cD--,"
                " nginx 499/504) and compare its timeouts with the upstream's response time"
            )


def _upstream_conns(
    ev: ResetEvent, scanned: list[Scanned], roles: dict[str, str], proxy_ips: set[str]
) -> list[tuple[Scanned, Conn]]:
    """The proxy's connections to servers that were open when it sent ``ev`` (oldest first)."""
    out = []
    for s in scanned:
        for c in s.scan.conns:
            if c.orig.ip in proxy_ips and roles.get(c.resp.ip) == "server":
                start = c.first_ts + s.info.clock_offset
                if start <= ev.aligned_time + 0.001:
                    out.append((s, c))
    out.sort(key=lambda sc: sc[1].first_ts + sc[0].info.clock_offset)
    return out


def _single_capture_caps(events: list[ResetEvent], scanned: list[Scanned], roles: dict[str, str]) -> None:
    """Seen from one end, a proxy looks like a server (or a client): say so, lower the bar."""
    for ev in events:
        if ev.origin not in ("client", "server") or any(ev.src in s.local_ips for s in scanned):
            continue
        hidden = "behind" if ev.origin == "server" else "in front of"
        if _other_side_seen(ev.src, ev.origin, scanned):
            continue
        if ev.confidence >= 0.7:
            ev.confidence = 0.65
        ev.evidence.append(
            f"no capture shows {ev.src}'s other side: if it is a proxy or load balancer,"
            f" the reset may have started {hidden} it"
        )
        ev.next_steps.append(f"capture on {ev.src} too (or pass --{ev.origin}/--proxy) to confirm its role")


def _other_side_seen(ip: str, origin: str, scanned: list[Scanned]) -> bool:
    """A server seen opening no connection, a client seen accepting none, from its own host."""
    for s in scanned:
        if ip in s.local_ips:
            return True
    return False


# --- Zeek-style summaries --------------------------------------------------------------------


def conn_state(conn: Conn, rst: TcpPacket, before: list[TcpPacket]) -> str:
    """Zeek's conn_state for a connection, as it stood when this RST was sent."""
    orig = (conn.orig.ip, conn.orig.port)
    orig_rst = orig == (rst.src, rst.sport)
    syn = any(p.flags & SYN and not p.flags & ACK and (p.src, p.sport) == orig for p in before)
    synack = any(p.flags & SYN and p.flags & ACK and (p.src, p.sport) != orig for p in before)
    if not conn.syn_seen or (syn and synack):
        return "RSTO" if orig_rst else "RSTR"
    if syn and not synack:
        return "RSTOS0" if orig_rst else "REJ"
    if synack and not syn:
        return "RSTRH" if not orig_rst else "RSTO"
    return "RSTO" if orig_rst else "RSTR"


_LETTERS = {SYN: "s", ACK: "a", FIN: "f", RST: "r", 0: "d"}


def history(conn: Conn) -> str:
    """Zeek-style history: upper case for the originator; S/H handshake, A, D, F, R."""
    marks = []
    for d, upper in ((conn.a, True), (conn.b, False)):
        if d is None:
            continue
        for num, bit in d.history:
            ch = _LETTERS[bit]
            if bit == SYN and d.syn is not None and d.syn[3][d.syn[7] + 13] & ACK:
                ch = "h"
            marks.append((num, ch.upper() if upper else ch))
    marks.sort()
    return "".join(ch for _n, ch in marks)


def _flag_str(flags: int) -> str:
    names = [(SYN, "SYN"), (FIN, "FIN"), (RST, "RST"), (0x08, "PSH"), (ACK, "ACK"), (0x20, "URG")]
    return ",".join(n for bit, n in names if flags & bit) or "none"


def _opt_str(opts: tuple) -> str:
    names = {2: "MSS", 3: "WS", 4: "SACK_PERM", 5: "SACK", 8: "TS", 19: "MD5", 29: "AO"}
    return ",".join(names.get(o, str(o)) for o in opts) or "none"


def _ipid(p: TcpPacket) -> str:
    return "-" if p.ip_id is None else str(p.ip_id)


def _printable(b: bytes) -> str:
    text = b[:80].decode("ascii", "replace")
    clean = "".join(ch if ch.isprintable() else "." for ch in text)
    return repr(clean) + ("..." if len(b) > 80 else "")
