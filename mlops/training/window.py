"""The training window, chosen by evidence: all history, or only the last k periods of it.

On growing data old rows teach a level that is gone (the last few months win); on stationary data
every row helps (all history wins). No fixed choice is right for both, so `train_on: auto` lets the
data decide: the newest period of the training rows is held back, each candidate window ending before
it is fitted with the tuned configuration, and the one with the best primary metric on those held-back
rows (none of the candidates trained on them) is the window the challenger trains on, counted back
from the newest row. A shorter window must beat all history clearly: a paired bootstrap's 90% lower bound
on its gain must exceed `SHORT_WINDOW_MARGIN` (5%) of all history's error. Significance alone is not enough:
a window that wins one held-back period by 1-4% often loses the seasons it never saw (on the stationary
regime at a second seed, such choices cost a fifth of the retraining gain), and throwing history away is
worth it only for a gain that matters, as on growth or after a change, where short windows win by far more.

Candidates, coarse to fine: all history and the last 1, 4, 16 periods while shorter than the history (a ratio of 4,
`COARSE_RATIO`); only when the best of those short windows beats all history by more than the margin (its score
alone, before any bootstrap) are its neighbours at half and twice its length fitted too (the last 2 and 8 around the
last 4, say): a short window within the margin is not chosen, and lengths beside it score close to it (in nine
replays of the project's regimes, every retrain that chose a short window had such a coarse winner; the neighbours
were fitted at 11 of its 87 choices instead of 39). The fit of all history costs about a retrain's own fit and a
short window's not much less (a boosted model's per-iteration work dominates small windows), so the candidates fit
side by side in the search's worker processes, one thread each, when those are up (`warm_executor`); starting them
for a choice alone would cost more than it saves. On the project's regimes this chose the same window at every
retrain as the ratio-2 ladder (1, 2, 4, 8), which fitted up to four short windows every time, one after another. The
period is the monitoring cadence (the backtest's window length). Pure: no Prefect, no MLflow; the training flow
(tasks/tuning.py) and the backtest both call `choose_window`.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from mlops.core.config import METRIC_DIRECTION, PipelineConfig
from mlops.core.periods import PERIOD, as_times, cron_period, parse_period
from mlops.training.evaluation import Predictions, metric_value, paired_bootstrap, predict
from mlops.training.trials import thread_plan, warm_executor

COARSE_RATIO = 4  # the coarse short windows: the last 1, 4, 16 periods
MAX_COARSE_WINDOWS = 3
MIN_WINDOW_ROWS = 100  # a candidate with fewer rows is too small to fit soundly
MIN_CHECK_ROWS = 30  # held-back rows the candidates are compared on
SHORT_WINDOW_MARGIN = 0.05  # a shorter window's lower bound must beat all history by this share of its error
ALL_HISTORY = "all history"


@dataclass
class WindowCandidate:
    """One candidate window: its name, how many periods (None: all history), rows, and its held-back score."""

    name: str
    periods: int | None
    rows: int
    score: float | None = None
    note: str = ""


@dataclass
class WindowChoice:
    """The chosen window (`periods` None: all history) with every candidate's score and what choosing cost."""

    chosen: str
    periods: int | None
    period: str
    metric: str
    check_rows: int
    candidates: list[WindowCandidate] = field(default_factory=list)
    fits: int = 0
    seconds: float = 0.0
    reason: str = ""

    @property
    def is_all(self) -> bool:
        return self.periods is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line: the window, and each candidate's score on the held-back rows."""
        scores = ", ".join(f"{c.name} {c.score:.4g}" if c.score is not None else f"{c.name} ({c.note})"
                           for c in self.candidates)
        return f"{self.chosen}: {self.reason}" + (f" ({self.metric} on {self.check_rows:,} held-back rows: {scores})"
                                                   if self.candidates else "")

    def to_markdown(self) -> str:
        rows = "\n".join(f"| {c.name}{' (chosen)' if c.name == self.chosen else ''} | {c.rows:,} | "
                         f"{'' if c.score is None else f'{c.score:.4f}'} | {c.note} |" for c in self.candidates)
        return (f"Training window: **{self.chosen}** ({self.reason})\n\n| candidate | rows | {self.metric} on "
                f"{self.check_rows:,} held-back rows | note |\n| --- | --- | --- | --- |\n{rows}\n")

    def rows(self, frame: pd.DataFrame, timestamp_column: str | None, period: pd.DateOffset | None) -> pd.DataFrame:
        """The rows of `frame` inside the chosen window, counted back from its newest row (all: no window)."""
        return last_periods(frame, timestamp_column, self.periods, period)


