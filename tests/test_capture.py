"""``rst-triage capture``: bounded, private, cleaned up, analysed.

Unit tests cover the pieces (filter, file naming, the incremental pcap walker against
independently built captures). Lab tests run the command in the client namespace the way a user
does while the lab produces a reset, and check the file (mode 0600, its RST counted by tshark),
each bound (time, packets, bytes), Ctrl-C, SIGHUP and a SIGKILLed parent (no tcpdump left
behind), the default path under $XDG_STATE_HOME, validation errors, an unprivileged user, and
the scapy fallback when tcpdump is missing.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from tests import capgen as cg
from tui import capture

REPO_ROOT = Path(__file__).resolve().parents[1]


# ---- unit -------------------------------------------------------------------------------------
def test_bpf_filter_v4_v6_and_without_peer() -> None:
    assert capture.bpf_filter(["10.0.0.1"], 443) == "tcp and host 10.0.0.1 and port 443"
    assert capture.bpf_filter(["fd00::1"], 80) == "tcp and host fd00::1 and port 80"
    assert capture.bpf_filter(["10.0.0.1", "fd00::1"], None) == "tcp and (host 10.0.0.1 or host fd00::1)"
    assert capture.bpf_filter([], None) == "tcp"


def test_default_path_under_xdg_state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    p = capture.default_path("fd00:201:3::10", 8080, now=0.0)
    assert p.parent == tmp_path / "state" / "rst-triage" / "captures"
    assert stat.S_IMODE(p.parent.stat().st_mode) == 0o700
    assert p.name.startswith("capture-19700101-") or p.name.startswith("capture-1969")
    assert p.name.endswith("-fd00_201_3_10_8080.pcap")
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert capture.captures_dir() == tmp_path / "home" / ".local" / "state" / "rst-triage" / "captures"


def test_tcpdump_argv_is_bounded_and_never_a_shell() -> None:
    argv = capture.tcpdump_argv("eth0", 5, "tcp and host 10.0.0.1 and port 443", 30)
    i = argv.index("tcpdump")
    assert argv[i:i + 5] == ["tcpdump", "-i", "eth0", "-w", "-"]
    assert argv[argv.index("-c") + 1] == "5"
    assert "--time-stamp-precision=nano" in argv and "-U" in argv and "-n" in argv
    assert argv[-1] == "tcp and host 10.0.0.1 and port 443"  # one argv element, no shell
    if i:  # under coreutils timeout, a little past the time bound
        assert argv[i - 1] == "35"


def _records(n: int, linktype: int) -> tuple[list[tuple[int, int, bytes]], int]:
    recs, rsts = [], 0
    for k in range(n):
        flags = cg.RST | cg.ACK if k % 7 == 3 else cg.ACK | cg.PSH
        rsts += bool(flags & cg.RST)
        seg = cg.tcp(40000 + k, 443, flags, seq=k, ack=1, payload=b"x" * (k % 50))
        if k % 2:
            ip, et = cg.ipv6("fd00::1", "fd00::2", seg), cg.ETH_IPV6
        else:
            ip, et = cg.ipv4("10.0.0.1", "10.0.0.2", seg), cg.ETH_IPV4
        if linktype == cg.LT_SLL2:
            frame = cg.sll2(et, ip)
        else:
            frame = cg.ether("02:00:00:00:00:02", "02:00:00:00:00:01", et, ip)
        recs.append((k, 1000, frame))
    return recs, rsts


@pytest.mark.parametrize("linktype,order", [(cg.LT_ETHERNET, "<"), (cg.LT_SLL2, ">")])
def test_pcap_stream_walks_records_as_they_arrive(tmp_path: Path, linktype: int, order: str) -> None:
    recs, rsts = _records(200, linktype)
    data = cg.pcap(recs, linktype=linktype, order=order)
    out = tmp_path / "out.pcap"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT, 0o600)
    stream = capture.PcapStream(fd, max_bytes=1 << 30)
    rnd = random.Random(7)
    pos = 0
    while pos < len(data):  # arbitrary chunk sizes, as a pipe delivers them
        n = rnd.randint(1, 300)
        stream.feed(data[pos:pos + n])
        pos += n
    os.close(fd)
    assert (stream.packets, stream.rsts) == (200, rsts)
    assert out.read_bytes() == data


def test_pcap_stream_stops_at_the_byte_bound_on_a_record_boundary(tmp_path: Path) -> None:
    recs, _ = _records(50, cg.LT_ETHERNET)
    data = cg.pcap(recs)
    out = tmp_path / "out.pcap"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT, 0o600)
    stream = capture.PcapStream(fd, max_bytes=1000)
    stream.feed(data)
    os.close(fd)
    assert stream.full and 0 < stream.packets < 50
    assert stream.bytes == out.stat().st_size <= 1000
    from tui.capture_reader import open_capture

    cap = open_capture(str(out))
    try:
        assert len(list(cap.tcp_packets())) == stream.packets
        assert not cap.warnings  # no truncated record
    finally:
        cap.close()


def _cli(argv: list[str], env: Optional[dict[str, str]] = None, user: Optional[str] = None
         ) -> subprocess.CompletedProcess[str]:
    prefix: list[str] = []
    if user:
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    return subprocess.run([*prefix, sys.executable, "-m", "tui", "capture", *argv], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})})


@pytest.mark.parametrize("args,words", [
    (["--peer", "10.0.0.1:99999"], "out of range"),
    (["--peer", "bad host!:80"], "neither an IP address"),
    (["--peer", "fd00::1:80"], "[ADDRESS]:PORT"),
    (["--iface", "nosuch0"], "does not exist"),
    (["-w", "/nonexistent/dir/x.pcap"], "does not exist"),
    (["--seconds", "0"], "must be more than 0"),
    (["--max-packets", "lots"], "not a whole number"),
    (["-w", "/dev/null"], "not a regular file"),  # and never chmod a device
])
def test_validation_errors_are_one_line_exit_2(args: list[str], words: str) -> None:
    proc = _cli([*args, "--seconds", "1"] if "--seconds" not in args else args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert stat.S_IMODE(os.stat("/dev/null").st_mode) == 0o666


@contextlib.contextmanager
def _world_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="rst-triage-cap-"))
    d.chmod(0o777)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_unwritable_output_dir_is_a_usage_error() -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        lab_unavailable("needs root and setpriv to run as nobody")
    with _world_dir() as d:
        locked = d / "locked"
        locked.mkdir(mode=0o755)  # root's, not writable by nobody
        proc = _cli(["--iface", "lo", "--seconds", "1", "-w", str(locked / "x.pcap")], user="nobody")
    assert proc.returncode == 2, proc.stderr
    assert "permission denied" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_no_permission_to_capture_is_one_line_exit_1() -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None or shutil.which("tcpdump") is None:
        lab_unavailable("needs root, setpriv and tcpdump")
    with _world_dir() as d:
        out = d / "x.pcap"
        proc = _cli(["--iface", "lo", "--seconds", "1", "-w", str(out)], user="nobody")
        left = out.exists()
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "permission denied" in lines[0] and "sudo" in lines[0], proc.stderr
    assert "rst-triage analyze" in lines[0]
    assert not left  # no empty file left behind
    assert "Traceback" not in proc.stderr


# ---- lab --------------------------------------------------------------------------------------
from tests.lab.netlab import Lab, count_resets  # noqa: E402
from tests.lab.session import lab_unavailable  # noqa: E402

CLOSED_PORT = 9
SERVE_PORT = 9401
READY_TIMEOUT = 15.0


class Running:
    """``rst-triage capture`` running in the client namespace; output in files."""

    def __init__(self, lab: Lab, args: list[str], workdir: Path, env: Optional[dict[str, str]] = None
                 ) -> None:
        self.out = workdir / "stdout.txt"
        self.err = workdir / "stderr.txt"
        envs = [f"{k}={v}" for k, v in {"PYTHONPATH": str(REPO_ROOT), **(env or {})}.items()]
        # `ip netns exec` and `env` exec: the PID we hold is rst-triage's own
        argv = ["ip", "netns", "exec", lab.ns["client"], "env", *envs, sys.executable, "-m", "tui",
                "capture", *args]
        with open(self.out, "w") as o, open(self.err, "w") as e:
            self.proc = subprocess.Popen(argv, stdout=o, stderr=e, stdin=subprocess.DEVNULL,
                                         cwd=REPO_ROOT, start_new_session=True)

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_capturing(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while "capturing on" not in self.stderr():
            if self.proc.poll() is not None:
                pytest.fail(f"capture exited ({self.proc.returncode}) before capturing: {self.stderr()}")
            if time.monotonic() > deadline:
                pytest.fail(f"capture did not start within {READY_TIMEOUT}s: {self.stderr()}")
            time.sleep(0.05)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"capture still running after {timeout}s: {self.stderr()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait(5)


@contextlib.contextmanager
def _capture(lab: Lab, args: list[str], workdir: Path, env: Optional[dict[str, str]] = None
             ) -> Iterator[Running]:
    run = Running(lab, args, workdir, env)
    try:
        yield run
    finally:
        run.kill()
        for pid in _descendants(run.proc.pid):  # never leave one behind, even on failure
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _ppid_map() -> dict[int, tuple[int, str]]:
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        out[int(d)] = (int(fields[1]), comm)
    return out


def _descendants(pid: int) -> list[int]:
    procs = _ppid_map()
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, (pp, _) in procs.items() if pp == p]
        found += kids
        todo += kids
    return found


def _tcpdump_pid(pid: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs = _ppid_map()
        for d in _descendants(pid):
            if procs.get(d, (0, ""))[1] == "tcpdump":
                return d
        time.sleep(0.05)
    pytest.fail("no tcpdump among the capture's child processes")


def _alive(pid: int, comm: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return False
    state = raw[raw.rindex(")") + 2 :].split()[0]
    return f"({comm})" in raw and state != "Z"


def _packets(pcap: Path) -> int:
    proc = subprocess.run(["tshark", "-n", "-r", str(pcap), "-T", "fields", "-e", "frame.number"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    return len(proc.stdout.split())


def _agent(lab: Lab, workdir: Path, name: str, *args: str) -> dict[str, Any]:
    return lab.run_agent("client", list(args), name=name, log=workdir / f"{name}.log")


@pytest.mark.lab
def test_capture_of_a_refused_connection_names_the_reset(lab: Lab, tmp_path: Path) -> None:
    server = lab.addr("server")
    out = tmp_path / "refused.pcap"
    out.write_text("an older file, world-readable")
    out.chmod(0o644)
    with _capture(lab, ["--peer", f"{server}:{CLOSED_PORT}", "--seconds", "3", "-w", str(out)],
                  tmp_path) as run:
        run.wait_capturing()
        got = _agent(lab, tmp_path, "connect", "connect", "--host", server, "--port", str(CLOSED_PORT))
        assert got["error"] == "ConnectionRefusedError"
        assert run.wait() == 0, run.stderr()
    text = run.stdout()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert count_resets(out) == 1  # tshark's count, independent of our reader
    assert "Capture stopped: time limit (3 s)" in text
    assert "2 packets (1 RST)" in text and f"Written to {out}" in text
    assert "cause no-listener" in text and f"{server}:{CLOSED_PORT} ->" in text
    assert f"capturing on {lab.iface('client', 'router')}" in run.stderr()  # the route's interface


@pytest.mark.lab
def test_capture_v6_client_abort_as_json(lab: Lab, tmp_path: Path) -> None:
    server6, client6 = lab.addr("server", v6=True), lab.addr("client", v6=True)
    out = tmp_path / "abort6.pcap"
    serve = ["serve", "--host", server6, "--port", str(SERVE_PORT), "--body-size", str(1 << 20)]
    with lab.agent("server", serve, name="big6", log=tmp_path / "big6.log"), \
            _capture(lab, ["--peer", f"[{server6}]:{SERVE_PORT}", "--seconds", "3", "--json",
                           "-w", str(out)], tmp_path) as run:
        run.wait_capturing()
        _agent(lab, tmp_path, "abort", "request", "--host", server6, "--port", str(SERVE_PORT),
               "--read", "4096", "--then", "abort")
        assert run.wait() == 0, run.stderr()
    data = json.loads(run.stdout())
    assert data["capture"]["path"] == str(out) and data["capture"]["stopped_by"] == "time"
    assert data["capture"]["rsts"] == count_resets(out) >= 1
    assert data["capture"]["filter"] == f"tcp and host {server6} and port {SERVE_PORT}"
    first = data["resets"][0]
    assert first["src"] == client6 and first["origin"] == "client"
    assert "Capture stopped: time limit" in run.stderr()


@pytest.mark.lab
def test_packet_bound_is_exact(lab: Lab, tmp_path: Path) -> None:
    server = lab.addr("server")
    out = tmp_path / "five.pcap"
    serve = ["serve", "--host", server, "--port", str(SERVE_PORT + 1), "--body-size", str(256 << 10)]
    with lab.agent("server", serve, name="body", log=tmp_path / "body.log"), \
            _capture(lab, ["--peer", f"{server}:{SERVE_PORT + 1}", "--seconds", "20",
                           "--max-packets", "5", "-w", str(out)], tmp_path) as run:
        run.wait_capturing()
        _agent(lab, tmp_path, "get", "request", "--host", server, "--port", str(SERVE_PORT + 1),
               "--connection", "close")
        assert run.wait() == 0, run.stderr()
    assert _packets(out) == 5
    assert "Capture stopped: packet limit (5 packets)" in run.stdout()


@pytest.mark.lab
def test_byte_bound_cuts_on_a_packet_boundary(lab: Lab, tmp_path: Path) -> None:
    server = lab.addr("server")
    out = tmp_path / "bytes.pcap"
    serve = ["serve", "--host", server, "--port", str(SERVE_PORT + 2), "--body-size", str(256 << 10)]
    with lab.agent("server", serve, name="body2", log=tmp_path / "body2.log"), \
            _capture(lab, ["--peer", f"{server}:{SERVE_PORT + 2}", "--seconds", "20",
                           "--max-bytes", "20000", "-w", str(out)], tmp_path) as run:
        run.wait_capturing()
        _agent(lab, tmp_path, "get", "request", "--host", server, "--port", str(SERVE_PORT + 2),
               "--connection", "close")
        assert run.wait() == 0, run.stderr()
    assert "Capture stopped: byte limit (20000 bytes)" in run.stdout()
    assert 0 < out.stat().st_size <= 20000
    assert _packets(out) >= 3  # tshark reads it whole: no cut record


@pytest.mark.lab
def test_time_bound_with_nothing_captured(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "empty.pcap"
    with _capture(lab, ["--peer", f"{lab.addr('server')}:{CLOSED_PORT}", "--seconds", "1",
                        "-w", str(out)], tmp_path) as run:
        assert run.wait() == 0, run.stderr()
    text = run.stdout()
    assert "Capture stopped: time limit (1 s). 0 packets (0 RST)" in text
    assert "no reset captured" in text and "0 reset(s)" in text
    assert _packets(out) == 0


@pytest.mark.lab
def test_ctrl_c_stops_early_and_still_analyses(lab: Lab, tmp_path: Path) -> None:
    server = lab.addr("server")
    out = tmp_path / "int.pcap"
    with _capture(lab, ["--peer", f"{server}:{CLOSED_PORT}", "--seconds", "60", "-w", str(out)],
                  tmp_path) as run:
        run.wait_capturing()
        _agent(lab, tmp_path, "connect", "connect", "--host", server, "--port", str(CLOSED_PORT))
        tcpdump = _tcpdump_pid(run.proc.pid)
        time.sleep(0.3)
        run.proc.send_signal(signal.SIGINT)
        assert run.wait(15) == 0, run.stderr()
    assert not _alive(tcpdump, "tcpdump")
    assert "Capture stopped: interrupted (Ctrl-C)" in run.stdout()
    assert "cause no-listener" in run.stdout() and count_resets(out) == 1


@pytest.mark.lab
def test_sighup_leaves_no_tcpdump_behind(lab: Lab, tmp_path: Path) -> None:
    server = lab.addr("server")
    out = tmp_path / "hup.pcap"
    with _capture(lab, ["--peer", f"{server}:{CLOSED_PORT}", "--seconds", "60", "-w", str(out)],
                  tmp_path) as run:
        run.wait_capturing()
        _agent(lab, tmp_path, "connect", "connect", "--host", server, "--port", str(CLOSED_PORT))
        tcpdump = _tcpdump_pid(run.proc.pid)
        helpers = _descendants(run.proc.pid)
        time.sleep(0.3)
        run.proc.send_signal(signal.SIGHUP)
        assert run.wait(15) == 128 + signal.SIGHUP, run.stderr()
        assert not _alive(tcpdump, "tcpdump")
        assert not any(_alive(p, "timeout") or _alive(p, "tcpdump") for p in helpers)
    assert "hangup" in run.stderr() and str(out) in run.stderr()
    assert count_resets(out) == 1  # the file is whole and readable
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


@pytest.mark.lab
def test_killed_parent_leaves_no_tcpdump_behind(lab: Lab, tmp_path: Path) -> None:
    """SIGKILL (a crash): parent-death signal where the kernel sends it, else the timeout bound."""
    out = tmp_path / "killed.pcap"
    with _capture(lab, ["--peer", f"{lab.addr('server')}:{CLOSED_PORT}", "--seconds", "2",
                        "-w", str(out)], tmp_path) as run:
        run.wait_capturing()
        tcpdump = _tcpdump_pid(run.proc.pid)
        run.proc.kill()
        run.proc.wait(5)
        deadline = time.monotonic() + 2 + capture.TIMEOUT_SLACK + capture.STOP_GRACE + 5
        while _alive(tcpdump, "tcpdump") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(tcpdump, "tcpdump"), "tcpdump outlived its killed parent"


@pytest.mark.lab
def test_default_path_is_private_under_the_state_dir(lab: Lab, tmp_path: Path) -> None:
    server = lab.addr("server")
    home = tmp_path / "home"
    home.mkdir()
    for env, base in (({"HOME": str(home), "XDG_STATE_HOME": str(tmp_path / "xdg")}, tmp_path / "xdg"),
                      ({"HOME": str(home)}, home / ".local" / "state")):
        env_all = {**env} if "XDG_STATE_HOME" in env else {**env, "XDG_STATE_HOME": ""}
        with _capture(lab, ["--peer", f"{server}:{CLOSED_PORT}", "--seconds", "2"], tmp_path,
                      env_all) as run:
            run.wait_capturing()
            _agent(lab, tmp_path, "connect", "connect", "--host", server, "--port", str(CLOSED_PORT))
            assert run.wait() == 0, run.stderr()
        captures = base / "rst-triage" / "captures"
        (pcap,) = list(captures.glob(f"capture-*-{server}_{CLOSED_PORT}.pcap"))
        assert stat.S_IMODE(captures.stat().st_mode) == 0o700
        assert stat.S_IMODE(pcap.stat().st_mode) == 0o600
        assert f"Written to {pcap}" in run.stdout()
        assert count_resets(pcap) == 1


@pytest.mark.lab
def test_scapy_fallback_without_tcpdump(lab: Lab, tmp_path: Path) -> None:
    try:
        import scapy  # noqa: F401
    except ImportError:
        lab_unavailable("scapy is not installed")
    server = lab.addr("server")
    out = tmp_path / "scapy.pcap"
    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    with _capture(lab, ["--peer", f"{server}:{CLOSED_PORT}", "--seconds", "4", "-w", str(out)],
                  tmp_path, {"PATH": str(empty_path)}) as run:
        run.wait_capturing()
        assert "with scapy" in run.stderr()
        _agent(lab, tmp_path, "connect", "connect", "--host", server, "--port", str(CLOSED_PORT))
        assert run.wait(30) == 0, run.stderr()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert count_resets(out) == 1 and _packets(out) == 2
    assert "cause no-listener" in run.stdout()


HANDLE_SNIPPET = """
import json, sys, time
from tui import capture
seen = []
req = capture.CaptureRequest(sys.argv[1], int(sys.argv[2]), None, 60.0, 1000, 10**7, sys.argv[3])
handle = capture.start(req, seen.append)
deadline = time.monotonic() + 10
while not any("capturing on" in s for s in seen) and time.monotonic() < deadline:
    time.sleep(0.05)
