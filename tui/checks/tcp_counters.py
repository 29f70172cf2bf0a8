"""tcp-counters: the kernel's reset, abort and listen-queue counters, sampled twice.

Reads ``/proc/net/snmp`` (Tcp) and ``/proc/net/netstat`` (TcpExt) at the start and the end of
``ctx.window`` and reports what rose, per second. Names follow ``nstat`` (``TcpOutRsts``,
``TcpExtTCPAbortOnData``), so the numbers can be compared with ``nstat`` output directly.
Both files are per network namespace and readable without root.
"""

from __future__ import annotations

import time

from tui.checks import CheckResult, Context, read_text

ID = "tcp-counters"
TITLE = "Kernel TCP reset and abort counters"
PLAYBOOK = "first"

# counter -> what a rise means. Resets and aborts: warn.
RESET_COUNTERS: dict[str, str] = {
    "TcpOutRsts": "this host sent RST segments (it reset connections or refused SYNs to closed ports)",
    "TcpEstabResets": "established connections here ended abruptly (a RST was sent or received)",
    "TcpAttemptFails": "connects from here failed (mostly refused: the SYN was answered with a RST)",
    "TcpExtEmbryonicRsts": "RSTs arrived for half-open connections (SYN_RECV) on a listener here",
    "TcpExtTCPAbortOnData": (
        "a socket was reset because data arrived after the application closed/shut it down, "
        "or the application closed with SO_LINGER 0 (deliberate abortive close)"
    ),
    "TcpExtTCPAbortOnClose": (
        "the application closed a socket with unread data in its receive buffer: the kernel "
        "answers with a RST instead of a FIN"
    ),
    "TcpExtTCPAbortOnMemory": (
        "the kernel killed sockets with a RST because of memory pressure or too many orphans "
        "(tcp_mem / tcp_max_orphans)"
    ),
    "TcpExtTCPAbortOnTimeout": (
        "connections died after retransmissions or keepalive probes went unanswered: the "
        "peer's next send will hit a reset"
    ),
    "TcpExtTCPAbortOnLinger": "sockets in FIN_WAIT2 were reset when their linger/fin timeout ran out",
    "TcpExtTCPAbortFailed": "the kernel wanted to send a RST but could not allocate it",
    "TcpExtTCPChallengeACK": (
        "RSTs or SYNs arrived that were in the window but not at the exact sequence (RFC 5961): "
        "stale or spoofed resets, or a middlebox whose state is out of sync"
    ),
    "TcpExtTCPSYNChallenge": (
        "SYNs arrived on established connections: the peer (or a NAT) reused a 4-tuple this "
        "host still thinks is open"
    ),
}
# Listen queue drops: fail.
LISTEN_COUNTERS: dict[str, str] = {
    "TcpExtListenOverflows": (
        "the accept queue of a listener was full: the application does not accept() fast enough "
        "(with tcp_abort_on_overflow=1 the kernel answers with RSTs)"
    ),
    "TcpExtListenDrops": "SYNs or handshake ACKs were dropped at a listener (overflows and other drops)",
}
# Shown when they rise, never decide the status.
CONTEXT_COUNTERS: dict[str, str] = {
    "TcpRetransSegs": "segments retransmitted (loss on the path or a slow peer)",
    "TcpInErrs": "segments received with errors (bad checksum, malformed)",
    "TcpExtSyncookiesSent": "SYN cookies sent: a listener's SYN queue overflowed",
    "TcpExtTCPBacklogDrop": "segments dropped because a socket's backlog was full",
}
ALL_COUNTERS = {**RESET_COUNTERS, **LISTEN_COUNTERS, **CONTEXT_COUNTERS}
FILES = ("/proc/net/snmp", "/proc/net/netstat")


def parse_snmp(text: str) -> dict[str, int]:
    """``/proc/net/snmp`` or ``/proc/net/netstat`` as ``{"TcpOutRsts": 12, "TcpExtListenDrops": 0}``.

    Both files are pairs of lines: ``Proto: Name Name ...`` then ``Proto: value value ...``.
    """
    out: dict[str, int] = {}
    lines = text.splitlines()
    for head, vals in zip(lines[::2], lines[1::2]):
        hp, _, names = head.partition(":")
        vp, _, values = vals.partition(":")
        if hp != vp:
            continue
        for name, value in zip(names.split(), values.split()):
            try:
                out[hp + name] = int(value)
            except ValueError:
                continue
    return out


