"""The per-thread CPU ledger of a scan's stages (handler/run/stages.py), on a clock the test moves."""
from __future__ import annotations

import threading

from handler.run.stages import StageLedger


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def spend(self, seconds: float) -> None:
        self.now += seconds


def test_a_stage_inside_another_is_charged_to_the_inner_one_only():
    clock = Clock()
    ledger = StageLedger(clock)
    with ledger.stage("publish"):
        clock.spend(1.0)
        with ledger.stage("encode"):
            clock.spend(3.0)
        clock.spend(0.5)
    clock.spend(10.0)  # outside every stage: nobody's

    assert ledger.take() == {"publish": 1.5, "encode": 3.0}
    assert ledger.take() == {}


def test_the_work_of_a_lazy_iterable_is_charged_where_it_is_made_not_where_it_is_consumed():
    clock = Clock()
    ledger = StageLedger(clock)

    def made():
        for item in range(3):
            clock.spend(2.0)
            yield item

    with ledger.stage("send"):
        for _ in ledger.each("build", made()):
            clock.spend(1.0)

    assert ledger.take() == {"send": 3.0, "build": 6.0}


def test_since_gives_one_scans_share_and_each_thread_keeps_its_own_books():
    clock = Clock()
    ledger = StageLedger(clock)
    with ledger.stage("read"):
        clock.spend(1.0)
    before = ledger.snapshot()
    with ledger.stage("read"):
        clock.spend(2.0)
    with ledger.stage("plan"):
        clock.spend(0.25)
    other: dict[str, float] = {}
    thread = threading.Thread(target=lambda: other.update(ledger.snapshot()))
    thread.start()
    thread.join()

    assert ledger.since(before) == {"read": 2.0, "plan": 0.25}
    assert other == {}
