"""The measured curves kept in tests/results agree with themselves and with README.md."""
import csv
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def test_pong_cpu_curve_is_well_formed_and_matches_the_readme():
    with open(os.path.join(HERE, "results", "pong-cpu.csv")) as file:
        rows = [(int(r["env_steps"]), float(r["wall_seconds"]), float(r["mean_score_last_20"])) for r in csv.DictReader(file)]
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(rows, rows[1:]))
    assert all(-21 <= score <= 21 for _, _, score in rows)
    steps, seconds, _ = next(row for row in rows if row[2] > 0)  # first beats the built-in AI
    readme = open(os.path.join(HERE, "..", "README.md")).read()
    assert f"{steps:,} environment steps" in readme and f"{seconds:.1f} s" in readme
