"""memberlist wire codec cost: encode+decode of a ping/ack pair and of a 10-alive compound, LZW decode speed.

Pure CPU, single thread, no sockets: `timeit` over N iterations (best of R repeats, so
interference from other jobs on a shared machine inflates the figures less).
"""

from __future__ import annotations

import random
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

common.setup_path()


def main() -> int:
    p = common.base_parser(__doc__ or "")
    args = p.parse_args()
    common.require_import("registry.memberlist.codec", args)
    from registry.memberlist import lzw
    from registry.memberlist.codec import WireCodec, decode, encode, make_compound
    from registry.memberlist.messages import Ack, Alive, Ping

    common.print_header("memberlist wire codec", args.quick)
    n = 2_000 if args.quick else 20_000
    repeats = 3 if args.quick else 5
    py = f"Python {sys.version.split()[0]}"

    ip = bytes([10, 0, 0, 1])
    vsn = bytes([1, 5, 2, 2, 5, 5])
    meta = bytes.fromhex(
        "ff83a567726f7570b0776562736572766963652d67726f7570a87265706c69636173a53130303030"
    )
    ping = Ping(42, "node-b", ip, 7946, "node-a")
    ack = Ack(42, b"\x01" * 130)  # Serf puts a ~130-byte coordinate in acks
    alives = [Alive(i, f"node-{i}", ip, 7946, meta, vsn) for i in range(10)]
    codec = WireCodec(compress=False)

    def ping_ack() -> None:
        decode(encode(ping))
        decode(encode(ack))

    def compound() -> None:
        pkt = codec.encode_packet(make_compound([encode(a) for a in alives]))
        codec.decode_packet(pkt)

    def best_us(fn: object, number: int) -> float:
        times = timeit.repeat(fn, number=number, repeat=repeats)  # type: ignore[arg-type]
        return min(times) / number * 1e6

    recs = []
    us = best_us(ping_ack, n)
    recs.append(
        common.record(
            "codec: encode+decode ping + ack",
            round(us, 2),
            "µs/pair",
            f"timeit, {n} iterations, best of {repeats}, {py}; encode() then decode() of Ping (all source fields) "
            "and Ack (130-byte payload)",
        )
    )
    us = best_us(compound, n // 4)
    recs.append(
        common.record(
            "codec: compound of 10 alive, encode_packet+decode_packet",
            round(us, 2),
            "µs/packet",
            f"timeit, {n // 4} iterations, best of {repeats}, {py}; 10 x encode(Alive, 61-byte Serf meta) + "
            "make_compound + WireCodec(compress=False).encode_packet, then decode_packet",
        )
    )
    rng = random.Random(1)
    size = 200_000 if args.quick else 2_000_000
    words = [
        bytes(rng.choice(b"abcdefghij") for _ in range(rng.randint(2, 9)))
        for _ in range(300)
    ]
    text = b" ".join(rng.choice(words) for _ in range(size // 5))[:size]
    packed = lzw.compress(text)
    number = 3
    secs = (
        min(
            timeit.repeat(
                lambda: lzw.decompress(packed, len(text)), number=number, repeat=repeats
            )
        )
        / number
    )
    recs.append(
        common.record(
            "lzw: decompress throughput",
            round(len(text) / secs / 1e6, 2),
            "MB/s (output)",
            f"timeit, {number} iterations, best of {repeats}, {py}; {len(text)} bytes of word-like text "
            f"compressed to {len(packed)} bytes by our Go-exact LZW writer",
        )
    )
    secs = (
        min(timeit.repeat(lambda: lzw.compress(text), number=number, repeat=repeats))
        / number
    )
    recs.append(
        common.record(
            "lzw: compress throughput",
            round(len(text) / secs / 1e6, 2),
            "MB/s (input)",
            f"timeit, {number} iterations, best of {repeats}, {py}; same input",
        )
    )
    common.emit(recs, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
