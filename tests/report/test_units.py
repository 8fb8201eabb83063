"""Numbers as table text: whole from 1000 up (6810, not 6.81e+03), with an exponent past 1e9. A latency of 1e300
(an edited results file) printed 301 digits in report.md and in compare's change column."""

from __future__ import annotations

import pytest

from bench.judge.findings import fmt_change
from bench.report.units import WHOLE_BELOW, number_text, ratio_text


@pytest.mark.parametrize(
    "value, text",
    [
        (0.5, "0.5"),
        (-3.0, "-3"),
        (999.4, "999"),
        (6810.4, "6810"),
        (WHOLE_BELOW / 10, "100000000"),
        (1e300, "1e+300"),
    ],
)
def test_numbers_are_whole_in_their_range_and_short_beyond(value, text):
    assert number_text(value) == text


def test_ratios_and_changes_stay_short():
    assert ratio_text(19_900) == "19,900x" and ratio_text(1e12) == "1e+12x" and ratio_text(None) == "-"
    assert fmt_change(0.12) == "+12%" and fmt_change(-0.5) == "-50%"
    assert fmt_change(1e300) == "x1e+300" and len(fmt_change(1e300)) < 10
    # Control: the percentage the old format gave is 300 digits long.
    assert len(f"{1e300:+.0%}") > 300
