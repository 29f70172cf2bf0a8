"""sockets: the TCP sockets to the peer, their states, timers and owning processes (``ss -tanpio``).

The socket table comes from sock_diag (pyroute2 ``DiagSocket``) when it is small enough to decode
quickly, else from ``/proc/net/tcp{,6}`` (same facts, parsed far faster on a host with tens of
thousands of sockets). The snapshot is shared with port-range and tcp-keepalive for a moment,
so a full ``check`` run reads the table once. Owning processes come from ``/proc/PID/fd``
(socket inode matching); only root sees every user's processes, so without root the owners are
partial and the result says so.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

from tui.checks import CheckResult, Context, Unavailable
from tui.checks.route import normalize_ip, peer_addresses_or_note

ID = "sockets"
TITLE = "Sockets to the peer"
PLAYBOOK = "second"

# tcp_states.h, named like ss does
STATES = {
    1: "ESTAB", 2: "SYN-SENT", 3: "SYN-RECV", 4: "FIN-WAIT-1", 5: "FIN-WAIT-2", 6: "TIME-WAIT",
    7: "UNCONN", 8: "CLOSE-WAIT", 9: "LAST-ACK", 10: "LISTEN", 11: "CLOSING", 12: "SYN-RECV",
}
# idiag_timer / the "tr" column of /proc/net/tcp, named like ``ss -o``
TIMERS = {0: "", 1: "on", 2: "keepalive", 3: "timewait", 4: "persist"}

DIAG_MAX_SOCKETS = 4000  # above this, pyroute2 decoding takes too long: read /proc/net/tcp
CACHE_TTL = 1.5
OWNER_BUDGET_S = 0.6
CLOSE_WAIT_RECHECK_MAX_S = 1.0
CLOSE_WAIT_MANY = 10  # host-wide stuck CLOSE-WAIT sockets that make a warning without a peer
SHOW_SOCKETS = 12


@dataclass(frozen=True)
class Sock:
    state: str
    local: str
    lport: int
    remote: str
    rport: int
    timer: str = ""
    expires_s: float = 0.0
    retrans: int = 0
    uid: int = 0
    inode: int = 0
    rq: int = 0
    wq: int = 0

    def ss_line(self, owners: Optional[list[tuple[int, str]]] = None) -> str:
        def ep(addr: str, port: int) -> str:
            return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"

        line = (f"{self.state:<10} {self.rq:>6} {self.wq:>6} "
                f"{ep(self.local, self.lport)} -> {ep(self.remote, self.rport)}")
        if self.timer:
            line += f" timer:({self.timer},{self.expires_s:.1f}s,{self.retrans})"
        if owners:
            line += " users:(" + ",".join(f'("{c}",pid={p})' for p, c in owners) + ")"
        return line


@dataclass
class Snapshot:
    socks: list[Sock]
    source: str
    taken: float
    notes: list[str] = field(default_factory=list)


_lock = threading.Lock()
_cache: Optional[Snapshot] = None


def sockstat_total() -> Optional[int]:
    """TCP sockets in use plus TIME-WAIT, from /proc/net/sockstat{,6}; None if unreadable."""
    total = 0
    try:
        for path in ("/proc/net/sockstat", "/proc/net/sockstat6"):
            if not os.path.exists(path):
                continue
            with open(path) as f:
                for line in f:
                    proto, _, rest = line.partition(":")
                    if proto not in ("TCP", "TCP6"):
                        continue
                    words = rest.split()
                    stats = dict(zip(words[::2], words[1::2]))
                    total += int(stats.get("inuse", 0)) + int(stats.get("tw", 0))
    except (OSError, ValueError):
        return None
    return total


def _proc_addr(hexaddr: str) -> str:
    raw = bytes.fromhex(hexaddr)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    # four 32-bit words, each in host (little-endian) order
    fixed = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, fixed)


def parse_proc_net_tcp(text: str, hz: int = 100) -> list[Sock]:
    """``/proc/net/tcp`` or ``/proc/net/tcp6`` as :class:`Sock` records."""
    out: list[Sock] = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 10:
            continue
        try:
            laddr, lport = f[1].split(":")
            raddr, rport = f[2].split(":")
            tx, rx = f[4].split(":")
            tr, when = f[5].split(":")
            state = int(f[3], 16)
            out.append(Sock(
                state=STATES.get(state, str(state)),
                local=normalize_ip(_proc_addr(laddr)), lport=int(lport, 16),
                remote=normalize_ip(_proc_addr(raddr)), rport=int(rport, 16),
                timer=TIMERS.get(int(tr, 16), "on"),
                expires_s=(int(when, 16) / hz) if int(tr, 16) else 0.0,
                retrans=int(f[6], 16), uid=int(f[7]), inode=int(f[9]),
                rq=int(rx, 16), wq=int(tx, 16),
            ))
        except (ValueError, OSError):
            continue
    return out


def _from_proc() -> list[Sock]:
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    socks: list[Sock] = []
    found = False
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                socks += parse_proc_net_tcp(f.read(), hz)
            found = True
        except OSError:
            continue
    if not found:
        raise Unavailable("neither sock_diag nor /proc/net/tcp can be read here", "ss -tanpio")
    return socks


def _from_diag() -> list[Sock]:
    from pyroute2 import DiagSocket
    from pyroute2.netlink.diag import SS_ALL

    socks: list[Sock] = []
    with DiagSocket() as ds:
        ds.bind()
        for fam in (socket.AF_INET, socket.AF_INET6):
            for m in ds.get_sock_stats(family=fam, states=SS_ALL):
                timer = int(m["idiag_timer"])
                socks.append(Sock(
                    state=STATES.get(int(m["idiag_state"]), str(m["idiag_state"])),
                    local=normalize_ip(m["idiag_src"]), lport=int(m["idiag_sport"]),
                    remote=normalize_ip(m["idiag_dst"]), rport=int(m["idiag_dport"]),
                    timer=TIMERS.get(timer, "on"),
                    expires_s=int(m["idiag_expires"]) / 1000.0 if timer else 0.0,
                    retrans=int(m["idiag_retrans"]), uid=int(m["idiag_uid"]),
                    inode=int(m["idiag_inode"]), rq=int(m["idiag_rqueue"]), wq=int(m["idiag_wqueue"]),
                ))
    return socks


def snapshot(fresh: bool = False) -> Snapshot:
    """Every TCP socket in this network namespace (shared for ``CACHE_TTL`` seconds)."""
    global _cache
    with _lock:
        now = time.monotonic()
        if not fresh and _cache is not None and now - _cache.taken < CACHE_TTL:
            return _cache
        notes: list[str] = []
        total = sockstat_total()
        socks: Optional[list[Sock]] = None
        source = "sock_diag"
        if total is not None and total > DIAG_MAX_SOCKETS:
            notes.append(f"{total} TCP sockets: read from /proc/net/tcp{{,6}} (faster than sock_diag here)")
        else:
            try:
                socks = _from_diag()
            except ImportError:
                notes.append("pyroute2 missing: read /proc/net/tcp{,6}")
            except Exception as e:  # no inet_diag module, netlink refused...
                notes.append(f"sock_diag unavailable ({e}): read /proc/net/tcp{{,6}}")
        if socks is None:
            socks = _from_proc()
            source = "/proc/net/tcp"
        snap = Snapshot(socks, source, time.monotonic(), notes)
        _cache = snap
        return snap


Owners = dict[int, list[tuple[int, str]]]  # socket inode -> [(pid, comm)]


def owners(inodes: set[int], budget_s: float = OWNER_BUDGET_S) -> tuple[Owners, bool]:
    """Map socket inodes to (pid, comm) via /proc/PID/fd; returns (owners, complete).

    Not complete when not root, when some processes could not be read, or when the time
    budget ran out (a host with very many processes or file descriptors).
    """
    found: Owners = {}
    complete = os.geteuid() == 0
    if not inodes:
        return found, complete
    deadline = time.monotonic() + budget_s
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return found, False
    for pid in pids:
        if time.monotonic() > deadline:
            complete = False
            break
        try:
            with os.scandir(f"/proc/{pid}/fd") as it:
                links = []
                for entry in it:
                    try:
                        links.append(os.readlink(entry.path))
                    except OSError:
                        continue
        except PermissionError:
            complete = False
            continue
        except OSError:  # the process ended meanwhile
            continue
        hits = set()
        for target in links:
            if target.startswith("socket:["):
                try:
                    ino = int(target[8:-1])
                except ValueError:
                    continue
                if ino in inodes:
                    hits.add(ino)
        if not hits:
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            comm = "?"
        for ino in hits:
            holders = found.setdefault(ino, [])
            if len(holders) < 3:
                holders.append((int(pid), comm))
    return found, complete


def matches_peer(s: Sock, addrs: set[str], port: Optional[int]) -> bool:
    """A socket to (or from) the peer: remote address is the peer's; the port on either side."""
    if s.state == "LISTEN" or s.remote not in addrs:
        return False
    return port is None or s.rport == port or s.lport == port


