#!/usr/bin/env python3
"""Benchmark: rst-triage analyze against tshark on the same large capture.

Generates the capture with gencap.py when it is missing or was made with other parameters or
another version of the generator, then runs, in alternating order each round,

    rst-triage analyze --json FILE
    tshark -r FILE -Y tcp.flags.reset==1

and reports each command's median wall time and peak resident memory (from the kernel's
rusage of that child), the speed ratio, and the two targets. The targets are informational:
the exit status is non-zero only when a command fails or tshark is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import gencap

HERE = Path(__file__).resolve().parent
SPEEDUP_TARGET = 5.0
RSS_TARGET_MB = 150.0


class CommandFailed(Exception):
    pass


def rst_triage_argv() -> List[str]:
    """The rst-triage installed next to this interpreter, else on PATH, else python -m tui."""
    beside = Path(sys.executable).parent / "rst-triage"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which("rst-triage")
    if found:
        return [found]
    return [sys.executable, "-m", "tui"]


def generator_version() -> str:
    return hashlib.sha256((HERE / "gencap.py").read_bytes()).hexdigest()[:16]


def ensure_capture(path: Path, packets: int, connections: int, seed: int) -> Dict[str, Any]:
    """Reuse path if its side file says it was generated with these parameters."""
    meta_path = path.with_name(path.name + ".json")
    wanted = {
        "packets": packets,
        "connections": connections,
        "seed": seed,
        "generator": generator_version(),
    }
    try:
        meta = json.loads(meta_path.read_text())
        if {k: meta.get(k) for k in wanted} == wanted and path.stat().st_size == meta.get("bytes"):
            return dict(meta)
    except (OSError, ValueError):
        pass
    print(
        f"generating {path} ({packets} packets, {connections} connections, seed {seed}) ...",
        flush=True,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    stats = gencap.generate(path, packets, connections, seed)
    print(gencap.describe(stats), flush=True)
    meta = {**stats, **wanted}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def warm_page_cache(path: Path) -> None:
    """Read the file once so neither command pays for the first read from disk."""
    with open(path, "rb", buffering=0) as f:
        while f.read(8 << 20):
            pass


def run_once(argv: List[str], stdout_path: str | None) -> Tuple[float, float]:
    """Run argv; return (wall seconds, peak RSS in MB) of that child alone."""
    with tempfile.TemporaryFile() as err, open(stdout_path or os.devnull, "wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        if code != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip().splitlines()[-5:]
            raise CommandFailed(
                f"{' '.join(argv)} exited with {code}" + "".join(f"\n    {line}" for line in tail)
            )
    return wall, usage.ru_maxrss / 1024.0  # Linux reports KiB


def count_resets(json_path: str) -> int | None:
    try:
        with open(json_path) as f:
            return len(json.load(f)["resets"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--connections", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=3, help="runs of each command (median)")
    ap.add_argument(
        "--capture", type=Path, help="benchmark this existing capture instead of a generated one"
    )
    args = ap.parse_args(argv)

    tshark = shutil.which("tshark")
    if tshark is None:
        print(
            "bench: tshark not found; install it (apt-get install tshark) and rerun",
            file=sys.stderr,
        )
        return 1

    if args.capture:
        capture = args.capture
        if not capture.is_file():
            print(f"bench: {capture}: no such file", file=sys.stderr)
            return 1
        expected_rsts: int | None = None
    else:
        name = f"bench-{args.packets}-{args.connections}-{args.seed}.pcap"
        capture = HERE / "out" / name
        try:
            meta = ensure_capture(capture, args.packets, args.connections, args.seed)
        except (ValueError, OSError) as exc:
            print(f"bench: cannot generate the capture: {exc}", file=sys.stderr)
            return 1
        expected_rsts = meta["rst_packets"]

    size_mb = capture.stat().st_size / 1e6
    commands = {
        "rst-triage": [*rst_triage_argv(), "analyze", "--json", str(capture)],
        "tshark": [tshark, "-r", str(capture), "-Y", "tcp.flags.reset==1"],
    }
    labels = {
        "rst-triage": "rst-triage analyze --json FILE",
        "tshark": "tshark -r FILE -Y tcp.flags.reset==1",
    }
    print(f"capture: {capture} ({size_mb:.1f} MB)")
    print(f"rst-triage: {' '.join(commands['rst-triage'][:-3])}")
    print(f"rounds: {args.rounds}, order alternating", flush=True)
    warm_page_cache(capture)

    walls: Dict[str, List[float]] = {name: [] for name in commands}
    rss: Dict[str, List[float]] = {name: [] for name in commands}
    found_resets: int | None = None
    with tempfile.TemporaryDirectory() as tmp:
        json_out = os.path.join(tmp, "analysis.json")
        try:
            for rnd in range(max(1, args.rounds)):
                order = ["rst-triage", "tshark"] if rnd % 2 == 0 else ["tshark", "rst-triage"]
                for name in order:
                    keep = json_out if name == "rst-triage" and rnd == 0 else None
                    wall, peak = run_once(commands[name], keep)
                    walls[name].append(wall)
                    rss[name].append(peak)
                    print(
                        f"  round {rnd + 1}: {name:<10} {wall:7.2f} s  {peak:8.1f} MB", flush=True
                    )
        except CommandFailed as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"bench: cannot run a command: {exc}", file=sys.stderr)
            return 1
        found_resets = count_resets(json_out)

    median = {name: statistics.median(v) for name, v in walls.items()}
    peak_rss = {name: max(v) for name, v in rss.items()}
    ratio = median["tshark"] / median["rst-triage"] if median["rst-triage"] > 0 else float("inf")

    print()
    print(f"{'command':<40} {'median s':>9} {'peak RSS MB':>12}")
    for name in commands:
        print(f"{labels[name]:<40} {median[name]:>9.2f} {peak_rss[name]:>12.1f}")
    print(f"ratio tshark/rst-triage: {ratio:.2f}x")
    if expected_rsts is not None:
        seen = "no JSON 'resets' list" if found_resets is None else str(found_resets)
        print(
            f"resets reported by rst-triage: {seen} (RST packets in the capture: {expected_rsts})"
        )
    print()
    fast = ratio >= SPEEDUP_TARGET
    small = peak_rss["rst-triage"] < RSS_TARGET_MB
    print(
        f"{'PASS' if fast else 'FAIL'}  rst-triage >= {SPEEDUP_TARGET:g}x faster than tshark "
        f"({ratio:.2f}x)"
    )
    print(
        f"{'PASS' if small else 'FAIL'}  rst-triage peak RSS < {RSS_TARGET_MB:g} MB "
        f"({peak_rss['rst-triage']:.1f} MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
