"""The measured curves kept in tests/results agree with themselves and with the docs that quote them."""
import csv
import glob
import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
# One file per run of Pong that beat the built-in AI (the preset, and the learning rate it
# replaced), one row per finished game (the bench recorder).
PONG_CURVES = ["pong-cpu.csv", *sorted(os.path.basename(path) for path in glob.glob(os.path.join(HERE, "results", "pong-*-seed*.csv")))]


@pytest.mark.parametrize("name", PONG_CURVES)
def test_pong_curve_is_well_formed_and_its_first_win_is_in_the_docs(name):
    with open(os.path.join(HERE, "results", name)) as file:
        rows = [(int(r["env_steps"]), float(r["wall_seconds"]), float(r["mean_score_last_20"])) for r in csv.DictReader(file)]
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(rows, rows[1:]))
    assert all(-21 <= score <= 21 for _, _, score in rows)
    steps, seconds, _ = next(row for row in rows if row[2] > 0)  # first beats the built-in AI
    docs = "".join(open(path).read() for path in [os.path.join(HERE, "..", "README.md"),
                                                  *sorted(glob.glob(os.path.join(HERE, "..", "docs", "*.md")))])
    assert f"{steps:,}" in docs and f"{seconds:.1f} s" in docs
