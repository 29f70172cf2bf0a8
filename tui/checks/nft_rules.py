"""nft-rules: firewall rules that answer with a TCP reset, INVALID handling, NAT.

Reads ``nft -j list ruleset`` (root or CAP_NET_ADMIN). Where nft is missing, reads
``iptables-save`` and ``ip6tables-save`` instead; rules of a legacy iptables backend (invisible to
nft) are read with ``iptables-legacy-save`` when that exists. Both syntaxes are turned into one
small model (:class:`Rule`, :class:`Chain`, :class:`Ruleset`) that the ``conntrack-invalid-trap``
check reuses.

What it reports:

* every rule that rejects with a TCP reset (``reject with tcp reset``, iptables ``-j REJECT
  --reject-with tcp-reset``), with its table, chain, handle, its match written out, its own rate
  limit, a rate-limited accept just before it (the classic "accept N/s, reset the rest"), its
  counter and how much that counter rose during the window;
* whether such a rule can match the flow (``--peer``): it cannot when its address/port/family
  constraints exclude the peer on both the source and the destination side;
* plain ``reject`` on TCP: that answers with ICMP port-unreachable, not a RST (measured: the
  client gets "connection refused" on connect, and only a soft error mid-connection);
* how each base chain treats ``ct state invalid`` (drop / accept / reject / none → policy);
* the NAT rules (masquerade, snat, dnat, redirect).
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from tui.checks import CheckResult, Context, Unavailable, run_cmd

ID = "nft-rules"
TITLE = "Firewall rules that reset (nft / iptables)"
PLAYBOOK = "third"

HUMAN_NFT = "sudo nft -a list ruleset"
MAX_LISTED = 20  # rules listed in evidence / value; the rest are counted
MAX_JUMP_DEPTH = 8

# ---- the model -------------------------------------------------------------------------------

Item = tuple  # ("num", lo, hi) | ("net", network) | ("iprange", lo, hi) | ("str", s) | ("ref", name)


@dataclass
class Match:
    """One condition of a rule, reduced to what the analyses need."""

    kind: str  # saddr daddr sport dport ctstate l4proto nfproto other
    op: str  # "==" or "!="
    items: list = field(default_factory=list)
    text: str = ""


@dataclass
class Rule:
    family: str  # ip ip6 inet bridge netdev arp
    table: str
    chain: str
    handle: Optional[int]
    text: str
    matches: list[Match] = field(default_factory=list)
    verdict: Optional[str] = None  # accept drop reject return queue jump goto
    target: Optional[str] = None  # jump/goto target chain
    reject: Optional[str] = None  # "tcp reset", "icmpx port-unreachable", ...
    nat: Optional[str] = None  # masquerade snat dnat redirect
    limit: Optional[str] = None
    packets: Optional[int] = None  # the rule's counter, if it has one
    ct_vmap: dict[str, tuple[str, Optional[str]]] = field(default_factory=dict)
    compat: list[str] = field(default_factory=list)  # iptables-nft xt expressions
    source: str = "nft"

    @property
    def where(self) -> str:
        h = f" handle {self.handle}" if self.handle is not None else ""
        return f"{self.family} {self.table} {self.chain}{h}"

    def kinds(self, kind: str) -> list[Match]:
        return [m for m in self.matches if m.kind == kind]

    def tcp_only(self) -> bool:
        """The rule only matches TCP (so a reject without a type still concerns TCP)."""
        for m in self.matches:
            if m.kind == "l4proto" and m.op == "==" and any(i == ("str", "tcp") for i in m.items):
                return True
            if m.kind in ("sport", "dport") and m.text.startswith("tcp "):
                return True
        return False

    def family_hint(self) -> Optional[str]:
        """ip or ip6 when the rule can only see one address family; None when both."""
        if self.family in ("ip", "ip6"):
            return self.family
        for m in self.matches:
            if m.kind in ("saddr", "daddr"):
                if m.text.startswith("ip6 "):
                    return "ip6"
                if m.text.startswith("ip "):
                    return "ip"
            if m.kind == "nfproto" and m.op == "==" and len(m.items) == 1:
                v = str(m.items[0][1])
                return {"ipv4": "ip", "ipv6": "ip6"}.get(v)
        return None


@dataclass
class Chain:
    family: str
    table: str
    name: str
    hook: Optional[str] = None  # None: a regular chain, reached by jump/goto only
    type: Optional[str] = None  # filter nat route
    prio: Optional[int] = None
    policy: Optional[str] = None
    rules: list[Rule] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.family} {self.table} {self.name}"


@dataclass
class Ruleset:
    source: str  # "nft", "iptables-save", "nft + iptables-legacy-save"
    chains: dict[tuple[str, str, str], Chain] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)

    def rules(self) -> list[Rule]:
        return [r for c in self.chains.values() for r in c.rules]

    def base_chains(self) -> list[Chain]:
        return [c for c in self.chains.values() if c.hook is not None]

    def chain(self, family: str, table: str, name: str) -> Optional[Chain]:
        return self.chains.get((family, table, name))


# ---- nft JSON --------------------------------------------------------------------------------

_PORT_FIELDS = {"sport": "sport", "dport": "dport"}
_ADDR_FIELDS = {"saddr": "saddr", "daddr": "daddr"}
_BARE_META = {"iifname", "oifname", "iif", "oif", "mark", "skuid", "skgid", "iiftype", "oiftype"}


def _s(x: Any) -> str:
    """An nft JSON expression written the way `nft list ruleset` shows it (good enough to read)."""
    if x is None:
        return ""
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, (int, float, str)):
        return str(x)
    if isinstance(x, list):
        return ",".join(_s(i) for i in x)
    if not isinstance(x, dict) or not x:
        return json.dumps(x, separators=(",", ":"))
    key, val = next(iter(x.items()))
    if key == "payload" and isinstance(val, dict):
        if "protocol" in val:
            return f"{val['protocol']} {val.get('field', '')}".strip()
        return f"@{val.get('base', '?')},{val.get('offset', '?')},{val.get('len', '?')}"
    if key == "meta" and isinstance(val, dict):
        k = val.get("key", "")
        return k if k in _BARE_META else f"meta {k}"
    if key == "ct" and isinstance(val, dict):
        d = f" {val['dir']}" if val.get("dir") else ""
        fam = f" {val['family']}" if val.get("family") else ""
        return f"ct{d}{fam} {val.get('key', '')}"
    if key in ("set", "list") and isinstance(val, list):
        return "{ " + ", ".join(_s(i) for i in val) + " }"
    if key == "range" and isinstance(val, list) and len(val) == 2:
        return f"{_s(val[0])}-{_s(val[1])}"
    if key == "prefix" and isinstance(val, dict):
        return f"{val.get('addr')}/{val.get('len')}"
    if key == "elem" and isinstance(val, dict):
        return _s(val.get("val"))
    if key in ("&", "|", "^", "<<", ">>") and isinstance(val, list) and len(val) == 2:
        right = val[1]
        r = "(" + "|".join(_s(i) for i in right) + ")" if isinstance(right, list) else _s(right)
        return f"{_s(val[0])} {key} {r}"
    if key == "concat" and isinstance(val, list):
        return " . ".join(_s(i) for i in val)
    if key == "map" and isinstance(val, dict):
        return f"{_s(val.get('key'))} map {_s(val.get('data'))}"
    if key in ("tcp option", "ip option", "exthdr", "sctp chunk") and isinstance(val, dict):
        return f"{key} {val.get('name', '')} {val.get('field', '')}".strip()
    if key == "fib" and isinstance(val, dict):
        return f"fib {'.'.join(val.get('flags', []) or [])} {val.get('result', '')}".strip()
    if key in ("rt", "socket", "osf", "numgen", "jhash", "symhash", "hash") and isinstance(val, dict):
        return f"{key} {val.get('key', val.get('mode', ''))}".strip()
    return f"{key} {json.dumps(val, separators=(',', ':'))}"


def _limit_text(val: dict) -> str:
    over = "over " if val.get("inv") else ""
    unit = val.get("rate_unit", "")
    unit = f" {unit}" if unit and unit != "packets" else ""
    burst = val.get("burst")
    default_burst = 5 if not unit else 0
    b = ""
    if burst and burst != default_burst:
        b = f" burst {burst} {val.get('burst_unit', 'bytes' if unit else 'packets')}"
    return f"limit rate {over}{val.get('rate')}{unit}/{val.get('per', 'second')}{b}"


def _nat_text(kind: str, val: Any) -> str:
    if not isinstance(val, dict) or not val:
        return kind
    to = _s(val.get("addr")) if val.get("addr") is not None else ""
    if val.get("port") is not None:
        to = f"{to}:{_s(val['port'])}" if to else f":{_s(val['port'])}"
    if kind in ("masquerade", "redirect"):
        return f"{kind} to {to}" if to else kind
    fam = f"{val['family']} " if val.get("family") else ""
    return f"{kind} {fam}to {to}".strip()


def _items(right: Any) -> list:
    """The values on the right of a match, normalised for membership tests."""
    if isinstance(right, bool):
        return [("str", str(right).lower())]
    if isinstance(right, int):
        return [("num", right, right)]
    if isinstance(right, str):
        if right.startswith("@"):
            return [("ref", right)]
        try:
            return [("net", ipaddress.ip_network(right, strict=False))]
        except ValueError:
            return [("str", right)]
    if isinstance(right, list):
        out: list = []
        for r in right:
            out += _items(r)
        return out
    if isinstance(right, dict) and right:
        key, val = next(iter(right.items()))
        if key == "set" and isinstance(val, list):
            return _items(val)
        if key == "elem" and isinstance(val, dict):
            return _items(val.get("val"))
        if key == "range" and isinstance(val, list) and len(val) == 2:
            lo, hi = val
            if isinstance(lo, int) and isinstance(hi, int):
                return [("num", lo, hi)]
            try:
                return [("iprange", ipaddress.ip_address(lo), ipaddress.ip_address(hi))]
            except (ValueError, TypeError):
                return [("unknown", _s(right))]
        if key == "prefix" and isinstance(val, dict):
            try:
                return [("net", ipaddress.ip_network(f"{val['addr']}/{val['len']}", strict=False))]
            except (ValueError, KeyError, TypeError):
                return [("unknown", _s(right))]
    return [("unknown", _s(right))]


def _match_from_nft(m: dict) -> Match:
    left, right, op = m.get("left"), m.get("right"), m.get("op", "==")
    binop = isinstance(left, dict) and bool(left) and next(iter(left)) in ("&", "|", "^")
    text_op = "" if op == "in" or (op == "==" and not binop) else f"{op} "
    text = f"{_s(left)} {text_op}{_s(right)}"
    norm_op = "!=" if op == "!=" else "=="
    kind = "other"
    if isinstance(left, dict) and op in ("==", "!=", "in"):
        if "payload" in left and isinstance(left["payload"], dict):
            p = left["payload"]
            proto, fld = p.get("protocol"), p.get("field")
            if proto in ("ip", "ip6") and fld in _ADDR_FIELDS:
                kind = _ADDR_FIELDS[fld]
            elif proto in ("tcp", "th") and fld in _PORT_FIELDS:
                kind = _PORT_FIELDS[fld]
            elif proto in ("ip", "ip6") and fld in ("protocol", "nexthdr"):
                kind = "l4proto"
        elif "meta" in left and isinstance(left["meta"], dict):
            k = left["meta"].get("key")
            if k == "l4proto":
                kind = "l4proto"
            elif k == "nfproto":
                kind = "nfproto"
        elif "ct" in left and isinstance(left["ct"], dict):
            if left["ct"].get("key") == "state" and not left["ct"].get("dir"):
                kind = "ctstate"
    return Match(kind, norm_op, _items(right) if kind != "other" else [], text)


def _rule_from_nft(obj: dict) -> Rule:
    rule = Rule(family=str(obj.get("family", "?")), table=str(obj.get("table", "?")),
                chain=str(obj.get("chain", "?")), handle=obj.get("handle"), text="")
    parts: list[str] = []
    for e in obj.get("expr") or []:
        if not isinstance(e, dict) or not e:
            continue
        key, val = next(iter(e.items()))
        if key == "match" and isinstance(val, dict):
            m = _match_from_nft(val)
            rule.matches.append(m)
            parts.append(m.text)
        elif key in ("accept", "drop", "return", "continue"):
            if key != "continue":
                rule.verdict = key
            parts.append(key)
        elif key in ("jump", "goto") and isinstance(val, dict):
            rule.verdict, rule.target = key, str(val.get("target"))
            parts.append(f"{key} {rule.target}")
        elif key == "reject":
            rule.verdict = "reject"
            if isinstance(val, dict) and val.get("type"):
                t = str(val["type"])
                rule.reject = t if t == "tcp reset" else f"{t} {val.get('expr', 'port-unreachable')}"
            else:
                rule.reject = "icmp port-unreachable"
            parts.append("reject" + (f" with {rule.reject}" if rule.reject else ""))
        elif key == "counter":
            if isinstance(val, dict):
                rule.packets = int(val.get("packets", 0))
                parts.append(f"counter packets {val.get('packets', 0)} bytes {val.get('bytes', 0)}")
            else:
                parts.append(f"counter {_s(val)}")
        elif key == "limit" and isinstance(val, dict):
            rule.limit = _limit_text(val)
            parts.append(rule.limit)
        elif key in ("masquerade", "snat", "dnat", "redirect"):
            rule.nat = key
            rule.verdict = rule.verdict or "accept"
            parts.append(_nat_text(key, val))
        elif key == "vmap" and isinstance(val, dict):
            vkey, data = val.get("key"), val.get("data")
            parts.append(f"{_s(vkey)} vmap {_vmap_text(data)}")
            if isinstance(vkey, dict) and isinstance(vkey.get("ct"), dict) \
                    and vkey["ct"].get("key") == "state":
                rule.ct_vmap = _vmap_entries(data)
        elif key == "xt":
            name = val.get("name", "?") if isinstance(val, dict) else "?"
            typ = val.get("type", "") if isinstance(val, dict) else ""
            rule.compat.append(f"{typ} {name}".strip())
            parts.append(f"xt {typ} {name}".replace("  ", " ").strip())
            if typ == "target" and name in ("MASQUERADE", "SNAT", "DNAT", "REDIRECT"):
                rule.nat = name.lower()
            if typ == "target" and name == "REJECT":
                rule.verdict, rule.reject = "reject", "unknown (iptables REJECT)"
        elif key == "log":
            parts.append("log" + (f" prefix \"{val.get('prefix')}\"" if isinstance(val, dict)
                                  and val.get("prefix") else ""))
        elif key == "mangle" and isinstance(val, dict):
            parts.append(f"{_s(val.get('key'))} set {_s(val.get('value'))}")
        elif key == "queue":
            rule.verdict = "queue"
            parts.append("queue")
        else:
            parts.append(key if val is None else f"{key} {_s(val)}")
    rule.text = " ".join(p for p in parts if p)
    return rule


def _vmap_text(data: Any) -> str:
    entries = data.get("set") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return _s(data)
    out = []
    for pair in entries:
        if isinstance(pair, list) and len(pair) == 2:
            v = pair[1]
            vt = next(iter(v)) if isinstance(v, dict) and v else _s(v)
            if isinstance(v, dict) and isinstance(v.get(vt), dict) and "target" in v[vt]:
                vt = f"{vt} {v[vt]['target']}"
            out.append(f"{_s(pair[0])} : {vt}")
    return "{ " + ", ".join(out) + " }"


def _vmap_entries(data: Any) -> dict[str, tuple[str, Optional[str]]]:
    out: dict[str, tuple[str, Optional[str]]] = {}
    entries = data.get("set") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return out
    for pair in entries:
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], dict) and pair[1]):
            continue
        verdict, arg = next(iter(pair[1].items()))
        target = arg.get("target") if isinstance(arg, dict) else None
        keys = pair[0] if isinstance(pair[0], list) else [pair[0]]
        for k in keys:
            out[str(k)] = (verdict, target)
    return out


def parse_nft_json(text: str) -> Ruleset:
    """``nft -j list ruleset`` output as a :class:`Ruleset`."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"nft printed something that is not JSON: {e}") from None
    rs = Ruleset(source="nft")
    items = doc.get("nftables", []) if isinstance(doc, dict) else []
    for obj in items:
        if not isinstance(obj, dict):
            continue
        if "chain" in obj and isinstance(obj["chain"], dict):
            c = obj["chain"]
            key = (str(c.get("family")), str(c.get("table")), str(c.get("name")))
            rs.chains[key] = Chain(*key, hook=c.get("hook"), type=c.get("type"),
                                   prio=_int_or_none(c.get("prio")), policy=c.get("policy"))
        elif "rule" in obj and isinstance(obj["rule"], dict):
            r = _rule_from_nft(obj["rule"])
            key = (r.family, r.table, r.chain)
            chain = rs.chains.setdefault(key, Chain(*key))
            chain.rules.append(r)
    return rs


