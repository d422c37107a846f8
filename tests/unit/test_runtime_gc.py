"""The runtime keeps the cyclic collector off start-up objects, and gives the process back as it was."""

import gc

from consumers.runtime import steady_gc


def test_steady_gc_freezes_start_up_objects_and_restores_the_collector():
    before = gc.get_threshold()
    with steady_gc(first_threshold=12_345):
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (12_345, *before[1:])
        cycle: list = []
        cycle.append(cycle)  # cyclic garbage made while running is still collected
        del cycle
        assert gc.collect() >= 1
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
