import pytest
from hypothesis import given
from hypothesis import strategies as st

from vlaforge.datasets.qwen_coordinates import from_qwen_box, to_qwen_box, to_qwen_point


def test_known_values():
    assert to_qwen_box([0, 0, 640, 480], height=480, width=640) == [0, 0, 1000, 1000]
    assert to_qwen_box([160, 120, 320, 360], height=480, width=640) == [250, 250, 500, 750]
    assert to_qwen_point([64, 48], height=480, width=640) == [100, 100]
    assert to_qwen_box([-5, -5, 700, 500], height=480, width=640) == [0, 0, 1000, 1000]


def test_inverted_box_is_refused():
    with pytest.raises(ValueError, match="x2 < x1"):
        to_qwen_box([10, 0, 5, 5], height=10, width=10)


@given(st.integers(1, 4000), st.integers(1, 4000), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1))
def test_round_trip_within_half_a_unit(height, width, a, b, c, d):
    box = [min(a, c) * width, min(b, d) * height, max(a, c) * width, max(b, d) * height]
    back = from_qwen_box(to_qwen_box(box, height, width), height, width)
    for got, want, extent in zip(back, box, (width, height, width, height)):
        assert abs(got - want) <= 0.5 * extent / 1000 + 1e-9