def _int_or_none(v: Any) -> Optional[int]:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


# ---- iptables-save ---------------------------------------------------------------------------

_IPT_HOOKS = {"INPUT": "input", "FORWARD": "forward", "OUTPUT": "output",
              "PREROUTING": "prerouting", "POSTROUTING": "postrouting"}
_IPT_PRIO = {"raw": -300, "mangle": -150, "nat": -100, "filter": 0, "security": 50}
_IPT_NAT_TARGETS = {"MASQUERADE": "masquerade", "SNAT": "snat", "DNAT": "dnat", "REDIRECT": "redirect"}
_IPT_VALUELESS = {"--syn", "--log-uid", "--log-tcp-sequence", "--log-tcp-options", "--log-ip-options",
                  "--random", "--random-fully", "--persistent", "--rcheck", "--update", "--set",
                  "--remove", "--rsource", "--rdest", "--reap", "--nodst", "--log-macdecode"}


def _ipt_ports(spec: str) -> list:
    out: list = []
    for part in spec.split(","):
        lo, sep, hi = part.partition(":")
        try:
            a = int(lo) if lo else 0
            b = int(hi) if hi else (65535 if sep else a)
            out.append(("num", a, b))
        except ValueError:
            out.append(("str", part))
    return out


def _ipt_addrs(spec: str) -> list:
    out: list = []
    for part in spec.split(","):
        try:
            out.append(("net", ipaddress.ip_network(part, strict=False)))
        except ValueError:
            out.append(("str", part))
    return out


