"""The active probes: path MTU (pmtu) and HTTP keep-alive idle timeout (keepalive).

Unit tests decode what the kernel really hands the probes (error-queue entries and echo
replies recorded in the lab, nginx's raw HTTP answers: tests/fixtures/probes) and exercise
the decisions on small, explicit inputs. Lab tests build their own namespaces (one Lab for
this module): a 1400-byte link behind the router, with and without ICMP frag-needed blocked
in the router's output hook; nginx and the lab's Python server with a 2 s keep-alive timeout.
The probes run inside the client namespace as a user would run them, as root and as nobody.
"""
from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.lab.netlab import REPO_ROOT, Lab, LabError
from tests.unprivileged import nobody_python
from tui.checks import Context, keepalive, pmtu

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "probes"
PATH_MTU = 1400
NGINX_PORT = 8080
NGINX_CLOSE_PORT = 8082
AGENT_PORT = 8081


def _load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


# ---- pmtu: decoding what the kernel hands over ----------------------------------------------
ERRQUEUE = _load("errqueue.json")["records"]


def _records(what: str, method: str, v6: bool) -> list[dict[str, Any]]:
    return [r for r in ERRQUEUE if r["what"] == what and r["method"] == method and r["v6"] == v6]


@pytest.mark.parametrize("method", ["icmp-raw", "icmp-dgram", "udp"])
@pytest.mark.parametrize("v6", [False, True])
def test_frag_needed_from_the_error_queue(method: str, v6: bool) -> None:
    """The 1500-byte probe drew a frag-needed / packet-too-big from the router: mtu 1400."""
    recs = [r for r in _records("errqueue", method, v6) if bytes.fromhex(r["cdata"])[0] == 90]  # EMSGSIZE
    assert recs, "fixture lacks this case"
    for rec in recs:
        err = pmtu.parse_error(bytes.fromhex(rec["cdata"]), bytes.fromhex(rec["data"]), method, rec["ident"])
        assert err is not None
        assert err.kind == "too-big"
        assert err.mtu == PATH_MTU
        assert err.source == ("fd00:201:1::1" if v6 else "10.201.1.1")
        assert rec["probes"][str(err.seq)] == 1500


@pytest.mark.parametrize("v6", [False, True])
def test_udp_port_unreachable_is_the_answer(v6: bool) -> None:
    recs = [r for r in _records("errqueue", "udp", v6) if bytes.fromhex(r["cdata"])[0] == 111]  # ECONNREFUSED
    assert len(recs) == 1
    rec = recs[0]
    err = pmtu.parse_error(bytes.fromhex(rec["cdata"]), bytes.fromhex(rec["data"]), "udp", rec["ident"])
    assert err is not None and err.kind == "port-unreachable"
    assert err.source == ("fd00:201:3::10" if v6 else "10.201.3.10")
    assert rec["probes"][str(err.seq)] == 1400


def test_net_unreachable_is_not_an_answer() -> None:
    recs = [r for r in ERRQUEUE if r["what"] == "errqueue" and bytes.fromhex(r["cdata"])[0] == 101]
    assert recs  # ENETUNREACH, from the router, for probes to 10.201.9.9
    for rec in recs:
        err = pmtu.parse_error(bytes.fromhex(rec["cdata"]), bytes.fromhex(rec["data"]), rec["method"],
                               rec["ident"])
        assert err is not None and err.kind == "unreachable"
        assert err.detail == "ICMP net unreachable" and err.source == "10.201.1.1"
        assert rec["probes"][str(err.seq)] == 600


@pytest.mark.parametrize("method", ["icmp-raw", "icmp-dgram"])
@pytest.mark.parametrize("v6", [False, True])
def test_echo_replies_map_to_their_probe(method: str, v6: bool) -> None:
    recs = _records("reply", method, v6)
    assert len(recs) == 1
    rec = recs[0]
    data = bytes.fromhex(rec["data"])
    seq = pmtu.parse_reply(data, method, v6, rec["ident"])
    assert seq is not None and rec["probes"][str(seq)] == 1400
    # somebody else's ping on a raw socket (another id) is not ours
    if method == "icmp-raw":
        assert pmtu.parse_reply(data, method, v6, (rec["ident"] + 1) & 0xFFFF) is None


