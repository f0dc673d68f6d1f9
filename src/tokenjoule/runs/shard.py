"""`--shard i/N`: split a sweep's grid into N disjoint parts by spec hash.

Shard i of N holds the cells with `int(sha256(key)[:16], 16) % N == i % N`, where `key` is
the cell's unresolved spec hash (`CellPlan.key`: for a
`batch: max` cell the hash with batch "max", so the cell stays in one shard whatever batch the
search finds). The rule depends only on the cell, never on the grid's order or size, so N
tasks of a Slurm job array given `--shard 1/N` ... `--shard N/N` cover the grid exactly once,
and the same task always gets the same cells when rerun. `i` may run 1..N or 0..N-1 (N/N
and 0/N are the same shard), so a Slurm array `--array=1-N` and one `--array=0-(N-1)` both
cover the grid with `--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, TypeVar

from tokenjoule.errors import TokenjouleError

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    index: int  # 0..count (0 and count name the same shard)
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, key: str) -> bool:
        return shard_of(key, self.count) == self.index % self.count

    def select(self, plans: Iterable[T]) -> list[T]:
        """The plans (anything with a `.key`) of this shard, in their order."""
        return [p for p in plans if self.holds(p.key)]  # type: ignore[attr-defined]


def shard_of(key: str, count: int) -> int:
    """The shard remainder (0..count-1) of `key` among `count` shards."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:16], 16) % count


def parse_shard(text: str) -> Shard:
    """'i/N' with whole numbers, N >= 1 and 0 <= i <= N; a one-line error otherwise."""
    parts = str(text).strip().split("/")
    try:
        index, count = (int(p) for p in parts)
        if len(parts) != 2:
            raise ValueError
    except ValueError:
        raise TokenjouleError(f"--shard {text!r}: expected i/N with whole numbers (e.g. 2/4)") from None
    if count < 1 or not 0 <= index <= count:
        raise TokenjouleError(f"--shard {text!r}: expected N >= 1 and 0 <= i <= N (shards 1..N, or 0..N-1)")
    return Shard(index, count)
