"""Decode the RST diagnostic payload of draft-boucadair-tcpm-rst-diagnostic-payload.

The payload is a CBOR sequence: the magic cookie 12345 (the draft's placeholder for its RFC
number), then a map {1: reason-code, 2: private enterprise number, 3: description}. Only the
few CBOR forms that format uses are decoded; anything else is "not a diagnostic payload".
"""

from __future__ import annotations

from typing import Optional

MAGIC = 12345
FAILURE_CAUSES = {
    1: "illegal option",
    2: "desynchronized state",
    3: "new data received after CLOSE",
    4: "ABORT",
    5: "unexpected ACK in a non-synchronized state",
    6: "unexpected SYN in the window",
    7: "unexpected security compartment",
    8: "malformed message",
    9: "not authorized",
    10: "resource exceeded",
    11: "network failure",
    12: "reset received from the peer",
    13: "destination unreachable",
    14: "connection timeout",
    15: "too much outstanding data",
    16: "unacceptable performance",
    17: "middlebox interference",
}


class _Bad(Exception):
    pass


def _item(b: bytes, i: int) -> tuple[object, int]:
    if i >= len(b):
        raise _Bad
    major, info = b[i] >> 5, b[i] & 0x1F
    i += 1
    if info < 24:
        n = info
    elif info in (24, 25, 26):
        size = 1 << (info - 24)
        if i + size > len(b):
            raise _Bad
        n = int.from_bytes(b[i : i + size], "big")
        i += size
    else:
        raise _Bad
    if major == 0:
        return n, i
    if major == 3:
        if i + n > len(b):
            raise _Bad
        return b[i : i + n].decode("utf-8", "replace"), i + n
    if major == 4:
        items = []
        for _ in range(n):
            v, i = _item(b, i)
            items.append(v)
        return items, i
    if major == 5:
        m = {}
        for _ in range(n):
            k, i = _item(b, i)
            v, i = _item(b, i)
            m[k] = v
        return m, i
    raise _Bad


def describe(payload: bytes) -> Optional[str]:
    """A one-line description of a diagnostic payload, or None if it is not one."""
    try:
        first, i = _item(payload, 0)
        if isinstance(first, list) and len(first) == 2:  # wrapped in an array
            first, reason = first
        else:
            reason, i = _item(payload, i)
    except _Bad:
        return None
    if first != MAGIC or not isinstance(reason, dict):
        return None
    parts = []
    code = reason.get(1)
    if isinstance(code, int):
        pen = reason.get(2)
        if isinstance(pen, int):
            parts.append(f"vendor reason {code} (enterprise {pen})")
        else:
            parts.append(f"reason {code}: {FAILURE_CAUSES.get(code, 'unregistered')}")
    text = reason.get(3)
    if isinstance(text, str):
        parts.append(repr(text[:120]))
    return "; ".join(parts) if parts else None