print("READY", flush=True)
sys.stdin.readline()  # the test produces the reset, then says go
handle.stop()
out = handle.wait(15)
print("RESULT " + json.dumps({"path": out.path, "rsts": out.rsts, "stopped_by": out.stopped_by,
                              "describe": out.describe(), "progress": seen[:2],
                              "running": handle.running}), flush=True)
"""


@pytest.mark.lab
def test_background_handle_for_the_tui(lab: Lab, tmp_path: Path) -> None:
    """capture.start()/stop()/wait(): what the TUI's capture key uses."""
    server = lab.addr("server")
    out = tmp_path / "handle.pcap"
    argv = ["ip", "netns", "exec", lab.ns["client"], sys.executable, "-c", HANDLE_SNIPPET, server,
            str(CLOSED_PORT), str(out)]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "READY"
        _agent(lab, tmp_path, "connect", "connect", "--host", server, "--port", str(CLOSED_PORT))
        time.sleep(0.3)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    line = next(ln for ln in stdout.splitlines() if ln.startswith("RESULT "))
    got = json.loads(line[len("RESULT "):])
    assert got["path"] == str(out) and got["rsts"] == 1 and got["stopped_by"] == "stopped", stderr
    assert not got["running"]
    assert "stopped early" in got["describe"] and str(out) in got["describe"]
    assert got["progress"][0].startswith("capturing on ")
    assert count_resets(out) == 1 and stat.S_IMODE(out.stat().st_mode) == 0o600
