"""The findings summary as a ticket: Markdown, Jira markup or JSON, optionally redacted.

The ticket holds a title line, the flow, the verdict with its confidence (or the suspects
when no capture proves anything), the first RST at each vantage, every check with its
command and result, the notes taken by hand, the next steps, and the capture files with
their sha256.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import time
from typing import Any, Callable, Optional

from tui.findings import Findings
from tui.render import STATUS_TEXT

FORMATS = ("md", "jira", "json")

# what a failing check suggests, when there is no capture to prove anything
SUSPECTS = {
    "keepalive": ("server", "idle-close-reuse", "capture on the client while it reuses a pooled connection"),
    "conntrack-invalid-trap": ("middlebox", "nat-conntrack-invalid", "capture on both sides of the NAT host"),
    "conntrack": ("middlebox", "unknown", "capture on both sides of the host that tracks connections"),
    "nft-rules": ("server", "firewall-reject", "capture on the host with the reject rule"),
    "tcp-counters": ("unknown", "abort", "capture on this host: it is sending resets"),
    "port-range": ("client", "unknown", "capture on the client during a burst of new connections"),
    "pmtu": ("middlebox", "unknown", "capture on both ends of the path during a large transfer"),
    "tcp-keepalive": ("middlebox", "state-expired", "capture on both ends across an idle period"),
}


def verdict_of(f: Findings) -> dict[str, Any]:
    """The analysis' verdict, or suspects from the checks (never above 0.5 without packets)."""
    if f.analysis and f.analysis.get("resets"):
        return dict(f.analysis["verdict"], proven=True)
    flagged = [c for c in f.checks.values() if c["status"] in ("fail", "warn") and c["id"] in SUSPECTS]
    flagged.sort(key=lambda c: 0 if c["status"] == "fail" else 1)
    if not flagged:
        reason = "no reset was captured" if f.analysis else "no capture yet"
        return {
            "origin": "unknown",
            "cause": "unknown",
            "confidence": 0.0,
            "summary": f"No verdict: {reason}, and no check points at a cause.",
            "next_steps": ["capture the failing flow at both ends of the hop (first playbook)"],
            "proven": False,
        }
    top = flagged[0]
    origin, cause, capture = SUSPECTS[top["id"]]
    others = ", ".join(c["id"] for c in flagged[1:])
    return {
        "origin": origin,
        "cause": cause,
        "confidence": 0.4 if top["status"] == "fail" else 0.3,
        "summary": (
            f"Suspects only (no packets yet): {top['title']}: {top['summary']}"
            + (f"; also flagged: {others}" if others else "")
        ),
        "next_steps": [capture, top.get("decision") or ""],
        "proven": False,
    }


def verdict_evidence(f: Findings) -> list[str]:
    """The evidence behind a proven verdict: that of the first reset."""
    resets = (f.analysis or {}).get("resets") or []
    return list(resets[0].get("evidence", [])) if resets else []


def first_resets(f: Findings) -> list[dict]:
    if not f.analysis:
        return []
    seen: dict[str, dict] = {}
    for r in f.analysis.get("resets", []):
        seen.setdefault(r["capture"], r)
    return list(seen.values())


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d} UTC"


def title_line(f: Findings) -> str:
    v = verdict_of(f)
    peer = f.flow.describe()
    firsts = first_resets(f)
    if not f.flow.peer_host and firsts:  # offline: name the connection of the first reset
        r = firsts[0]
        peer = f"{r['src']}:{r['sport']} <-> {r['dst']}:{r['dport']}"
    if v["origin"] == "unknown":
        return f"Connection resets ({peer}): origin not yet known"
    kind = "reset from the" if v.get("proven") else "suspected:"
    return f"Connection resets ({peer}): {kind} {v['origin']}, {v['cause']} ({v['confidence']:.2f})"


def render(f: Findings, fmt: str = "md", redact: bool = False) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    if fmt == "json":
        out = (
            json.dumps(
                {
                    "schema": "rst-triage/ticket/1",
                    "title": title_line(f),
                    "verdict": verdict_of(f),
                    "findings": f.to_json(),
                },
                indent=2,
            )
            + "\n"
        )
    else:
        out = _render_text(f, _MD if fmt == "md" else _JIRA)
    return Redactor(f).apply(out) if redact else out


class _Markup:
    def __init__(
        self,
        h: Callable[[int, str], str],
        code: Callable[[str], str],
        block: Callable[[str], str],
        row: Callable[[list[str], bool], str],
    ) -> None:
        self.h, self.code, self.block, self.row = h, code, block, row


