"""conntrack, conntrack-invalid-trap and nft-rules: parsers on captured output, then the real thing.

Unit tests judge fixtures (tests/fixtures/netfilter, see its README). Lab tests build the
client — router — proxy — server namespaces once for this module, create each condition for real
(a conntrack table filled past 95 %, out-of-window segments through the router, masquerade
without an INVALID drop, a tcp-reset reject rule) and run the checks inside the namespace the
way a user would: ``python -m tui check --only ID --json``.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.lab.netlab import Lab, Proc, parse_result
from tests.lab.session import lab_unavailable
from tests.unprivileged import nobody_python
from tui.checks import Context, conntrack, conntrack_trap, nft_rules

FIX = Path(__file__).resolve().parent / "fixtures" / "netfilter"
PY = sys.executable
NF = "/proc/sys/net/netfilter"
MAX_FILL = 2_000_000  # entries: ~0.6 GB of kernel memory and ~15 s; beyond that we do not fill

# ---- unit tests on captured output -----------------------------------------------------------


def test_proc_stat_parser_sums_cpu_rows() -> None:
    totals, cpus = conntrack.parse_proc_stat((FIX / "proc_stat_table_full.txt").read_text())
    assert cpus == 2
    assert totals["entries"] == 0x3FFFF  # the table size, not summed over CPUs
    assert totals["early_drop"] == 0x1F984 + 0x1C9D7 == 246619
    assert totals["invalid"] == totals["drop"] == totals["insert_failed"] == 0


def test_conntrack_S_parser_sums_cpus() -> None:
    totals, cpus = conntrack.parse_conntrack_S((FIX / "conntrack_S_table_full.txt").read_text())
    assert cpus == 2
    assert totals["early_drop"] == 130022 + 117207
    assert totals["invalid"] == 0


@pytest.mark.parametrize("count, status", [(100, "ok"), (209_714, "ok"), (209_716, "warn"),
                                           (249_036, "warn"), (249_037, "fail"), (262_144, "fail")])
def test_conntrack_fill_thresholds(count: int, status: str) -> None:
    zero = dict.fromkeys(conntrack.KEYS, 0)
    r = conntrack.evaluate(count, 262_144, zero, dict(zero), 2, 1.0, "procfs", [])
    assert r.status == status, r.summary
    assert f"{count}/262144" in r.summary


@pytest.mark.parametrize("key, status", [("invalid", "warn"), ("drop", "fail"),
                                         ("early_drop", "fail"), ("insert_failed", "fail")])
def test_conntrack_rising_counters(key: str, status: str) -> None:
    first = dict.fromkeys(conntrack.KEYS, 5)
    second = dict(first, **{key: 12})
    r = conntrack.evaluate(10, 262_144, first, second, 2, 1.0, "netlink", [])
    assert r.status == status
    assert r.value["delta"][key] == 7
    assert f"{key} +7" in r.summary
    if key == "invalid":
        assert "conntrack-invalid-trap" in r.decision


def test_no_conntrack_here_is_skipped_with_reason(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    """A container without /proc/sys/net/netfilter (simulated by pointing at an absent dir)."""
    monkeypatch.setattr(conntrack, "NF", str(tmp_path / "netfilter"))
    monkeypatch.setattr(conntrack_trap, "NF", str(tmp_path / "netfilter"))
    ct = conntrack.run(Context())
    assert ct.status == "skipped" and "does not exist" in ct.summary
    assert "lsmod | grep nf_conntrack" in ct.command and "conntrack -S" in ct.command
    trap = conntrack_trap.run(Context())
    assert trap.status == "skipped" and "no connection tracking" in trap.summary


def _mixed() -> nft_rules.Ruleset:
    return nft_rules.parse_nft_json((FIX / "nft_mixed.json").read_text())


def test_nft_json_reset_rules_and_limits() -> None:
    r = nft_rules.evaluate(_mixed(), "10.1.2.3", 443)
    assert r.status == "warn"
    rules = {e["handle"]: e for e in r.value["rules"]}
    assert sorted(rules) == [2, 3, 7, 9, 13, 14]  # ip6 f6 has handles 2 and 3
    h7 = rules[7]
    assert h7["match"] == "tcp dport 443 ct state new"
    assert (h7["family"], h7["table"], h7["chain"], h7["hook"]) == ("inet", "filter", "input", "input")
    assert "limit rate 50/second accept" in h7["limited_accept_before"]
    assert h7["counter_packets"] == 0
    assert rules[13]["rate_limit"] == "limit rate over 10/minute"
    assert rules[13]["limited_accept_before"] is None  # another match: not its limit
    assert rules[9]["match"] == "ip saddr 10.0.0.0/8 tcp dport { 25, 587 }"
    assert "tcp flags & (syn|ack) == syn" in rules[14]["match"]
    # The ip6 table cannot see an IPv4 peer; the inet rules can.
    assert rules[2]["could_match_peer"] is False and rules[7]["could_match_peer"] is True
    # Plain reject on TCP is ICMP, listed apart.
    answers = sorted(x["answers"] for x in r.value["icmp_rejects_on_tcp"])
    assert answers == ["icmpv6 port-unreachable", "icmpx admin-prohibited", "icmpx port-unreachable"]
    assert r.value["nat"] == {"masquerade": 1, "snat": 1, "dnat": 1}


def test_nft_json_invalid_handling() -> None:
    handling = {h["chain"]: h for h in nft_rules.invalid_handling(_mixed())}
    assert handling["inet filter input"]["invalid"] == "drop"
    assert handling["inet filter forward"]["invalid"] == "drop"  # via the ct state vmap
    assert "vmap" in handling["inet filter forward"]["rule"]
    assert handling["ip6 f6 i"]["invalid"] == "none (policy accept)"


def test_could_match_follows_the_hook() -> None:
    rs = _mixed()
    rule = next(r for r in rs.rules() if r.handle == 9)  # ip saddr 10.0.0.0/8 tcp dport {25,587}
    assert nft_rules.could_match(rule, "10.1.2.3", 40000, "input") is True  # peer = the source
    assert nft_rules.could_match(rule, "192.0.2.1", 40000, "input") is False
    assert nft_rules.could_match(rule, "192.0.2.1", 25, "output") is True  # peer = destination
    assert nft_rules.could_match(rule, "192.0.2.1", 26, "output") is False  # dport = peer's port
    assert nft_rules.could_match(rule, "2001:db8::1", 25, "input") is False  # ip saddr: IPv4 only
    assert nft_rules.could_match(rule, None, None, "input") is None
    neg = next(r for r in rs.rules() if r.handle == 13)  # tcp sport != 22
    assert nft_rules.could_match(neg, None, 22, "input") is False
    assert nft_rules.could_match(neg, None, 23, "input") is True


def test_trap_on_the_lab_router_rulesets() -> None:
    exposed = nft_rules.parse_nft_json((FIX / "nft_lab_router_masquerade.json").read_text())
    r = conntrack_trap.evaluate(0, exposed)
    assert r.status == "fail"
    assert r.value["exposed_source_nat"] == ["ip", "ip6"]  # inet masquerade: both families
    assert "nft add rule inet filter input ct state invalid drop" in r.value["fix"]
    assert conntrack_trap.SYSCTL_FIX in r.value["fix"]
    assert "not de-NATed" in r.meaning
    fixed = nft_rules.parse_nft_json((FIX / "nft_lab_router_masquerade_input_drop.json").read_text())
    assert conntrack_trap.evaluate(0, fixed).status == "ok"
    assert conntrack_trap.evaluate(1, exposed).status == "ok"
    skipped = conntrack_trap.evaluate(0, None, "nft: permission denied (needs root)",
                                      "net.netfilter.nf_conntrack_tcp_be_liberal = 0")
    assert skipped.status == "skipped"
    assert skipped.evidence[0] == "net.netfilter.nf_conntrack_tcp_be_liberal = 0"
    assert conntrack_trap.evaluate(1, None, "nft: permission denied").status == "ok"


def test_iptables_save_docker_host() -> None:
    rs = nft_rules.parse_iptables_save((FIX / "iptables_save_docker.txt").read_text(), "ip")
    trap = conntrack_trap.evaluate(0, rs)
    assert trap.status == "fail"
    assert trap.value["nat"]["source_nat"] == 2 and trap.value["nat"]["destination_nat"] == 1
    assert "iptables -I INPUT -m conntrack --ctstate INVALID -j DROP" in trap.value["fix"]
    rules = nft_rules.evaluate(rs, "192.168.50.7", 51000)
    assert rules.status == "warn"
    by_match = {e["match"]: e for e in rules.value["rules"]}
    first = by_match["-p tcp --dport 443 --ctstate NEW"]
    assert "--limit 50/sec" in first["limited_accept_before"]
    multi = by_match["-s 192.168.50.0/24 -p tcp --dports 25,587,1000:2000"]
    assert multi["could_match_peer"] is True
    assert nft_rules.evaluate(rs, "10.9.9.9", 51000).value["rules"][1]["could_match_peer"] is False
    assert [x["answers"] for x in rules.value["icmp_rejects_on_tcp"]] == ["icmp-port-unreachable"]
    fixed = nft_rules.parse_iptables_save(
        (FIX / "iptables_save_docker_invalid_drop.txt").read_text(), "ip")
    assert conntrack_trap.evaluate(0, fixed).status == "ok"
    handling = {h["chain"]: h for h in nft_rules.invalid_handling(fixed)}
    assert handling["ip filter FORWARD"]["invalid"] == "drop"  # found through the DOCKER-USER jump


def test_ip6tables_save_with_counters() -> None:
    rs = nft_rules.parse_iptables_save((FIX / "ip6tables_save_counters.txt").read_text(), "ip6")
    r = nft_rules.evaluate(rs, "2001:db8:9::5", None)
    assert r.status == "warn"
    (rule,) = r.value["rules"]
    assert rule["counter_packets"] == 31
    assert "db: app subnet only" in rule["rule"]
    assert nft_rules.evaluate(rs, "10.0.0.1", None).status == "info"  # an ip6 table, IPv4 peer
    handling = {h["chain"]: h for h in nft_rules.invalid_handling(rs)}
    assert handling["ip6 filter INPUT"]["invalid"] == "none (policy drop)"


def _stand_in(bindir: Path, name: str, body: str) -> None:
    path = bindir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@pytest.mark.parametrize("nft", ["missing", "broken"])
def test_iptables_fallback_plumbing(nft: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """iptables is not installed on the development machine: stand-in binaries print the fixture,
    to exercise the fallback (nft missing, or nft failing for a reason other than permissions)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    _stand_in(bindir, "iptables-save", f"/bin/cat {FIX / 'iptables_save_docker.txt'}")
    if nft == "broken":
        _stand_in(bindir, "nft", "echo 'Error: Could not process rule: Protocol not supported' >&2; exit 1")
    monkeypatch.setenv("PATH", str(bindir))
    r = nft_rules.run(Context(peer_host="192.168.50.7", peer_port=51000, window=0))
    assert r.status == "warn" and r.value["source"] == "iptables-save"
    assert len(r.value["rules"]) == 2
    assert any(("nft failed" if nft == "broken" else "nft is not installed") in line
               for line in r.evidence)
    trap = conntrack_trap.evaluate(0, nft_rules.load_ruleset())
    assert trap.status == "fail" and trap.value["fix"][0].startswith("iptables -I INPUT")