def _search(*outcomes: tuple[int, str, Optional[int]]) -> pmtu.Search:
    s = pmtu.Search(method="icmp-raw")
    for i, (size, outcome, mtu) in enumerate(outcomes):
        s.probes.append(pmtu.Probe(size, i, 0.0, outcome, rtt=0.001 if outcome == "reply" else None, mtu=mtu,
                                   source="10.0.0.1" if mtu else None))
    return s


def test_search_bracket_and_hints() -> None:
    s = _search((1500, "lost", None), (1280, "reply", None), (1400, "reply", None), (1450, "lost", None))
    assert (s.lo, s.hi) == (1400, 1450)
    assert pmtu._next_sizes(s, 16) == pmtu._spread(1400, 1450, 16)
    assert len(pmtu._next_sizes(s, 16)) == 16 and all(1400 < x < 1450 for x in pmtu._next_sizes(s, 16))
    # a frag-needed names the next hop's MTU: that size is tried first, and MTU + 1 is known too big
    s = _search((1500, "too-big", 1420), (1280, "reply", None))
    assert s.hi == 1421
    assert pmtu._next_sizes(s, 16) == [1420]
    s.probes.append(pmtu.Probe(1420, 9, 0.0, "reply", rtt=0.001))
    assert (s.lo, s.hi) == (1420, 1421) and pmtu._next_sizes(s, 16) == []
    # a lost size below the largest answer is packet loss, not a boundary
    s = _search((1300, "lost", None), (1400, "reply", None))
    assert (s.lo, s.hi) == (1400, None)


def _route(mtu: int = 1500) -> pmtu.Egress:
    return pmtu.Egress(iface="eth0", iface_mtu=mtu, gateway="10.0.0.1")


def test_judge_black_hole_frag_needed_and_no_answer() -> None:
    hole = _search((1500, "lost", None), (1280, "reply", None), (1400, "reply", None), (1401, "lost", None))
    # the boundary's loss not re-checked (or the re-check lost the known-good size too): no claim
    for confirmed in (None, False):
        hole.confirmed = confirmed
        r = pmtu._judge("h", "10.9.9.9", False, _route(), _route(), 1500, hole)
        assert r.status == "info" and "can't tell" in r.summary and not r.value["black_hole"]
    hole.confirmed = True
    r = pmtu._judge("h", "10.9.9.9", False, _route(), _route(), 1500, hole)
    assert r.status == "fail" and r.value["black_hole"] and r.value["path_mtu"] == 1400
    assert r.value["black_hole_from"] == 1401 and not r.value["frag_needed"]
    assert pmtu.MSS_CLAMP in r.decision and "frag-needed" in r.decision
    assert "ping -M do -c 3 -s 1372 h" in r.command and "ping -M do -c 3 -s 1373 h" in r.command

    works = _search((1500, "too-big", 1400), (1280, "reply", None), (1400, "reply", None))
    r = pmtu._judge("h", "10.9.9.9", False, _route(), _route(), 1500, works)
    assert r.status == "ok" and r.value["path_mtu"] == 1400 and r.value["frag_needed"]
    assert not r.value["black_hole"]

    # losses that a second try showed to be rate limiting, and nothing else: no claim either way
    doubt = _search((1500, "lost-once", None), (1280, "reply", None), (1400, "reply", None))
    r = pmtu._judge("h", "10.9.9.9", False, _route(), _route(), 1500, doubt)
    assert r.status == "info" and not r.value["black_hole"]

    silent = _search((1500, "lost", None), (1280, "lost", None), (576, "lost", None))
    r = pmtu._judge("h", "10.9.9.9", False, _route(), _route(), 1500, silent)
    assert r.status == "info" and "can't measure" in r.summary and not r.value["black_hole"]
    assert r.value["path_mtu"] is None and not r.value["measured"]


def test_pmtu_check_without_a_peer_is_skipped_with_the_command() -> None:
    r = pmtu.run(Context())
    assert r.status == "skipped" and r.command == "rst-triage probe mtu HOST"


# ---- keepalive: HTTP parsing and decisions ---------------------------------------------------
NGINX = _load("nginx_http.json")["exchanges"]


