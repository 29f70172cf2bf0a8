"""route: which way packets to the peer leave this host, and whether that way is a tunnel.

``ip route get PEER`` through pyroute2: egress interface, gateway, source address, the
interface MTU (and a route MTU if one is cached), and the kind of the egress device. An
encapsulating device (vxlan, geneve, wireguard, gre, ipip, sit, tun/tap...) or a bridge with such
a port costs MTU and usually puts conntrack/NAT on the path: both breed resets. Without a peer
the check shows the default routes (IPv4 and IPv6).

The helpers here (peer resolution, route lookup, link facts) are shared with the other host
checks (iface-drops, sockets, port-range, tcp-keepalive).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from dataclasses import dataclass
from typing import Any, Optional

from tui.checks import CheckResult, Context, Unavailable

ID = "route"
TITLE = "Route to the peer"
PLAYBOOK = "first"

# Device kinds (IFLA_INFO_KIND) that wrap packets in another header, or hand them to a userspace
# VPN: the path MTU shrinks and the outer flow is usually tracked/NATed by someone else.
TUNNEL_KINDS = {
    "vxlan": "VXLAN overlay, 50 bytes of outer headers",
    "geneve": "Geneve overlay, 50+ bytes of outer headers",
    "wireguard": "WireGuard tunnel, 60-80 bytes of outer headers",
    "gre": "GRE tunnel",
    "gretap": "GRE (Ethernet) tunnel",
    "ip6gre": "GRE over IPv6 tunnel",
    "ip6gretap": "GRE (Ethernet) over IPv6 tunnel",
    "erspan": "ERSPAN tunnel",
    "ip6erspan": "ERSPAN over IPv6 tunnel",
    "ipip": "IP-in-IP tunnel",
    "ip6tnl": "IPv6 tunnel (ip6ip6/ipip6)",
    "sit": "SIT (IPv6-in-IPv4) tunnel",
    "vti": "IPsec VTI tunnel",
    "vti6": "IPsec VTI6 tunnel",
    "xfrm": "IPsec xfrm interface",
    "bareudp": "bare UDP tunnel",
    "macsec": "MACsec, 32 bytes of overhead",
    "tun": "tun/tap device: a userspace VPN or overlay such as OpenVPN, tailscale, flannel udp",
}
# Devices stacked on another one: the lower device decides what the packet goes through.
STACKED_KINDS = {"vlan", "macvlan", "macvtap", "ipvlan", "ipvtap"}

RESOLVE_TIMEOUT = 1.0
_resolved: dict[str, list[str]] = {}
_unresolved: dict[str, str] = {}  # host -> why (so concurrent checks do not each wait again)
_resolve_lock = threading.Lock()


def normalize_ip(addr: str) -> str:
    """IPv4-mapped IPv6 (``::ffff:10.0.0.1``) as plain IPv4; everything else canonical."""
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return addr
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def peer_addresses(ctx: Context) -> list[str]:
    """The peer's addresses: the literal one, or the name resolved (bounded to 1 s, cached).

    Raises :class:`Unavailable` when a name does not resolve in time.
    """
    host = ctx.peer_host
    if not host:
        return []
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    with _resolve_lock:
        if host in _resolved:
            return list(_resolved[host])
        if host in _unresolved:
            raise Unavailable(_unresolved[host], f"getent ahosts {host}")
    out: dict[str, Any] = {}

    def resolve() -> None:
        try:
            infos = socket.getaddrinfo(host, ctx.peer_port or None, type=socket.SOCK_STREAM)
            out["addrs"] = list(dict.fromkeys(normalize_ip(str(i[4][0])) for i in infos))
        except OSError as e:
            out["error"] = str(e)

    # getaddrinfo cannot be interrupted: resolve in a daemon thread and stop waiting after 1 s.
    t = threading.Thread(target=resolve, name="resolve-peer", daemon=True)
    t.start()
    t.join(RESOLVE_TIMEOUT)
    addrs = out.get("addrs")
    if not addrs:
        why = f"cannot resolve {host}: " + (out.get("error") or f"no answer within {RESOLVE_TIMEOUT:.0f}s")
        with _resolve_lock:
            _unresolved[host] = why
        raise Unavailable(why, f"getent ahosts {host}")
    with _resolve_lock:
        _resolved[host] = addrs
    return list(addrs)


def peer_addresses_or_note(ctx: Context) -> tuple[list[str], str]:
    """Like :func:`peer_addresses`, but a name that does not resolve gives ``([], why)``:
    checks that can also look at the whole host carry on without the peer."""
    try:
        return peer_addresses(ctx), ""
    except Unavailable as e:
        return [], f"{e.reason} - looking at every destination instead"


@dataclass
class LinkFacts:
    index: int
    name: str
    kind: str = ""  # IFLA_INFO_KIND, "" for a plain device
    mtu: int = 0
    master: Optional[int] = None
    lower: Optional[int] = None  # IFLA_LINK: the veth peer / the device a vlan sits on
    other_netns: bool = False  # IFLA_LINK_NETNSID: the veth peer lives in another namespace
    state: str = ""

    def describe(self) -> str:
        kind = self.kind or "device"
        return f"{self.name} ({kind}, mtu {self.mtu})"


def link_facts(msg: Any) -> LinkFacts:
    info = msg.get_attr("IFLA_LINKINFO")
    kind = ""
    if info is not None:
        kind = info.get_attr("IFLA_INFO_KIND") or ""
    return LinkFacts(
        index=int(msg["index"]),
        name=msg.get_attr("IFLA_IFNAME") or f"if{msg['index']}",
        kind=kind,
        mtu=int(msg.get_attr("IFLA_MTU") or 0),
        master=msg.get_attr("IFLA_MASTER"),
        lower=msg.get_attr("IFLA_LINK"),
        other_netns=msg.get_attr("IFLA_LINK_NETNSID") is not None,
        state=str(msg.get_attr("IFLA_OPERSTATE") or ""),
    )


def get_link(ipr: Any, index: int) -> Optional[LinkFacts]:
    try:
        msgs = ipr.link("get", index=index)
    except Exception:  # the device vanished between the route lookup and now
        return None
    return link_facts(msgs[0]) if msgs else None


@dataclass
class RouteFacts:
    dst: str
    type: str = "unicast"
    dev: Optional[LinkFacts] = None
    gateway: Optional[str] = None
    src: Optional[str] = None
    table: Optional[int] = None
    route_mtu: Optional[int] = None
    tunnel: Optional[str] = None  # kind of the encapsulating device on the path, if any
    tunnel_dev: Optional[str] = None
    container_bridge: Optional[str] = None  # a bridge with veth ports (docker0, cni0...)
    path_note: str = ""  # veth into another namespace, a bridge with container ports...
    error: Optional[str] = None

    def to_json(self) -> dict:
        return {
            "dst": self.dst,
            "type": self.type,
            "dev": self.dev.name if self.dev else None,
            "kind": self.dev.kind if self.dev else None,
            "mtu": self.dev.mtu if self.dev else None,
            "route_mtu": self.route_mtu,
            "gateway": self.gateway,
            "src": self.src,
            "table": self.table,
            "tunnel": self.tunnel,
            "tunnel_dev": self.tunnel_dev,
            "container_bridge": self.container_bridge,
            "note": self.path_note or None,
            "error": self.error,
        }


ROUTE_TYPES = {1: "unicast", 2: "local", 3: "broadcast", 4: "anycast", 5: "multicast",
               6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw", 10: "nat"}


def _metrics_mtu(msg: Any) -> Optional[int]:
    metrics = msg.get_attr("RTA_METRICS")
    if metrics is None:
        return None
    mtu = metrics.get_attr("RTAX_MTU")
    return int(mtu) if mtu else None


def _gateway(msg: Any) -> Optional[str]:
    gw = msg.get_attr("RTA_GATEWAY")
    if gw:
        return str(gw)
    via = msg.get_attr("RTA_VIA")
    if via:
        return str(via.get("addr") if isinstance(via, dict) else via)
    return None


def classify_path(ipr: Any, facts: RouteFacts) -> None:
    """Fill ``tunnel``/``path_note`` from the egress device, its lower device and bridge ports."""
    dev = facts.dev
    if dev is None:
        return
    if dev.kind in TUNNEL_KINDS:
        facts.tunnel, facts.tunnel_dev = dev.kind, dev.name
        return
    if dev.kind in STACKED_KINDS and dev.lower:
        lower = get_link(ipr, dev.lower)
        if lower is not None and lower.kind in TUNNEL_KINDS:
            facts.tunnel, facts.tunnel_dev = lower.kind, lower.name
            facts.path_note = f"{dev.name} is a {dev.kind} on {lower.describe()}"
            return
    if dev.kind == "bridge":
        ports = [link_facts(m) for m in ipr.get_links() if m.get_attr("IFLA_MASTER") == dev.index]
        tunnels = [p for p in ports if p.kind in TUNNEL_KINDS]
        veths = [p for p in ports if p.kind == "veth"]
        if tunnels:
            facts.tunnel, facts.tunnel_dev = tunnels[0].kind, tunnels[0].name
            facts.path_note = (f"bridge {dev.name} has overlay port(s) "
                               + ", ".join(p.describe() for p in tunnels))
        elif veths:
            facts.container_bridge = dev.name
            facts.path_note = (f"bridge {dev.name} with {len(veths)} veth port(s): the peer is "
                               "probably a container on this host (bridge netfilter, NAT and "
                               "conntrack in between)")
        return
    if dev.kind == "veth":
        where = "another network namespace (a container or pod)" if dev.other_netns else "this namespace"
        facts.path_note = f"{dev.name} is one end of a veth pair; the other end is in {where}"


def route_get(ipr: Any, dst: str) -> RouteFacts:
    """``ip route get DST`` with the egress device's facts; a lookup error goes into ``error``."""
    facts = RouteFacts(dst=dst)
    try:
        msgs = ipr.route("get", dst=dst)
    except Exception as e:  # NetlinkError: network unreachable, no route...
        facts.error = str(getattr(e, "args", [e])[-1]) if getattr(e, "args", None) else str(e)
        facts.type = "none"
        return facts
    if not msgs:
        facts.error = "no answer"
        facts.type = "none"
        return facts
    msg = msgs[0]
    facts.type = ROUTE_TYPES.get(int(msg["type"]), str(msg["type"]))
    facts.gateway = _gateway(msg)
    src = msg.get_attr("RTA_PREFSRC")
    facts.src = str(src) if src else None
    facts.table = msg.get_attr("RTA_TABLE") or msg["table"]
    facts.route_mtu = _metrics_mtu(msg)
    oif = msg.get_attr("RTA_OIF")
    if oif:
        facts.dev = get_link(ipr, int(oif))
    classify_path(ipr, facts)
    return facts


