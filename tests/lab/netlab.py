"""The lab: four network namespaces, client — router — proxy — server.

    client c-r ──── r-c router r-p ──── p-r proxy p-s ──── s-p server
           10.201.1.0/24          10.201.2.0/24          10.201.3.0/24
           fd00:201:1::/64        fd00:201:2::/64        fd00:201:3::/64   (lab: fd00:201::/32)

The gateway side of each link is ``.1`` / ``::1``, the other side ``.10`` / ``::10``. Router and
proxy host forward (IPv4 and IPv6), so a packet from the server reaches the client with TTL 62.
Every namespace gets an nftables egress guard (only loopback and the lab's own ranges leave it),
a resolver pointing at loopback and its own hosts file. Namespace names carry a per-run prefix
and are always removed, together with every process the lab started (by PID).

Use it as a context manager::

    with Lab() as lab:
        with lab.process("server", [...], log=...) as srv, lab.captures(outdir, {...}):
            ...
"""
from __future__ import annotations

import atexit
import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
NETNS_ETC = Path("/etc/netns")
NETNS_RUN = Path("/run/netns")

LAB_NET4 = "10.201.0.0/16"
LAB_NET6 = "fd00:201::/32"

ROLES = ("client", "router", "proxy", "server")
_ROLE_LETTER = {"client": "c", "router": "r", "proxy": "p", "server": "s"}

# tcpdump's ring (-B, KiB). --immediate-mode makes libpcap use TPACKET_V2 with one fixed-size
# frame per packet (up to the snap length: 256 KiB on "any"), so the default 2 MiB holds only a
# handful of packets and a busy host drops the tail of a burst ("packets dropped by kernel").
CAPTURE_BUFFER_KIB = 16384

# Commands are bounded; nothing in the lab should take longer than this.
COMMAND_TIMEOUT = 20.0
POLL_INTERVAL = 0.02
DEBUG = os.environ.get("RSTLAB_DEBUG") == "1"
_T0 = time.monotonic()


def debug(*parts: object) -> None:
    """Timestamped progress on stderr when RSTLAB_DEBUG=1."""
    if DEBUG:
        print(f"[rstlab {time.monotonic() - _T0:7.3f}]", *parts, file=sys.stderr, flush=True)


class LabError(RuntimeError):
    """The lab could not be built or a lab step failed."""


@dataclass(frozen=True)
class Link:
    """One veth pair. ``gw`` gets host number 1 on the link, ``host`` gets 10."""

    index: int
    gw: str
    gw_if: str
    host: str
    host_if: str

    def v4(self, hostnum: int) -> str:
        return f"10.201.{self.index}.{hostnum}"

    def v6(self, hostnum: int) -> str:
        return f"fd00:201:{self.index}::{hostnum}"

    def mac(self, hostnum: int) -> str:
        # 02:… locally administered; the last two bytes say link and host: readable in captures.
        return f"02:00:0a:c9:{self.index:02x}:{hostnum:02x}"


LINKS = (
    Link(1, "router", "r-c", "client", "c-r"),
    Link(2, "router", "r-p", "proxy", "p-r"),
    Link(3, "proxy", "p-s", "server", "s-p"),
)
GW, HOST = 1, 10

# Routes other than the connected ones: role -> [(prefix, via)], v4 then v6.
_ROUTES = {
    "client": [(LAB_NET4, LINKS[0].v4(GW)), (LAB_NET6, LINKS[0].v6(GW))],
    "router": [("10.201.3.0/24", LINKS[1].v4(HOST)), ("fd00:201:3::/64", LINKS[1].v6(HOST))],
    "proxy": [("10.201.1.0/24", LINKS[1].v4(GW)), ("fd00:201:1::/64", LINKS[1].v6(GW))],
    "server": [(LAB_NET4, LINKS[2].v4(GW)), (LAB_NET6, LINKS[2].v6(GW))],
}

GUARD_TABLE = "rstlab_guard"
_GUARD_RULESET = f"""
table inet {GUARD_TABLE} {{
    chain output {{
        type filter hook output priority 0; policy drop;
        oifname "lo" accept
        ip daddr {LAB_NET4} accept
        ip6 daddr {{ {LAB_NET6}, fe80::/10, ff02::/16 }} accept
    }}
    chain forward {{
        type filter hook forward priority 0; policy drop;
        ip daddr {LAB_NET4} accept
        ip6 daddr {{ {LAB_NET6}, fe80::/10, ff02::/16 }} accept
    }}
}}
"""


