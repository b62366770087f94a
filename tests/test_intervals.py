"""Bootstrap intervals: hand-computed small cases, the large-sample normal approximation, pairing."""

from __future__ import annotations

import numpy as np
import pytest

from kedit.errors import KeditError
from kedit.reports.intervals import bootstrap, indicator, paired_columns, paired_difference, per_case


def test_two_cases_zero_and_one_give_the_whole_range():
    # resampled means are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4: the 2.5 % and 97.5 % points are 0 and 1
    interval = bootstrap([0.0, 1.0], resamples=4_000, seed=1)
    assert (interval.estimate, interval.low, interval.high) == (0.5, 0.0, 1.0)


def test_three_cases_by_hand_at_90_percent():
    # means of [0, 0, 1] resampled: 0 (8/27), 1/3 (12/27), 2/3 (6/27), 1 (1/27); the CDF reaches
    # 26/27 = 0.963 at 2/3, past the 95 % point, so a 90 % interval is [0, 2/3]
    interval = bootstrap([0.0, 0.0, 1.0], level=0.90, resamples=20_000, seed=2)
    assert interval.low == 0.0 and interval.high == pytest.approx(2 / 3)
    assert interval.estimate == pytest.approx(1 / 3)


def test_constant_values_have_a_zero_width_interval():
    interval = bootstrap([0.7] * 50, resamples=500)
    assert interval.low == interval.high == pytest.approx(0.7)


def test_large_sample_matches_the_normal_approximation():
    rng = np.random.default_rng(0)
    values = (rng.random(2_000) < 0.3).astype(float)
    interval = bootstrap(values, resamples=5_000, seed=3)
    p = values.mean()
    half_width = 1.96 * np.sqrt(p * (1 - p) / len(values))
    assert (interval.high - interval.low) / 2 == pytest.approx(half_width, rel=0.1)
    assert interval.contains(p)


def test_resampling_is_seeded():
    values = np.random.default_rng(5).random(40)
    assert bootstrap(values, seed=7, resamples=300) == bootstrap(values, seed=7, resamples=300)
    assert bootstrap(values, seed=7, resamples=300) != bootstrap(values, seed=8, resamples=300)


def test_a_constant_paired_shift_is_exact_while_separate_intervals_overlap():
    first = np.random.default_rng(1).random(200)
    second = first - 0.02
    paired = paired_difference(first, second, resamples=2_000)
    assert paired.low == pytest.approx(0.02) and paired.high == pytest.approx(0.02)
    a, b = bootstrap(first, resamples=2_000), bootstrap(second, resamples=2_000)
    assert a.low < b.high  # unpaired, the same difference looks uncertain


def test_a_statistic_over_several_columns():
    # S = harmonic mean of three dataset means; constant columns give its exact value
    columns = np.tile([0.5, 1.0, 0.25], (30, 1))

    def harmonic(samples):
        means = samples.mean(axis=-2)
        return 3 / (1 / means).sum(axis=-1)

    interval = bootstrap(columns, harmonic, resamples=200)
    assert interval.estimate == pytest.approx(3 / (2 + 1 + 4))
    assert interval.low == interval.high == pytest.approx(interval.estimate)


def test_cases_are_paired_by_key_and_absent_metrics_left_out():
    run_a = [{"key": "0:aa", "m": 1.0}, {"key": "1:bb", "m": None}, {"key": "2:cc", "m": 0.0}]
    run_b = [{"key": "2:cc", "m": 0.5}, {"key": "0:aa", "m": 0.5}, {"key": "1:bb", "m": 1.0}]
    keys, a, b = paired_columns(per_case(run_a, lambda r: r["m"]), per_case(run_b, lambda r: r["m"]))
    assert keys == ["0:aa", "2:cc"] and a.tolist() == [1.0, 0.0] and b.tolist() == [0.5, 0.5]
    assert indicator(1.0) == 1.0 and indicator(0.99) == 0.0 and indicator(None) is None


def test_bad_input_is_refused_with_a_reason():
    with pytest.raises(KeditError, match="at least one case"):
        bootstrap([])
    with pytest.raises(KeditError, match="finite"):
        bootstrap([0.1, float("nan")])
    with pytest.raises(KeditError, match="level"):
        bootstrap([0.1], level=95)
    with pytest.raises(KeditError, match="same cases"):
        paired_difference([0.1, 0.2], [0.1])
    with pytest.raises(KeditError, match="twice"):
        per_case([{"key": "a", "m": 1}, {"key": "a", "m": 0}], lambda r: r["m"])
    with pytest.raises(KeditError, match="share no case"):
        paired_columns({"a": 1.0}, {"b": 1.0})


