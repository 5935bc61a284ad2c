from bus.consumer import _PartitionProgress


def test_commits_only_the_contiguous_finished_prefix() -> None:
    p = _PartitionProgress()
    assert p.commit_offset() is None
    p.in_flight.update({5, 6, 7})
    # 6 finishes first: 5 is still running, so nothing past 5 may be committed
    p.in_flight.discard(6)
    p.highest_done = 6
    assert p.commit_offset() == 5
    p.in_flight.discard(5)
    p.highest_done = max(p.highest_done, 5)
    assert p.commit_offset() == 7
    p.in_flight.discard(7)
    p.highest_done = 7
    assert p.commit_offset() == 8