# ---- lab -------------------------------------------------------------------------------------

# Any ct expression makes the kernel track connections in that namespace.
CT_ON = "chain pre {\n type filter hook prerouting priority 0;\n ct state new counter\n}"

# One-packet UDP flows: a new socket (new source port) every 65535 destination ports.
FILL = r"""
import socket, sys, time
n, dst, secs = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
t0 = time.monotonic(); sent = 0; s = None; port = 65536
while sent < n and time.monotonic() - t0 < secs:
    if port > 65535:
        if s is not None:
            s.close()
        s = socket.socket(fam, socket.SOCK_DGRAM); s.setblocking(False); port = 1
    try:
        s.sendto(b"x", (dst, port)); sent += 1; port += 1
    except BlockingIOError:
        time.sleep(0.0005)
    if sent == 1000:
        print("STARTED", flush=True)
print("SENT", sent, flush=True)
"""

# On the server: once the client's request is ACKed, send segments 10 MB beyond the window of
# that (established) flow, COUNT times, INTERVAL apart.
FORGE = r"""
import socket, sys, time
from scapy.layers.inet import IP, TCP
from scapy.sendrecv import sniff
iface, server = sys.argv[1], sys.argv[2]
port, count, interval = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
st = {}
def seen(p):
    if TCP not in p:
        return False
    ip, tcp = p[IP], p[TCP]
    if ip.dst == server and tcp.dport == port and len(tcp.payload):
        st["next"] = tcp.seq + len(tcp.payload)
        return False
    if ip.src == server and tcp.sport == port and tcp.ack == st.get("next"):
        st.update(dst=ip.dst, dport=tcp.dport, seq=tcp.seq, ack=tcp.ack, win=tcp.window)
        return True
    return False
sniff(iface=iface, filter=f"tcp and host {server} and port {port}", stop_filter=seen, timeout=10,
      store=False, started_callback=lambda: print("READY", flush=True))
if "seq" not in st:
    print("NOFLOW", flush=True); sys.exit(1)
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for i in range(count):
    seg = IP(src=server, dst=st["dst"], ttl=64, id=0) / TCP(
        sport=port, dport=st["dport"], flags="PA", seq=(st["seq"] + 10_000_000) % 2**32,
        ack=st["ack"], window=st["win"]) / (b"x" * 64)
    raw.sendto(bytes(seg), (st["dst"], 0))
    print("SENT", i + 1, flush=True)
    time.sleep(interval)
"""

