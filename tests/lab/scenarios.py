"""Reset scenarios: each reproduces one reset cause with real kernels, nginx, haproxy.

Every scenario function takes a built :class:`~tests.lab.netlab.Lab` and an output directory
(created, empty) and returns a :class:`ScenarioResult`: the captures per vantage, the roles of
the addresses as the captures see them, and the ground truth (origin, cause). Scenarios clean
up what they add (processes, nft tables, sysctls) so they can run in any order on one lab.

Captures stop before the processes of a scenario do, so a capture holds the reset under test
and its immediate cascade, not the teardown.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.lab.netlab import Lab, LabError, Proc, parse_result

ScenarioFn = Callable[[Lab, Path], "ScenarioResult"]


@dataclass
class ScenarioResult:
    scenario: str
    origin: str
    cause: str
    captures: dict[str, Path]
    roles: dict[str, str]
    # vantage -> must this capture show a RST (True) / must it not (False); others: don't care.
    rst_expected: dict[str, bool] = field(default_factory=dict)
    notes: str = ""
    # vantage -> "role:interface" where it was captured ("any" = all interfaces, Linux SLL2)
    interfaces: dict[str, str] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)
    observed: dict[str, object] = field(default_factory=dict)

    def truth(self) -> dict[str, object]:
        return {
            "scenario": self.scenario,
            "origin": self.origin,
            "cause": self.cause,
            "roles": self.roles,
            "captures": {vantage: path.name for vantage, path in self.captures.items()},
            "interfaces": self.interfaces,
            "rst_expected": self.rst_expected,
            "logs": {name: path.name for name, path in self.logs.items()},
            "observed": self.observed,
            "notes": self.notes,
        }

    def write_truth(self, outdir: Path) -> Path:
        path = outdir / "truth.json"
        path.write_text(json.dumps(self.truth(), indent=2, sort_keys=False) + "\n")
        return path


@dataclass(frozen=True)
class Scenario:
    name: str
    origin: str
    cause: str
    run: ScenarioFn
    needs: tuple[str, ...] = ()  # programs or Python modules beyond what the lab itself needs


SCENARIOS: dict[str, Scenario] = {}
PYTHON_NEEDS = {"scapy"}  # needs that are Python modules; the others are programs


def missing_needs(spec: Scenario) -> list[str]:
    """What this host lacks to run the scenario (empty: it can run)."""
    return [need for need in spec.needs
            if (importlib.util.find_spec(need) is None if need in PYTHON_NEEDS
                else shutil.which(need) is None)]


def scenario(name: str, origin: str, cause: str, needs: tuple[str, ...] = ()
             ) -> Callable[[ScenarioFn], ScenarioFn]:
    def register(fn: ScenarioFn) -> ScenarioFn:
        SCENARIOS[name] = Scenario(name, origin, cause, fn, needs)
        return fn
    return register


# ---- shared pieces ----------------------------------------------------------------------------
MARKER = "rstlab-inject-me"


def _endpoint_points(lab: Lab) -> dict[str, tuple[str, str]]:
    return {"client": ("client", lab.iface("client", "router")),
            "server": ("server", lab.iface("server", "proxy"))}


def _endpoint_roles(lab: Lab, v6: bool = False) -> dict[str, str]:
    return {lab.addr("client", v6): "client", lab.addr("server", v6): "server"}


def _proxy_roles(lab: Lab) -> dict[str, str]:
    return {lab.addr("client"): "client", lab.addr("proxy", toward="router"): "proxy",
            lab.addr("proxy", toward="server"): "proxy", lab.addr("server"): "server"}


def _result(name: str, caps: dict[str, Path], points: dict[str, tuple[str, str]],
            roles: dict[str, str], *, rst_expected: dict[str, bool],
            observed: dict[str, object], notes: str,
            logs: dict[str, Path] | None = None) -> ScenarioResult:
    """The result of scenario ``name``, its ground truth taken from its registration."""
    spec = SCENARIOS[name]
    interfaces = {vantage: f"{role}:{ifname}" for vantage, (role, ifname) in points.items()}
    return ScenarioResult(scenario=name, origin=spec.origin, cause=spec.cause, captures=caps,
                          roles=roles, rst_expected=rst_expected, notes=notes,
                          interfaces=interfaces, logs=logs or {}, observed=observed)


def _server(lab: Lab, outdir: Path, port: int, *extra: str, v6: bool = False,
            name: str = "server") -> contextlib.AbstractContextManager[Proc]:
    """The tiny Python HTTP server (tests/lab/agents.py serve) in the server namespace."""
    args = ["serve", "--host", lab.addr("server", v6), "--port", str(port), *extra]
    return lab.agent("server", args, name=name, log=outdir / "logs" / f"{name}.log")


def _client(lab: Lab, outdir: Path, cmd: str, host: str, port: int, *extra: str,
            timeout: float = 15.0) -> dict[str, object]:
    """Run a client agent in the client namespace to completion; return its RESULT."""
    return lab.run_agent("client", [cmd, "--host", host, "--port", str(port), *extra],
                         name=f"client-{cmd}", log=outdir / "logs" / f"client-{cmd}.log",
                         timeout=timeout)


@contextlib.contextmanager
def _nginx(lab: Lab, outdir: Path, port: int, keepalive_timeout: str) -> Iterator[Proc]:
    """nginx (Debian's binary, our own config) on the server, v4 and v6."""
    work = outdir / "nginx"
    work.mkdir()
    temp_paths = "\n".join(f"    {kind}_temp_path {work}/{kind};"
                           for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = work / "nginx.conf"
    conf.write_text(f"""\
daemon off;
master_process off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {work}/access.log;
{temp_paths}
    keepalive_timeout {keepalive_timeout};
    server {{
        listen {lab.addr("server")}:{port};
        listen [{lab.addr("server", v6=True)}]:{port};
        location / {{ default_type text/plain; return 200 "hello from nginx\\n"; }}
    }}
}}
""")
    argv = ["nginx", "-p", str(work), "-e", str(work / "error.log"), "-c", str(conf)]
    with lab.process("server", argv, name="nginx", log=outdir / "logs" / "nginx.log") as proc:
        lab.wait_listening("server", port)
        yield proc


@contextlib.contextmanager
def _haproxy(lab: Lab, outdir: Path, port: int, upstream_port: int) -> Iterator[Proc]:
    """haproxy 2.6 in the proxy namespace, foreground, logging to stdout = haproxy.log."""
    work = outdir / "haproxy"
    work.mkdir()
    conf = work / "haproxy.cfg"
    conf.write_text(f"""\
global
    log stdout format raw local0 info
    maxconn 100

defaults
    mode http
    log global
    option httplog
    option nolinger
    timeout connect 1s
    timeout client 5s
    timeout server 1s

frontend fe_lab
    bind {lab.addr("proxy", toward="router")}:{port}
    default_backend be_lab

backend be_lab
    server upstream {lab.addr("server")}:{upstream_port}
""")
    log = outdir / "haproxy.log"
    with lab.process("proxy", ["haproxy", "-db", "-f", str(conf)], name="haproxy",
                     log=log) as proc:
        lab.wait_listening("proxy", port)
        yield proc


def _proxy_points(lab: Lab) -> dict[str, tuple[str, str]]:
    # -i any on the proxy host: both of its interfaces in one file (Linux SLL2 link type).
    return {"client": ("client", lab.iface("client", "router")), "proxy": ("proxy", "any"),
            "server": ("server", lab.iface("server", "proxy"))}


# ---- the scenarios ----------------------------------------------------------------------------
def _idle_close_reuse(lab: Lab, outdir: Path, v6: bool) -> ScenarioResult:
    name = "idle-close-reuse-v6" if v6 else "idle-close-reuse"
    port = 8001
    points = _endpoint_points(lab)
    with _nginx(lab, outdir, port, "1s"), lab.captures(outdir, points) as caps:
        observed = _client(lab, outdir, "idle-reuse", lab.addr("server", v6), port,
                           "--idle", "2.0")
    return _result(name, caps, points, _endpoint_roles(lab, v6),
                   rst_expected={"client": True, "server": True}, observed=observed,
                   logs={"nginx-error": outdir / "nginx" / "error.log"},
                   notes="nginx keepalive_timeout 1s closes the idle connection (FIN); the "
                         "client idles 2 s without reading, reuses it; the server's stack "
                         "answers the second request with RST.")


@scenario("idle-close-reuse", "server", "idle-close-reuse", needs=("nginx",))
def idle_close_reuse(lab: Lab, outdir: Path) -> ScenarioResult:
    return _idle_close_reuse(lab, outdir, v6=False)


@scenario("idle-close-reuse-v6", "server", "idle-close-reuse", needs=("nginx",))
def idle_close_reuse_v6(lab: Lab, outdir: Path) -> ScenarioResult:
    return _idle_close_reuse(lab, outdir, v6=True)


def _no_listener(lab: Lab, outdir: Path, v6: bool) -> ScenarioResult:
    name = "no-listener-v6" if v6 else "no-listener"
    port = 8002
    points = _endpoint_points(lab)
    with lab.captures(outdir, points) as caps:
        observed = _client(lab, outdir, "connect", lab.addr("server", v6), port)
    if observed.get("error") != "ConnectionRefusedError":
        raise LabError(f"{name}: expected ConnectionRefusedError, got {observed}")
    return _result(name, caps, points, _endpoint_roles(lab, v6),
                   rst_expected={"client": True, "server": True}, observed=observed,
                   notes=f"SYN to port {port} where nothing listens: the server's stack "
                         "answers RST,ACK (ack = SYN seq + 1).")


@scenario("no-listener", "server", "no-listener")
def no_listener(lab: Lab, outdir: Path) -> ScenarioResult:
    return _no_listener(lab, outdir, v6=False)


@scenario("no-listener-v6", "server", "no-listener")
def no_listener_v6(lab: Lab, outdir: Path) -> ScenarioResult:
    return _no_listener(lab, outdir, v6=True)


def _firewall_reject(lab: Lab, outdir: Path, v6: bool) -> ScenarioResult:
    """A connection-rate limit on the server: the first connection is served, the next refused.

    On the wire netfilter's RST to a SYN is the stack's no-listener RST byte for byte (IP ID 0,
    DF, window 0, no options, ack = SYN seq + 1; only a checksum that netfilter leaves
    partial differs, and a real NIC completes it). What tells them apart in a capture is that
    the same port accepted a connection moments before: a listener exists.
    """
    name = "firewall-reject-v6" if v6 else "firewall-reject"
    port = 8003
    rule = (f"chain input {{ type filter hook input priority 0; policy accept;\n"
            f"  tcp dport {port} ct state new limit rate over 1/minute burst 1 packets"
            f" reject with tcp reset\n}}")
    points = _endpoint_points(lab)
    # the server closes the served connection itself (FIN) shortly after answering
    with _server(lab, outdir, port, "--idle", "0.3", v6=v6), \
            lab.nft_table("server", "inet", "rstlab_fw", rule), \
            lab.captures(outdir, points) as caps:
        served = _client(lab, outdir, "request", lab.addr("server", v6), port,
                         "--connection", "close")
        refused = _client(lab, outdir, "connect", lab.addr("server", v6), port)
    if served.get("error"):
        raise LabError(f"{name}: the first connection should be served, got {served}")
    if refused.get("error") != "ConnectionRefusedError":
        raise LabError(f"{name}: expected ConnectionRefusedError, got {refused}")
    return _result(name, caps, points, _endpoint_roles(lab, v6),
                   rst_expected={"client": True, "server": True},
                   observed={"served": served, "refused": refused},
                   notes=f"A listener runs on {port}; the server's nft input chain limits new "
                         f"connections to {port} ('ct state new limit rate over 1/minute burst "
                         "1 packets reject with tcp reset'). The first connection is served, "
                         "the second SYN is answered by netfilter's RST.")


@scenario("firewall-reject", "server", "firewall-reject")
def firewall_reject(lab: Lab, outdir: Path) -> ScenarioResult:
    return _firewall_reject(lab, outdir, v6=False)


@scenario("firewall-reject-v6", "server", "firewall-reject")
def firewall_reject_v6(lab: Lab, outdir: Path) -> ScenarioResult:
    return _firewall_reject(lab, outdir, v6=True)


@scenario("proxy-abort", "proxy", "proxy-abort", needs=("haproxy",))
def proxy_abort(lab: Lab, outdir: Path) -> ScenarioResult:
    port = 8004
    points = _proxy_points(lab)
    with _server(lab, outdir, port, "--delay", "3"), _haproxy(lab, outdir, port, port), \
            lab.captures(outdir, points) as caps:
        observed = _client(lab, outdir, "request", lab.addr("proxy", toward="router"), port,
                           "--connection", "close", "--pause", "0.5")
    return _result("proxy-abort", caps, points, _proxy_roles(lab),
                   rst_expected={"client": True, "proxy": True, "server": True},
                   observed=observed, logs={"haproxy": outdir / "haproxy.log"},
                   notes="haproxy (option nolinger, timeout server 1s) in front of a healthy "
                         "server that answers after 3 s: on the server timeout haproxy aborts "
                         "the upstream connection with RST (haproxy log: sH--), answers the "
                         "client 504, sends FIN and, closing with nolinger, RST. The client "
                         "(Connection: close) waits 0.5 s before closing: had its FIN come "
                         "first, haproxy's close would find LAST_ACK and send no RST.")


@scenario("client-abort", "client", "abort")
def client_abort(lab: Lab, outdir: Path) -> ScenarioResult:
    port = 8005
    points = _endpoint_points(lab)
    with _server(lab, outdir, port, "--body-size", str(4 << 20)), \
            lab.captures(outdir, points) as caps:
        observed = _client(lab, outdir, "request", lab.addr("server"), port,
                           "--read", "4096", "--then", "abort")
        time.sleep(0.2)  # in-flight data reaches the client's stack (and its RSTs)
    return _result("client-abort", caps, points, _endpoint_roles(lab),
                   rst_expected={"client": True, "server": True}, observed=observed,
                   notes="The client reads 4 KiB of a 4 MiB response, then closes with "
                         "SO_LINGER {1, 0}: its stack sends RST (more RSTs follow for data "
                         "still in flight).")


@scenario("injected", "middlebox", "injected", needs=("scapy",))
def injected(lab: Lab, outdir: Path) -> ScenarioResult:
    port = 8006
    client_if = lab.iface("router", "client")
    injector_args = ["inject", "--iface", client_if, "--client", lab.addr("client"),
                     "--port", str(port), "--marker", MARKER]
    points = {**_endpoint_points(lab), "router": ("router", client_if)}
    with _server(lab, outdir, port, "--delay", "0.5"), \
            lab.agent("router", injector_args, name="injector",
                      log=outdir / "logs" / "injector.log") as injector, \
            lab.captures(outdir, points) as caps:
        observed = _client(lab, outdir, "request", lab.addr("server"), port,
                           "--marker", MARKER)
        injector.wait(5)
        time.sleep(0.7)  # the real response arrives after the forged RST
    observed["injector"] = parse_result(injector)
    if not parse_result(injector).get("injected"):
        raise LabError(f"injected: the injector forged nothing: {injector.output()}")
    return _result("injected", caps, points, _endpoint_roles(lab),
                   rst_expected={"client": True, "router": True}, observed=observed,
                   notes="A sniffer on the router forges RST (src = server, seq = the ack of "
                         "the client's request segment, TTL 64 from the router: 62 expected "
                         "from the real server) when it sees the marker; the real request "
                         "passes and the server's answer (0.5 s later) arrives after the "
                         "forged RST, so the client's stack resets that too.")


@scenario("nat-conntrack-invalid", "middlebox", "nat-conntrack-invalid",
          needs=("scapy", "conntrack"))
def nat_conntrack_invalid(lab: Lab, outdir: Path) -> ScenarioResult:
    port = 8007
    outside_if = lab.iface("router", "proxy")
    nat_addr = lab.addr("router", toward="proxy")
    nat = (f"chain postrouting {{ type nat hook postrouting priority srcnat;\n"
           f"  oifname \"{outside_if}\" ip saddr 10.201.1.0/24 masquerade\n}}")
    forger_args = ["out-of-window", "--iface", lab.iface("server", "proxy"),
                   "--server", lab.addr("server"), "--port", str(port)]
    points = {**_endpoint_points(lab), "router": ("router", outside_if)}
    be_liberal = lab.run("router", ["sysctl", "-n", "net.netfilter.nf_conntrack_tcp_be_liberal"],
                         check=False).stdout.strip()
    with lab.nft_table("router", "ip", "rstlab_nat", nat), \
            _server(lab, outdir, port, "--mode", "hold"), \
            lab.agent("server", forger_args, name="forger",
                      log=outdir / "logs" / "forger.log") as forger:
        invalid_before = _conntrack_invalid(lab)
        client_args = ["request", "--host", lab.addr("server"), "--port", str(port),
                       "--read", "0", "--then", "hold"]
        client: Proc | None = None
        try:
            with lab.captures(outdir, points) as caps:
                client = lab.spawn_agent("client", client_args, name="client-request",
                                         log=outdir / "logs" / "client-request.log")
                forger.wait(8)
                time.sleep(0.3)  # the router's RST travels back to the server
        finally:
            # Only now, with the captures stopped: its FIN would draw the server's RST.
            if client is not None:
                lab.stop(client)
        invalid_after = _conntrack_invalid(lab)
    observed: dict[str, object] = {
        "forger": parse_result(forger), "nf_conntrack_tcp_be_liberal": be_liberal,
        "conntrack_invalid_before": invalid_before, "conntrack_invalid_after": invalid_after}
    if not parse_result(forger).get("sent"):
        raise LabError(f"nat-conntrack-invalid: the forger sent nothing: {forger.output()}")
    if invalid_before is not None and invalid_after is not None \
            and invalid_after <= invalid_before:
        raise LabError("nat-conntrack-invalid: conntrack did not count an INVALID packet")
    roles = {**_endpoint_roles(lab), nat_addr: "client"}
    return _result("nat-conntrack-invalid", caps, points, roles,
                   rst_expected={"client": False, "router": True, "server": True},
                   observed=observed,
                   notes=f"The router masquerades the client network behind {nat_addr} "
                         "(be_liberal=0, no 'ct state invalid drop'). The server side sends a "
                         "segment 10 MB beyond the client's window (forged on the server with "
                         "the right 4-tuple); conntrack marks it INVALID, it is not de-NATed, "
                         f"so it is for {nat_addr} itself, and the router's stack answers with "
                         "RST (seq = that segment's ack, TTL 64 from the router, one hop "
                         "higher than forwarded client packets). The client never sees it. "
                         "The 'router' capture is the router's outside interface; the client "
                         "still holds its connection when the captures stop.")


def _conntrack_invalid(lab: Lab) -> int | None:
    """Sum of the per-CPU 'invalid' counters of the router's conntrack."""
    proc = lab.run("router", ["conntrack", "-S"], check=False)
    if proc.returncode != 0:
        return None
    total = 0
    for token in proc.stdout.split():
        if token.startswith("invalid="):
            total += int(token.split("=", 1)[1])
    return total


@scenario("state-expired", "middlebox", "state-expired")
def state_expired(lab: Lab, outdir: Path) -> ScenarioResult:
    port = 8008
    key = "net.netfilter.nf_conntrack_tcp_timeout_established"
    rules = ("chain forward { type filter hook forward priority 0; policy accept;\n"
             "  ct state new tcp flags & (syn | ack) != syn reject with tcp reset\n}")
    points = {**_endpoint_points(lab), "router": ("router", lab.iface("router", "client"))}
    # The table first: conntrack only runs in the namespace once a rule needs it.
    with lab.nft_table("router", "inet", "rstlab_state", rules), \
            lab.sysctl_set("router", key, "2") as timeout:
        if timeout != "2":
            raise LabError(f"state-expired: {key} is not settable per namespace "
                           f"(read back {timeout!r})")
        with _server(lab, outdir, port), lab.captures(outdir, points) as caps:
            observed = _client(lab, outdir, "idle-reuse", lab.addr("server"), port,
                               "--idle", "4.0")
    observed[key] = timeout
    # Per namespace: the host's own value is untouched (read, never written, here).
    observed["host_" + key] = subprocess.run(["sysctl", "-n", key], capture_output=True,
                                             text=True, check=False).stdout.strip()
    return _result("state-expired", caps, points, _endpoint_roles(lab),
                   rst_expected={"client": True, "router": True, "server": False},
                   observed=observed,
                   notes="The router tracks connections with an established timeout of 2 s "
                         "and resets packets of flows it does not know ('ct state new' that "
                         "are not a SYN) with 'reject with tcp reset'. The client idles 4 s "
                         "and sends again: the router answers RST in the server's name "
                         "(TTL 64 from the router; the server's packets arrive with 62). The "
                         "server never sees the second request nor any RST.")


@scenario("upstream-reset", "server", "upstream-reset", needs=("haproxy",))
def upstream_reset(lab: Lab, outdir: Path) -> ScenarioResult:
    port = 8009
    points = _proxy_points(lab)
    with _server(lab, outdir, port, "--mode", "abort"), _haproxy(lab, outdir, port, port), \
            lab.captures(outdir, points) as caps:
        observed = _client(lab, outdir, "request", lab.addr("proxy", toward="router"), port,
                           "--connection", "close", "--pause", "0.5")
    return _result("upstream-reset", caps, points, _proxy_roles(lab),
                   rst_expected={"client": True, "proxy": True, "server": True},
                   observed=observed, logs={"haproxy": outdir / "haproxy.log"},
                   notes="The server aborts the upstream connection (SO_LINGER 0) as soon as "
                         "it has read the request; haproxy (option nolinger) gets the "
                         "upstream RST (haproxy log: SH--), answers the client 502, sends FIN "
                         "and, closing with nolinger, RST to the client (the client waits "
                         "0.5 s before closing, as in proxy-abort).")
