"""One verdict for the incident, from the classified resets (about the first one)."""

from __future__ import annotations

import time

from tui.model import CaptureInfo, ResetEvent, Verdict

CAUSE_TEXT = {
    "no-listener": "the SYN was refused: nothing listens on that port",
    "firewall-reject": "a netfilter 'reject with tcp reset' rule answered for the host",
    "idle-close-reuse": "it had closed an idle keep-alive connection that the other side then reused",
    "abort": (
        "the application aborted the connection (SO_LINGER 0, close with unread data, or a local timeout)"
    ),
    "upstream-reset": "the proxy passed on a reset or close from its upstream",
    "proxy-abort": "the proxy gave up on its own (timeout, limit or policy) while its upstream was healthy",
    "injected": "a device in the path forged it in an endpoint's name",
    "nat-conntrack-invalid": (
        "a NAT host's conntrack marked a segment INVALID and its own stack answered with RST"
    ),
    "state-expired": "a stateful device in the path had forgotten the idle connection",
    "unknown": "the packets do not say why",
}

CONFIDENT = 0.7


def decide(events: list[ResetEvent], captures: list[CaptureInfo], roles: dict[str, str]) -> Verdict:
    packets = sum(c.packets for c in captures)
    if not events:
        return Verdict(
            origin="unknown",
            cause="unknown",
            confidence=0.0,
            summary=(
                f"No TCP reset was captured ({packets} packets in {len(captures)} capture(s)):"
                " nothing to attribute."
            ),
            next_steps=[
                "capture while the error happens: rst-triage capture --peer HOST:PORT --seconds 60",
                "capture at both ends of the failing hop (client side and server/proxy side)",
            ],
        )
    first = events[0]
    group = [e for e in events if _same_packet(e, first)]
    for e in events:
        if e not in group:
            e.secondary = True
    best = max(group, key=lambda e: e.confidence)
    later = len({(e.seq, e.ack, e.src) for e in events if e.secondary})
    when = time.strftime("%H:%M:%S", time.gmtime(first.time)) + f".{int(first.time % 1 * 1e6):06d}"
    hop = f"{first.src}:{first.sport} -> {first.dst}:{first.dport}"
    vantages = ", ".join(sorted({e.capture for e in group}))
    steps = _dedupe(best.next_steps)
    if best.origin == "unknown" or best.cause == "unknown" or best.confidence < 0.5:
        summary = (
            f"Suspects only: the first reset ({hop}, {when} UTC) is not attributable from these"
            f" packets; best guess {best.origin}/{best.cause} at confidence {best.confidence:.2f}."
        )
        if len(captures) < 2:
            steps.append("capture at the other end of the hop at the same time, then analyse both together")
    else:
        sender = "" if best.origin == "middlebox" else f" ({first.src})"
        summary = (
            f"The first reset ({hop} at {when} UTC, seen in {vantages}) came from the"
            f" {best.origin}{sender}: {CAUSE_TEXT[best.cause]}."
            f" Confidence {best.confidence:.2f}."
        )
        if best.confidence < CONFIDENT:
            summary += " Evidence is thin; see next steps."
    if later:
        summary += f" {later} later reset(s) followed; resets cascade, so the verdict is about the first."
    if (
        len(captures) < 2
        and best.confidence < 0.9
        and not any("capture on" in s or "other end" in s for s in steps)
    ):
        steps.append("a capture at the other end of the hop would confirm who sent it")
    return Verdict(
        origin=best.origin,
        cause=best.cause,
        confidence=best.confidence,
        summary=summary,
        next_steps=steps,
        evidence=list(best.evidence),
    )


def _same_packet(a: ResetEvent, b: ResetEvent) -> bool:
    return (a.seq, a.ack, a.flags) == (b.seq, b.ack, b.flags) and abs(a.aligned_time - b.aligned_time) < 2.0


def _dedupe(items: list[str]) -> list[str]:
    out: list[str] = []
    for i in items:
        if i not in out:
            out.append(i)
    return out