CONNECTS = r"""
import json, socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = []
for _ in range(n):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.settimeout(2)
    try:
        s.connect((host, port)); out.append("ok")
    except ConnectionRefusedError:
        out.append("refused")
    except OSError as e:
        out.append(type(e).__name__)
    s.close()
print(json.dumps(out))
"""


def checks(lab: Lab, role: str, ids: list[str], *extra: str, unprivileged: bool = False,
           window: str = "1") -> dict[str, dict[str, Any]]:
    """`python -m tui check --only IDS --json` inside the namespace; results by id."""
    tail = ["-m", "tui", "check", "--only", ",".join(ids), "--json", "--window", window, *extra]
    argv = [*nobody_python(), *tail] if unprivileged else [PY, *tail]
    proc = lab.run(role, argv, check=False, timeout=30)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "rst-triage/checks/1"
    results = {r["id"]: r for r in doc["results"]}
    assert sorted(results) == sorted(ids)
    for r in results.values():
        assert r["status"] != "error", r
    return results


def ct_count(lab: Lab, role: str = "router") -> int:
    return int(lab.run(role, ["cat", f"{NF}/nf_conntrack_count"]).stdout)


def flush_conntrack(lab: Lab) -> None:
    lab.run("router", ["conntrack", "-F"], check=False)


