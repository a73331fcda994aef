"""The soak benchmark's pure parts: which changes count as outside faults, and RSS slopes."""

from benchmarks.soak import Timeline, life_slope


def _samples(lives: list[tuple[int, int, float, float]]) -> list[dict]:
    """``(pid, samples, first MB, MB per 30 s sample)`` per life, one sample every 30 s."""
    out, t = [], 0.0
    for pid, count, first, step in lives:
        for i in range(count):
            out.append({"t": t, "rss_mb": {"p": first + i * step}, "pid": {"p": pid}})
            t += 30
    return out


def test_a_restart_is_not_counted_as_growth_but_growth_within_a_life_is():
    # 20 min at +1 MB/30 s, restarted, then 40 min flat: the whole run's points rise and fall,
    # the longest life after its warm-up is flat
    restarted = _samples([(1, 40, 100, 1.0), (2, 80, 60, 0.0)])
    slope, minutes = life_slope(restarted, "p")
    assert slope == 0.0 and 29 <= minutes <= 30
    # one life growing 0.2 MB a sample (24 MB/h) after its warm-up: reported as it is
    leaking = _samples([(1, 120, 100, 0.2)])
    slope, minutes = life_slope(leaking, "p")
    assert abs(slope - 24.0) < 0.01 and 49 <= minutes <= 50


def test_a_process_never_sampled_long_enough_has_no_slope():
    assert life_slope(_samples([(1, 10, 100, 5.0)]), "p") == (0.0, 0.0)
    assert life_slope([], "p") == (0.0, 0.0)


def test_a_change_in_flight_when_a_fault_began_is_not_counted_as_healthy():
    timeline = Timeline(started=0.0)
    timeline.faults.append({"name": "mongo_restart", "start": 1000.0, "end": 1150.0})
    assert timeline.in_flight_during_fault(written=950.0, latency=60.0)  # visible at 1010
    assert not timeline.in_flight_during_fault(written=900.0, latency=60.0)  # visible before
    assert timeline.in_flight_during_fault(written=1200.0, latency=5.0)  # in the settle window
    assert not timeline.in_flight_during_fault(written=1300.0, latency=5.0)  # after it
