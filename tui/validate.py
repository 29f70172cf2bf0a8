"""Validation of user input (addresses, ports, interfaces, URLs, paths, durations).

Every function returns the clean value or raises :class:`InputError` with a one-line message
that names the bad value and says what would be accepted.
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Optional
from urllib.parse import urlsplit


class InputError(ValueError):
    pass


_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?$"
)
_IFNAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")


def ip(value: str, what: str = "address") -> str:
    try:
        return str(ipaddress.ip_address(value.strip().strip("[]")))
    except ValueError:
        raise InputError(f"{what} {value!r} is not an IPv4 or IPv6 address") from None


def host(value: str, what: str = "host") -> str:
    """An IP address or a DNS name (names are resolved later, by the check that needs them)."""
    v = value.strip().strip("[]")
    try:
        return str(ipaddress.ip_address(v))
    except ValueError:
        pass
    if not _HOSTNAME.match(v) or v.replace(".", "").isdigit():
        raise InputError(f"{what} {value!r} is neither an IP address nor a valid host name")
    return v


def port(value: str, what: str = "port") -> int:
    try:
        n = int(value)
    except ValueError:
        raise InputError(f"{what} {value!r} is not a number") from None
    if not 1 <= n <= 65535:
        raise InputError(f"{what} {n} is out of range (1-65535)")
    return n


def peer(value: str) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT, or IPv6 followed by .PORT is not accepted: use brackets."""
    v = value.strip()
    m = re.match(r"^\[([^\]]+)\]:(\d+)$", v)
    if m:
        return ip(m.group(1), "peer address"), port(m.group(2), "peer port")
    if v.count(":") == 1:
        h, p = v.split(":")
        return host(h, "peer host"), port(p, "peer port")
    if v.count(":") > 1:
        raise InputError(f"peer {value!r}: write an IPv6 peer as [ADDRESS]:PORT")
    raise InputError(f"peer {value!r}: expected HOST:PORT, e.g. 10.20.4.18:443")


def iface(value: str) -> str:
    if not _IFNAME.match(value):
        raise InputError(f"interface {value!r} is not a valid interface name")
    if not os.path.exists(f"/sys/class/net/{value}"):
        have = sorted(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net") else []
        hint = f" (this host has: {', '.join(have)})" if have else ""
        raise InputError(f"interface {value!r} does not exist{hint}")
    return value


def url(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https"):
        raise InputError(f"URL {value!r}: only http:// and https:// URLs can be probed")
    if not parts.hostname:
        raise InputError(f"URL {value!r} has no host")
    host(parts.hostname, "URL host")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise InputError(f"URL {value!r} has an invalid port") from None
    return value.strip()


def seconds(value: str, what: str, low: float = 0.0, high: Optional[float] = None) -> float:
    try:
        n = float(value)
    except ValueError:
        raise InputError(f"{what} {value!r} is not a number of seconds") from None
    if n != n or n <= low or (high is not None and n > high):
        upper = f" and at most {high:g}" if high is not None else ""
        raise InputError(f"{what} {value!r} must be more than {low:g}{upper}")
    return n


def count(value: str, what: str, high: Optional[int] = None) -> int:
    try:
        n = int(value)
    except ValueError:
        raise InputError(f"{what} {value!r} is not a whole number") from None
    if n < 1 or (high is not None and n > high):
        raise InputError(f"{what} {n} must be between 1 and {high if high else 'any'}")
    return n


def readable_file(value: str, what: str = "file") -> str:
    if not os.path.exists(value):
        raise InputError(f"{what} {value!r} does not exist")
    if os.path.isdir(value):
        raise InputError(f"{what} {value!r} is a directory")
    if not os.access(value, os.R_OK):
        raise InputError(f"{what} {value!r} is not readable (permission denied)")
    return value


def writable_path(value: str, what: str = "output file") -> str:
    d = os.path.dirname(os.path.abspath(value)) or "."
    if os.path.isdir(value):
        raise InputError(f"{what} {value!r} is a directory")
    if not os.path.isdir(d):
        raise InputError(f"{what} {value!r}: directory {d} does not exist")
    if not os.access(d, os.W_OK):
        raise InputError(f"{what} {value!r}: cannot write in {d} (permission denied)")
    return value