def host_ct_max() -> int:
    try:
        return int(Path(f"{NF}/nf_conntrack_max").read_text())
    except OSError as exc:
        lab_unavailable(f"no conntrack on this host: {exc}")


def need_scapy() -> None:
    import importlib.util

    if importlib.util.find_spec("scapy") is None:
        lab_unavailable("scapy is not installed")


# ---- conntrack -------------------------------------------------------------------------------


@pytest.mark.lab
def test_lab_conntrack_clean_router_is_ok(lab: Lab) -> None:
    with lab.nft_table("router", "inet", "rsttest_ct", CT_ON):
        lab.run("client", ["ping", "-c", "2", "-i", "0.2", "-W", "1", "-n", lab.addr("server")])
        res = checks(lab, "router", ["conntrack"])["conntrack"]
    assert res["status"] == "ok", res
    v = res["value"]
    assert v["max"] == host_ct_max()
    assert 1 <= v["count"] < 0.8 * v["max"]  # the ping's entry: conntrack is really on here
    assert v["source"] == "netlink"
    assert v["delta"] == dict.fromkeys(conntrack.KEYS, 0)
    assert f"{v['count']}/{v['max']} entries" in res["summary"]


@pytest.mark.lab
def test_lab_conntrack_table_full_fails(lab: Lab) -> None:
    cmax = host_ct_max()
    target = int(cmax * 0.97) + 1
    if target > MAX_FILL:
        lab_unavailable(f"nf_conntrack_max is {cmax}: filling {target} entries needs more than "
                    f"{MAX_FILL} flows (memory and time); the threshold logic is unit-tested")
    with lab.nft_table("router", "inet", "rsttest_ct", CT_ON):
        try:
            flush_conntrack(lab)
            need = target - ct_count(lab)
            secs = 10 + need / 50_000
            out = lab.run("client", [PY, "-c", FILL, str(need), lab.addr("router"), str(secs)],
                          timeout=secs + 10).stdout
            res = checks(lab, "router", ["conntrack"])["conntrack"]
        finally:
            flush_conntrack(lab)
    assert f"SENT {need}" in out, out
    assert res["status"] == "fail", res
    v = res["value"]
    assert v["max"] == cmax
    assert v["count"] >= 0.95 * cmax and v["percent"] >= 95.0
    assert f"{v['count']}/{cmax} entries" in res["summary"] and "% full" in res["summary"]
    assert "nf_conntrack_max" in res["decision"]


