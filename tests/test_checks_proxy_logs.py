"""The proxy-logs check: nginx, HAProxy and Envoy lines sorted into who broke the connection.

Unit tests run the classifier over real lines (tests/fixtures/logs, written by nginx and
HAProxy in the lab; the Envoy lines follow Envoy's documented formats, see the README there).
The lab tests put real nginx and HAProxy in front of a slow server, an aborting server and a
client that aborts, then run ``python -m tui check --only proxy-logs --log FILE --json`` in the
proxy namespace on the logs they wrote and assert the class counts.
"""
from __future__ import annotations

import calendar
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from tui.checks import Context
from tui.checks import proxy_logs as pl

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "logs"
C, U, P = pl.CLIENT, pl.UPSTREAM, pl.PROXY

# Per fixture file, the class each line must get (None: not a broken connection).
EXPECTED: dict[str, list[Optional[str]]] = {
    "nginx-error.log": [
        None, None, None, None,  # startup notices
        P,  # upstream timed out (110) while reading response header from upstream
        None,  # client closed keepalive connection (normal)
        U,  # recv() failed (104) while reading response header from upstream
        U,  # upstream prematurely closed connection
        C,  # writev() failed (104) while sending to client
        C,  # client prematurely closed ... (104) while reading upstream: the client's reset
        C,  # client prematurely closed ... while sending request to upstream (the 499)
        U,  # connect() failed (111: Connection refused) while connecting to upstream
        None, None, None,  # shutdown
    ],
    "nginx-access.log": [P, U, U, None, None, C, U, P],  # 504 502 502 200 200 499 502 444
    "haproxy.log": [
        P,  # sH-- timeout server
        U,  # SH-- server aborted (SO_LINGER 0)
        U,  # SH-- server closed without answering
        C,  # CD-- client aborted mid-response (IPv6 client)
        P,  # sD (tcplog) timeout server
        U,  # SD (tcplog) server aborted
        U,  # SC (tcplog) connection refused
        U,  # SC-- refused, 503
        P,  # PR-- http-request deny
        None,  # ---- a normal request
    ],
    "haproxy-formats.log": [U] * 6,
    "envoy.log": [None, None, U, U, U, U, P, C, U, P, P, U],
}


def _lines(name: str) -> list[str]:
    return (FIXTURES / name).read_text().splitlines()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_real_line_gets_its_class(name: str) -> None:
    lines = _lines(name)
    assert len(lines) == len(EXPECTED[name]), "fixture and expectations out of step"
    got = [(pl.classify(line) or (None, ""))[0] for line in lines]
    for i, (line, want, have) in enumerate(zip(lines, EXPECTED[name], got), 1):
        assert have == want, f"{name}:{i}: {have} != {want}: {line}"


def test_haproxy_mapping_follows_the_documented_first_character() -> None:
    line = ('10.0.0.1:5000 [21/Nov/2026:17:53:49.624] fe be/up 0/0/0/-1/1001 504 198 - - {} '
            '1/1/0/0/0 0/0 "GET / HTTP/1.1"')
    want = {"CD--": C, "cD--": C, "CH--": C, "SH--": U, "SD--": U, "sH--": P, "sD--": P,
            "PR--": P, "RC--": P, "IR--": P, "KD--": P, "DD--": P, "----": None, "LR--": None}
    for state, cls in want.items():
        got = pl.classify(line.format(state))
        assert (got[0] if got else None) == cls, state
    # haproxy's own messages carry no termination state
    assert pl.classify("[WARNING]  (3438) : Server be/up is DOWN, reason: Layer4 timeout") is None
    # a retry count (+1) before the server connection counter still parses
    retried = ('10.0.0.1:5000 [21/Nov/2026:17:53:49.624] fe be/up 0/0/0/-1/3000 503 217 - - '
               'SC-- 1/1/0/0/+3 0/0 "GET / HTTP/1.1"')
    assert pl.classify(retried) == (U, "haproxy SC-- (server aborted or refused)")


