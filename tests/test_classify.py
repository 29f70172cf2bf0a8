"""The classifier's rules on hand-built conversations (the lab tests do the same for real).

Each test builds a small capture with tests/capgen.py, an independent writer, so the
sequence numbers, TTLs and timings are exactly the ones the rule is about.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from capgen import ACK, FIN, PSH, RST, SYN, ether, ipv4, opt_ts, pcap, tcp

from tui.analysis import analyze_files
from tui.model import Hints

CLIENT, SERVER, NAT = "10.9.1.10", "10.9.3.10", "10.9.2.1"
C_MAC, S_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"


@dataclass
class Talk:
    """One TCP connection written packet by packet, keeping seq/ack straight."""

    client: str = CLIENT
    server: str = SERVER
    cport: int = 40000
    sport: int = 80
    ttl_c: int = 64  # captured on the client: its own packets are not decremented yet
    ttl_s: int = 62
    t: float = 1_700_000_000.0
    cseq: int = 1000
    sseq: int = 5000
    ids: dict = field(default_factory=lambda: {"c": 100, "s": 900})
    records: list = field(default_factory=list)

    def send(self, dt: float, from_client: bool, flags: int, data: bytes = b"", **kw) -> None:
        self.t += dt
        side = "c" if from_client else "s"
        src, dst = (self.client, self.server) if from_client else (self.server, self.client)
        sp, dp = (self.cport, self.sport) if from_client else (self.sport, self.cport)
        seq = kw.pop("seq", self.cseq if from_client else self.sseq)
        ack = kw.pop("ack", self.sseq if from_client else self.cseq)
        ttl = kw.pop("ttl", self.ttl_c if from_client else self.ttl_s)
        ident = kw.pop("ident", self.ids[side])
        self.ids[side] += 1
        opts = kw.pop("options", [opt_ts(int(self.t * 1000) & 0xFFFFFFFF, 1)])
        window = kw.pop("window", 502)
        assert not kw, kw
        seg = tcp(sp, dp, flags, seq, ack if flags & ACK else 0, window, opts, data)
        frame = ether(S_MAC if from_client else C_MAC, C_MAC if from_client else S_MAC, 0x0800,
                      ipv4(src, dst, seg, ttl=ttl, ident=ident, df=True))
        sec = int(self.t)
        self.records.append((sec, int(round((self.t - sec) * 1e6)), frame))
        used = len(data) + (1 if flags & (SYN | FIN) else 0)
        if from_client:
            self.cseq += used
        else:
            self.sseq += used

    def handshake(self) -> None:
        self.send(0, True, SYN)
        self.send(0.01, False, SYN | ACK)
        self.send(0.01, True, ACK)

    def exchange(self) -> None:
        """Handshake, one request, its response and the client's ACK."""
        self.handshake()
        self.send(0.001, True, PSH | ACK, b"GET / HTTP/1.1\r\n\r\n")
        self.send(0.010, False, PSH | ACK, b"HTTP/1.1 200 OK\r\n\r\n")
        self.send(0.001, True, ACK)

    def write(self, path: Path) -> str:
        path.write_bytes(pcap(self.records))
        return str(path)


def verdict(*paths: str, hints: Hints | None = None):
    return analyze_files(list(paths), hints).verdict


def test_idle_close_then_reuse(tmp_path: Path) -> None:
    t = Talk()
    t.exchange()
    t.send(1.500, False, FIN | ACK)  # the server's keep-alive timeout
    t.send(0.001, True, ACK)
    t.send(0.700, True, PSH | ACK, b"GET /again HTTP/1.1\r\n\r\n")
    t.send(0.010, False, RST, seq=t.sseq, options=[], window=0, ident=0)
    v = verdict(t.write(tmp_path / "c.pcap"))
    assert (v.origin, v.cause) == ("server", "idle-close-reuse")
    assert any("after 1.50s without traffic" in e for e in v.evidence)


def test_close_right_after_a_response_is_not_an_idle_timeout(tmp_path: Path) -> None:
    """Same shape, but the FIN follows the response at once: not the keep-alive race."""
    t = Talk()
    t.handshake()
    t.send(0.001, True, PSH | ACK, b"GET / HTTP/1.1\r\n\r\n")
    t.send(0.010, False, PSH | ACK, b"HTTP/1.1 200 OK\r\n\r\n")
    t.send(0.001, False, FIN | ACK)
    t.send(0.001, True, PSH | ACK, b"more")
    t.send(0.010, False, RST, seq=t.sseq, options=[], window=0, ident=0)
    assert verdict(t.write(tmp_path / "c.pcap")).cause != "idle-close-reuse"


def _nat_talk(beyond: bool) -> Talk:
    """Seen on the server: the client is NATed behind 10.9.2.1 one hop away (TTL 63)."""
    t = Talk(client=NAT, ttl_c=63, ttl_s=64)
    t.handshake()
    t.send(0.001, True, PSH | ACK, b"request")
    t.send(0.001, False, ACK)
    # the server side sends a segment beyond (or, for a late retransmission, below) the window
    seq = t.sseq + (10_000_000 if beyond else -3000)
    t.send(0.5, False, PSH | ACK, b"x" * 100, seq=seq)
    # the NAT host answers for itself: seq = that segment's ack, no ACK flag, TTL 64
    t.send(0.0002, True, RST, seq=t.cseq, ttl=64, ident=0, options=[], window=0)
    return t


