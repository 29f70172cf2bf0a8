"""Small programs the lab runs inside its namespaces: ``python -m tests.lab.agents CMD ...``.

Servers print ``READY`` once they listen (sniffers once they sniff); one-shot programs print one
``RESULT {json}`` line. Every loop is bounded in count and time. Nothing does DNS: all
addresses are literal and no peer address is ever resolved.
"""
from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import threading
import time
from typing import Any

MAX_REQUEST = 64 * 1024
MAX_REQUESTS_PER_CONN = 100


def _say(*parts: object) -> None:
    print(*parts, flush=True)


def _result(**fields: object) -> None:
    _say("RESULT " + json.dumps(fields, sort_keys=True))


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _abort(sock: socket.socket) -> None:
    """close() with SO_LINGER {on, 0}: the kernel sends RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _request(path: str = "/", marker: str | None = None, connection: str = "keep-alive"
             ) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: server.lab", "User-Agent: rstlab",
             f"Connection: {connection}"]
    if marker:
        lines.append(f"X-Rstlab-Marker: {marker}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_until(sock: socket.socket, terminator: bytes, limit: int) -> bytes | None:
    """Bytes up to and including ``terminator``; None on EOF before any byte."""
    buf = b""
    while terminator not in buf:
        if len(buf) >= limit:
            raise ValueError("header too long")
        chunk = sock.recv(4096)
        if not chunk:
            return None if not buf else buf
        buf += chunk
    return buf


def _read_response(sock: socket.socket) -> tuple[int, int]:
    """Read one HTTP response with Content-Length; return (status, body bytes read)."""
    head = _read_until(sock, b"\r\n\r\n", MAX_REQUEST)
    if head is None:
        raise EOFError("connection closed before a response")
    header, _, body = head.partition(b"\r\n\r\n")
    status = int(header.split(b" ", 2)[1])
    length = 0
    for line in header.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(min(65536, length - len(body)))
        if not chunk:
            break
        body += chunk
    return status, len(body)


def _error_name(exc: BaseException) -> str:
    return type(exc).__name__


# ---- server ---------------------------------------------------------------------------------
def serve(args: argparse.Namespace) -> None:
    """A tiny HTTP/1.1 keep-alive server (no reverse DNS, no logging of peer names).

    Modes: ``normal`` answers after ``--delay`` seconds; ``hold`` reads the request and then
    says nothing; ``abort`` reads the request and aborts (SO_LINGER 0). An idle keep-alive
    connection is closed (FIN) after ``--idle`` seconds.
    """
    listener = socket.socket(_family(args.host), socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(16)
    listener.settimeout(0.2)
    _say("READY", args.host, args.port)
    deadline = time.monotonic() + args.lifetime
    accepted = 0
    while time.monotonic() < deadline and accepted < args.max_conns:
        try:
            conn, _peer = listener.accept()
        except socket.timeout:
            continue
        accepted += 1
        threading.Thread(target=_handle, args=(conn, args), daemon=True).start()
    listener.close()
    time.sleep(min(args.lifetime, 2.0))  # let handlers finish before the process exits


def _handle(conn: socket.socket, args: argparse.Namespace) -> None:
    conn.settimeout(args.idle)
    body = b"x" * args.body_size if args.body_size else b"hello from the lab server\n"
    try:
        for _ in range(MAX_REQUESTS_PER_CONN):
            try:
                request = _read_until(conn, b"\r\n\r\n", MAX_REQUEST)
            except socket.timeout:
                _say("idle timeout: closing (FIN)")
                conn.close()
                return
            if request is None:
                _say("peer closed")
                conn.close()
                return
            _say("request", request.split(b"\r\n", 1)[0].decode(errors="replace"))
            if args.mode == "abort":
                _say("aborting (SO_LINGER 0)")
                _abort(conn)
                return
            if args.mode == "hold":
                time.sleep(args.lifetime)
                return
            time.sleep(args.delay)
            head = (f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n").encode()
            conn.sendall(head + body)
    except OSError as exc:
        _say("connection error:", _error_name(exc), exc)
        conn.close()


# ---- clients --------------------------------------------------------------------------------
def _connect(args: argparse.Namespace) -> socket.socket:
    sock = socket.socket(_family(args.host), socket.SOCK_STREAM)
    sock.settimeout(args.timeout)
    sock.connect((args.host, args.port))
    return sock


def client_connect(args: argparse.Namespace) -> None:
    """Connect and report how it went (e.g. ConnectionRefusedError)."""
    try:
        sock = _connect(args)
    except OSError as exc:
        _result(connected=False, error=_error_name(exc), detail=str(exc))
        return
    sock.close()
    _result(connected=True)


def client_idle_reuse(args: argparse.Namespace) -> None:
    """Request, idle ``--idle`` s without reading (the server's FIN goes unnoticed), reuse."""
    sock = _connect(args)
    sock.sendall(_request("/first"))
    first = _read_response(sock)
    time.sleep(args.idle)
    outcome: dict[str, object] = {"first": first}
    try:
        sock.sendall(_request("/second"))
        outcome["second_sent"] = True
        data = sock.recv(4096)
        outcome["second"] = "eof" if not data else data[:40].decode(errors="replace")
    except OSError as exc:
        outcome["second"] = _error_name(exc)
    sock.close()
    _result(**outcome)


def client_request(args: argparse.Namespace) -> None:
    """Send one request; read up to ``--read`` bytes (or EOF); pause; then close, abort or hold."""
    sock = _connect(args)
    sock.sendall(_request("/", args.marker, args.connection))
    outcome: dict[str, object] = {}
    received = b""
    try:
        while len(received) < args.read:
            chunk = sock.recv(min(65536, args.read - len(received)))
            if not chunk:
                outcome["eof"] = True
                break
            received += chunk
    except OSError as exc:
        outcome["error"] = _error_name(exc)
    outcome["received"] = len(received)
    outcome["status_line"] = received.split(b"\r\n", 1)[0].decode(errors="replace")
    time.sleep(args.pause)  # e.g. let a proxy close its side first
    if args.then == "abort":
        _abort(sock)
    elif args.then == "hold":
        _result(**outcome)
        time.sleep(args.hold)  # the lab stops us (after its captures) before this ends
        sock.close()
        return
    else:
        sock.close()
    _result(**outcome)


# ---- packet forgers (scapy is imported only here: it takes a second to load) ----------------
def _raw_sender() -> socket.socket:
    # IPPROTO_RAW (IP_HDRINCL): goes through the namespace's netfilter output hook, so the
    # egress guard applies; the kernel fills in the IP ID when it is 0 and the checksum.
    return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)


