"""port-range: how much of the ephemeral port range the busiest destination uses.

A connect() needs a local port that no other socket uses toward the same (source IP,
destination IP, destination port). The range (``net.ipv4.ip_local_port_range``, minus
``ip_local_reserved_ports``) is therefore a budget per destination tuple. The socket table
comes from the snapshot shared with the sockets check (sock_diag or /proc/net/tcp{,6}).
"""

from __future__ import annotations

from collections import Counter
from typing import Optional

from tui.checks import CheckResult, Context, Unavailable, read_text
from tui.checks.route import peer_addresses_or_note
from tui.checks.sockets import Sock, snapshot

ID = "port-range"
TITLE = "Ephemeral port usage"
PLAYBOOK = "third"

WARN_PCT = 70.0
FAIL_PCT = 90.0
SYSCTL = "/proc/sys/net/ipv4/"


def parse_range(text: str) -> tuple[int, int]:
    lo, hi = (int(x) for x in text.split()[:2])
    return lo, hi


def parse_reserved(text: str) -> set[int]:
    """``ip_local_reserved_ports``: ``8080,9000-9010`` (empty when none)."""
    out: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        a, _, b = part.partition("-")
        lo, hi = int(a), int(b or a)
        out.update(range(lo, min(hi, 65535) + 1))
    return out


def _read_opt(name: str) -> Optional[str]:
    try:
        return read_text(SYSCTL + name).strip()
    except Unavailable:
        return None


def _ep(addr: str, port: Optional[int] = None) -> str:
    host = f"[{addr}]" if ":" in addr else addr
    return f"{host}:{port}" if port is not None else host


def ephemeral(socks: list[Sock], lo: int, hi: int, reserved: set[int]) -> list[Sock]:
    """Sockets holding an ephemeral port toward some destination.

    Listeners and the connections they accepted hold their service port, not an ephemeral one:
    sockets whose local port is a listening port are left out.
    """
    listening = {s.lport for s in socks if s.state == "LISTEN"}
    return [s for s in socks
            if s.state != "LISTEN" and s.rport and s.lport not in listening
            and lo <= s.lport <= hi and s.lport not in reserved]


def tuples(socks: list[Sock]) -> Counter[tuple[str, str, int]]:
    """Counted per (source IP, destination IP, destination port)."""
    return Counter((s.local, s.remote, s.rport) for s in socks)