def test_nat_conntrack_invalid(tmp_path: Path) -> None:
    v = verdict(_nat_talk(beyond=True).write(tmp_path / "s.pcap"))
    assert (v.origin, v.cause) == ("middlebox", "nat-conntrack-invalid")
    assert any("one hop nearer" in e for e in v.evidence)


def test_late_retransmission_is_not_invalid(tmp_path: Path) -> None:
    """Below the window is no longer INVALID on kernels since 2022: another explanation."""
    v = verdict(_nat_talk(beyond=False).write(tmp_path / "s.pcap"))
    assert v.cause != "nat-conntrack-invalid"


def _forged(idle: float) -> Talk:
    t = Talk()
    t.exchange()
    t.send(idle, True, PSH | ACK, b"GET /next HTTP/1.1\r\n\r\n")
    # a RST in the server's name, TTL 64 where the server's packets arrive with 62
    t.send(0.0003, False, RST | ACK, ttl=64, options=[], window=0)
    return t


def test_forged_rst_right_after_a_request_is_injected(tmp_path: Path) -> None:
    t = _forged(idle=0.02)
    t.send(0.010, False, PSH | ACK, b"the real answer")  # the real server still answers
    v = verdict(t.write(tmp_path / "c.pcap"))
    assert (v.origin, v.cause) == ("middlebox", "injected")
    assert v.confidence >= 0.8
    assert any("2 hop(s) nearer" in e for e in v.evidence)


def test_forged_rst_after_a_long_idle_is_state_expired(tmp_path: Path) -> None:
    v = verdict(_forged(idle=30.0).write(tmp_path / "c.pcap"))
    assert (v.origin, v.cause) == ("middlebox", "state-expired")


def test_missing_at_the_claimed_sender_confirms_a_forger(tmp_path: Path) -> None:
    """Two vantages: the RST reached the client but never left the server."""
    at_client = _forged(idle=0.02)
    at_client.send(0.010, False, PSH | ACK, b"the real answer")
    at_server = Talk(ttl_c=62, ttl_s=64)  # the same connection seen on the server
    at_server.exchange()
    at_server.send(0.02, True, PSH | ACK, b"GET /next HTTP/1.1\r\n\r\n")
    at_server.send(0.010, False, PSH | ACK, b"the real answer")
    v = verdict(at_client.write(tmp_path / "c.pcap"), at_server.write(tmp_path / "s.pcap"))
    assert (v.origin, v.cause) == ("middlebox", "injected")
    assert v.confidence >= 0.9
    assert any("has this connection but not this RST" in e for e in v.evidence)


def test_refused_port_that_served_before_is_a_reject_rule(tmp_path: Path) -> None:
    served = Talk(cport=40001)
    served.handshake()
    served.send(0.001, True, PSH | ACK, b"hello")
    refused = Talk(cport=40002, t=served.t + 1)
    refused.send(0, True, SYN)
    refused.send(0.0003, False, RST | ACK, seq=0, ack=refused.cseq, options=[], window=0, ident=0)
    both = Talk()
    both.records = served.records + refused.records
    v = verdict(both.write(tmp_path / "c.pcap"))
    assert (v.origin, v.cause) == ("server", "firewall-reject")
    # the same refusal alone: nothing listening, as far as the packets tell
    alone = Talk()
    alone.records = refused.records
    assert verdict(alone.write(tmp_path / "r.pcap")).cause == "no-listener"


def test_client_abort_with_socket_fingerprint(tmp_path: Path) -> None:
    t = Talk()
    t.handshake()
    t.send(0.001, True, PSH | ACK, b"GET /big HTTP/1.1\r\n\r\n")
    t.send(0.010, False, PSH | ACK, b"x" * 1000)
    t.send(0.001, True, RST | ACK)  # keeps the timestamp option and the IP ID sequence
    v = verdict(t.write(tmp_path / "c.pcap"))
    assert (v.origin, v.cause) == ("client", "abort")
    assert v.confidence >= 0.8  # captured on the client itself
    assert any("written by the sender's socket" in e for e in v.evidence)


def test_hints_override_roles(tmp_path: Path) -> None:
    t = Talk()
    t.handshake()
    t.send(0.001, True, PSH | ACK, b"GET / HTTP/1.1\r\n\r\n")
    t.send(0.010, False, RST | ACK)
    path = t.write(tmp_path / "c.pcap")
    assert verdict(path).origin == "server"
    assert verdict(path, hints=Hints(proxy=[SERVER])).origin == "proxy"


def test_clock_skew_between_vantages_is_aligned(tmp_path: Path) -> None:
    """The server's clock runs 2 minutes ahead: shared packets (SYN, SYN-ACK) align it."""
    at_client = _forged(idle=0.02)
    at_client.send(0.010, False, PSH | ACK, b"the real answer")
    at_server = Talk(ttl_c=62, ttl_s=64, t=Talk().t + 120.0005)
    at_server.exchange()
    at_server.send(0.02, True, PSH | ACK, b"GET /next HTTP/1.1\r\n\r\n")
    at_server.send(0.010, False, PSH | ACK, b"the real answer")
    result = analyze_files(
        [at_client.write(tmp_path / "c.pcap"), at_server.write(tmp_path / "s.pcap")]
    )
    assert abs(result.captures[1].clock_offset + 120.0) < 0.01
    v = result.verdict
    assert (v.origin, v.cause) == ("middlebox", "injected") and v.confidence >= 0.9
    assert any("has this connection but not this RST" in e for e in v.evidence)
