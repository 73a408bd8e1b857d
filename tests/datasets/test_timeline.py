"""The timeline resampler: exact grids, nearest choices with the documented tie rule, the report, and bad timestamps."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from vlaforge.datasets.timeline import (
    NS_PER_S,
    DuplicateTimestampError,
    Gap,
    ImplausibleSpanError,
    MissingStreamError,
    NoOverlapError,
    Timeline,
    TimestampOrderError,
    report_rows,
    summarize,
)

MS = 1_000_000
T0 = 1_760_000_000 * NS_PER_S + 123_456_789  # a real epoch stamp: exact integer arithmetic matters at this size


def _timeline(rate_hz=30.0, gap_threshold_s=0.1):
    return Timeline(Timeline.Config(rate_hz=rate_hz, gap_threshold_s=gap_threshold_s))


def _ms(*values):
    return T0 + np.array(values, dtype=np.int64) * MS


@pytest.mark.parametrize(("rate_hz", "ticks"), [(30.0, 300), (15.0, 150), (50.0, 500), (29.97, 300)])
def test_a_10_s_episode_has_duration_times_rate_ticks_with_the_end_excluded(rate_hz, ticks):
    camera = T0 + np.arange(0, 10 * NS_PER_S + 1, NS_PER_S // 30)  # 0 .. 10 s inclusive
    joints = T0 + np.arange(0, 10 * NS_PER_S + 1, NS_PER_S // 200)
    resampled = _timeline(rate_hz).resample({"camera": camera, "joints": joints})
    assert len(resampled.ticks_ns) == ticks
    expected = T0 + np.rint(np.arange(ticks) * NS_PER_S / rate_hz).astype(np.int64)
    np.testing.assert_array_equal(resampled.ticks_ns, expected)
    assert resampled.ticks_ns[-1] < T0 + 10 * NS_PER_S
    assert resampled.report.duration_s == pytest.approx(ticks / rate_hz)


def test_the_grid_spans_only_the_time_every_stream_has_data():
    early = _ms(0, 50, 100, 150, 200, 250, 300)
    late = _ms(120, 170, 220, 270, 320, 370)
    resampled = _timeline(20.0).resample({"early": early, "late": late})
    np.testing.assert_array_equal(resampled.ticks_ns, _ms(120, 170, 220, 270))  # from 120 ms, strictly before 300
    assert resampled.report.start_ns == _ms(120)[0]


def test_each_tick_takes_the_nearest_measurement_and_a_tie_goes_to_the_earlier():
    stamps = _ms(0, 40, 60, 90, 110, 150, 160)
    resampled = _timeline(20.0).resample({"s": stamps})  # ticks at 0, 50, 100, 150 ms
    np.testing.assert_array_equal(resampled.chosen["s"], [0, 1, 3, 5])  # 50: 40 vs 60 tie; 100: 90 vs 110 tie
    report = resampled.report.stream("s")
    assert (report.max_offset_ms, report.mean_offset_ms) == (10.0, 5.0)
    assert (report.duplicated, report.skipped) == (0, 2)  # measurements 2 and 4 fall between chosen ones
    assert report.measured_hz == pytest.approx(6 / 0.160)
    assert (report.gaps, report.max_gap_ms) == (0, 40.0)


def test_a_slow_stream_is_duplicated_and_a_fast_one_skipped():
    slow = _ms(0, 100, 200)
    fast = _ms(*range(0, 201, 10))
    resampled = _timeline(30.0).resample({"slow": slow, "fast": fast})  # ticks 0, 33.3, 66.7, 100, 133.3, 166.7
    np.testing.assert_array_equal(resampled.chosen["slow"], [0, 0, 1, 1, 1, 2])
    np.testing.assert_array_equal(resampled.chosen["fast"], [0, 3, 7, 10, 13, 17])
    slow_report, fast_report = resampled.report.stream("slow"), resampled.report.stream("fast")
    assert (slow_report.duplicated, slow_report.skipped) == (3, 0)
    assert (fast_report.duplicated, fast_report.skipped) == (0, 18 - 6)
    assert slow_report.max_offset_ms == pytest.approx(100 / 3, abs=1e-6)


def test_a_gap_is_reported_and_its_ticks_found_and_split_on():
    stamps = _ms(*range(0, 201, 20), *range(500, 801, 20))  # nothing between 200 and 500 ms
    resampled = _timeline(20.0, gap_threshold_s=0.1).resample({"camera": stamps})  # ticks every 50 ms
    assert resampled.report.gaps == (Gap("camera", int(_ms(200)[0]), int(_ms(500)[0])),)
    assert resampled.report.stream("camera").gaps == 1
    assert resampled.report.stream("camera").max_gap_ms == 300.0
    offsets_ms = (resampled.ticks_ns - T0) // MS
    # Inside the gap: more than half a tick (25 ms) from both 200 and 500 ms, so 250 .. 450 ms.
    np.testing.assert_array_equal(offsets_ms[resampled.in_gap], [250, 300, 350, 400, 450])
    assert resampled.segments() == [(0, 5), (10, 16)]


def test_a_gap_outside_the_grid_is_not_counted():
    camera = _ms(0, 300, 320, 340, 360, 380, 400)  # a 300 ms hole that ends when the joints start
    joints = _ms(*range(300, 411, 5))
    report = _timeline().resample({"camera": camera, "joints": joints}).report
    assert report.gaps == () and report.stream("camera").gaps == 0


def test_timestamps_that_go_backwards_are_a_named_error_not_reordered():
    stamps = _ms(0, 33, 66, 60, 100)
    with pytest.raises(TimestampOrderError) as error:
        _timeline().resample({"/cam_high/image_raw/compressed": stamps}, origin="episode_0007.mcap")
    assert error.value.index == 3 and error.value.origin == "episode_0007.mcap"
    assert "episode_0007.mcap: /cam_high/image_raw/compressed: timestamps go backwards at measurement 3" in str(
        error.value)
    assert "0.060000 s after 0.066000 s" in str(error.value)
    assert list(stamps) == list(_ms(0, 33, 66, 60, 100))  # the caller's array is untouched


def test_a_repeated_timestamp_is_its_own_named_error():
    with pytest.raises(DuplicateTimestampError, match="measurement 2 repeats the timestamp of measurement 1"):
        _timeline().resample({"joints": _ms(0, 5, 5, 10)}, origin="f.mcap")


def test_a_stream_without_measurements_and_streams_that_never_overlap_are_named():
    with pytest.raises(MissingStreamError, match="f.mcap: /leader_left/joint_states has no measurements"):
        _timeline().resample({"/leader_left/joint_states": np.array([], dtype=np.int64), "b": _ms(0, 10)},
                             origin="f.mcap")
    with pytest.raises(NoOverlapError, match="a ends 0.100 s before b starts"):
        _timeline().resample({"a": _ms(0, 100), "b": _ms(200, 300)}, origin="f.mcap")


def test_a_grid_of_implausible_length_is_refused_instead_of_allocated():
    seconds_not_nanoseconds = np.array([0, 10**17])  # a stream whose stamps are in the wrong unit or clock
    with pytest.raises(ImplausibleSpanError, match="likely mix clocks or units"):
        _timeline().resample({"a": seconds_not_nanoseconds, "b": np.array([1, 10**17])}, origin="f.mcap")


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="Timeline.Config.rate_hz must be a positive number, got 0"):
        Timeline.Config(rate_hz=0)
    with pytest.raises(ValueError, match="gap_threshold_s"):
        Timeline.Config(gap_threshold_s=-1.0)


def test_report_rows_and_summary_add_up():
    resampled = _timeline(30.0).resample({"slow": _ms(0, 100, 200), "fast": _ms(*range(0, 201, 10))})
    rows = report_rows(resampled.report, {"slow": "camera.left_wrist", "fast": "state"}, episode_id="e", file="f",
                       outcome="kept", segments=1)
    assert [(row["stream"], row["role"], row["ticks"], row["grid_hz"]) for row in rows] == [
        ("slow", "camera.left_wrist", 6, 30.0), ("fast", "state", 6, 30.0)]
    rows += report_rows(resampled.report, {"slow": "camera.left_wrist", "fast": "state"}, episode_id="e2", file="g",
                        outcome="flagged", segments=1)
    summary = summarize(rows)
    assert summary["episodes"] == 2 and summary["ticks"] == 12
    assert summary["outcomes"] == {"flagged": 1, "kept": 1}
    assert summary["roles"]["camera.left_wrist"]["duplicated"] == 6
    assert summary["roles"]["state"]["skipped"] == 24
    assert summarize([]) == {}


# Properties -----------------------------------------------------------------------------------------------------

RATES = st.sampled_from([10.0, 15.0, 20.0, 29.97, 30.0, 50.0, 60.0])


@st.composite
def streams(draw, max_interval_ms=60, min_size=2):
    """A strictly increasing stream of int64 ns stamps near T0: intervals of 1 ns .. `max_interval_ms`."""
    intervals = draw(st.lists(st.integers(1, max_interval_ms * MS), min_size=min_size - 1, max_size=120))
    start = T0 + draw(st.integers(0, 50 * MS))
    return start + np.concatenate([[0], np.cumsum(intervals)]).astype(np.int64)


@settings(max_examples=150, deadline=None)
@given(a=streams(), b=streams(), rate_hz=RATES)
def test_every_tick_takes_the_nearest_measurement_and_the_output_is_monotone(a, b, rate_hz):
    assume(min(a[-1], b[-1]) > max(a[0], b[0]))
    resampled = _timeline(rate_hz).resample({"a": a, "b": b})
    ticks = resampled.ticks_ns
    assert len(ticks) >= 1 and np.all(np.diff(ticks) > 0)
    assert ticks[0] == max(a[0], b[0]) and ticks[-1] < min(a[-1], b[-1])
    for name, stamps in (("a", a), ("b", b)):
        chosen = resampled.chosen[name]
        assert np.all(np.diff(chosen) >= 0)  # monotone: never goes back in a stream
        distances = np.abs(ticks[:, None] - stamps[None, :])
        best = distances.min(axis=1)
        np.testing.assert_array_equal(distances[np.arange(len(ticks)), chosen], best)
        np.testing.assert_array_equal(chosen, distances.argmin(axis=1))  # argmin takes the first: ties go earlier
        report = resampled.report.stream(name)
        assert report.duplicated == len(ticks) - len(np.unique(chosen))
        assert report.max_offset_ms == pytest.approx(best.max() / MS)


@settings(max_examples=150, deadline=None)
@given(stream=streams(max_interval_ms=33), rate_hz=st.sampled_from([10.0, 15.0, 20.0, 29.97, 30.0]))
def test_without_gaps_every_output_is_within_half_a_tick_of_its_source(stream, rate_hz):
    period = NS_PER_S / rate_hz
    assume(np.diff(stream).max() <= period)
    resampled = _timeline(rate_hz).resample({"s": stream})
    offsets = np.abs(resampled.ticks_ns - stream[resampled.chosen["s"]])
    assert offsets.max() <= period / 2
    assert not resampled.in_gap.any() and resampled.report.gaps == ()


@settings(max_examples=150, deadline=None)
@given(stream=streams(max_interval_ms=100, min_size=4), hole_ms=st.integers(101, 2000), where=st.floats(0.05, 0.95),
       rate_hz=RATES)
def test_a_hole_longer_than_the_threshold_is_found(stream, hole_ms, where, rate_hz):
    at = min(max(int(len(stream) * where), 1), len(stream) - 1)
    holed = np.concatenate([stream[:at], stream[at:] + hole_ms * MS])
    resampled = _timeline(rate_hz, gap_threshold_s=0.1).resample({"s": holed})
    gaps = resampled.report.gaps
    assert Gap("s", int(holed[at - 1]), int(holed[at])) in gaps
    intervals = np.diff(holed)
    assert len(gaps) == np.count_nonzero(intervals > 100 * MS) == resampled.report.stream("s").gaps
    half = NS_PER_S / rate_hz / 2
    inside = (resampled.ticks_ns > holed[at - 1] + half) & (resampled.ticks_ns < holed[at] - half)
    assert not np.any(inside & ~resampled.in_gap)  # every tick deep inside the hole is flagged
