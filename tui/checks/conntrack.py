"""conntrack: how full the connection-tracking table is, and what it dropped or marked INVALID.

Reads ``nf_conntrack_count`` and ``nf_conntrack_max`` from ``/proc/sys/net/netfilter`` (readable by
anyone) and samples the per-CPU statistics twice, ``ctx.window`` apart: over netlink with
pyroute2 (needs CAP_NET_ADMIN), else from ``/proc/net/stat/nf_conntrack`` (hex columns, one row
per CPU, readable by anyone), else from ``conntrack -S``. The counters that matter for resets:

* ``invalid``: packets conntrack could not fit into a connection's state, mostly TCP segments
  outside the window it tracks. They pass unchanged unless a rule drops them; under NAT they are
  not translated back and reach this host's own stack, which answers with a RST
  (see ``conntrack-invalid-trap``).
* ``drop`` / ``early_drop``: the table was full; a new connection was dropped, or an unconfirmed
  entry was evicted to make room for it.
* ``insert_failed``: two packets of one new flow raced (typically UDP DNS through NAT) and one
  entry could not be inserted; that packet is dropped.

The count is per network namespace; the maximum is host-wide (``nf_conntrack_max`` cannot be
written inside a namespace).
"""

from __future__ import annotations

import os
import time
from typing import Optional

from tui.checks import CheckResult, Context, Unavailable, read_text, run_cmd

ID = "conntrack"
TITLE = "Conntrack table usage, drops and INVALID packets"
PLAYBOOK = "third"

NF = "/proc/sys/net/netfilter"
PROC_STAT = "/proc/net/stat/nf_conntrack"
WARN_PCT = 80.0
FAIL_PCT = 95.0
FAIL_KEYS = ("drop", "early_drop", "insert_failed")
KEYS = ("invalid", "insert_failed", "drop", "early_drop")
HUMAN = ("sysctl net.netfilter.nf_conntrack_count net.netfilter.nf_conntrack_max; "
         "sudo conntrack -S")
HUMAN_MISSING = "lsmod | grep nf_conntrack; conntrack -C; conntrack -S"


