"""keepalive: the server's HTTP keep-alive idle timeout, measured, against the client pool's.

The classic reset on reuse: a client pool keeps an idle connection longer than the server does.
The server closes it (FIN) after its keep-alive timeout; the pool, not having noticed, sends
the next request on it; the server's kernel answers that with a RST and the application logs
"connection reset by peer" (or an upstream 502 behind a proxy).

The probe opens one connection per idle time of a ladder (0.5, 1, 2, 3, 5, 8, 13, 21, 30 ...
up to ``max_idle``), all at once: each sends a request, reads the answer, stays idle for its
time while watching for the server's FIN (or RST), then sends a second request on the same
socket. A connection that answers is alive at that idle time; one the server closed gives the
server's timeout directly (the moment its FIN arrived). Once the bracket between the last
survivor and the first failure is known, a few extra connections idle at times inside it, so
the result is within about a second. All run in parallel: the whole probe takes about the
longest idle time it needed, not the sum, and never more than ``max_idle`` plus a few seconds.

A plain socket HTTP/1.1 client is used (not httpx): a pool would silently open a new
connection when it sees the FIN, and the point is to reuse *this* connection and see what
happens to it. Reuse is proven by construction (one socket per rung, never reconnected) and
shown with the local port of each connection. TLS is supported (the certificate is not
verified: the probe only measures timing and sends no credentials). Proxies from the
environment are ignored: the probe talks to the URL's host directly.
"""

from __future__ import annotations

import ipaddress
import re
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from tui.checks import CheckResult, Context

ID = "keepalive"
TITLE = "HTTP keep-alive idle timeout"
PLAYBOOK = "third"

LADDER = (0.5, 1, 2, 3, 5, 8, 13, 21, 30, 45, 60, 90, 120, 180, 240, 300, 450, 600, 900, 1200,
          1800, 2700, 3600)
CONNECT_TIMEOUT = 3.0
IO_TIMEOUT = 5.0
REUSE_TIMEOUT = 2.0  # at least; or 5x the first answer's time: a reuse nobody answers is dead
RESOLVE_TIMEOUT = 2.0
SLACK = 4.0  # the whole probe ends by max_idle + SLACK (connects, requests, refinement)
MAX_REFINE = 10
MAX_HEADER = 64 * 1024
MAX_BODY = 8 * 1024 * 1024
USER_AGENT = "rst-triage-keepalive-probe"

DEFAULTS_TEXT = (
    "Common defaults - servers: nginx keepalive_timeout 75 s, Apache KeepAliveTimeout 5 s, "
    "Node.js http server keepAliveTimeout 5 s, AWS ALB idle timeout 60 s; client pools: Go "
    "net/http Transport IdleConnTimeout 90 s, .NET SocketsHttpHandler PooledConnectionIdleTimeout "
    "1 min (.NET 6+; 2 min in .NET Core/.NET 5), Python requests/urllib3 no idle limit at all (a "
    "pooled connection is reused however old it is)."
)


class ProbeError(Exception):
    """The URL could not be probed at all (connect refused, not HTTP, ...)."""


@dataclass
class Target:
    url: str
    scheme: str
    host: str
    port: int
    path: str
    addr: str = ""

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


@dataclass
class Response:
    version: str
    status: int
    headers: dict[str, str]
    reusable: bool  # the server allows another request on this connection
    why_not: str = ""
    leftover: bytes = b""  # bytes after the response (a well-behaved server sends none)


@dataclass
class Rung:
    """One connection: request, idle ``idle`` seconds, request again on the same socket."""

    idle: float
    refine: bool = False
    outcome: str = "pending"  # alive | closed | dead | no-keepalive | error | cancelled | unfinished
    local_port: Optional[int] = None
    closed_at: Optional[float] = None  # seconds of idle when the server's FIN/RST arrived
    closed_by: str = ""  # FIN | RST
    reuse: str = ""  # what a second request on the connection got
    error: str = ""
    first: Optional[Response] = None
    latency: float = 0.0  # seconds the first request took (request sent to response read)
    done: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)  # no longer needed

    def to_json(self) -> dict[str, Any]:
        return {
            "idle_s": self.idle,
            "refine": self.refine,
            "outcome": self.outcome,
            "local_port": self.local_port,
            "closed_after_s": round(self.closed_at, 3) if self.closed_at is not None else None,
            "closed_by": self.closed_by or None,
            "reuse": self.reuse or None,
            "error": self.error or None,
        }