def last_periods(frame: pd.DataFrame, timestamp_column: str | None, periods: int | None,
                 period: pd.DateOffset | None) -> pd.DataFrame:
    """The rows of the last `periods` periods counted back from the newest row; all of them without a window
    (`periods` or `period` None) or a timestamp column."""
    if periods is None or period is None or not timestamp_column or not len(frame):
        return frame
    times = as_times(frame[timestamp_column], errors="raise")
    return frame.loc[(times > times.max() - periods * period).to_numpy()].reset_index(drop=True)


def all_history(reason: str, metric: str, period: str = "") -> WindowChoice:
    """The choice when there is nothing to choose: every training row."""
    return WindowChoice(ALL_HISTORY, None, period, metric, 0, reason=reason)


def window_period(cfg: PipelineConfig, given: str | None = None) -> tuple[pd.DateOffset, str]:
    """The period candidate windows are counted in: `given` (the backtest's window), the policy's
    `window_period`, else the monitoring cadence (`schedule_cron`)."""
    text = given or cfg.monitoring.policy.window_period or cron_period(cfg.monitoring.schedule_cron)
    return parse_period(text, "window_period"), text


def chooses_window(cfg: PipelineConfig) -> bool:
    """Whether training chooses its window: `train_on: auto` with a timestamp column."""
    return cfg.monitoring.policy.train_on == "auto" and bool(cfg.timestamp_column)


@dataclass
class Windowed:
    """The challenger fitted on its chosen window, and the choice (with the period, to refit the same way)."""

    model: Any
    choice: WindowChoice
    period: pd.DateOffset | None = None


def train_in_window(model: Any, train: pd.DataFrame, cfg: PipelineConfig, period_text: str | None = None) -> Windowed:
    """With `train_on: auto`, choose the window (`choose_window`) and fit the tuned `model`'s configuration on it;
    otherwise (or when all history wins) `model` as tuned on every training row."""
    if not chooses_window(cfg):
        why = "train_on is not auto" if cfg.timestamp_column else "no timestamp column, so no time window to choose"
        return Windowed(model, all_history(why, cfg.primary_metric))
    period, text = window_period(cfg, period_text)
    period, text = _widened(as_times(train[cfg.timestamp_column], errors="raise"), period, text)
    choice = choose_window(model, train, cfg, period, text)
    if choice.is_all:
        return Windowed(model, choice, period)
    return Windowed(fit_in_window(model, train, cfg.target, choice, cfg.timestamp_column, period), choice, period)


def _widened(times: pd.Series, period: pd.DateOffset, text: str) -> tuple[pd.DateOffset, str]:
    """The period doubled until its newest stretch holds `MIN_CHECK_ROWS` rows (an hourly cadence on sparse
    rows, say), while four of it still fit in the history."""
    newest, oldest = times.max(), times.min()
    mult = 1
    while (int((times > newest - mult * period).sum()) < MIN_CHECK_ROWS
           and newest - 4 * (2 * mult) * period > oldest):
        mult *= 2
    if mult == 1:
        return period, text
    m = PERIOD.match(text)
    wider = f"{int(m.group(1)) * mult}{m.group(2)}" if m else text
    return pd.DateOffset(**{k: v * mult for k, v in period.kwds.items()}), wider