def test_report_compare_prints_paired_differences_of_two_runs_on_the_same_cases(make_lm, tmp_path):
    import json

    from typer.testing import CliRunner

    import tests.test_edit_kinds  # noqa: F401  (registers the toy method "test-scale")
    from kedit.cli import app
    from kedit.evaluate.runner import run_bench
    from kedit.reports.paired import compare_runs
    from kedit.reports.runs import read_run
    from kedit.requests import Case, EditRequest, LocalityProbe

    lm = make_lm("llama")
    requests = [EditRequest("The mother tongue of {} is", "Danielle Darrieux", "English", target_true="French"),
                EditRequest("{} plays the sport of", "Lionel Messi", "tennis", target_true="football"),
                EditRequest("{} is located in", "The Louvre", "Rome", target_true="Paris")]
    cases = [Case(request=r, rephrases=(r.text,), locality=(LocalityProbe("The Colosseum is in", "Rome"),))
             for r in requests]
    for name, scale in (("strong", 2.0), ("weak", 0.1)):
        run_bench(lm, "test-scale", cases, mode="single", out_dir=tmp_path / name, overrides={"scale": scale},
                  progress=False)
    rows = {row.name: row for row in compare_runs(read_run(tmp_path / "strong"), read_run(tmp_path / "weak"),
                                                  resamples=500)}
    records = [[json.loads(line) for line in (tmp_path / name / "results.jsonl").read_text().splitlines()]
               for name in ("strong", "weak")]
    by_hand = [sum(r["token"]["post"]["locality"] for r in run) / 3 for run in records]
    assert rows["locality"].difference.n == 3
    assert rows["locality"].difference.estimate == pytest.approx(by_hand[0] - by_hand[1])

    result = CliRunner().invoke(app, ["report", str(tmp_path / "strong"), str(tmp_path / "weak"),
                                      "--out", str(tmp_path / "report"), "--compare"])
    assert result.exit_code == 0, result.output
    assert "paired" in result.output and "locality" in result.output

    run_bench(lm, "test-scale", cases[:2], mode="single", out_dir=tmp_path / "fewer", progress=False)
    refused = CliRunner().invoke(app, ["report", str(tmp_path / "strong"), str(tmp_path / "fewer"),
                                       "--out", str(tmp_path / "report2"), "--compare"])
    assert refused.exit_code == 2 and "not run on the same cases" in refused.output


def test_the_harmonic_statistic_is_s_of_the_column_means_and_zero_when_one_mean_is_zero():
    from kedit.reports.intervals import harmonic_of_column_means

    columns = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])  # means 0.5, 0.5, 1.0
    assert harmonic_of_column_means(columns[None])[0] == pytest.approx(3 / (2 + 2 + 1))
    assert harmonic_of_column_means(columns[None, :1])[0] == 0.0  # PS mean 0: S is 0, as summarize() gives
    interval = bootstrap(np.tile([0.5, 1.0, 0.25], (30, 1)), harmonic_of_column_means, resamples=100)
    assert interval.estimate == pytest.approx(3 / (2 + 1 + 4))


def test_the_bounded_mean_interval_is_the_widest_normal_interval_for_values_in_0_1():
    from kedit.reports.intervals import bounded_mean_interval

    low, high = bounded_mean_interval(0.5, 100)
    assert (low, high) == (pytest.approx(0.5 - 1.959964 * 0.05), pytest.approx(0.5 + 1.959964 * 0.05))
    assert bounded_mean_interval(1.0, 200) == (1.0, 1.0) and bounded_mean_interval(0.99, 10)[1] == 1.0
    # for 0/1 values it is the normal interval; for any other values in [0, 1] with that mean it is wider
    spread = np.random.default_rng(4).random(400)
    sd = spread.std() / np.sqrt(len(spread))
    low, high = bounded_mean_interval(float(spread.mean()), len(spread))
    assert high - low > 2 * 1.96 * sd
    binary = (np.random.default_rng(5).random(2_000) < 0.3).astype(float)
    low, high = bounded_mean_interval(float(binary.mean()), len(binary))
    boot = bootstrap(binary, resamples=4_000)
    assert low == pytest.approx(boot.low, abs=0.004) and high == pytest.approx(boot.high, abs=0.004)
    with pytest.raises(KeditError, match="in \\[0, 1\\]"):
        bounded_mean_interval(1.2, 10)


def test_the_benchmark_intervals_script_agrees_with_kedit_report_compare(capsys):
    """bench/claim_intervals.py prints what docs/BENCHMARKS.md states; its paired ROME − MEMIT rows on the
    committed issue-11 records are the ones `kedit report A B --compare` computes."""
    import sys
    from pathlib import Path

    from kedit.reports.paired import compare_runs
    from kedit.reports.runs import read_run

    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo / "bench"))
    try:
        import claim_intervals
    finally:
        sys.path.remove(str(repo / "bench"))
    assert claim_intervals.main([]) == 0
    printed = capsys.readouterr().out
    rows = {row.name: row.difference for row in compare_runs(read_run(repo / "docs/results/issue11/cf-rome"),
                                                              read_run(repo / "docs/results/issue11/cf-memit-batch100"))}
    line = next(line for line in printed.splitlines()
                if "paired  locality:" in line and printed.index(line) > printed.index("ROME single − MEMIT"))
    assert claim_intervals.fmt(rows["locality"], signed=True) in line
    assert "bound   CounterFact MEMIT, reliability: 0.980 [0.961, 0.999] (n=200)" in printed