# ---- HTTP/1.1 over a plain (or TLS) socket ------------------------------------------------------
def parse_target(url: str) -> Target:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ProbeError(f"{url!r} is not an http:// or https:// URL")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise ProbeError(f"{url!r} has an invalid port") from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(url, scheme, parts.hostname, port, path)


def resolve(target: Target) -> None:
    try:
        target.addr = str(ipaddress.ip_address(target.host))
        return
    except ValueError:
        pass
    out: dict[str, Any] = {}

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
            out["addr"] = str(infos[0][4][0])
        except (OSError, IndexError) as e:
            out["error"] = str(e)

    t = threading.Thread(target=lookup, name="keepalive-resolve", daemon=True)
    t.start()
    t.join(RESOLVE_TIMEOUT)
    if "addr" not in out:
        raise ProbeError(f"cannot resolve {target.host}: "
                         f"{out.get('error') or f'no answer within {RESOLVE_TIMEOUT:.0f}s'}")
    target.addr = out["addr"]


def request_bytes(target: Target) -> bytes:
    return (f"GET {target.path} HTTP/1.1\r\nHost: {target.host_header}\r\nUser-Agent: {USER_AGENT}\r\n"
            "Accept: */*\r\nConnection: keep-alive\r\n\r\n").encode("ascii", "replace")


def connect(target: Target, timeout: float) -> socket.socket:
    sock = socket.create_connection((target.addr, target.port), timeout=timeout)
    if target.scheme != "https":
        return sock
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # timing probe: no credentials are sent
    ctx.set_alpn_protocols(["http/1.1"])
    sni = None if _is_ip(target.host) else target.host
    try:
        return ctx.wrap_socket(sock, server_hostname=sni)
    except (OSError, ssl.SSLError):
        sock.close()
        raise


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def keep_alive_header(value: str) -> dict[str, int]:
    """``Keep-Alive: timeout=5, max=100`` -> {"timeout": 5, "max": 100}."""
    out: dict[str, int] = {}
    for m in re.finditer(r"(timeout|max)\s*=\s*(\d+)", value, re.IGNORECASE):
        out[m.group(1).lower()] = int(m.group(2))
    return out


def read_response(sock: socket.socket, deadline: float, buf: bytes = b"") -> Response:
    """One complete HTTP/1.x response (headers and body); raises OSError/ProbeError/EOFError."""
    while b"\r\n\r\n" not in buf:
        if len(buf) > MAX_HEADER:
            raise ProbeError("response header larger than 64 KiB")
        chunk = _recv(sock, deadline)
        if not chunk:
            raise EOFError("connection closed before a complete response" if buf else "connection closed")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("iso-8859-1").split("\r\n")
    m = re.match(r"HTTP/(\d\.\d)\s+(\d{3})", lines[0])
    if not m:
        raise ProbeError(f"not an HTTP response: {lines[0][:60]!r}")
    version, status = m.group(1), int(m.group(2))
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    if 100 <= status < 200:  # an interim answer: the real one follows
        return read_response(sock, deadline, rest)
    conn = headers.get("connection", "").lower()
    reusable, why = True, ""
    if "close" in conn:
        reusable, why = False, "Connection: close"
    elif version == "1.0" and "keep-alive" not in conn:
        reusable, why = False, "HTTP/1.0 without keep-alive"
    te = headers.get("transfer-encoding", "").lower()
    leftover = rest
    if status in (204, 304):
        pass
    elif "chunked" in te:
        leftover = _read_chunked(sock, rest, deadline)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"].split(",")[0])
        except ValueError:
            raise ProbeError(f"bad Content-Length {headers['content-length']!r}") from None
        if length > MAX_BODY:
            raise ProbeError(f"body of {length} bytes is too big for a probe: use a small URL "
                             "(a health check)")
        leftover = _read_exact(sock, rest, length, deadline)
    else:
        reusable, why, leftover = False, "body delimited by closing the connection", b""
    return Response(version, status, headers, reusable, why, leftover)


def _recv(sock: socket.socket, deadline: float, n: int = 65536) -> bytes:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("no complete answer in time")
    sock.settimeout(min(left, IO_TIMEOUT))
    return sock.recv(n)


def _read_exact(sock: socket.socket, have: bytes, length: int, deadline: float) -> bytes:
    """Consume a body of ``length`` bytes; return what came after it."""
    got = len(have)
    while got < length:
        chunk = _recv(sock, deadline, min(65536, length - got))
        if not chunk:
            raise EOFError("connection closed in the middle of the body")
        got += len(chunk)
    return have[length:]


