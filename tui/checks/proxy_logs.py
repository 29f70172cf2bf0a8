"""proxy-logs: what the proxy wrote about the broken connections, and which side broke first.

A proxy sits between two TCP connections and usually knows which one failed first. Its logs
say so in a few well-known phrases; this check reads nginx, HAProxy and Envoy lines of the
incident window and sorts them into three classes:

``client-abort``
    the client side went away first: nginx "client prematurely closed connection" (logged at
    ``info`` level only), an nginx 499, a connection reset by the client while nginx was
    sending to it, an HAProxy termination state starting with ``C``/``c``, Envoy ``DC``.
``upstream-reset``
    the server side reset, closed or refused the proxy's connection: nginx "upstream
    prematurely closed connection", "(104: Connection reset by peer) while reading response
    header from upstream", "(111: Connection refused) while connecting to upstream", a 502;
    HAProxy ``S``; Envoy "upstream reset: reset reason: connection termination / remote reset
    / connection failure" and the flags ``UC``/``UR``/``UF``/``URX``.
``proxy-timeout``
    the proxy itself gave up or refused, by timeout or by policy: nginx "upstream timed out",
    504 and 444; HAProxy ``s``, ``P``, ``R``, ``I``, ``D``, ``U``, ``K``; Envoy ``UT``, ``LR``,
    ``DT``, ``UO``, ``RL``...

Sources: the default log files (``/var/log/nginx/error.log``, ``access.log``,
``/var/log/haproxy.log`` and their ``.1``), or only the ones the user names (``--log``,
``--unit`` for journald). Only the tail of each file is read (4 MiB), so a huge log costs the
same as a small one; the whole check keeps to a time budget well under the engine's deadline.
"""

from __future__ import annotations

import calendar
import os
import re
import stat
import time
from dataclasses import dataclass, field
from typing import Optional

from tui.checks import CheckResult, Context, Unavailable, run_cmd

ID = "proxy-logs"
TITLE = "Proxy logs: which side broke first"
PLAYBOOK = "second"

DEFAULT_LOGS = ("/var/log/nginx/error.log", "/var/log/nginx/access.log", "/var/log/haproxy.log")
ROTATED_SUFFIX = ".1"
TAIL_BYTES = 4 << 20  # read at most the last 4 MiB of each file
JOURNAL_LINES = 20000  # and at most this many journal lines per unit
JOURNAL_TIMEOUT = 1.0
DEFAULT_WINDOW = 900.0  # seconds: the incident window when the user gives no --since
BUDGET_S = 1.2  # stop parsing (and say so) after this long
SAMPLES = 3
SAMPLE_CHARS = 240

CLIENT = "client-abort"
UPSTREAM = "upstream-reset"
PROXY = "proxy-timeout"
CLASSES = (CLIENT, UPSTREAM, PROXY)
CLASS_TITLES = {
    CLIENT: "client aborted",
    UPSTREAM: "upstream reset/closed/refused",
    PROXY: "proxy timeout or policy",
}

# --- HAProxy ---------------------------------------------------------------------------------
# The termination state (configuration.txt, 8.5 "Session state at disconnection"): its first
# character is the event that ended the session. Our mapping, with the documentation's meaning:
HAPROXY_FIRST = {
    # C: "the TCP session was unexpectedly aborted by the client"
    "C": (CLIENT, "client aborted"),
    # c: "the client-side timeout expired while waiting for the client to send or receive
    #    data": the client went silent (stopped reading or sending); its side, not the server's
    "c": (CLIENT, "client went silent (timeout client)"),
    # S: "the TCP session was unexpectedly aborted by the server, or the server explicitly
    #    refused it" (an RST, a FIN before the response, or a refused connect)
    "S": (UPSTREAM, "server aborted or refused"),
    # s: "the server-side timeout expired while waiting for the server to send or receive
    #    data": HAProxy's own timeout server/connect gave up (haproxy 2.6 then RSTs upstream)
    "s": (PROXY, "timeout server/connect expired"),
    # P: "prematurely aborted by the proxy, because of a connection limit enforcement, because
    #    a DENY filter was matched, because of a security check"
    "P": (PROXY, "proxy abort (limit/deny/security check)"),
    # R: "a resource on the proxy has been exhausted (memory, sockets, source ports, ...)"
    "R": (PROXY, "proxy resource exhausted"),
    # I: "an internal error was identified by the proxy during a self-check"
    "I": (PROXY, "proxy internal error"),
    # D: "killed by HAProxy because the server was detected as down" (on-marked-down)
    "D": (PROXY, "killed: server marked down"),
    # U: "killed by HAProxy on this backup server because an active server was detected as up"
    "U": (PROXY, "killed: active server back up"),
    # K: "actively killed by an admin operating on HAProxy"
    "K": (PROXY, "killed by an admin"),
    # L ("locally processed") and "-" (normal completion) are not failures.
}
_HAPROXY_STATE = re.compile(r"\s([A-Za-z-]{2}|[A-Za-z-]{4})\s+\d+/\d+/\d+/\d+/\+?\d+\s+\d+/\d+(?:\s|$)")

