"""iface-drops: drop and error counters of the egress interface, sampled twice.

pyroute2 link statistics (IFLA_STATS64, what ``ip -s -s link`` prints) at the start and the
end of ``ctx.window``, on ``ctx.iface``, else the interface of the route to the peer, else every
non-loopback interface. Readable without root.
"""

from __future__ import annotations

import time
from typing import Any, Optional

from tui.checks import CheckResult, Context, Unavailable
from tui.checks.route import peer_addresses_or_note, route_get

ID = "iface-drops"
TITLE = "Interface drops and errors"
PLAYBOOK = "third"

# IFLA_STATS64 counter -> what a rise means
COUNTERS: dict[str, str] = {
    "rx_dropped": (
        "received packets dropped by the stack (no buffer, MTU mismatch on a veth, unknown protocol...)"
    ),
    "tx_dropped": "packets dropped on the way out (queue full, peer of a veth cannot take them)",
    "rx_errors": "receive errors (sum of the rx_* error counters)",
    "tx_errors": "transmit errors",
    "rx_missed_errors": "the NIC ran out of ring buffer: packets lost before the kernel saw them",
    "rx_fifo_errors": "receive FIFO overruns",
    "tx_fifo_errors": "transmit FIFO underruns",
    "rx_over_errors": "receive ring overflows",
    "rx_crc_errors": "frames with a bad CRC (cable, optics, duplex)",
    "rx_frame_errors": "frame alignment errors",
    "rx_length_errors": "frames with a bad length (often an MTU mismatch with the switch)",
    "tx_carrier_errors": "carrier lost while sending (link flaps)",
    "tx_aborted_errors": "transmissions aborted",
    "rx_nohandler": "packets for a protocol nobody listens to (usually harmless)",
}
HARMLESS = {"rx_nohandler"}
MAX_IFACES = 64


def _stats(msg: Any) -> dict[str, int]:
    st = msg.get_attr("IFLA_STATS64") or msg.get_attr("IFLA_STATS") or {}
    return {k: int(st.get(k, 0) or 0) for k in COUNTERS if k in st}


def _sample(ipr: Any, names: Optional[list[str]]) -> dict[str, tuple[dict[str, int], int]]:
    """name -> (counters, mtu) for ``names`` (None: every non-loopback interface)."""
    out: dict[str, tuple[dict[str, int], int]] = {}
    if names is None:
        msgs = ipr.get_links()
    else:
        msgs = []
        for n in names:
            try:
                msgs += ipr.link("get", ifname=n)
            except Exception:
                continue
    for m in msgs:
        name = m.get_attr("IFLA_IFNAME")
        if not name or (names is None and (m["ifi_type"] == 772 or name == "lo")):
            continue
        out[name] = (_stats(m), int(m.get_attr("IFLA_MTU") or 0))
        if len(out) >= MAX_IFACES:
            break
    return out


def deltas(before: dict[str, tuple[dict[str, int], int]], after: dict[str, tuple[dict[str, int], int]]
           ) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for name, (a, _) in after.items():
        if name not in before:
            continue
        b = before[name][0]
        out[name] = {k: a[k] - b[k] for k in a if k in b}
    return out


def run(ctx: Context) -> CheckResult:
    try:
        from pyroute2 import IPRoute
    except ImportError:
        raise Unavailable("pyroute2 is not installed", "ip -s -s link show") from None
    window = max(0.05, float(ctx.window))
    why = ""
    names: Optional[list[str]] = None
    with IPRoute() as ipr:
        if ctx.iface:
            names, why = [ctx.iface], "given with --iface"
        else:
            addrs, note = peer_addresses_or_note(ctx)
            if addrs:
                r = route_get(ipr, addrs[0])
                if r.dev is not None:
                    names, why = [r.dev.name], f"the route to {addrs[0]}"
                    if r.tunnel_dev and r.tunnel_dev != r.dev.name:
                        names.append(r.tunnel_dev)
            if names is None:
                why = "every non-loopback interface" + (f"; {note}" if note else "")
        before = _sample(ipr, names)
        if not before:
            what = f"no statistics for {', '.join(names)}" if names else "no interface besides loopback here"
            raise Unavailable(what, "ip -s -s link show")
        started = time.monotonic()
        ctx.say(ID, f"sampling interface counters for {window:g} s")
        time.sleep(window)
        after = _sample(ipr, list(before))
        elapsed = max(0.05, round(time.monotonic() - started, 2))
    d = deltas(before, after)
    return judge(d, after, elapsed, why, names)


def judge(d: dict[str, dict[str, int]], after: dict[str, tuple[dict[str, int], int]], window: float,
          why: str, names: Optional[list[str]]) -> CheckResult:
    shown = list(d)
    command = "; ".join(f"ip -s -s link show {n}" for n in shown[:3]) if names else "ip -s -s link"
    command += f"  (twice, {window:g} s apart)"
    rising = {n: {k: v for k, v in c.items() if v > 0 and k not in HARMLESS} for n, c in d.items()}
    rising = {n: c for n, c in rising.items() if c}
    evidence = [f"interfaces: {', '.join(shown)} ({why})"]
    for n, c in rising.items():
        for k, v in sorted(c.items(), key=lambda kv: -kv[1]):
            evidence.append(f"{n} {k}: +{v} in {window:g} s ({v / window:.1f}/s), "
                            f"{after[n][0].get(k, 0)} since the device came up - {COUNTERS[k]}")
    for n in shown:
        if n in rising:
            continue
        totals = {k: v for k, v in after[n][0].items() if v and k not in HARMLESS}
        tot = ", ".join(f"{k} {v}" for k, v in totals.items()) or "all zero"
        evidence.append(f"{n} (mtu {after[n][1]}): no change; totals: {tot}")
    value = {
        "window_s": window, "interfaces": shown, "why": why,
        "deltas": {n: {k: v for k, v in c.items() if v} for n, c in d.items()},
        "totals": {n: {k: v for k, v in after[n][0].items() if v} for n in shown},
        "mtu": {n: after[n][1] for n in shown},
    }
    if rising:
        parts = [f"{n}: " + ", ".join(f"{k} +{v}" for k, v in c.items()) for n, c in rising.items()]
        kinds = {k for c in rising.values() for k in c}
        return CheckResult(
            ID, TITLE, "warn", f"drops/errors rose in {window:g} s - " + "; ".join(parts),
            value, evidence, command,
            meaning=("Packets are being lost at this interface right now. A lost segment on its own "
                     "means retransmissions, not resets - but sustained loss kills connections "
                     "(TCPAbortOnTimeout) and a dropped FIN/RST leaves the two ends disagreeing about "
                     "the connection, which ends in a reset later."
                     + (" Drops on a veth usually mean the two ends disagree on the MTU."
                        if kinds & {"rx_dropped", "tx_dropped"} else "")),
            decision=("Compare the MTU on both ends of the link (ip link; the pmtu check) and the ring "
                      "sizes (ethtool -g IF; ethtool -S IF | grep -i drop); for rx_missed/fifo errors "
                      "raise the ring with ethtool -G IF rx 4096. Capture to see whether the failing "
                      "flow's packets are among the lost ones."),
        )
    return CheckResult(
        ID, TITLE, "ok", f"no drops or errors on {', '.join(shown[:4])}"
        + (f" (+{len(shown) - 4} more)" if len(shown) > 4 else "") + f" in {window:g} s",
        value, evidence, command,
        meaning=("The interface did not lose packets during the window. Loss elsewhere on the path "
                 "(a switch, a NAT, the peer) does not show here."),
        decision="If resets follow stalls, sample over a longer window (--window 10) during a failure.",
    )
