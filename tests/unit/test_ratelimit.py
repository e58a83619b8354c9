"""Warnings a peer can provoke are logged at a bounded rate, and say how many were left out.

Regression for what the fuzz test found: every bad frame was one WARNING line (10,000 hostile
frames gave the controller's log 9,119 lines in 5 s), so any key that completes a handshake
could fill the controller's disk through its log.
"""

from __future__ import annotations

import logging

import pytest

from slices.ratelimit import PeerWarnings, RateLimit
from tests.clock import Clock

pytestmark = pytest.mark.timeout(10)


def test_a_bucket_gives_its_burst_then_its_rate() -> None:
    clock = Clock(100.0)
    bucket = RateLimit(2.0, 5.0, clock)
    assert sum(bucket.take() for _ in range(100)) == 5
    clock.now += 1.0
    assert sum(bucket.take() for _ in range(100)) == 2
    assert bucket.refused == 193


def test_a_flood_of_warnings_is_cut_to_the_rate_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(100.0)
    log = logging.getLogger("test.peerwarnings")
    warnings = PeerWarnings(log, rate=10.0, burst=20.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger=log.name):
        for i in range(10_000):
            warnings.warning("dropping frame %d from %s", i, "127.0.0.1")
        assert len(caplog.records) == 20
        clock.now += 1.0
        warnings.warning("dropping frame %d from %s", 10_000, "127.0.0.1")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[20] == "9980 more warnings about bad messages were not logged (at most 10 a second are)"
    assert lines[21] == "dropping frame 10000 from 127.0.0.1"
    assert len(lines) == 22
