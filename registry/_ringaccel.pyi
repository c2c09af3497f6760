# Optional C accelerator for registry.ring's packed "consistent" layout (registry/_ringaccel.c).
from array import array

BUCKET_BITS: int
OWNER_BITS: int

def insert(buckets: list[array[int]], flags: bytearray, points: list[int], owner: int,
           ids: list[str | None], /) -> None: ...
def remove(buckets: list[array[int]], flags: bytearray, points: list[int], owner: int, /) -> None: ...
def build(buckets: list[array[int]], flags: bytearray, points: list[array[int]], ranks: list[int],
          owner_of_rank: list[int], /) -> int: ...
