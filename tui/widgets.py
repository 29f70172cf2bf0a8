"""Widgets of the TUI. They render core objects; they never compute findings themselves."""

from __future__ import annotations

from typing import Any, Optional

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Static

from tui.playbooks import Step
from tui.render import STATUS_TEXT

# status as text AND glyph, never colour alone
BADGE = {  # glyph and style; the word is STATUS_TEXT's (or the step's own state)
    "ok": ("✔", "bold green"),
    "warn": ("▲", "bold yellow"),
    "fail": ("✖", "bold red"),
    "info": ("•", "cyan"),
    "skipped": ("–", "dim"),
    "error": ("!", "bold red"),
    "done": ("✔", "bold green"),
    "pending": ("…", "dim"),
    "running": ("⟳", "cyan"),
    "todo": ("○", "dim"),
}
STEP_WORDS = {"done": "DONE", "pending": "....", "running": "RUN ", "todo": "TODO"}


def badge(status: str) -> Text:
    glyph, style = BADGE.get(status, ("?", ""))
    word = STATUS_TEXT.get(status) or STEP_WORDS.get(status) or status.upper()[:4]
    return Text(f"{glyph} {word}", style=style)


class StepView(Static, can_focus=True):
    """One playbook step: status, title, live result; details when focused or expanded."""

    BINDINGS = [
        Binding("down,j", "app.step(1)", "Next step", show=False, id="step.next"),
        Binding("up,k", "app.step(-1)", "Previous step", show=False, id="step.previous"),
        Binding("enter", "details", "Details", show=False, id="step.details"),
    ]

    DEFAULT_CSS = """
    StepView { height: auto; padding: 0 1; }
    StepView:focus { background: $boost; }
    """

    class Selected(Message):
        def __init__(self, step_view: StepView) -> None:
            super().__init__()
            self.step_view = step_view

    def __init__(self, playbook_id: str, step: Step) -> None:
        super().__init__(id=f"step-{playbook_id}-{step.id}")
        self.playbook_id = playbook_id
        self.step = step
        self.status = "todo" if step.manual else "pending"
        self.summary = ""
        self.evidence: list[str] = []
        self.command = ""
        self.note = ""
        self.expanded = False

    @property
    def key(self) -> str:
        return f"{self.playbook_id}/{self.step.id}"

    def set_result(
        self,
        status: str,
        summary: str,
        evidence: Optional[list[str]] = None,
        command: str = "",
    ) -> None:
        self.status = status
        self.summary = summary
        self.evidence = list(evidence or [])
        self.command = command
        self.refresh_view()

    def set_note(self, status: str, note: str) -> None:
        self.status = status
        self.note = note
        self.refresh_view()

    def on_mount(self) -> None:
        self.refresh_view()

    def watch_has_focus(self, focused: bool) -> None:
        # has_focus is set after on_focus runs: watch it, so the details follow the focus
        self.refresh_view()
        if focused:
            self.app.refresh_bindings()  # the footer shows only the keys that work on this step

    def action_details(self) -> None:
        self.expanded = not self.expanded
        self.refresh_view()

    def refresh_view(self) -> None:
        head = Text()
        head.append("› " if self.has_focus else "  ")
        head.append_text(badge(self.status))
        head.append("  ")
        head.append(self.step.title, style="bold")
        if self.step.manual:
            head.append("  (by hand)", style="dim")
        # label and text in two columns: Rich wraps the text with a hanging indent at
        # render time, at whatever width the widget has then
        rows = Table.grid(padding=(0, 1, 0, 0))
        rows.add_column(width=5)
        rows.add_column(no_wrap=True, style="dim")
        rows.add_column(ratio=1)
        if self.summary:
            rows.add_row("", "", self.summary)
        if self.note:
            rows.add_row("", "note:", self.note)
        if self.has_focus or self.expanded:
            rows.add_row("", "why:", self.step.why)
            for line in self.evidence[:6]:
                rows.add_row("", "-", line)
            outcome = self.step.outcome(self.status)
            if outcome is not None:
                rows.add_row("", "means:", outcome.meaning)
                rows.add_row("", "decide:", outcome.decision)
            for cmd in ([self.command] if self.command else []) + self.step.commands[:2]:
                rows.add_row("", "$", Text(cmd, style="italic"))
        self.update(Group(head, rows) if rows.row_count else head)


ROLES_ON_PATH = ("client", "middlebox", "proxy", "server")


class PathDiagram(Static):
    """client ── middlebox ── proxy ── server, with the hop that sent the reset marked."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.origin = "unknown"
        self.proven = False

    def show(self, origin: str, proven: bool) -> None:
        self.origin = origin
        self.proven = proven
        self.update(self.render_path())

    def on_mount(self) -> None:
        self.update(self.render_path())

    def render_path(self) -> Text:
        t = Text()
        marks = Text()
        for i, role in enumerate(ROLES_ON_PATH):
            if i:
                t.append(" ── ")
                marks.append("    ")
            hit = role == self.origin
            label = f"[{role.upper()}]" if hit else f" {role} "
            t.append(label, style="reverse bold" if hit else "")
            marks.append(("▲" * len(label)) if hit else " " * len(label))
        t.append("\n")
        t.append_text(marks)
        if self.origin in ROLES_ON_PATH:
            t.append("\n")
            where = ROLES_ON_PATH.index(self.origin)
            pad = sum(len(r) + 2 + 4 for r in ROLES_ON_PATH[:where])
            word = "RST sent here" if self.proven else "suspected here"
            t.append(" " * pad + word, style="bold")
        else:
            t.append("\nNo hop identified yet.", style="dim")
        return t