def _read_chunked(sock: socket.socket, buf: bytes, deadline: float) -> bytes:
    """Consume a chunked body and its trailers; return what came after it."""
    total = 0
    for _ in range(100000):  # bounded: each pass consumes one chunk
        while b"\r\n" not in buf:
            chunk = _recv(sock, deadline)
            if not chunk:
                raise EOFError("connection closed in a chunked body")
            buf += chunk
        line, _, buf = buf.partition(b"\r\n")
        try:
            size = int(line.split(b";")[0].strip() or b"0", 16)
        except ValueError:
            raise ProbeError("bad chunk size in a chunked body") from None
        total += size
        if total > MAX_BODY:
            raise ProbeError("chunked body too big for a probe: use a small URL (a health check)")
        if size == 0:  # trailers end with an empty line
            while not (buf.startswith(b"\r\n") or b"\r\n\r\n" in buf):
                chunk = _recv(sock, deadline)
                if not chunk:
                    return b""
                buf += chunk
            return buf[2:] if buf.startswith(b"\r\n") else buf.partition(b"\r\n\r\n")[2]
        while len(buf) < size + 2:
            chunk = _recv(sock, deadline)
            if not chunk:
                raise EOFError("connection closed in a chunked body")
            buf += chunk
        buf = buf[size + 2:]
    raise ProbeError("too many chunks in a chunked body")


def _err_name(e: BaseException) -> str:
    if isinstance(e, ConnectionResetError):
        return "RST (connection reset by peer)"
    if isinstance(e, BrokenPipeError):
        return "broken pipe (the server had reset the connection)"
    if isinstance(e, EOFError):
        return f"EOF ({e})"
    if isinstance(e, (TimeoutError, socket.timeout)):
        return "no answer (timeout)"
    if isinstance(e, ssl.SSLError):
        return f"TLS error: {e.reason or e}"
    if isinstance(e, OSError):
        return f"{type(e).__name__}: {e.strerror or e}"
    return f"{type(e).__name__}: {e}"


