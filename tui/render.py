"""Text and Markdown renderings of an analysis (the JSON one is Analysis.to_json)."""

from __future__ import annotations

import os
import shutil
import textwrap
import time

from tui.model import Analysis, ResetEvent


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}"


def first_per_capture(result: Analysis) -> list[ResetEvent]:
    seen: dict[str, ResetEvent] = {}
    for e in result.resets:
        seen.setdefault(e.capture, e)
    return [seen[c.path] for c in result.captures if c.path in seen]


def _wrap(text: str, indent: str, width: int, bullet: str = "") -> list[str]:
    return textwrap.wrap(
        text,
        width=width,
        initial_indent=indent + bullet,
        subsequent_indent=indent + " " * len(bullet),
        break_long_words=False,
        break_on_hyphens=False,
    ) or [indent + bullet]


def render_text(result: Analysis, seconds: float, width: int = 0) -> str:
    """The short human summary; lines wrap to ``width`` (default: the terminal's, <= 100)."""
    width = width or min(shutil.get_terminal_size((80, 24)).columns, 100)
    v = result.verdict
    lines = []
    n_pk = sum(c.packets for c in result.captures)
    lines.append(
        f"Analysed {len(result.captures)} capture(s), {n_pk} packets, "
        f"{result.resets_total} reset(s) in {seconds:.2f}s"
    )
    for c in result.captures:
        host = f" ({c.vantage_host})" if c.vantage_host else ""
        lines.append(
            f"  {os.path.basename(c.path)}: {c.format}, {c.linktype}, {c.packets} packets,"
            f" vantage {c.vantage}{host}"
        )
    lines.append("")
    lines.append(f"Verdict: origin {v.origin.upper()}, cause {v.cause} (confidence {v.confidence:.2f})")
    lines.extend(_wrap(v.summary, "  ", width))
    if v.evidence:
        lines.append("Evidence:")
        for line in v.evidence:
            lines.extend(_wrap(line, "  ", width, "- "))
    firsts = first_per_capture(result)
    if firsts:
        lines.append("First reset at each vantage:")
        for e in firsts:
            lines.extend(
                _wrap(
                    f"{os.path.basename(e.capture)} #{e.frame} at {_when(e.time)[11:]}:"
                    f" {e.src}:{e.sport} -> {e.dst}:{e.dport}",
                    "  ",
                    width,
                )
            )
            lines.append(
                f"    {e.conn_state}, history {e.history}: {e.origin}/{e.cause},"
                f" confidence {e.confidence:.2f}"
            )
    if v.next_steps:
        lines.append("Next steps:")
        for step in v.next_steps:
            lines.extend(_wrap(step, "  ", width, "- "))
    if len(result.resets) > len(firsts):
        lines.append(f"({len(result.resets)} resets classified; --json lists them all)")
    return "\n".join(lines) + "\n"


def render_markdown(result: Analysis) -> str:
    v = result.verdict
    out = [f"## Reset analysis: {v.origin} / {v.cause} (confidence {v.confidence:.2f})", ""]
    out.append(v.summary)
    out.append("")
    out.append("### Captures")
    out.append("")
    out.append("| file | format | link type | packets | vantage |")
    out.append("|---|---|---|---|---|")
    for c in result.captures:
        host = f" ({c.vantage_host})" if c.vantage_host else ""
        out.append(
            f"| `{os.path.basename(c.path)}` | {c.format} | {c.linktype} | {c.packets} | {c.vantage}{host} |"
        )
    out.append("")
    if v.evidence:
        out.append("### Evidence")
        out.append("")
        out.extend(f"- {e}" for e in v.evidence)
        out.append("")
    firsts = first_per_capture(result)
    if firsts:
        out.append("### First reset at each vantage")
        out.append("")
        out.append("| capture | frame | time (UTC) | from | to | state | origin / cause | confidence |")
        out.append("|---|---|---|---|---|---|---|---|")
        for e in firsts:
            out.append(
                f"| `{os.path.basename(e.capture)}` | {e.frame} | {_when(e.time)} | {e.src}:{e.sport}"
                f" | {e.dst}:{e.dport} | {e.conn_state} | {e.origin} / {e.cause} | {e.confidence:.2f} |"
            )
        out.append("")
    if v.next_steps:
        out.append("### Next steps")
        out.append("")
        out.extend(f"- {s}" for s in v.next_steps)
        out.append("")
    return "\n".join(out)


STATUS_TEXT = {
    "ok": "PASS",
    "warn": "WARN",
    "fail": "FAIL",
    "info": "INFO",
    "skipped": "SKIP",
    "error": "ERR ",
}


def render_checks_text(results: list, width: int = 0) -> str:
    """One line per check (status as text, never colour alone), details for what needs a look."""
    width = width or min(shutil.get_terminal_size((80, 24)).columns, 100)
    lines = []
    for r in results:
        lines.extend(_wrap(f"{r.title}: {r.summary}", "", width, f"{STATUS_TEXT.get(r.status, r.status)}  "))
    details = [r for r in results if r.status in ("warn", "fail", "error")]
    for r in details:
        lines.append("")
        lines.append(f"{STATUS_TEXT[r.status].strip()} {r.title}")
        for line in r.evidence:
            lines.extend(_wrap(line, "  ", width, "- "))
        if r.meaning:
            lines.extend(_wrap(f"What it means: {r.meaning}", "  ", width))
        if r.decision:
            lines.extend(_wrap(f"Decision: {r.decision}", "  ", width))
        if r.command:
            lines.extend(_wrap(f"By hand: {r.command}", "  ", width))
    skipped = [r for r in results if r.status == "skipped" and r.command]
    if skipped:
        lines.append("")
        lines.append("Not checked here; to check by hand:")
        for r in skipped:
            lines.extend(_wrap(f"{r.id}: {r.command}", "  ", width, "- "))
    return "\n".join(lines) + "\n"