def inject(args: argparse.Namespace) -> None:
    """On a router: when a client segment carries ``--marker``, forge a RST from the server."""
    from scapy.layers.inet import IP, TCP
    from scapy.sendrecv import sniff

    sender = _raw_sender()
    marker = args.marker.encode()
    sent: dict[str, object] = {}

    def maybe_inject(pkt: Any) -> bool:
        if TCP not in pkt or marker not in bytes(pkt[TCP].payload):
            return False
        ip, tcp = pkt[IP], pkt[TCP]
        rst = IP(src=ip.dst, dst=ip.src, ttl=64, id=0) / TCP(
            sport=tcp.dport, dport=tcp.sport, flags="R", seq=tcp.ack, ack=0, window=0)
        sender.sendto(bytes(rst), (ip.src, 0))
        sent.update(src=ip.dst, dst=ip.src, sport=tcp.dport, dport=tcp.sport, seq=tcp.ack)
        return True

    sniff(iface=args.iface, filter=f"tcp and src host {args.client} and dst port {args.port}",
          stop_filter=maybe_inject, timeout=args.timeout, store=False,
          started_callback=lambda: _say("READY sniffing", args.iface))
    _result(injected=bool(sent), **sent)


def out_of_window(args: argparse.Namespace) -> None:
    """On the server: once the client's request is ACKed, send a segment beyond its window.

    Correct 4-tuple (toward the client's address as the server sees it, i.e. the NAT address),
    ACK set, payload, seq far beyond the client's receive window.
    """
    from scapy.layers.inet import IP, TCP
    from scapy.sendrecv import sniff

    sender = _raw_sender()
    state: dict[str, int] = {}
    sent: dict[str, object] = {}

    def maybe_send(pkt: Any) -> bool:
        if TCP not in pkt:
            return False
        ip, tcp = pkt[IP], pkt[TCP]
        payload = len(tcp.payload)
        if ip.dst == args.server and tcp.dport == args.port and payload:
            state["client_next"] = tcp.seq + payload  # the request from the client
            return False
        if ip.src != args.server or "client_next" not in state:
            return False
        if tcp.ack != state["client_next"]:
            return False
        # The server's ACK of the request: its seq is snd_nxt, its ack the client's next seq.
        seg = IP(src=ip.src, dst=ip.dst, ttl=64, id=0, flags="DF") / TCP(
            sport=tcp.sport, dport=tcp.dport, flags="PA", seq=(tcp.seq + args.offset) % 2**32,
            ack=tcp.ack, window=tcp.window) / (b"out-of-window " * 8)
        sender.sendto(bytes(seg), (ip.dst, 0))
        sent.update(dst=ip.dst, dport=tcp.dport, seq=seg[TCP].seq, ack=tcp.ack,
                    snd_nxt=tcp.seq)
        return True

    sniff(iface=args.iface, filter=f"tcp and host {args.server} and port {args.port}",
          stop_filter=maybe_send, timeout=args.timeout, store=False,
          started_callback=lambda: _say("READY sniffing", args.iface))
    _result(sent=bool(sent), **sent)