# ---- one rung -----------------------------------------------------------------------------------
class Runner:
    def __init__(self, target: Target, deadline: float, say: Callable[[str], None]) -> None:
        self.target = target
        self.deadline = deadline
        self.say = say
        self.cancel = threading.Event()
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.rungs: list[Rung] = []

    def start(self, rung: Rung) -> None:
        with self.lock:
            self.rungs.append(rung)
        threading.Thread(target=self._run, args=(rung,), name=f"keepalive-{rung.idle}", daemon=True).start()

    def _finish(self, rung: Rung, outcome: str) -> None:
        with self.changed:
            rung.outcome = outcome
            rung.done.set()
            self.changed.notify_all()

    def _run(self, rung: Rung) -> None:
        sock: Optional[socket.socket] = None
        try:
            sock = self._first(rung)
            if sock is None:
                return
            self._idle_and_reuse(rung, sock)
        except Exception as e:  # a rung must always finish, whatever happened
            rung.error = rung.error or _err_name(e)
            self._finish(rung, "error")
        finally:
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass
            if not rung.done.is_set():
                self._finish(rung, "error")

    def _first(self, rung: Rung) -> Optional[socket.socket]:
        left = self.deadline - time.monotonic()
        try:
            sock = connect(self.target, min(CONNECT_TIMEOUT, max(left, 0.1)))
        except (OSError, ssl.SSLError) as e:
            rung.error = f"connect to {self.target.addr} port {self.target.port}: {_err_name(e)}"
            self._finish(rung, "error")
            return None
        rung.local_port = sock.getsockname()[1]
        try:
            sent = time.monotonic()
            sock.sendall(request_bytes(self.target))
            rung.first = read_response(sock, min(self.deadline, time.monotonic() + IO_TIMEOUT))
            rung.latency = time.monotonic() - sent
        except (OSError, EOFError, ProbeError) as e:
            rung.error = f"first request: {_err_name(e) if not isinstance(e, ProbeError) else e}"
            sock.close()
            self._finish(rung, "error")
            return None
        if rung.first.leftover:
            rung.error = f"the server sent {len(rung.first.leftover)} bytes after its response"
            sock.close()
            self._finish(rung, "error")
            return None
        if not rung.first.reusable:
            rung.reuse = rung.first.why_not
            sock.close()
            self._finish(rung, "no-keepalive")
            return None
        return sock

    def _idle_and_reuse(self, rung: Rung, sock: socket.socket) -> None:
        t0 = time.monotonic()
        until = t0 + rung.idle
        raw = sock
        while True:
            now = time.monotonic()
            if self.cancel.is_set() or rung.stop.is_set() or now >= self.deadline:
                self._finish(rung, "cancelled")
                return
            if now >= until:
                break
            # TLS: data may sit decrypted in the SSL object already
            pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
            ready = pending or bool(select.select([raw], [], [], min(until - now, 0.25))[0])
            if not ready:
                continue
            how = self._peek_close(sock)
            if how == "":
                continue  # a TLS record with no data for us (e.g. a session ticket): still idle
            rung.closed_at = time.monotonic() - t0
            if how is None:
                rung.error = "the server sent bytes on an idle connection"
                self._finish(rung, "error")
                return
            rung.closed_by = how
            rung.reuse = self._reuse_closed(sock)
            self.say(f"connection idle {_fmt(rung.idle)}: the server closed it after "
                     f"{rung.closed_at:.1f}s ({how}); a request sent on it anyway got {rung.reuse}")
            self._finish(rung, "closed")
            return
        # the idle time is over and the connection looks open: reuse it
        try:
            port_now = sock.getsockname()[1]
            sock.sendall(request_bytes(self.target))
            wait = min(IO_TIMEOUT, max(REUSE_TIMEOUT, 5 * rung.latency))
            second = read_response(sock, min(self.deadline, time.monotonic() + wait))
        except (OSError, EOFError, ProbeError) as e:
            rung.reuse = _err_name(e) if not isinstance(e, ProbeError) else str(e)
            self.say(f"connection idle {_fmt(rung.idle)}: reuse failed: {rung.reuse}")
            self._finish(rung, "dead")
            return
        same = port_now == rung.local_port
        rung.reuse = f"HTTP {second.status} on the same connection (local port {port_now})" if same else (
            f"HTTP {second.status}, but the local port changed ({rung.local_port} -> {port_now})")
        self.say(f"connection idle {_fmt(rung.idle)}: still alive (local port {port_now}, "
                 f"second request answered {second.status})")
        self._finish(rung, "alive" if same else "error")

    @staticmethod
    def _peek_close(sock: socket.socket) -> Optional[str]:
        """The socket became readable while idle: "FIN", "RST", None for (unexpected) data, or ""
        when nothing came of it (TLS housekeeping)."""
        try:
            sock.settimeout(0.2)
            data = sock.recv(1)
        except ConnectionResetError:
            return "RST"
        except ssl.SSLZeroReturnError:
            return "FIN"  # TLS close_notify, then FIN
        except (socket.timeout, ssl.SSLWantReadError):
            return ""
        except (ssl.SSLError, OSError, EOFError):
            return "FIN"
        return "FIN" if not data else None

    def _reuse_closed(self, sock: socket.socket) -> str:
        """What a pool that missed the close would get: send the next request anyway."""
        if isinstance(sock, ssl.SSLSocket):
            return "nothing: the TLS session had ended (close_notify), no request can be sent on it"
        try:
            sock.sendall(request_bytes(self.target))
        except OSError as e:
            return _err_name(e)
        time.sleep(0.05)  # let the server's answer (a RST) arrive
        try:
            sock.settimeout(1.0)
            data = sock.recv(4096)
            first = "EOF" if not data else "data"
        except OSError as e:
            return _err_name(e)
        try:  # a second write exposes the RST the first one drew
            sock.sendall(request_bytes(self.target))
            time.sleep(0.05)
            sock.sendall(request_bytes(self.target))
        except (BrokenPipeError, ConnectionResetError):
            return f"{first}, then the server's RST (the next write failed)"
        except OSError as e:
            return f"{first}, then {_err_name(e)}"
        return first


def _fmt(seconds: float) -> str:
    return f"{seconds:g}s"


# ---- the measurement ----------------------------------------------------------------------------
def ladder(max_idle: float) -> list[float]:
    rungs = [x for x in LADDER if x < max_idle - 1e-9]
    if not rungs or max_idle - rungs[-1] > 1e-9:
        rungs.append(round(max_idle, 3))
    return rungs


@dataclass
class Finding:
    survived: Optional[float]  # longest idle a connection survived and answered after
    failed: Optional[float]  # shortest idle after which a connection was closed or dead
    closed_at: list[float]  # when the server's FIN/RST arrived on closed connections
    closed_by: str
    silent: bool  # dead on reuse without a FIN/RST first (middlebox, silent drop)


