"""capture: a short, bounded capture of the failing flow, then its analysis.

``rst-triage capture --peer HOST:PORT`` runs tcpdump on the route's interface toward the peer
with a BPF filter for that flow, shows progress (elapsed time, packets, RSTs), stops at the
first bound reached (seconds, packets, bytes) or on Ctrl-C, and analyses what it caught.

How the bounds and the guarantees are kept:

* tcpdump writes the pcap stream to a pipe (``-w -``, ``-U``: flushed per packet) and this
  process writes the file: created by us with mode 0600 (no umask or privilege-drop games: when
  run as root, tcpdump would otherwise switch to its own user before opening the file), cut at a
  record boundary when the byte bound is reached, and walked record by record as it arrives so
  the packet and RST counts cost nothing extra.
* tcpdump runs under coreutils ``timeout`` (the time bound + 5 s), in its own process group (a
  Ctrl-C on the terminal reaches only us); the child gets ``PR_SET_PDEATHSIG`` = SIGTERM, which
  ``timeout`` passes on to tcpdump. When root, tcpdump gets ``-Z root``: Debian's tcpdump would
  otherwise switch to its ``tcpdump`` user, and the kernel clears a parent-death signal on such
  a credential change (measured: it then outlives a SIGKILLed parent). So if this process is
  killed outright, tcpdump dies by the parent-death signal, else at its next packet (SIGPIPE on
  our pipe), else when ``timeout`` fires. SIGINT/SIGTERM/SIGHUP here stop tcpdump with SIGINT
  (its stream ends whole), then SIGKILL after a short grace.
* Without tcpdump, scapy's sniffer does the same job with the same bounds.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import re
import selectors
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

PR_SET_PDEATHSIG = 1
SNAPLEN = 262144
BUFFER_KIB = 16384  # the kernel ring: --immediate-mode uses one snaplen-sized frame per packet
STOP_GRACE = 2.0  # seconds tcpdump gets to flush after SIGINT before SIGKILL
TIMEOUT_SLACK = 5.0  # the `timeout` wrapper fires this long after the time bound
START_TIMEOUT = 5.0  # tcpdump must say "listening on" within this
RESOLVE_TIMEOUT = 2.0
PROGRESS_TTY = 0.25
PROGRESS_LINES = 5.0
SIGNAL_STOPS: dict[int, str] = {
    int(signal.SIGINT): "interrupted",
    int(signal.SIGTERM): "terminated",
    int(signal.SIGHUP): "hangup",
}
PCAP_HEADER = 24
RECORD_HEADER = 16


@dataclass
class CaptureRequest:
    peer_host: Optional[str]
    peer_port: Optional[int]
    iface: Optional[str]
    seconds: float
    max_packets: int
    max_bytes: int
    out: Optional[str]


class CaptureFailed(Exception):
    """The capture could not run; ``str(e)`` is one line for the user."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Plan:
    iface: str
    iface_why: str
    bpf: str
    path: str
    addrs: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    path: Optional[str]  # None when nothing was captured (the capture failed)
    tool: str
    iface: str
    bpf: str
    stopped_by: str
    reason: str  # human words for stopped_by
    packets: int = 0
    rsts: int = 0
    bytes: int = 0
    elapsed: float = 0.0
    dropped: Optional[int] = None
    signal: Optional[int] = None

    def describe(self) -> str:
        """One line: what stopped it, what it holds, where it is."""
        if self.path is None:
            return f"failed: {self.reason}"
        drops = f", {self.dropped} dropped by the kernel" if self.dropped else ""
        return (f"stopped by {self.reason}: {self.packets} packets ({self.rsts} RST), {_size(self.bytes)}"
                f"{drops} in {self.elapsed:.1f} s on {self.iface}; written to {self.path}")

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "tool": self.tool,
            "iface": self.iface,
            "filter": self.bpf,
            "stopped_by": self.stopped_by,
            "packets": self.packets,
            "rsts": self.rsts,
            "bytes": self.bytes,
            "seconds": round(self.elapsed, 3),
            "dropped_by_kernel": self.dropped,
        }