@pytest.mark.lab
def test_lab_conntrack_early_drop_rising_fails(lab: Lab, tmp_path: Path) -> None:
    cmax = host_ct_max()
    if cmax > MAX_FILL:
        lab_unavailable(f"nf_conntrack_max is {cmax}: too large to overflow in a test")
    with lab.nft_table("router", "inet", "rsttest_ct", CT_ON):
        sender: Proc | None = None
        try:
            sender = lab.spawn("client", [PY, "-c", FILL, str(cmax * 4), lab.addr("router"), "15"],
                               name="overfill", log=tmp_path / "overfill.log")
            deadline = time.monotonic() + 20
            while ct_count(lab) < cmax - 100 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert ct_count(lab) >= cmax - 100, sender.output()
            res = checks(lab, "router", ["conntrack"])["conntrack"]  # the sender keeps sending
        finally:
            if sender is not None:
                lab.stop(sender)
            flush_conntrack(lab)
    assert res["status"] == "fail", res
    assert res["value"]["delta"]["early_drop"] > 0
    assert "early_drop +" in res["summary"]


@pytest.mark.lab
def test_lab_conntrack_invalid_rising_warns(lab: Lab, tmp_path: Path) -> None:
    need_scapy()
    port = 8101
    server = lab.addr("server")
    with lab.nft_table("router", "inet", "rsttest_ct", CT_ON), \
            lab.agent("server", ["serve", "--host", server, "--port", str(port), "--mode", "hold"],
                      name="server", log=tmp_path / "server.log"):
        forger = lab.spawn("server", [PY, "-c", FORGE, lab.iface("server", "proxy"), server,
                                      str(port), "80", "0.1"], name="forger",
                           log=tmp_path / "forger.log")
        client: Proc | None = None
        try:
            forger.wait_for("^READY", 10)
            client = lab.spawn_agent("client", ["request", "--host", server, "--port", str(port),
                                                "--read", "0", "--then", "hold"],
                                     name="client", log=tmp_path / "client.log")
            forger.wait_for("^SENT 1$", 10)
            res = checks(lab, "router", ["conntrack"])["conntrack"]  # segments keep coming
        finally:
            lab.stop(forger)
            if client is not None:
                lab.stop(client)
    assert res["status"] == "warn", res
    d = res["value"]["delta"]
    assert d["invalid"] >= 1
    assert d["drop"] == d["early_drop"] == d["insert_failed"] == 0
    assert f"invalid +{d['invalid']}" in res["summary"]
    assert "out" in res["meaning"] and "window" in res["meaning"]