# A connection reused right at the timeout may still be served (its request beat the FIN): a
# survivor up to RACE seconds past the measured close counts as "alive until the close".
RACE = 0.25


def summarize(rungs: list[Rung]) -> Finding:
    alive = [r.idle for r in rungs if r.outcome == "alive"]
    closed = [r for r in rungs if r.outcome == "closed" and r.closed_at is not None]
    dead = [r.idle for r in rungs if r.outcome == "dead"]
    closed_at = sorted(r.closed_at for r in closed if r.closed_at is not None)
    fails = closed_at[:1] + sorted(dead)[:1]
    by = sorted({r.closed_by for r in closed})
    return Finding(
        survived=max(alive) if alive else None,
        failed=min(fails) if fails else None,
        closed_at=closed_at,
        closed_by="/".join(by),
        silent=bool(dead) and not closed,
    )


def probe(url: str, client_idle: Optional[float] = None, max_idle: float = 30.0,
          progress: Optional[Callable[[str], None]] = None) -> CheckResult:
    """Measure the server's keep-alive idle timeout; compare with ``client_idle``. Never raises."""
    started = time.monotonic()
    say_lock = threading.Lock()

    def say(msg: str) -> None:
        if progress is not None:
            with say_lock:
                progress(msg)

    try:
        target = parse_target(url)
        resolve(target)
    except ProbeError as e:
        return CheckResult(ID, TITLE, "skipped", f"not checked: {e}", {"url": url},
                           command=f"curl -sv -o /dev/null {url}")
    max_idle = max(0.5, float(max_idle))
    deadline = started + max_idle + SLACK
    runner = Runner(target, deadline, say)
    say(f"{len(ladder(max_idle))} connections to {target.addr} port {target.port}, idle "
        f"{', '.join(_fmt(x) for x in ladder(max_idle))} then reused, in parallel")
    for idle in ladder(max_idle):
        runner.start(Rung(idle))
    decided = False  # refinement started, or judged not worth it
    with runner.changed:
        for _ in range(int((max_idle + SLACK) / 0.1) + 100):  # bounded; the deadline ends it anyway
            rungs = list(runner.rungs)
            if all(r.done.is_set() for r in rungs):
                # all in: refine now if the bracket is wide and time is left, else done
                if decided or not _refine(runner, rungs, max_idle, started, say):
                    break
                decided = True
                continue
            if time.monotonic() >= deadline:
                break
            if not decided and _bracket_known(rungs):
                _stop_longer(rungs)
                _refine(runner, rungs, max_idle, started, say)
                decided = True
            runner.changed.wait(0.1)
    runner.cancel.set()
    for r in runner.rungs:
        r.done.wait(max(0.0, min(1.5, deadline + 1.5 - time.monotonic())))
        if not r.done.is_set():
            r.outcome = "unfinished"
    result = judge(target, runner.rungs, client_idle, max_idle)
    result.duration_s = time.monotonic() - started
    if isinstance(result.value, dict):
        result.value["wall_s"] = round(result.duration_s, 2)
    return result


def _bracket_known(rungs: list[Rung]) -> bool:
    """A failure is in, and every rung with a shorter idle has finished."""
    f = summarize([r for r in rungs if r.done.is_set()])
    if f.failed is None:
        return False
    return all(r.done.is_set() for r in rungs if r.idle < f.failed)


def _stop_longer(rungs: list[Rung]) -> None:
    """Silent drops: stop the longer idles, they could only wait to fail on reuse the same way.

    (When the server closes with a FIN, every connection sees it at the same moment anyway.)
    """
    f = summarize([r for r in rungs if r.done.is_set()])
    if f.failed is not None and f.silent:
        for r in rungs:
            if r.idle > f.failed and not r.done.is_set():
                r.stop.set()


def _refine(runner: Runner, rungs: list[Rung], max_idle: float, started: float,
            say: Callable[[str], None]) -> bool:
    """Extra connections between the last survivor and the first failure (at most ~1 s apart)."""
    f = summarize([r for r in rungs if r.done.is_set()])
    if f.failed is None:
        return False
    alive = [r.idle for r in rungs if r.done.is_set() and r.outcome == "alive" and r.idle <= f.failed + RACE]
    low = min(max(alive), f.failed) if alive else 0.0
    high = f.failed
    step = 0.5 if high <= 10 else 1.0
    if high - low <= step:
        return False
    n = min(MAX_REFINE, int((high - low) / step + 0.999) - 1)
    if n <= 0:
        return False
    idles = sorted({round(low + (high - low) * (i + 1) / (n + 1), 2) for i in range(n)})
    idles = [x for x in idles if x not in {r.idle for r in rungs}]
    now = time.monotonic()
    if not idles or now + max(idles) + 1.0 > started + max_idle + SLACK:
        return False  # would run past the bound: the bracket stands as it is
    say(f"refining between {low:.1f}s and {high:.1f}s: {len(idles)} more connection(s), idle "
        + ", ".join(_fmt(x) for x in idles))
    for idle in idles:
        runner.start(Rung(idle, refine=True))
    return True


