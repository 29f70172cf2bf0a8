"""Live checks: each module in this package reads one fact off the running system.

A check module defines ``ID``, ``TITLE``, ``PLAYBOOK`` ("first" | "second" | "third") and
``run(ctx: Context) -> CheckResult``. It prints nothing and raises nothing for expected
conditions: no permission, a missing binary, a module not loaded, a container without
``/proc/sys/net/netfilter`` all give a ``skipped`` result with the reason and the command a
human would run. The runner below adds the guarantees a module cannot give itself: checks
run concurrently, each under a deadline, and an unexpected exception becomes an ``error``
result instead of a traceback.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

STATUSES = ("ok", "warn", "fail", "info", "skipped", "error")
SCHEMA = "rst-triage/checks/1"

# check id -> module name, in the order a human would read them
CHECKS: dict[str, str] = {
    "route": "route",
    "tcp-counters": "tcp_counters",
    "sockets": "sockets",
    "proxy-logs": "proxy_logs",
    "conntrack": "conntrack",
    "conntrack-invalid-trap": "conntrack_trap",
    "port-range": "port_range",
    "pmtu": "pmtu",
    "keepalive": "keepalive",
    "tcp-keepalive": "tcp_keepalive",
    "nft-rules": "nft_rules",
    "iface-drops": "iface_drops",
}
SLOW = {"keepalive"}  # long probes: not part of a default `check` run unless asked for


@dataclass
class CheckResult:
    id: str
    title: str
    status: str
    summary: str
    value: Any = None
    evidence: list[str] = field(default_factory=list)
    command: str = ""
    meaning: str = ""
    decision: str = ""
    duration_s: float = 0.0

    def to_json(self) -> dict:
        d = asdict(self)
        d["duration_s"] = round(self.duration_s, 3)
        return d


@dataclass
class Context:
    """The flow under investigation, and how to look at it."""

    peer_host: Optional[str] = None
    peer_port: Optional[int] = None
    client: Optional[str] = None
    proxy: Optional[str] = None
    server: Optional[str] = None
    iface: Optional[str] = None
    client_idle: Optional[float] = None  # the client's connection-pool idle time, seconds
    window: float = 1.0  # sampling window for counters read twice
    url: Optional[str] = None  # for the HTTP keep-alive probe
    max_idle: float = 30.0  # longest idle time the keep-alive probe tries
    logs: list[str] = field(default_factory=list)  # extra proxy log files
    units: list[str] = field(default_factory=list)  # journald units to read proxy lines from
    since: Optional[float] = None  # incident window start (epoch seconds)
    timeout: float = 2.5  # per check (probes that take longer report progress instead)
    progress: Optional[Callable[[str, str], None]] = None  # (check id, message) while running

    def say(self, check_id: str, message: str) -> None:
        if self.progress is not None:
            self.progress(check_id, message)


class Unavailable(Exception):
    """Raised inside a check when it cannot run here; becomes a ``skipped`` result."""

    def __init__(self, reason: str, command: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.command = command


def skipped(check_id: str, title: str, reason: str, command: str = "") -> CheckResult:
    return CheckResult(check_id, title, "skipped", f"not checked: {reason}", command=command)


def run_cmd(argv: list[str], timeout: float = 2.0, human: str = "") -> str:
    """Run a read-only command (argv, never a shell) and return its stdout.

    A missing binary, a permission problem, a non-zero exit or a timeout raise
    :class:`Unavailable` with the command a human would type.
    """
    human = human or " ".join(argv)
    if shutil.which(argv[0]) is None:
        raise Unavailable(f"{argv[0]} is not installed", human)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise Unavailable(f"{argv[0]} did not answer within {timeout:.0f}s", human) from None
    except OSError as e:
        raise Unavailable(f"cannot run {argv[0]}: {e.strerror}", human) from None
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip().splitlines()
        msg = err[-1] if err else f"exit status {proc.returncode}"
        if "ermission" in msg or "not permitted" in msg:
            raise Unavailable(f"{argv[0]}: permission denied (needs root)", human)
        raise Unavailable(f"{argv[0]} failed: {msg}", human)
    return proc.stdout


def read_text(path: str) -> str:
    """Read a small procfs/sysfs file; an absent or unreadable one raises :class:`Unavailable`."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        raise Unavailable(f"{path} does not exist here", f"cat {path}") from None
    except PermissionError:
        raise Unavailable(f"{path} is not readable (needs root)", f"sudo cat {path}") from None
    except OSError as e:
        raise Unavailable(f"cannot read {path}: {e.strerror}", f"cat {path}") from None


def module(check_id: str):
    return importlib.import_module(f"tui.checks.{CHECKS[check_id]}")


def run(check_id: str, ctx: Context) -> CheckResult:
    """Run one check; never raises."""
    started = time.monotonic()
    title = check_id
    try:
        mod = module(check_id)
        title = mod.TITLE
        result = mod.run(ctx)
    except Unavailable as e:
        result = skipped(check_id, title, e.reason, e.command)
    except Exception as e:  # a bug in a check must not take the others down
        result = CheckResult(check_id, title, "error", f"the check failed: {type(e).__name__}: {e}")
    result.duration_s = time.monotonic() - started
    return result


def run_all(
    ctx: Context,
    ids: Optional[list[str]] = None,
    deadline: Optional[float] = None,
    on_result: Optional[Callable[[CheckResult], None]] = None,
) -> list[CheckResult]:
    """Run checks concurrently; a check that misses ``deadline`` is reported as an error.

    Results come back in the order of ``ids``; ``on_result`` sees each one as it finishes.
    Checks are read-only, so one that overruns is left to finish in its daemon thread.
    """
    ids = ids or [c for c in CHECKS if c not in SLOW]
    deadline = deadline if deadline is not None else ctx.timeout + ctx.window + 0.5
    results: dict[str, CheckResult] = {}
    lock = threading.Lock()
    done = threading.Event()

    def one(cid: str) -> None:
        r = run(cid, ctx)
        with lock:
            if cid not in results:
                results[cid] = r
                if on_result is not None:
                    on_result(r)
            if len(results) == len(ids):
                done.set()

    # Daemon threads, not an executor: an executor's workers are joined at exit, so one
    # hung check would keep the command from ending.
    for cid in ids:
        threading.Thread(target=one, args=(cid,), name=f"check-{cid}", daemon=True).start()
    if ids:
        done.wait(deadline)
    with lock:
        for cid in ids:
            if cid not in results:
                title = CHECKS.get(cid, cid)
                results[cid] = CheckResult(
                    cid, title, "error", f"no answer within {deadline:.1f}s", duration_s=deadline
                )
                if on_result is not None:
                    on_result(results[cid])
        return [results[c] for c in ids]