def parse_proc_stat(text: str) -> tuple[dict[str, int], int]:
    """``/proc/net/stat/nf_conntrack``: counters summed over the CPU rows, and the row count.

    The first line names the columns (they differ between kernels); each further line is one
    CPU, in hex. ``entries`` is the table size, repeated on every row, not a per-CPU counter.
    """
    lines = [ln.split() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ValueError("empty")
    names = lines[0]
    totals: dict[str, int] = {}
    cpus = 0
    for row in lines[1:]:
        if len(row) != len(names):
            continue
        cpus += 1
        for name, hexval in zip(names, row):
            v = int(hexval, 16)
            if name == "entries":
                totals[name] = v
            else:
                totals[name] = totals.get(name, 0) + v
    if not cpus:
        raise ValueError("no CPU rows")
    return totals, cpus


def parse_conntrack_S(text: str) -> tuple[dict[str, int], int]:
    """``conntrack -S``: ``cpu=0  found=0 invalid=12 ...`` lines, summed over CPUs."""
    totals: dict[str, int] = {}
    cpus = 0
    for line in text.splitlines():
        fields = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
        if "cpu" not in fields:
            continue
        cpus += 1
        for k, v in fields.items():
            if k == "cpu":
                continue
            try:
                n = int(v)
            except ValueError:
                continue
            totals[k] = n if k == "entries" else totals.get(k, 0) + n
    if not cpus:
        raise ValueError("no cpu= lines")
    return totals, cpus


class _Sampler:
    """Reads the per-CPU statistics from the best source available, the same one each time."""

    def __init__(self) -> None:
        self.source = ""
        self.notes: list[str] = []

    def sample(self) -> tuple[dict[str, int], int]:
        if self.source in ("", "netlink"):
            try:
                totals, cpus = self._netlink()
                self.source = "netlink"
                return totals, cpus
            except Exception as e:  # pyroute2 missing, EPERM, old kernel: fall back
                if self.source == "netlink":
                    raise Unavailable(f"conntrack netlink stats failed: {e}", HUMAN) from None
                self.notes.append(f"netlink stats not available ({_why(e)}): using {PROC_STAT}")
        if self.source in ("", "procfs"):
            try:
                totals, cpus = parse_proc_stat(read_text(PROC_STAT))
                self.source = "procfs"
                return totals, cpus
            except (Unavailable, ValueError) as e:
                if self.source == "procfs":
                    raise Unavailable(f"{PROC_STAT} unreadable: {e}", HUMAN) from None
                self.notes.append(f"{PROC_STAT} not usable ({e}): using conntrack -S")
        out = run_cmd(["conntrack", "-S"], timeout=1.5, human="sudo conntrack -S")
        self.source = "conntrack -S"
        try:
            return parse_conntrack_S(out)
        except ValueError as e:
            raise Unavailable(f"conntrack -S printed no statistics ({e})", "sudo conntrack -S") from None

    @staticmethod
    def _netlink() -> tuple[dict[str, int], int]:
        from pyroute2 import Conntrack

        ct = Conntrack()
        try:
            rows = ct.stat()
        finally:
            ct.close()
        totals: dict[str, int] = {}
        cpus = 0
        for row in rows:
            cpus += 1
            for k, v in row.items():
                if k != "cpu" and isinstance(v, int):
                    totals[k] = totals.get(k, 0) + v
        if not cpus:
            raise ValueError("no per-CPU statistics")
        return totals, cpus


def _why(e: Exception) -> str:
    code = getattr(e, "code", None)
    if code == 1 or "not permitted" in str(e):
        return "needs CAP_NET_ADMIN"
    if isinstance(e, ImportError):
        return "pyroute2 is not installed"
    return f"{type(e).__name__}: {e}"


def _missing_reason() -> str:
    if not os.path.isdir(NF):
        return (f"{NF} does not exist: conntrack is not loaded, or this is a container that does "
                "not show the netfilter sysctls")
    try:
        mods = read_text("/proc/modules")
        loaded = any(line.split()[0] == "nf_conntrack" for line in mods.splitlines() if line)
        if not loaded:
            return "the nf_conntrack module is not loaded: no connection tracking on this host"
    except Unavailable:
        pass
    return f"{NF}/nf_conntrack_count does not exist: the nf_conntrack module is not loaded"


def _read_int(path: str) -> int:
    text = read_text(path).strip()
    try:
        return int(text)
    except ValueError:
        raise Unavailable(f"{path} holds {text!r}, not a number", f"cat {path}") from None


def run(ctx: Context) -> CheckResult:
    if not os.path.exists(f"{NF}/nf_conntrack_count"):
        reason = _missing_reason()
        return CheckResult(
            ID, TITLE, "skipped", f"not checked: {reason}", {"loaded": False}, [reason],
            HUMAN_MISSING,
            "Without connection tracking in this network namespace there is no table to fill and "
            "no INVALID marking: conntrack cannot be the reset source here. In a container, the "
            "host (or the node) may still track and NAT your traffic.",
            "Run the same commands on the host or node that does the NAT.")
    count = _read_int(f"{NF}/nf_conntrack_count")
    cmax = _read_int(f"{NF}/nf_conntrack_max")
    sampler = _Sampler()
    evidence: list[str] = []
    first: Optional[dict[str, int]] = None
    second: Optional[dict[str, int]] = None
    cpus = 0
    try:
        first, cpus = sampler.sample()
        if ctx.window > 0:
            ctx.say(ID, f"sampling conntrack statistics again in {ctx.window:g}s")
            time.sleep(ctx.window)
            second, _ = sampler.sample()
            count = _read_int(f"{NF}/nf_conntrack_count")  # the later, fresher value
    except Unavailable as e:
        evidence.append(f"statistics not read: {e.reason}")
    return evaluate(count, cmax, first, second, cpus, ctx.window, sampler.source,
                    sampler.notes + evidence)


def evaluate(count: int, cmax: int, first: Optional[dict[str, int]], second: Optional[dict[str, int]],
             cpus: int, window: float, source: str, notes: list[str]) -> CheckResult:
    pct = 100.0 * count / cmax if cmax > 0 else 0.0
    delta: dict[str, int] = {}
    if first is not None and second is not None:
        delta = {k: max(0, second.get(k, 0) - first.get(k, 0)) for k in KEYS if k in first}
    totals = {k: (second or first or {}).get(k, 0) for k in KEYS if k in (second or first or {})}
    source_label = {"netlink": "netlink (pyroute2)", "procfs": PROC_STAT}.get(source, source)

    evidence = [f"nf_conntrack_count = {count} (this network namespace)",
                f"nf_conntrack_max = {cmax} (host-wide): {pct:.1f} % used"]
    if first is not None:
        evidence.append(f"statistics from {source_label}, summed over {cpus} CPUs")
        if delta:
            evidence.append(f"in {window:g}s: " + ", ".join(f"{k} +{delta[k]}" for k in KEYS if k in delta))
        evidence.append("since boot (or namespace creation): "
                        + ", ".join(f"{k} {totals[k]}" for k in KEYS if k in totals))
    evidence += notes
    if count == 0 and first is not None and not any(totals.values()):
        evidence.append("the table is empty and every counter is 0: no connection has been "
                        "tracked in this network namespace (no rule needs conntrack, or no traffic)")

    status = "ok"
    findings: list[str] = []
    meaning: list[str] = []
    decision: list[str] = []
    if pct >= FAIL_PCT:
        status = "fail"
        findings.append(f"table {pct:.1f} % full")
        meaning.append("The table is (nearly) full: new connections are dropped or evict other "
                       "unconfirmed entries; clients see SYN timeouts, and state lost mid-flow "
                       "turns later segments into resets.")
        decision.append(f"Raise the limit now (sysctl -w net.netfilter.nf_conntrack_max={cmax * 2}, "
                        "memory permitting), then find the churn: sudo conntrack -L | awk '{print "
                        "$1,$3}' | sort | uniq -c | sort -rn | head; shorten timeouts for dead "
                        "flows (nf_conntrack_tcp_timeout_time_wait, udp_timeout).")
    elif pct >= WARN_PCT:
        status = "warn"
        findings.append(f"table {pct:.1f} % full")
        meaning.append("The table is close to full: a burst of new connections will overflow it "
                       "and new flows will be dropped.")
        decision.append(f"Plan headroom: raise nf_conntrack_max (now {cmax}) and look for "
                        "connection churn (no keep-alive, retry storms, scanners).")
    rising_fail = [k for k in FAIL_KEYS if delta.get(k)]
    if rising_fail:
        status = "fail"
        findings.append(", ".join(f"{k} +{delta[k]}" for k in rising_fail))
        if "drop" in rising_fail or "early_drop" in rising_fail:
            meaning.append("conntrack dropped new connections (drop) or evicted entries to make room "
                           "(early_drop) during the window: the table is full right now.")
        if "insert_failed" in rising_fail:
            meaning.append("insert_failed rose: two packets of one new flow raced (classic: UDP DNS "
                           "A and AAAA from one socket through NAT) and one was dropped.")
            decision.append("For insert_failed: resolver 'options single-request-reopen' or "
                            "use-vc, or NodeLocal DNS; for drop/early_drop: raise nf_conntrack_max.")
        elif not decision:
            decision.append(f"Raise nf_conntrack_max (now {cmax}) and find the source of the churn.")
    if delta.get("invalid"):
        if status == "ok":
            status = "warn"
        findings.append(f"invalid +{delta['invalid']}")
        meaning.append("Packets were marked INVALID: mostly TCP segments outside the window "
                       "conntrack tracks (late or reordered, or after state was lost). Without NAT "
                       "they pass to the endpoint, which handles them; under NAT they are not "
                       "translated back and this host's own stack answers them with a RST.")
        decision.append("Run the conntrack-invalid-trap check (NAT + be_liberal=0 + no 'ct state "
                        "invalid drop' = host-made resets). To see which flows: sysctl -w "
                        "net.netfilter.nf_conntrack_log_invalid=6 and read dmesg, or capture.")

    head = f"{count}/{cmax} entries ({pct:.1f} %)"
    if delta:
        head += f"; in {window:g}s: " + ", ".join(f"{k} +{delta[k]}" for k in KEYS if k in delta)
    elif first is None:
        head += "; statistics not read"
    summary = head if not findings else f"{head} — {'; '.join(findings)}"
    if status == "ok":
        meaning.append("Conntrack is not losing state here: the table has room and nothing was "
                       "dropped or marked INVALID during the window.")
        decision.append("Rule out conntrack on this host; if resets come in bursts, re-run during "
                        "one (the counters are deltas over the window).")
    value = {"count": count, "max": cmax, "percent": round(pct, 2), "window_s": window,
             "delta": delta, "total": totals, "cpus": cpus, "source": source or None}
    return CheckResult(ID, TITLE, status, summary, value, evidence, HUMAN,
                       " ".join(meaning), " ".join(decision))
