"""The terminal's progress bars: one per stage, counted in what the stage counts, closed when done."""

from __future__ import annotations

from comet_studio.cli.progress import StageBars


def test_each_stage_gets_a_bar_in_its_own_unit_and_closes_when_done():
    bars = StageBars()
    try:
        for stage, total in (("features", 10), ("trust", 10), ("memory pass 2", 10), ("rounds", 12)):
            bars(stage, 1, total)
            assert bars.bars[stage].unit == ("round" if stage == "rounds" else "img"), stage
        bars("features", 10, 10)
        assert "features" not in bars.bars  # its clock stops at its total
        bars("rounds", 0, 6)  # a new total (the next cell): a fresh bar
        assert bars.bars["rounds"].total == 6 and bars.bars["rounds"].n == 0
    finally:
        bars.close()
    assert bars.bars == {}