def ss_filter(addrs: list[str], port: Optional[int]) -> str:
    parts = []
    for a in addrs[:2]:
        host = f"[{a}]" if ":" in a else a
        parts.append(f"dst {host}:{port}" if port else f"dst {host}")
    return " or ".join(parts)


def _stuck_close_wait(first: list[Sock], wait_s: float, keep: Any) -> list[Sock]:
    """CLOSE-WAIT sockets (among ``first``) still in CLOSE-WAIT after ``wait_s`` seconds."""
    inodes = {s.inode for s in first if s.state == "CLOSE-WAIT" and s.inode}
    if not inodes:
        return []
    time.sleep(wait_s)
    later = {s.inode for s in snapshot(fresh=True).socks if s.state == "CLOSE-WAIT" and keep(s)}
    return [s for s in first if s.state == "CLOSE-WAIT" and s.inode in later]


def _states(socks: list[Sock]) -> dict[str, int]:
    return dict(Counter(s.state for s in socks).most_common())


def run(ctx: Context) -> CheckResult:
    addrs, peer_note = peer_addresses_or_note(ctx)
    snap = snapshot()
    tw_total = sum(1 for s in snap.socks if s.state == "TIME-WAIT")
    root = os.geteuid() == 0
    partial_note = ("owners partial: not root, so other users' processes are hidden "
                    "(run as root for every owner)")
    wait_s = max(0.2, min(float(ctx.window), CLOSE_WAIT_RECHECK_MAX_S))
    if addrs:
        return _run_peer(ctx, addrs, snap, tw_total, root, partial_note, wait_s)
    result = _run_all(snap, tw_total, root, partial_note, wait_s)
    if peer_note:
        result.evidence.insert(0, peer_note)
        result.summary = f"peer {ctx.peer_host} not resolved; " + result.summary
    return result