# ---- command line ---------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab.agents")
    sub = parser.add_subparsers(dest="cmd", required=True)

    def endpoint(p: argparse.ArgumentParser) -> None:
        p.add_argument("--host", required=True)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--timeout", type=float, default=5.0)

    p = sub.add_parser("serve")
    endpoint(p)
    p.add_argument("--mode", choices=("normal", "hold", "abort"), default="normal")
    p.add_argument("--idle", type=float, default=30.0, help="keep-alive idle timeout (s)")
    p.add_argument("--delay", type=float, default=0.0, help="seconds before answering")
    p.add_argument("--body-size", type=int, default=0)
    p.add_argument("--lifetime", type=float, default=60.0)
    p.add_argument("--max-conns", type=int, default=50)
    p.set_defaults(func=serve)

    p = sub.add_parser("connect")
    endpoint(p)
    p.set_defaults(func=client_connect)

    p = sub.add_parser("idle-reuse")
    endpoint(p)
    p.add_argument("--idle", type=float, default=2.0)
    p.set_defaults(func=client_idle_reuse)

    p = sub.add_parser("request")
    endpoint(p)
    p.add_argument("--read", type=int, default=1 << 20, help="stop after this many bytes")
    p.add_argument("--then", choices=("close", "abort", "hold"), default="close")
    p.add_argument("--hold", type=float, default=30.0)
    p.add_argument("--pause", type=float, default=0.0, help="seconds between reading and --then")
    p.add_argument("--marker")
    p.add_argument("--connection", choices=("keep-alive", "close"), default="keep-alive")
    p.set_defaults(func=client_request)

    p = sub.add_parser("inject")
    p.add_argument("--iface", required=True)
    p.add_argument("--client", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--marker", required=True)
    p.add_argument("--timeout", type=float, default=10.0)
    p.set_defaults(func=inject)

    p = sub.add_parser("out-of-window")
    p.add_argument("--iface", required=True)
    p.add_argument("--server", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--offset", type=int, default=10_000_000)
    p.add_argument("--timeout", type=float, default=10.0)
    p.set_defaults(func=out_of_window)

    args = parser.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
