"""Host checks: route, tcp-counters, sockets, iface-drops, port-range, tcp-keepalive.

Unit tests parse procfs captured on this machine (tests/fixtures/host). Lab tests build the
condition each check looks for inside the lab's namespaces (a VXLAN tunnel, resets to a closed
port, a full accept queue, an MTU mismatch on a veth, a tiny port range, CLOSE-WAIT sockets,
keepalive sysctls) and run ``python -m tui check`` in the namespace the way a user would,
next to a clean case that must not flag.

The module doubles as the small programs these tests run inside the namespaces:
``python -m tests.test_checks_host serve|hold|refuse ...`` (every loop bounded).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "host"
HOST_IDS = ["route", "tcp-counters", "sockets", "iface-drops", "port-range", "tcp-keepalive"]


# ---- programs run inside the lab namespaces ---------------------------------------------------
MAX_LIFETIME = 60.0
MAX_CONNS = 200


def _say(*parts: object) -> None:
    print(*parts, flush=True)


def _serve(args: argparse.Namespace) -> None:
    """Listen on [::]:PORT (dual stack). --mode hold: keep accepted sockets open; close: close them
    at once (the client gets a FIN); noaccept: never accept (the accept queue fills)."""
    srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    srv.bind(("::", args.port))
    srv.listen(args.backlog)
    _say("READY")
    end = time.monotonic() + MAX_LIFETIME
    if args.mode == "noaccept":
        time.sleep(MAX_LIFETIME)
        return
    held: list[socket.socket] = []
    srv.settimeout(0.5)
    while time.monotonic() < end and len(held) < MAX_CONNS:
        try:
            conn, _ = srv.accept()
        except socket.timeout:
            continue
        if args.mode == "close":
            conn.close()
        else:
            held.append(conn)


def _hold(args: argparse.Namespace) -> None:
    """Open N connections to HOST:PORT and keep them open (never read, never close) until killed."""
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    held: list[socket.socket] = []
    ports: list[int] = []
    for i in range(min(args.n, MAX_CONNS)):
        s = socket.socket(family, socket.SOCK_STREAM)
        if i < args.keepalive:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        s.settimeout(3)
        try:
            s.connect((args.host, args.port))
        except OSError as exc:  # e.g. a full accept queue: the SYN goes unanswered
            _say(f"connect {i}: {exc}")
            s.close()
            continue
        held.append(s)
        ports.append(s.getsockname()[1])
    _say("READY " + json.dumps(ports))
    time.sleep(MAX_LIFETIME)


def _refuse(args: argparse.Namespace) -> None:
    """Connect to a closed port COUNT times, INTERVAL s apart: each SYN is answered with a RST."""
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    _say("READY")
    refused = 0
    for _ in range(min(args.count, 100)):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(1)
        try:
            s.connect((args.host, args.port))
        except ConnectionRefusedError:
            refused += 1
        except OSError:
            pass
        finally:
            s.close()
        time.sleep(args.interval)
    _say(f"RESULT {json.dumps({'refused': refused})}")


def _main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tests.test_checks_host")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("port", type=int)
    s.add_argument("--mode", choices=("hold", "close", "noaccept"), default="hold")
    s.add_argument("--backlog", type=int, default=128)
    h = sub.add_parser("hold")
    h.add_argument("host")
    h.add_argument("port", type=int)
    h.add_argument("n", type=int)
    h.add_argument("--keepalive", type=int, default=0, help="SO_KEEPALIVE on the first K sockets")
    r = sub.add_parser("refuse")
    r.add_argument("host")
    r.add_argument("port", type=int)
    r.add_argument("--count", type=int, default=50)
    r.add_argument("--interval", type=float, default=0.1)
    args = p.parse_args(argv)
    {"serve": _serve, "hold": _hold, "refuse": _refuse}[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(_main())


# ---- unit tests on captured procfs ----------------------------------------------------------------
from tui.checks import iface_drops, port_range, sockets, tcp_counters  # noqa: E402


def _fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_snmp_parsing_and_deltas_from_a_real_capture() -> None:
    before = {**tcp_counters.parse_snmp(_fixture("snmp.before")),
              **tcp_counters.parse_snmp(_fixture("netstat.before"))}
    after = {**tcp_counters.parse_snmp(_fixture("snmp.after")),
             **tcp_counters.parse_snmp(_fixture("netstat.after"))}
    assert before["TcpRtoMax"] == 120000 and before["TcpMaxConn"] == -1
    d = tcp_counters.deltas(before, after)
    # 5 connects to a closed port (5 RSTs, 5 failed attempts) and one close with unread data
    assert d["TcpOutRsts"] == 6
    assert d["TcpAttemptFails"] == 5
    assert d["TcpExtTCPAbortOnClose"] == 1
    assert d["TcpExtTCPAbortOnData"] == 0 and d["TcpExtListenOverflows"] == 0
    r = tcp_counters.judge(d, after, 2.0)
    assert r.status == "warn"
    assert "TcpOutRsts +6" in r.summary and "TcpExtTCPAbortOnClose +1" in r.summary
    assert any(line.startswith("TcpOutRsts: +6 in 2 s (3.0/s)") for line in r.evidence)
    assert r.value["per_s"]["TcpOutRsts"] == 3.0
    assert "nstat" in r.command


def test_tcp_counters_judge_listen_drops_fail_and_quiet_ok() -> None:
    base = {k: 0 for k in tcp_counters.ALL_COUNTERS}
    r = tcp_counters.judge({**base, "TcpExtListenOverflows": 4, "TcpExtListenDrops": 4}, base, 1.0)
    assert r.status == "fail" and "TcpExtListenOverflows +4" in r.summary
    r = tcp_counters.judge(base, base, 1.0)
    assert r.status == "ok"
    # a context counter alone (retransmissions) does not make a warning
    r = tcp_counters.judge({**base, "TcpRetransSegs": 30}, base, 1.0)
    assert r.status == "ok" and any("TcpRetransSegs: +30" in e for e in r.evidence)


def _ss_rows(text: str) -> set[tuple[str, str, int, str, int]]:
    rows = set()
    for line in text.splitlines():
        f = line.split()
        if not f or f[0] == "LISTEN":
            continue
        (la, _, lp), (ra, _, rp) = f[3].rpartition(":"), f[4].rpartition(":")
        rows.add((f[0], sockets.normalize_ip(la.strip("[]")), int(lp),
                  sockets.normalize_ip(ra.strip("[]")), int(rp)))
    return rows


def test_proc_net_tcp_parsing_matches_ss() -> None:
    socks = (sockets.parse_proc_net_tcp(_fixture("tcp"), hz=100)
             + sockets.parse_proc_net_tcp(_fixture("tcp6"), hz=100))
    ours = {(s.state, s.local, s.lport, s.remote, s.rport) for s in socks if s.state != "LISTEN"}
    assert ours == _ss_rows(_fixture("ss-tanoH.txt"))
    by_state: dict[str, list[sockets.Sock]] = {}
    for s in socks:
        by_state.setdefault(s.state, []).append(s)
    assert len(by_state["LISTEN"]) == 2
    (cw,) = by_state["CLOSE-WAIT"]
    assert (cw.local, cw.rport, cw.rq) == ("127.0.0.1", 8000, 1) and cw.inode > 0
    (tw,) = by_state["TIME-WAIT"]
    assert tw.timer == "timewait" and 55 < tw.expires_s <= 60 and tw.inode == 0
    ka = [s for s in by_state["ESTAB"] if s.timer == "keepalive"]
    assert len(ka) == 1 and ka[0].rport == 8000 and 7100 < ka[0].expires_s <= 7200
    # v4-mapped addresses from tcp6 come out as plain IPv4; real IPv6 stays IPv6
    assert {s.local for s in by_state["ESTAB"]} == {"127.0.0.1", "::1"}


def test_port_range_helpers() -> None:
    assert port_range.parse_range("32768\t60999\n") == (32768, 60999)
    assert port_range.parse_reserved("") == set()
    assert port_range.parse_reserved("8080,40000-40003\n") == {8080, 40000, 40001, 40002, 40003}
    socks = (sockets.parse_proc_net_tcp(_fixture("tcp"), hz=100)
             + sockets.parse_proc_net_tcp(_fixture("tcp6"), hz=100))
    held = port_range.ephemeral(socks, 32768, 60999, set())
    counts = port_range.tuples(held)
    # clients toward 127.0.0.1:8000 (ESTAB, CLOSE-WAIT, TIME-WAIT), ::1:8001, 127.0.0.1:8001;
    # the accepted server ends (local port 8000/8001 is a listening port) are not counted
    assert counts == {("127.0.0.1", "127.0.0.1", 8000): 3, ("::1", "::1", 8001): 1,
                      ("127.0.0.1", "127.0.0.1", 8001): 1}
    assert port_range.tuples(port_range.ephemeral(socks, 32768, 60999, {40426, 40432, 40438})) \
        == {("::1", "::1", 8001): 1, ("127.0.0.1", "127.0.0.1", 8001): 1}


def test_iface_drop_judge() -> None:
    after = {"eth0": ({"rx_dropped": 12, "tx_dropped": 0}, 1500)}
    r = iface_drops.judge({"eth0": {"rx_dropped": 12, "tx_dropped": 0}}, after, 1.0, "test", ["eth0"])
    assert r.status == "warn" and "eth0: rx_dropped +12" in r.summary
    r = iface_drops.judge({"eth0": {"rx_dropped": 0, "tx_dropped": 0}}, after, 1.0, "test", ["eth0"])
    assert r.status == "ok" and any("rx_dropped 12" in e for e in r.evidence)


# ---- lab tests --------------------------------------------------------------------------------------
from tests.lab.netlab import Lab, Proc  # noqa: E402
from tests.unprivileged import nobody_python  # noqa: E402


def check(lab: Lab, role: str, ids: str, *args: str, nobody: bool = False) -> dict[str, dict[str, Any]]:
    """``python -m tui check --only IDS --json ARGS`` inside the namespace; results by id."""
    tail = ["-m", "tui", "check", "--only", ids, "--json", *args]
    if nobody:
        argv = [*nobody_python(), *tail]
    else:
        argv = ["env", f"PYTHONPATH={REPO_ROOT}", sys.executable, *tail]
    proc = lab.run(role, argv, check=False, timeout=30)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "rst-triage/checks/1"
    return {r["id"]: r for r in doc["results"]}


def program(lab: Lab, role: str, tmp: Path, name: str, *args: str) -> Proc:
    """Start one of this module's programs in a namespace and wait for its READY line."""
    proc = lab.spawn(role, [sys.executable, "-m", "tests.test_checks_host", *args], name=name,
                     log=tmp / f"{name}.log")
    proc.wait_for("^READY", 10)
    return proc