# ---- conntrack-invalid-trap ------------------------------------------------------------------


def masquerade(lab: Lab) -> str:
    oif = lab.iface("router", "proxy")
    return (f"chain post {{\n type nat hook postrouting priority srcnat;\n"
            f" oifname \"{oif}\" masquerade\n}}")


def router_resets(lab: Lab, tmp_path: Path, port: int) -> int:
    """Out-of-window segment from the server on a masqueraded flow: RSTs the router sends."""
    server, nat_addr = lab.addr("server"), lab.addr("router", toward="proxy")
    oif = lab.iface("router", "proxy")
    logs = tmp_path / f"p{port}"
    with lab.agent("server", ["serve", "--host", server, "--port", str(port), "--mode", "hold"],
                   name=f"server{port}", log=logs / "server.log"), \
            lab.agent("server", ["out-of-window", "--iface", lab.iface("server", "proxy"),
                                 "--server", server, "--port", str(port)],
                      name=f"forger{port}", log=logs / "forger.log") as forger, \
            lab.process("router", ["tcpdump", "-i", oif, "-l", "-nn", f"src host {nat_addr} and "
                                   f"tcp port {port} and tcp[tcpflags] & tcp-rst != 0"],
                        name=f"tcpdump{port}", log=logs / "tcpdump.log",
                        ready="listening on") as tcpdump:
        client = lab.spawn_agent("client", ["request", "--host", server, "--port", str(port),
                                            "--read", "0", "--then", "hold"],
                                 name=f"client{port}", log=logs / "client.log")
        try:
            forger.wait(10)
            assert parse_result(forger).get("sent"), forger.output()
            time.sleep(0.5)  # the router answers at once; give the line time to be printed
        finally:
            lab.stop(tcpdump)
            lab.stop(client)
        return tcpdump.output().count("Flags [R")


@pytest.mark.lab
def test_lab_trap_masquerade_exposed_forward_drop_useless_input_drop_fixes(
        lab: Lab, tmp_path: Path) -> None:
    need_scapy()
    trap = "conntrack-invalid-trap"
    assert lab.run("router", ["sysctl", "-n", "net.netfilter.nf_conntrack_tcp_be_liberal"]
                   ).stdout.strip() == "0"
    with lab.nft_table("router", "ip", "rsttest_nat", masquerade(lab)):
        exposed = checks(lab, "router", [trap])[trap]
        resets_exposed = router_resets(lab, tmp_path, 8201)
        with lab.nft_table("router", "inet", "rsttest_fwd",
                       "chain forward {\n type filter hook forward priority 0;\n ct state invalid drop\n}"):
            fwd_only = checks(lab, "router", [trap])[trap]
            resets_fwd_only = router_resets(lab, tmp_path, 8202)
        with lab.nft_table("router", "inet", "rsttest_in",
                       "chain input {\n type filter hook input priority 0; policy accept;\n"
                       " tcp dport 22 accept\n}"):
            adapted = checks(lab, "router", [trap])[trap]
        with lab.nft_table("router", "inet", "rsttest_in",
                       "chain input {\n type filter hook input priority 0; policy accept;\n"
                       " ct state invalid drop\n}"):
            fixed = checks(lab, "router", [trap])[trap]
            resets_fixed = router_resets(lab, tmp_path, 8203)

    assert exposed["status"] == "fail", exposed
    assert exposed["value"]["exposed_source_nat"] == ["ip"]
    assert exposed["value"]["be_liberal"] == 0
    assert "nft add rule inet filter input ct state invalid drop" in exposed["value"]["fix"]
    assert "sysctl -w net.netfilter.nf_conntrack_tcp_be_liberal=1" in exposed["decision"]
    assert any("masquerade" in line for line in exposed["evidence"])
    assert resets_exposed >= 1  # the trap is real: the router answered the segment with a RST

    assert fwd_only["status"] == "fail", fwd_only
    assert "forward chain does not help" in fwd_only["meaning"]
    assert resets_fwd_only >= 1  # and really, the forward drop did not help

    assert adapted["status"] == "fail"  # the fix goes into the input chain that exists
    assert adapted["value"]["fix"][0] == "nft insert rule inet rsttest_in input ct state invalid drop"

    assert fixed["status"] == "ok", fixed
    assert fixed["value"]["invalid_drop_input"] == ["ip"]
    assert resets_fixed == 0


