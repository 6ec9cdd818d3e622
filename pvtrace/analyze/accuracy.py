"""How far an analysis is from ground truth: incident recall/precision and total errors.

Used to state, for each fidelity level, how close pvtrace gets to what really
happened in a simulated run (docs/accuracy.md).
"""

from __future__ import annotations

import polars as pl

MATCH_KEY = ["vm", "lock", "holder"]


def matched(found: pl.DataFrame, truth: pl.DataFrame, key: list[str]) -> tuple[int, int]:
    """(found rows overlapping a truth row of the same key, truth rows overlapping a found row)."""
    if found.height == 0 or truth.height == 0:
        return 0, 0
    f = found.select(*key, "start", "end").with_row_index("_f")
    t = truth.select(*key, "start", "end").with_row_index("_t")
    pairs = f.join(t, on=key, suffix="_t").filter(
        (pl.col("start") < pl.col("end_t")) & (pl.col("start_t") < pl.col("end"))
    )
    return pairs["_f"].n_unique(), pairs["_t"].n_unique()


def incident_counts(found: pl.DataFrame, truth: pl.DataFrame, key: list[str] | None = None) -> dict[str, int]:
    """The counts behind recall and precision, which add up over runs: n_found, n_true,
    found_matched (found rows overlapping a true one), true_matched (true rows overlapping a found one)."""
    f_ok, t_ok = matched(found, truth, key or MATCH_KEY)
    return {"n_found": found.height, "n_true": truth.height, "found_matched": f_ok, "true_matched": t_ok}


def scores_of(counts: dict[str, int]) -> dict[str, float | int]:
    """Recall and precision from (possibly pooled) incident_counts."""
    n_found, n_true = counts["n_found"], counts["n_true"]
    return {
        "n_found": n_found,
        "n_true": n_true,
        "precision": counts["found_matched"] / n_found if n_found else (1.0 if n_true == 0 else 0.0),
        "recall": counts["true_matched"] / n_true if n_true else 1.0,
    }


def pooled(counts: list[dict[str, int]]) -> dict[str, int]:
    """incident_counts of several runs summed (recall and precision over all their incidents)."""
    keys = ("n_found", "n_true", "found_matched", "true_matched")
    return {k: sum(c[k] for c in counts) for k in keys}


def incident_scores(
    found: pl.DataFrame, truth: pl.DataFrame, key: list[str] | None = None
) -> dict[str, float | int]:
    """Recall and precision of found incidents against true ones (match: same key, overlapping time)."""
    return scores_of(incident_counts(found, truth, key))


def harmful_lhp_counts(lhp_found: pl.DataFrame, lhp_truth: pl.DataFrame) -> dict[str, int]:
    """incident_counts on harmful LHP incidents."""
    return incident_counts(lhp_found.filter(pl.col("harmful")), lhp_truth.filter(pl.col("harmful")))


def harmful_lhp_scores(lhp_found: pl.DataFrame, lhp_truth: pl.DataFrame) -> dict[str, float | int]:
    """incident_scores on harmful LHP incidents."""
    return scores_of(harmful_lhp_counts(lhp_found, lhp_truth))


def relative_error(found: int | None, true: int) -> float | None:
    """(found - true) / true; None when found is unavailable; 0 when both are 0."""
    if found is None:
        return None
    if true == 0:
        return 0.0 if found == 0 else float("inf")
    return (found - true) / true
