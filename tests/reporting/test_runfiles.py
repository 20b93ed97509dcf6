import math

import pytest

from nlora_lightning.reporting.runfiles import format_percent


@pytest.mark.parametrize(("value", "digits", "expected"), [
    (0.8123, 1, "81.2"),
    (-0.0257, 2, "-2.57"),
    (0.0, 2, "0.00"),
    (-1e-17, 2, "0.00"),  # the difference of two equal BWTs after float arithmetic
    (-0.00004, 2, "0.00"),
    (-0.00006, 2, "-0.01"),  # clear of the -0.005 rounding boundary
    (None, 2, "n/a"),
    (math.nan, 1, "n/a"),
])
def test_format_percent(value, digits, expected):
    assert format_percent(value, digits) == expected
