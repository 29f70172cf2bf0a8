"""The Textual app: a flow form, the first/second/third playbooks, the verdict, the ticket.

The app renders core objects (checks, analysis, findings) and starts core work in thread
workers; workers report back with small messages. Heavy modules (the analysis, pyroute2,
scapy, httpx) are imported inside the workers, so the first frame comes before any of them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Optional

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.validation import Function
from textual.widgets import Button, Footer, Header, Input, Label, Static, TabbedContent, TabPane

from tui import validate
from tui.findings import CaptureRef, Findings, Flow, SessionStore, StepNote, state_dir, write_private
from tui.playbooks import Playbook, load_all
from tui.widgets import PathDiagram, StepView, badge

LIVE_REFRESH = {"tcp-counters": 15.0, "iface-drops": 15.0, "conntrack": 20.0}


# --- messages from workers -------------------------------------------------------------------


class CheckFinished(Message):
    def __init__(self, result: Any) -> None:
        super().__init__()
        self.result = result


class AnalysisFinished(Message):
    def __init__(self, analysis: Any, captures: list[CaptureRef]) -> None:
        super().__init__()
        self.analysis = analysis
        self.captures = captures


class WorkFailed(Message):
    def __init__(self, what: str, error: str) -> None:
        super().__init__()
        self.what = what
        self.error = error


class CaptureProgress(Message):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class CaptureDone(Message):
    def __init__(self, path: Optional[str], text: str) -> None:
        super().__init__()
        self.path = path
        self.text = text


# --- modal screens ---------------------------------------------------------------------------

HELP = """\
rst-triage walks you through three playbooks while it runs the checks for you.

  Flow     the failing flow: the peer from the error message (HOST:PORT), and what you
           know of client, proxy and server. Enter starts the checks.
  First    where did the reset come from? Capture here (c), import captures from other
           hosts (i), and read the first RST at each vantage.
  Second   which process, and what do the proxy's logs say?
  Third    systemic causes: conntrack, ports, MTU, idle timeouts, firewall rules.
  Verdict  the likely origin on the path, with its evidence and confidence.

Keys: 1-5 or tab to change pane, up/down to move between steps, enter to show a step's
details, d/s to mark a hand step done/skipped, n to add a note, r to re-run a check,
e to export the ticket, q to quit. Findings are saved as they arrive: after a dropped SSH
session, 'rst-triage --resume' brings them back.

Without a capture, the verdict names suspects only: packets prove who sent a reset.
The tool only reads; it never changes the host.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close", id="help.close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(HELP)
            yield Button("Close", id="close", variant="primary")

    @on(Button.Pressed, "#close")
    def close(self) -> None:
        self.dismiss()


