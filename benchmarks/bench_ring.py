#!/usr/bin/env python3
"""Benchmark the hash rings (registry.ring): join/leave cost, balance, key movement, lookups, memory.

Run:  python benchmarks/bench_ring.py [--quick] [--json PATH]

How each figure is measured (printed again with the results):

* insert/delete ms: a ring holding k-1 members ("service-0".."service-{k-2}")
  is built incrementally; then ``with_node`` of a fresh member is timed
  as CPU time of the calling thread (``time.thread_time``: the machine is
  shared, wall time there measures the neighbours), ``--repeat`` times with
  different names, median reported; delete = ``without`` of one member of a
  k-member ring, median over as many members.  Includes hashing the
  member's points.  "bulk build" = ``Ring.build`` of the whole group at once.
  Joins and leaves of "consistent" rings run through the C accelerator
  (registry._ringaccel) when it is built; the header says which path was
  measured, and a "pure Python" row times the same inserts and deletes on
  the same rings with the accelerator switched off (what the C part buys).
* balance: ``Ring.shares()`` sums every arc of the ring exactly (integer
  arithmetic over all points; no key sampling); reported as max/mean and
  min/mean of the per-service share.
* moved on join: fraction of 200k sampled keys whose owner changed when one
  member joins an n-member ring, next to the exact value (the joiner's
  exact share) and the ideal 1/(n+1); leave: one member of n+1 leaves.
* lookups/s: ``get()`` over 200k distinct precomputed keys, best of 3 (CPU time);
  get_many/s: ``get_many()`` over the same keys in batches of 1000, best of 3.
* bulk build, hashing: ``Ring.build`` of 2,000 members x 4,096 points (500 with --quick), thread CPU
  time, three ways in turns: the accelerator with its C hashing (``_ringaccel.xxh3_points``: the
  points go straight into arrays), the accelerator's build with the points hashed in Python
  (``xxhash``, one call and int per point: what every build cost before the C hashing), and
  the pure-Python path (accelerator off).  Median of 3 (the pure path: once, it takes seconds).
* batch of 20 joins: 20 fresh members (4096 points each) join a 1,000-member ring of
  4096-point members (``Ring.build``): ``with_node`` 20 times in a row vs one
  ``with_nodes`` of the 20 (one merge: what the catalog does with a push of TTL
  writes); thread CPU time, median of ``--repeat`` trials each, measured in turns.
* memory: bytes held by one snapshot (``sys.getsizeof`` of its point and
  owner arrays, bucket lists, node tables), at 1000 services; snapshots
  share unchanged buckets, so a second snapshot costs only what changed.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

common.setup_path()

from registry.ring import (  # noqa: E402
    CHASH_DEFAULT_REPLICAS,
    DEFAULT_REPLICAS,
    MAX_REPLICAS,
    ChashRing,
    ConsistentRing,
    Ring,
    RingNode,
)
from registry.ring.hashing import xxh3_points  # noqa: E402

KEYS = 200_000


def ms(fn: Callable[[], object]) -> float:
    """CPU milliseconds of this thread spent in ``fn`` (robust on a shared, loaded machine)."""
    t0 = time.thread_time()
    fn()
    return (time.thread_time() - t0) * 1000


def ring_bytes(ring: Ring) -> int:
    seen: set[int] = set()
    # Each algorithm's storage (docs/ring.md): the consistent ring's buckets and flags, chash's arrays.
    if isinstance(ring, ConsistentRing):
        total = sys.getsizeof(ring) + sys.getsizeof(ring._flags)
        containers = [ring._bk]
    else:
        assert isinstance(ring, ChashRing)
        total = sys.getsizeof(ring) + sys.getsizeof(ring._nonempty)
        containers = [ring._pts, ring._own]
    for container in containers:
        total += sys.getsizeof(container)
        for arr in container:
            if id(arr) not in seen:
                seen.add(id(arr))
                total += sys.getsizeof(arr)
    total += sys.getsizeof(ring._ids) + sys.getsizeof(ring._index)
    total += sys.getsizeof(ring._nodes)
    total += sum(sys.getsizeof(n) for n in ring._ids if n is not None)
    return total


def moved(a: Ring, b: Ring, keys: list[str]) -> float:
    return sum(1 for k in keys if a.get(k) != b.get(k)) / len(keys)


@dataclass
class Result:
    insert: dict[int, float]
    delete: dict[int, float]
    balance: dict[int, tuple[float, float]]
    join: dict[int, tuple[float, float, float]]
    leave: dict[int, tuple[float, float, float]]
    lookups: dict[int, float]
    many: dict[int, float]
    memory: dict[int, int]
    points: dict[int, int]
    pure_insert: dict[int, float]
    pure_delete: dict[int, float]
    build_s: float
    members: int
    bulk_s: float


def path_name() -> str:
    return "C accelerator (registry._ringaccel)" if ConsistentRing.accel is not None else "pure Python"


def pure_python_ms(fn: Callable[[], object]) -> float:
    """``ms(fn)`` with the C accelerator switched off (the ring reads ConsistentRing.accel per call)."""
    saved = ConsistentRing.accel
    ConsistentRing.accel = None
    try:
        return ms(fn)
    finally:
        ConsistentRing.accel = saved


def run(algorithm: str, replicas: int, sizes: list[int], repeat: int, keys: list[str]) -> Result:
    node = RingNode(replicas)
    # The pure-Python row only means something where the accelerator applies.
    compare = algorithm == "consistent" and ConsistentRing.accel is not None
    pure_insert: dict[int, float] = {}
    pure_delete: dict[int, float] = {}
    snapshots: dict[int, Ring] = {}
    ring = Ring(algorithm)
    steps = [k for k in (1, 10, 100, 1000) if k <= max(sizes)]
    checkpoints = {k - 1 for k in steps} | set(steps) | set(sizes) | {n + 1 for n in sizes}
    insert: dict[int, float] = {}
    delete: dict[int, float] = {}
    t_build = time.perf_counter()  # wall, for information only
    count = 0
    top = max(checkpoints)
    while True:
        if count in checkpoints:
            snapshots[count] = ring
            k = count + 1
            if k in (1, 10, 100, 1000):
                base = ring
                insert[k] = statistics.median(
                    ms(lambda j=j: base.with_node(f"fresh-{j}", node)) for j in range(repeat)  # type: ignore[misc]  # noqa: B023 - called at once, inside the iteration
                )
                if compare:
                    pure_insert[k] = statistics.median(
                        pure_python_ms(lambda j=j: base.with_node(f"fresh-{j}", node))  # type: ignore[misc]  # noqa: B023 - called at once, inside the iteration
                        for j in range(repeat)
                    )
        if count >= top:
            break
        ring = ring.with_node(f"service-{count}", node)
        count += 1
    build_s = time.perf_counter() - t_build
    bulk_s = ms(lambda: Ring.build(algorithm, {f"service-{i}": node for i in range(max(sizes))})) / 1000
    for k in (1, 10, 100, 1000):
        if k in snapshots:
            full = snapshots[k]
            names = [f"service-{i}" for i in range(k)][:repeat]
            delete[k] = statistics.median(ms(lambda n=n: full.without(n)) for n in names)  # type: ignore[misc]  # noqa: B023 - called at once, inside the iteration
            if compare:
                pure_delete[k] = statistics.median(
                    pure_python_ms(lambda n=n: full.without(n)) for n in names  # type: ignore[misc]  # noqa: B023 - called at once, inside the iteration
                )

    balance: dict[int, tuple[float, float]] = {}
    join: dict[int, tuple[float, float, float]] = {}
    leave: dict[int, tuple[float, float, float]] = {}
    for n in sizes:
        shares = snapshots[n].shares()
        mean = 1.0 / n
        balance[n] = (max(shares.values()) / mean, min(shares.values()) / mean)
        ideal = 1.0 / (n + 1)
        bigger = snapshots[n + 1]
        joiner = f"service-{n}"
        exact = bigger.shares()[joiner]
        join[n] = (moved(snapshots[n], bigger, keys), exact, ideal)
        # leave: a member in the middle of the list leaves the n+1 ring
        leaver = f"service-{n // 2}"
        smaller = bigger.without(leaver)
        leave[n] = (moved(bigger, smaller, keys), bigger.shares()[leaver], ideal)

    lookups: dict[int, float] = {}
    many: dict[int, float] = {}
    batches = [keys[i:i + 1000] for i in range(0, len(keys), 1000)]
    for n in sizes:
        r = snapshots[n]
        get = r.get
        best = min(ms(lambda: [get(k) for k in keys]) for _ in range(3))  # noqa: B023 - called at once, inside the iteration
        lookups[n] = len(keys) / (best / 1000)
        get_many = r.get_many
        best = min(ms(lambda: [get_many(b) for b in batches]) for _ in range(3))  # noqa: B023 - called at once, inside the iteration
        many[n] = len(keys) / (best / 1000)
    memory = {n: ring_bytes(snapshots[n]) for n in sizes}
    points = {n: snapshots[n].point_count for n in sizes}
    return Result(insert, delete, balance, join, leave, lookups, many, memory, points, pure_insert, pure_delete,
                  build_s, top, bulk_s)


def uhashring_reference(n: int, vnodes: int, repeat: int) -> float:
    """Median ms for uhashring.HashRing.add_node of the n-th member (xxh3, same vnodes)."""
    import uhashring
    import xxhash

    def h(key: str) -> int:
        return xxhash.xxh3_64_intdigest(key.encode())

    times = []
    for j in range(repeat):
        ring = uhashring.HashRing({f"service-{i}": {"vnodes": vnodes} for i in range(n - 1)}, hash_fn=h)
        times.append(ms(lambda: ring.add_node(f"fresh-{j}", {"vnodes": vnodes})))  # noqa: B023 - called at once, inside the iteration
    return statistics.median(times)


BIG_MEMBERS = 2000


def big_build(members: int) -> tuple[float, float, float]:
    """Seconds of ``Ring.build`` of ``members`` 4096-point members: (C hashing, Python hashing + C build, pure)."""
    nodes = {f"service-{i}": RingNode(DEFAULT_REPLICAS) for i in range(members)}
    real = ConsistentRing.replica_points

    def python_hashed(node_id: str, node: RingNode) -> array[int]:
        return array("Q", xxh3_points(node_id, ConsistentRing.count(node)))

    def build_python_hashed() -> float:
        ConsistentRing.replica_points = staticmethod(python_hashed)  # type: ignore[method-assign]
        try:
            return ms(lambda: Ring.build("consistent", nodes))
        finally:
            ConsistentRing.replica_points = staticmethod(real)  # type: ignore[method-assign]

    c_hash: list[float] = []
    py_hash: list[float] = []
    for _ in range(3):
        gc.collect()
        c_hash.append(ms(lambda: Ring.build("consistent", nodes)))
        gc.collect()
        py_hash.append(build_python_hashed())
    gc.collect()
    pure = pure_python_ms(lambda: Ring.build("consistent", nodes))
    return statistics.median(c_hash) / 1000, statistics.median(py_hash) / 1000, pure / 1000


BATCH_MEMBERS, BATCH_JOINS = 1000, 20
HOW_BATCH = ("thread CPU time of {what} of {joins} fresh 4096-point members into a {members}-member ring of "
             "4096-point members (Ring.build), incl. hashing; median of {repeat} trials, the two ways in turns")


def batch_join(repeat: int) -> tuple[float, float]:
    """(ms of BATCH_JOINS ``with_node`` in a row, ms of one ``with_nodes`` of them): same ring, same names."""
    node = RingNode(MAX_REPLICAS)
    base = Ring.build("consistent", {f"service-{i}": node for i in range(BATCH_MEMBERS)})
    seq: list[float] = []
    one: list[float] = []
    for j in range(repeat):
        items = [(f"fresh-{j}-{i}", node) for i in range(BATCH_JOINS)]

        def one_by_one(items: list[tuple[str, RingNode]] = items) -> Ring:
            ring = base
            for k, n in items:
                ring = ring.with_node(k, n)
            return ring

        seq.append(ms(one_by_one))
        one.append(ms(lambda items=items: base.with_nodes(items)))  # type: ignore[misc]
    return statistics.median(seq), statistics.median(one)


HOW_INSERT = ("median thread CPU time (time.thread_time) of Ring.with_node of a fresh member on a ring of k-1 "
              "members built one by one, incl. hashing its points and dropping the result; {repeat} trials")
HOW_DELETE = "median thread CPU time of Ring.without of one member of a k-member ring; {repeat} trials"
HOW_BALANCE = "Ring.shares(): exact arc sums over every point (no key sampling), largest share / mean share"
HOW_MOVED = ("keys moved when member n+1 joins (leaves), as a multiple of the ideal 1/(n+1): exact, from the "
             "joiner's (leaver's) exact arc share; sampled over {keys} keys in the table")
HOW_LOOKUP = "{what} over {keys} distinct precomputed keys, best of 3, thread CPU time"
HOW_PURE = "; C accelerator switched off, same rings and names, measured beside the accelerated figure"


def records(algorithm: str, label: str, res: Result, sizes: list[int], repeat: int, nkeys: int) -> list[common.Record]:
    """The figures of one configuration as benchmark records (run_all collects them)."""
    tag = f"ring {algorithm} {label}"
    recs: list[common.Record] = []
    default = algorithm == "consistent" and label == "default"
    go = algorithm == "chash" and label == "default"
    target = ({10: "target <= 2 ms", 1000: "target <= 20 ms"} if default
              else {10: "Go 17.8 ms at 10000 replicas"} if go else {})
    how_path = f"; path: {path_name()}" if algorithm == "consistent" else ""
    for k, v in sorted(res.insert.items()):
        recs.append(common.record(f"{tag}: insert of member {k}", v, "ms", HOW_INSERT.format(repeat=repeat) + how_path,
                                  reference=target.get(k, "")))
    for k, v in sorted(res.delete.items()):
        recs.append(common.record(f"{tag}: delete of member {k}", v, "ms", HOW_DELETE.format(repeat=repeat) + how_path))
    for k, v in sorted(res.pure_insert.items()):
        recs.append(common.record(f"{tag}: insert of member {k}, pure Python", v, "ms",
                                  HOW_INSERT.format(repeat=repeat) + HOW_PURE))
    for k, v in sorted(res.pure_delete.items()):
        recs.append(common.record(f"{tag}: delete of member {k}, pure Python", v, "ms",
                                  HOW_DELETE.format(repeat=repeat) + HOW_PURE))
    bal_target = ({100: "target <= 1.05", 1000: "target <= 1.10"} if default
                  else {10: "Go 1.04", 100: "Go 1.18"} if go else {})
    for n in sizes:
        bmax, bmin = res.balance[n]
        recs.append(common.record(f"{tag}: balance max/mean at {n} services", bmax, "ratio", HOW_BALANCE,
                                  reference=bal_target.get(n, "")))
        recs.append(common.record(f"{tag}: balance min/mean at {n} services", bmin, "ratio", HOW_BALANCE))
        _, je, ideal = res.join[n]
        _, le, _ = res.leave[n]
        how = HOW_MOVED.format(keys=nkeys)
        recs.append(common.record(f"{tag}: moved on join at {n} / ideal", je / ideal, "x", how, reference="target <= 1.1"))
        recs.append(common.record(f"{tag}: moved on leave at {n} / ideal", le / ideal, "x", how, reference="target <= 1.1"))
        recs.append(common.record(f"{tag}: get() at {n} services", res.lookups[n], "keys/s",
                                  HOW_LOOKUP.format(what="get() one by one", keys=nkeys)))
        recs.append(common.record(f"{tag}: get_many() at {n} services", res.many[n], "keys/s",
                                  HOW_LOOKUP.format(what="get_many() in batches of 1000", keys=nkeys)))
        recs.append(common.record(f"{tag}: memory at {n} services", res.memory[n] / 1e6, "MB",
                                  "sys.getsizeof of one snapshot's arrays, bucket lists, node tables"))
    recs.append(common.record(f"{tag}: bulk build of {max(sizes)}", res.bulk_s, "s",
                              "thread CPU time of Ring.build of the whole group"))
    return recs


def main() -> int:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=0, help="trials per insert/delete figure")
    args = parser.parse_args()
    common.require_import("registry.ring", args)
    repeat = args.repeat or (3 if args.quick else 7)
    keys = [f"user-{i}" for i in range(KEYS // (4 if args.quick else 1))]
    gc.collect()

    configs = [
        ("consistent", 160, "vnodes=160", "uhashring's default vnodes=160, for comparison", [10, 100, 1000]),
        ("consistent", DEFAULT_REPLICAS, "default", "default (tag absent)", [10, 100, 1000]),
        ("consistent", 10000, "replicas=10000", 'replicas="10000" (capped)', [10, 100] if args.quick else [10, 100, 1000]),
        ("chash", CHASH_DEFAULT_REPLICAS, "default", 'default = replicas="10000"', [10, 100] if args.quick else [10, 100, 1000]),
    ]
    common.print_header("hash rings", args.quick)
    print("How each figure" + __doc__.split("How each figure", 1)[1].rstrip())
    print()
    print(f"python {sys.version.split()[0]}; DEFAULT_REPLICAS={DEFAULT_REPLICAS}, MAX_REPLICAS={MAX_REPLICAS}")
    print(f"sampled keys: {len(keys)}; repeats per timing: {repeat}")
    print(f"consistent joins/leaves measured on: {path_name()}"
          + ("" if ConsistentRing.accel is not None else " (registry._ringaccel not built: no comparison row)"))
    recs: list[common.Record] = []
    for algorithm, replicas, short, label, sizes in configs:
        res = run(algorithm, replicas, sizes, repeat, keys)
        recs.extend(records(algorithm, short, res, sizes, repeat, len(keys)))
        print()
        print(f"== {algorithm}, {label}: {RingNode(replicas)} "
              f"(incremental build of {res.members} members: {res.build_s:.1f} s wall; "
              f"bulk build of {max(sizes)}: {res.bulk_s:.2f} s CPU)")
        ins, dele = res.insert, res.delete
        print("  member k           " + "".join(f"{k:>10}" for k in sorted(ins)))
        print("  insert CPU ms      " + "".join(f"{ins[k]:>10.2f}" for k in sorted(ins))
              + ("   (C accelerator)" if res.pure_insert else ""))
        print("  delete CPU ms      " + "".join(f"{dele[k]:>10.2f}" for k in sorted(dele)))
        if res.pure_insert:
            pins, pdel = res.pure_insert, res.pure_delete
            print("  insert, pure Python" + "".join(f"{pins[k]:>10.2f}" for k in sorted(pins)))
            print("  delete, pure Python" + "".join(f"{pdel[k]:>10.2f}" for k in sorted(pdel)))
        print(f"  {'services':>9} {'points':>10} {'max/mean':>9} {'min/mean':>9} {'join moved':>11} "
              f"{'exact':>8} {'ideal':>8} {'x ideal':>8} {'leave moved':>12} {'exact':>8} {'x ideal':>8} "
              f"{'lookups/s':>10} {'get_many/s':>11} {'MB':>7}")
        for n in sizes:
            bmax, bmin = res.balance[n]
            jm, je, ideal = res.join[n]
            lm, le, _ = res.leave[n]
            print(f"  {n:>9} {res.points[n]:>10} {bmax:>9.4f} {bmin:>9.4f} {jm:>11.5f} {je:>8.5f} "
                  f"{ideal:>8.5f} {je / ideal:>8.3f} {lm:>12.5f} {le:>8.5f} {le / ideal:>8.3f} "
                  f"{res.lookups[n]:>10.0f} {res.many[n]:>11.0f} {res.memory[n] / 1e6:>7.1f}")
        del res
        gc.collect()
    if ConsistentRing.accel is not None and hasattr(ConsistentRing.accel, "xxh3_points"):
        big = 500 if args.quick else BIG_MEMBERS
        c_s, py_s, pure_s = big_build(big)
        print()
        print(f"bulk build of {big} x {DEFAULT_REPLICAS} points (Ring.build, thread CPU s): C hashing {c_s:.2f}, "
              f"Python hashing + C build {py_s:.2f} ({py_s / c_s:.1f}x), pure Python {pure_s:.2f} ({pure_s / c_s:.1f}x)")
        how = (f"thread CPU time of Ring.build of {big} members x {DEFAULT_REPLICAS} points, {{what}}; median of 3 "
               "in turns (pure: once)")
        for what, v in (("C hashing (registry._ringaccel.xxh3_points) + C build", c_s),
                        ("points hashed in Python (xxhash) + C build", py_s),
                        ("pure Python (accelerator off)", pure_s)):
            recs.append(common.record(f"ring consistent: bulk build of {big} x {DEFAULT_REPLICAS}, {what}", v, "s",
                                      how.format(what=what)))
    seq_ms, one_ms = batch_join(repeat)
    print()
    print(f"batch of {BATCH_JOINS} joins into a {BATCH_MEMBERS}-member 4096-point ring ({path_name()}): "
          f"with_node one by one {seq_ms:.1f} ms, with_nodes {one_ms:.1f} ms ({seq_ms / one_ms:.1f}x)")
    how = HOW_BATCH.format(joins=BATCH_JOINS, members=BATCH_MEMBERS, repeat=repeat, what="{what}")
    recs.append(common.record(f"ring consistent: batch of {BATCH_JOINS} joins into {BATCH_MEMBERS}, one by one",
                              seq_ms, "ms", how.format(what="with_node one by one") + f"; path: {path_name()}"))
    recs.append(common.record(f"ring consistent: batch of {BATCH_JOINS} joins into {BATCH_MEMBERS}, with_nodes",
                              one_ms, "ms", how.format(what="one with_nodes") + f"; path: {path_name()}"))
    print()
    ref_n = 100
    print(f"reference: uhashring.HashRing.add_node of member {ref_n} (xxh3 hash_fn), median of {repeat}:")
    for vnodes in (160, DEFAULT_REPLICAS):
        t = uhashring_reference(ref_n, vnodes, repeat)
        print(f"  vnodes={vnodes}: {t:.1f} ms")
        recs.append(common.record(f"uhashring add_node of member {ref_n}, vnodes={vnodes}", t, "ms",
                                  f"median thread CPU time of uhashring.HashRing.add_node (xxh3 hash_fn), {repeat} trials"))
    common.emit(recs, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
