"""Build the lab, run the scenarios, keep their captures: ``python -m tests.lab.dump OUTDIR``.

Writes ``OUTDIR/<scenario>/<vantage>.pcap``, ``truth.json`` and logs. A scenario is written to a
scratch directory first and renamed into place when it is done, so a reader never sees half a
scenario. Exit status 1 if any scenario failed (the others still run).
"""
from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path
from types import FrameType

from tests.lab.netlab import Lab, LabError, count_resets
from tests.lab.scenarios import SCENARIOS, ScenarioResult, missing_needs


def run_scenario(lab: Lab, name: str, outdir: Path) -> ScenarioResult:
    """Run one scenario into ``outdir/name`` (replacing it) and write its truth.json."""
    final = outdir / name
    scratch = outdir / f".{name}.partial"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        result = SCENARIOS[name].run(lab, scratch)
        result.write_truth(scratch)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    scratch.rename(final)
    # Paths in the result now point into the scratch dir: re-anchor them.
    result.captures = {v: final / p.name for v, p in result.captures.items()}
    result.logs = {k: final / p.relative_to(scratch) for k, p in result.logs.items()}
    return result


def check_resets(result: ScenarioResult, counts: dict[str, int] | None = None) -> list[str]:
    """Lab sanity, independent of the analyzer: RSTs present/absent where the scenario says.

    ``counts`` (vantage -> RSTs) is computed with tshark when not given."""
    if counts is None:
        counts = {v: count_resets(p) for v, p in result.captures.items()}
    problems = []
    if not any(counts.values()):
        problems.append("no RST in any capture")
    for vantage, expected in result.rst_expected.items():
        if expected and not counts.get(vantage):
            problems.append(f"no RST at {vantage}")
        if not expected and counts.get(vantage):
            problems.append(f"{counts[vantage]} RST(s) at {vantage}, expected none")
    return problems


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab.dump", description=__doc__)
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--only", nargs="+", choices=sorted(SCENARIOS), metavar="SCENARIO",
                        help=f"run only these (default: all of {', '.join(SCENARIOS)})")
    args = parser.parse_args(argv)
    names = args.only or list(SCENARIOS)
    # Ctrl-C and kill both unwind through the lab's clean-up (SIGINT explicitly: a shell
    # starts background jobs with it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    failed = []
    started = time.monotonic()
    try:
        with Lab() as lab:
            print(f"lab {lab.tag} built in {time.monotonic() - started:.1f}s", flush=True)
            for name in names:
                missing = missing_needs(SCENARIOS[name])
                if missing:
                    failed.append(name)
                    print(f"SKIP {name}: missing {', '.join(missing)}", flush=True)
                    continue
                t0 = time.monotonic()
                try:
                    result = run_scenario(lab, name, args.outdir)
                except (LabError, OSError, ValueError) as exc:
                    failed.append(name)
                    print(f"FAIL {name}: {exc}", flush=True)
                    traceback.print_exc()
                    continue
                elapsed = time.monotonic() - t0
                counts = {v: count_resets(p) for v, p in result.captures.items()}
                problems = check_resets(result, counts)
                status = "FAIL" if problems else "ok  "
                if problems:
                    failed.append(name)
                shown = ", ".join(f"{v}={n}" for v, n in counts.items())
                print(f"{status} {name:24s} {elapsed:4.1f}s  RSTs: {shown}"
                      + (f"  problems: {'; '.join(problems)}" if problems else ""), flush=True)
    except LabError as exc:
        print(f"cannot build the lab: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc or 'Ctrl-C'}); lab removed", file=sys.stderr)
        return 130
    print(f"total {time.monotonic() - started:.1f}s; "
          f"{len(names) - len(failed)}/{len(names)} scenarios ok", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
