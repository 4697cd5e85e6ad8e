"""Ranks and work units (``distributed``): units cut by the input only, claimed once each."""

import numpy as np

from virnucpro_kernel.distributed import Coordinator, RankInfo, iter_units, rank_info
from virnucpro_kernel.fasta import RecordValidator


def test_units_are_cut_by_the_input_only(tmp_path):
    path = tmp_path / "in.fa"
    lengths = [5, 0, 7, 300, 1, 0, 0, 9]  # empty records keep their index and drop out of their unit
    path.write_text("".join(f">r{i}\n{'A' * n}\n" for i, n in enumerate(lengths)))
    for size in (1, 3, 8, 100):
        units = list(iter_units(path, size, RecordValidator(path)))
        assert [u for u, _ in units] == list(range(-(-len(lengths) // size)))
        got = np.concatenate([r.record_index for _, r in units])
        assert got.tolist() == [i for i, n in enumerate(lengths) if n]
        for u, records in units:
            assert all(u * size <= i < (u + 1) * size for i in records.record_index)


def test_local_coordinator_hands_out_each_unit_once(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = rank_info()
    assert info == RankInfo() and info.is_main and not info.distributed
    coord = Coordinator(info, "gloo", "test")
    assert [coord.claim() for _ in range(4)] == [0, 1, 2, 3]
    assert coord.add("frames", 5) == 5 and coord.add("frames", 2) == 7 and coord.get("frames") == 7
    assert coord.share("stamp", "x") == "x"
    coord.barrier()
    coord.close()
