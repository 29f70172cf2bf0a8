"""The ``rst-triage`` command line. Subcommands call the same core functions the TUI uses."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import time
from typing import Optional

from tui import __version__

ROLE_CHOICES = ("client", "proxy", "server", "middlebox")

DESCRIPTION = """\
Find who sent the TCP reset behind "connection reset by peer".

  rst-triage analyze CAPTURE...    who sent each RST in pcap/pcapng captures, and why

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
    return p


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
        print(f"rst-triage: {e}", file=sys.stderr)
        return 1
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


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        if args.command == "analyze":
            return cmd_analyze(args)
        raise UsageError(f"unknown command {args.command!r}")
    except UsageError as e:
        print(f"rst-triage: error: {e}", file=sys.stderr)
        return 2
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