_MD = _Markup(
    h=lambda n, t: f"{'#' * n} {t}",
    code=lambda t: f"`{t}`",
    block=lambda t: f"```\n{t}\n```",
    row=lambda cells, head: "| " + " | ".join(cells) + " |" + ("\n|" + "---|" * len(cells) if head else ""),
)
_JIRA = _Markup(
    h=lambda n, t: f"h{n}. {t}",
    code=lambda t: "{{" + t + "}}",
    block=lambda t: "{noformat}\n" + t + "\n{noformat}",
    row=lambda cells, head: ("||" + "||".join(cells) + "||") if head else ("|" + "|".join(cells) + "|"),
)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _render_text(f: Findings, m: _Markup) -> str:
    v = verdict_of(f)
    out = [m.h(2, title_line(f)), ""]
    out.append(f"Host: {f.host}. Session {f.id}, {_when(f.created)} to {_when(f.updated)}.")
    out.append(f"Flow: {f.flow.describe()}.")
    out.append("")
    out.append(m.h(3, "Verdict"))
    out.append("")
    label = "Verdict" if v.get("proven") else "Suspects"
    out.append(f"{label}: origin *{v['origin']}*, cause *{v['cause']}*, confidence {v['confidence']:.2f}.")
    out.append(v["summary"])
    out.append("")
    evidence = verdict_evidence(f) if v.get("proven") else []
    if evidence:
        out.extend(f"- {e}" for e in evidence)
        out.append("")
    firsts = first_resets(f)
    if firsts:
        out.append(m.h(3, "First reset at each vantage"))
        out.append("")
        out.append(m.row(["capture", "time", "from", "to", "state", "origin / cause", "confidence"], True))
        for r in firsts:
            out.append(
                m.row(
                    [
                        m.code(os.path.basename(r["capture"])),
                        _when(r["time"]),
                        f"{r['src']}:{r['sport']}",
                        f"{r['dst']}:{r['dport']}",
                        r["conn_state"],
                        f"{r['origin']} / {r['cause']}",
                        f"{r['confidence']:.2f}",
                    ],
                    False,
                )
            )
        out.append("")
    if f.checks:
        out.append(m.h(3, "Checks"))
        out.append("")
        out.append(m.row(["status", "check", "result", "command"], True))
        for c in f.checks.values():
            out.append(
                m.row(
                    [
                        STATUS_TEXT.get(c["status"], c["status"]).strip(),
                        _cell(c["title"]),
                        _cell(c["summary"]),
                        m.code(_cell(c["command"])) if c.get("command") else "",
                    ],
                    False,
                )
            )
        out.append("")
    if f.notes:
        out.append(m.h(3, "Notes from the playbooks"))
        out.append("")
        for key, note in f.notes.items():
            text = f": {note.note}" if note.note else ""
            out.append(f"- {key} ({note.status}){text}")
        out.append("")
    steps = [s for s in v.get("next_steps", []) if s]
    if steps:
        out.append(m.h(3, "Next steps"))
        out.append("")
        out.extend(f"- {s}" for s in steps)
        out.append("")
    if f.captures:
        out.append(m.h(3, "Capture files"))
        out.append("")
        out.append(m.row(["file", "packets", "resets", "sha256"], True))
        for cap in f.captures:
            out.append(
                m.row([m.code(cap.path), str(cap.packets), str(cap.resets), m.code(cap.sha256)], False)
            )
        out.append("")
    out.append("Generated by rst-triage (read-only: it changed nothing on the host).")
    return "\n".join(out) + "\n"


_V4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)")
_V6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")


class Redactor:
    """Replaces every address (and the host name) with a stable pseudonym: ip-1, ip6-1, ..."""

    def __init__(self, f: Findings) -> None:
        self.host = f.host
        self.map: dict[str, str] = {}

    def _sub(self, kind: str, text: str, valid: Callable[[str], Optional[str]]) -> str:
        def repl(m: re.Match) -> str:
            raw = m.group(0)
            key = valid(raw)
            if key is None:
                return raw
            if key not in self.map:
                n = sum(1 for v in self.map.values() if v.startswith(kind + "-")) + 1
                self.map[key] = f"{kind}-{n}"
            return self.map[key]

        return (_V4 if kind == "ip" else _V6).sub(repl, text)

    def apply(self, text: str) -> str:
        text = self._sub("ip", text, _canon(4))
        text = self._sub("ip6", text, _canon(6))
        if self.host:
            text = re.sub(rf"\b{re.escape(self.host)}\b", "host-1", text)
        return text


def _canon(version: int) -> Callable[[str], Optional[str]]:
    def check(raw: str) -> Optional[str]:
        try:
            addr = ipaddress.ip_address(raw)
        except ValueError:
            return None
        return str(addr) if addr.version == version else None

    return check