def ready_ports(proc: Proc) -> list[int]:
    line = proc.wait_for(r"^READY (.*)$", 10)
    ports: list[int] = json.loads(line.group(1))
    return ports


def wait_states(lab: Lab, role: str, state: str, dst: str, want: int, timeout: float = 5.0) -> int:
    """Poll ``ss`` until ``want`` sockets toward ``dst`` are in ``state`` (bounded)."""
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        out = lab.run(role, ["ss", "-Htan", "state", state, "dst", dst]).stdout
        n = len(out.split("\n")) - 1 if out.strip() else 0
        if n >= want:
            return n
        time.sleep(0.05)
    return n


@pytest.mark.lab
def test_route_through_a_vxlan_tunnel_warns_plain_veth_does_not(lab: Lab) -> None:
    client4, server4 = lab.addr("client"), lab.addr("server")
    vx = "hxvx0"
    try:
        for role, local, remote, dev, last in (("client", client4, server4, "c-r", 1),
                                               ("server", server4, client4, "s-p", 2)):
            lab.run(role, ["ip", "link", "add", vx, "type", "vxlan", "id", "4242", "local", local,
                           "remote", remote, "dstport", "4789", "dev", dev])
            lab.run(role, ["ip", "addr", "add", f"10.201.60.{last}/24", "dev", vx])
            lab.run(role, ["ip", "-6", "addr", "add", f"fd00:201:60::{last}/64", "dev", vx, "nodad"])
            lab.run(role, ["ip", "link", "set", vx, "up"])
        # the tunnel carries traffic: the peer is really reached through it
        ping = lab.run("client", ["ping", "-c", "1", "-W", "2", "-n", "10.201.60.2"], check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr

        r = check(lab, "client", "route", "--peer", "10.201.60.2:8080")["route"]
        assert r["status"] == "warn", r
        assert r["value"]["dev"] == vx and r["value"]["kind"] == "vxlan" and r["value"]["tunnel"] == "vxlan"
        assert r["value"]["mtu"] == 1450  # 1500 minus the VXLAN headers
        assert r["value"]["src"] == "10.201.60.1" and r["value"]["gateway"] is None
        assert "ip route get 10.201.60.2" in r["command"]

        r6 = check(lab, "client", "route", "--peer", "[fd00:201:60::2]:8080")["route"]
        assert r6["status"] == "warn" and r6["value"]["tunnel"] == "vxlan", r6

        # a network routed over the tunnel, via the far end
        lab.run("client", ["ip", "route", "add", "10.201.62.0/24", "via", "10.201.60.2", "dev", vx])
        routed = check(lab, "client", "route", "--peer", "10.201.62.5:443")["route"]
        assert routed["status"] == "warn", routed
        assert (routed["value"]["gateway"], routed["value"]["tunnel"]) == ("10.201.60.2", "vxlan")

        # a tun device (what OpenVPN or tailscale create)
        lab.run("client", ["ip", "tuntap", "add", "dev", "hxtun0", "mode", "tun"])
        lab.run("client", ["ip", "addr", "add", "10.201.61.1/24", "dev", "hxtun0"])
        lab.run("client", ["ip", "link", "set", "hxtun0", "up"])
        tun = check(lab, "client", "route", "--peer", "10.201.61.2:443")["route"]
        assert tun["status"] == "warn" and tun["value"]["tunnel"] == "tun", tun

        # clean: the plain veth path to the server (IPv4 and IPv6)
        plain = check(lab, "client", "route", "--peer", f"{server4}:8080")["route"]
        assert plain["status"] == "info", plain
        v = plain["value"]
        assert (v["dev"], v["kind"], v["tunnel"]) == ("c-r", "veth", None)
        assert (v["gateway"], v["src"], v["mtu"]) == (lab.addr("router", toward="client"), client4, 1500)
        plain6 = check(lab, "client", "route", "--peer", f"[{lab.addr('server', v6=True)}]:8080")["route"]
        assert plain6["status"] == "info" and plain6["value"]["gateway"] == lab.addr(
            "router", v6=True, toward="client")
    finally:
        lab.run("client", ["ip", "link", "del", "hxtun0"], check=False)
        for role in ("client", "server"):
            lab.run(role, ["ip", "link", "del", vx], check=False)


@pytest.mark.lab
def test_route_into_a_container_bridge_warns(lab: Lab) -> None:
    """A bridge with veth ports (what docker0 or cni0 look like from the host) on the path."""
    try:
        lab.run("server", ["ip", "link", "add", "hxbr0", "type", "bridge"])
        lab.run("server", ["ip", "link", "add", "hxv0", "type", "veth", "peer", "name", "hxv1"])
        lab.run("server", ["ip", "link", "set", "hxv0", "master", "hxbr0"])
        lab.run("server", ["ip", "addr", "add", "10.201.80.1/24", "dev", "hxbr0"])
        for ifname in ("hxbr0", "hxv0", "hxv1"):
            lab.run("server", ["ip", "link", "set", ifname, "up"])
        r = check(lab, "server", "route", "--peer", "10.201.80.2:80")["route"]
        assert r["status"] == "warn", r
        v = r["value"]
        assert (v["dev"], v["kind"], v["container_bridge"], v["tunnel"]) == ("hxbr0", "bridge", "hxbr0", None)
        assert any("1 veth port" in e for e in r["evidence"])
        # the same namespace's own link toward the proxy stays clean
        plain = check(lab, "server", "route", "--peer", f"{lab.addr('client')}:80")["route"]
        assert plain["status"] == "info" and plain["value"]["dev"] == "s-p", plain
    finally:
        lab.run("server", ["ip", "link", "del", "hxv0"], check=False)
        lab.run("server", ["ip", "link", "del", "hxbr0"], check=False)


@pytest.mark.lab
def test_tcp_counters_see_resets_to_a_closed_port(lab: Lab, tmp_path: Path) -> None:
    clean = check(lab, "server", "tcp-counters", "--window", "1")["tcp-counters"]
    assert clean["status"] == "ok", clean
    assert clean["value"]["deltas"]["TcpOutRsts"] == 0

    server = lab.addr("server")
    # 50 connects, 0.12 s apart (6 s), to a port nobody listens on: the server answers each with
    # a RST. The 2.5 s window falls inside the loop even if the check is slow to start.
    loop = program(lab, "client", tmp_path, "refuse", "refuse", server, "9", "--count", "50",
                   "--interval", "0.12")
    try:
        r = check(lab, "server", "tcp-counters", "--window", "2.5")["tcp-counters"]
    finally:
        lab.stop(loop)
    assert r["status"] == "warn", r
    d = r["value"]["deltas"]
    assert 5 <= d["TcpOutRsts"] <= 50, d
    assert d["TcpExtListenOverflows"] == 0
    assert "TcpOutRsts" in r["summary"]


@pytest.mark.lab
def test_tcp_counters_fail_on_listen_overflows(lab: Lab, tmp_path: Path) -> None:
    server = lab.addr("server")
    # a listener with a one-slot accept queue that never accepts, and 8 clients
    srv = program(lab, "server", tmp_path, "noaccept", "serve", "7300", "--mode", "noaccept",
                  "--backlog", "1")
    clients = None
    try:
        lab.wait_listening("server", 7300)
        before = check(lab, "server", "tcp-counters", "--window", "0.2")["tcp-counters"]
        assert before["status"] == "ok", before
        clients = lab.spawn("client", [sys.executable, "-m", "tests.test_checks_host", "hold", server,
                                       "7300", "8"], name="overflow-clients", log=tmp_path / "ovf.log")
        r = check(lab, "server", "tcp-counters", "--window", "2")["tcp-counters"]
    finally:
        if clients is not None:
            lab.stop(clients)
        lab.stop(srv)
    assert r["status"] == "fail", r
    assert r["value"]["deltas"]["TcpExtListenOverflows"] >= 1


@pytest.mark.lab
def test_iface_drops_on_a_veth_mtu_mismatch(lab: Lab, tmp_path: Path) -> None:
    c_if, s_if = "hxd-c", "hxd-s"
    lab.run("client", ["ip", "link", "add", c_if, "type", "veth", "peer", "name", s_if, "netns",
                       lab.ns["server"]])
    ping = None
    try:
        lab.run("client", ["ip", "addr", "add", "10.201.70.1/24", "dev", c_if])
        lab.run("server", ["ip", "addr", "add", "10.201.70.2/24", "dev", s_if])
        lab.run("server", ["ip", "link", "set", s_if, "mtu", "1200"])  # the receiver's end is smaller
        for role, ifname in (("client", c_if), ("server", s_if)):
            lab.run(role, ["ip", "link", "set", ifname, "up"])
        assert lab.run("client", ["ping", "-c", "1", "-W", "2", "-n", "10.201.70.2"],
                       check=False).returncode == 0

        clean = check(lab, "server", "iface-drops", "--iface", s_if, "--window", "1")["iface-drops"]
        assert clean["status"] == "ok", clean
        assert clean["value"]["interfaces"] == [s_if]

        # 1400-byte pings (1428-byte packets) into the 1200-byte end: 60 of them, 0.1 s apart
        ping = lab.spawn("client", ["ping", "-n", "-q", "-c", "60", "-i", "0.1", "-s", "1400", "-W", "1",
                                    "10.201.70.2"], name="bigping", log=tmp_path / "ping.log")
        # no --iface: the route to the peer picks the interface
        r = check(lab, "server", "iface-drops", "--peer", "10.201.70.1:80", "--window", "2")["iface-drops"]
    finally:
        if ping is not None:
            lab.stop(ping)
        lab.run("client", ["ip", "link", "del", c_if], check=False)
    assert r["status"] == "warn", r
    assert r["value"]["interfaces"] == [s_if] and "route" in r["value"]["why"]
    assert r["value"]["mtu"][s_if] == 1200
    dropped = r["value"]["deltas"][s_if]["rx_dropped"]
    assert 5 <= dropped <= 2 * 60, r["value"]
    assert f"{s_if}: rx_dropped +{dropped}" in r["summary"]


@pytest.fixture
def tiny_port_range(lab: Lab) -> Iterator[tuple[int, int]]:
    """20 ports, all above the default range (32768-60999): sockets other tests left behind in
    TIME-WAIT or FIN-WAIT-2 cannot sit in it."""
    with lab.sysctl_set("client", "net.ipv4.ip_local_port_range", "61000 61019") as got:
        if got.split() != ["61000", "61019"]:
            pytest.fail(f"could not narrow the port range in the client namespace: read back {got}")
        yield 61000, 61019


@pytest.mark.lab
def test_port_range_nearly_used_up(lab: Lab, tmp_path: Path, tiny_port_range: tuple[int, int]) -> None:
    server4, server6 = lab.addr("server"), lab.addr("server", v6=True)
    srv = program(lab, "server", tmp_path, "portsrv", "serve", "7100")
    holders: list[Proc] = []
    try:
        # clean: 5 of 20 ports toward one destination (25 %). Its own destination port: closed
        # connections keep their local port for a while (FIN-WAIT-2/TIME-WAIT), and the check
        # rightly counts them.
        holders.append(program(lab, "server", tmp_path, "portsrv2", "serve", "7101"))
        holders.append(program(lab, "client", tmp_path, "hold5", "hold", server4, "7101", "5"))
        ok = check(lab, "client", "port-range", "--peer", f"{server4}:7101")["port-range"]
        assert ok["status"] == "ok", ok
        assert ok["value"]["size"] == 20 and ok["value"]["busiest"]["count"] == 5
        assert ok["value"]["peer"]["dport"] == 7101

        # 15 of 20 toward server:7100 (75 %): warn
        h = program(lab, "client", tmp_path, "hold15", "hold", server4, "7100", "15")
        holders.append(h)
        assert all(61000 <= p <= 61019 for p in ready_ports(h))
        warn = check(lab, "client", "port-range", "--peer", f"{server4}:7100")["port-range"]
        assert warn["status"] == "warn", warn
        b = warn["value"]["busiest"]
        assert (b["dst"], b["dport"], b["count"], b["pct"]) == (server4, 7100, 15, 75.0)
        assert warn["value"]["peer"]["count"] == 15
        assert warn["value"]["range"] == [61000, 61019]

        # 19 of 20 toward [server]:7100 over IPv6 (95 %): fail - the busiest tuple decides
        holders.append(program(lab, "client", tmp_path, "hold19v6", "hold", server6, "7100", "19"))
        fail = check(lab, "client", "port-range", "--peer", f"{server4}:7100")["port-range"]
        assert fail["status"] == "fail", fail
        b = fail["value"]["busiest"]
        assert (b["dst"], b["count"], b["pct"]) == (server6, 19, 95.0)
        assert fail["value"]["peer"]["count"] == 15  # the peer's own tuple is still 15
        assert any("net.ipv4.tcp_tw_reuse" in e for e in fail["evidence"])
        assert any("ip_local_reserved_ports" in e for e in fail["evidence"])
    finally:
        for h in holders:
            lab.stop(h)
        lab.stop(srv)


@pytest.mark.lab
def test_sockets_close_wait_to_the_peer(lab: Lab, tmp_path: Path) -> None:
    server4, server6 = lab.addr("server"), lab.addr("server", v6=True)
    closer = program(lab, "server", tmp_path, "closer", "serve", "7200", "--mode", "close")
    keeper = program(lab, "server", tmp_path, "keeper", "serve", "7201")
    procs = [closer, keeper]
    try:
        h4 = program(lab, "client", tmp_path, "cw4", "hold", server4, "7200", "3")
        h6 = program(lab, "client", tmp_path, "cw6", "hold", server6, "7200", "2")
        est = program(lab, "client", tmp_path, "est", "hold", server4, "7201", "4", "--keepalive", "2")
        procs += [h4, h6, est]
        assert wait_states(lab, "client", "close-wait", server4, 3) == 3
        assert wait_states(lab, "client", "close-wait", f"[{server6}]", 2) == 2

        r = check(lab, "client", "sockets", "--peer", f"{server4}:7200", "--window", "0.5")["sockets"]
        assert r["status"] == "warn", r
        v = r["value"]
        assert (v["close_wait"], v["close_wait_stuck"], v["sockets"]) == (3, 3, 3)
        assert v["owners"] == {f"{_comm(h4)}[{h4.pid}]": 3} and v["owners_partial"] is False
        assert f"pid={h4.pid}" in "\n".join(r["evidence"])
        assert "3 CLOSE-WAIT" in r["summary"]

        # by name (the namespace's hosts file): the same sockets
        byname = check(lab, "client", "sockets", "--peer", "server.lab:7200", "--window", "0.5")["sockets"]
        assert byname["status"] == "warn" and byname["value"]["addresses"] == [server4], byname
        assert byname["value"]["close_wait_stuck"] == 3

        r6 = check(lab, "client", "sockets", "--peer", f"[{server6}]:7200", "--window", "0.5")["sockets"]
        assert r6["status"] == "warn" and r6["value"]["close_wait_stuck"] == 2, r6
        assert r6["value"]["owners"] == {f"{_comm(h6)}[{h6.pid}]": 2}

        # clean: established connections to another port of the same server
        ok = check(lab, "client", "sockets", "--peer", f"{server4}:7201", "--window", "0.5")["sockets"]
        assert ok["status"] == "info", ok
        assert ok["value"]["states"] == {"ESTAB": 4} and ok["value"]["close_wait"] == 0
        assert ok["value"]["owners"] == {f"{_comm(est)}[{est.pid}]": 4}

        # the two socket table sources agree (sock_diag for small tables, /proc/net/tcp for big)
        code = ("import json; from tui.checks import sockets as s\n"
                "key = lambda x: (x.state, x.local, x.lport, x.remote, x.rport, x.timer, x.inode, x.rq)\n"
                "print(json.dumps([sorted(map(key, s._from_diag())), sorted(map(key, s._from_proc()))]))")
        out = lab.run("client", ["env", f"PYTHONPATH={REPO_ROOT}", sys.executable, "-c", code]).stdout
        diag, proc = json.loads(out)
        assert diag == proc
        assert sum(1 for row in diag if row[0] == "CLOSE-WAIT") == 5
        assert sum(1 for row in diag if row[5] == "keepalive") == 2
        assert any(":" in row[1] for row in diag)  # the IPv6 ones are in both

        # unprivileged: the CLOSE-WAIT sockets are still found; the owners are not (partial)
        nob = check(lab, "client", "sockets", "--peer", f"{server4}:7200", "--window", "0.5",
                    nobody=True)["sockets"]
        assert nob["status"] == "warn" and nob["value"]["close_wait_stuck"] == 3, nob
        assert nob["value"]["owners_partial"] is True and nob["value"]["owners"] == {}
        assert "partial" in nob["summary"] or any("partial" in e for e in nob["evidence"])
    finally:
        for p in reversed(procs):
            lab.stop(p)


def _comm(proc: Proc) -> str:
    return Path(f"/proc/{proc.pid}/comm").read_text().strip()


@pytest.fixture
def proxy_keepalive_60(lab: Lab) -> Iterator[None]:
    key = "net.ipv4.tcp_keepalive_time"
    with lab.sysctl_set("proxy", key, "60") as got:
        if got != "60":
            pytest.fail(f"could not set {key} in the proxy namespace: read back {got}")
        yield


@pytest.mark.lab
def test_tcp_keepalive_default_flags_short_time_passes(lab: Lab, tmp_path: Path,
                                                       proxy_keepalive_60: None) -> None:
    assert lab.run("client", ["sysctl", "-n", "net.ipv4.tcp_keepalive_time"]).stdout.strip() == "7200"
    warn = check(lab, "client", "tcp-keepalive")["tcp-keepalive"]
    assert warn["status"] == "warn", warn
    assert warn["value"]["keepalive_time"] == 7200
    assert warn["value"]["shorter_timeouts"]["AWS NAT gateway"] == 350
    assert "AWS NAT gateway 350 s" in warn["summary"]

    server = lab.addr("server")
    srv = program(lab, "server", tmp_path, "kasrv", "serve", "7400")
    procs = [srv]
    try:
        # from the proxy (keepalive_time 60): 4 connections to the server, 3 with SO_KEEPALIVE
        procs.append(program(lab, "proxy", tmp_path, "kahold", "hold", server, "7400", "4",
                             "--keepalive", "3"))
        ok = check(lab, "proxy", "tcp-keepalive", "--peer", f"{server}:7400")["tcp-keepalive"]
    finally:
        for p in reversed(procs):
            lab.stop(p)
    assert ok["status"] == "ok", ok
    v = ok["value"]
    assert v["keepalive_time"] == 60 and v["shorter_timeouts"] == {}
    assert (v["established"], v["with_keepalive_timer"], v["scope"]) == (4, 3, "peer")
    assert "3/4 established sockets to the peer use keepalive" in ok["summary"]


@pytest.mark.lab
def test_every_host_check_completes_unprivileged(lab: Lab, tmp_path: Path) -> None:
    server = lab.addr("server")
    srv = program(lab, "server", tmp_path, "nobodysrv", "serve", "7500")
    try:
        hold = program(lab, "client", tmp_path, "nobodyhold", "hold", server, "7500", "2")
        try:
            results = check(lab, "client", ",".join(HOST_IDS), "--peer", f"{server}:7500",
                            nobody=True)
        finally:
            lab.stop(hold)
    finally:
        lab.stop(srv)
    assert sorted(results) == sorted(HOST_IDS)
    statuses = {cid: r["status"] for cid, r in results.items()}
    assert "error" not in statuses.values(), results
    # none of them needs root to read its facts
    assert "skipped" not in statuses.values(), statuses
    assert results["sockets"]["value"]["states"] == {"ESTAB": 2}
    assert results["sockets"]["value"]["owners_partial"] is True
    assert results["route"]["value"]["dev"] == "c-r"


@pytest.mark.lab
def test_a_peer_name_that_does_not_resolve(lab: Lab) -> None:
    """route needs the address and says so; the others fall back to the whole host."""
    results = check(lab, "client", ",".join(HOST_IDS), "--peer", "nosuch.lab:80", "--window", "0.2")
    assert results["route"]["status"] == "skipped"
    assert "cannot resolve nosuch.lab" in results["route"]["summary"]
    assert results["route"]["command"] == "getent ahosts nosuch.lab"
    for cid in ("sockets", "port-range", "tcp-keepalive", "iface-drops"):
        r = results[cid]
        assert r["status"] not in ("skipped", "error"), r
        assert "cannot resolve nosuch.lab" in json.dumps(r["evidence"]), r
    assert results["tcp-keepalive"]["value"]["scope"] == "all"


def test_host_checks_are_registered() -> None:
    from tui import checks

    for cid in HOST_IDS:
        mod = checks.module(cid)
        assert mod.ID == cid and mod.PLAYBOOK in ("first", "second", "third") and mod.TITLE
    assert os.path.isdir(FIXTURES)