class PromptScreen(ModalScreen[Optional[str]]):
    """One line of input (a note, a capture path); Enter accepts, Escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="prompt.cancel")]

    def __init__(self, title: str, placeholder: str = "", value: str = "") -> None:
        super().__init__()
        self.prompt_title = title
        self.placeholder = placeholder
        self.value = value

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt"):
            yield Label(self.prompt_title)
            yield Input(value=self.value, placeholder=self.placeholder, id="prompt-input")
            yield Label("Enter to accept, Escape to cancel", classes="dim")

    @on(Input.Submitted)
    def accept(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ExportScreen(ModalScreen[Optional[tuple[str, bool]]]):
    BINDINGS = [
        Binding("m", "pick('md')", "Markdown", id="export.md"),
        Binding("j", "pick('jira')", "Jira", id="export.jira"),
        Binding("o", "pick('json')", "JSON", id="export.json"),
        Binding("x", "toggle_redact", "Redact", id="export.redact"),
        Binding("escape", "cancel", "Cancel", id="export.cancel"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.redact = False

    def compose(self) -> ComposeResult:
        with Vertical(id="export"):
            yield Label("Export the findings as a ticket")
            yield Static(self._text(), id="export-text")
            with Horizontal():
                yield Button("Markdown (m)", id="md", variant="primary")
                yield Button("Jira (j)", id="jira")
                yield Button("JSON (o)", id="json")

    def _text(self) -> str:
        state = "on" if self.redact else "off"
        return f"Redact addresses (x): {state}. The file path is shown after export."

    def action_toggle_redact(self) -> None:
        self.redact = not self.redact
        self.query_one("#export-text", Static).update(self._text())

    def action_pick(self, fmt: str) -> None:
        self.dismiss((fmt, self.redact))

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        if event.button.id in ("md", "jira", "json"):
            self.dismiss((event.button.id, self.redact))

    def action_cancel(self) -> None:
        self.dismiss(None)


# --- the app ---------------------------------------------------------------------------------


def _checked(fn: Any) -> Function:
    def ok(value: str) -> bool:
        if not value.strip():
            return True
        try:
            fn(value)
        except validate.InputError:
            return False
        return True

    return Function(ok, "invalid")


FIELDS = [
    ("peer", "Peer (HOST:PORT, from the error)", validate.peer, "10.20.4.18:443"),
    ("client", "Client IP", validate.ip, "optional"),
    ("proxy", "Proxy IP", validate.ip, "optional"),
    ("server", "Server IP", validate.ip, "optional"),
    ("iface", "Interface", validate.iface, "default: the route's"),
    ("client_idle", "Client pool idle (s)", lambda v: validate.seconds(v, "idle", 0, 86400), "optional"),
    ("url", "URL (keep-alive probe)", validate.url, "http://HOST:PORT/health"),
]


class RstTriageApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "rst-triage"
    ENABLE_COMMAND_PALETTE = False  # every action has a key; the footer needs the room
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (80, "-normal"), (120, "-wide")]
    BINDINGS = [
        Binding("q", "quit", "Quit", id="app.quit", priority=False),
        Binding("question_mark", "help", "Help", id="app.help"),
        Binding("1", "pane('flow')", "Flow", show=False, id="app.pane.flow"),
        Binding("2", "pane('first')", "First", show=False, id="app.pane.first"),
        Binding("3", "pane('second')", "Second", show=False, id="app.pane.second"),
        Binding("4", "pane('third')", "Third", show=False, id="app.pane.third"),
        Binding("5", "pane('verdict')", "Verdict", show=False, id="app.pane.verdict"),
        Binding("c", "capture", "Capture", id="app.capture"),
        Binding("i", "import_capture", "Import", id="app.import"),
        Binding("d", "mark('done')", "Done", id="app.step.done"),
        Binding("s", "mark('skipped')", "Skip", id="app.step.skip"),
        Binding("n", "note", "Note", id="app.step.note"),
        Binding("r", "rerun", "Re-run", id="app.step.rerun"),
        Binding("e", "export", "Export", id="app.export"),
    ]

    def __init__(
        self,
        flow: Optional[Flow] = None,
        pcaps: Optional[list[str]] = None,
        findings: Optional[Findings] = None,
        store: Optional[SessionStore] = None,
        playbooks: Optional[list[Playbook]] = None,
        live: bool = True,
    ) -> None:
        super().__init__()
        self.findings = findings or Findings.new()
        if flow is not None:
            self.findings.flow = flow
        self.pcaps = [p for p in (pcaps or [])]
        self.store = store or SessionStore()
        self.playbooks = playbooks if playbooks is not None else load_all()
        self.live = live and not self.pcaps
        self.started = bool(self.findings.checks)
        self.capture_handle: Any = None
        self.capture_text = "not running"
        self.timers: dict[str, Any] = {}
        self.last_ticket: Optional[Path] = None

    # -- layout --------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with TabbedContent(id="panes", initial="flow"):
            with TabPane("1 Flow", id="flow"):
                yield from self._compose_flow()
            for book in self.playbooks:
                with TabPane(f"{self._pane_number(book.id)} {book.id.capitalize()}", id=book.id):
                    with VerticalScroll(classes="playbook"):
                        yield Static(f"{book.title}. {book.summary}", classes="pane-intro")
                        if book.id == "first":
                            yield Static(self._capture_line(), id="capture-line")
                        for step in book.steps:
                            yield StepView(book.id, step)
            with TabPane("5 Verdict", id="verdict"):
                with VerticalScroll():
                    yield PathDiagram(id="path")
                    yield Static("", id="verdict-text")
        yield Footer()

    def _pane_number(self, pid: str) -> str:
        order = ["flow"] + [b.id for b in self.playbooks] + ["verdict"]
        return str(order.index(pid) + 1) if pid in order[:5] else "·"

    def _compose_flow(self) -> ComposeResult:
        with VerticalScroll(id="flow-form"):
            yield Static(
                "Describe the failing flow. Only the peer is needed; Enter starts the checks.",
                classes="pane-intro",
            )
            flow = self.findings.flow
            for name, label, fn, hint in FIELDS:
                value = getattr(flow, name if name != "peer" else "peer_host") or ""
                if name == "peer" and flow.peer_host and flow.peer_port:
                    host = f"[{flow.peer_host}]" if ":" in flow.peer_host else flow.peer_host
                    value = f"{host}:{flow.peer_port}"
                with Horizontal(classes="field"):
                    yield Label(label, classes="field-label")
                    yield Input(
                        value=str(value) if value else "",
                        placeholder=hint,
                        id=f"in-{name}",
                        validators=[_checked(fn)],
                        classes="field-input",
                    )
                error = Label("", id=f"err-{name}", classes="field-error")
                error.display = False
                yield error
            yield Button("Start checks", id="start", variant="primary")

    def on_mount(self) -> None:
        self.title = "rst-triage"
        self.sub_title = self.findings.flow.describe()
        if self.pcaps:
            self.sub_title = f"offline: {len(self.pcaps)} capture(s)"
            for view in self.query(StepView):
                if view.step.check and view.step.check not in ("capture", "analysis"):
                    view.set_result("todo", "not run: offline (--pcap); r runs it on this host")
        self._restore()
        # after the first frame: start whatever the flags asked for
        self.call_after_refresh(self._kickoff)

    def _kickoff(self) -> None:
        if self.pcaps:
            self.analyse(list(self.pcaps))
            self.query_one(TabbedContent).active = "verdict"
        elif self.live and self.findings.flow.peer_host and not self.started:
            self.start_checks()

    # -- restoring a session ----------------------------------------------------------------

    def _restore(self) -> None:
        for cid, result in self.findings.checks.items():
            for view in self._views_for(cid):
                view.set_result(
                    result["status"], result["summary"], result.get("evidence"), result.get("command", "")
                )
        for key, note in self.findings.notes.items():
            noted = self._view(key)
            if noted is not None:
                noted.set_note(note.status, note.note)
        if self.findings.analysis:
            self._show_analysis()
        self._show_verdict()

    def _views_for(self, check_id: str) -> list[StepView]:
        return [v for v in self.query(StepView) if v.step.check == check_id]

    def _view(self, key: str) -> Optional[StepView]:
        for v in self.query(StepView):
            if v.key == key:
                return v
        return None

    # -- the flow form ------------------------------------------------------------------------

    @on(Input.Changed, ".field-input")
    def field_changed(self, event: Input.Changed) -> None:
        name = (event.input.id or "").removeprefix("in-")
        err = self.query_one(f"#err-{name}", Label)
        fn: Any = next(f for n, _, f, _ in FIELDS if n == name)
        try:
            if event.value.strip():
                fn(event.value)
            err.update("")
            err.display = False
        except validate.InputError as e:
            err.update(f"✖ {e}")
            err.display = True

    @on(Input.Submitted, ".field-input")
    @on(Button.Pressed, "#start")
    def submit_flow(self) -> None:
        flow = Flow()
        try:
            peer = self.query_one("#in-peer", Input).value.strip()
            if peer:
                flow.peer_host, flow.peer_port = validate.peer(peer)
            for role in ("client", "proxy", "server"):
                v = self.query_one(f"#in-{role}", Input).value.strip()
                if v:
                    setattr(flow, role, validate.ip(v, role))
            iface = self.query_one("#in-iface", Input).value.strip()
            if iface:
                flow.iface = validate.iface(iface)
            idle = self.query_one("#in-client_idle", Input).value.strip()
            if idle:
                flow.client_idle = validate.seconds(idle, "client pool idle", 0, 86400)
            url = self.query_one("#in-url", Input).value.strip()
            if url:
                flow.url = validate.url(url)
        except validate.InputError as e:
            self.notify(str(e), severity="error", title="Check the flow")
            return
        self.findings.flow = flow
        self.sub_title = flow.describe()
        self.save()
        self.start_checks()
        self.query_one(TabbedContent).active = "first"

    # -- checks ---------------------------------------------------------------------------

    def check_context(self) -> Any:
        from tui.checks import Context

        f = self.findings.flow
        return Context(
            peer_host=f.peer_host,
            peer_port=f.peer_port,
            client=f.client,
            proxy=f.proxy,
            server=f.server,
            iface=f.iface,
            client_idle=f.client_idle,
            url=f.url or self._guess_url(),
        )

    def _guess_url(self) -> Optional[str]:
        """Without a URL, probe plain HTTP on the usual ports only (never guess at TLS)."""
        f = self.findings.flow
        if f.peer_host and f.peer_port in (80, 8080):
            host = f"[{f.peer_host}]" if ":" in f.peer_host else f.peer_host
            return f"http://{host}:{f.peer_port}/"
        return None

    def start_checks(self) -> None:
        from tui.checks import CHECKS

        self.started = True
        wanted = {s.check for b in self.playbooks for s in b.steps if s.check in CHECKS}
        for cid in CHECKS:
            if cid in wanted:
                for view in self._views_for(cid):
                    view.set_result("running", "checking…")
                self.run_check(cid)

    @work(thread=True, group="checks", exit_on_error=False)
    def run_check(self, check_id: str) -> None:
        from tui import checks

        result = checks.run(check_id, self.check_context())
        self.post_message(CheckFinished(result))

    def _panes_gone(self) -> bool:
        """True once the panes are gone (quitting): late worker results only get saved."""
        return not self.query("#path")

    def on_check_finished(self, message: CheckFinished) -> None:
        r = message.result
        self.findings.checks[r.id] = r.to_json()
        if self._panes_gone():
            self.save()
            return
        for view in self._views_for(r.id):
            view.set_result(r.status, r.summary, r.evidence, r.command)
        self.save()
        self._show_verdict()
        if r.id in LIVE_REFRESH and r.status != "skipped":
            # re-arm after each run: never two runs of one check piling up
            old = self.timers.pop(r.id, None)
            if old is not None:
                old.stop()
            self.timers[r.id] = self.set_timer(LIVE_REFRESH[r.id], lambda cid=r.id: self._refresh(cid))

    def _refresh(self, check_id: str) -> None:
        self.timers.pop(check_id, None)
        pane = self.query_one(TabbedContent).active
        if any(v.playbook_id == pane for v in self._views_for(check_id)):
            self.run_check(check_id)
        else:  # hidden: look again later instead of working for nobody
            self.timers[check_id] = self.set_timer(LIVE_REFRESH[check_id], lambda: self._refresh(check_id))

    def action_rerun(self) -> None:
        view = self._focused_step()
        if view is not None and view.step.check and view.step.check not in ("capture", "analysis"):
            view.set_result("running", "checking…")
            self.run_check(view.step.check)

    # -- captures and analysis ------------------------------------------------------------

    def _capture_line(self) -> str:
        return f"Capture: {self.capture_text}. c start/stop, i import a pcap from another host."

    def action_import_capture(self) -> None:
        def done(path: Optional[str]) -> None:
            if not path:
                return
            try:
                validate.readable_file(path.strip(), "capture")
            except validate.InputError as e:
                self.notify(str(e), severity="error")
                return
            paths = [c.path for c in self.findings.captures] + [path.strip()]
            self.analyse(paths)

        self.push_screen(PromptScreen("Path of a capture from another host", "/tmp/other.pcap"), done)

    @work(thread=True, group="analysis", exclusive=True, exit_on_error=False)
    def analyse(self, paths: list[str]) -> None:
        from tui.analysis import analyze_files
        from tui.capture_reader import CaptureError
        from tui.findings import sha256_of

        try:
            result = analyze_files(paths)
        except CaptureError as e:
            self.post_message(WorkFailed("analysis", str(e)))
            return
        refs = [
            CaptureRef(c.path, sha256_of(c.path), c.packets, c.resets_total, c.vantage)
            for c in result.captures
        ]
        self.post_message(AnalysisFinished(result, refs))

    def on_analysis_finished(self, message: AnalysisFinished) -> None:
        self.findings.analysis = message.analysis.to_json()
        self.findings.captures = message.captures
        self.save()
        if self._panes_gone():
            return
        self._show_analysis()
        self._show_verdict()

    def _show_analysis(self) -> None:
        a = self.findings.analysis or {}
        view = self._view("first/analysis")
        if view is None:
            return
        resets = a.get("resets", [])
        v = a.get("verdict", {})
        if not resets:
            view.set_result("warn", v.get("summary", "no reset in the captures"))
            return
        firsts: dict[str, dict] = {}
        for r in resets:
            firsts.setdefault(r["capture"], r)
        lines = [
            f"{os.path.basename(c)}: first RST {r['src']}:{r['sport']} -> {r['dst']}:{r['dport']}"
            f" ({r['origin']}/{r['cause']}, {r['confidence']:.2f})"
            for c, r in firsts.items()
        ]
        status = "ok" if v.get("confidence", 0) >= 0.7 else "warn"
        view.set_result(status, f"{v.get('origin')}/{v.get('cause')} ({v.get('confidence', 0):.2f})", lines)
        imported = self._view("first/import")
        if imported is not None and len(self.findings.captures) > 1 and imported.status == "todo":
            imported.set_note("done", f"{len(self.findings.captures)} captures in the analysis")
        cap = self._view("first/capture")
        if cap is not None and self.findings.captures:
            total = sum(c.resets for c in self.findings.captures)
            cap.set_result(
                "ok" if total else "warn",
                f"{len(self.findings.captures)} capture(s), {total} reset(s)",
                [f"{c.path} ({c.packets} packets, sha256 {c.sha256[:12]}…)" for c in self.findings.captures],
            )

    def _show_verdict(self) -> None:
        from tui.report import verdict_evidence, verdict_of

        v = verdict_of(self.findings)
        self.query_one("#path", PathDiagram).show(v["origin"], bool(v.get("proven")))
        head = "VERDICT" if v.get("proven") else "SUSPECTS (no packets yet)"
        lines = [
            f"{head}: origin {v['origin'].upper()}, cause {v['cause']}, confidence {v['confidence']:.2f}",
            "",
            v["summary"],
        ]
        evidence = verdict_evidence(self.findings) if v.get("proven") else []
        if evidence:
            lines += ["", "Evidence:"] + [f"  - {e}" for e in evidence]
        steps = [s for s in v.get("next_steps", []) if s]
        if steps:
            lines += ["", "Next steps:"] + [f"  - {s}" for s in steps]
        if not v.get("proven"):
            lines += ["", "Packets prove who sent a reset: capture in the First pane (c), or import one (i)."]
        self.query_one("#verdict-text", Static).update("\n".join(lines))

    # capture (tcpdump) ------------------------------------------------------------------

    def action_capture(self) -> None:
        if self.capture_handle is not None:
            self.capture_handle.stop()
            return
        f = self.findings.flow
        try:
            from tui import capture
        except ImportError:  # pragma: no cover
            self.notify("capture is not available in this build", severity="error")
            return
        request = capture.CaptureRequest(
            peer_host=f.peer_host,
            peer_port=f.peer_port,
            iface=f.iface,
            seconds=60.0,
            max_packets=100000,
            max_bytes=200_000_000,
            out=None,
        )
        try:
            self.capture_handle = capture.start(
                request, lambda text: self.post_message(CaptureProgress(text))
            )
        except capture.CaptureFailed as e:
            self.notify(str(e), severity="error", title="Capture")
            view = self._view("first/capture")
            if view is not None:
                view.set_result("skipped", str(e))
            return
        self.capture_text = "starting"
        self.query_one("#capture-line", Static).update(self._capture_line())
        self.wait_capture(self.capture_handle)

    @work(thread=True, group="capture", exit_on_error=False)
    def wait_capture(self, handle: Any) -> None:
        outcome = handle.wait()
        self.post_message(CaptureDone(outcome.path, outcome.describe()))

    def on_capture_progress(self, message: CaptureProgress) -> None:
        self.capture_text = message.text
        self.query_one("#capture-line", Static).update(self._capture_line())

    def on_capture_done(self, message: CaptureDone) -> None:
        self.capture_handle = None
        self.capture_text = message.text
        self.query_one("#capture-line", Static).update(self._capture_line())
        if message.path:
            self.analyse([c.path for c in self.findings.captures] + [message.path])

    def on_work_failed(self, message: WorkFailed) -> None:
        self.notify(message.error, severity="error", title=message.what)

    # -- steps by hand ----------------------------------------------------------------------

    def _focused_step(self) -> Optional[StepView]:
        return self.focused if isinstance(self.focused, StepView) else None

    def _pane_steps(self) -> list[StepView]:
        pane = self.query_one(TabbedContent).active
        return [v for v in self.query(StepView) if v.playbook_id == pane]

    def action_step(self, delta: int) -> None:
        steps = self._pane_steps()
        if not steps:
            return
        current = self._focused_step()
        i = steps.index(current) + delta if current in steps else 0
        target = steps[max(0, min(len(steps) - 1, i))]
        target.focus()
        target.scroll_visible()

    def action_mark(self, status: str) -> None:
        view = self._focused_step()
        if view is None or not view.step.manual:
            return
        old = self.findings.notes.get(view.key)
        note = old.note if old else ""
        self.findings.notes[view.key] = StepNote(status, note, time.time())
        view.set_note(status, note)
        self.save()

    def action_note(self) -> None:
        view = self._focused_step()
        if view is None:
            return

        def done(text: Optional[str]) -> None:
            if text is None:
                return
            status = view.status if view.status in ("done", "skipped") else "done"
            if not view.step.manual:
                status = "done"
            self.findings.notes[view.key] = StepNote(status, text.strip(), time.time())
            if view.step.manual:
                view.set_note(status, text.strip())
            else:
                view.note = text.strip()
                view.refresh_view()
            self.save()

        old = self.findings.notes.get(view.key)
        self.push_screen(
            PromptScreen(f"Note for: {view.step.title}", "what you found", old.note if old else ""), done
        )

    # -- export, help, panes ----------------------------------------------------------------

    def action_export(self) -> None:
        def done(choice: Optional[tuple[str, bool]]) -> None:
            if choice is not None:
                self.export(*choice)

        self.push_screen(ExportScreen(), done)

    def export(self, fmt: str, redact: bool = False) -> Path:
        from tui.report import render

        text = render(self.findings, fmt, redact)
        out_dir = state_dir() / "tickets"
        out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        ext = {"md": "md", "jira": "jira.txt", "json": "json"}[fmt]
        path = out_dir / f"ticket-{self.findings.id}{'-redacted' if redact else ''}.{ext}"
        write_private(path, text)
        self.copy_to_clipboard(text)
        self.last_ticket = path
        self.notify(f"Ticket written to {path} and sent to the clipboard (OSC 52)", title="Export")
        return path

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_pane(self, pane: str) -> None:
        self.query_one(TabbedContent).active = pane

    def check_action(self, action: str, parameters: tuple[object, ...]) -> Optional[bool]:
        """The footer shows only keys that do something right now."""
        if self.screen is not self.screen_stack[0]:
            # a dialog is open: its own keys apply, the app's step keys do not
            return action == "quit"
        try:
            pane = self.query_one(TabbedContent).active
        except Exception:
            return True
        view = self._focused_step()
        if action in ("capture", "import_capture"):
            return pane == "first"
        if action == "mark":
            return view is not None and view.step.manual
        if action == "note":
            return view is not None
        if action == "rerun":
            return (
                view is not None and bool(view.step.check) and view.step.check not in ("capture", "analysis")
            )
        return True

    @on(TabbedContent.TabActivated)
    def pane_changed(self) -> None:
        steps = self._pane_steps()
        if steps:
            steps[0].focus()
        self.refresh_bindings()

    # -- persistence and exit ---------------------------------------------------------------

    def save(self) -> None:
        try:
            self.store.save(self.findings)
        except OSError as e:
            self.notify(f"could not save the session: {e.strerror}", severity="warning")

    def stop_capture(self, timeout: Optional[float] = None) -> None:
        if self.capture_handle is not None:
            self.capture_handle.stop()
            self.capture_handle.wait(timeout)
            self.capture_handle = None

    def hang_up(self) -> None:
        """The terminal is gone (SIGHUP) or we are told to stop: stop tcpdump, keep the findings."""
        try:
            self.stop_capture(timeout=3.0)
        finally:
            self.save()

    async def action_quit(self) -> None:
        self.stop_capture()
        self.save()
        self.exit()


__all__ = ["RstTriageApp", "badge"]