class _Comparison:
    """The rows before the newest period (candidates fit on them) and in it (they are scored on it)."""

    def __init__(self, model: Any, train: pd.DataFrame, times: pd.Series, cfg: PipelineConfig,
                 period: pd.DateOffset, period_text: str) -> None:
        self.model, self.cfg, self.period, self.period_text = model, cfg, period, period_text
        self.check_start, self.oldest = times.max() - period, times.min()
        newest = (times > self.check_start).to_numpy()
        self.check, self.before = train.loc[newest], train.loc[~newest]
        self.before_times = times.loc[~newest]
        self.X_check, self.y_check = self.check.drop(columns=[cfg.target]), self.check[cfg.target].to_numpy()
        self.sign = -1.0 if METRIC_DIRECTION[cfg.primary_metric] else 1.0  # lower is better after the sign
        self.preds: dict[str, Predictions] = {}
        self.fits = 0

    def shorter_than_history(self, k: int) -> bool:
        return self.check_start - k * self.period > self.oldest

    def _in_last(self, k: int) -> Any:
        """Which rows before the newest period fall in the last `k` periods."""
        return (self.before_times > self.check_start - k * self.period).to_numpy()

    def candidate(self, k: int | None) -> WindowCandidate:
        """All history (`k` None) or the last `k` periods before the newest, noted when too small to fit."""
        if k is None:
            return WindowCandidate(ALL_HISTORY, None, len(self.before))
        rows = int(self._in_last(k).sum())
        note = "" if rows >= MIN_WINDOW_ROWS else f"too small to fit: {rows} rows < {MIN_WINDOW_ROWS}"
        return WindowCandidate(f"last {k} x {self.period_text}", k, rows, note=note)

    def score(self, candidates: list[WindowCandidate]) -> list[WindowCandidate]:
        """Fit each candidate big enough on its rows and score it on the newest period: side by side in the
        search's worker processes when they are up (one thread each), else one after another here."""
        todo = [c for c in candidates if not c.note]
        pool = warm_executor(thread_plan(self.cfg.search.n_jobs)) if len(todo) > 1 else None
        target, task, positive = self.cfg.target, self.cfg.task, self.cfg.positive_class
        pending = []
        for c in todo:
            part = self.before if c.periods is None else self.before.loc[self._in_last(c.periods)]
            args = (self.model, part.drop(columns=[target]), part[target], self.X_check, task, positive)
            pending.append((c, args, None if pool is None else pool.submit(_fit_and_predict, *args)))
        self.fits += len(pending)
        for c, args, future in pending:
            try:
                self.preds[c.name] = _answer(future, args)
                c.score = metric_value(self.cfg.primary_metric, self.y_check, self.preds[c.name])
            except ValueError as exc:  # one class only in a short window, say: that window cannot be judged
                c.note = f"could not be fitted or scored: {str(exc).splitlines()[0][:120]}"
        return candidates


def _fit_and_predict(model: Any, X: pd.DataFrame, y: pd.Series, X_check: pd.DataFrame, task: str,
                     positive_class: Any) -> Predictions:
    """A fresh copy of `model`'s configuration fitted on one candidate's rows, predicting the held-back ones."""
    from sklearn.base import clone

    return predict(clone(model).fit(X, y), X_check, task, positive_class)


def _answer(future: Future[Predictions] | None, args: tuple[Any, ...]) -> Predictions:
    """A candidate's predictions: from its worker, or fitted here when it was not sent to one or the worker died
    (killed, out of memory)."""
    if future is not None:
        try:
            return future.result()
        except BrokenProcessPool:
            pass
    return _fit_and_predict(*args)