def _owner_text(owner_map: Owners) -> dict[str, int]:
    c: Counter[str] = Counter()
    for holders in owner_map.values():
        for pid, comm in holders[:1]:
            c[f"{comm}[{pid}]"] += 1
    return dict(c.most_common(5))


def _run_peer(ctx: Context, addrs: list[str], snap: Snapshot, tw_total: int, root: bool,
              partial_note: str, wait_s: float) -> CheckResult:
    aset = set(addrs)
    port = ctx.peer_port
    mine = [s for s in snap.socks if matches_peer(s, aset, port)]
    peer_txt = (f"[{addrs[0]}]" if ":" in addrs[0] else addrs[0]) + (f":{port}" if port else "")
    command = f"ss -tanpio {ss_filter(addrs, port)}"
    if not root:
        command = "sudo " + command
    stuck = _stuck_close_wait(mine, wait_s, lambda s: matches_peer(s, aset, port))
    owner_map, complete = owners({s.inode for s in mine if s.inode})
    states = _states(mine)
    tw_peer = states.get("TIME-WAIT", 0)
    keepalive = sum(1 for s in mine if s.timer == "keepalive")
    retrans = [s for s in mine if s.timer == "on" and s.retrans > 0]
    order = {"CLOSE-WAIT": 0, "SYN-SENT": 1, "LAST-ACK": 2, "ESTAB": 3}
    shown = sorted(mine, key=lambda s: (order.get(s.state, 9), s.lport))[:SHOW_SOCKETS]
    evidence = [s.ss_line(owner_map.get(s.inode)) for s in shown]
    if len(mine) > len(shown):
        evidence.append(f"... and {len(mine) - len(shown)} more")
    evidence.append(f"TIME-WAIT: {tw_peer} to the peer, {tw_total} on this host")
    if keepalive:
        evidence.append(f"{keepalive} socket(s) to the peer have a keepalive timer running")
    if retrans:
        evidence.append(f"{len(retrans)} socket(s) to the peer are retransmitting "
                        f"(max {max(s.retrans for s in retrans)} retries)")
    owner_summary = _owner_text(owner_map)
    if owner_summary:
        evidence.append("owners: " + ", ".join(f"{k} ({v})" for k, v in owner_summary.items()))
    if not complete:
        evidence.append(partial_note if not root else
                        "owners partial: some processes could not be read in time")
    evidence += snap.notes
    value = {
        "peer": peer_txt, "addresses": addrs, "sockets": len(mine), "states": states,
        "close_wait": states.get("CLOSE-WAIT", 0), "close_wait_stuck": len(stuck),
        "close_wait_recheck_s": wait_s if states.get("CLOSE-WAIT") else None,
        "time_wait_peer": tw_peer, "time_wait_total": tw_total,
        "keepalive_timers": keepalive, "retransmitting": len(retrans),
        "owners": owner_summary, "owners_partial": not complete, "source": snap.source,
    }
    state_txt = ", ".join(f"{k} {v}" for k, v in states.items()) or "none"
    partial = "" if complete else " (owners partial)"
    if stuck:
        holders = _owner_text({s.inode: owner_map[s.inode] for s in stuck if s.inode in owner_map})
        who = ", ".join(holders) if holders else "an unknown process" + (" (not root)" if not root else "")
        return CheckResult(
            ID, TITLE, "warn",
            f"{len(stuck)} CLOSE-WAIT socket(s) to {peer_txt} held by {who} "
            f"(still there after {wait_s:g} s); {len(mine)} sockets: {state_txt}{partial}",
            value, evidence, command,
            meaning=("The peer closed these connections (its FIN arrived) but the application here "
                     "never closed its end. A pool that hands such a connection out again writes "
                     "into a connection the peer has forgotten, and the peer answers with a RST: "
                     "'connection reset by peer' on reuse. Typical for an idle-timeout mismatch "
                     "(the server's keep-alive timeout shorter than the client pool's idle time)."),
            decision=("Make the client notice closed connections: validate/evict idle pooled "
                      "connections before reuse and set the pool's idle timeout below the server's "
                      "keep-alive timeout (run: rst-triage probe keepalive URL). A CLOSE-WAIT count "
                      "that only grows is a socket leak in the owning process."),
        )
    if not mine:
        return CheckResult(
            ID, TITLE, "info",
            f"no TCP socket to {peer_txt} right now; TIME-WAIT total {tw_total}",
            value, evidence, command,
            meaning=("Nothing on this host is connected to the peer at this moment: either the "
                     "connections are short-lived or the failing flow runs on another host."),
            decision="Run it while the failure happens, or on the host named in the error message.",
        )
    return CheckResult(
        ID, TITLE, "info",
        f"{len(mine)} sockets to {peer_txt}: {state_txt}; TIME-WAIT total {tw_total}{partial}",
        value, evidence, command,
        meaning=("The connections this host has to the peer and who owns them. Sockets left in "
                 "CLOSE-WAIT would mean the application ignores the peer's close; many TIME-WAIT "
                 "mean many short connections (port pressure, see port-range)."),
        decision=("Match the owning process with the application that logged the reset, then read "
                  "its logs (proxy-logs) and capture the flow."),
    )


