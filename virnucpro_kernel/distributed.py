"""Work units, ranks and resume: how 1..N processes (one per GPU, on one or many machines) share a run.

* A **work unit** is a contiguous range of input records, ``unit_records`` of them (4,096 by default), cut
  only by the input, never by GPU count or token budget: unit ``u`` holds input records
  ``[u * unit_records, (u + 1) * unit_records)``. Every rank streams the input and reads every unit (that is
  cheap next to the GPU work), but processes only the units it claims.
* Units are **handed out dynamically** through the torch.distributed store that ``torchrun`` sets up: a
  rank claims the next unit with ``store.add`` (an atomic counter), so fast and slow GPUs finish together.
  Without ``torchrun`` the same code runs with a local counter.
* Each finished unit is written atomically under ``OUT/.work/units/`` (``units``); ``--resume`` keeps them and
  recomputes only the missing ones, whatever ``--gpus`` the resumed run uses.
* When every rank is done, rank 0 **merges** the unit files in input order.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from dataclasses import dataclass
from typing import Iterator


from .fasta import RecordBlock, RecordValidator, iter_raw_blocks

log = logging.getLogger("virnucpro")

DEFAULT_UNIT_RECORDS = 4096


# ------------------------------------------------------------------------------------------ ranks


@dataclass
class RankInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def rank_info() -> RankInfo:
    """This process's place in a ``torchrun`` job (rank 0 of 1 when not launched by torchrun)."""
    env = os.environ
    return RankInfo(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)),
                    int(env.get("LOCAL_WORLD_SIZE", 1)))


class Coordinator:
    """Claims units and shares counters: the torch.distributed store under torchrun, local state otherwise."""

    def __init__(self, info: RankInfo, backend: str, run_key: str):
        self.info = info
        self.store = None
        self._next = 0
        self._counters: dict[str, int] = {}
        if info.distributed:
            import datetime

            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group(backend=backend, timeout=datetime.timedelta(hours=6))
            self.dist = dist
            base = dist.distributed_c10d._get_default_store()
            self.store = dist.PrefixStore(f"virnucpro/{run_key}/", base)

    def claim(self) -> int:
        """The next unit to do (each unit is handed to exactly one rank)."""
        if self.store is None:
            self._next += 1
            return self._next - 1
        return int(self.store.add("next_unit", 1)) - 1

    def add(self, key: str, amount: int) -> int:
        if self.store is None:
            self._counters[key] = self._counters.get(key, 0) + amount
            return self._counters[key]
        return int(self.store.add(key, amount))

    def get(self, key: str) -> int:
        return self.add(key, 0)

    def share(self, key: str, value: str | None) -> str:
        """Rank 0's ``value`` for ``key``, on every rank."""
        if self.store is None:
            return value
        if self.info.is_main:
            self.store.set(key, value)
            return value
        return self.store.get(key).decode()

    def barrier(self):
        if self.store is not None:
            self.dist.barrier()

    def close(self):
        if self.store is not None and self.dist.is_initialized():
            self.dist.destroy_process_group()


# ------------------------------------------------------------------------------------------ units


def iter_units(path, unit_records: int, validator: RecordValidator) -> Iterator[tuple[int, RecordBlock]]:
    """``(unit, records)`` for every work unit of the input, in order; records validated, empty ones removed.

    A unit with only empty records is still yielded (with no records) so unit numbers stay dense.
    """
    pending: list[RecordBlock] = []
    have = 0
    unit = 0
    for block in iter_raw_blocks(path):
        pos = 0
        while pos < len(block):
            take = min(unit_records - have, len(block) - pos)
            pending.append(block.take(slice(pos, pos + take)))
            have += take
            pos += take
            if have == unit_records:
                yield unit, validator.check(RecordBlock.concat(pending))
                unit, pending, have = unit + 1, [], 0
    if pending:
        yield unit, validator.check(RecordBlock.concat(pending))


def now_stamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
