"""The checks runner's guarantees, with stand-in check modules, and input validation."""

from __future__ import annotations

import sys
import time
import types

import pytest

from tui import checks, validate
from tui.checks import CheckResult, Context, Unavailable


def _install(monkeypatch: pytest.MonkeyPatch, name: str, fn) -> str:
    """Register a check module ``tui.checks.<name>`` whose run() is ``fn``."""
    mod = types.ModuleType(f"tui.checks.{name}")
    mod.TITLE = f"stand-in {name}"  # type: ignore[attr-defined]
    mod.run = fn  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, f"tui.checks.{name}", mod)
    monkeypatch.setitem(checks.CHECKS, name, name)
    return name


def test_unavailable_becomes_skipped_with_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    def run(ctx: Context) -> CheckResult:
        raise Unavailable("nft is not installed", "sudo nft list ruleset")

    cid = _install(monkeypatch, "t_unavail", run)
    r = checks.run(cid, Context())
    assert r.status == "skipped"
    assert "nft is not installed" in r.summary
    assert r.command == "sudo nft list ruleset"


def test_a_bug_becomes_an_error_result_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def run(ctx: Context) -> CheckResult:
        return {}["missing"]  # KeyError

    cid = _install(monkeypatch, "t_bug", run)
    r = checks.run(cid, Context())
    assert r.status == "error" and "KeyError" in r.summary


def test_checks_run_concurrently_and_a_hung_one_misses_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def slow(name: str):
        def run(ctx: Context) -> CheckResult:
            time.sleep(0.4)
            return CheckResult(name, "slow", "ok", "fine")

        return run

    def hung(ctx: Context) -> CheckResult:
        time.sleep(30)
        return CheckResult("t_hung", "hung", "ok", "never")

    ids = [_install(monkeypatch, f"t_slow{i}", slow(f"t_slow{i}")) for i in range(4)]
    ids.append(_install(monkeypatch, "t_hung", hung))
    seen: list[str] = []
    results = checks.run_all(Context(), ids, deadline=1.0, on_result=lambda r: seen.append(r.id))
    assert [r.id for r in results] == ids  # the order asked for
    # four 0.4 s checks all done inside a 1.0 s deadline: they ran side by side
    assert [r.status for r in results[:4]] == ["ok"] * 4
    assert results[4].status == "error" and "no answer within 1.0s" in results[4].summary
    assert sorted(seen) == sorted(ids)  # every result reported once, the late one too


def test_run_cmd_reports_missing_binaries_and_failures() -> None:
    with pytest.raises(Unavailable) as e:
        checks.run_cmd(["rst-triage-no-such-binary"], human="do it by hand")
    assert "not installed" in e.value.reason and e.value.command == "do it by hand"
    with pytest.raises(Unavailable) as e:
        checks.run_cmd([sys.executable, "-c", "import sys; sys.exit('Operation not permitted')"])
    assert "permission denied" in e.value.reason
    with pytest.raises(Unavailable) as e:
        checks.run_cmd([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.3)
    assert "did not answer" in e.value.reason
    assert checks.run_cmd([sys.executable, "-c", "print('hi')"]) == "hi\n"


def test_read_text_missing_file() -> None:
    with pytest.raises(Unavailable) as e:
        checks.read_text("/proc/sys/net/netfilter/no_such_knob")
    assert "does not exist" in e.value.reason


@pytest.mark.parametrize(
    "value, expected",
    [
        ("10.20.4.18:443", ("10.20.4.18", 443)),
        ("[fd00::1]:8080", ("fd00::1", 8080)),
        ("api.example.internal:80", ("api.example.internal", 80)),
    ],
)
def test_peer_parsing(value: str, expected: tuple[str, int]) -> None:
    assert validate.peer(value) == expected


@pytest.mark.parametrize(
    "value, words",
    [
        ("10.20.4.18", "expected HOST:PORT"),
        ("10.20.4.18:0", "out of range"),
        ("10.20.4.18:http", "not a number"),
        ("fd00::1:443", "[ADDRESS]:PORT"),
        ("bad_host!:80", "neither an IP address nor a valid host name"),
        ("[10.0.0.300]:80", "not an IPv4 or IPv6 address"),
    ],
)
def test_peer_errors(value: str, words: str) -> None:
    with pytest.raises(validate.InputError) as e:
        validate.peer(value)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_other_validators() -> None:
    assert validate.iface("lo") == "lo"
    with pytest.raises(validate.InputError, match="does not exist"):
        validate.iface("nosuchif0")
    with pytest.raises(validate.InputError, match="not a valid interface name"):
        validate.iface("eth0; rm -rf /")
    assert validate.url("http://10.0.0.1:8080/health") == "http://10.0.0.1:8080/health"
    with pytest.raises(validate.InputError, match="only http"):
        validate.url("ftp://10.0.0.1/")
    with pytest.raises(validate.InputError, match="invalid port"):
        validate.url("http://10.0.0.1:99999/")
    assert validate.seconds("2.5", "--window", 0, 60) == 2.5
    with pytest.raises(validate.InputError, match="more than 0"):
        validate.seconds("0", "--window", 0, 60)
    with pytest.raises(validate.InputError, match="not a number"):
        validate.seconds("nan-ish", "--window")
    with pytest.raises(validate.InputError, match="directory"):
        validate.writable_path("/nonexistent-dir/x.pcap")
