"""Service processes keep their start-up heap out of garbage collection (`common.main`)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from common.main import GC_YOUNG_THRESHOLD, settle_heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_start_up_objects_are_frozen_and_young_collections_are_rarer() -> None:
    survivor = [object()]  # alive at start-up, like the app's modules and validators
    _, older, oldest = gc.get_threshold()
    settle_heap()
    assert gc.get_freeze_count() > 0
    assert all(o is not survivor for o in gc.get_objects())  # frozen: never traversed
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, older, oldest)