# --- nginx -------------------------------------------------------------------------------------
_NGINX_ERROR = re.compile(r"\[(debug|info|notice|warn|error|crit|alert|emerg)\] \d+#\d+: ")
_NGINX_STATUS = re.compile(r'"(?:[^"\\]|\\.)*" (\d{3}) (?:\d+|-)(?:\s|$)')
_NGINX_CONTEXT = re.compile(r" while ([a-zA-Z ]+?)(?:, client: |$)")
_ERRNO_RESET = re.compile(r"(\w+)\(\) failed \((104: Connection reset by peer|32: Broken pipe)\)")
_NGINX_READS = {"recv", "readv", "SSL_read", "recvfrom", "read"}
NGINX_STATUS = {
    "499": (CLIENT, "nginx 499 (client closed before the response)"),
    "502": (UPSTREAM, "nginx 502 (bad gateway: upstream failed)"),
    "504": (PROXY, "nginx 504 (upstream timed out)"),
    "444": (PROXY, "nginx 444 (closed without response, by policy)"),
}

# --- Envoy -------------------------------------------------------------------------------------
# Response flags (access log %RESPONSE_FLAGS%), documented meanings.
ENVOY_FLAGS = {
    "DC": (CLIENT, "DC downstream connection termination"),
    "UC": (UPSTREAM, "UC upstream connection termination"),
    "UR": (UPSTREAM, "UR upstream remote reset"),
    "UF": (UPSTREAM, "UF upstream connection failure"),
    "URX": (UPSTREAM, "URX upstream retry limit exceeded"),
    "UPE": (UPSTREAM, "UPE upstream protocol error"),
    "UT": (PROXY, "UT upstream request timeout"),
    "LR": (PROXY, "LR connection local reset"),
    "DT": (PROXY, "DT downstream request timeout"),
    "SI": (PROXY, "SI stream idle timeout"),
    "UMSDR": (PROXY, "UMSDR upstream max stream duration reached"),
    "UO": (PROXY, "UO upstream overflow (circuit breaker)"),
    "RL": (PROXY, "RL rate limited"),
    "OM": (PROXY, "OM overload manager"),
    "DO": (PROXY, "DO dropped by overload"),
}
# Stream reset reasons ("upstream reset: reset reason: X" and %RESPONSE_CODE_DETAILS%).
ENVOY_REASONS = {
    "connection termination": UPSTREAM,
    "remote reset": UPSTREAM,
    "remote refused stream reset": UPSTREAM,
    "connection failure": UPSTREAM,
    "remote error with connect request": UPSTREAM,
    "protocol error": UPSTREAM,
    "local reset": PROXY,
    "local refused stream reset": PROXY,
    "overflow": PROXY,
    "overload manager reset": PROXY,
    "connection timeout": PROXY,
}
_ENVOY_ACCESS = re.compile(r'\[\d{4}-\d\d-\d\dT[\d:.]+Z\] "[^"]*" (\d{3}|0|-) ([A-Z,-]+) ')
_ENVOY_REASON = re.compile(r"reset reason: ([a-z ]+)")
_ENVOY_DETAILS = re.compile(r"upstream_reset_(?:before|after)_response_started\{([a-z_ ]+)")

