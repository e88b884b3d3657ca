"""The figures' structure, read from the matplotlib objects the plot functions return:
titles, legend entries naming every mark, the part of the plan not run, the log scale,
and labels kept above the curves."""

import numpy as np

from scripts.local import plots

RESETS = (
    plots.Reset(step=100, cycle=1, tau=0.25, metric=0.7, early_switch=False),
    plots.Reset(step=150, cycle=2, tau=0.5, metric=0.6, early_switch=True),
)


def legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def schedule(peaks, length=100):
    """A plan of len(peaks) cycles of ``length`` steps, each a linear decay from its peak."""
    steps = np.arange(len(peaks) * length + 1)
    rates = np.array(
        [peaks[min(s // length, len(peaks) - 1)] * (1 - (s % length) / length) for s in steps]
    )
    return steps, rates, [i * length for i in range(len(peaks) + 1)]


def test_learning_rate_figure_marks_the_plan_not_run_and_names_every_mark():
    steps, rates, bounds = schedule([1e-3, 2e-3, 5e-4])
    fig = plots.learning_rate_figure(
        steps,
        rates,
        bounds,
        title="digits, soft reset (seed 0): learning-rate schedule as run",
        resets=RESETS,
        end_step=170,
        logged=[(0, 0.0), (100, 2e-3)],
    )
    ax = fig.axes[0]
    assert "soft reset" in ax.get_title() and "digits" in ax.get_title()
    labels = legend_texts(ax)
    for expected in (
        "learning rate as run",
        "plan, not run (after step 170)",
        "cycle boundary of the plan",
        "learning rate logged by submission.py",
        "training stopped (step 170)",
        "reset at a planned boundary",
        "reset by an early switch",
    ):
        assert expected in labels, labels
    assert "reported" not in labels
    not_run = next(line for line in ax.get_lines() if line.get_label().startswith("plan, not run"))
    assert not_run.get_linestyle() == "--" and min(not_run.get_xdata()) == 170
    as_run = next(line for line in ax.get_lines() if line.get_label() == "learning rate as run")
    assert max(as_run.get_xdata()) == 170
    assert ax.get_yscale() == "linear"  # Peaks within 10x of each other.
    # Labels live in the band above the highest curve, the legend outside the axes.
    assert ax.get_ylim()[1] > 1.15 * rates.max()
    assert [t.get_text() for t in ax.texts] == [
        "\N{GREEK SMALL LETTER TAU}=0.250",
        "\N{GREEK SMALL LETTER TAU}=0.500",
    ]
    assert ax.get_legend().get_bbox_to_anchor().x0 > ax.get_window_extent().x1 - 1


def test_learning_rate_on_a_log_axis_when_peaks_differ_by_more_than_10x():
    steps, rates, bounds = schedule([1e-1, 1e-3, 1e-3])
    assert plots.wants_log_scale(plots.cycle_peaks(steps, rates, bounds))
    fig = plots.learning_rate_figure(steps, rates, bounds, title="t")
    assert fig.axes[0].get_yscale() == "log"
    assert fig.axes[0].get_legend_handles_labels()[1][0] == "planned learning rate"
    assert not plots.wants_log_scale([1e-3, 9e-3, 0.0])


def test_a_loss_spike_puts_the_loss_on_a_log_axis_and_leaves_accuracy_linear():
    """A diverged cycle's loss 1000x the rest (a full restart) flattens a linear axis."""
    steps = (0, 10, 20, 30)

    def band(label, values):
        return plots.Band(label, steps, values, values, values, seeds=1)

    calm, spike = band("soft", (2.0, 0.4, 0.35, 0.3)), band("full", (2.0, 0.4, 1500.0, 0.5))
    accuracy = band("soft", (0.1, 0.9, 0.95, 0.96))
    panels = [("accuracy", "a", 0.97, [accuracy]), ("loss", "l", None, [calm, spike])]
    top, bottom = plots.comparison_figure(panels, title="t").axes
    assert (top.get_yscale(), bottom.get_yscale()) == ("linear", "log")
    calm_only = plots.comparison_figure([("loss", "l", None, [calm])], title="t")
    assert calm_only.axes[0].get_yscale() == "linear"
    fig = plots.metric_figure(list(steps), [2.0, 0.4, 1500.0, 0.5], ylabel="loss", title="t")
    assert fig.axes[0].get_yscale() == "log"


def test_tau_is_written_only_where_the_strategy_uses_it():
    fig = plots.metric_figure(
        [50, 100, 150, 200],
        [0.5, 0.7, 0.4, 0.8],
        ylabel="validation accuracy",
        title="digits, full reset (seed 0): validation accuracy",
        target=0.9,
        resets=RESETS,
        show_tau=False,
    )
    ax = fig.axes[0]
    assert len(ax.texts) == 0
    assert {"target 0.9", "reset at a planned boundary", "reset by an early switch"} <= set(
        legend_texts(ax)
    )
