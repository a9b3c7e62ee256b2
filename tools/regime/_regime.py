"""Fit the Gaussian HMM regime model walk-forward and compare it with the threshold regimes.

Walk-forward on one calendar (:func:`~tools.regime._data.split_times`): the HMM is fitted
with hmmlearn on the warm bars of the first ``train_days`` of every symbol but the held-out
one, its states reordered calm to turbulent, and saved as :class:`~engine.models._hmm.HmmParams`
JSON. The comparison runs on the next ``test_days``: the engine's filter
(:func:`~engine.models._hmm.forward_filter`, causal: each bar's regime is the most probable
state given the bars up to it) against :meth:`RegimeDetector.vol
<engine.models.RegimeDetector.vol>` on the same bars' realized volatility and its slow level.

Per regime label: its share of bars, the next hour's realized volatility (relative to the slow
level at the bar, and in bps) and return; then the separation numbers: the ratio of the mean
next-hour relative volatility of the top over the bottom regime, the share of the variance of
log next-hour relative volatility the labels explain (eta squared), and label switches per
day; and the same for the HMM cut into classes as large as the thresholds' (its expected
state index ranked, ``hmm_at_threshold_shares``), a like-for-like top/bottom ratio. The HMM's
held-out log-likelihood per bar is set against a one-state Gaussian fitted on
the same training bars.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from engine.models import RegimeDetector
from engine.models._hmm import FEATURE_NAMES, BarFeatureSpec, HmmParams, forward_filter
from engine.models._regime import HIGH, LOW, NORMAL

from ._data import HORIZON, SymbolBars, iso, split_times

_LABELS = {2: ("calm", "turbulent"), 3: ("calm", "normal", "turbulent")}
_THRESHOLD_NAMES = {LOW: "vol=low", NORMAL: "vol=normal", HIGH: "vol=high"}
_BARS_PER_DAY = 1440


def state_labels(k: int) -> tuple[str, ...]:
    """Names of ``k`` states ordered by volatility."""
    return _LABELS.get(k, tuple(f"s{i}" for i in range(k)))


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous ``[a, b)`` runs of True."""
    m = np.concatenate(([False], mask, [False])).astype(np.int8)
    d = np.diff(m)
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1), strict=True))


def _train_rows(bars: list[SymbolBars], split: int) -> tuple[np.ndarray, list[int]]:
    """Warm feature rows before ``split``, and the lengths of their contiguous runs."""
    chunks, lengths = [], []
    for b in bars:
        ok = (b.ts < split) & np.all(np.isfinite(b.X), axis=1)
        for a, e in _runs(ok):
            chunks.append(b.X[a:e])
            lengths.append(int(e - a))
    if not chunks:
        raise ValueError("no warm training bars")
    return np.concatenate(chunks), lengths


def fit_hmm(
    bars: list[SymbolBars],
    *,
    states: int,
    spec: BarFeatureSpec,
    train_days: float,
    test_days: float,
    holdout: list[str],
    seed: int,
    n_iter: int = 100,
) -> HmmParams:
    """Fit with hmmlearn on the training window, states ordered by ``log_rvol_ratio`` mean."""
    from hmmlearn.hmm import GaussianHMM

    start, split, end = split_times(bars, train_days, test_days)
    train_bars = [b for b in bars if b.symbol not in holdout]
    X, lengths = _train_rows(train_bars, split)
    shift = X.mean(axis=0)
    scale = X.std(axis=0)
    Z = (X - shift) / scale
    model = GaussianHMM(
        n_components=states,
        covariance_type="full",
        n_iter=n_iter,
        tol=1e-4,
        random_state=seed,
        min_covar=1e-4,
    )
    model.fit(Z, lengths)
    order = np.argsort(model.means_[:, FEATURE_NAMES.index("log_rvol_ratio")], kind="stable")
    return HmmParams(
        labels=state_labels(states),
        startprob=model.startprob_[order],
        transmat=model.transmat_[np.ix_(order, order)],
        means=model.means_[order],
        covars=model.covars_[order],
        shift=shift,
        scale=scale,
        features=spec,
        meta={
            "fitted_with": "hmmlearn GaussianHMM(covariance_type='full')",
            "seed": seed,
            "n_iter": int(model.monitor_.iter),
            "converged": bool(model.monitor_.converged),
            "training_data": {
                "source": "freqtrade_1m_usdm (Binance USD-M 1-minute klines)",
                "symbols": [b.symbol for b in train_bars],
                "held_out_symbols": sorted(holdout),
                "train": [iso(start), iso(split)],
                "test": [iso(split), iso(end)],
                "train_days": train_days,
                "test_days": test_days,
                "bars": int(Z.shape[0]),
                "sequences": len(lengths),
            },
            "train_loglik_per_bar_standardized": float(model.score(Z, lengths) / Z.shape[0]),
        },
    )