def _defaults(ipr: Any) -> list[RouteFacts]:
    out: list[RouteFacts] = []
    for fam in (socket.AF_INET, socket.AF_INET6):
        try:
            msgs = ipr.route("dump", family=fam)
        except Exception:
            continue
        found = 0
        for m in msgs:
            if m["dst_len"] != 0 or (m.get_attr("RTA_TABLE") or m["table"]) != 254:
                continue
            found += 1
            if found > 4:  # several defaults with different metrics: the first few say enough
                break
            facts = RouteFacts(dst=f"default ({'IPv4' if fam == socket.AF_INET else 'IPv6'})")
            facts.type = ROUTE_TYPES.get(int(m["type"]), str(m["type"]))
            facts.gateway = _gateway(m)
            facts.table = 254
            facts.route_mtu = _metrics_mtu(m)
            oif = m.get_attr("RTA_OIF")
            mp = m.get_attr("RTA_MULTIPATH")
            if not oif and mp:
                hop = mp[0]
                oif = hop.get("oif")
                facts.gateway = facts.gateway or _gateway(hop)
            if oif:
                facts.dev = get_link(ipr, int(oif))
            classify_path(ipr, facts)
            out.append(facts)
    return out


def _line(f: RouteFacts) -> str:
    if f.error:
        return f"{f.dst}: no route ({f.error})"
    parts = [f"{f.dst}:"]
    if f.type != "unicast":
        parts.append(f"type {f.type}")
    if f.dev:
        parts.append(f"dev {f.dev.describe()}")
    parts.append(f"via {f.gateway}" if f.gateway else "directly connected")
    if f.src:
        parts.append(f"src {f.src}")
    if f.table and f.table != 254:
        parts.append(f"table {f.table}")
    if f.route_mtu:
        parts.append(f"route mtu {f.route_mtu}")
    return " ".join(parts)


