"""Minimal pcap reader for the loopback captures: UDP datagrams and reassembled TCP streams.

Only what the captures need: classic pcap (either byte order), Ethernet /
Linux-cooked / raw-IP / BSD-loopback link types, IPv4 and IPv6, no IP
fragments.  TCP payload is reassembled per direction by sequence number
(retransmitted or overlapping bytes are taken once).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Capture", "Datagram", "TcpStream", "read_pcap"]

Endpoint = tuple[str, int]


@dataclass(frozen=True)
class Datagram:
    src: Endpoint
    dst: Endpoint
    payload: bytes


@dataclass
class TcpStream:
    """One direction of one TCP connection; ``from_dialer`` is True for the SYN sender's bytes."""

    src: Endpoint
    dst: Endpoint
    from_dialer: bool
    data: bytes = b""
    index: int = 0  # connection number in capture order


@dataclass
class Capture:
    udp: list[Datagram] = field(default_factory=list)
    tcp: list[TcpStream] = field(default_factory=list)


def _ip_str(raw: bytes) -> str:
    if len(raw) == 4:
        return ".".join(str(b) for b in raw)
    import ipaddress

    return str(ipaddress.IPv6Address(raw))


def _records(blob: bytes) -> tuple[int, list[bytes]]:
    magic = blob[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        end = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        end = ">"
    else:
        raise ValueError("not a classic pcap file")
    (linktype,) = struct.unpack_from(end + "I", blob, 20)
    pos = 24
    out: list[bytes] = []
    while pos + 16 <= len(blob):
        _, _, incl, _ = struct.unpack_from(end + "IIII", blob, pos)
        pos += 16
        out.append(blob[pos : pos + incl])
        pos += incl
    return linktype, out


def _l3(linktype: int, frame: bytes) -> tuple[int, bytes] | None:
    """(ethertype-ish: 4 or 6, ip packet) or None."""
    if linktype == 1:  # Ethernet
        etype = int.from_bytes(frame[12:14], "big")
        body = frame[14:]
    elif linktype == 113:  # Linux cooked v1
        etype = int.from_bytes(frame[14:16], "big")
        body = frame[16:]
    elif linktype == 276:  # Linux cooked v2
        etype = int.from_bytes(frame[0:2], "big")
        body = frame[20:]
    elif linktype in (0, 108):  # BSD loopback
        body = frame[4:]
        etype = 0x0800 if body[:1] and body[0] >> 4 == 4 else 0x86DD
    elif linktype in (101, 12, 14):  # raw IP
        body = frame
        etype = 0x0800 if body[0] >> 4 == 4 else 0x86DD
    else:
        raise ValueError(f"unsupported link type {linktype}")
    if etype == 0x0800:
        return 4, body
    if etype == 0x86DD:
        return 6, body
    return None


def read_pcap(path: str | Path) -> Capture:
    linktype, frames = _records(Path(path).read_bytes())
    cap = Capture()
    # per direction: list of (seq, payload); plus the initial sequence numbers
    segs: dict[tuple[Endpoint, Endpoint], list[tuple[int, bytes]]] = {}
    isn: dict[tuple[Endpoint, Endpoint], int] = {}
    dialer: dict[frozenset[Endpoint], Endpoint] = {}
    order: list[tuple[Endpoint, Endpoint]] = []
    conn_index: dict[frozenset[Endpoint], int] = {}
    for frame in frames:
        l3 = _l3(linktype, frame)
        if l3 is None:
            continue
        ver, ip = l3
        if ver == 4:
            ihl = (ip[0] & 0x0F) * 4
            total = int.from_bytes(ip[2:4], "big")
            proto = ip[9]
            src_ip, dst_ip = _ip_str(ip[12:16]), _ip_str(ip[16:20])
            l4 = ip[ihl:total]
        else:
            plen = int.from_bytes(ip[4:6], "big")
            proto = ip[6]
            src_ip, dst_ip = _ip_str(ip[8:24]), _ip_str(ip[24:40])
            l4 = ip[40 : 40 + plen]
        sport, dport = struct.unpack_from(">HH", l4, 0)
        src, dst = (src_ip, sport), (dst_ip, dport)
        if proto == 17:
            cap.udp.append(Datagram(src, dst, bytes(l4[8:])))
        elif proto == 6:
            seq = int.from_bytes(l4[4:8], "big")
            off = (l4[12] >> 4) * 4
            flags = l4[13]
            key = (src, dst)
            conn = frozenset((src, dst))
            if flags & 0x02:  # SYN
                isn[key] = seq + 1
                if not flags & 0x10:  # SYN without ACK: the dialer
                    dialer[conn] = src
                    conn_index[conn] = len(conn_index)
            payload = bytes(l4[off:])
            if payload:
                if key not in segs:
                    segs[key] = []
                    order.append(key)
                segs[key].append((seq, payload))
    for key in order:
        src, dst = key
        base = isn.get(key, min(s for s, _ in segs[key]))
        buf = bytearray()
        for seq, payload in sorted(
            segs[key], key=lambda sp: (sp[0] - base) % (1 << 32)
        ):
            rel = (seq - base) % (1 << 32)
            if rel + len(payload) <= len(buf):
                continue  # retransmission
            if rel > len(buf):
                raise ValueError(f"gap in TCP stream {src}->{dst}")
            buf += payload[len(buf) - rel :]
        conn = frozenset(key)
        cap.tcp.append(
            TcpStream(
                src, dst, dialer.get(conn) == src, bytes(buf), conn_index.get(conn, -1)
            )
        )
    return cap