def one_state(
    params: HmmParams, bars: list[SymbolBars], split: int, holdout: list[str]
) -> HmmParams:
    """A one-state Gaussian on the same training bars (the reference likelihood)."""
    X, _ = _train_rows([b for b in bars if b.symbol not in holdout], split)
    Z = (X - params.shift) / params.scale
    return HmmParams(
        labels=("all",),
        startprob=np.ones(1),
        transmat=np.ones((1, 1)),
        means=Z.mean(axis=0, keepdims=True),
        covars=np.cov(Z, rowvar=False, bias=True)[None],
        shift=params.shift,
        scale=params.scale,
        features=params.features,
    )


def _switches_per_day(labels: np.ndarray, owner: np.ndarray) -> float:
    """Label changes between consecutive bars of one symbol, per day of bars."""
    same = owner[1:] == owner[:-1]
    n_switch = int(np.count_nonzero((labels[1:] != labels[:-1]) & same))
    return n_switch / len(labels) * _BARS_PER_DAY if len(labels) else float("nan")


def _table(
    labels: np.ndarray,
    names: dict[int, str],
    rel: np.ndarray,
    rv_bps: np.ndarray,
    ret_bps: np.ndarray,
    owner: np.ndarray,
) -> dict[str, Any]:
    rows = {}
    log_rel = np.log(rel)
    groups = []
    for code, name in names.items():
        m = labels == code
        n = int(m.sum())
        if n == 0:
            rows[name] = {"bars": 0}
            continue
        groups.append(m)
        rows[name] = {
            "bars": n,
            "share": n / len(labels),
            "next_hour_rel_vol_mean": float(rel[m].mean()),
            "next_hour_rel_vol_median": float(np.median(rel[m])),
            "next_hour_vol_bps_median": float(np.median(rv_bps[m])),
            "next_hour_ret_bps_mean": float(ret_bps[m].mean()),
            "next_hour_ret_bps_std": float(ret_bps[m].std()),
        }
    present = [names[c] for c in names if rows[names[c]]["bars"]]
    top, bottom = present[-1], present[0]
    total = float(((log_rel - log_rel.mean()) ** 2).sum())
    between = float(sum(m.sum() * (log_rel[m].mean() - log_rel.mean()) ** 2 for m in groups))
    return {
        "regimes": rows,
        "top_over_bottom_next_hour_rel_vol": rows[top]["next_hour_rel_vol_mean"]
        / rows[bottom]["next_hour_rel_vol_mean"],
        "eta_squared_log_next_hour_rel_vol": between / total if total > 0 else float("nan"),
        "switches_per_day": _switches_per_day(labels, owner),
    }


