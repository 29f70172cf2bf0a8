"""The ``rst-triage`` command line. Subcommands call the same core functions the TUI uses."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Optional

from tui import __version__
from tui import validate as v
from tui.validate import InputError

ROLE_CHOICES = ("client", "proxy", "server", "middlebox")

DESCRIPTION = """\
Find who sent the TCP reset behind "connection reset by peer".

  rst-triage analyze CAPTURE...    who sent each RST in pcap/pcapng captures, and why
  rst-triage check                 every live check on this host (conntrack, ports, MTU, ...)
  rst-triage probe keepalive URL   measure a server's HTTP keep-alive idle timeout
  rst-triage probe mtu HOST        find the path MTU to HOST with DF probes
  rst-triage capture               a short, bounded tcpdump of the failing flow, analysed

Captures from several hosts can be analysed together: the tool merges them on one
timeline and uses what each vantage saw (and did not see) as evidence.
"""

ANALYZE_EPILOG = """\
examples:
  rst-triage analyze client.pcap
  rst-triage analyze client.pcap proxy.pcapng --proxy 10.0.2.10 --json
  rst-triage analyze edge.pcap --vantage edge.pcap=middlebox --md > ticket.md

origins: client, proxy, server, middlebox, unknown.
causes:  no-listener, firewall-reject, idle-close-reuse, abort, upstream-reset,
         proxy-abort, injected, nat-conntrack-invalid, state-expired, unknown.