def parse_iptables_save(text: str, family: str = "ip", source: str = "iptables-save") -> Ruleset:
    """``iptables-save`` (family ip) or ``ip6tables-save`` (ip6) output as a :class:`Ruleset`."""
    rs = Ruleset(source=source)
    table = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line == "COMMIT":
            continue
        if line.startswith("*"):
            table = line[1:].strip()
            continue
        if line.startswith(":"):
            parts = line[1:].split()
            if parts:
                name = parts[0]
                policy = parts[1].lower() if len(parts) > 1 and parts[1] != "-" else None
                hook = _IPT_HOOKS.get(name) if policy else None
                rs.chains[(family, table, name)] = Chain(
                    family, table, name, hook=hook,
                    type=("nat" if table == "nat" else "filter") if hook else None,
                    prio=_IPT_PRIO.get(table) if hook else None, policy=policy)
            continue
        packets = None
        m = re.match(r"^\[(\d+):(\d+)\]\s+(.*)$", line)
        if m:  # iptables-save -c
            packets, line = int(m.group(1)), m.group(3)
        try:
            toks = shlex.split(line)
        except ValueError:
            toks = line.split()
        if len(toks) >= 2 and toks[0] in ("-A", "--append"):
            key = (family, table, toks[1])
            chain = rs.chains.setdefault(key, Chain(*key))
            chain.rules.append(_rule_from_ipt(family, table, toks[1], toks[2:], packets))
    # A target that names a chain of the same table is a jump; any other is a non-final target.
    for chain in rs.chains.values():
        for r in chain.rules:
            if r.verdict == "jump?":
                if r.target is not None and (family, chain.table, r.target) in rs.chains:
                    r.verdict = "jump"
                else:
                    r.verdict, r.target = None, None
    return rs


