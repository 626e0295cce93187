"""Model rows, Pareto fronts and payback lines computed from a stored run."""

import pytest

from lowcarb.report.summary import (
    ACCURACY_TOLERANCE_PT,
    accuracy_tolerance_pt,
    fmt_count,
    fmt_g,
    model_rows,
    pareto_front,
    paybacks,
    stage_costs,
    totals,
)


def test_model_rows_pair_evaluations_with_the_stage_that_made_the_model(two_model_run):
    rows = model_rows(two_model_run)
    assert [(r.label, r.version) for r in rows] == [("train", 1), ("shrink", 2)]
    assert rows[0].cost_total_g == pytest.approx(0.24)
    assert rows[1].cost_energy_j == 60.0
    assert rows[1].accuracy == 0.93  # test accuracy preferred over dev


def test_input_model_row_when_evaluated_before_any_change(two_model_run):
    run = dict(two_model_run)
    first_eval = dict(run["stages"][2], label="evaluate", model_version=0)
    run["stages"] = [run["stages"][0], first_eval, *run["stages"][1:]]
    rows = model_rows(run)
    assert rows[0].label == "input model" and rows[0].cost_total_g == 0.0


def test_payback_arithmetic(two_model_run):
    (line,) = paybacks(model_rows(two_model_run))
    assert line.label == "shrink" and line.against == "train"
    assert line.spent_g == pytest.approx(0.06)
    # 0.004 g -> 0.001 g per 1,000 inferences: 3 mg saved per 1,000, 3 g per million.
    assert line.saved_g_per_million == pytest.approx(3.0)
    assert line.payback_inferences == pytest.approx(0.06 / 3e-6)
    assert line.accuracy_delta == pytest.approx(-0.02)
    assert "pays back after 20 thousand inferences" in line.sentence()


def test_payback_for_a_dearer_model_says_never(two_model_run):
    run = dict(two_model_run)
    stages = [dict(s) for s in run["stages"]]
    stages[4]["metrics"] = dict(stages[4]["metrics"], per1k_total_g=0.01)
    run["stages"] = stages
    (line,) = paybacks(model_rows(run))
    assert not line.cheaper and line.payback_inferences is None
    assert "not cheaper" in line.sentence()


@pytest.mark.parametrize(
    "points, front",
    [
        ([(1.0, 0.9), (2.0, 0.95), (3.0, 0.94), (0.5, 0.5)], [0, 1, 3]),
        ([(1.0, 0.9), (1.0, 0.9)], [0, 1]),  # equal points do not dominate each other
        ([(1.0, 0.9), (2.0, 0.8)], [0]),
        ([], []),
    ],
)
def test_pareto_front(points, front):
    assert pareto_front(points) == front


def test_stage_costs_and_totals(two_model_run):
    costs = stage_costs(two_model_run)
    assert [c["label"] for c in costs][:2] == ["setup", "train"]
    assert costs[1]["method"] == "cpu: estimated: cpu-time x 4 W/core"
    total = totals(two_model_run)
    assert total["energy_j"] == pytest.approx(369.0)
    assert total["embodied_g"] == pytest.approx(0.257)


def test_formatting():
    assert fmt_g(0.0034) == "3.4 mg"
    assert fmt_g(2500) == "2.5 kg"
    assert fmt_g(None) == "-"
    assert fmt_count(None) == "never"
    assert fmt_count(2.5e6) == "2.5 million"


