"""What the pytest fixture hands to lab tests: one lab, each scenario run at most once.

Lab tests need root. When the lab cannot be built they skip, unless RST_TRIAGE_REQUIRE_LAB=1
(CI), where they fail with the reason instead.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

from tests.lab.netlab import Lab, LabError
from tests.lab.scenarios import SCENARIOS, ScenarioResult, missing_needs


def lab_required() -> bool:
    return os.environ.get("RST_TRIAGE_REQUIRE_LAB") == "1"


def lab_unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it when the lab is required."""
    if lab_required():
        pytest.fail(f"RST_TRIAGE_REQUIRE_LAB=1 but the lab is unavailable: {reason}",
                    pytrace=False)
    pytest.skip(f"lab unavailable: {reason}")


class LabSession:
    """One built lab; ``result(name)`` runs a scenario on first request and caches it."""

    def __init__(self, lab: Lab, outdir: Path) -> None:
        self.lab = lab
        self.outdir = outdir
        self._results: dict[str, ScenarioResult | BaseException] = {}

    def result(self, name: str) -> ScenarioResult:
        spec = SCENARIOS[name]
        missing = missing_needs(spec)
        if missing:
            lab_unavailable(f"scenario {name} needs {', '.join(missing)}")
        if name not in self._results:
            scenario_dir = self.outdir / name
            scenario_dir.mkdir()
            try:
                result = spec.run(self.lab, scenario_dir)
                result.write_truth(scenario_dir)
                self._results[name] = result
            except (LabError, OSError, ValueError, subprocess.SubprocessError) as exc:
                self._results[name] = exc
        outcome = self._results[name]
        if isinstance(outcome, BaseException):
            # The lab was built, so a scenario that breaks is a real failure, never a skip.
            pytest.fail(f"scenario {name} failed: {outcome} (files: {self.outdir / name})",
                        pytrace=False)
        return outcome