def _join(toks: list[str]) -> str:
    """The rule as iptables-save prints it (quotes only where a value has spaces)."""
    return " ".join(f'"{t}"' if (not t or any(c.isspace() for c in t)) else t for t in toks)


_IPT_PORT_OPTS = {"--dport": "dport", "--destination-port": "dport", "--dports": "dport",
                  "--destination-ports": "dport", "--sport": "sport", "--source-port": "sport",
                  "--sports": "sport", "--source-ports": "sport"}


def _rule_from_ipt(family: str, table: str, chain: str, toks: list[str],
                   packets: Optional[int]) -> Rule:
    rule = Rule(family=family, table=table, chain=chain, handle=None, text=_join(toks),
                packets=packets, source="iptables")
    neg = False
    proto = ""
    limit_parts: list[str] = []
    target = ""
    reject_with = ""
    i = 0
    while i < len(toks):
        t = toks[i]
        nv = toks[i + 1] if i + 1 < len(toks) else ""
        if t == "!":
            neg = True
            i += 1
            continue
        op = "!=" if neg else "=="
        bang = "! " if neg else ""
        neg = False
        if t in ("-s", "--source", "-d", "--destination"):
            kind = "saddr" if t in ("-s", "--source") else "daddr"
            rule.matches.append(Match(kind, op, _ipt_addrs(nv), f"{bang}{t} {nv}"))
            i += 2
        elif t in ("-p", "--protocol"):
            proto = nv.lower()
            rule.matches.append(Match("l4proto", op, [("str", proto)], f"{bang}-p {nv}"))
            i += 2
        elif t in _IPT_PORT_OPTS:
            # A udp/sctp port says nothing about the TCP flow: keep it as an opaque condition.
            kind = _IPT_PORT_OPTS[t] if proto in ("tcp", "") else "other"
            rule.matches.append(Match(kind, op, _ipt_ports(nv), f"{bang}{t} {nv}"))
            i += 2
        elif t in ("--ctstate", "--state"):
            states = [s.lower() for s in nv.split(",")]
            rule.matches.append(Match("ctstate", op, [("str", s) for s in states], f"{bang}{t} {nv}"))
            i += 2
        elif t == "--limit":
            limit_parts.insert(0, f"--limit {nv}")
            i += 2
        elif t == "--limit-burst":
            limit_parts.append(f"--limit-burst {nv}")
            i += 2
        elif t.startswith(("--hashlimit-", "--connlimit-")):
            limit_parts.append(f"{t} {nv}")
            i += 2
        elif t in ("-j", "--jump"):
            target = nv
            i += 2
        elif t in ("-g", "--goto"):
            rule.verdict, rule.target = "goto", nv
            i += 2
        elif t == "--reject-with":
            reject_with = nv
            i += 2
        elif t in ("-c", "--set-counters"):
            rule.packets = _int_or_none(nv)
            i += 3
        elif t in ("-m", "--match", "--comment"):
            i += 2
        elif t in ("-i", "--in-interface", "-o", "--out-interface"):
            rule.matches.append(Match("other", op, [], f"{bang}{t} {nv}"))
            i += 2
        elif t.startswith("-"):
            # An option we do not interpret: a condition before -j, a target option after it.
            j = i + 1
            values = []
            if t not in _IPT_VALUELESS:
                while j < len(toks) and not toks[j].startswith("-") and toks[j] != "!":
                    values.append(toks[j])
                    j += 1
            if not target:
                rule.matches.append(Match("other", op, [], " ".join([bang + t, *values])))
            i = j
        else:
            i += 1
    if limit_parts:
        rule.limit = " ".join(limit_parts)
    if target:
        up = target.upper()
        if up in ("ACCEPT", "DROP", "RETURN", "QUEUE", "NFQUEUE"):
            rule.verdict = "queue" if up == "NFQUEUE" else up.lower()
        elif up == "REJECT":
            rule.verdict = "reject"
            w = reject_with or ("icmp-port-unreachable" if family == "ip" else "icmp6-port-unreachable")
            rule.reject = "tcp reset" if w == "tcp-reset" else w
        elif up in _IPT_NAT_TARGETS:
            rule.nat = _IPT_NAT_TARGETS[up]
            rule.verdict = "accept"
        else:
            rule.verdict, rule.target = "jump?", target  # resolved once all chains are known
    return rule


# ---- reading the live ruleset ----------------------------------------------------------------


def load_ruleset(timeout: float = 2.0) -> Ruleset:
    """The ruleset of this network namespace; raises Unavailable (with the command) if unreadable.

    nft first; iptables-save/ip6tables-save when nft is missing, or fails for a reason other
    than permissions (a kernel without nf_tables, where only legacy iptables works).
    """
    has_ipt = shutil.which("iptables-save") is not None or shutil.which("ip6tables-save") is not None
    nft_error = ""
    if shutil.which("nft") is not None:
        try:
            out = run_cmd(["nft", "-j", "list", "ruleset"], timeout=timeout, human=HUMAN_NFT)
        except Unavailable as e:
            if "permission" in e.reason or not has_ipt:
                raise
            nft_error = e.reason
        else:
            rs = parse_nft_json(out)
            rs.commands.append(HUMAN_NFT)
            compat_tables = {(r.family, r.table) for r in rs.rules() if r.compat}
            if compat_tables:
                rs.notes.append("some rules are iptables-nft compat expressions (xt) that nft "
                                "cannot show in full: `sudo iptables-save` shows them")
                _merge_iptables(rs, legacy=False, timeout=timeout, replace=compat_tables)
            _merge_iptables(rs, legacy=True, timeout=timeout)
            return rs
    if not has_ipt:
        raise Unavailable("neither nft nor iptables-save is installed",
                          "sudo nft list ruleset  # or: sudo iptables-save")
    rs = Ruleset(source="iptables-save")
    for binary, fam in (("iptables-save", "ip"), ("ip6tables-save", "ip6")):
        if shutil.which(binary) is None:
            continue
        out = run_cmd([binary], timeout=timeout, human=f"sudo {binary}")
        rs.chains.update(parse_iptables_save(out, fam, binary).chains)
        rs.commands.append(f"sudo {binary}")
    rs.notes.append(f"nft failed ({nft_error}): rules read with iptables-save" if nft_error else
                    "nft is not installed: rules read with iptables-save/ip6tables-save")
    return rs


def _merge_iptables(rs: Ruleset, legacy: bool, timeout: float,
                    replace: Optional[set[tuple[str, str]]] = None) -> None:
    """Add the rules of a legacy iptables backend (invisible to nft), or, for tables nft shows
    with xt compat expressions (iptables-nft), take the iptables view, which has the details."""
    tools = (("iptables-legacy-save", "ip"), ("ip6tables-legacy-save", "ip6")) if legacy else \
        (("iptables-save", "ip"), ("ip6tables-save", "ip6"))
    for binary, fam in tools:
        if shutil.which(binary) is None:
            continue
        try:
            out = run_cmd([binary], timeout=timeout, human=f"sudo {binary}")
        except Unavailable as e:
            rs.notes.append(f"{binary}: {e.reason}")
            continue
        if not legacy and "(legacy)" in out.split("\n", 1)[0]:
            continue  # this iptables-save is the legacy one: it does not show nft's tables
        part = parse_iptables_save(out, fam, binary)
        if not part.rules():
            continue
        if legacy:
            for chain in part.chains.values():
                chain.table += " (legacy)"
                for r in chain.rules:
                    r.table = chain.table
                rs.chains[(chain.family, chain.table, chain.name)] = chain
        else:
            tables = {t for (f, t) in (replace or set()) if f == fam}
            if not tables:
                continue
            for key in [k for k in rs.chains if k[0] == fam and k[1] in tables]:
                del rs.chains[key]
            rs.chains.update({k: c for k, c in part.chains.items() if k[1] in tables})
        rs.source += f" + {binary}"
        rs.commands.append(f"sudo {binary}")


# ---- analyses (shared with conntrack-invalid-trap) -------------------------------------------


def _contains_num(items: list, n: int) -> Optional[bool]:
    unknown = False
    for it in items:
        if it[0] == "num" and it[1] <= n <= it[2]:
            return True
        if it[0] not in ("num",):
            unknown = True
    return None if unknown else False


def _contains_addr(items: list, a: Union[ipaddress.IPv4Address, ipaddress.IPv6Address]) -> Optional[bool]:
    unknown = False
    for it in items:
        if it[0] == "net" and it[1].version == a.version and a in it[1]:
            return True
        if it[0] == "iprange" and it[1].version == a.version and it[1] <= a <= it[2]:
            return True
        if it[0] in ("ref", "str", "unknown"):
            unknown = True
    return None if unknown else False


def _test(m: Match, result: Optional[bool]) -> Optional[bool]:
    if result is None:
        return None
    return (not result) if m.op == "!=" else result


def could_match(rule: Rule, peer_host: Optional[str], peer_port: Optional[int],
                hook: Optional[str] = None) -> Optional[bool]:
    """Can ``rule`` see a packet of the flow to/from the peer? None: no peer given.

    A segment of the flow has the peer as its source (coming in) or as its destination (going
    out); the other end's address and port are unknown, so only the constraints on the peer's
    side can rule the flow out. On the input hook the peer can only be the source, on output
    only the destination (both on forward/prerouting/postrouting and in regular chains).
    """
    addr = None
    if peer_host:
        try:
            addr = ipaddress.ip_address(peer_host.strip("[]"))
        except ValueError:
            addr = None
    if addr is None and peer_port is None:
        return None
    if addr is not None:
        hint = rule.family_hint()
        if (hint == "ip" and addr.version == 6) or (hint == "ip6" and addr.version == 4):
            return False
    sides = [("saddr", "sport"), ("daddr", "dport")]
    if hook == "input":
        sides = sides[:1]
    elif hook == "output":
        sides = sides[1:]
    for a_kind, p_kind in sides:
        possible = True
        for m in rule.matches:
            if m.kind == a_kind and addr is not None:
                if _test(m, _contains_addr(m.items, addr)) is False:
                    possible = False
            elif m.kind == p_kind and peer_port is not None:
                if _test(m, _contains_num(m.items, peer_port)) is False:
                    possible = False
        if possible:
            return True
    return False


def matches_invalid(rule: Rule) -> bool:
    """The rule's ct state condition includes INVALID (a negated list without it also does)."""
    for m in rule.kinds("ctstate"):
        states = {str(i[1]).lower() for i in m.items if i[0] == "str"}
        if m.op == "==" and "invalid" in states:
            return True
        if m.op == "!=" and "invalid" not in states and states:
            return True
    return False


def _conditional(rule: Rule) -> bool:
    return any(m.kind != "ctstate" for m in rule.matches)


def invalid_verdict(
    rs: Ruleset, chain: Chain, depth: int = 0
) -> tuple[Optional[str], Optional[Rule], list[Rule]]:
    """The first unconditional verdict for a ct-INVALID packet in ``chain`` (following jumps).

    Returns (verdict or None when the packet falls off the chain, the deciding rule, the
    conditional rules that handle INVALID only for some packets).
    """
    partial: list[Rule] = []
    if depth > MAX_JUMP_DEPTH:
        return None, None, partial
    for r in chain.rules:
        verdict, target = r.verdict, r.target
        if r.ct_vmap:
            hit = r.ct_vmap.get("invalid")
            if hit is None:
                continue
            verdict, target = hit
        elif not matches_invalid(r):
            # A jump without conditions may hold the INVALID rule (iptables DOCKER-USER style).
            if r.verdict in ("jump", "goto") and not r.matches and r.target:
                sub = rs.chain(chain.family, chain.table, r.target)
                if sub is not None:
                    v, rr, p = invalid_verdict(rs, sub, depth + 1)
                    partial += p
                    if v is not None and v != "return":
                        return v, rr, partial
                    if r.verdict == "goto":
                        return None, None, partial
            continue
        if verdict is None:
            continue
        if _conditional(r) and not r.ct_vmap:
            partial.append(r)
            continue
        if verdict in ("jump", "goto") and target:
            sub = rs.chain(chain.family, chain.table, target)
            if sub is not None:
                v, rr, p = invalid_verdict(rs, sub, depth + 1)
                partial += p
                if v is not None and v != "return":
                    return v, rr, partial
            if verdict == "goto":
                return None, None, partial
            continue
        if verdict == "return":
            return "return", r, partial
        return verdict, r, partial
    return None, None, partial


def invalid_handling(rs: Ruleset) -> list[dict]:
    """Per base chain (filter hooks that see conntrack state): what happens to INVALID packets."""
    out = []
    for c in rs.base_chains():
        if c.hook not in ("prerouting", "input", "forward", "output") or c.type == "nat":
            continue
        if c.family not in ("ip", "ip6", "inet"):
            continue
        if c.hook == "prerouting" and c.prio is not None and c.prio <= -200:
            continue  # runs before conntrack: ct state is not known yet
        verdict, rule, partial = invalid_verdict(rs, c)
        if verdict in (None, "return"):
            handling = f"none (policy {c.policy or 'accept'})"
        else:
            handling = verdict
        out.append({
            "chain": c.label, "family": c.family, "table": c.table, "name": c.name, "hook": c.hook,
            "policy": c.policy or "accept", "invalid": handling,
            "rule": f"{rule.where}: {rule.text}" if rule is not None else None,
            "conditional": [f"{r.where}: {r.text}" for r in partial],
        })
    return out


def nat_rules(rs: Ruleset) -> list[Rule]:
    return [r for r in rs.rules() if r.nat]


def families_of(rule: Rule) -> set[str]:
    hint = rule.family_hint()
    return {hint} if hint else {"ip", "ip6"}


def covers(chain_family: str) -> set[str]:
    return {"inet": {"ip", "ip6"}, "ip": {"ip"}, "ip6": {"ip6"}}.get(chain_family, set())


# ---- the check -------------------------------------------------------------------------------


def _reset_rules(rs: Ruleset) -> list[Rule]:
    return [r for r in rs.rules() if r.verdict == "reject" and r.reject == "tcp reset"]


def _icmp_rejects_on_tcp(rs: Ruleset) -> list[Rule]:
    return [r for r in rs.rules() if r.verdict == "reject" and r.reject != "tcp reset"
            and r.reject is not None and r.tcp_only()]


def _limited_accept_before(rs: Ruleset, rule: Rule) -> Optional[Rule]:
    """The nearest earlier rate-limited accept in the same chain for the same traffic.

    "Same traffic": one rule's conditions are a subset of the other's (``tcp dport 443 ct state
    new limit rate 50/second accept`` then ``tcp dport 443 ct state new reject with tcp reset``).
    """
    chain = rs.chain(rule.family, rule.table, rule.chain)
    if chain is None:
        return None
    mine = {m.text for m in rule.matches}
    before = None
    for r in chain.rules:
        if r is rule:
            return before
        theirs = {m.text for m in r.matches}
        if r.limit and r.verdict == "accept" and (theirs <= mine or mine <= theirs):
            before = r
    return None


def _key(r: Rule) -> tuple:
    return (r.family, r.table, r.chain, r.handle, r.text if r.handle is None else "")


def run(ctx: Context) -> CheckResult:
    try:
        rs = load_ruleset(timeout=min(2.0, ctx.timeout))
    except Unavailable as e:
        return CheckResult(
            ID, TITLE, "skipped", f"not checked: {e.reason}", None, [e.reason], e.command,
            "The firewall rules could not be read here, so a reject rule answering for the server "
            "is neither confirmed nor ruled out.",
            "Run it by hand and look for 'reject with tcp reset' (iptables: '--reject-with "
            "tcp-reset'), 'limit rate' just before it, masquerade/snat and 'ct state invalid': "
            + e.command)
    resets = _reset_rules(rs)
    with_counter = [r for r in resets if r.packets is not None]
    deltas: dict[tuple, int] = {}
    if with_counter and ctx.window > 0:
        ctx.say(ID, f"reading reset rule counters again in {ctx.window:g}s")
        time.sleep(ctx.window)
        try:
            later = {_key(r): r.packets for r in _reset_rules(load_ruleset(timeout=min(2.0, ctx.timeout)))}
            for r in with_counter:
                k = _key(r)
                if later.get(k) is not None and r.packets is not None:
                    deltas[k] = max(0, int(later[k] or 0) - r.packets)
        except Unavailable:
            pass
    return evaluate(rs, ctx.peer_host, ctx.peer_port, deltas, ctx.window)


def evaluate(rs: Ruleset, peer_host: Optional[str], peer_port: Optional[int],
             deltas: Optional[dict[tuple, int]] = None, window: float = 0.0) -> CheckResult:
    """Judge a parsed ruleset (separate from reading it, so fixtures can be judged too)."""
    deltas = deltas or {}
    resets = _reset_rules(rs)
    icmp = _icmp_rejects_on_tcp(rs)
    handling = invalid_handling(rs)
    nats = nat_rules(rs)
    nat_count: dict[str, int] = {}
    for r in nats:
        nat_count[r.nat or "?"] = nat_count.get(r.nat or "?", 0) + 1
    peer = _peer_label(peer_host, peer_port)

    listed: list[dict] = []
    can, cannot, firing = 0, 0, 0
    for r in resets:
        hook = (rs.chain(r.family, r.table, r.chain) or Chain("", "", "")).hook
        cm = could_match(r, peer_host, peer_port, hook)
        before = _limited_accept_before(rs, r)
        d = deltas.get(_key(r))
        entry = {
            "family": r.family, "table": r.table, "chain": r.chain, "handle": r.handle,
            "hook": hook,
            "match": " ".join(m.text for m in r.matches) or "(every packet)",
            "rule": r.text, "rate_limit": r.limit,
            "limited_accept_before": f"{before.where}: {before.text}" if before else None,
            "counter_packets": r.packets, "packets_in_window": d,
            "could_match_peer": cm, "source": r.source,
        }
        listed.append(entry)
        if cm is False:
            cannot += 1
        else:
            can += 1
        if d:
            firing += 1

    evidence: list[str] = [f"ruleset read with {rs.source}: {len(rs.rules())} rules in "
                           f"{len(rs.chains)} chains"]
    for e in listed[:MAX_LISTED]:
        where = f"{e['family']} {e['table']} {e['chain']}" + (
            f" handle {e['handle']}" if e["handle"] is not None else "")
        evidence.append(f"RESET rule {where}: {e['rule']}")
        extra = []
        if e["rate_limit"]:
            extra.append(f"its own rate limit: {e['rate_limit']}")
        if e["limited_accept_before"]:
            extra.append(f"after a rate-limited accept ({e['limited_accept_before']}): it resets "
                         "what exceeds that rate")
        if e["counter_packets"] is not None:
            c = f"counter {e['counter_packets']} packets"
            if e["packets_in_window"] is not None:
                c += f", +{e['packets_in_window']} in {window:g}s"
            extra.append(c)
        if peer:
            extra.append({True: f"can match {peer}", False: f"cannot match {peer}",
                          None: "peer unknown"}[e["could_match_peer"]])
        if extra:
            evidence.append("    " + "; ".join(extra))
    if len(listed) > MAX_LISTED:
        evidence.append(f"... and {len(listed) - MAX_LISTED} more reset rules")
    for r in icmp[:MAX_LISTED]:
        evidence.append(f"reject on TCP without 'tcp reset' {r.where}: {r.text} "
                        f"(answers with ICMP {r.reject}: an error such as 'connection refused', "
                        "never a RST)")
    for h in handling:
        line = f"ct state invalid in {h['chain']} (hook {h['hook']}): {h['invalid']}"
        if h["rule"]:
            line += f" [{h['rule']}]"
        if h["conditional"]:
            line += f"; only for some packets: {'; '.join(h['conditional'])}"
        evidence.append(line)
    if not handling:
        evidence.append("no filter base chain: nothing drops ct state invalid packets")
    evidence.append("NAT rules: " + (", ".join(f"{n} {k}" for k, n in sorted(nat_count.items()))
                                     if nat_count else "none"))
    for r in nats[:5]:
        evidence.append(f"    {r.where}: {r.text}")
    evidence += rs.notes

    value = {
        "source": rs.source, "rules": listed, "rules_total": len(rs.rules()),
        "icmp_rejects_on_tcp": [{"where": r.where, "rule": r.text, "answers": r.reject} for r in icmp],
        "invalid_handling": handling, "nat": nat_count, "peer": peer or None,
    }
    command = "; ".join(rs.commands) or HUMAN_NFT
    if resets:
        command += "  # then: sudo nft list chain FAMILY TABLE CHAIN (counters of the reset rules)"

    if not resets:
        status = "info" if icmp else "ok"
        summary = (f"no rule answers with a TCP reset ({len(rs.rules())} rules"
                   + (f"; {len(icmp)} plain reject on TCP (ICMP, not RST)" if icmp else "")
                   + (f"; NAT: {sum(nat_count.values())}" if nat_count else "") + ")")
        meaning = ("The firewall here does not forge resets: a RST seen from this host was sent by a "
                   "TCP stack (this one, or the far end), not by a reject rule.")
        if icmp:
            meaning += (" The plain reject rules on TCP answer with ICMP port-unreachable: a client "
                        "sees 'connection refused' on connect, never 'connection reset by peer'.")
        decision = "Rule out local firewall rejects; look at the stacks and middleboxes on the path."
    else:
        if firing or can:
            status = "warn"
        else:
            status = "info"
        parts = [f"{len(resets)} rule(s) reject with tcp reset"]
        if peer:
            parts.append(f"{can} can match {peer}, {cannot} cannot")
        if firing:
            parts.append(f"{firing} fired during the {window:g}s window")
        if any(e["rate_limit"] or e["limited_accept_before"] for e in listed):
            parts.append("rate-limited")
        summary = "; ".join(parts)
        meaning = ("A reject rule with 'tcp reset' makes netfilter answer for the server: the client "
                   "gets a RST with the server's address, indistinguishable by errno from a real "
                   "one. Behind a rate limit ('accept N/s, reset the rest') it only bites in bursts, "
                   "which looks random.")
        if status == "info":
            meaning += f" None of them can see the flow to {peer}."
        decision = ("Compare the rule's counter before and after a failure (sudo nft list chain "
                    "FAMILY TABLE CHAIN). If it moves, the reset is policy, not the application: "
                    "the refused SYNs never reach the listener (no accept, no log line). Raise or "
                    "remove the rate limit, fix the match, or document the rule.")
    return CheckResult(ID, TITLE, status, summary, value, evidence, command, meaning, decision)


def _peer_label(host: Optional[str], port: Optional[int]) -> str:
    if not host and port is None:
        return ""
    h = host or "*"
    if ":" in h:
        h = f"[{h}]"
    return f"{h}:{port}" if port is not None else h
