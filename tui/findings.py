"""Findings: everything an investigation has learned, autosaved as it arrives.

One JSON file per session under ``$XDG_STATE_HOME/rst-triage/sessions/`` (default
``~/.local/state``), written atomically with mode 0600 after every change, so a dropped SSH
session loses nothing: ``rst-triage --resume`` and ``rst-triage report`` read it back.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

SCHEMA = "rst-triage/findings/1"


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "rst-triage"


@dataclass
class Flow:
    peer_host: Optional[str] = None
    peer_port: Optional[int] = None
    client: Optional[str] = None
    proxy: Optional[str] = None
    server: Optional[str] = None
    iface: Optional[str] = None
    client_idle: Optional[float] = None
    url: Optional[str] = None  # for the HTTP keep-alive probe

    def describe(self) -> str:
        parts = []
        if self.peer_host:
            host = f"[{self.peer_host}]" if ":" in self.peer_host else self.peer_host
            parts.append(f"peer {host}:{self.peer_port}" if self.peer_port else f"peer {self.peer_host}")
        for role in ("client", "proxy", "server"):
            value = getattr(self, role)
            if value:
                parts.append(f"{role} {value}")
        if self.iface:
            parts.append(f"interface {self.iface}")
        if self.client_idle:
            parts.append(f"client pool idle {self.client_idle:g}s")
        return ", ".join(parts) or "not set"


@dataclass
class CaptureRef:
    path: str
    sha256: str
    packets: int
    resets: int
    vantage: str = "unknown"


@dataclass
class StepNote:
    status: str  # done | skipped
    note: str
    at: float


@dataclass
class Findings:
    id: str
    host: str
    created: float
    updated: float
    flow: Flow = field(default_factory=Flow)
    checks: dict[str, dict] = field(default_factory=dict)  # check id -> CheckResult.to_json()
    captures: list[CaptureRef] = field(default_factory=list)
    analysis: Optional[dict] = None  # Analysis.to_json() over all captures
    notes: dict[str, StepNote] = field(default_factory=dict)  # "playbook/step" -> note

    @classmethod
    def new(cls) -> Findings:
        now = time.time()
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
        return cls(id=f"{stamp}-{os.getpid()}", host=socket.gethostname(), created=now, updated=now)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["schema"] = SCHEMA
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Findings:
        if d.get("schema") != SCHEMA:
            raise ValueError(f"not a findings file (schema {d.get('schema')!r})")
        return cls(
            id=str(d["id"]),
            host=str(d.get("host", "")),
            created=float(d["created"]),
            updated=float(d["updated"]),
            flow=Flow(**d.get("flow", {})),
            checks=dict(d.get("checks", {})),
            captures=[CaptureRef(**c) for c in d.get("captures", [])],
            analysis=d.get("analysis"),
            notes={k: StepNote(**v) for k, v in d.get("notes", {}).items()},
        )


def write_private(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600, also if it existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # the mode argument only applies to a file created now
    with os.fdopen(fd, "w") as f:
        f.write(text)


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class SessionStore:
    """Where findings live on disk: one file per session, written atomically, mode 0600."""

    def __init__(self, root: Optional[Path] = None) -> None:
        self.root = (root or state_dir()) / "sessions"

    def path(self, findings: Findings) -> Path:
        return self.root / f"{findings.id}.json"

    def save(self, findings: Findings) -> Path:
        findings.updated = time.time()
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = self.path(findings)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.root)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(findings.to_json(), f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return target

    def latest(self) -> Optional[Path]:
        if not self.root.is_dir():
            return None
        files = sorted(self.root.glob("*.json"), key=lambda p: p.stat().st_mtime)
        return files[-1] if files else None

    @staticmethod
    def load(path: Path) -> Findings:
        try:
            with open(path) as f:
                return Findings.from_json(json.load(f))
        except FileNotFoundError:
            raise ValueError(f"{path}: no such session file") from None
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: damaged session file ({e})") from None