def sample() -> dict[str, int]:
    counters: dict[str, int] = {}
    for path in FILES:
        counters.update(parse_snmp(read_text(path)))
    return counters


def deltas(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in ALL_COUNTERS if k in before and k in after}


def human_command(window: float) -> str:
    names = " ".join(ALL_COUNTERS)
    return f"nstat -n; sleep {window:g}; nstat -z {names}"


def judge(d: dict[str, int], totals: dict[str, int], window: float) -> CheckResult:
    """The result for counter deltas ``d`` over ``window`` seconds (``totals``: since boot)."""
    rising = {k: v for k, v in d.items() if v > 0}
    rate = {k: round(v / window, 2) for k, v in d.items()}
    evidence = []
    for k in ALL_COUNTERS:
        if k not in d:
            continue
        if d[k] > 0:
            evidence.append(f"{k}: +{d[k]} in {window:g} s ({rate[k]}/s), {totals.get(k, 0)} since boot"
                            f" - {ALL_COUNTERS[k]}")
    quiet = [k for k in (*RESET_COUNTERS, *LISTEN_COUNTERS) if k in d and d[k] == 0]
    if quiet:
        evidence.append("no change: " + ", ".join(quiet))
    missing = [k for k in (*RESET_COUNTERS, *LISTEN_COUNTERS) if k not in d]
    if missing:
        evidence.append("not offered by this kernel: " + ", ".join(missing))
    value = {"window_s": window, "deltas": d, "per_s": rate,
             "totals": {k: totals[k] for k in d if k in totals}}
    listen = {k: v for k, v in rising.items() if k in LISTEN_COUNTERS}
    resets = {k: v for k, v in rising.items() if k in RESET_COUNTERS}
    command = human_command(window)

    def fmt(items: dict[str, int]) -> str:
        return ", ".join(f"{k} +{v}" for k, v in sorted(items.items(), key=lambda kv: -kv[1]))

    if listen:
        return CheckResult(
            ID, TITLE, "fail",
            f"listen queue drops in {window:g} s: {fmt(listen)}"
            + (f"; also {fmt(resets)}" if resets else ""),
            value, evidence, command,
            meaning=("A listener on this host is dropping connection attempts because its accept "
                     "queue is full. Clients see timeouts, and resets if tcp_abort_on_overflow=1 or "
                     "when a half-established connection is later used. The application is too slow "
                     "to accept() or its backlog is too small."),
            decision=("Find the listener: ss -ltn (Recv-Q at or near Send-Q is full). Raise the "
                      "backlog (the app's listen() backlog and sysctl -w net.core.somaxconn=4096), "
                      "add workers, and check sysctl net.ipv4.tcp_abort_on_overflow (keep it 0)."),
        )
    if resets:
        top = max(resets, key=lambda k: resets[k])
        return CheckResult(
            ID, TITLE, "warn",
            f"reset/abort counters rose in {window:g} s: {fmt(resets)}",
            value, evidence, command,
            meaning=(f"The kernel here is taking part in resets right now; the biggest rise, {top}, "
                     f"means {RESET_COUNTERS[top]}. These counters are host-wide: they say that "
                     "resets happen, not which flow. OutRsts/AbortOn* rising point at this host as "
                     "the sender; EstabResets/AttemptFails alone fit resets received from elsewhere."),
            decision=("Tie the rise to the failing flow with a capture (rst-triage capture --peer "
                      "HOST:PORT). AbortOnClose: fix the app to read or drain before close(); "
                      "AbortOnData: look for SO_LINGER 0 or data sent after shutdown; ChallengeACK: "
                      "suspect injected or stale resets from a middlebox."),
        )
    return CheckResult(
        ID, TITLE, "ok",
        f"no reset, abort or listen-drop counter rose in {window:g} s",
        value, evidence, command,
        meaning=("During the window this host neither sent resets nor aborted connections, and no "
                 "listener dropped SYNs. If the failing flow reset meanwhile, the RST came from "
                 "elsewhere - or the window missed it."),
        decision=("Sample over a window that covers a failure (--window 10) or capture the flow; if "
                  "resets happen without these counters moving, look at the peer and middleboxes."),
    )


def run(ctx: Context) -> CheckResult:
    window = max(0.05, float(ctx.window))
    before = sample()
    started = time.monotonic()
    ctx.say(ID, f"sampling TCP counters for {window:g} s")
    time.sleep(window)
    after = sample()
    elapsed = round(time.monotonic() - started, 2)
    return judge(deltas(before, after), after, max(elapsed, 0.05))