def run(ctx: Context) -> CheckResult:
    lo, hi = parse_range(read_text(SYSCTL + "ip_local_port_range"))
    reserved_txt = _read_opt("ip_local_reserved_ports") or ""
    reserved = parse_reserved(reserved_txt)
    reserved_in = sum(1 for p in reserved if lo <= p <= hi)
    size = max(1, hi - lo + 1 - reserved_in)
    tw_reuse = _read_opt("tcp_tw_reuse")
    addrs, peer_note = peer_addresses_or_note(ctx)
    snap = snapshot()
    held = ephemeral(snap.socks, lo, hi, reserved)
    counts = tuples(held)
    by_state: dict[tuple[str, str, int], Counter[str]] = {}
    for s in held:
        by_state.setdefault((s.local, s.remote, s.rport), Counter())[s.state] += 1

    def describe(key: tuple[str, str, int], n: int) -> str:
        states = ", ".join(f"{k} {v}" for k, v in by_state.get(key, Counter()).most_common())
        return (f"{_ep(key[0])} -> {_ep(key[1], key[2])}: {n} of {size} ports "
                f"({100.0 * n / size:.1f} %; {states})")

    busiest = counts.most_common(5)
    peer_keys = []
    if addrs:
        aset = set(addrs)
        peer_keys = [(k, n) for k, n in counts.most_common()
                     if k[1] in aset and (ctx.peer_port is None or k[2] == ctx.peer_port)]
    evidence = [f"net.ipv4.ip_local_port_range = {lo} {hi} ({hi - lo + 1} ports"
                + (f", {reserved_in} reserved" if reserved_in else "") + f"; usable {size})",
                f"net.ipv4.ip_local_reserved_ports = {reserved_txt or '(none)'}",
                f"net.ipv4.tcp_tw_reuse = {tw_reuse if tw_reuse is not None else '?'}"
                " (1: TIME-WAIT ports are reused for new outgoing connections; 2: loopback only)"]
    evidence += [("busiest: " if i == 0 else "") + describe(k, n) for i, (k, n) in enumerate(busiest)]
    if addrs:
        if peer_keys:
            evidence += ["to the peer: " + describe(k, n) for k, n in peer_keys[:3]]
        else:
            evidence.append(f"to the peer: no socket holds an ephemeral port toward {', '.join(addrs)}")
    evidence += snap.notes + ([peer_note] if peer_note else [])
    top_key, top_n = busiest[0] if busiest else (None, 0)
    pct = 100.0 * top_n / size
    peer_n = peer_keys[0][1] if peer_keys else 0

    def tuple_json(key: Optional[tuple[str, str, int]], n: int) -> Optional[dict]:
        if key is None:
            return None
        return {"src": key[0], "dst": key[1], "dport": key[2], "count": n,
                "pct": round(100.0 * n / size, 1), "states": dict(by_state.get(key, Counter()))}

    value = {
        "range": [lo, hi], "size": size, "reserved_in_range": reserved_in,
        "tcp_tw_reuse": int(tw_reuse) if tw_reuse and tw_reuse.isdigit() else None,
        "busiest": tuple_json(top_key, top_n),
        "peer": tuple_json(peer_keys[0][0], peer_n) if peer_keys else None,
        "tuples": len(counts), "source": snap.source,
    }
    dst_txt = ""
    if addrs:
        dst_txt = " dst " + (_ep(addrs[0], ctx.peer_port) if ctx.peer_port else _ep(addrs[0]))
    command = (f"sysctl net.ipv4.ip_local_port_range net.ipv4.ip_local_reserved_ports net.ipv4.tcp_tw_reuse; "
               f"ss -tan state all{dst_txt} | wc -l")
    meaning = ("Every outgoing connection to one destination (IP and port) from one source IP needs "
               "its own local port; sockets in TIME-WAIT keep theirs for 60 s. When the range runs "
               "out, connect() fails with EADDRNOTAVAIL, and under pressure the kernel reuses "
               "ports quickly: a SYN on a 4-tuple the server (or a NAT) still remembers is answered "
               "with a challenge ACK or a RST.")
    decision = ("Reuse connections (keep-alive pools) instead of one connection per request; widen the "
                "range: sysctl -w net.ipv4.ip_local_port_range=\"1024 65000\" (persist it in "
                "/etc/sysctl.d/); allow TIME-WAIT reuse for outgoing connections: sysctl -w "
                "net.ipv4.tcp_tw_reuse=1; or spread connections over more source IPs or "
                "destination ports.")
    if top_key is None:
        return CheckResult(
            ID, TITLE, "ok",
            f"no socket holds an ephemeral port; range {lo}-{hi} ({size} usable ports)",
            value, evidence, command, meaning=meaning,
            decision="No port pressure now; if resets come in bursts, run this during one.",
        )
    head = (f"busiest {_ep(top_key[0])} -> {_ep(top_key[1], top_key[2])}: {top_n} of {size} "
            f"ports ({pct:.1f} %)")
    if addrs and peer_keys and peer_keys[0][0] != top_key:
        head += f"; to the peer {peer_n} ({100.0 * peer_n / size:.1f} %)"
    if pct >= FAIL_PCT:
        return CheckResult(ID, TITLE, "fail", head + f" >= {FAIL_PCT:.0f} %: nearly exhausted",
                           value, evidence, command, meaning=meaning, decision=decision)
    if pct >= WARN_PCT:
        return CheckResult(ID, TITLE, "warn", head + f" >= {WARN_PCT:.0f} %", value, evidence, command,
                           meaning=meaning, decision=decision)
    return CheckResult(
        ID, TITLE, "ok", head + f" (below {WARN_PCT:.0f} %)", value, evidence, command, meaning=meaning,
        decision="Port exhaustion is not the cause now; if resets come in bursts, run this during one.",
    )