TUNNEL_MEANING = (
    "Packets to the peer leave through {dev} ({what}). Encapsulation eats into the MTU, so full-size "
    "segments can be dropped or need PMTUD that a firewall may block, and the outer flow is "
    "usually tracked or NATed by another box with its own idle timeout and conntrack rules. "
    "Both show up as stalls and resets that neither endpoint explains."
)


def run(ctx: Context) -> CheckResult:
    try:
        from pyroute2 import IPRoute
    except ImportError:
        raise Unavailable("pyroute2 is not installed", "ip route get PEER") from None
    addrs = peer_addresses(ctx)
    if not addrs:
        return _run_defaults(IPRoute)
    shown = addrs[:2]
    with IPRoute() as ipr:
        routes = [route_get(ipr, a) for a in shown]
    main = routes[0]
    command = "; ".join(f"ip route get {a}" for a in shown)
    if main.dev:
        command += f"; ip -d link show {main.dev.name}"
    evidence = [_line(r) for r in routes]
    if len(addrs) > len(shown):
        evidence.append(f"{ctx.peer_host} also resolves to {', '.join(addrs[len(shown):])} (not looked up)")
    notes = [r.path_note for r in routes if r.path_note]
    evidence += notes
    value = {"peer": ctx.peer_host, "addresses": addrs, "routes": [r.to_json() for r in routes]}
    value.update({k: v for k, v in main.to_json().items() if k != "dst"})
    if main.error or main.type in ("unreachable", "blackhole", "prohibit"):
        why = main.error or main.type
        return CheckResult(
            ID, TITLE, "warn", f"no usable route to {main.dst}: {why}", value, evidence, command,
            meaning=("The kernel has no usable route to the peer, so connects fail with "
                     "'network unreachable' or time out - that is not a reset from the peer."),
            decision=("Fix routing first (ip route; ip rule; ip route show table all), then look "
                      "at resets again."),
        )
    if main.type == "local":
        return CheckResult(
            ID, TITLE, "info", f"{main.dst} is an address of this host (loopback path)", value,
            evidence, command,
            meaning="Traffic to the peer never leaves this host: no middlebox can be the reset origin.",
            decision="Look at the local process that owns the peer port (sockets check) and its logs.",
        )
    dev = main.dev
    dev_txt = dev.describe() if dev else "unknown device"
    via = f"via {main.gateway}" if main.gateway else "directly connected"
    tunnels = [r for r in routes if r.tunnel]
    if tunnels:
        t = tunnels[0]
        what = TUNNEL_KINDS.get(t.tunnel or "", t.tunnel or "")
        return CheckResult(
            ID, TITLE, "warn",
            f"{t.dst} goes out {dev_txt} {via}: through a {t.tunnel} tunnel/overlay ({t.tunnel_dev})",
            value, evidence, command,
            meaning=TUNNEL_MEANING.format(what=what, dev=t.tunnel_dev),
            decision=(f"Run the pmtu check (rst-triage probe mtu {t.dst}) and compare with mtu "
                      f"{dev.mtu if dev else '?'}; if full-size packets die, clamp the MSS, e.g. "
                      "nft add rule inet filter forward tcp flags syn tcp option maxseg size set rt mtu. "
                      "Capture on both the tunnel device and the underlay interface to see which "
                      "side the RST comes from."),
        )
    bridged = [r for r in routes if r.container_bridge]
    if bridged:
        b = bridged[0]
        return CheckResult(
            ID, TITLE, "warn",
            f"{b.dst} goes out {dev_txt} {via}: a container bridge ({b.container_bridge}, veth ports)",
            value, evidence, command,
            meaning=("The peer sits behind a Linux bridge with veth ports - a container network on "
                     "this host. Such paths are usually NATed and always conntracked here: a segment "
                     "conntrack finds out of window is marked INVALID and, under masquerade, answered "
                     "by this host's own RST (the classic container reset). The veths may also carry "
                     "a smaller MTU than the host."),
            decision=("Run the conntrack-invalid-trap and nft-rules checks; the usual fix is "
                      "nft add rule inet filter forward ct state invalid drop (or "
                      "sysctl -w net.netfilter.nf_conntrack_tcp_be_liberal=1). Capture on "
                      f"{b.container_bridge} and on the uplink to see who sends the RST."),
        )
    return CheckResult(
        ID, TITLE, "info",
        f"{main.dst} goes out {dev_txt} {via}" + (f", src {main.src}" if main.src else ""),
        value, evidence, command,
        meaning=("The egress path to the peer, with no tunnel, overlay or container bridge on it. Capture on "
                 "this interface; the gateway is the next hop that could drop or answer packets."),
        decision=(f"Capture here: rst-triage capture --peer {ctx.peer_host}"
                  + (f":{ctx.peer_port}" if ctx.peer_port else "")
                  + (f" --iface {dev.name}" if dev else "")
                  + "; then compare with a capture on the peer's side."),
    )


