"""Running the project as the unprivileged user ``nobody`` (setpriv), for tests.

The venv's interpreter may live under a directory only root can enter (pyenv in /root);
then the system python3 of the same version runs with the venv's packages on its path.
When neither works, the test fails under RST_TRIAGE_REQUIRE_LAB=1 (CI) and skips otherwise.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.lab.session import lab_unavailable

REPO_ROOT = Path(__file__).resolve().parents[1]
AS_NOBODY = ("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups")


@functools.lru_cache(maxsize=1)
def nobody_python() -> tuple[str, ...]:
    """``setpriv ... env PYTHONPATH=... PYTHON``: a Python as nobody with the project's packages."""
    if shutil.which("setpriv") is None:
        lab_unavailable("setpriv (util-linux) is missing")
    if os.geteuid() != 0:
        lab_unavailable("switching to nobody needs root")
    purelib = sysconfig.get_paths()["purelib"]
    candidates = [(sys.executable, str(REPO_ROOT))]
    system = shutil.which("python3", path="/usr/bin:/bin")
    if system:
        candidates.append((system, f"{REPO_ROOT}{os.pathsep}{purelib}"))
    tried = []
    for exe, path in candidates:
        argv = (*AS_NOBODY, "env", "-C", str(REPO_ROOT), f"PYTHONPATH={path}", exe)
        code = "import sys, pyroute2, tui; print(sys.version_info[:2])"
        probe = subprocess.run([*argv, "-c", code], capture_output=True, text=True, timeout=20, check=False)
        if probe.returncode == 0 and probe.stdout.strip() == str(tuple(sys.version_info[:2])):
            return argv
        tried.append(f"{exe}: {(probe.stderr or probe.stdout).strip()[-200:]}")
    lab_unavailable("no Python with the project's packages can run as nobody: " + "; ".join(tried))
