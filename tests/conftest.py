"""Shared fixtures. The lab (tests/lab) is built once per session, only if a test asks for it.

Lab tests need root. When the lab cannot be built they skip, unless RST_TRIAGE_REQUIRE_LAB=1
(CI), where they fail with the reason instead.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # plain `pytest` (not `python -m pytest`) does not add it
    sys.path.insert(0, str(REPO_ROOT))

from tests.lab.netlab import Lab, LabError  # noqa: E402
from tests.lab.session import LabSession, lab_unavailable  # noqa: E402


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _built_lab() -> Iterator[Lab]:
    """Build a lab (skip, or fail under RST_TRIAGE_REQUIRE_LAB=1, when it cannot be built),
    yield it, and always remove it, checking that no namespace is left behind."""
    try:
        Lab.preflight()
    except LabError as exc:
        lab_unavailable(str(exc))
    # SIGTERM (e.g. a CI timeout) unwinds like Ctrl-C, so the namespaces are still removed.
    old_handler = None
    if threading.current_thread() is threading.main_thread():
        old_handler = signal.signal(signal.SIGTERM, _interrupt)
    lab = Lab()
    try:
        try:
            lab.__enter__()  # on failure it has already cleaned up after itself
        except LabError as exc:
            lab_unavailable(f"cannot build the lab: {exc}")
        try:
            yield lab
        finally:
            lab.close()
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                check=False).stdout.split()
        leftover = [ns for ns in lab.ns.values() if ns in listed]
        assert not leftover, f"lab namespaces left behind: {leftover}"
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)


@pytest.fixture(scope="session")
def lab_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabSession]:
    """The scenario lab, built once per run; each scenario runs at most once."""
    for lab in _built_lab():
        yield LabSession(lab, tmp_path_factory.mktemp("lab"))


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """A lab of its own for one test module (the checks change sysctls and rules in it)."""
    yield from _built_lab()
