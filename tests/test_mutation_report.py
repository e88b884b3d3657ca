"""docs/mutation.md is rendered from the summaries kept in scripts/mutation/summaries/ and
the list of equivalent mutants: never edited by hand, never out of step with either."""

from scripts.mutation import report, results, stage


def _summary(**changes):
    base = {
        "module": "records",
        "files": ["records.py"],
        "tests": ["tests/test_records.py"],
        "mutants": 10,
        "not_checked": 0,
        "killed": 7,
        "timeouts": 1,
        "survivors": {"cyclic_soft_reset.records.x_f__mutmut_1": "survived",
                      "cyclic_soft_reset.records.x_f__mutmut_2": "survived",
                      "cyclic_soft_reset.records.x_g__mutmut_3": "no tests"},
        "seconds": 90.0,
        "command": "mutmut run",
    }  # fmt: skip
    return {**base, **changes}


def test_the_report_is_what_the_kept_summaries_render():
    """A hand edit of docs/mutation.md, a summary or equivalent.toml without `make mutation
    ARGS=report` fails here."""
    assert all(results.summary_path(m).exists() for m in stage.CORE), "a module's summary"
    rendered = report.render(report._summaries(), report.equivalents())
    assert report.REPORT.read_text() == rendered


def test_a_listed_equivalent_is_not_counted_and_an_unlisted_survivor_is_open():
    why = {"cyclic_soft_reset.records.x_f__mutmut_1": "the same value either way"}
    assert report.score(_summary(), why) == (1, 7 / 9)
    assert report.score(_summary(not_checked=4), why) == (1, 7 / 5)
    text = report.render({"records": _summary(date="2026-12-06", machine="m", versions={})}, why)
    assert "| `records` | 10 | 7 (1 by timeout) | 2 | 1 | 77.8% (below 90%) | 1.5 min |" in text
    assert "| `reset` | not run |" in text
    assert "- `cyclic_soft_reset.records.x_f__mutmut_1`: the same value either way" in text
    assert "- `cyclic_soft_reset.records.x_g__mutmut_3` (no tests)" in text
    assert "Run on 2026-12-06: m; ." in text


def test_an_equivalent_no_run_reports_surviving_is_called_stale():
    why = {"cyclic_soft_reset.records.x_h__mutmut_9": "gone", "cyclic_soft_reset.reset.x": "?"}
    text = report.render({"records": _summary()}, why)
    stale = text.split("Listed as equivalent but not surviving (remove from the list):")[1]
    # Only modules that were run can call an entry stale.
    assert "x_h__mutmut_9" in stale and "cyclic_soft_reset.reset.x" not in stale