def choose_window(model: Any, train: pd.DataFrame, cfg: PipelineConfig, period: pd.DateOffset,
                  period_text: str) -> WindowChoice:
    """Fit `model`'s configuration on each candidate window before the newest period, coarse to fine, and keep
    all history unless a shorter window is clearly better on that period."""
    started = time.perf_counter()
    ts, metric = cfg.timestamp_column, cfg.primary_metric
    if not ts or ts not in train.columns:
        return all_history("no timestamp column, so no time window to choose", metric, period_text)
    cmp = _Comparison(model, train, as_times(train[ts], errors="raise"), cfg, period, period_text)
    if len(cmp.check) < MIN_CHECK_ROWS or len(cmp.before) < MIN_WINDOW_ROWS:
        return all_history(f"too little history to compare windows ({len(cmp.before):,} rows before the newest "
                           f"{period_text} and {len(cmp.check):,} in it; needs {MIN_WINDOW_ROWS} and "
                           f"{MIN_CHECK_ROWS})", metric, period_text)
    if not cmp.shorter_than_history(1):
        return all_history(f"the history spans less than two {period_text} periods before the newest one",
                           metric, period_text)
    coarse = [1]
    while len(coarse) < MAX_COARSE_WINDOWS and cmp.shorter_than_history(coarse[-1] * COARSE_RATIO):
        coarse.append(coarse[-1] * COARSE_RATIO)
    candidates = cmp.score([cmp.candidate(None)] + [cmp.candidate(k) for k in coarse])
    near = _worth_refining(candidates, cmp)
    if near is not None:  # a short window beats all history by the margin: try the lengths beside it
        have = {c.periods for c in candidates}
        candidates += cmp.score([cmp.candidate(k) for k in (near.periods // 2, near.periods * 2)
                                 if k >= 1 and k not in have and cmp.shorter_than_history(k)])
        candidates = candidates[:1] + sorted(candidates[1:], key=lambda c: c.periods)
    best, reason = _decide(candidates, cmp)
    return WindowChoice(best.name, best.periods, period_text, metric, len(cmp.check), candidates, cmp.fits,
                        time.perf_counter() - started, reason)


def _scored(candidates: list[WindowCandidate]) -> list[WindowCandidate]:
    return [c for c in candidates if c.score is not None and math.isfinite(c.score)]


def _worth_refining(candidates: list[WindowCandidate], cmp: _Comparison) -> WindowCandidate | None:
    """The best coarse short window when it beats all history by more than the margin a choice needs (or all
    history has no score): only then may a length beside it be chosen. A short window within the margin of all
    history is not chosen, and its neighbours, scoring close to it, would not be either."""
    base, short, sign = candidates[0], _scored(candidates[1:]), cmp.sign
    if not short:
        return None
    best = min(short, key=lambda c: sign * c.score)
    if (base.score is None or not math.isfinite(base.score)
            or sign * (base.score - best.score) > _margin(cmp.cfg.primary_metric, base.score)):
        return best
    return None


def _decide(candidates: list[WindowCandidate], cmp: _Comparison) -> tuple[WindowCandidate, str]:
    """All history, unless a shorter window beats it by a paired bootstrap's 90% lower bound above the margin."""
    metric, text, sign = cmp.cfg.primary_metric, cmp.period_text, cmp.sign
    scored, base = _scored(candidates), candidates[0]
    if not scored:
        return base, "no candidate could be scored"
    if base not in scored:
        return min(scored, key=lambda c: (sign * c.score, -c.rows)), f"best of the windows that could be scored on " \
                                                                       f"the newest {text}"
    margin = _margin(metric, base.score)
    for c in sorted(scored, key=lambda c: (sign * c.score, -c.rows)):
        if c is base or sign * c.score >= sign * base.score:
            break
        b = paired_bootstrap(metric, cmp.y_check, cmp.preds[c.name], cmp.preds[base.name], 200, 0.9,
                             cmp.cfg.search.seed)
        c.note = f"vs all history {b.delta:+.4g}, 90% lower bound {b.ci_low:+.4g} (needs > {margin:.4g})"
        if b.ci_low > margin:
            return c, (f"beats all history by {b.delta:.4g} {metric} on the newest {text} (90% lower bound "
                       f"{b.ci_low:+.4g})")
    return base, (f"no shorter window is clearly better on the newest rows (its 90% lower bound must exceed "
                  f"{margin:.4g} {metric}, {SHORT_WINDOW_MARGIN:.0%} of all history's error)")


def _margin(metric: str, all_history_score: float) -> float:
    """The gain a shorter window must show over all history: a share of all history's error (its distance from
    a perfect score for the bounded metrics, where higher is better)."""
    error = (1.0 - all_history_score) if METRIC_DIRECTION[metric] else abs(all_history_score)
    return SHORT_WINDOW_MARGIN * error


def refit_in_window(windowed: Windowed, train: pd.DataFrame, test: pd.DataFrame, cfg: PipelineConfig) -> Any:
    """The gated configuration fitted again on train + holdout, inside the same window length."""
    rows = pd.concat([train, test], ignore_index=True)
    return fit_in_window(windowed.model, rows, cfg.target, windowed.choice, cfg.timestamp_column, windowed.period)


def fit_in_window(model: Any, frame: pd.DataFrame, target: str, choice: WindowChoice, timestamp_column: str | None,
                  period: pd.DateOffset | None) -> Any:
    """A fresh copy of `model`'s configuration fitted on the chosen window of `frame` (all of it: as given)."""
    from sklearn.base import clone

    part = choice.rows(frame, timestamp_column, period)
    return clone(model).fit(part.drop(columns=[target]), part[target])

