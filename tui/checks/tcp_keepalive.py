"""tcp-keepalive: would TCP keepalive probes keep an idle connection alive through a NAT?

Compares ``net.ipv4.tcp_keepalive_time/intvl/probes`` with the conntrack established timeout
of this namespace (when conntrack is loaded) and with the idle timeouts of common NAT gateways
and load balancers. TCP keepalive only runs on sockets that ask for it (SO_KEEPALIVE): the
check counts the established sockets (to the peer, or all) that show a keepalive timer.
"""

from __future__ import annotations

from typing import Optional

from tui.checks import CheckResult, Context, Unavailable, read_text
from tui.checks.route import peer_addresses_or_note
from tui.checks.sockets import matches_peer, snapshot

ID = "tcp-keepalive"
TITLE = "TCP keepalive vs NAT idle timeouts"
PLAYBOOK = "third"

# Idle timeouts for established TCP flows of well-known middleboxes (seconds), shortest first.
COMMON_IDLE_TIMEOUTS: list[tuple[str, int]] = [
    ("Azure LB/NAT", 240),  # Azure Load Balancer and NAT gateway default idle timeout, 4 min
    ("AWS NAT gateway", 350),
    ("GCP Cloud NAT", 1200),  # established TCP
]
SYSCTL = "/proc/sys/net/"
CONNTRACK_TIMEOUT = "netfilter/nf_conntrack_tcp_timeout_established"


def _int(path: str) -> int:
    return int(read_text(SYSCTL + path).strip())


def _optional_int(path: str) -> Optional[int]:
    try:
        return _int(path)
    except (Unavailable, ValueError):
        return None


def run(ctx: Context) -> CheckResult:
    ka_time = _int("ipv4/tcp_keepalive_time")
    ka_intvl = _int("ipv4/tcp_keepalive_intvl")
    ka_probes = _int("ipv4/tcp_keepalive_probes")
    ct_est = _optional_int(CONNTRACK_TIMEOUT)
    addrs, peer_note = peer_addresses_or_note(ctx)
    give_up = ka_time + ka_intvl * ka_probes

    # Which sockets actually use keepalive (cheap: the shared socket snapshot).
    sock_note = ""
    established = with_timer = 0
    max_left: Optional[float] = None
    try:
        snap = snapshot()
        aset = set(addrs)
        est = [s for s in snap.socks if s.state == "ESTAB"
               and (not addrs or matches_peer(s, aset, ctx.peer_port))]
        established = len(est)
        ka = [s for s in est if s.timer == "keepalive"]
        with_timer = len(ka)
        max_left = max((s.expires_s for s in ka), default=None)
    except Unavailable as e:
        sock_note = f"sockets not read: {e.reason}"

    timeouts = list(COMMON_IDLE_TIMEOUTS)
    if ct_est is not None:
        timeouts.append(("conntrack on this host", ct_est))
    shortest_name, shortest = min(COMMON_IDLE_TIMEOUTS, key=lambda t: t[1])
    beaten = [(n, t) for n, t in timeouts if ka_time > t]

    evidence = [
        f"net.ipv4.tcp_keepalive_time = {ka_time} s (first probe after this much idle time)",
        f"net.ipv4.tcp_keepalive_intvl = {ka_intvl} s, tcp_keepalive_probes = {ka_probes} "
        f"(a dead peer is noticed after {give_up} s)",
        (f"net.netfilter.nf_conntrack_tcp_timeout_established = {ct_est} s" if ct_est is not None
         else "net.netfilter.nf_conntrack_tcp_timeout_established: not readable (conntrack not loaded here)"),
    ]
    for name, t in timeouts:
        mark = "EXPIRES FIRST" if ka_time > t else "ok"
        evidence.append(f"idle timeout {name}: {t} s - {mark}")
    who = "to the peer" if addrs else "on this host"
    if peer_note:
        evidence.append(peer_note)
    if sock_note:
        evidence.append(sock_note)
    else:
        line = f"{with_timer} of {established} established socket(s) {who} have a keepalive timer running"
        if max_left is not None:
            line += f" (longest wait to the next probe: {max_left:.0f} s)"
        evidence.append(line)
    value = {
        "keepalive_time": ka_time, "keepalive_intvl": ka_intvl, "keepalive_probes": ka_probes,
        "dead_peer_detect_s": give_up, "conntrack_established_timeout": ct_est,
        "common_idle_timeouts": {n: t for n, t in COMMON_IDLE_TIMEOUTS},
        "shorter_timeouts": {n: t for n, t in beaten},
        "established": established if not sock_note else None,
        "with_keepalive_timer": with_timer if not sock_note else None,
        "scope": "peer" if addrs else "all",
    }
    command = "sysctl net.ipv4.tcp_keepalive_time net.ipv4.tcp_keepalive_intvl net.ipv4.tcp_keepalive_probes"
    if ct_est is not None:
        command += "; sysctl net.netfilter.nf_conntrack_tcp_timeout_established"
    command += "; ss -tno state established"
    if addrs:
        command += f" dst [{addrs[0]}]" if ":" in addrs[0] else f" dst {addrs[0]}"
    socket_txt = "" if sock_note else f"; {with_timer}/{established} established sockets {who} use keepalive"
    if beaten:
        shorter = ", ".join(f"{n} {t} s" for n, t in sorted(beaten, key=lambda b: b[1]))
        return CheckResult(
            ID, TITLE, "warn",
            f"tcp_keepalive_time {ka_time} s is longer than the idle timeout of {shorter}{socket_txt}",
            value, evidence, command,
            meaning=("An idle connection sends its first keepalive probe only after "
                     f"{ka_time} s. A NAT gateway, load balancer or conntrack table that forgets idle "
                     f"flows sooner (the shortest common one: {shortest_name}, {shortest} s) has "
                     "dropped the mapping by then; the next packet on that connection is answered "
                     "with a RST or vanishes. And only sockets that set SO_KEEPALIVE send probes at all."),
            decision=("Probe before the shortest idle timeout on the path: sysctl -w "
                      "net.ipv4.tcp_keepalive_time=120 net.ipv4.tcp_keepalive_intvl=30 "
                      "net.ipv4.tcp_keepalive_probes=4 (persist in /etc/sysctl.d/), and make sure the "
                      "application enables SO_KEEPALIVE (or sets TCP_KEEPIDLE per socket). Better still, "
                      "keep client pool idle times below the middlebox's idle timeout."),
        )
    return CheckResult(
        ID, TITLE, "ok",
        f"tcp_keepalive_time {ka_time} s is below every common idle timeout (shortest {shortest} s)"
        + socket_txt,
        value, evidence, command,
        meaning=("Sockets with SO_KEEPALIVE probe often enough to keep NAT and conntrack entries "
                 "alive. Sockets without it still go idle for as long as the application lets them."),
        decision=("If idle connections still die, check that the application enables SO_KEEPALIVE "
                  "(a keepalive timer in ss -o) and compare its pool idle time with the server's "
                  "keep-alive timeout (rst-triage probe keepalive URL)."),
    )