def judge(target: Target, rungs: list[Rung], client_idle: Optional[float], max_idle: float) -> CheckResult:
    f = summarize(rungs)
    firsts = [r.first for r in rungs if r.first is not None]
    ka_header = next((r.headers.get("keep-alive", "") for r in firsts if r.headers.get("keep-alive")), "")
    ka = keep_alive_header(ka_header)
    server_hdr = next((r.headers.get("server", "") for r in firsts if r.headers.get("server")), "")
    ordered = sorted(rungs, key=lambda r: r.idle)
    value: dict[str, Any] = {
        "url": target.url,
        "address": target.addr,
        "port": target.port,
        "tls": target.scheme == "https",
        "server": server_hdr or None,
        "keep_alive_header": ka_header or None,
        "keep_alive_timeout_header_s": ka.get("timeout"),
        "timeout_s": None,
        "timeout_range_s": None,
        "closed_by": f.closed_by or ("silent" if f.silent else None),
        "client_idle_s": client_idle,
        "max_idle_s": max_idle,
        "connections": [r.to_json() for r in ordered],
    }
    command = f"curl -sv -o /dev/null -o /dev/null {target.url} {target.url}; ss -tnoi dst {target.addr}"
    evidence = [f"{len(rungs)} connections to {target.addr}:{target.port}"
                + (f" ({server_hdr})" if server_hdr else "")]
    evidence.extend(_rung_lines(ordered))
    if ka_header:
        evidence.append(f"the server announces 'Keep-Alive: {ka_header}'")

    errors = [r for r in rungs if r.outcome == "error"]
    if not firsts:
        why = errors[0].error if errors else "no connection completed a request"
        refused = "refused" in why.lower()
        return CheckResult(
            ID, TITLE, "warn", f"can't measure: {why}", value, evidence[:1] + [why],
            f"curl -sv -o /dev/null {target.url}; ss -tln 'sport = :{target.port}' (on the server)",
            meaning=("The probe could not complete a single request, so the keep-alive timeout is unknown. "
                     + ("'Connection refused' is itself a reset: the host answered the SYN with a RST "
                        "because nothing listens on that port (or a firewall rejects with tcp reset)."
                        if refused else "The URL must answer a plain GET quickly (a health check is "
                        "ideal).")),
            decision=("Check that the service listens on that address and port (ss -tln on the server) and "
                      "that no firewall rejects it (nft-rules check); then probe again."
                      if refused else "Point the probe at a small URL the server answers (a health check)."),
        )
    if all(not r.reusable for r in firsts):
        why = firsts[0].why_not
        return CheckResult(
            ID, TITLE, "ok", f"{target.addr}:{target.port} closes every connection after one response "
            f"({why}): nothing to reuse, no reset on reuse", value, evidence, command,
            meaning=("The server does not keep connections open, so a client pool never holds an idle "
                     "connection the server has already closed. Keep-alive mismatches are not the cause."),
            decision="Look elsewhere: capture a failing request to see who sends the RST.",
        )

    if f.failed is None:
        longest = f.survived or 0.0
        value["timeout_range_s"] = [longest, None]
        summary = f"idle connections survived {longest:g}s (the longest tried): server timeout > {longest:g}s"
        if ka.get("timeout"):
            summary += f"; it announces Keep-Alive timeout={ka['timeout']}"
        if client_idle is None:
            status, decision = "info", (
                f"Compare with your client pool's idle timeout: if it is above {longest:g}s, rerun with "
                f"a longer --max-idle (rst-triage probe keepalive {target.url} --client-idle S "
                "--max-idle S).")
        elif client_idle <= longest:
            status, decision = "ok", (
                f"Your pool drops idle connections after {client_idle:g}s, before the server is known to: "
                "keep-alive mismatch ruled out for this hop.")
        else:
            status, decision = "info", (
                f"Your pool keeps idle connections {client_idle:g}s, longer than tried here: rerun with "
                f"--max-idle {client_idle + 10:g} to settle it.")
        return CheckResult(ID, TITLE, status, summary, value, evidence, command,
                           meaning=_meaning(None) + " " + DEFAULTS_TEXT, decision=decision)

    alive = [r.idle for r in rungs if r.outcome == "alive" and r.idle <= f.failed + RACE]
    low = min(max(alive), f.failed) if alive else 0.0
    later = sorted(r.idle for r in rungs if r.outcome == "alive" and r.idle > f.failed + RACE)
    if later:
        evidence.append(f"yet connections idle {', '.join(_fmt(x) for x in later)} survived: the failures "
                        "are not a plain timeout (flaky path, a load balancer with several backends?)")
    if not f.closed_at:
        return _judge_silent(value, evidence, command, low, f.failed, client_idle)
    t = f.closed_at[0]
    value["timeout_s"] = round(t, 2)
    value["timeout_range_s"] = [round(low, 2), round(t, 2)]
    est = round(t, 1)  # the probe is good to ~0.1 s (RTT, timer slack)
    if len(f.closed_at) > 1 and f.closed_at[-1] - f.closed_at[0] > 1.0:
        evidence.append(f"close times spread from {f.closed_at[0]:.1f}s to {f.closed_at[-1]:.1f}s")
    if ka.get("timeout") and abs(ka["timeout"] - est) > 1.0:
        evidence.append(f"announced timeout {ka['timeout']}s differs from the measured {est:.1f}s: "
                        "a proxy or load balancer in front may close first")
    summary = (f"server keep-alive idle timeout {est:.1f}s (alive at {low:.1f}s, closed at {est:.1f}s, "
               f"{f.closed_by})")
    suggest = suggested_client_idle(est)
    if client_idle is None:
        status = "info"
        decision = (f"Make every client pool on this hop drop idle connections before {est:.1f}s (e.g. "
                    f"{suggest:g}s), or raise the server's timeout above the pool's. Rerun with "
                    "--client-idle S to compare.")
    elif client_idle >= est:
        status = "fail"
        summary += (f"; your client pool keeps idle connections {client_idle:g}s: a reuse after "
                    f"{est:.1f}s idle hits a closed connection")
        decision = (f"Lower the client pool's idle timeout below {est:.1f}s (e.g. {suggest:g}s): Go "
                    "http.Transport IdleConnTimeout, .NET SocketsHttpHandler PooledConnectionIdleTimeout, "
                    "Node agentkeepalive freeSocketTimeout; Python requests/urllib3 have no idle limit, so "
                    "retry idempotent requests on connection errors there. Or raise the server's keep-alive "
                    f"timeout above {client_idle:g}s (nginx keepalive_timeout, Apache KeepAliveTimeout, "
                    "Node server.keepAliveTimeout). The side that closes first must be the client.")
    elif client_idle > est - margin_of(est):
        status = "warn"
        summary += (f"; your client pool's {client_idle:g}s is within {margin_of(est):g}s of it: "
                    "requests can cross the server's FIN")
        decision = (f"Leave more room: client idle timeout at most {suggest:g}s, so a request "
                    "never crosses the server's FIN in flight.")
    else:
        status = "ok"
        summary += f"; your client pool drops idle connections sooner ({client_idle:g}s)"
        decision = ("Keep-alive mismatch is ruled out for this hop; check the next hop (proxy to upstream) "
                    "the same way, and NAT/conntrack idle timeouts (tcp-keepalive check).")
    return CheckResult(ID, TITLE, status, summary, value, evidence, command,
                       meaning=_meaning(est) + " " + DEFAULTS_TEXT, decision=decision)