# --- planning: addresses, interface, filter, file -------------------------------------------
def resolve(host: str) -> list[str]:
    """The peer's addresses: a literal, or a name resolved within RESOLVE_TIMEOUT."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    out: dict[str, Any] = {}

    def work() -> None:
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
            out["addrs"] = list(dict.fromkeys(str(i[4][0]).split("%", 1)[0] for i in infos))
        except OSError as e:
            out["error"] = str(e)

    t = threading.Thread(target=work, name="resolve", daemon=True)
    t.start()
    t.join(RESOLVE_TIMEOUT)
    if not out.get("addrs"):
        why = out.get("error") or f"no answer within {RESOLVE_TIMEOUT:.0f}s"
        raise CaptureFailed(f"cannot resolve peer {host}: {why}", 2)
    return list(out["addrs"])


def bpf_filter(addrs: list[str], port: Optional[int]) -> str:
    """``tcp and host A and port P`` (IPv4 or IPv6; several addresses are OR-ed)."""
    parts = ["tcp"]
    if addrs:
        hosts = [f"host {a}" for a in addrs]
        parts.append(hosts[0] if len(hosts) == 1 else "(" + " or ".join(hosts) + ")")
    if port:
        parts.append(f"port {int(port)}")
    return " and ".join(parts)


def egress_iface(addrs: list[str]) -> Optional[str]:
    """The route's output interface toward the addresses (one for all of them), else None.

    Asked in a thread of its own: pyroute2 runs asyncio underneath and cannot be used from a
    thread whose event loop is already running (the TUI's).
    """
    found: list[Optional[str]] = [None]

    def ask() -> None:
        found[0] = _egress_iface(addrs)

    worker = threading.Thread(target=ask, name="route-get", daemon=True)
    worker.start()
    worker.join(3.0)
    return found[0]


def _egress_iface(addrs: list[str]) -> Optional[str]:
    if not addrs:
        return None
    try:
        from pyroute2 import IPRoute
    except ImportError:
        return None
    names = set()
    try:
        with IPRoute() as ipr:
            for a in addrs:
                msgs = ipr.route("get", dst=a)
                oif = msgs[0].get_attr("RTA_OIF") if msgs else None
                if not oif:
                    return None
                links = ipr.link("get", index=int(oif))
                names.add(links[0].get_attr("IFLA_IFNAME"))
    except Exception:  # no route, netlink refused: fall back to "any"
        return None
    return names.pop() if len(names) == 1 else None


def captures_dir() -> Path:
    from tui.findings import state_dir

    return state_dir() / "captures"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_") or "any"


def default_path(peer_host: Optional[str], peer_port: Optional[int], now: Optional[float] = None) -> Path:
    """``$XDG_STATE_HOME/rst-triage/captures/capture-YYYYmmdd-HHMMSS-PEER.pcap`` (dir 0700)."""
    d = captures_dir()
    try:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(d, 0o700)
    except OSError as e:
        raise CaptureFailed(f"cannot create {d}: {e.strerror} (use -w FILE)", 2) from None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    peer = _safe(peer_host or "any") + (f"_{peer_port}" if peer_port else "")
    path = d / f"capture-{stamp}-{peer}.pcap"
    n = 1
    while path.exists() and n < 100:
        n += 1
        path = d / f"capture-{stamp}-{peer}-{n}.pcap"
    return path


def plan(req: CaptureRequest) -> Plan:
    addrs = resolve(req.peer_host) if req.peer_host else []
    if req.iface:
        iface, why = req.iface, "as asked"
    else:
        found = egress_iface(addrs)
        if found:
            iface, why = found, "the route's toward the peer"
        else:
            iface, why = "any", "all interfaces" + ("" if not addrs else " (no single route to the peer)")
    path = req.out or str(default_path(req.peer_host, req.peer_port))
    return Plan(iface, why, bpf_filter(addrs, req.peer_port), os.path.abspath(path), addrs)


def open_output(path: str) -> int:
    """Create (or truncate) the capture file with mode 0600; never follow a symlink."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise CaptureFailed(f"cannot write {path}: {e.strerror}", 2) from None
    if st is not None and not stat.S_ISREG(st.st_mode):  # /dev/null, a symlink, a fifo...
        raise CaptureFailed(f"cannot write {path}: not a regular file", 2)
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as e:
        raise CaptureFailed(f"cannot write {path}: {e.strerror}", 2) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped in between: never chmod a device
        os.close(fd)
        raise CaptureFailed(f"cannot write {path}: not a regular file", 2)
    os.set_blocking(fd, True)
    os.ftruncate(fd, 0)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode otherwise
    return fd


# --- the pcap stream --------------------------------------------------------------------------
class PcapStream:
    """Walks a pcap byte stream as it arrives; writes whole records to ``fd`` up to a byte bound."""

    def __init__(self, fd: int, max_bytes: int) -> None:
        self.fd = fd
        self.max_bytes = max_bytes
        self.buf = bytearray()
        self.header: Optional[bytes] = None
        self.endian = "<"
        self.kind: Optional[int] = None
        self.packets = 0
        self.rsts = 0
        self.bytes = 0
        self.full = False  # the byte bound was reached

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        self.bytes += len(data)

    def write_header(self, header: bytes) -> None:
        from tui.capture_reader import _LINK_KIND

        magic = header[:4]
        self.endian = ">" if magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d") else "<"
        (linktype,) = struct.unpack_from(self.endian + "I", header, 20)
        self.kind = _LINK_KIND.get(linktype & 0x0FFFFFFF)
        self.header = bytes(header)
        self._write(self.header)

    def feed(self, data: bytes) -> None:
        if self.full:
            return
        self.buf += data
        if self.header is None:
            if len(self.buf) < PCAP_HEADER:
                return
            self.write_header(bytes(self.buf[:PCAP_HEADER]))
            del self.buf[:PCAP_HEADER]
        pos = 0
        hdr = struct.Struct(self.endian + "IIII")
        while len(self.buf) - pos >= RECORD_HEADER:
            _s, _f, incl, _orig = hdr.unpack_from(self.buf, pos)
            end = pos + RECORD_HEADER + incl
            if end > len(self.buf):
                break
            if not self.record(bytes(self.buf[pos:end])):
                break
            pos = end
        del self.buf[:pos]

    def record(self, rec: bytes) -> bool:
        """Write one record (header + data); False once the byte bound is reached."""
        if self.bytes + len(rec) > self.max_bytes:
            self.full = True
            return False
        self._write(rec)
        self.packets += 1
        if self._is_rst(rec, RECORD_HEADER):
            self.rsts += 1
        return True

    def _is_rst(self, buf: bytes, off: int) -> bool:
        from tui.capture_reader import _locate

        try:
            loc = _locate(self.kind, buf, off, len(buf))
        except IndexError:
            return False
        return bool(loc and loc[1] + 13 < len(buf) and buf[loc[1] + 13] & 0x04)


def pcap_header(linktype: int) -> bytes:
    """A nanosecond pcap file header (what tcpdump --time-stamp-precision=nano writes)."""
    return struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, SNAPLEN, linktype)