# --- timestamps --------------------------------------------------------------------------------
MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
# [21/Nov/2026:17:46:46 +0000] (nginx access), [21/Nov/2026:17:46:46.123] (HAProxy, local time)
_TS_BRACKET = re.compile(r"\[(\d\d)/([A-Z][a-z]{2})/(\d{4}):(\d\d):(\d\d):(\d\d)(\.\d+)?(?: ([+-]\d{4}))?\]")
# 2026/11/21 17:46:46 (nginx error log, local time)
_TS_NGINX = re.compile(r"(\d{4})/(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d)")
# 2026-11-21T17:46:46.123Z (Envoy access), 2026-11-21 17:46:46.123 (Envoy), journalctl short-iso
_TS_ISO = re.compile(
    r"(?:<\d+>(?:1 )?)?\[?(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)([.,]\d+)?(Z|[+-]\d\d:?\d\d)?"
)
# Nov 21 17:46:46 (syslog, local time, no year)
_TS_SYSLOG = re.compile(r"(?:<\d+>)?([A-Z][a-z]{2}) {1,2}(\d{1,2}) (\d\d):(\d\d):(\d\d)")


class _Clock:
    """Turns the timestamp of a log line into epoch seconds (cached per minute)."""

    def __init__(self, now: float) -> None:
        self.now = now
        self._minutes: dict[tuple, float] = {}

    def _minute(self, y: int, mo: int, d: int, h: int, mi: int, tz: Optional[str]) -> float:
        key = (y, mo, d, h, mi, tz)
        t = self._minutes.get(key)
        if t is None:
            if tz is None:  # local time, as the proxy wrote it
                t = time.mktime((y, mo, d, h, mi, 0, 0, 0, -1))
            else:
                t = calendar.timegm((y, mo, d, h, mi, 0, 0, 0, 0)) - _tz_offset(tz)
            self._minutes[key] = t
        return t

    def parse(self, line: str) -> Optional[float]:
        try:
            return self._parse(line)
        except (ValueError, OverflowError):
            return None

    def _parse(self, line: str) -> Optional[float]:
        m = _TS_BRACKET.search(line)
        if m and m.group(2) in MONTHS:
            t = self._minute(int(m.group(3)), MONTHS[m.group(2)], int(m.group(1)), int(m.group(4)),
                             int(m.group(5)), m.group(8))
            return t + int(m.group(6)) + (float(m.group(7)) if m.group(7) else 0.0)
        m = _TS_NGINX.match(line)
        if m:
            y, mo, d, h, mi, s = (int(g) for g in m.groups())
            return self._minute(y, mo, d, h, mi, None) + s
        m = _TS_ISO.match(line)
        if m:
            tz = m.group(8)
            t = self._minute(int(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4)),
                             int(m.group(5)), None if tz is None else tz)
            frac = float(m.group(7).replace(",", ".")) if m.group(7) else 0.0
            return t + int(m.group(6)) + frac
        m = _TS_SYSLOG.match(line)
        if m and m.group(1) in MONTHS:
            year = time.localtime(self.now).tm_year
            mo, d = MONTHS[m.group(1)], int(m.group(2))
            h, mi, s = int(m.group(3)), int(m.group(4)), int(m.group(5))
            t = self._minute(year, mo, d, h, mi, None) + s
            if t > self.now + 86400:  # "Dec 31" read on Jan 1st: last year's
                t = self._minute(year - 1, mo, d, h, mi, None) + s
            return t
        return None


def _tz_offset(tz: str) -> int:
    if tz == "Z":
        return 0
    sign = -1 if tz[0] == "-" else 1
    digits = tz[1:].replace(":", "")
    return sign * (int(digits[:2]) * 3600 + int(digits[2:4]) * 60)


# --- classification ----------------------------------------------------------------------------
def classify(line: str) -> Optional[tuple[str, str]]:
    """(class, why) for a proxy log line that tells who broke a connection, else None."""
    if "reset reason" in line or "upstream_reset_" in line:
        m = _ENVOY_REASON.search(line) or _ENVOY_DETAILS.search(line)
        if m:
            reason = m.group(1).replace("_", " ").strip().lower()
            cls = ENVOY_REASONS.get(reason)
            if cls:
                return cls, f"envoy reset reason: {reason}"
    if "downstream_remote_disconnect" in line:
        return CLIENT, "envoy downstream_remote_disconnect"
    if "Z] \"" in line:
        m = _ENVOY_ACCESS.search(line)
        if m:
            for flag in m.group(2).split(","):
                hit = ENVOY_FLAGS.get(flag)
                if hit:
                    return hit
            return None
    m = _HAPROXY_STATE.search(line)
    if m:
        state = m.group(1)
        hit = HAPROXY_FIRST.get(state[0])
        if hit:
            return hit[0], f"haproxy {state} ({hit[1]})"
        return None
    if "#" in line:
        m = _NGINX_ERROR.search(line)
        if m:
            return _classify_nginx_error(line[m.end():])
    m = _NGINX_STATUS.search(line)
    if m and m.group(1) in NGINX_STATUS:
        return NGINX_STATUS[m.group(1)]
    return None


