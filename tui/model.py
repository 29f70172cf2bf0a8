"""Plain data shared by the analysis, the verdict, the CLI and (later) the TUI."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

ROLES = ("client", "proxy", "server", "middlebox", "unknown")
CAUSES = (
    "no-listener",
    "firewall-reject",
    "idle-close-reuse",
    "abort",
    "upstream-reset",
    "proxy-abort",
    "injected",
    "nat-conntrack-invalid",
    "state-expired",
    "unknown",
)
SCHEMA = "rst-triage/analysis/1"


@dataclass
class Hints:
    """What the user told us: addresses per role, and which capture was taken where."""

    client: list[str] = field(default_factory=list)
    proxy: list[str] = field(default_factory=list)
    server: list[str] = field(default_factory=list)
    vantage: dict[str, str] = field(default_factory=dict)  # capture path -> role

    def role_of(self, ip: str) -> Optional[str]:
        for role in ("proxy", "server", "client"):
            if ip in getattr(self, role):
                return role
        return None


@dataclass
class CaptureInfo:
    path: str
    format: str
    linktype: str
    packets: int
    vantage: str
    vantage_host: Optional[str]
    warnings: list[str] = field(default_factory=list)
    resets_total: int = 0
    clock_offset: float = 0.0  # seconds to add to this capture's times to align on the first

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "format": self.format,
            "linktype": self.linktype,
            "packets": self.packets,
            "vantage": self.vantage,
            "vantage_host": self.vantage_host,
        }


@dataclass
class ResetEvent:
    """One RST seen at one vantage point, classified."""

    time: float
    capture: str
    frame: int
    src: str
    sport: int
    dst: str
    dport: int
    conn_state: str
    history: str
    origin: str
    cause: str
    confidence: float
    evidence: list[str]
    next_steps: list[str] = field(default_factory=list)
    seq: int = 0
    ack: int = 0
    flags: int = 0
    ttl: int = 0
    ip_id: Optional[int] = None
    aligned_time: float = 0.0
    secondary: bool = False

    def to_json(self) -> dict:
        return {
            "time": round(self.time, 9),
            "capture": self.capture,
            "src": self.src,
            "sport": self.sport,
            "dst": self.dst,
            "dport": self.dport,
            "conn_state": self.conn_state,
            "origin": self.origin,
            "cause": self.cause,
            "confidence": round(self.confidence, 2),
            "evidence": list(self.evidence),
        }


@dataclass
class Verdict:
    origin: str
    cause: str
    confidence: float
    summary: str
    next_steps: list[str]
    evidence: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "origin": self.origin,
            "cause": self.cause,
            "confidence": round(self.confidence, 2),
            "summary": self.summary,
            "next_steps": list(self.next_steps),
        }


@dataclass
class Analysis:
    captures: list[CaptureInfo]
    roles: dict[str, str]
    resets: list[ResetEvent]
    verdict: Verdict
    resets_total: int = 0

    def to_json(self) -> dict:
        return {
            "schema": SCHEMA,
            "captures": [c.to_json() for c in self.captures],
            "roles": dict(self.roles),
            "resets": [r.to_json() for r in self.resets],
            "verdict": self.verdict.to_json(),
        }