def _judge_silent(value: dict[str, Any], evidence: list[str], command: str, low: float, failed: float,
                  client_idle: Optional[float]) -> CheckResult:
    """Connections died on reuse without the server closing them first: state dropped on the way."""
    value["timeout_range_s"] = [round(low, 2), failed]
    value["closed_by"] = "silent"
    summary = (f"idle connections die silently between {low:.1f}s and {failed:g}s idle (alive at "
               f"{low:.1f}s; at {failed:g}s the reuse got no FIN first and failed): something on the path "
               "forgets idle connections")
    decision = (f"Find the box that forgets idle flows after about {failed:g}s (a NAT gateway, firewall "
                "or load balancer; on a Linux NAT: sysctl "
                "net.netfilter.nf_conntrack_tcp_timeout_established) and raise its idle timeout, or keep "
                "the pool's idle timeout below it, or send TCP keepalives more often than that "
                "(tcp-keepalive check).")
    if client_idle is None:
        status = "info"
    elif client_idle >= failed:
        status = "fail"
        summary += f"; your client pool keeps idle connections {client_idle:g}s: its reuses will fail"
    elif client_idle >= low:
        status = "warn"
        summary += f"; your client pool's {client_idle:g}s is inside that range"
    else:
        status = "ok"
        summary += f"; your client pool drops idle connections sooner ({client_idle:g}s)"
    meaning = ("The server did not close these connections (no FIN or RST arrived while they idled), yet "
               "a request on them after the idle time got no answer or a RST: a NAT, firewall or load "
               "balancer in between dropped its state for the idle flow. The client's next packet is then "
               "dropped (the request hangs until a timeout) or answered with a RST the middlebox forges in "
               "the server's name - 'connection reset by peer' with the server innocent. Common idle "
               "timeouts: AWS NAT gateway 350 s, Azure load balancer 4 min, Linux conntrack 5 days (unless "
               "lowered). " + DEFAULTS_TEXT)
    return CheckResult(ID, TITLE, status, summary, value, evidence, command, meaning=meaning,
                       decision=decision)