def _run_all(snap: Snapshot, tw_total: int, root: bool, partial_note: str, wait_s: float) -> CheckResult:
    socks = [s for s in snap.socks if s.state != "LISTEN"]
    listeners = len(snap.socks) - len(socks)
    states = _states(socks)
    remotes = Counter(
        f"[{s.remote}]:{s.rport}" if ":" in s.remote else f"{s.remote}:{s.rport}"
        for s in socks if s.state != "TIME-WAIT"
    ).most_common(5)
    stuck = _stuck_close_wait(socks, wait_s, lambda s: True)
    owner_map, complete = owners({s.inode for s in stuck if s.inode})
    command = "ss -s; ss -tanpio state close-wait" if root else "sudo ss -s; sudo ss -tanpio state close-wait"
    evidence = ["states: " + (", ".join(f"{k} {v}" for k, v in states.items()) or "none")
                + f"; {listeners} listening"]
    if remotes:
        evidence.append("busiest remote endpoints: " + ", ".join(f"{r} ({n})" for r, n in remotes))
    for s in stuck[:SHOW_SOCKETS]:
        evidence.append(s.ss_line(owner_map.get(s.inode)))
    owner_summary = _owner_text(owner_map)
    if stuck and not complete:
        evidence.append(partial_note if not root else
                        "owners partial: some processes could not be read in time")
    evidence += snap.notes
    value = {
        "peer": None, "sockets": len(socks), "listening": listeners, "states": states,
        "busiest_remotes": dict(remotes), "close_wait": states.get("CLOSE-WAIT", 0),
        "close_wait_stuck": len(stuck), "time_wait_total": tw_total,
        "owners": owner_summary, "owners_partial": not complete, "source": snap.source,
    }
    top_states = ", ".join(f"{k} {v}" for k, v in list(states.items())[:4]) or "none"
    summary = (f"{len(socks)} TCP sockets ({top_states}), {listeners} listening; "
               f"TIME-WAIT {tw_total}, CLOSE-WAIT {states.get('CLOSE-WAIT', 0)}")
    if len(stuck) >= CLOSE_WAIT_MANY:
        who = ", ".join(owner_summary) or "unknown processes"
        return CheckResult(
            ID, TITLE, "warn", summary + f"; {len(stuck)} stuck in CLOSE-WAIT ({who})",
            value, evidence, command,
            meaning=("Many connections were closed by their peers but not by the application here. "
                     "Reusing them ends in a RST from the peer; a growing count is a socket leak."),
            decision=("Give --peer HOST:PORT for the failing flow; fix the owning application's "
                      "connection handling."),
        )
    return CheckResult(
        ID, TITLE, "info", summary, value, evidence, command,
        meaning=("A summary of this host's TCP sockets; give --peer to see the failing flow's "
                 "sockets and owners."),
        decision="Run again with --peer HOST:PORT from the error message.",
    )