def _ns_argv(ns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def _run(argv: Sequence[str], *, input: str | None = None, check: bool = True,
         timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(list(argv), input=input, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timed out after {timeout}s: {' '.join(argv)}") from exc
    if check and proc.returncode != 0:
        raise LabError(f"failed ({proc.returncode}): {' '.join(argv)}: "
                       f"{(proc.stderr or proc.stdout).strip()}")
    return proc


class Proc:
    """A process the lab started, with its output in a log file. Stopped by PID only."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log: Path,
                 stop_signal: int = signal.SIGTERM) -> None:
        self.name = name
        self.popen = popen
        self.log = log
        self.stop_signal = stop_signal

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, pattern: str, timeout: float = 5.0) -> re.Match[str]:
        """Wait until the log matches ``pattern``; fail if the process dies first."""
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.output())
            if match:
                return match
            if self.popen.poll() is not None:
                # One last look: the line may have been written just before exiting.
                match = regex.search(self.output())
                if match:
                    return match
                raise LabError(f"{self.name} exited ({self.popen.returncode}) before "
                               f"{pattern!r}: {self.output()[-800:]}")
            if time.monotonic() > deadline:
                raise LabError(f"{self.name}: no {pattern!r} within {timeout}s: "
                               f"{self.output()[-800:]}")
            time.sleep(POLL_INTERVAL)

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"{self.name} still running after {timeout}s") from exc

    def stop(self, timeout: float = 3.0) -> int | None:
        """Ask the process to stop (its stop signal), then SIGKILL; always reap it."""
        debug("stopping", self.name, self.pid)
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(self.stop_signal)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                self.popen.wait(timeout)
        return self.popen.returncode


class Lab:
    """Builds the four namespaces; removes them and every started process on exit."""

    def __init__(self, tag: str | None = None) -> None:
        self.tag = tag or "rstl" + secrets.token_hex(3)
        self.ns = {role: self.tag + _ROLE_LETTER[role] for role in ROLES}
        self._created: list[str] = []
        self._procs: list[Proc] = []

    # ---- addresses -------------------------------------------------------------------
    def addr(self, role: str, v6: bool = False, toward: str | None = None) -> str:
        """The address of ``role`` on the link toward ``toward`` (default: its only/first link).

        For the proxy host the default is its client-facing address (link 2)."""
        for link in LINKS:
            if toward is not None and {link.gw, link.host} != {role, toward}:
                continue
            if role in (link.gw, link.host):
                num = GW if role == link.gw else HOST
                return link.v6(num) if v6 else link.v4(num)
        raise KeyError((role, toward))

    def iface(self, role: str, toward: str) -> str:
        for link in LINKS:
            if {link.gw, link.host} == {role, toward}:
                return link.gw_if if role == link.gw else link.host_if
        raise KeyError((role, toward))

    # ---- context manager -------------------------------------------------------------
    def __enter__(self) -> Lab:
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- building ----------------------------------------------------------------------
    @staticmethod
    def preflight() -> None:
        """Raise LabError with the reason if this host cannot build the lab."""
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, nftables, tcpdump)")
        missing = [tool for tool in ("ip", "nft", "tcpdump", "tshark", "sysctl")
                   if shutil.which(tool) is None]
        if missing:
            raise LabError(f"missing tools: {', '.join(missing)}")

    def build(self) -> None:
        self.preflight()
        atexit.register(self.close)  # last resort if the caller never reaches close()
        for role in ROLES:
            self._add_namespace(role)
        for link in LINKS:
            self._add_link(link)
        for role, routes in _ROUTES.items():
            for prefix, via in routes:
                self.run(role, ["ip", "route", "add", prefix, "via", via])
        self._check_reachability()

    def _add_namespace(self, role: str) -> None:
        ns = self.ns[role]
        etc = NETNS_ETC / ns
        if etc.exists() or (NETNS_RUN / ns).exists():  # never adopt (and later delete) another's
            raise LabError(f"namespace name {ns} already in use")
        etc.mkdir(parents=True)
        try:
            (etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
            hosts = ["127.0.0.1 localhost", "::1 localhost ip6-localhost"]
            hosts += [f"{self.addr(r)} {r}.lab" for r in ("client", "proxy", "server")]
            (etc / "hosts").write_text("\n".join(hosts) + "\n")
            _run(["ip", "netns", "add", ns])
        except BaseException:
            shutil.rmtree(etc, ignore_errors=True)
            raise
        self._created.append(ns)  # from here on close() removes it (and its etc dir)
        # The guard goes in before any interface exists, so nothing can leak.
        self.nft(role, _GUARD_RULESET)
        guard = self.run(role, ["nft", "list", "chain", "inet", GUARD_TABLE, "output"]).stdout
        if "policy drop" not in guard:
            raise LabError(f"egress guard not in place in {ns}: {guard}")
        self.run(role, ["ip", "link", "set", "lo", "up"])
        sysctls = {"net.ipv6.conf.all.accept_dad": "0", "net.ipv6.conf.default.accept_dad": "0",
                   "net.ipv6.conf.default.accept_ra": "0"}
        if role in ("router", "proxy"):
            sysctls |= {"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1"}
        for key, value in sysctls.items():
            self.sysctl(role, key, value)

    def _add_link(self, link: Link) -> None:
        gw_ns, host_ns = self.ns[link.gw], self.ns[link.host]
        _run(["ip", "link", "add", link.gw_if, "netns", gw_ns, "address", link.mac(GW),
              "type", "veth", "peer", "name", link.host_if, "netns", host_ns,
              "address", link.mac(HOST)])
        for role, ifname, num in ((link.gw, link.gw_if, GW), (link.host, link.host_if, HOST)):
            self.run(role, ["ip", "addr", "add", f"{link.v4(num)}/24", "dev", ifname])
            self.run(role, ["ip", "-6", "addr", "add", f"{link.v6(num)}/64", "dev", ifname,
                            "nodad"])
            self.run(role, ["ip", "link", "set", ifname, "up"])

    def _check_reachability(self) -> None:
        """Client pings server (v4, v6): proves routing and warms ARP/ND caches on every hop."""
        for v6 in (False, True):
            target = self.addr("server", v6=v6)
            ok = False
            for _ in range(10):  # bounded: links and v6 come up within ~a second
                proc = self.run("client", ["ping", "-6" if v6 else "-4", "-c", "1", "-W", "1",
                                           "-n", target], check=False, timeout=5)
                if proc.returncode == 0:
                    ok = True
                    break
                time.sleep(0.1)
            if not ok:
                raise LabError(f"client cannot reach server at {target}")

    # ---- cleaning up -------------------------------------------------------------------
    def close(self) -> None:
        """Stop every process, remove the namespaces; idempotent, never raises."""
        atexit.unregister(self.close)
        errors: list[str] = []
        for proc in reversed(self._procs):
            try:
                proc.stop()
            except Exception as exc:  # noqa: BLE001 - keep cleaning up
                errors.append(f"{proc.name}: {exc}")
        self._procs.clear()
        for ns in reversed(self._created):
            try:
                left = _run(["ip", "netns", "pids", ns], check=False).stdout.split()
                if left:
                    errors.append(f"{ns}: processes still inside (not ours to kill): {left}")
                deleted = _run(["ip", "netns", "del", ns], check=False)
                listed = _run(["ip", "netns", "list"], check=False).stdout.split()
                if deleted.returncode != 0 and ns in listed:
                    errors.append(f"ip netns del {ns}: {deleted.stderr.strip()}")
            except LabError as exc:
                errors.append(f"{ns}: {exc}")
            shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)
        self._created.clear()
        if errors:
            print("rstlab cleanup: " + "; ".join(errors), file=sys.stderr)

    # ---- running things inside namespaces -----------------------------------------------
    def run(self, role: str, argv: Sequence[str], *, input: str | None = None,
            check: bool = True, timeout: float = COMMAND_TIMEOUT
            ) -> subprocess.CompletedProcess[str]:
        return _run(_ns_argv(self.ns[role], argv), input=input, check=check, timeout=timeout)

    def nft(self, role: str, ruleset: str) -> None:
        self.run(role, ["nft", "-f", "-"], input=ruleset)

    def nft_delete_table(self, role: str, family: str, table: str) -> None:
        self.run(role, ["nft", "delete", "table", family, table], check=False)

    def sysctl(self, role: str, key: str, value: str) -> str:
        """Write a sysctl in the namespace and return the value read back (may differ!)."""
        self.run(role, ["sysctl", "-q", "-w", f"{key}={value}"], check=False)
        return self.run(role, ["sysctl", "-n", key]).stdout.strip()

    @contextlib.contextmanager
    def sysctl_set(self, role: str, key: str, value: str) -> Iterator[str]:
        """A sysctl set for the block; yields the value read back; the old one is restored."""
        old = " ".join(self.run(role, ["sysctl", "-n", key]).stdout.split())
        try:
            yield self.sysctl(role, key, value)
        finally:
            self.sysctl(role, key, old)

    @contextlib.contextmanager
    def nft_table(self, role: str, family: str, name: str, body: str) -> Iterator[None]:
        """An nft table in one namespace for the duration of the block."""
        self.nft(role, f"table {family} {name} {{\n{body}\n}}\n")
        try:
            yield
        finally:
            self.nft_delete_table(role, family, name)

    def spawn(self, role: str, argv: Sequence[str], *, name: str, log: Path,
              stop_signal: int = signal.SIGTERM) -> Proc:
        """Start ``argv`` in the namespace; stdout and stderr go to ``log``."""
        log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1")
        with open(log, "wb") as out:
            # `ip netns exec` execs the command: the PID we hold is the program's own.
            popen = subprocess.Popen(_ns_argv(self.ns[role], argv), stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=REPO_ROOT, env=env, start_new_session=True)
        proc = Proc(name, popen, log, stop_signal)
        debug("started", name, proc.pid, "in", role)
        self._procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        """Stop a process started with spawn() before the lab closes."""
        try:
            proc.stop()
        finally:
            if proc in self._procs:
                self._procs.remove(proc)

    @contextlib.contextmanager
    def process(self, role: str, argv: Sequence[str], *, name: str, log: Path,
                ready: str | None = None, ready_timeout: float = 5.0,
                stop_signal: int = signal.SIGTERM) -> Iterator[Proc]:
        """A process that lives for the ``with`` block; ``ready`` is a regex for its log."""
        proc = self.spawn(role, argv, name=name, log=log, stop_signal=stop_signal)
        try:
            if ready is not None:
                proc.wait_for(ready, ready_timeout)
            yield proc
        finally:
            self.stop(proc)

    def spawn_agent(self, role: str, args: Sequence[str], *, name: str, log: Path) -> Proc:
        """Start an agent (tests/lab/agents.py) without waiting for it; stop with stop()."""
        return self.spawn(role, [sys.executable, "-m", "tests.lab.agents", *args], name=name,
                          log=log)

    def agent(self, role: str, args: Sequence[str], *, name: str, log: Path,
              ready: str | None = "^READY", ready_timeout: float = 8.0
              ) -> contextlib.AbstractContextManager[Proc]:
        """One of the small Python programs in tests/lab/agents.py, inside a namespace."""
        return self.process(role, [sys.executable, "-m", "tests.lab.agents", *args], name=name,
                            log=log, ready=ready, ready_timeout=ready_timeout)

    def run_agent(self, role: str, args: Sequence[str], *, name: str, log: Path,
                  timeout: float = 15.0) -> dict[str, object]:
        """Run an agent to completion and return its RESULT line (JSON)."""
        with self.agent(role, args, name=name, log=log, ready=None) as proc:
            proc.wait(timeout)
            return parse_result(proc)

    def wait_listening(self, role: str, port: int, timeout: float = 5.0) -> None:
        """Wait until something listens on TCP ``port`` in the namespace."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.run(role, ["ss", "-Hltn", f"sport = :{port}"]).stdout
            if out.strip():
                return
            time.sleep(0.05)
        raise LabError(f"nothing listens on port {port} in {role} after {timeout}s")

    # ---- captures ----------------------------------------------------------------------
    @contextlib.contextmanager
    def captures(self, outdir: Path, points: dict[str, tuple[str, str]],
                 bpf: str = "tcp") -> Iterator[dict[str, Path]]:
        """tcpdump at several vantage points at once.

        ``points`` maps vantage name -> (role of the namespace, interface or "any"). Yields
        vantage -> pcap path once every tcpdump says it is listening; on exit waits a moment
        for the last packets, then stops them with SIGINT and reaps them.
        """
        paths = {vantage: outdir / f"{vantage}.pcap" for vantage in points}
        procs: list[Proc] = []
        try:
            for vantage, (role, ifname) in points.items():
                argv = ["tcpdump", "-i", ifname, "-U", "--immediate-mode", "-w",
                        str(paths[vantage]), "--time-stamp-precision=nano", "-s", "262144",
                        "-B", str(CAPTURE_BUFFER_KIB), "-Z", "root", "-nn", bpf]
                procs.append(self.spawn(role, argv, name=f"tcpdump[{vantage}]",
                                        log=outdir / "logs" / f"tcpdump-{vantage}.log",
                                        stop_signal=signal.SIGINT))
            for proc in procs:
                proc.wait_for("listening on", 5.0)
            yield paths
            time.sleep(0.3)  # let the last packets reach the files
        finally:
            for proc in procs:
                self.stop(proc)
        for proc in procs:  # an incomplete capture would make the ground truth a lie
            dropped = re.search(r"^(\d+) packets? dropped by kernel", proc.output(), re.M)
            if dropped is None or int(dropped.group(1)):
                raise LabError(f"{proc.name}: capture incomplete: {proc.output()[-300:]}")


def parse_result(proc: Proc) -> dict[str, object]:
    """The JSON after ``RESULT`` in an agent's log (agents print exactly one)."""
    import json

    match = re.search(r"^RESULT (.*)$", proc.output(), re.MULTILINE)
    if not match:
        raise LabError(f"{proc.name} printed no RESULT: {proc.output()[-800:]}")
    result: dict[str, object] = json.loads(match.group(1))
    return result


def count_resets(pcap: Path) -> int:
    """Number of RST segments in a capture, counted by tshark (independent of the analyzer)."""
    proc = _run(["tshark", "-n", "-r", str(pcap), "-Y", "tcp.flags.reset==1", "-T", "fields",
                 "-e", "frame.number"], timeout=30)
    return len(proc.stdout.split())