def margin_of(timeout: float) -> float:
    """How much sooner than the server a client pool should give up on idle connections."""
    return max(1.0, 0.1 * timeout)


def suggested_client_idle(timeout: float) -> float:
    """A round client idle timeout safely below the server's."""
    target = max(timeout - margin_of(timeout), 0.5 * timeout)
    if target >= 10:
        return float(int(target))
    return max(0.1, int(target * 10) / 10)


def _meaning(timeout: Optional[float]) -> str:
    base = ("A client pool that keeps an idle connection longer than the server will one day send a "
            "request on a connection the server has just closed: the server's kernel answers with a RST, "
            "the client logs 'connection reset by peer' (a proxy in between answers 502). The fix is "
            "ordering, not retries: the client must give up on idle connections first.")
    if timeout is None:
        return base
    return f"The server side of this hop closes idle connections after about {timeout:.1f}s. " + base


def _rung_lines(rungs: list[Rung]) -> list[str]:
    """One line per rung, except connections the server closed alike: those share one line."""
    out: list[str] = []
    closed = [r for r in rungs if r.outcome == "closed"]
    grouped = False
    for r in rungs:
        if r.outcome != "closed" or len(closed) < 3:
            out.append(_rung_line(r))
            continue
        if grouped:
            continue
        grouped = True
        at = [c.closed_at for c in closed if c.closed_at is not None]
        span = f"{min(at):.2f}s" if max(at) - min(at) < 0.05 else f"{min(at):.2f}-{max(at):.2f}s"
        by = "/".join(sorted({c.closed_by for c in closed}))
        reuse = sorted({c.reuse for c in closed})
        out.append(f"idle {', '.join(_fmt(c.idle) for c in closed)}: the server closed all {len(closed)} "
                   f"after {span} ({by}); reusing them anyway got {' / '.join(reuse)}")
    return out


def _rung_line(r: Rung) -> str:
    port = f" (local port {r.local_port})" if r.local_port else ""
    tag = " [refine]" if r.refine else ""
    if r.outcome == "alive":
        return f"idle {_fmt(r.idle)}{tag}: alive, {r.reuse}"
    if r.outcome == "closed":
        return (f"idle {_fmt(r.idle)}{tag}{port}: server closed it after {r.closed_at:.2f}s ({r.closed_by}); "
                f"reusing it anyway got {r.reuse}")
    if r.outcome == "dead":
        return f"idle {_fmt(r.idle)}{tag}{port}: dead on reuse: {r.reuse}"
    if r.outcome == "no-keepalive":
        return f"idle {_fmt(r.idle)}{tag}{port}: server does not keep the connection ({r.reuse})"
    if r.outcome == "cancelled":
        return f"idle {_fmt(r.idle)}{tag}{port}: not needed (stopped early)"
    return f"idle {_fmt(r.idle)}{tag}{port}: {r.outcome}" + (f": {r.error}" if r.error else "")


def run(ctx: Context) -> CheckResult:
    if not ctx.url:
        return CheckResult(
            ID, TITLE, "skipped", "not checked: needs the URL to probe (--url URL)",
            command="rst-triage probe keepalive URL [--client-idle S]",
        )
    return probe(ctx.url, ctx.client_idle, ctx.max_idle, lambda m: ctx.say(ID, m))