def _run_defaults(iproute: Any) -> CheckResult:
    with iproute() as ipr:
        routes = _defaults(ipr)
    command = "ip route show default; ip -6 route show default"
    value = {"peer": None, "defaults": [r.to_json() for r in routes]}
    if not routes:
        return CheckResult(
            ID, TITLE, "info", "no default route (IPv4 or IPv6); give --peer to look up a route",
            value, [], command,
            meaning=("Without a default route only directly connected and explicitly routed "
                     "networks are reachable."),
            decision="Run again with --peer HOST:PORT to see the path to the failing peer.",
        )
    evidence = [_line(r) for r in routes] + [r.path_note for r in routes if r.path_note]
    tunnels = [r for r in routes if r.tunnel]
    summary = "; ".join(
        f"{r.dst} via {r.gateway or 'link'} dev {r.dev.name if r.dev else '?'}" for r in routes
    )
    if tunnels:
        t = tunnels[0]
        return CheckResult(
            ID, TITLE, "warn", f"{summary} - the {t.dst} goes through a {t.tunnel} tunnel ({t.tunnel_dev})",
            value, evidence, command,
            meaning=TUNNEL_MEANING.format(what=TUNNEL_KINDS.get(t.tunnel or "", t.tunnel or ""),
                                          dev=t.tunnel_dev),
            decision=("Give --peer HOST:PORT to see whether the failing flow takes this path; "
                      "run the pmtu check."),
        )
    return CheckResult(
        ID, TITLE, "info", summary, value, evidence, command,
        meaning=("The default routes; the failing flow takes one of them unless a more specific "
                 "route matches."),
        decision="Run again with --peer HOST:PORT to see the exact path to the failing peer.",
    )