def test_timestamps_of_every_format(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        clock = pl._Clock(time.time())
        at = calendar.timegm((2026, 11, 21, 17, 53, 53, 0, 0, 0))
        assert clock.parse(_lines("nginx-error.log")[4]) == at  # 2026/11/21 17:53:53 (local)
        assert clock.parse(_lines("nginx-access.log")[0]) == at  # [21/Nov/2026:17:53:53 +0000]
        assert clock.parse(_lines("haproxy.log")[0]) == pytest.approx(at - 4 + 0.624)
        envoy = _lines("envoy.log")
        assert clock.parse(envoy[3]) == pytest.approx(at - 12 + 0.2)  # ...T17:53:41.200Z
        assert clock.parse(envoy[2]) == pytest.approx(at - 12 + 0.207)  # [... 17:53:41.207]
        for line in _lines("haproxy-formats.log"):  # each carries haproxy's accept date
            assert at - 14 < (clock.parse(line) or 0) < at - 12
        assert clock.parse("2026-11-21T17:53:53+0100 host haproxy[1]: x") == at - 3600
        # Berlin is UTC+1 in November: local times shift, explicit offsets do not
        monkeypatch.setenv("TZ", "Europe/Berlin")
        time.tzset()
        if time.localtime(at).tm_gmtoff == 3600:
            clock = pl._Clock(time.time())
            assert clock.parse(_lines("nginx-error.log")[4]) == at - 3600
            assert clock.parse(_lines("nginx-access.log")[0]) == at
    finally:
        monkeypatch.undo()
        time.tzset()


def _copy_fixtures(dst: Path, names: list[str]) -> list[str]:
    paths = []
    for name in names:
        shutil.copy(FIXTURES / name, dst / name)
        paths.append(str(dst / name))
    return paths


def test_run_counts_samples_and_decision(tmp_path: Path) -> None:
    logs = _copy_fixtures(tmp_path, sorted(EXPECTED))
    result = pl.run(Context(logs=logs, since=0.0))
    want = {c: sum(v.count(c) for v in EXPECTED.values()) for c in pl.CLASSES}
    assert result.value["counts"] == want
    assert result.status == "warn"
    assert result.value["dominant"] == U  # 23 upstream lines vs 9 and 8
    assert "Go to the server" in result.decision
    for c in pl.CLASSES:
        assert 1 <= len(result.value["samples"][c]) <= pl.SAMPLES
    per_file = {s["source"]: s["counts"] for s in result.value["sources"]}
    assert per_file[logs[sorted(EXPECTED).index("haproxy.log")]] == {P: 3, U: 5, C: 1}
    assert "sudo grep" in result.command and "haproxy.log" in result.command
    json.dumps(result.to_json())


def test_window_excludes_older_lines(tmp_path: Path) -> None:
    (log,) = _copy_fixtures(tmp_path, ["nginx-error.log"])
    since = calendar.timegm((2026, 11, 21, 17, 53, 50, 0, 0, 0))
    old_tz = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    try:
        result = pl.run(Context(logs=[log], since=since))
    finally:
        if old_tz is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old_tz
        time.tzset()
    # in the window (>= 17:53:50): the timeout, the reset, the two client aborts of 17:53:53/54
    # and the refused connect of 17:55:19; the upstream FIN (17:53:49) and writev (17:53:31) not
    assert result.value["counts"] == {C: 2, U: 2, P: 1}


def test_dominant_client_aborts_point_at_the_client(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    line = '10.0.0.1 - - [{}] "GET / HTTP/1.1" {} 0 "-" "curl"\n'
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
    log.write_text(line.format(stamp, 499) * 5 + line.format(stamp, 502) + line.format(stamp, 200) * 20)
    result = pl.run(Context(logs=[str(log)]))  # default window: the last 15 minutes
    assert result.status == "warn"
    assert result.value["counts"] == {C: 5, U: 1, P: 0}
    assert result.value["dominant"] == C
    assert "client" in result.decision and "timeout" in result.decision


def test_nothing_relevant_is_ok(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
    log.write_text(f'10.0.0.1 - - [{stamp}] "GET / HTTP/1.1" 200 12 "-" "curl"\n' * 10)
    result = pl.run(Context(logs=[str(log)]))
    assert result.status == "ok", result.summary
    assert result.value["counts"] == {C: 0, U: 0, P: 0}


def test_stale_file_is_read_but_not_scanned(tmp_path: Path) -> None:
    (log,) = _copy_fixtures(tmp_path, ["haproxy.log"])
    os.utime(log, (time.time() - 7200, time.time() - 7200))
    result = pl.run(Context(logs=[log]))
    assert result.status == "ok"
    assert result.value["sources"][0]["status"] == "stale"


def test_huge_file_reads_only_the_tail(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
    ok_line = f'10.0.0.1 - - [{stamp}] "GET /{"a" * 80} HTTP/1.1" 200 12 "-" "curl"\n'
    with open(log, "w") as f:
        f.write(f'10.0.0.1 - - [{stamp}] "GET / HTTP/1.1" 502 0 "-" "curl"\n' * 10)  # beyond the tail
        f.write(ok_line * ((12 << 20) // len(ok_line)))
        f.write(f'10.0.0.1 - - [{stamp}] "GET / HTTP/1.1" 499 0 "-" "curl"\n' * 3)
    result = pl.run(Context(logs=[str(log)]))
    assert result.value["counts"] == {C: 3, U: 0, P: 0}
    (src,) = result.value["sources"]
    assert src["tail_only"] is True and src["bytes_read"] == pl.TAIL_BYTES
    # the brief's bound for this check (well under 1.5 s), on a 12 MiB file
    from tui import checks

    assert checks.run(pl.ID, Context(logs=[str(log)])).duration_s < 1.5


def test_missing_fifo_and_directory_never_hang_or_crash(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result = pl.run(Context(logs=[str(fifo), str(tmp_path), str(tmp_path / "nope.log")]))
    assert result.status == "skipped"
    text = "\n".join(result.evidence)
    assert "fifo: unreadable: not a regular file" in text
    assert "nope.log: missing: does not exist" in text


def test_journal_unit_never_crashes() -> None:
    result = pl.run(Context(units=["nginx.service", "--bad"]))
    srcs = {s["source"]: s for s in result.value["sources"]}
    assert srcs["journal:--bad"]["status"] == "unreadable"
    assert srcs["journal:nginx.service"]["status"] in ("read", "stale", "unreadable")
    assert result.status in ("ok", "warn", "skipped")


NOBODY_SNIPPET = """
import json, sys
from tui.checks import Context, proxy_logs
r = proxy_logs.run(Context(logs=sys.argv[1:], since=0.0))
print(json.dumps(r.to_json()))
"""


def _as_nobody(argv: list[str]) -> subprocess.CompletedProcess[str]:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        lab_unavailable("needs root and setpriv to run a command as nobody")
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv],
                          capture_output=True, text=True, timeout=30, cwd=REPO_ROOT,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, check=False)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory nobody can reach (pytest's tmp_path lives under a 0700 directory)."""
    d = Path(tempfile.mkdtemp(prefix="rst-triage-logs-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_unreadable_log_says_which_and_how(open_dir: Path) -> None:
    private = open_dir / "private"
    private.mkdir(mode=0o700)
    secret = private / "error.log"
    shutil.copy(FIXTURES / "nginx-error.log", secret)
    (readable,) = _copy_fixtures(open_dir, ["haproxy.log"])
    os.chmod(readable, 0o644)
    proc = _as_nobody([sys.executable, "-c", NOBODY_SNIPPET, str(secret)])
    assert proc.returncode == 0, proc.stderr
    only = json.loads(proc.stdout)
    assert only["status"] == "skipped"
    assert f"{secret}: unreadable: permission denied" in "\n".join(only["evidence"])
    assert f"sudo tail -n 200 {secret}" in "\n".join(only["evidence"])
    proc = _as_nobody([sys.executable, "-c", NOBODY_SNIPPET, str(secret), readable])
    both = json.loads(proc.stdout)
    assert both["status"] == "warn"
    assert both["value"]["counts"] == {P: 3, U: 5, C: 1}
    assert any("permission denied" in e for e in both["evidence"])


# ---- lab: real nginx and HAProxy, real resets ------------------------------------------------
from tests.lab.netlab import Lab  # noqa: E402
from tests.lab.session import lab_unavailable  # noqa: E402

SLOW_PORT, ABORT_PORT, BIG_PORT, OK_PORT = 9301, 9302, 9303, 9304
HAPROXY_PORT = 8300
NGINX_PORTS = {"timeout": 8311, "upstream": 8312, "client": 8313, "giveup": 8314, "clean": 8315}


@pytest.fixture(scope="module")
def lab(lab: Lab) -> Lab:
    """The module's lab (tests/conftest.py), for which haproxy and nginx must be installed."""
    for tool in ("haproxy", "nginx"):
        if shutil.which(tool) is None:
            lab_unavailable(f"{tool} is not installed")
    return lab


@contextlib.contextmanager
def _upstreams(lab: Lab, logs: Path) -> Iterator[None]:
    """The servers behind the proxies: slow (3 s), aborting (SO_LINGER 0), big body, plain."""
    server = lab.addr("server")
    with lab.agent("server", ["serve", "--host", server, "--port", str(SLOW_PORT), "--delay", "3"],
                   name="slow", log=logs / "slow.log"), \
            lab.agent("server", ["serve", "--host", server, "--port", str(ABORT_PORT), "--mode",
                                 "abort"], name="abort", log=logs / "abort.log"), \
            lab.agent("server", ["serve", "--host", server, "--port", str(BIG_PORT), "--body-size",
                                 str(4 << 20)], name="big", log=logs / "big.log"), \
            lab.agent("server", ["serve", "--host", server, "--port", str(OK_PORT)], name="ok",
                      log=logs / "ok.log"):
        yield


def _haproxy_cfg(lab: Lab, upstream_port: int) -> str:
    return f"""\
global
    log stdout format raw local0 info
    maxconn 100
defaults
    mode http
    log global
    option httplog
    timeout connect 1s
    timeout client 5s
    timeout server 1s
frontend fe_lab
    bind {lab.addr("proxy", toward="router")}:{HAPROXY_PORT}
    bind [{lab.addr("proxy", v6=True, toward="router")}]:{HAPROXY_PORT}
    default_backend be_lab
backend be_lab
    server upstream {lab.addr("server")}:{upstream_port}
"""


def _request(lab: Lab, logs: Path, name: str, port: int, *extra: str, v6: bool = False) -> dict:
    host = lab.addr("proxy", v6=v6, toward="router")
    return lab.run_agent("client", ["request", "--host", host, "--port", str(port), "--timeout", "5",
                                    *extra], name=f"client-{name}", log=logs / f"client-{name}.log")


def _check(lab: Lab, *logs: Path) -> dict[str, Any]:
    """`rst-triage check --only proxy-logs --log FILE... --json` in the proxy namespace."""
    argv = [sys.executable, "-m", "tui", "check", "--only", "proxy-logs", "--json"]
    for log in logs:
        argv += ["--log", str(log)]
    proc = lab.run("proxy", argv, check=False, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    data = json.loads(proc.stdout)
    assert data["schema"] == "rst-triage/checks/1"
    (result,) = data["results"]
    assert result["id"] == "proxy-logs"
    return result


HAPROXY_CASES = {
    # case: (upstream port, client args, IPv6 client)
    "timeout": (SLOW_PORT, ["--connection", "close"], False),
    "upstream": (ABORT_PORT, ["--connection", "close"], False),
    "client": (BIG_PORT, ["--read", "4096", "--then", "abort"], True),
    "clean": (OK_PORT, ["--connection", "close"], False),
}


@pytest.fixture(scope="module")
def haproxy_logs(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One haproxy run per case, each with its own log: {case: log file}."""
    out = tmp_path_factory.mktemp("haproxy-logs")
    logs: dict[str, Path] = {}
    with _upstreams(lab, out):
        for case, (upstream, args, v6) in HAPROXY_CASES.items():
            work = out / case
            work.mkdir()
            (work / "haproxy.cfg").write_text(_haproxy_cfg(lab, upstream))
            log = work / "haproxy.log"
            with lab.process("proxy", ["haproxy", "-db", "-f", str(work / "haproxy.cfg")],
                             name=f"haproxy-{case}", log=log) as proc:
                lab.wait_listening("proxy", HAPROXY_PORT)
                _request(lab, out, f"haproxy-{case}", HAPROXY_PORT, *args, v6=v6)
                # haproxy logs when the session ends: wait for the line (bounded)
                proc.wait_for(r"\] fe_lab be_lab/upstream ", 8.0)
            logs[case] = log
    return logs


def _nginx_conf(lab: Lab, work: Path) -> str:
    temp = "\n".join(f"    {k}_temp_path {work}/{k};" for k in ("client_body", "proxy", "fastcgi",
                                                                 "uwsgi", "scgi"))
    upstream = {"timeout": SLOW_PORT, "upstream": ABORT_PORT, "client": BIG_PORT,
                "giveup": SLOW_PORT, "clean": OK_PORT}
    servers = []
    for case, port in NGINX_PORTS.items():
        servers.append(f"""
    server {{
        listen {lab.addr("proxy", toward="router")}:{port};
        listen [{lab.addr("proxy", v6=True, toward="router")}]:{port};
        error_log {work}/{case}-error.log info;
        access_log {work}/{case}-access.log;
        location / {{ proxy_pass http://{lab.addr("server")}:{upstream[case]}; proxy_read_timeout 1s; }}
    }}""")
    return f"""\
daemon off;
master_process off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/main-error.log info;
events {{ worker_connections 64; }}
http {{
{temp}
{"".join(servers)}
}}
"""


NGINX_CASES = {
    "timeout": ["--connection", "close"],
    "upstream": ["--connection", "close"],
    "client": ["--read", "4096", "--then", "abort"],  # aborts mid-response (IPv6)
    "giveup": ["--read", "0", "--pause", "0.5", "--then", "close"],  # leaves before the answer
    "clean": ["--connection", "close"],
}


@pytest.fixture(scope="module")
def nginx_logs(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """One nginx, one server block (with its own error and access log) per case."""
    out = tmp_path_factory.mktemp("nginx-logs")
    work = out / "nginx"
    work.mkdir()
    conf = work / "nginx.conf"
    conf.write_text(_nginx_conf(lab, work))
    argv = ["nginx", "-p", str(work), "-e", str(work / "main-error.log"), "-c", str(conf)]
    with _upstreams(lab, out), lab.process("proxy", argv, name="nginx", log=out / "nginx.out"):
        for port in NGINX_PORTS.values():
            lab.wait_listening("proxy", port)
        for case, args in NGINX_CASES.items():
            _request(lab, out, f"nginx-{case}", NGINX_PORTS[case], *args, v6=case == "client")
        # the access log line is written when nginx finishes the request: wait for all (bounded)
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            if all((work / f"{c}-access.log").exists() and (work / f"{c}-access.log").stat().st_size
                   for c in NGINX_CASES):
                break
            time.sleep(0.1)
    return {case: [work / f"{case}-error.log", work / f"{case}-access.log"] for case in NGINX_CASES}


def _counts(result: dict[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = result["value"]["counts"]
    return counts


def _reasons(result: dict[str, Any], cls: str) -> str:
    return " | ".join(result["value"]["reasons"][cls])


@pytest.mark.lab
def test_haproxy_slow_server_is_a_proxy_timeout(lab: Lab, haproxy_logs: dict[str, Path]) -> None:
    result = _check(lab, haproxy_logs["timeout"])
    assert result["status"] == "warn", result["summary"]
    assert _counts(result) == {C: 0, U: 0, P: 1}, haproxy_logs["timeout"].read_text()
    assert "haproxy sH--" in _reasons(result, P)
    assert result["value"]["dominant"] == P and "timeout" in result["decision"]


@pytest.mark.lab
def test_haproxy_aborting_server_is_an_upstream_reset(lab: Lab, haproxy_logs: dict[str, Path]) -> None:
    result = _check(lab, haproxy_logs["upstream"])
    assert result["status"] == "warn"
    assert _counts(result) == {C: 0, U: 1, P: 0}, haproxy_logs["upstream"].read_text()
    assert "haproxy SH--" in _reasons(result, U)
    assert "Go to the server" in result["decision"]


@pytest.mark.lab
def test_haproxy_aborting_client_is_a_client_abort(lab: Lab, haproxy_logs: dict[str, Path]) -> None:
    result = _check(lab, haproxy_logs["client"])
    assert result["status"] == "warn"
    assert _counts(result) == {C: 1, U: 0, P: 0}, haproxy_logs["client"].read_text()
    assert "D-- (client" in _reasons(result, C)  # CD-- (or cD--)
    assert "fd00:201:1::10" in result["value"]["samples"][C][0]


@pytest.mark.lab
def test_haproxy_all_cases_together_and_a_clean_log(lab: Lab, haproxy_logs: dict[str, Path]) -> None:
    result = _check(lab, *(haproxy_logs[c] for c in ("timeout", "upstream", "client")))
    assert _counts(result) == {C: 1, U: 1, P: 1}
    assert result["value"]["dominant"] is None  # a tie: mixed
    clean = _check(lab, haproxy_logs["clean"])
    assert "----" in haproxy_logs["clean"].read_text()
    assert clean["status"] == "ok", clean["summary"]
    assert _counts(clean) == {C: 0, U: 0, P: 0}


@pytest.mark.lab
def test_nginx_slow_upstream_is_a_proxy_timeout(lab: Lab, nginx_logs: dict[str, list[Path]]) -> None:
    result = _check(lab, *nginx_logs["timeout"])
    assert _counts(result) == {C: 0, U: 0, P: 2}  # "upstream timed out" + the 504
    assert "nginx: upstream timed out" in _reasons(result, P) and "nginx 504" in _reasons(result, P)


@pytest.mark.lab
def test_nginx_aborting_upstream_is_an_upstream_reset(lab: Lab, nginx_logs: dict[str, list[Path]]) -> None:
    result = _check(lab, *nginx_logs["upstream"])
    assert _counts(result) == {C: 0, U: 2, P: 0}  # reset by peer from upstream + the 502
    reasons = _reasons(result, U)
    assert "reading response header from upstream" in reasons and "nginx 502" in reasons


@pytest.mark.lab
def test_nginx_client_aborts(lab: Lab, nginx_logs: dict[str, list[Path]]) -> None:
    # mid-response: nginx writes "writev() failed (104) while sending to client" or "client
    # prematurely closed connection ... (104) while reading upstream"; the access log says 200
    mid = _check(lab, *nginx_logs["client"])
    assert _counts(mid) == {C: 1, U: 0, P: 0}, nginx_logs["client"][0].read_text()
    # before the answer: "client prematurely closed connection" (info level) and a 499
    gave_up = _check(lab, *nginx_logs["giveup"])
    assert _counts(gave_up) == {C: 2, U: 0, P: 0}
    reasons = _reasons(gave_up, C)
    assert "client prematurely closed" in reasons and "nginx 499" in reasons
    assert gave_up["value"]["dominant"] == C


@pytest.mark.lab
def test_nginx_clean_request_is_ok(lab: Lab, nginx_logs: dict[str, list[Path]]) -> None:
    result = _check(lab, *nginx_logs["clean"])
    assert " 200 " in nginx_logs["clean"][1].read_text()
    assert result["status"] == "ok", result["summary"]