def _classify_nginx_error(msg: str) -> Optional[tuple[str, str]]:
    # Order matters: "client prematurely closed connection, so upstream connection is closed
    # too (104: Connection reset by peer) while reading upstream" is the client's doing.
    if "client prematurely closed connection" in msg:
        return CLIENT, "nginx: client prematurely closed connection"
    if "upstream prematurely closed connection" in msg:
        return UPSTREAM, "nginx: upstream prematurely closed connection"
    if "upstream timed out" in msg:
        return PROXY, "nginx: upstream timed out"
    if "client timed out" in msg:
        return CLIENT, "nginx: client timed out (went silent)"
    if "(111: Connection refused) while connecting to upstream" in msg:
        return UPSTREAM, "nginx: upstream refused the connection"
    if "no live upstreams" in msg:
        return UPSTREAM, "nginx: no live upstreams"
    m = _ERRNO_RESET.search(msg)
    if not m:
        return None
    call, err = m.group(1), m.group(2).split(": ", 1)[1].lower()
    ctx = _NGINX_CONTEXT.search(msg)
    where = ctx.group(1) if ctx else ""
    # Which socket failed: the phase names it, except in "reading upstream" (nginx reads the
    # upstream and writes to the client in the same phase): there a read is the upstream's,
    # a write (writev, sendfile, send, SSL_write) the client's.
    if "client" in where:
        return CLIENT, f"nginx: {err} while {where}"
    if where == "reading upstream":
        side = UPSTREAM if call in _NGINX_READS else CLIENT
        return side, f"nginx: {call}() {err} while {where}"
    if "upstream" in where:
        return UPSTREAM, f"nginx: {err} while {where}"
    return None