def _read(raw: bytes, chunks: int = 1) -> keepalive.Response:
    """read_response over a real socket pair, the bytes sent in ``chunks`` pieces."""
    a, b = socket.socketpair()
    with a, b:
        step = max(1, len(raw) // chunks)

        def feed() -> None:
            for i in range(0, len(raw), step):
                b.sendall(raw[i:i + step])
                time.sleep(0.01)

        t = threading.Thread(target=feed)
        t.start()
        try:
            return keepalive.read_response(a, time.monotonic() + 5)
        finally:
            t.join(5)


def test_nginx_keepalive_answer_is_reusable_with_its_header() -> None:
    resp = _read(NGINX["nginx_keepalive"]["response"].encode("latin-1"), chunks=4)
    assert resp.status == 200 and resp.reusable
    assert resp.headers["server"] == "nginx/1.22.1"
    assert keepalive.keep_alive_header(resp.headers["keep-alive"]) == {"timeout": 2}


@pytest.mark.parametrize("name", ["nginx_close", "nginx_http10"])
def test_connection_close_is_not_reusable(name: str) -> None:
    resp = _read(NGINX[name]["response"].encode("latin-1"))
    assert not resp.reusable and resp.why_not == "Connection: close"


def test_chunked_body_and_interim_answer_are_read_to_the_end() -> None:
    raw = (b"HTTP/1.1 100 Continue\r\n\r\n"
           b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n")
    a, b = socket.socketpair()
    with a, b:
        b.sendall(raw + b"HTTP/1.1 204 No Content\r\n\r\n")
        first = keepalive.read_response(a, time.monotonic() + 5)
        assert first.status == 200 and first.reusable
        # the body and trailers were consumed exactly: what follows is the next response
        assert first.leftover == b"HTTP/1.1 204 No Content\r\n\r\n"


def test_body_delimited_by_close_and_keep_alive_header_forms() -> None:
    a, b = socket.socketpair()
    with a, b:
        b.sendall(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\nbody until close")
        resp = keepalive.read_response(a, time.monotonic() + 5)
    assert not resp.reusable and "closing" in resp.why_not
    assert keepalive.keep_alive_header("timeout=5, max=1000") == {"timeout": 5, "max": 1000}
    assert keepalive.keep_alive_header("Max=3,Timeout = 60") == {"timeout": 60, "max": 3}
    assert keepalive.keep_alive_header("") == {}


def test_ladder_and_suggestions() -> None:
    assert keepalive.ladder(30) == [0.5, 1, 2, 3, 5, 8, 13, 21, 30]
    assert keepalive.ladder(5) == [0.5, 1, 2, 3, 5]
    assert keepalive.ladder(4) == [0.5, 1, 2, 3, 4]
    assert keepalive.ladder(0.5) == [0.5]
    assert keepalive.suggested_client_idle(75) == 67
    assert keepalive.suggested_client_idle(5) == 4
    assert keepalive.suggested_client_idle(2) == 1


def _rungs(*specs: tuple[float, str, Optional[float]]) -> list[keepalive.Rung]:
    out: list[keepalive.Rung] = []
    for idle, outcome, closed_at in specs:
        r = keepalive.Rung(idle, outcome=outcome, closed_at=closed_at, local_port=40000 + len(out))
        r.first = keepalive.Response("1.1", 200, {"keep-alive": "timeout=2"}, True)
        r.closed_by = "FIN" if closed_at is not None else ""
        r.reuse = "HTTP 200 on the same connection" if outcome == "alive" else "EOF"
        out.append(r)
    return out


TARGET = keepalive.parse_target("http://10.0.0.5:8080/health")


@pytest.mark.parametrize(("client_idle", "status"), [(60, "fail"), (2.0, "fail"), (1.5, "warn"), (1, "ok"),
                                                       (None, "info")])
def test_judge_against_the_client_pool(client_idle: Optional[float], status: str) -> None:
    rungs = _rungs((0.5, "alive", None), (1, "alive", None), (2, "closed", 2.01), (3, "closed", 2.0),
                   (5, "closed", 2.02))
    r = keepalive.judge(TARGET, rungs, client_idle, 30)
    assert r.status == status, r.summary
    assert r.value["timeout_s"] == 2.0 and r.value["timeout_range_s"] == [1, 2.0]
    assert r.value["keep_alive_timeout_header_s"] == 2 and r.value["closed_by"] == "FIN"
    assert "nginx keepalive_timeout 75 s" in r.meaning and "IdleConnTimeout 90 s" in r.meaning


def test_judge_silent_drop_and_never_closed() -> None:
    rungs = _rungs((1, "alive", None), (2, "alive", None), (3, "dead", None), (5, "dead", None))
    r = keepalive.judge(TARGET, rungs, 60, 30)
    assert r.status == "fail" and r.value["timeout_range_s"] == [2, 3] and r.value["closed_by"] == "silent"
    assert "die silently" in r.summary and "NAT" in r.meaning
    rungs = _rungs((1, "alive", None), (5, "alive", None))
    r = keepalive.judge(TARGET, rungs, 60, 5)
    assert r.status == "info" and r.value["timeout_range_s"] == [5, None] and "--max-idle 70" in r.decision
    assert keepalive.judge(TARGET, rungs, 3, 5).status == "ok"


def test_keepalive_check_without_a_url_is_skipped_with_the_command() -> None:
    r = keepalive.run(Context())
    assert r.status == "skipped" and r.command.startswith("rst-triage probe keepalive URL")


def test_keepalive_probe_of_a_bad_url_says_why() -> None:
    r = keepalive.probe("ftp://example.invalid/", None, 5)
    assert r.status == "skipped" and "not an http" in r.summary


# ---- the lab ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lab(lab: Lab) -> Lab:
    """The module's lab (tests/conftest.py) with the router—proxy link narrowed to 1400 bytes."""
    for role, toward in (("router", "proxy"), ("proxy", "router")):
        lab.run(role, ["ip", "link", "set", lab.iface(role, toward), "mtu", str(PATH_MTU)])
    return lab


def _python(nobody: bool) -> list[str]:
    if nobody:
        return [*nobody_python()]
    return ["env", "-C", str(REPO_ROOT), f"PYTHONPATH={REPO_ROOT}", sys.executable]


def run_tui(lab: Lab, *args: str, nobody: bool = False, timeout: float = 60) -> dict[str, Any]:
    """``python -m tui ARGS`` in the client namespace; the JSON it printed."""
    proc = lab.run("client", [*_python(nobody), "-m", "tui", *args], check=False, timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def probe_mtu(lab: Lab, host: str, *, nobody: bool = False) -> dict[str, Any]:
    # forget PMTU exceptions an earlier probe taught the client's kernel
    lab.run("client", ["ip", "route", "flush", "cache"])
    lab.run("client", ["ip", "-6", "route", "flush", "cache"])
    result = run_tui(lab, "probe", "mtu", host, "--json", nobody=nobody)
    assert result["id"] == "pmtu"
    return result


@pytest.fixture
def blackhole(lab: Lab) -> Iterator[None]:
    """The router stops telling: it drops the frag-needed / packet-too-big it generates itself."""
    lab.nft("router", """
table inet probes_blackhole {
    chain output {
        type filter hook output priority 0; policy accept;
        icmp type destination-unreachable icmp code frag-needed drop
        icmpv6 type packet-too-big drop
    }
}
""")
    try:
        yield
    finally:
        lab.nft_delete_table("router", "inet", "probes_blackhole")


@pytest.fixture
def ping_sockets(lab: Lab) -> Iterator[None]:
    """Unprivileged ICMP echo sockets allowed in the client namespace (as systemd sets it)."""
    with lab.sysctl_set("client", "net.ipv4.ping_group_range", "0 2147483647") as got:
        assert got.split() == ["0", "2147483647"], got
        yield


def _assert_black_hole(r: dict[str, Any], lab: Lab, family_v6: bool) -> None:
    v = r["value"]
    assert r["status"] == "fail", r["summary"]
    assert v["black_hole"] and v["measured"]
    assert v["path_mtu"] == PATH_MTU and v["black_hole_from"] == PATH_MTU + 1
    assert v["iface"] == lab.iface("client", "router") and v["iface_mtu"] == 1500
    assert not v["frag_needed"] and v["route_mtu_learned"] is None
    assert "black hole" in r["summary"] and pmtu.MSS_CLAMP in r["decision"]
    assert ("packet-too-big" if family_v6 else "frag-needed") in r["decision"]


def _assert_pmtud_works(r: dict[str, Any], lab: Lab, family_v6: bool) -> None:
    v = r["value"]
    assert r["status"] == "ok", r["summary"]
    assert v["path_mtu"] == PATH_MTU and v["iface_mtu"] == 1500 and not v["black_hole"]
    assert v["frag_needed"] and v["frag_needed_mtu"] == PATH_MTU
    assert v["frag_needed_from"] == [lab.addr("router", v6=family_v6, toward="client")]
    assert v["route_mtu_learned"] == PATH_MTU  # the kernel cached what the router said


V6 = [pytest.param(False, id="ipv4"), pytest.param(True, id="ipv6")]


@pytest.mark.lab
@pytest.mark.parametrize("v6", V6)
def test_pmtu_black_hole_as_root(lab: Lab, blackhole: None, v6: bool) -> None:
    r = probe_mtu(lab, lab.addr("server", v6=v6))
    _assert_black_hole(r, lab, v6)
    assert r["value"]["method"] == "icmp-raw"


@pytest.mark.lab
@pytest.mark.parametrize("v6", V6)
def test_pmtu_black_hole_unprivileged_udp(lab: Lab, blackhole: None, v6: bool) -> None:
    """nobody, no ping sockets: UDP probes answered by the server's (rate-limited) port-unreachable."""
    r = probe_mtu(lab, lab.addr("server", v6=v6), nobody=True)
    _assert_black_hole(r, lab, v6)
    assert r["value"]["method"] == "udp"


@pytest.mark.lab
def test_pmtu_black_hole_unprivileged_ping_socket(lab: Lab, blackhole: None, ping_sockets: None) -> None:
    r = probe_mtu(lab, lab.addr("proxy"), nobody=True)
    _assert_black_hole(r, lab, False)
    assert r["value"]["method"] == "icmp-dgram"


@pytest.mark.lab
@pytest.mark.parametrize("v6", V6)
def test_pmtu_frag_needed_answered(lab: Lab, v6: bool) -> None:
    r = probe_mtu(lab, lab.addr("server", v6=v6))
    _assert_pmtud_works(r, lab, v6)
    assert r["value"]["method"] == "icmp-raw"


@pytest.mark.lab
@pytest.mark.parametrize("v6", V6)
def test_pmtu_frag_needed_answered_unprivileged(lab: Lab, v6: bool) -> None:
    # the proxy, not the server: its port-unreachable rate limit is untouched by the tests above
    r = probe_mtu(lab, lab.addr("proxy", v6=v6), nobody=True)
    _assert_pmtud_works(r, lab, v6)
    assert r["value"]["method"] == "udp"


@pytest.mark.lab
def test_pmtu_full_size_path(lab: Lab) -> None:
    """The router itself is on a 1500-byte link: nothing to report."""
    r = probe_mtu(lab, lab.addr("router", toward="client"))
    v = r["value"]
    assert r["status"] == "ok" and v["path_mtu"] == 1500 == v["iface_mtu"]
    assert not v["frag_needed"] and not v["black_hole"]


@pytest.mark.lab
@pytest.mark.parametrize("nobody", [False, True], ids=["root", "nobody"])
def test_pmtu_silent_host_is_not_a_black_hole(lab: Lab, nobody: bool) -> None:
    """A server that answers neither echo nor UDP: 'can't measure', never a black hole."""
    lab.nft("server", """
table inet probes_silent {
    chain input {
        type filter hook input priority 0; policy accept;
        meta l4proto { icmp, udp } drop
    }
}
""")
    try:
        r = probe_mtu(lab, lab.addr("server"), nobody=nobody)
    finally:
        lab.nft_delete_table("server", "inet", "probes_silent")
    v = r["value"]
    assert r["status"] == "info" and "can't measure" in r["summary"], r["summary"]
    assert not v["measured"] and not v["black_hole"] and v["path_mtu"] is None
    # the router still said how big the next hop is
    assert v["frag_needed_mtu"] == PATH_MTU


@pytest.mark.lab
def test_pmtu_in_a_check_run(lab: Lab, blackhole: None) -> None:
    """`rst-triage check --only pmtu --peer` (the check's own, shorter time budget)."""
    lab.run("client", ["ip", "route", "flush", "cache"])
    doc = run_tui(lab, "check", "--only", "pmtu", "--peer", f"{lab.addr('server')}:{NGINX_PORT}", "--json")
    assert doc["schema"] == "rst-triage/checks/1"
    (r,) = doc["results"]
    assert r["id"] == "pmtu" and r["status"] == "fail", r["summary"]
    assert r["value"]["path_mtu"] == PATH_MTU and r["value"]["black_hole"]


# ---- keep-alive in the lab -------------------------------------------------------------------
@pytest.fixture(scope="module")
def nginx(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Debian's nginx in the server namespace: keepalive_timeout 2s (announced), and a port with
    keep-alive off."""
    work = tmp_path_factory.mktemp("nginx")
    temp_paths = "\n".join(f"    {kind}_temp_path {work}/{kind};"
                           for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    listen = "\n".join(f"        listen {a}:{{port}};"
                       for a in (lab.addr("server"), f"[{lab.addr('server', v6=True)}]"))
    conf = work / "nginx.conf"
    conf.write_text(f"""\
daemon off;
master_process off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log info;
events {{ worker_connections 128; }}
http {{
    access_log {work}/access.log;
{temp_paths}
    server {{
{listen.format(port=NGINX_PORT)}
        keepalive_timeout 2s 2s;
        location / {{ default_type text/plain; return 200 "hello from nginx\\n"; }}
    }}
    server {{
{listen.format(port=NGINX_CLOSE_PORT)}
        keepalive_timeout 0;
        location / {{ default_type text/plain; return 200 "hello, and goodbye\\n"; }}
    }}
}}
""")
    argv = ["nginx", "-p", str(work), "-e", str(work / "error.log"), "-c", str(conf)]
    try:
        with lab.process("server", argv, name="nginx", log=work / "nginx.log"):
            lab.wait_listening("server", NGINX_PORT)
            lab.wait_listening("server", NGINX_CLOSE_PORT)
            yield
    except LabError as exc:
        pytest.fail(f"nginx in the lab: {exc}")


def _url(lab: Lab, port: int, v6: bool = False) -> str:
    host = f"[{lab.addr('server', v6=True)}]" if v6 else lab.addr("server")
    return f"http://{host}:{port}/health"


def _assert_two_seconds(r: dict[str, Any]) -> None:
    v = r["value"]
    assert v["timeout_s"] is not None and abs(v["timeout_s"] - 2.0) <= 1.0, r["summary"]
    low, high = v["timeout_range_s"]
    assert high - low <= 1.0 + 1e-9, (v["timeout_range_s"], v["connections"])
    conns = v["connections"]
    alive = [c for c in conns if c["outcome"] == "alive"]
    closed = [c for c in conns if c["outcome"] == "closed"]
    assert alive and closed, conns
    # alive means: the second request was answered on the very same connection
    assert all(f"local port {c['local_port']}" in c["reuse"] for c in alive)
    assert all(c["idle_s"] <= 2.1 for c in alive) and all(c["closed_by"] == "FIN" for c in closed)
    assert all(c["closed_after_s"] is not None and abs(c["closed_after_s"] - 2.0) <= 0.5 for c in closed)


@pytest.mark.lab
def test_keepalive_client_pool_keeps_connections_longer(lab: Lab, nginx: None) -> None:
    r = run_tui(lab, "probe", "keepalive", _url(lab, NGINX_PORT), "--client-idle", "60", "--json")
    assert r["id"] == "keepalive" and r["status"] == "fail", r["summary"]
    _assert_two_seconds(r)
    assert r["value"]["keep_alive_timeout_header_s"] == 2 and r["value"]["server"].startswith("nginx/")
    assert "60s" in r["summary"]


@pytest.mark.lab
def test_keepalive_client_pool_gives_up_first_v6_unprivileged(lab: Lab, nginx: None) -> None:
    r = run_tui(lab, "probe", "keepalive", _url(lab, NGINX_PORT, v6=True), "--client-idle", "1", "--json",
            nobody=True)
    assert r["status"] == "ok", r["summary"]
    _assert_two_seconds(r)


@pytest.mark.lab
def test_keepalive_python_server_without_header(lab: Lab, tmp_path: Path) -> None:
    args = ["serve", "--host", lab.addr("server"), "--port", str(AGENT_PORT), "--idle", "2",
            "--lifetime", "60"]
    with lab.agent("server", args, name="serve-idle-2", log=tmp_path / "serve.log"):
        r = run_tui(lab, "probe", "keepalive", _url(lab, AGENT_PORT), "--max-idle", "8", "--json")
    assert r["status"] == "info", r["summary"]  # no client idle given: the number and the advice
    _assert_two_seconds(r)
    assert r["value"]["keep_alive_header"] is None
    assert "before 2." in r["decision"]


@pytest.fixture
def forgetful_router(lab: Lab) -> Iterator[None]:
    """The router's conntrack forgets an idle TCP flow after 2 s and drops what follows (INVALID),
    like a NAT or firewall with a short idle timeout: no FIN, no RST, the reuse just vanishes."""
    keys = {"net.netfilter.nf_conntrack_tcp_timeout_established": "2",
            "net.netfilter.nf_conntrack_tcp_loose": "0"}
    old = {k: lab.run("router", ["sysctl", "-n", k]).stdout.strip() for k in keys}
    lab.nft("router", """
table inet probes_forgetful {
    chain forward {
        type filter hook forward priority 0; policy accept;
        ct state invalid drop
    }
}
""")
    try:
        for k, v in keys.items():
            assert lab.sysctl("router", k, v) == v
        yield
    finally:
        lab.nft_delete_table("router", "inet", "probes_forgetful")
        for k, v in old.items():
            lab.sysctl("router", k, v)


@pytest.mark.lab
def test_keepalive_silent_drop_on_the_path(lab: Lab, tmp_path: Path, forgetful_router: None) -> None:
    args = ["serve", "--host", lab.addr("server"), "--port", str(AGENT_PORT + 2), "--idle", "30",
            "--lifetime", "60"]
    with lab.agent("server", args, name="serve-idle-30", log=tmp_path / "serve.log"):
        r = run_tui(lab, "probe", "keepalive", _url(lab, AGENT_PORT + 2), "--client-idle", "60",
                    "--max-idle", "5", "--json")
    v = r["value"]
    assert r["status"] == "fail" and "die silently" in r["summary"], r["summary"]
    assert v["closed_by"] == "silent" and v["timeout_s"] is None
    low, high = v["timeout_range_s"]
    assert 1.0 <= low < high <= 3.0 and high - low <= 1.0, v["timeout_range_s"]
    conns = v["connections"]
    assert not any(c["outcome"] == "closed" for c in conns)  # the server never closed anything
    assert any(c["outcome"] == "dead" and c["idle_s"] == high for c in conns)
    assert any(c["outcome"] == "alive" and c["idle_s"] == low for c in conns)


@pytest.mark.lab
def test_keepalive_in_a_check_run(lab: Lab, nginx: None) -> None:
    doc = run_tui(lab, "check", "--only", "keepalive", "--url", _url(lab, NGINX_PORT), "--client-idle", "60",
              "--max-idle", "5", "--json")
    (r,) = doc["results"]
    assert r["id"] == "keepalive" and r["status"] == "fail", r["summary"]
    _assert_two_seconds(r)


@pytest.mark.lab
def test_keepalive_server_without_keepalive(lab: Lab, nginx: None) -> None:
    r = run_tui(lab, "probe", "keepalive", _url(lab, NGINX_CLOSE_PORT), "--client-idle", "60", "--json")
    assert r["status"] == "ok" and "closes every connection" in r["summary"], r["summary"]
    assert r["value"]["timeout_s"] is None
    assert all(c["outcome"] == "no-keepalive" for c in r["value"]["connections"])


@pytest.mark.lab
def test_keepalive_refused(lab: Lab) -> None:
    r = run_tui(lab, "probe", "keepalive", _url(lab, 9), "--json")
    assert r["status"] == "warn" and "refused" in r["summary"].lower(), r["summary"]
    assert "RST" in r["meaning"]