@pytest.mark.lab
def test_lab_trap_ipv6_masquerade_needs_a_drop_that_covers_ipv6(lab: Lab) -> None:
    trap = "conntrack-invalid-trap"
    with lab.nft_table("router", "ip6", "rsttest_nat6", masquerade(lab)), \
            lab.nft_table("router", "ip", "rsttest_in4",
                      "chain input {\n type filter hook input priority 0;\n ct state invalid drop\n}"):
        v4_drop_only = checks(lab, "router", [trap])[trap]
        with lab.nft_table("router", "inet", "rsttest_in",
                       "chain input {\n type filter hook input priority 0;\n ct state invalid drop\n}"):
            both = checks(lab, "router", [trap])[trap]
    assert v4_drop_only["status"] == "fail"
    assert v4_drop_only["value"]["exposed_source_nat"] == ["ip6"]
    assert "IPv6" in v4_drop_only["summary"]
    assert both["status"] == "ok", both


@pytest.mark.lab
def test_lab_trap_be_liberal_and_no_nat_are_ok(lab: Lab) -> None:
    trap = "conntrack-invalid-trap"
    with lab.nft_table("router", "ip", "rsttest_nat", masquerade(lab)), \
            lab.sysctl_set("router", "net.netfilter.nf_conntrack_tcp_be_liberal", "1") as now:
        assert now == "1"  # per namespace: it can be written here (read back)
        liberal = checks(lab, "router", [trap])[trap]
    no_nat = checks(lab, "client", [trap])[trap]
    assert liberal["status"] == "ok", liberal
    assert liberal["value"]["be_liberal"] == 1 and "be_liberal = 1" in liberal["summary"]
    assert no_nat["status"] == "ok", no_nat
    assert "no NAT" in no_nat["summary"]


# ---- nft-rules -------------------------------------------------------------------------------


@pytest.mark.lab
def test_lab_nft_reset_rule_flagged_with_its_match(lab: Lab, tmp_path: Path) -> None:
    port = 8443
    server, client = lab.addr("server"), lab.addr("client")
    body = ("chain input {\n type filter hook input priority 0; policy accept;\n"
            f" tcp dport {port} ct state new limit rate 2/second burst 2 packets accept\n"
            f" tcp dport {port} ct state new counter reject with tcp reset\n}}")
    with lab.nft_table("server", "inet", "rsttest_fw", body), \
            lab.agent("server", ["serve", "--host", server, "--port", str(port)],
                      name="server", log=tmp_path / "server.log"):
        outcomes = json.loads(lab.run("client", [PY, "-c", CONNECTS, server, str(port), "12"]).stdout)
        res = checks(lab, "server", ["nft-rules"], "--peer", f"{client}:40000")["nft-rules"]
    refused = outcomes.count("refused")
    assert outcomes.count("ok") >= 1 and refused >= 1, outcomes  # the limit, then the resets
    assert res["status"] == "warn", res
    (rule,) = res["value"]["rules"]
    assert rule["match"] == f"tcp dport {port} ct state new"
    assert (rule["family"], rule["table"], rule["chain"], rule["hook"]) == (
        "inet", "rsttest_fw", "input", "input")
    assert isinstance(rule["handle"], int)
    assert "limit rate 2/second burst 2 packets accept" in rule["limited_accept_before"]
    assert rule["counter_packets"] == refused  # one SYN per refused connect: this rule did it
    assert rule["could_match_peer"] is True
    assert any(line.startswith(f"RESET rule inet rsttest_fw input handle {rule['handle']}")
               for line in res["evidence"])