def compare(
    params: HmmParams,
    bars: list[SymbolBars],
    *,
    detector: RegimeDetector | None = None,
) -> dict[str, Any]:
    """HMM vs threshold regimes on the held-out days, seen symbols and held-out symbols apart."""
    detector = RegimeDetector() if detector is None else detector
    td = params.meta["training_data"]
    _, split, end = split_times(bars, td["train_days"], td["test_days"])
    holdout = list(td["held_out_symbols"])
    reference = one_state(params, bars, split, holdout)
    groups = {
        "seen_symbols": [b for b in bars if b.symbol not in holdout],
        "held_out_symbols": [b for b in bars if b.symbol in holdout],
    }
    out: dict[str, Any] = {
        "horizon_bars": HORIZON,
        "test": [iso(split), iso(end)],
        "holdout": holdout,
    }
    for group, members in groups.items():
        if not members:
            continue
        hmm_lab, hmm_score, thr_lab, rel, rv_bps, ret_bps, owners = [], [], [], [], [], [], []
        ll_hmm, ll_one = [], []
        for n, b in enumerate(members):
            probs, ll = forward_filter(params, b.X)
            _, ll1 = forward_filter(reference, b.X)
            ok = (
                (b.ts >= split)
                & (b.ts < end)
                & np.all(np.isfinite(b.X), axis=1)
                & np.isfinite(b.next_rvol)
                & (b.level > 0)
            )
            # The next hour must end inside the test window.
            ok &= b.ts + HORIZON * 60 * 10**9 <= end
            idx = np.flatnonzero(ok)
            hmm_lab.append(np.argmax(probs[idx], axis=1))
            hmm_score.append(probs[idx] @ np.arange(params.n_states, dtype=np.float64))
            thr_lab.append(
                np.array([detector.vol(b.rvol[i], b.level[i]) for i in idx], dtype=np.int64)
            )
            rel.append(b.next_rvol[idx] / b.level[idx])
            rv_bps.append(b.next_rvol[idx] * 1e4)
            ret_bps.append(b.next_ret[idx] * 1e4)
            ll_hmm.append(ll[idx])
            ll_one.append(ll1[idx])
            owners.append(np.full(len(idx), n))
        H = np.concatenate(hmm_lab)
        T = np.concatenate(thr_lab)
        R = np.concatenate(rel)
        V = np.concatenate(rv_bps)
        G = np.concatenate(ret_bps)
        S = np.concatenate(owners)
        # Bars with zero next-hour volatility (no trade at all) have no log: left out.
        keep = R > 0
        res: dict[str, Any] = {
            "symbols": [b.symbol for b in members],
            "bars": int(keep.sum()),
        }
        states = dict(enumerate(params.labels))
        res["hmm"] = _table(H[keep], states, R[keep], V[keep], G[keep], S[keep])
        res["threshold"] = _table(T[keep], _THRESHOLD_NAMES, R[keep], V[keep], G[keep], S[keep])
        # The HMM cut at the thresholds' shares: its expected state index, ranked, split into
        # classes as large as the thresholds' (a like-for-like top/bottom ratio).
        score = np.concatenate(hmm_score)[keep]
        t_kept = T[keep]
        low_share = float(np.mean(t_kept == LOW))
        high_share = float(np.mean(t_kept == HIGH))
        lo, hi = np.quantile(score, [low_share, 1.0 - high_share])
        matched = np.where(score <= lo, LOW, np.where(score > hi, HIGH, NORMAL))
        names = {LOW: "calm", NORMAL: "normal", HIGH: "turbulent"}
        res["hmm_at_threshold_shares"] = _table(matched, names, R[keep], V[keep], G[keep], S[keep])
        lh = float(np.concatenate(ll_hmm).mean())
        l1 = float(np.concatenate(ll_one).mean())
        res["loglik_per_bar"] = {"hmm": lh, "one_state": l1, "gain": lh - l1}
        out[group] = res
    return out


def markdown(result: dict[str, Any]) -> str:
    """The README table of a :func:`compare` result."""
    lines = [
        "| symbols | model | regime | share | next-hour vol / level (mean) | next-hour vol, bps "
        "(median) | next-hour return, bps (mean ± std) |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    summary = [
        "| symbols | model | top/bottom next-hour vol | eta² (log next-hour vol) | "
        "switches/day | log-lik/bar (vs 1 state) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for group in ("seen_symbols", "held_out_symbols"):
        if group not in result:
            continue
        g = result[group]
        for model in ("threshold", "hmm", "hmm_at_threshold_shares"):
            t = g[model]
            for name, row in t["regimes"].items():
                if not row["bars"]:
                    continue
                lines.append(
                    f"| {group} | {model} | {name} | {row['share']:.2f} | "
                    f"{row['next_hour_rel_vol_mean']:.2f} | "
                    f"{row['next_hour_vol_bps_median']:.1f} | "
                    f"{row['next_hour_ret_bps_mean']:+.1f} ± {row['next_hour_ret_bps_std']:.1f} |"
                )
            ll = g["loglik_per_bar"]
            ll_text = f"{ll['hmm']:.3f} ({ll['gain']:+.3f})" if model == "hmm" else "—"
            summary.append(
                f"| {group} | {model} | {t['top_over_bottom_next_hour_rel_vol']:.2f} | "
                f"{t['eta_squared_log_next_hour_rel_vol']:.3f} | {t['switches_per_day']:.1f} | "
                f"{ll_text} |"
            )
    return "\n".join(lines) + "\n\n" + "\n".join(summary) + "\n"


def save(params: HmmParams, path: Path) -> None:
    """Write the parameter file (compact floats kept exact: repr round-trips)."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(params.to_json(), indent=1) + "\n")