# --- running tcpdump ----------------------------------------------------------------------------
def tcpdump_argv(iface: str, max_packets: int, bpf: str, seconds: float) -> list[str]:
    argv = ["tcpdump", "-i", iface, "-w", "-", "-U", "-n", "--immediate-mode",
            "--time-stamp-precision=nano", "-s", str(SNAPLEN), "-c", str(max_packets),
            "-B", str(BUFFER_KIB)]
    if os.geteuid() == 0:
        argv += ["-Z", "root"]  # no switch to the tcpdump user: keeps the parent-death signal
    argv.append(bpf)
    wrapper = shutil.which("timeout")
    if wrapper:  # a hard bound even if this process is SIGKILLed and the kernel sends nothing
        argv = [wrapper, "-s", "INT", "-k", str(int(STOP_GRACE) + 1),
                f"{seconds + TIMEOUT_SLACK:.0f}", *argv]
    return argv


def _child_setup_factory() -> Callable[[], None]:
    parent = os.getpid()
    try:
        libc: Any = ctypes.CDLL(None, use_errno=True)
    except OSError:
        libc = None

    def setup() -> None:
        os.setpgid(0, 0)  # own process group: the terminal's Ctrl-C reaches only rst-triage
        if libc is not None and sys.platform.startswith("linux"):
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
            if os.getppid() != parent:  # the parent died before prctl: do not run orphaned
                os._exit(1)
        os.umask(0o077)

    return setup