# --- reading -----------------------------------------------------------------------------------
class LogUnreadable(Exception):
    def __init__(self, reason: str, command: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.command = command


@dataclass
class Source:
    name: str  # a path, or "journal:UNIT"
    status: str = "read"  # read | partial (time budget) | stale (not written in the window) |
    #                       unreadable | missing
    reason: str = ""
    command: str = ""
    bytes_read: int = 0
    lines: int = 0
    truncated: bool = False  # only the tail was read
    newest: Optional[float] = None  # time of the last dated line
    counts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        d: dict = {"source": self.name, "status": self.status}
        if self.reason:
            d["reason"] = self.reason
        if self.status in ("read", "partial"):
            d.update(bytes_read=self.bytes_read, lines=self.lines, tail_only=self.truncated,
                     counts=dict(self.counts))
            if self.newest is not None:
                d["newest_line"] = round(self.newest, 3)
        return d


@dataclass
class Tally:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASSES, 0))
    reasons: dict[str, dict[str, int]] = field(default_factory=lambda: {c: {} for c in CLASSES})
    samples: dict[str, list[str]] = field(default_factory=lambda: {c: [] for c in CLASSES})
    first: Optional[float] = None
    last: Optional[float] = None

    def add(self, cls: str, why: str, t: float, line: str, source: str) -> None:
        self.counts[cls] += 1
        self.reasons[cls][why] = self.reasons[cls].get(why, 0) + 1
        text = line.strip()
        if len(text) > SAMPLE_CHARS:
            text = text[: SAMPLE_CHARS - 3] + "..."
        kept = self.samples[cls]
        kept.append(f"{os.path.basename(source)}: {text}")
        if len(kept) > SAMPLES:  # keep the latest ones: closest to the page
            del kept[0]
        self.first = t if self.first is None else min(self.first, t)
        self.last = t if self.last is None else max(self.last, t)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def read_tail(path: str, limit: int = TAIL_BYTES, not_before: Optional[float] = None
              ) -> tuple[str, int, bool, float]:
    """(text, bytes read, truncated, mtime) of the last ``limit`` bytes, whole lines only.

    A file last written before ``not_before`` is opened (to prove it is readable) but not read.
    """
    human = f"sudo tail -n 200 {path}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise LogUnreadable("does not exist", f"ls -l {os.path.dirname(path) or '.'}") from None
    except PermissionError:
        raise LogUnreadable("permission denied (needs root or the adm group)", human) from None
    except OSError as e:
        raise LogUnreadable(f"cannot open: {e.strerror}", human) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise LogUnreadable("not a regular file", f"ls -l {path}")
        start = max(0, st.st_size - limit)
        chunks = []
        got = 0
        while got < st.st_size - start and (not_before is None or st.st_mtime >= not_before):
            chunk = os.pread(fd, min(1 << 20, st.st_size - start - got), start + got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    except PermissionError:
        raise LogUnreadable("permission denied", human) from None
    except OSError as e:
        raise LogUnreadable(f"cannot read: {e.strerror}", human) from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    truncated = start > 0
    if truncated:  # the first line is cut: drop it
        cut = data.find(b"\n")
        data = data[cut + 1 :] if cut >= 0 else b""
    return data.decode("utf-8", errors="replace"), got, truncated, st.st_mtime


def scan_lines(lines: list[str], since: float, clock: _Clock, source: Source, tally: Tally,
               deadline: float) -> None:
    """Classify every line of ``lines`` dated in the window into ``tally``."""
    for i, line in enumerate(lines):
        if not (i & 1023) and time.monotonic() > deadline:
            source.status = "partial"
            source.reason = f"stopped after {i} of {len(lines)} lines (time budget)"
            break
        hit = classify(line)
        if hit is None:
            continue
        t = clock.parse(line)
        if t is None or t < since:
            continue
        cls, why = hit
        source.counts[cls] = source.counts.get(cls, 0) + 1
        tally.add(cls, why, t, line, source.name)
    for line in reversed(lines[-50:]):
        t = clock.parse(line)
        if t is not None:
            source.newest = t
            break


def _default_paths() -> list[str]:
    paths = []
    for p in DEFAULT_LOGS:
        paths.append(p)
        paths.append(p + ROTATED_SUFFIX)
    return paths


_UNIT = re.compile(r"^[A-Za-z0-9@._:\\-]{1,256}$")


def _read_journal(unit: str, since: float) -> list[str]:
    if not _UNIT.match(unit) or unit.startswith("-"):
        raise LogUnreadable("not a valid unit name", "systemctl list-units --type=service")
    argv = ["journalctl", f"--unit={unit}", "--since", f"@{int(since)}", "-o", "short-iso",
            "--no-pager", "-q", "-n", str(JOURNAL_LINES)]
    human = f"journalctl -u {unit} --since @{int(since)} -o short-iso --no-pager"
    try:
        out = run_cmd(argv, timeout=JOURNAL_TIMEOUT, human=human)
    except Unavailable as e:
        raise LogUnreadable(e.reason, e.command) from None
    return [ln for ln in out.splitlines() if ln and not ln.startswith("-- ")]


def _ago(t: float, now: float) -> str:
    secs = max(0, int(now - t))
    if secs < 120:
        return f"{secs} s ago"
    if secs < 7200:
        return f"{secs // 60} min ago"
    if secs < 172800:
        return f"{secs // 3600} h ago"
    return f"{secs // 86400} days ago"


def _clock_str(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


MEANING = {
    CLIENT: (
        "The proxy saw the client side go first: the client closed or reset before the response"
        " was complete (nginx 499 / 'client prematurely closed connection', HAProxy C/c, Envoy"
        " DC). The proxy and the server are the victims here; the usual culprit is a client or"
        " SDK timeout shorter than the response time, or a load balancer idle timeout in front"
        " of the proxy."
    ),
    UPSTREAM: (
        "The upstream broke the proxy's connection before a full response: it reset it (crash,"
        " SO_LINGER 0 abort, restart during a deploy), closed it (FIN on an idle keep-alive"
        " connection the proxy then reused) or refused it (nothing listening). The proxy turned"
        " that into a 502 or a reset toward the client."
    ),
    PROXY: (
        "The proxy itself gave up or refused: its own timeout fired (nginx proxy_read_timeout"
        " -> 504, HAProxy 'timeout server' -> sH/sD, Envoy UT) or a limit/policy cut the"
        " connection (nginx 444, HAProxy P/R/K, Envoy UO/RL). The server may be healthy but"
        " slower than the proxy allows."
    ),
}
DECISION = {
    CLIENT: (
        "Look at the client: compare its request timeout (and any load balancer idle timeout in"
        " front of the proxy) with the latency of these requests (nginx $request_time, HAProxy"
        " Tt). Capture on the client to confirm the FIN/RST leaves from there:"
        " `rst-triage capture --peer PROXY:PORT`."
    ),
    UPSTREAM: (
        "Go to the server: its logs and restarts in the window (`journalctl -u SERVICE --since"
        " '15 min ago'`), its keep-alive idle timeout vs the proxy's upstream keepalive_timeout /"
        " http-reuse. Capture on the proxy's upstream side to see the server's RST or FIN."
    ),
    PROXY: (
        "Compare the proxy's timeouts with the upstream's latency: `grep -rn 'proxy_read_timeout"
        "\\|proxy_connect_timeout\\|send_timeout' /etc/nginx`, `grep -n 'timeout' "
        "/etc/haproxy/haproxy.cfg`, Envoy route 'timeout'. Raise a timeout only if that"
        " slowness is expected; otherwise fix the slow upstream (p99 latency, saturation)."
    ),
}


def run(ctx: Context) -> CheckResult:
    started = time.monotonic()
    deadline = started + BUDGET_S
    now = time.time()
    since = ctx.since if ctx.since is not None else now - DEFAULT_WINDOW
    clock = _Clock(now)
    tally = Tally()
    sources: list[Source] = []
    explicit = bool(ctx.logs or ctx.units)
    paths = list(ctx.logs) if explicit else _default_paths()
    for path in paths:
        src = Source(path)
        sources.append(src)
        try:
            text, got, truncated, mtime = read_tail(path, not_before=since)
        except LogUnreadable as e:
            missing = e.reason == "does not exist"
            if missing and not explicit and path.endswith(ROTATED_SUFFIX):
                sources.pop()  # an absent rotated file is not worth a line
                continue
            src.status = "missing" if missing else "unreadable"
            src.reason, src.command = e.reason, e.command
            continue
        if mtime < since:  # nothing was written to it during the window: not read
            src.status = "stale"
            src.reason = f"last written {_clock_str(mtime)} ({_ago(mtime, now)}), before the window"
            continue
        src.bytes_read, src.truncated = got, truncated
        lines = text.splitlines()
        src.lines = len(lines)
        scan_lines(lines, since, clock, src, tally, deadline)
    for unit in ctx.units:
        src = Source(f"journal:{unit}")
        sources.append(src)
        try:
            lines = _read_journal(unit, since)
        except LogUnreadable as e:
            src.status, src.reason, src.command = "unreadable", e.reason, e.command
            continue
        src.lines = len(lines)
        src.bytes_read = sum(len(ln) + 1 for ln in lines)
        if not lines:
            src.status = "stale"
            src.reason = "no journal entry for this unit in the window (right unit name? logs to journald?)"
            continue
        scan_lines(lines, since, clock, src, tally, deadline)
    return _result(ctx, sources, tally, since, now, explicit)


GREP_PATTERN = (
    "prematurely closed|reset by peer|timed out|reset reason|\" (499|502|504|444) "
    "| [CcSsPRIDUK][A-Z-]{1,3} [0-9]+/[0-9]+/"
)


def _commands(sources: list[Source], since: float) -> str:
    """What a human would type: one grep over the files, one journalctl per unit."""
    files = [s.name for s in sources if not s.name.startswith("journal:") and s.status != "missing"]
    if not files and not any(s.name.startswith("journal:") for s in sources):
        files = list(DEFAULT_LOGS)
    cmds = []
    if files:
        cmds.append(f"sudo grep -hE '{GREP_PATTERN}' {' '.join(files)} | tail -n 50")
    for s in sources:
        if s.name.startswith("journal:"):
            unit = s.name.split(":", 1)[1]
            cmds.append(f"journalctl -u {unit} --since @{int(since)} -o short-iso --no-pager | tail -n 200")
    return "; ".join(cmds)


def _result(ctx: Context, sources: list[Source], tally: Tally, since: float, now: float,
            explicit: bool) -> CheckResult:
    readable = [s for s in sources if s.status in ("read", "stale", "partial")]
    unreadable = [s for s in sources if s.status == "unreadable"]
    window = f"since {_clock_str(since)} ({_ago(since, now)})"
    value: dict = {
        "window_start": round(since, 3),
        "counts": dict(tally.counts),
        "reasons": {c: dict(r) for c, r in tally.reasons.items()},
        "samples": {c: list(s) for c, s in tally.samples.items()},
        "sources": [s.to_json() for s in sources],
        "dominant": None,
    }
    evidence: list[str] = []
    for s in sources:
        if s.status in ("unreadable", "missing"):
            hint = f" -> `{s.command}`" if s.status == "unreadable" and s.command else ""
            evidence.append(f"{s.name}: {s.status}: {s.reason}{hint}")
            continue
        if s.status == "stale":
            evidence.append(f"{s.name}: {s.reason}")
            continue
        size = f"{s.bytes_read // 1024} KiB" if s.bytes_read >= 1024 else f"{s.bytes_read} B"
        tail = " (tail only)" if s.truncated else ""
        found = ", ".join(f"{c} {n}" for c, n in s.counts.items() if n) or "nothing relevant"
        newest = f", newest line {_ago(s.newest, now)}" if s.newest is not None else ""
        extra = f"; {s.reason}" if s.reason and s.status != "read" else ""
        evidence.append(f"{s.name}: {s.lines} lines, {size}{tail}{newest}: {found}{extra}")
    command = _commands(sources, since)
    if not readable:
        if unreadable:
            why = "; ".join(f"{s.name}: {s.reason}" for s in unreadable)
        elif explicit:
            why = "none of the given logs exists"
        else:
            why = "no nginx/HAProxy log at the default paths (give --log FILE or --unit UNIT)"
        return CheckResult(
            ID, TITLE, "skipped", f"not checked: no proxy log could be read ({why})",
            value=value, evidence=evidence, command=command,
            meaning="Without the proxy's own account, only packets can tell which side broke first.",
            decision=(
                "Read the proxy's logs by hand (`sudo tail -n 200 FILE`), or run again with"
                " --log FILE / --unit UNIT pointing at where this proxy logs."
            ),
        )
    counts = tally.counts
    if tally.total == 0:
        note = f"; {len(unreadable)} unreadable" if unreadable else ""
        return CheckResult(
            ID, TITLE, "ok",
            f"no client abort, upstream reset or proxy timeout in {len(readable)} log(s) {window}{note}",
            value=value, evidence=evidence, command=command,
            meaning=(
                "The proxy logged no broken connection in the window: either the resets did not"
                " pass through this proxy, or it does not log them (nginx logs client aborts only"
                " with `error_log ... info`)."
            ),
            decision=(
                "If the resets are recent, widen the window (--since) or check the proxy's log"
                " level; otherwise the reset happened elsewhere: capture on the client and on the"
                " proxy to see who sends it."
            ),
        )
    ranked = sorted(CLASSES, key=lambda c: counts[c], reverse=True)
    top, second = ranked[0], ranked[1]
    dominant = counts[top] >= 2 * counts[second] and counts[top] > 0
    value["dominant"] = top if dominant else None
    parts = ", ".join(f"{CLASS_TITLES[c]} {counts[c]}" for c in CLASSES)
    summary = f"{parts} {window}"
    for c in ranked:
        if not counts[c]:
            continue
        why = ", ".join(f"{w} x{n}" for w, n in sorted(tally.reasons[c].items(), key=lambda x: -x[1]))
        evidence.append(f"{CLASS_TITLES[c]}: {counts[c]} ({why})")
        evidence.extend(f"e.g. {line}" for line in tally.samples[c])
    if tally.first is not None and tally.last is not None:
        evidence.append(f"first {_clock_str(tally.first)}, last {_clock_str(tally.last)}")
    if dominant:
        lead = f"Mostly {CLASS_TITLES[top]} ({counts[top]} of {tally.total} lines). "
        meaning = lead + MEANING[top]
        decision = DECISION[top]
    else:
        tied = [c for c in ranked if counts[c] and counts[c] * 2 > counts[top]]
        meaning = (
            f"Mixed: {', '.join(f'{CLASS_TITLES[c]} {counts[c]}' for c in tied)}. Several failure"
            " modes at once (or one cascading into another: a slow upstream makes both proxy"
            " timeouts and client give-ups). " + MEANING[top]
        )
        decision = " ".join(DECISION[c] for c in tied)
    return CheckResult(ID, TITLE, "warn", summary, value=value, evidence=evidence,
                       command=command, meaning=meaning, decision=decision)
