"""Playbooks as data: ``playbooks/*.toml`` in the project, plus the user's own.

A playbook is an ordered list of steps; each step has a title, why it matters, the shell
commands a human would run, the check that automates it (or ``manual = true`` for a step a
human ticks by hand) and, per outcome, what it means and what to decide. Files are validated
when loaded: a bad one gives a :class:`PlaybookError` naming the file and the field.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.9/3.10 only
    import tomli as tomllib

BUILTIN_ORDER = ("first", "second", "third")
# automated outcomes come from CheckResult.status; manual steps are ticked done or skipped
AUTO_OUTCOMES = ("ok", "warn", "fail", "info", "skipped", "error")
MANUAL_OUTCOMES = ("done", "skipped")
SPECIAL_CHECKS = ("capture", "analysis")  # run by the app itself, not by tui.checks


class PlaybookError(Exception):
    """A playbook file that cannot be used; ``str()`` is one line naming file and field."""


@dataclass
class Outcome:
    meaning: str
    decision: str


@dataclass
class Step:
    id: str
    title: str
    why: str
    commands: list[str]
    check: Optional[str] = None
    manual: bool = False
    outcomes: dict[str, Outcome] = field(default_factory=dict)

    def outcome(self, status: str) -> Optional[Outcome]:
        return self.outcomes.get(status)


@dataclass
class Playbook:
    id: str
    title: str
    summary: str
    steps: list[Step]
    path: str


def builtin_dir() -> Path:
    override = os.environ.get("RST_TRIAGE_PLAYBOOKS")
    return Path(override) if override else Path(__file__).resolve().parents[1] / "playbooks"


def user_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "rst-triage" / "playbooks"


def _known_checks() -> set[str]:
    from tui.checks import CHECKS

    return set(CHECKS) | set(SPECIAL_CHECKS)


def _text(where: str, table: dict[str, Any], key: str, required: bool = True) -> str:
    value = table.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        raise PlaybookError(f"{where}: '{key}' must be a non-empty string")
    return value.strip()


def load_file(path: Path) -> Playbook:
    where = str(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise PlaybookError(f"{where}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise PlaybookError(f"{where}: not valid TOML: {e}") from None
    pid = _text(where, data, "id")
    title = _text(where, data, "title")
    summary = _text(where, data, "summary", required=False)
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise PlaybookError(f"{where}: 'steps' must be a non-empty list of [[steps]] tables")
    known = _known_checks()
    steps: list[Step] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_steps):
        at = f"{where}: steps[{i}]"
        if not isinstance(raw, dict):
            raise PlaybookError(f"{at}: must be a table")
        sid = _text(at, raw, "id")
        at = f"{where}: steps[{i}] ({sid})"
        if sid in seen:
            raise PlaybookError(f"{at}: duplicate step id")
        seen.add(sid)
        commands = raw.get("commands", [])
        if not isinstance(commands, list) or not all(isinstance(c, str) and c for c in commands):
            raise PlaybookError(f"{at}: 'commands' must be a list of strings")
        manual = raw.get("manual", False)
        if not isinstance(manual, bool):
            raise PlaybookError(f"{at}: 'manual' must be true or false")
        check = raw.get("check")
        if check is not None:
            if manual:
                raise PlaybookError(f"{at}: a manual step cannot also name a 'check'")
            if check not in known:
                raise PlaybookError(f"{at}: unknown check {check!r} (known: {', '.join(sorted(known))})")
        elif not manual:
            raise PlaybookError(f"{at}: give either 'check = \"ID\"' or 'manual = true'")
        allowed = MANUAL_OUTCOMES if manual else AUTO_OUTCOMES
        outcomes: dict[str, Outcome] = {}
        raw_out = raw.get("outcomes", {})
        if not isinstance(raw_out, dict):
            raise PlaybookError(f"{at}: 'outcomes' must be a table")
        for name, body in raw_out.items():
            if name not in allowed:
                raise PlaybookError(f"{at}: outcome {name!r} is not one of {', '.join(allowed)}")
            if not isinstance(body, dict):
                raise PlaybookError(f"{at}: outcomes.{name} must be a table")
            outcomes[name] = Outcome(
                _text(f"{at}: outcomes.{name}", body, "meaning"),
                _text(f"{at}: outcomes.{name}", body, "decision"),
            )
        steps.append(
            Step(
                id=sid,
                title=_text(at, raw, "title"),
                why=_text(at, raw, "why"),
                commands=list(commands),
                check=check,
                manual=manual,
                outcomes=outcomes,
            )
        )
    return Playbook(pid, title, summary, steps, where)


def load_all(extra_dir: Optional[Path] = None) -> list[Playbook]:
    """The built-in playbooks (first, second, third) and then the user's, by file name."""
    base = builtin_dir()
    books = []
    for name in BUILTIN_ORDER:
        path = base / f"{name}.toml"
        if not path.is_file():
            raise PlaybookError(f"{path}: built-in playbook missing")
        books.append(load_file(path))
    mine = extra_dir if extra_dir is not None else user_dir()
    if mine.is_dir():
        for path in sorted(mine.glob("*.toml")):
            book = load_file(path)
            if any(b.id == book.id for b in books):
                raise PlaybookError(f"{path}: id {book.id!r} is already used by another playbook")
            books.append(book)
    return books