class Stopper:
    """Signal handlers for SIGINT/SIGTERM/SIGHUP that ask the capture loop to stop."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, install: bool = True) -> None:
        self.signum: Optional[int] = None
        self.by_request = False
        self.install = install
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Stopper:
        if self.install and threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None or signum != signal.SIGINT:
            self.signum = signum

    def stop(self) -> None:
        """Stop as Ctrl-C would (from another thread: the TUI's stop key)."""
        if self.signum is None:
            self.by_request = True
            self.signum = int(signal.SIGINT)

    def why(self) -> str:
        if self.by_request:
            return "stopped"
        return SIGNAL_STOPS.get(self.signum or 0, "signal")

    def __exit__(self, *exc: object) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)


class Progress:
    """Elapsed time, packets and RSTs on stderr: one updating line on a tty, else a line per 5 s."""

    def __init__(self, stream: Any, seconds: float, quiet: bool = False,
                 callback: Optional[Callable[[str], object]] = None) -> None:
        self.stream = stream
        self.seconds = seconds
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.quiet = quiet
        self.callback = callback  # instead of a stream: the TUI's status line
        self.last = 0.0
        self.dirty = False

    def say(self, line: str) -> None:
        if self.callback is not None:
            self.last = time.monotonic()
            self.callback(line.removeprefix("rst-triage: "))
            return
        if self.quiet:
            return
        self.clear()
        self.last = time.monotonic()  # the next progress line comes one period later
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # the terminal went away (SIGHUP): keep capturing quietly
            self.quiet = True

    def tick(self, elapsed: float, packets: int, rsts: int, nbytes: int, force: bool = False) -> None:
        now = time.monotonic()
        every = PROGRESS_TTY if self.tty or self.callback else PROGRESS_LINES
        if self.quiet or (not force and now - self.last < every):
            return
        self.last = now
        text = (f"capturing: {elapsed:4.1f}/{self.seconds:g} s, {packets} packets, {rsts} RST,"
                f" {_size(nbytes)}")
        if self.callback is not None:
            self.callback(text)
            return
        try:
            if self.tty:
                self.stream.write("\r\x1b[K" + text)
                self.dirty = True
            else:
                self.stream.write("rst-triage: " + text + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            self.quiet = True

    def clear(self) -> None:
        if self.tty and self.dirty and not self.quiet and self.callback is None:
            try:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
            except (OSError, ValueError):
                self.quiet = True
            self.dirty = False


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


_PERMISSION = re.compile(r"permission|not permitted|Operation not permitted", re.I)
_NO_DEVICE = re.compile(r"No such device|doesn't exist|no suitable device", re.I)


def _tcpdump_error(stderr: str, iface: str) -> CaptureFailed:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else "tcpdump exited without a word"
    if _PERMISSION.search(stderr):
        return CaptureFailed(
            f"cannot capture on {iface}: permission denied (needs root or CAP_NET_RAW): run it with"
            " sudo, or capture on a host where you can and `rst-triage analyze FILE.pcap`"
        )
    if _NO_DEVICE.search(stderr):
        return CaptureFailed(f"cannot capture on {iface}: no such interface ({last})", 2)
    return CaptureFailed(f"tcpdump failed on {iface}: {last}")


def capture_tcpdump(req: CaptureRequest, pl: Plan, fd: int, progress: Progress, stopper: Stopper) -> Outcome:
    argv = tcpdump_argv(pl.iface, req.max_packets, pl.bpf, req.seconds)
    stream = PcapStream(fd, req.max_bytes)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, preexec_fn=_child_setup_factory(),
                                close_fds=True)
    except OSError as e:
        raise CaptureFailed(f"cannot run tcpdump: {e.strerror}") from None
    assert proc.stdout is not None and proc.stderr is not None
    sel = selectors.DefaultSelector()
    for f in (proc.stdout, proc.stderr):
        os.set_blocking(f.fileno(), False)
        sel.register(f, selectors.EVENT_READ)
    err = bytearray()
    started = time.monotonic()
    listening_at: Optional[float] = None
    stop_sent: Optional[float] = None
    killed = False
    stopped_by = ""
    write_error: Optional[OSError] = None
    open_fds = 2
    try:
        while open_fds:
            now = time.monotonic()
            if listening_at is None and b"listening on" in err:
                listening_at = now
                progress.say(
                    f"rst-triage: capturing on {pl.iface} ({pl.iface_why}), filter '{pl.bpf}', up to"
                    f" {req.seconds:g} s / {req.max_packets} packets / {_size(req.max_bytes)}; writing"
                    f" {pl.path} (Ctrl-C stops early)"
                )
            if stop_sent is None:
                why = ""
                if stopper.signum is not None:
                    why = stopper.why()
                    if stopper.signum == signal.SIGHUP:
                        progress.quiet = True  # the terminal is gone
                elif write_error is not None:
                    why = "write"
                elif stream.full:
                    why = "bytes"
                elif listening_at is not None and now - listening_at >= req.seconds:
                    why = "time"
                elif listening_at is None and now - started > START_TIMEOUT:
                    why = "start"
                if why:
                    stopped_by = why
                    stop_sent = now
                    _signal(proc, signal.SIGINT)
            elif not killed and now - stop_sent > STOP_GRACE:
                _killpg(proc)
                killed = True
            for key, _ in sel.select(0.1):
                try:
                    chunk = os.read(key.fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(key.fileobj)
                    open_fds -= 1
                    continue
                if key.fileobj is proc.stdout:
                    if write_error is None:
                        try:
                            stream.feed(chunk)
                        except OSError as e:  # disk full, quota...: stop, keep what is written
                            write_error = e
                else:
                    err += chunk
                    if len(err) > 65536:  # keep the end: tcpdump's statistics come last
                        del err[:-65536]
            if listening_at is not None and stop_sent is None:
                progress.tick(time.monotonic() - listening_at, stream.packets, stream.rsts, stream.bytes)
    finally:
        sel.close()
        if proc.poll() is None and stop_sent is None:  # left the loop by an exception
            _signal(proc, signal.SIGINT)
        try:
            proc.wait(STOP_GRACE + 1)
        except subprocess.TimeoutExpired:
            _killpg(proc)
            proc.wait(5)
        progress.clear()
    elapsed = time.monotonic() - (listening_at if listening_at is not None else started)
    stderr = err.decode(errors="replace")
    if stream.header is None:
        if stopped_by == "start":
            raise CaptureFailed(f"tcpdump did not start capturing on {pl.iface} within {START_TIMEOUT:.0f}s")
        if stopped_by in ("interrupted", "stopped", "terminated", "hangup"):
            raise CaptureFailed("stopped before tcpdump started capturing", 130)
        raise _tcpdump_error(stderr, pl.iface)
    if not stopped_by:
        # tcpdump ended by itself: its packet bound, or a failure (interface went down...)
        if stream.packets >= req.max_packets:
            stopped_by = "packets"
        elif proc.returncode == 124:
            stopped_by = "time"
        else:
            stopped_by = "tcpdump"
    dropped = None
    m = re.search(r"^(\d+) packets? dropped by kernel", stderr, re.M)
    if m:
        dropped = int(m.group(1))
    reason = _reason(stopped_by, req, stderr)
    if write_error is not None:
        reason = f"cannot write the file: {write_error.strerror}"
    return Outcome(pl.path, "tcpdump", pl.iface, pl.bpf, stopped_by, reason, stream.packets,
                   stream.rsts, stream.bytes, elapsed, dropped, stopper.signum)


def _signal(proc: subprocess.Popen, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass


def _killpg(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        _signal(proc, signal.SIGKILL)


def _reason(stopped_by: str, req: CaptureRequest, stderr: str = "") -> str:
    if stopped_by == "time":
        return f"time limit ({req.seconds:g} s)"
    if stopped_by == "packets":
        return f"packet limit ({req.max_packets} packets)"
    if stopped_by == "bytes":
        return f"byte limit ({req.max_bytes} bytes)"
    if stopped_by == "interrupted":
        return "interrupted (Ctrl-C)"
    if stopped_by == "stopped":
        return "stopped early (on request)"
    if stopped_by == "terminated":
        return "terminated (SIGTERM)"
    if stopped_by == "hangup":
        return "hangup (SIGHUP: the session went away)"
    lines = [ln for ln in stderr.strip().splitlines() if "packets" not in ln and ln.strip()]
    return "tcpdump stopped by itself" + (f": {lines[-1]}" if lines else "")


# --- scapy fallback -----------------------------------------------------------------------------
def capture_scapy(req: CaptureRequest, pl: Plan, fd: int, progress: Progress, stopper: Stopper) -> Outcome:
    try:
        import scapy.layers.inet6  # noqa: F401 - registers IPv6 (and, through it, IP and Ether)
        import scapy.layers.l2  # noqa: F401 - link types: without them frames stay undecoded
        from scapy.config import conf
        from scapy.sendrecv import AsyncSniffer
    except ImportError:
        raise CaptureFailed(
            "neither tcpdump nor scapy is available: install tcpdump (apt install tcpdump),"
            " or capture elsewhere and `rst-triage analyze FILE.pcap`"
        ) from None
    iface = None if pl.iface == "any" else pl.iface
    try:
        try:
            sock = conf.L2listen(iface=iface, filter=pl.bpf)
        except (ImportError, OSError) as e:
            if isinstance(e, PermissionError):
                raise
            sock = conf.L2listen(iface=iface)  # no libpcap to compile the filter: filter here
    except PermissionError:
        raise CaptureFailed(
            f"cannot capture on {pl.iface}: permission denied (needs root or CAP_NET_RAW): run it"
            " with sudo, or capture on a host where you can and `rst-triage analyze FILE.pcap`"
        ) from None
    except OSError as e:
        raise CaptureFailed(f"cannot capture on {pl.iface}: {e}") from None
    stream = PcapStream(fd, req.max_bytes)
    lock = threading.Lock()
    pending: list[Any] = []
    linktype: dict[str, int] = {}

    def keep(pkt: Any) -> None:
        with lock:
            pending.append(pkt)

    match = _python_filter(pl.addrs, req.peer_port)
    sniffer = AsyncSniffer(opened_socket=sock, prn=keep, store=False, lfilter=match)
    sniffer.start()
    progress.say(
        f"rst-triage: capturing on {pl.iface} with scapy ({pl.iface_why}), filter '{pl.bpf}', up to"
        f" {req.seconds:g} s / {req.max_packets} packets; writing {pl.path} (Ctrl-C stops early)"
    )
    started = time.monotonic()
    stopped_by = ""
    write_error: Optional[OSError] = None
    try:
        while not stopped_by:
            time.sleep(0.05)
            with lock:
                batch, pending[:] = list(pending), []
            for pkt in batch:
                lt = conf.l2types.layer2num.get(type(pkt), 1)
                data = bytes(getattr(pkt, "original", None) or bytes(pkt))
                ns = int(float(pkt.time) * 1e9)
                rec = struct.pack("<IIII", ns // 10**9, ns % 10**9, len(data), len(data)) + data
                try:
                    if stream.header is None:
                        linktype["lt"] = lt
                        stream.write_header(pcap_header(lt))
                    if lt != linktype["lt"]:
                        continue  # another link type on "any": one pcap holds one
                    if not stream.record(rec):
                        break
                except OSError as e:  # disk full, quota...: stop, keep what is written
                    write_error = e
                    break
                if stream.packets >= req.max_packets:
                    break
            now = time.monotonic()
            if stopper.signum is not None:
                stopped_by = stopper.why()
            elif write_error is not None:
                stopped_by = "write"
            elif stream.full:
                stopped_by = "bytes"
            elif stream.packets >= req.max_packets:
                stopped_by = "packets"
            elif now - started >= req.seconds:
                stopped_by = "time"
            progress.tick(now - started, stream.packets, stream.rsts, stream.bytes)
    finally:
        try:
            sniffer.stop(join=True)
        except Exception:  # the sniffer thread already ended
            pass
        try:
            sock.close()
        except Exception:
            pass
        progress.clear()
    if stream.header is None and write_error is None:
        stream.write_header(pcap_header(1))
    reason = _reason(stopped_by, req)
    if write_error is not None:
        reason = f"cannot write the file: {write_error.strerror}"
    return Outcome(pl.path, "scapy", pl.iface, pl.bpf, stopped_by, reason,
                   stream.packets, stream.rsts, stream.bytes, time.monotonic() - started, None,
                   stopper.signum)


def _python_filter(addrs: list[str], port: Optional[int]) -> Callable[[Any], bool]:
    """The BPF filter's meaning in Python, for when libpcap cannot compile it."""
    wanted = set(addrs)

    def match(pkt: Any) -> bool:
        from scapy.layers.inet import IP, TCP
        from scapy.layers.inet6 import IPv6

        if TCP not in pkt:
            return False
        ip = pkt[IP] if IP in pkt else pkt[IPv6] if IPv6 in pkt else None
        if ip is None:
            return False
        if wanted and ip.src not in wanted and ip.dst not in wanted:
            return False
        tcp = pkt[TCP]
        return not port or port in (tcp.sport, tcp.dport)

    return match


# --- the command --------------------------------------------------------------------------------
def _prepare(req: CaptureRequest) -> tuple[Plan, int, bool]:
    pl = plan(req)
    created = not os.path.exists(pl.path)
    return pl, open_output(pl.path), created


def _execute(req: CaptureRequest, pl: Plan, fd: int, created: bool, progress: Progress,
             stopper: Stopper) -> Outcome:
    ok = False
    try:
        if shutil.which("tcpdump"):
            out = capture_tcpdump(req, pl, fd, progress, stopper)
        else:
            out = capture_scapy(req, pl, fd, progress, stopper)
        ok = True
        return out
    finally:
        os.close(fd)
        if not ok and created:
            try:  # nothing captured: do not leave an empty file behind
                if os.path.getsize(pl.path) == 0:
                    os.unlink(pl.path)
            except OSError:
                pass


def run_capture(req: CaptureRequest, progress: Optional[Progress] = None) -> Outcome:
    """Plan, capture (SIGINT/SIGTERM/SIGHUP stop it), return the outcome (raises CaptureFailed)."""
    pl, fd, created = _prepare(req)
    with Stopper() as stopper:
        return _execute(req, pl, fd, created, progress or Progress(sys.stderr, req.seconds), stopper)


class CaptureHandle:
    """A capture running in a background thread (the TUI's): ``stop()``, then ``wait()``."""

    def __init__(self, req: CaptureRequest, on_progress: Optional[Callable[[str], object]]) -> None:
        self.request = req
        self.plan, fd, created = _prepare(req)  # bad input fails here, in the caller
        self._stopper = Stopper(install=False)
        self._progress = Progress(None, req.seconds, callback=on_progress or (lambda _text: None))
        self._outcome: Optional[Outcome] = None
        self._thread = threading.Thread(target=self._run, args=(fd, created), name="capture",
                                        daemon=True)
        self._thread.start()

    def _run(self, fd: int, created: bool) -> None:
        try:
            self._outcome = _execute(self.request, self.plan, fd, created, self._progress,
                                     self._stopper)
        except CaptureFailed as e:
            self._outcome = Outcome(None, "tcpdump", self.plan.iface, self.plan.bpf, "error", str(e))
        except Exception as e:  # never lose the thread's end: the caller waits on it
            self._outcome = Outcome(None, "tcpdump", self.plan.iface, self.plan.bpf, "error",
                                    f"{type(e).__name__}: {e}")

    def stop(self) -> None:
        self._stopper.stop()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout: Optional[float] = None) -> Outcome:
        """The outcome once the capture has ended (its bound, stop(), or a failure)."""
        self._thread.join(timeout)
        if self._outcome is None:
            return Outcome(None, "tcpdump", self.plan.iface, self.plan.bpf, "running", "still running")
        return self._outcome


def start(req: CaptureRequest, on_progress: Optional[Callable[[str], object]] = None) -> CaptureHandle:
    """Start a capture in the background; raises CaptureFailed for bad input (peer, file)."""
    return CaptureHandle(req, on_progress)


def run_cli(request: CaptureRequest, json_out: bool) -> int:
    """``rst-triage capture``: capture, say what stopped it and where the file is, analyse it."""
    progress = Progress(sys.stderr, request.seconds)
    try:
        out = run_capture(request, progress)
    except CaptureFailed as e:
        _err(f"rst-triage: {'error: ' if e.code == 2 else ''}{e}")
        return e.code
    if out.path is None:  # not reached: a failed capture raises
        _err(f"rst-triage: {out.reason}")
        return 1
    drops = f", {out.dropped} dropped by the kernel" if out.dropped else ""
    summary = (f"Capture stopped: {out.reason}. {out.packets} packets ({out.rsts} RST),"
               f" {_size(out.bytes)}{drops}, {out.elapsed:.1f} s on {out.iface}.")
    if out.signal in (signal.SIGTERM, signal.SIGHUP):
        # the session is going away: keep the file, skip the analysis
        _err(f"rst-triage: {summary} Written to {out.path}; analyse it with `rst-triage analyze {out.path}`")
        return 128 + int(out.signal)
    from tui.analysis import analyze_files
    from tui.capture_reader import CaptureError
    from tui.render import render_text

    started = time.perf_counter()
    try:
        result = analyze_files([out.path])
    except CaptureError as e:
        _err(f"rst-triage: {summary}")
        _err(f"rst-triage: written to {out.path} but it cannot be analysed: {e}")
        return 1
    if json_out:
        _err(f"rst-triage: {summary}")
        _err(f"rst-triage: written to {out.path}")
        data = result.to_json()
        data["capture"] = out.to_json()
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(f"{summary}\nWritten to {out.path}\n\n")
        if out.packets == 0:
            sys.stdout.write(
                "No packet matched the filter: no reset captured. Is the flow active right now,"
                f" and does it pass through {out.iface}? (try --iface any)\n\n"
            )
        sys.stdout.write(render_text(result, time.perf_counter() - started))
    return 0


def _err(line: str) -> None:
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass
