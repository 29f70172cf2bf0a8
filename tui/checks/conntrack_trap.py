"""conntrack-invalid-trap: the NAT host that resets connections it merely translates.

The trap (moby/libnetwork#1090, kubernetes#74839): a segment that arrives outside the TCP window
conntrack tracks (late, reordered, or far ahead) is marked INVALID. INVALID packets skip NAT, so
the reply to a masqueraded connection is not translated back to the inside address: it is
addressed to this host itself and goes up the host's own input path. No local socket owns that
4-tuple, so the host's stack answers with a RST to the outside peer, which tears the connection
down; the inside client never saw the RST and only gets the peer's next reset,
"connection reset by peer".

It needs three things at once: ``nf_conntrack_tcp_be_liberal = 0`` (the default: out-of-window
segments are INVALID), source NAT (masquerade / snat), and nothing dropping INVALID packets on
the input path (``ct state invalid drop`` in an input or prerouting filter chain). Measured in the
lab: a ``ct state invalid drop`` in the *forward* chain does not help the masquerade case (the
packet is for this host, it never goes through forward); one in *input* does. Destination NAT
(dnat / redirect) has the mirror problem on the forward path (kubernetes#74839).
"""

from __future__ import annotations

import os
from typing import Optional

from tui.checks import CheckResult, Context, Unavailable, read_text
from tui.checks.nft_rules import (
    HUMAN_NFT,
    Ruleset,
    covers,
    families_of,
    invalid_handling,
    load_ruleset,
    nat_rules,
)

ID = "conntrack-invalid-trap"
TITLE = "NAT + conntrack INVALID reset trap"
PLAYBOOK = "third"

NF = "/proc/sys/net/netfilter"
LIBERAL = f"{NF}/nf_conntrack_tcp_be_liberal"
SYSCTL_FIX = "sysctl -w net.netfilter.nf_conntrack_tcp_be_liberal=1"
HUMAN = f"sysctl net.netfilter.nf_conntrack_tcp_be_liberal; {HUMAN_NFT}"

EXPLAIN = ("A segment outside the window conntrack tracks is marked INVALID and is not de-NATed: "
           "it is addressed to this host itself, reaches the host's own stack, which answers with "
           "a RST to the outside peer. The peer drops the connection; the inside client never saw "
           "that RST and gets 'connection reset by peer' on its next segment.")


def _be_liberal() -> Optional[int]:
    try:
        return int(read_text(LIBERAL).strip())
    except (Unavailable, ValueError):
        return None


def run(ctx: Context) -> CheckResult:
    if not os.path.exists(f"{NF}/nf_conntrack_count"):
        reason = (f"{NF}/nf_conntrack_count does not exist: no connection tracking in this network "
                  "namespace (module not loaded, or a container that hides the netfilter sysctls)")
        return CheckResult(
            ID, TITLE, "skipped", f"not checked: {reason}", {"loaded": False}, [reason],
            "lsmod | grep nf_conntrack; sysctl net.netfilter.nf_conntrack_tcp_be_liberal",
            "No conntrack here means no NAT here either, so this host cannot spring the trap; "
            "in a container, the host or node that NATs your traffic can.",
            "Run this check on the host or node that does the NAT (docker0, the CNI, the gateway).")
    liberal = _be_liberal()
    liberal_line = (f"net.netfilter.nf_conntrack_tcp_be_liberal = {liberal}" if liberal is not None
                    else f"{LIBERAL} unreadable")
    try:
        rs: Optional[Ruleset] = load_ruleset(timeout=min(2.0, ctx.timeout))
        rules_error = ""
    except Unavailable as e:
        rs, rules_error = None, e.reason
    return evaluate(liberal, rs, rules_error, liberal_line)


def _fix_chain(rs: Ruleset, hook: str, families: set[str]) -> Optional[str]:
    """`family table chain` of an existing filter base chain on ``hook`` that covers ``families``."""
    best = None
    for c in rs.base_chains():
        if c.hook != hook or c.type not in (None, "filter") or not families <= covers(c.family):
            continue
        if c.table.endswith("(legacy)") or c.rules and c.rules[0].source == "iptables":
            continue
        if best is None or (c.family == "inet" and best.family != "inet"):
            best = c
    return f"{best.family} {best.table} {best.name}" if best else None