exit codes: 0 analysed (even when no reset was found), 1 a capture could not be
read, 2 usage error.
"""


class UsageError(Exception):
    pass


class Failed(Exception):
    """The command cannot produce its findings; ``str()`` is the one line to show (exit 1)."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="rst-triage",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"rst-triage {__version__}")
    tui_opts = p.add_argument_group("the interactive app (rst-triage with no COMMAND)")
    tui_opts.add_argument(
        "--peer", metavar="HOST:PORT", help="pre-fill the failing flow from the error message"
    )
    tui_opts.add_argument(
        "--pcap", nargs="+", metavar="FILE", help="open existing captures (offline; no live checks)"
    )
    tui_opts.add_argument("--resume", action="store_true", help="continue the last saved session")
    tui_opts.add_argument(
        "--no-mouse", action="store_true", help="keyboard only (leave the mouse to the terminal)"
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    a = sub.add_parser(
        "analyze",
        help="who sent each RST in one or more captures, and why",
        description="Classify every TCP reset in the captures and give one verdict for the incident.",
        epilog=ANALYZE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument("captures", nargs="+", metavar="CAPTURE", help="pcap or pcapng file(s)")
    a.add_argument(
        "--client", action="append", default=[], metavar="IP", help="an address of the client (repeatable)"
    )
    a.add_argument(
        "--proxy",
        action="append",
        default=[],
        metavar="IP",
        help="an address of a proxy / load balancer (repeatable)",
    )
    a.add_argument(
        "--server", action="append", default=[], metavar="IP", help="an address of the server (repeatable)"
    )
    a.add_argument(
        "--vantage",
        action="append",
        default=[],
        metavar="FILE=ROLE",
        help="where a capture was taken: client, proxy, server or middlebox (default: inferred)",
    )
    out = a.add_mutually_exclusive_group()
    out.add_argument(
        "--json", action="store_true", help="machine-readable output (schema rst-triage/analysis/1)"
    )
    out.add_argument("--md", action="store_true", help="Markdown, for a ticket")
    _add_check(sub)
    _add_probe(sub)
    _add_capture(sub)
    _add_report(sub)
    return p


def _add_report(sub) -> None:
    r = sub.add_parser(
        "report",
        help="the findings of the last session as a ticket",
        description=(
            "Render the autosaved findings (of the last session, or --session FILE) as a ticket:"
            " title, flow, verdict, first resets per vantage, checks with their commands, notes,"
            " next steps and capture files with sha256."
        ),
    )
    r.add_argument(
        "--format", default="md", choices=("md", "jira", "json"), help="ticket format (default md)"
    )
    r.add_argument("--redact", action="store_true", help="replace addresses and the host name consistently")
    r.add_argument("--out", metavar="FILE", help="write to FILE (mode 0600) instead of stdout")
    r.add_argument("--session", metavar="FILE", help="a session file (default: the newest)")


CHECK_EPILOG = """\
examples:
  rst-triage check --peer 10.20.4.18:443
  rst-triage check --peer 10.20.4.18:443 --only conntrack,nft-rules --json
  rst-triage check --url http://10.20.4.18/health --client-idle 90   # adds the keep-alive probe

Every check is read-only. One that cannot run here (not root, tool missing, module not
loaded) is reported as SKIP with the reason and the command to run by hand.
exit codes: 0 checks ran (whatever they found), 2 usage error.
"""


def _add_check(sub) -> None:
    c = sub.add_parser(
        "check",
        help="run every live check on this host",
        description="Run the live checks concurrently and print what each found.",
        epilog=CHECK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _flow_args(c)
    c.add_argument("--window", default="1", metavar="S", help="seconds between counter samples (default 1)")
    c.add_argument("--url", metavar="URL", help="also probe this URL's HTTP keep-alive idle timeout")
    c.add_argument(
        "--max-idle", default="30", metavar="S", help="longest idle time the keep-alive probe tries"
    )
    c.add_argument(
        "--log", action="append", default=[], metavar="FILE", help="a proxy log to read (repeatable)"
    )
    c.add_argument(
        "--unit", action="append", default=[], metavar="UNIT", help="a journald unit to read proxy lines from"
    )
    c.add_argument(
        "--since", metavar="S", help="incident window: read log lines of the last S seconds (default 900)"
    )
    c.add_argument("--only", metavar="ID[,ID]", help="run only these checks")
    c.add_argument("--json", action="store_true", help="machine-readable output (schema rst-triage/checks/1)")


def _flow_args(c: argparse.ArgumentParser) -> None:
    c.add_argument("--peer", metavar="HOST:PORT", help="the failing flow's peer (from the error message)")
    c.add_argument("--client", metavar="IP", help="the client's address, if known")
    c.add_argument("--proxy", metavar="IP", help="the proxy's address, if there is one")
    c.add_argument("--server", metavar="IP", help="the server's address, if known")
    c.add_argument("--iface", metavar="IF", help="interface (default: the route's to the peer)")
    c.add_argument("--client-idle", metavar="S", help="the client pool's idle timeout in seconds")


def _add_probe(sub) -> None:
    pr = sub.add_parser(
        "probe",
        help="active probes: keep-alive idle timeout, path MTU",
        description="Active probes that take longer than a check and show their progress.",
    )
    psub = pr.add_subparsers(dest="probe", metavar="PROBE", parser_class=_Parser)
    k = psub.add_parser(
        "keepalive",
        help="measure the server's HTTP keep-alive idle timeout",
        description=(
            "Open connections, let them idle for increasing times (in parallel) and reuse them:"
            " the longest idle time a connection survives is the server's keep-alive timeout."
            " A client pool that keeps idle connections longer than that will reuse dead ones"
            " and get resets."
        ),
    )
    k.add_argument("url", metavar="URL")
    k.add_argument("--client-idle", metavar="S", help="your client pool's idle timeout, to compare")
    k.add_argument("--max-idle", default="30", metavar="S", help="longest idle time to try (default 30)")
    k.add_argument("--json", action="store_true", help="the result as JSON")
    m = psub.add_parser(
        "mtu",
        help="find the path MTU to HOST with DF probes",
        description=(
            "Send probes with Don't Fragment set and search for the largest size that gets"
            " through; compare with the interface MTU and report a PMTUD black hole (big"
            " packets vanish and no ICMP 'fragmentation needed' comes back)."
        ),
    )
    m.add_argument("host", metavar="HOST")
    m.add_argument("--iface", metavar="IF", help="interface to send from (default: the route's)")
    m.add_argument("--json", action="store_true", help="the result as JSON")


CAPTURE_EPILOG = """\
The capture stops at the first bound reached (time, packets or bytes), is written with
mode 0600 under ~/.local/state/rst-triage/captures/ unless -w is given, and is analysed
when it ends. tcpdump (or scapy's sniffer when tcpdump is missing) needs root or
CAP_NET_RAW. Ctrl-C stops it early; the file is kept and analysed.
"""


def _add_capture(sub) -> None:
    c = sub.add_parser(
        "capture",
        help="a short, bounded capture of the flow, then its analysis",
        description="Capture the failing flow with tcpdump, bounded, then analyse it.",
        epilog=CAPTURE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("--peer", metavar="HOST:PORT", help="capture only this peer (default: all TCP)")
    c.add_argument("--iface", metavar="IF", help="interface (default: the route's to the peer, else any)")
    c.add_argument("--seconds", default="60", metavar="N", help="stop after N seconds (default 60)")
    c.add_argument(
        "--max-packets", default="100000", metavar="N", help="stop after N packets (default 100000)"
    )
    c.add_argument(
        "--max-bytes", default="200000000", metavar="N", help="stop after N bytes (default 200 MB)"
    )
    c.add_argument("-w", "--write", metavar="FILE", help="write the capture here")
    c.add_argument("--json", action="store_true", help="print the analysis as JSON")


def _ip(value: str, flag: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        raise UsageError(f"{flag} {value!r} is not an IPv4 or IPv6 address") from None


def _hints(args: argparse.Namespace):
    from tui.model import Hints

    hints = Hints(
        client=[_ip(v, "--client") for v in args.client],
        proxy=[_ip(v, "--proxy") for v in args.proxy],
        server=[_ip(v, "--server") for v in args.server],
    )
    paths = {os.path.abspath(c): c for c in args.captures}
    for item in args.vantage:
        path, sep, role = item.rpartition("=")
        if not sep or not path:
            raise UsageError(f"--vantage {item!r}: expected FILE=ROLE, e.g. client.pcap=client")
        if role not in ROLE_CHOICES:
            raise UsageError(f"--vantage {item!r}: ROLE must be one of {', '.join(ROLE_CHOICES)}")
        match = paths.get(os.path.abspath(path))
        if match is None:
            raise UsageError(f"--vantage {item!r}: {path} is not one of the captures given")
        hints.vantage[match] = role
    return hints


def cmd_analyze(args: argparse.Namespace) -> int:
    from tui.analysis import analyze_files
    from tui.capture_reader import CaptureError
    from tui.render import render_markdown, render_text

    hints = _hints(args)
    started = time.perf_counter()
    try:
        result = analyze_files(args.captures, hints)
    except CaptureError as e:
        raise Failed(str(e)) from None
    for c in result.captures:
        for w in c.warnings:
            print(f"rst-triage: warning: {w}", file=sys.stderr)
    if args.json:
        json.dump(result.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.md:
        sys.stdout.write(render_markdown(result))
    else:
        sys.stdout.write(render_text(result, time.perf_counter() - started))
    return 0


def _context(args: argparse.Namespace):
    from tui.checks import Context

    ctx = Context()
    if getattr(args, "peer", None):
        ctx.peer_host, ctx.peer_port = v.peer(args.peer)
    for role in ("client", "proxy", "server"):
        value = getattr(args, role, None)
        if value:
            setattr(ctx, role, v.ip(value, f"--{role}"))
    if getattr(args, "iface", None):
        ctx.iface = v.iface(args.iface)
    if getattr(args, "client_idle", None):
        ctx.client_idle = v.seconds(args.client_idle, "--client-idle", 0, 86400)
    return ctx


def cmd_check(args: argparse.Namespace) -> int:
    from tui import checks
    from tui.render import render_checks_text

    ctx = _context(args)
    ctx.window = v.seconds(args.window, "--window", 0, 60)
    ctx.max_idle = v.seconds(args.max_idle, "--max-idle", 0, 3600)
    if args.url:
        ctx.url = v.url(args.url)
    ctx.logs = [v.readable_file(f, "--log") for f in args.log]
    ctx.units = list(args.unit)
    if args.since:
        ctx.since = time.time() - v.seconds(args.since, "--since", 0)
    ids = [c for c in checks.CHECKS if c not in checks.SLOW or (c == "keepalive" and ctx.url)]
    if args.only:
        ids = [i.strip() for i in args.only.split(",") if i.strip()]
        unknown = [i for i in ids if i not in checks.CHECKS]
        if unknown:
            raise UsageError(
                f"--only: unknown check {', '.join(unknown)} (known: {', '.join(checks.CHECKS)})"
            )
    deadline = ctx.timeout + ctx.window + 0.5
    if "keepalive" in ids:
        deadline = max(deadline, ctx.max_idle * 2 + 10)
        ctx.progress = _progress_printer(args.json)
    results = checks.run_all(ctx, ids, deadline=deadline)
    if args.json:
        json.dump({"schema": checks.SCHEMA, "results": [r.to_json() for r in results]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_checks_text(results))
    return 0


def _progress_printer(quiet: bool):
    """Progress lines for long probes, on stderr so that --json output stays clean."""

    def say(check_id: str, message: str) -> None:
        print(f"rst-triage: {check_id}: {message}", file=sys.stderr, flush=True)

    return None if quiet and not sys.stderr.isatty() else say


def cmd_probe(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from tui.render import render_checks_text

    if args.probe is None:
        raise UsageError("which probe? 'keepalive URL' or 'mtu HOST'")
    say = _progress_printer(args.json)
    if args.probe == "keepalive":
        from tui.checks import keepalive

        url = v.url(args.url)
        client_idle = v.seconds(args.client_idle, "--client-idle", 0, 86400) if args.client_idle else None
        max_idle = v.seconds(args.max_idle, "--max-idle", 0, 3600)
        result = keepalive.probe(url, client_idle, max_idle, (lambda m: say("keepalive", m)) if say else None)
    else:
        from tui.checks import pmtu

        host = v.host(args.host, "HOST")
        iface = v.iface(args.iface) if args.iface else None
        result = pmtu.probe(host, iface, (lambda m: say("pmtu", m)) if say else None)
    if args.json:
        json.dump(result.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_checks_text([result]))
    return 0


def cmd_capture(args: argparse.Namespace) -> int:
    from tui import capture

    ctx = _context(args)
    request = capture.CaptureRequest(
        peer_host=ctx.peer_host,
        peer_port=ctx.peer_port,
        iface=ctx.iface,
        seconds=v.seconds(args.seconds, "--seconds", 0, 86400),
        max_packets=v.count(args.max_packets, "--max-packets"),
        max_bytes=v.count(args.max_bytes, "--max-bytes"),
        out=v.writable_path(args.write, "-w") if args.write else None,
    )
    return capture.run_cli(request, json_out=args.json)


def cmd_tui(args: argparse.Namespace) -> int:
    from tui.findings import Flow, SessionStore
    from tui.playbooks import PlaybookError, load_all

    flow = Flow()
    if args.peer:
        flow.peer_host, flow.peer_port = v.peer(args.peer)
    pcaps = [v.readable_file(p, "--pcap") for p in (args.pcap or [])]
    for p in pcaps:  # a bad capture is a one-line error before the screen changes
        from tui.capture_reader import CaptureError, open_capture

        try:
            open_capture(p).close()
        except CaptureError as e:
            raise Failed(str(e)) from None
    store = SessionStore()
    findings = _session(store, None, " to resume") if args.resume else None
    try:
        playbooks = load_all()
    except PlaybookError as e:
        raise Failed(str(e)) from None
    if not sys.stdout.isatty() or not sys.stdin.isatty():
        print(
            "rst-triage: the app needs a terminal; see 'rst-triage --help' for the commands", file=sys.stderr
        )
        return 2
    from tui.app import RstTriageApp

    app = RstTriageApp(
        flow=flow if args.peer else None, pcaps=pcaps, findings=findings, store=store, playbooks=playbooks
    )

    def hang_up(signum: int, _frame: object) -> None:
        # SSH dropped or we are killed: no terminal to restore, but tcpdump must not outlive
        # us and the findings must be on disk. Then leave at once.
        try:
            app.hang_up()
        finally:
            os._exit(128 + signum)

    signal.signal(signal.SIGHUP, hang_up)
    signal.signal(signal.SIGTERM, hang_up)
    app.run(mouse=not args.no_mouse)
    return 0


def _session(store, path: Optional[Path], why_missing: str):
    """The findings in ``path``, or in the newest session file; Failed when there is none."""
    path = path or store.latest()
    if path is None:
        raise Failed(f"no saved session in {store.root}{why_missing}")
    try:
        return store.load(path)
    except ValueError as e:
        raise Failed(str(e)) from None


def cmd_report(args: argparse.Namespace) -> int:
    from tui.findings import SessionStore, write_private
    from tui.report import render

    store = SessionStore()
    path = Path(v.readable_file(args.session, "--session")) if args.session else None
    findings = _session(store, path, ": run rst-triage first")
    text = render(findings, args.format, args.redact)
    if args.out:
        out = v.writable_path(args.out, "--out")
        write_private(out, text)
        print(f"rst-triage: ticket written to {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            return cmd_tui(args)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "analyze":
            return cmd_analyze(args)
        if args.command == "check":
            return cmd_check(args)
        if args.command == "probe":
            return cmd_probe(args, parser)
        if args.command == "capture":
            return cmd_capture(args)
        raise UsageError(f"unknown command {args.command!r}")
    except (UsageError, InputError) as e:
        print(f"rst-triage: error: {e}", file=sys.stderr)
        return 2
    except Failed as e:
        print(f"rst-triage: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rst-triage: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # e.g. `rst-triage analyze x.pcap | head`: not an error worth a traceback
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
