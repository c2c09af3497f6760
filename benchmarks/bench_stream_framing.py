"""Finding where a streamed memberlist message ends: our resumable skipper against msgpack.Unpacker.

A 1 MiB push/pull (9,050 member rows, as sent uncompressed), the same state compressed (as
sent by default), and a push/pull of 1 MiB of incompressible user state, compressed, are fed to a framer in 1 KiB chunks, the way a slow peer's segments arrive.
`ours` is registry.memberlist.stream.StreamFramer; `unpacker` is the same framer built on
msgpack.Unpacker's feed()/unpack()/skip()/tell() (defined here, not in the package).  Measured:
CPU time to frame the message (best of R, `time.process_time`) and the peak of memory traced
by tracemalloc while framing (msgpack allocates its buffer with PyMem_Malloc, which is traced),
beyond the message bytes and the copy returned (both framers keep the bytes as they come, since
the message is returned whole, and the admission budget is charged for them): whatever else is
held is memory the admission budget does not see.
"""

from __future__ import annotations

import random
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

common.setup_path()

CHUNK = 1024


def _unpacker_framer(max_size: int) -> Callable[[bytes], bytes | None]:
    """StreamFramer's job (no label, no encryption) on msgpack.Unpacker: the header is
    unpacked, node rows skipped, ``tell()`` gives where the raw user state starts."""
    import msgpack

    from registry.memberlist.messages import MessageType

    buf = bytearray()  # the message is returned whole, so its bytes are kept as they come
    # read_size: its default (1 MiB a stream) would weigh more than the copy discussed here
    up = msgpack.Unpacker(raw=True, max_buffer_size=max_size, read_size=min(max_size, 64 << 10))
    state: dict[str, int] = {"rows": -1, "tail": 0, "end": -1, "fed": 0}

    def feed(data: bytes) -> bytes | None:
        buf.extend(data)
        if state["end"] < 0:
            if state["fed"] == 0:
                up.feed(bytes(buf[1:]))  # after the type byte
            else:
                up.feed(data)
            state["fed"] += len(data)
            try:
                if state["rows"] < 0:
                    head = up.unpack()
                    if buf[0] == MessageType.PUSH_PULL:
                        state["rows"] = head.get(b"Nodes", 0)
                        state["tail"] = head.get(b"UserStateLen", 0)
                    else:
                        state["rows"] = 0
                while state["rows"] > 0:
                    up.skip()
                    state["rows"] -= 1
            except msgpack.OutOfData:
                return None
            state["end"] = 1 + up.tell() + state["tail"]
        if len(buf) < state["end"]:
            return None
        with memoryview(buf) as view:  # one copy, as StreamFramer makes
            return bytes(view[: state["end"]])

    return feed


def _ours(max_size: int) -> Callable[[bytes], bytes | None]:
    from registry.memberlist.stream import StreamFramer

    return StreamFramer(expect_label=False, max_size=max_size).feed


def _frame(make: Callable[[int], Callable[[bytes], bytes | None]], wire: bytes) -> bytes:
    feed = make(20 << 20)
    for i in range(0, len(wire), CHUNK):
        msg = feed(wire[i : i + CHUNK])
        if msg is not None:
            return msg
    raise AssertionError("the framer did not find the end of the message")


def _forms() -> dict[str, bytes]:
    """The stream messages framed, as a peer sends them (no label: we dialed)."""
    from registry.memberlist.codec import WireCodec, encode
    from registry.memberlist.messages import PushNodeState, PushPull

    meta = bytes.fromhex("ff83a567726f7570b0776562736572766963652d67726f7570a87265706c69636173a53130303030")
    vsn = bytes([1, 5, 2, 2, 5, 5])
    rows = [PushNodeState(f"node-{i:05d}", bytes([10, 0, i >> 8 & 255, i & 255]), 7946, meta, i, 0, vsn) for i in range(9050)]
    msg = encode(PushPull(False, rows, b""))
    return {
        "1 MiB push/pull": WireCodec(compress=False).encode_stream(msg, dialer=False),
        "same, compressed": WireCodec().encode_stream(msg, dialer=False),
        # incompressible Serf state: the compressed message is one ~1.3 MiB msgpack bin
        "1 MiB random user state, compressed": WireCodec().encode_stream(
            encode(PushPull(False, rows[:10], random.Random(1).randbytes(1 << 20))), dialer=False
        ),
    }


def main() -> int:
    args = common.base_parser(__doc__ or "").parse_args()
    common.require_import("registry.memberlist.stream", args)
    common.print_header("memberlist stream framing", args.quick)
    repeats = 3 if args.quick else 7
    recs = []
    for form, wire in _forms().items():
        for name, make in (("ours", _ours), ("unpacker", _unpacker_framer)):
            assert _frame(make, wire) == wire
            best = float("inf")
            for _ in range(repeats):
                t0 = time.process_time()
                _frame(make, wire)
                best = min(best, time.process_time() - t0)
            tracemalloc.start()
            _frame(make, wire)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            how = (
                f"{len(wire):,} bytes fed in {CHUNK}-byte chunks; best of {repeats} by process CPU time, "
                f"Python {sys.version.split()[0]}; peak traced memory while framing, beyond the buffered message "
                f"and the copy returned: {(peak - 2 * len(wire)) / 1024:,.0f} KiB"
            )
            recs.append(common.record(f"stream framing, {form}: {name}", round(best * 1e3, 2), "ms", how))
    common.emit(recs, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