def _fix_commands(rs: Ruleset, hook: str, families: set[str]) -> list[str]:
    iptables = rs.source.startswith("iptables")
    if iptables:
        chain = {"input": "INPUT", "forward": "FORWARD"}[hook]
        out = []
        if "ip" in families:
            out.append(f"iptables -I {chain} -m conntrack --ctstate INVALID -j DROP")
        if "ip6" in families:
            out.append(f"ip6tables -I {chain} -m conntrack --ctstate INVALID -j DROP")
        return out
    where = _fix_chain(rs, hook, families)
    if where:
        return [f"nft insert rule {where} ct state invalid drop"]
    return ["nft add table inet filter",
            f"nft add chain inet filter {hook} '{{ type filter hook {hook} priority 0; policy accept; }}'",
            f"nft add rule inet filter {hook} ct state invalid drop"]


def evaluate(liberal: Optional[int], rs: Optional[Ruleset], rules_error: str = "",
             liberal_line: str = "") -> CheckResult:
    evidence = [liberal_line or f"net.netfilter.nf_conntrack_tcp_be_liberal = {liberal}"]
    if rs is None:
        if liberal == 1:
            evidence.append(f"ruleset not read ({rules_error}); not needed: be_liberal is 1")
            return CheckResult(
                ID, TITLE, "ok", "not exposed: nf_conntrack_tcp_be_liberal = 1 (out-of-window "
                "segments are not marked INVALID)", {"be_liberal": 1, "rules_read": False},
                evidence, HUMAN,
                "With be_liberal=1 conntrack accepts out-of-window segments instead of marking "
                "them INVALID, so NAT never lets one through untranslated.",
                "Nothing to fix for this trap. (be_liberal also hides genuinely bogus segments "
                "from your rules; that is the trade-off.)")
        evidence.append(f"ruleset not read: {rules_error}")
        return CheckResult(
            ID, TITLE, "skipped", f"not checked: {rules_error} (be_liberal = {liberal})",
            {"be_liberal": liberal, "rules_read": False}, evidence,
            "sudo nft list ruleset; sysctl net.netfilter.nf_conntrack_tcp_be_liberal",
            "Reading the NAT and filter rules needs root; be_liberal alone cannot tell.",
            "Re-run as root, or by hand: sudo nft list ruleset | grep -E 'masquerade|snat|ct state'.")

    nats = nat_rules(rs)
    src = [r for r in nats if r.nat in ("masquerade", "snat")]
    dst = [r for r in nats if r.nat in ("dnat", "redirect")]
    handling = invalid_handling(rs)
    src_fams: set[str] = set().union(*(families_of(r) for r in src)) if src else set()
    dst_fams: set[str] = set().union(*(families_of(r) for r in dst)) if dst else set()

    def protected(hooks: tuple[str, ...], fams: set[str]) -> tuple[set[str], set[str]]:
        """Families with an explicit INVALID drop, and families only covered by a drop policy."""
        explicit: set[str] = set()
        policy: set[str] = set()
        for h in handling:
            if h["hook"] not in hooks:
                continue
            if h["invalid"] == "drop":
                explicit |= covers(h["family"])
            elif h["invalid"].startswith("none") and h["policy"] == "drop":
                policy |= covers(h["family"])
        return explicit & fams, (policy - explicit) & fams

    in_explicit, in_policy = protected(("prerouting", "input"), src_fams)
    fw_explicit, fw_policy = protected(("prerouting", "forward"), dst_fams)
    src_open = src_fams - in_explicit - in_policy
    dst_open = dst_fams - fw_explicit - fw_policy
    fwd_only = src_open and any(h["hook"] == "forward" and h["invalid"] == "drop" for h in handling)

    for r in (src + dst)[:8]:
        evidence.append(f"NAT: {r.where}: {r.text}")
    if len(src + dst) > 8:
        evidence.append(f"... {len(src + dst) - 8} more NAT rules")
    for h in handling:
        if h["hook"] == "output":
            continue  # the untranslated segment comes in: output chains never see it
        line = f"ct state invalid in {h['chain']} (hook {h['hook']}, policy {h['policy']}): {h['invalid']}"
        if h["rule"]:
            line += f" [{h['rule']}]"
        evidence.append(line)
    if not handling:
        evidence.append("no filter base chain on prerouting/input/forward: INVALID packets are not "
                        "dropped anywhere")
    evidence += rs.notes

    value = {
        "be_liberal": liberal, "rules_read": True, "source": rs.source,
        "nat": {"source_nat": len(src), "destination_nat": len(dst),
                "families": sorted(src_fams | dst_fams)},
        "invalid_drop_input": sorted(in_explicit), "invalid_drop_forward": sorted(fw_explicit),
        "policy_drop_only": sorted(in_policy | fw_policy),
        "exposed_source_nat": sorted(src_open), "exposed_destination_nat": sorted(dst_open),
        "invalid_handling": handling,
    }
    command = HUMAN + "  # look for masquerade/snat and 'ct state invalid drop' in input"

    if liberal == 1:
        return CheckResult(
            ID, TITLE, "ok",
            f"not exposed: nf_conntrack_tcp_be_liberal = 1 ({len(src)} source NAT rules)",
            value, evidence, command,
            "be_liberal=1: conntrack does not mark out-of-window segments INVALID, so NAT "
            "translates them like any other and the host never answers them itself.",
            "Nothing to fix for this trap.")
    if not src and not dst:
        return CheckResult(
            ID, TITLE, "ok", f"not exposed: no NAT rules (be_liberal = {liberal})", value, evidence,
            command,
            "Without NAT an INVALID segment keeps its real addresses and reaches the real endpoint, "
            "whose stack handles it (a duplicate ACK); this host does not answer for anyone.",
            "Nothing to fix here. If a NAT gateway (Docker host, Kubernetes node, cloud NAT) sits "
            "on the path, run this check there.")

    fixes: list[str] = []
    if src_open:
        fixes += _fix_commands(rs, "input", src_open)
    if dst_open:
        fixes += _fix_commands(rs, "forward", dst_open)

    if src_open:
        fams = "/".join("IPv4" if f == "ip" else "IPv6" for f in sorted(src_open))
        summary = (f"EXPOSED: {len(src)} source NAT rule(s) ({fams}), be_liberal = {liberal}, no "
                   "'ct state invalid drop' on input")
        meaning = EXPLAIN
        if fwd_only:
            meaning += (" The INVALID drop in the forward chain does not help: the untranslated "
                        "segment is addressed to this host and never goes through forward.")
        if dst_open:
            meaning += (" Destination NAT is exposed too: an INVALID reply is forwarded without "
                        "being un-DNATed, and the client answers the unknown address with a RST.")
        decision = ("Print and apply one of: " + " ; ".join(fixes) + f" — or: {SYSCTL_FIX} (persist "
                    "it in /etc/sysctl.d/). The drop rule is the narrower fix; be_liberal also "
                    "stops conntrack from rejecting genuinely bogus segments. Confirm first: "
                    "conntrack -S shows 'invalid' rising and a capture on this host shows a RST "
                    "leaving toward the peer that the inside never sent.")
        return CheckResult(ID, TITLE, "fail", summary, value | {"fix": fixes + [SYSCTL_FIX]},
                           evidence, command, meaning, decision)
    if dst_open:
        summary = (f"destination NAT exposed: {len(dst)} dnat/redirect rule(s), be_liberal = "
                   f"{liberal}, no 'ct state invalid drop' on forward")
        return CheckResult(
            ID, TITLE, "warn", summary, value | {"fix": fixes + [SYSCTL_FIX]}, evidence, command,
            "The mirror of the masquerade trap (kubernetes#74839): an out-of-window reply from a "
            "DNAT backend is INVALID, is forwarded with the backend's real address instead of the "
            "service address, and the client's stack answers it with a RST that kills the backend "
            "connection.",
            "Print and apply: " + " ; ".join(fixes) + f" — or: {SYSCTL_FIX}.")
    if in_policy or fw_policy:
        where = "input" if in_policy else "forward"
        summary = (f"probably covered: {len(src) + len(dst)} NAT rule(s), be_liberal = {liberal}; "
                   f"INVALID packets only fall to the {where} policy drop")
        fix = _fix_commands(rs, where, in_policy or fw_policy)
        return CheckResult(
            ID, TITLE, "warn", summary, value | {"fix": fix}, evidence, command,
            f"No rule drops INVALID explicitly; the {where} chain's drop policy does, unless an "
            "earlier accept rule (a port, an interface, an address range) lets the segment in "
            "first, and then the host answers it with a RST.",
            "Make it explicit so a later accept rule cannot reopen the trap: " + " ; ".join(fix))
    return CheckResult(
        ID, TITLE, "ok",
        f"not exposed: {len(src) + len(dst)} NAT rule(s) but INVALID packets are dropped "
        f"(be_liberal = {liberal})", value, evidence, command,
        "NAT is in place, and an explicit 'ct state invalid drop' on the path the untranslated "
        "segment would take throws it away: this host never answers it with a RST.",
        "Nothing to fix for this trap; a dropped out-of-window segment is retransmitted by its "
        "sender in-window.")
