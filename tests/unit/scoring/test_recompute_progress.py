"""The CLI recompute's progress line: a bar, the share, counts, rate and time left."""

from __future__ import annotations

from scoring.recompute import progress_line


def test_progress_line_shows_bar_share_rate_and_eta() -> None:
    line = progress_line(90_000, 200_000, 15.0)
    assert line == (
        "recompute: [##############................]  45% 90,000/200,000 facts, 6,000/s, ETA 18 s"
    )


def test_progress_line_when_done_or_empty() -> None:
    assert progress_line(10, 10, 2.0).endswith("100% 10/10 facts, 5/s, done")
    assert progress_line(0, 0, 0.0).endswith("0/0 facts, 0/s, done")