@pytest.mark.lab
def test_lab_nft_reset_rule_that_cannot_match_the_peer_is_info(lab: Lab) -> None:
    body = ("chain input {\n type filter hook input priority 0;\n"
            " ip saddr 10.201.9.0/24 tcp dport 8443 reject with tcp reset\n}")
    client4, client6 = lab.addr("client"), lab.addr("client", v6=True)
    with lab.nft_table("server", "inet", "rsttest_fw", body):
        other_net = checks(lab, "server", ["nft-rules"], "--peer", f"{client4}:40000")["nft-rules"]
        v6_peer = checks(lab, "server", ["nft-rules"], "--peer", f"[{client6}]:40000")["nft-rules"]
        inside = checks(lab, "server", ["nft-rules"], "--peer", "10.201.9.5:40000")["nft-rules"]
    assert other_net["status"] == "info", other_net
    assert other_net["value"]["rules"][0]["could_match_peer"] is False
    assert "0 can match" in other_net["summary"]
    assert v6_peer["status"] == "info", v6_peer
    assert inside["status"] == "warn", inside


@pytest.mark.lab
def test_lab_nft_plain_reject_is_icmp_not_a_reset(lab: Lab, tmp_path: Path) -> None:
    port = 8444
    server = lab.addr("server")
    body = f"chain input {{\n type filter hook input priority 0;\n tcp dport {port} reject\n}}"
    with lab.nft_table("server", "inet", "rsttest_fw", body):
        with lab.process("client", ["tcpdump", "-i", lab.iface("client", "router"), "-l", "-nn",
                                    f"host {server} and (icmp or tcp[tcpflags] & tcp-rst != 0)"],
                         name="tcpdump", log=tmp_path / "tcpdump.log", ready="listening on") as td:
            outcomes = json.loads(lab.run("client", [PY, "-c", CONNECTS, server, str(port), "1"]).stdout)
            time.sleep(0.3)  # let tcpdump print the answer
        res = checks(lab, "server", ["nft-rules"])["nft-rules"]
    assert outcomes == ["refused"]
    assert "ICMP" in td.output() and "Flags [R" not in td.output(), td.output()
    assert res["status"] == "info", res
    assert res["value"]["rules"] == []
    assert [x["answers"] for x in res["value"]["icmp_rejects_on_tcp"]] == ["icmpx port-unreachable"]


@pytest.mark.lab
def test_lab_nft_clean_namespace_is_ok(lab: Lab) -> None:
    res = checks(lab, "client", ["nft-rules"], "--peer", f"{lab.addr('server')}:443")["nft-rules"]
    assert res["status"] == "ok", res
    assert res["value"]["rules"] == [] and res["value"]["rules_total"] >= 1  # the egress guard
    assert "no rule answers with a TCP reset" in res["summary"]


# ---- unprivileged ----------------------------------------------------------------------------


@pytest.mark.lab
def test_lab_unprivileged_skips_with_reasons(lab: Lab) -> None:
    ids = ["conntrack", "conntrack-invalid-trap", "nft-rules"]
    with lab.nft_table("router", "ip", "rsttest_nat", masquerade(lab)):
        res = checks(lab, "router", ids, unprivileged=True)
    ct, trap, nft = res["conntrack"], res["conntrack-invalid-trap"], res["nft-rules"]
    # count/max and /proc/net/stat are world-readable: conntrack still works, from procfs.
    assert ct["status"] == "ok" and ct["value"]["source"] == "procfs", ct
    assert any("CAP_NET_ADMIN" in line for line in ct["evidence"])
    assert nft["status"] == "skipped" and "root" in nft["summary"], nft
    assert nft["command"].startswith("sudo nft")
    assert trap["status"] == "skipped" and "root" in trap["summary"], trap
    assert trap["evidence"][0] == "net.netfilter.nf_conntrack_tcp_be_liberal = 0"