def test_serving_figures_name_their_device_and_busy_timings_warn(two_model_run):
    import copy

    from lowcarb.report.summary import busy_warnings, fmt_interval, measurement_notes

    assert busy_warnings(two_model_run) == [] and measurement_notes(two_model_run) == []
    run = dict(copy.deepcopy(two_model_run), placement={"device": "cuda:0", "device_name": "NVIDIA H100",
                                         "precision": "bf16"}, threads=4)
    train_eval, shrink_eval = run["stages"][2]["metrics"], run["stages"][4]["metrics"]
    train_eval.update(device="cuda:0", device_name="NVIDIA H100", precision="bf16", threads=1,
                      latency_b1_p50_low_ms=1.9, latency_b1_p50_high_ms=2.1, latency_busy=False)
    # The compressed model is served on the CPU (an int8 path with no GPU kernel), timed busy.
    shrink_eval.update(device="cpu", device_name="AMD EPYC", precision="fp32", threads=1,
                       latency_busy=True, latency_load_1m=9.5, latency_cores=2)
    notes = measurement_notes(run)
    assert notes[0] == "Computed on cuda:0 (NVIDIA H100) in bf16, 4 torch thread(s)."
    assert "of train: measured on cuda:0 (NVIDIA H100) in bf16 at 1 thread(s)" in notes[1]
    assert "of shrink: measured on cpu (AMD EPYC) in fp32" in notes[2]
    (warning,) = busy_warnings(run)
    assert warning.startswith("the machine was busy while shrink was timed (load average 9.5 on 2 core(s))")
    assert fmt_interval(train_eval, "b1") == " ±5.0%" and fmt_interval(shrink_eval, "b1") == ""

    from lowcarb.report import render_html, render_markdown

    html, md = render_html(run), render_markdown(run)
    assert 'class="status-failed busy-warning">warning: the machine was busy while shrink' in html
    assert "Computed on cuda:0 (NVIDIA H100) in bf16" in html and "2 ±5.0% / 3 ms" in html
    assert "**warning:** the machine was busy while shrink was timed" in md


def _with_final_accuracy(run, accuracy, tolerance_pt=None):
    run = dict(run)
    stages = [dict(s) for s in run["stages"]]
    stages[4]["metrics"] = dict(stages[4]["metrics"], test_accuracy=accuracy)
    run["stages"] = stages
    if tolerance_pt is not None:
        run["recipe"] = dict(run["recipe"], evaluation={"accuracy_tolerance_pt": tolerance_pt})
    return run


def test_a_loss_at_the_tolerance_is_not_flagged(two_model_run):
    # 0.95 -> 0.93 is exactly 2 points (not 2.0000000000000018 after rounding): not flagged.
    (line,) = paybacks(model_rows(two_model_run))
    assert not line.accuracy_lost
    assert "ACCURACY LOST" not in line.sentence()
    assert "pays back after" in line.sentence()


def test_a_cheaper_model_that_lost_accuracy_says_the_saving_costs_accuracy(two_model_run):
    run = _with_final_accuracy(two_model_run, 0.90)
    (line,) = paybacks(model_rows(run), accuracy_tolerance_pt(run))
    assert line.cheaper and line.accuracy_lost
    sentence = line.sentence()
    assert "the saving costs accuracy" in sentence
    assert "ACCURACY LOST: -5.00 points against train, more than the 2-point tolerance" in sentence


def test_the_recipe_sets_the_tolerance(two_model_run):
    run = _with_final_accuracy(two_model_run, 0.90, tolerance_pt=6.0)
    assert accuracy_tolerance_pt(run) == 6.0
    (line,) = paybacks(model_rows(run), accuracy_tolerance_pt(run))
    assert not line.accuracy_lost
    assert accuracy_tolerance_pt({"recipe": {}}) == ACCURACY_TOLERANCE_PT == 2.0


def test_a_dearer_model_that_lost_accuracy_is_flagged_too(two_model_run):
    run = _with_final_accuracy(two_model_run, 0.50)
    run["stages"][4]["metrics"] = dict(run["stages"][4]["metrics"], per1k_total_g=0.01)
    (line,) = paybacks(model_rows(run))
    assert not line.cheaper and line.accuracy_lost
    assert "not cheaper" in line.sentence() and "ACCURACY LOST: -45.00 points" in line.sentence()


def test_reports_and_terminal_flag_the_lossy_stage(two_model_run):
    from rich.console import Console

    from lowcarb.report import render_html, render_markdown
    from lowcarb.report.terminal import final_table, payback_lines

    run = _with_final_accuracy(two_model_run, 0.90)
    assert "ACCURACY LOST" in render_markdown(run)
    assert 'class="cheaper accuracy-lost"' in render_html(run)
    (line,) = payback_lines(run)
    assert "the saving costs accuracy" in line
    console = Console(record=True, width=200, color_system="truecolor", force_terminal=True)
    console.print(final_table(run))
    text = console.export_text(styles=True)
    shrink_line = next(x for x in text.splitlines() if "shrink" in x)
    train_line = next(x for x in text.splitlines() if "train" in x and "shrink" not in x)
    assert "\x1b[1;31m" in shrink_line and "\x1b[1;31m" not in train_line
    # Within the tolerance nothing is flagged.
    assert not any("ACCURACY LOST" in x for x in payback_lines(two_model_run))
