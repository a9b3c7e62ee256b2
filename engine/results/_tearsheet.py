"""The tear sheet: one self-contained HTML file of a run's results.

Charts are matplotlib figures written as inline SVG (text kept as text), so the
file needs no script, no network and no other file: it opens offline in any
browser. It shows the equity and drawdown curves, each symbol's price with the
trades' entries and exits marked, the distribution of trade returns, the tables
per symbol and per exit reason, the trade list, and the run's config and digests.
"""

from __future__ import annotations

import datetime as dt
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ._stats import downsample, drawdown
from ._trades import Trade

MAX_PRICE_POINTS = 3_000
MAX_TRADE_ROWS = 500  # the table; the full list is what --trades writes
_GREEN, _RED, _BLUE, _GREY = "#1a7f37", "#cf222e", "#0969da", "#57606a"

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px auto; max-width: 1100px;
       color: #1f2328; background: #fff; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; }
table { border-collapse: collapse; margin: 8px 0; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid #d0d7de; padding: 3px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f6f8fa; }
.meta td { text-align: left; } .muted { color: #57606a; }
pre { background: #f6f8fa; padding: 10px; overflow-x: auto; font-size: 12px; }
figure { margin: 8px 0; } svg { max-width: 100%; height: auto; }
"""


def _fmt(value: object, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3g}"
    return str(value)


def _pct(value: object) -> str:
    return "n/a" if not isinstance(value, float) else f"{100 * value:.1f}%"


def _utc(ts: int | None) -> str:
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts / 1e9, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _table(head: Sequence[str], rows: Sequence[Sequence[object]], cls: str = "") -> str:
    out = [f'<table class="{cls}"><tr>' + "".join(f"<th>{html.escape(h)}</th>" for h in head)]
    out.append("</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _svg(fig: object) -> str:
    buf = io.StringIO()
    # No date and a fixed hash salt: the same run gives the same file.
    fig.savefig(buf, format="svg", metadata={"Date": None})  # type: ignore[attr-defined]
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and doctype


def _times(ts: np.ndarray) -> np.ndarray:
    return ts.astype("datetime64[ns]")


def _equity_figure(ts: np.ndarray, equity: np.ndarray) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2.2, 1])
    when = _times(ts)
    top.plot(when, equity, color=_BLUE, linewidth=1.2, drawstyle="steps-post")
    top.set_ylabel("equity (USDT)")
    top.ticklabel_format(axis="y", useOffset=False, style="plain")
    top.grid(alpha=0.3)
    dd = -drawdown(equity)
    bottom.fill_between(when, dd, 0.0, color=_RED, alpha=0.35, step="post")
    bottom.set_ylabel("drawdown")
    bottom.grid(alpha=0.3)
    return _svg(fig)


def _price_figure(symbol: str, ts: np.ndarray, price: np.ndarray, trades: Sequence[Trade]) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.4), layout="constrained")
    ax = fig.subplots()
    if ts.shape[0]:
        ax.plot(_times(ts), price, color=_GREY, linewidth=0.8, label="price")
    longs = [t for t in trades if t.side == "LONG"]
    shorts = [t for t in trades if t.side == "SHORT"]
    for group, marker, color, label in (
        (longs, "^", _GREEN, "long entry"),
        (shorts, "v", _RED, "short entry"),
    ):
        if group:
            ax.scatter(
                _times(np.array([t.entry_ts for t in group], dtype=np.int64)),
                [t.entry_price for t in group],
                marker=marker,
                color=color,
                s=46,
                zorder=3,
                label=label,
            )
    closed = [t for t in trades if t.closed]
    if closed:
        ax.scatter(
            _times(np.array([t.exit_ts for t in closed], dtype=np.int64)),
            [t.exit_price for t in closed],
            marker="x",
            color="#000000",
            s=40,
            zorder=3,
            label="exit",
        )
    ax.set_title(symbol, loc="left", fontsize=11)
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)
    return _svg(fig)


def _returns_figure(trades: Sequence[Trade]) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.0), layout="constrained")
    ax = fig.subplots()
    bps = np.array([t.ret * 1e4 for t in trades if t.closed], dtype=np.float64)
    if bps.shape[0]:
        bins = min(50, max(5, bps.shape[0]))
        ax.hist(bps[bps > 0], bins=bins, range=(bps.min(), bps.max()), color=_GREEN, alpha=0.8)
        ax.hist(bps[bps <= 0], bins=bins, range=(bps.min(), bps.max()), color=_RED, alpha=0.8)
        ax.axvline(0.0, color="#000000", linewidth=0.8)
    ax.set_xlabel("trade return after fees and funding (bps of entry notional)")
    ax.set_ylabel("trades")
    ax.grid(alpha=0.3)
    return _svg(fig)


def _group_rows(rows: Sequence[Mapping[str, object]], key: str) -> list[list[str]]:
    return [
        [
            str(r[key]),
            str(r["trades"]),
            _pct(r["win_rate"]),
            _fmt(r["avg_win"]),
            _fmt(r["avg_loss"]),
            _fmt(r["profit_factor"], 2),
            _fmt(r["expectancy"]),
            _fmt(r["fees"]),
            _fmt(r["funding"]),
            _fmt(r["net_pnl"]),
            _fmt(r["avg_hold_s"], 1),
        ]
        for r in rows
    ]


_GROUP_HEAD = (
    "trades",
    "win rate",
    "avg win",
    "avg loss",
    "profit factor",
    "expectancy",
    "fees",
    "funding",
    "net PnL",
    "avg hold (s)",
)


def tearsheet_html(
    *,
    title: str,
    run: Mapping[str, object],
    stats: Mapping[str, object],
    trades: Sequence[Trade],
    curve: tuple[np.ndarray, np.ndarray],
    curve_source: str,
    prices: Mapping[str, tuple[np.ndarray, np.ndarray]],
    price_source: str,
    config_text: str,
) -> str:
    """The tear sheet's HTML (see the module).

    Args:
        title: the page's heading.
        run: what identifies the run (mode, data, symbols, journal and config digests),
            shown as a two-column table in this order.
        stats: :func:`engine.results.trade_stats` of the run.
        trades: every round trip.
        curve: sample times (ns) and equity (USDT, the start capital included).
        curve_source: where the curve comes from (shown under it).
        prices: per symbol, times (ns) and prices to draw the trades on.
        price_source: where the prices come from (shown under them).
        config_text: the run's effective config, shown as is.
    """
    import matplotlib

    ts, equity = curve
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        _table(("run", ""), [(k, v) for k, v in run.items()], cls="meta"),
        "<h2>Summary</h2>",
        _table(
            ("statistic", "value"),
            [
                ("start equity", _fmt(stats["start_equity"], 2)),
                ("end equity", _fmt(stats["end_equity"], 2)),
                ("net PnL (closed trades)", _fmt(stats["net_pnl"])),
                ("fees", _fmt(stats["fees"])),
                ("funding", _fmt(stats["funding"])),
                ("max drawdown", _fmt(stats["max_drawdown"])),
                ("trades (open at end)", f"{stats['trades']} ({stats['open_at_end']})"),
                ("win rate", _pct(stats["win_rate"])),
                ("average win / loss", f"{_fmt(stats['avg_win'])} / {_fmt(stats['avg_loss'])}"),
                ("profit factor", _fmt(stats["profit_factor"], 2)),
                ("expectancy per trade", _fmt(stats["expectancy"])),
                (
                    "average / max hold (s)",
                    f"{_fmt(stats['avg_hold_s'], 1)} / {_fmt(stats['max_hold_s'], 1)}",
                ),
                ("Sharpe (annualised, daily)", stats["ratio_note"] or _fmt(stats["sharpe"], 2)),
                ("Sortino (annualised, daily)", stats["ratio_note"] or _fmt(stats["sortino"], 2)),
            ],
        ),
    ]
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "trireme"}):
        parts += ["<h2>Equity and drawdown</h2>"]
        if ts.shape[0]:
            parts.append(f"<figure>{_equity_figure(ts, equity)}</figure>")
        else:
            parts.append("<p>No equity samples.</p>")
        parts.append(f'<p class="muted">{html.escape(curve_source)}</p>')
        parts.append("<h2>Trades on price</h2>")
        for symbol in sorted({*prices, *(t.symbol for t in trades)}):
            p_ts, p = prices.get(symbol, (np.zeros(0, np.int64), np.zeros(0)))
            p_ts, p = downsample(p_ts, p, MAX_PRICE_POINTS)
            mine = [t for t in trades if t.symbol == symbol]
            parts.append(f"<figure>{_price_figure(symbol, p_ts, p, mine)}</figure>")
        parts.append(f'<p class="muted">{html.escape(price_source)}</p>')
        parts.append("<h2>Distribution of trade returns</h2>")
        parts.append(f"<figure>{_returns_figure(trades)}</figure>")
    per_symbol = stats["per_symbol"]
    per_reason = stats["per_exit_reason"]
    assert isinstance(per_symbol, list) and isinstance(per_reason, list)
    parts += [
        "<h2>Per symbol</h2>",
        _table(("symbol", *_GROUP_HEAD), _group_rows(per_symbol, "symbol")),
        "<h2>Per exit reason</h2>",
        _table(("exit reason", *_GROUP_HEAD), _group_rows(per_reason, "exit_reason")),
        "<h2>Long / short</h2>",
        _table(
            ("side", *_GROUP_HEAD),
            _group_rows(
                [{"side": s, **stats[s.lower()]} for s in ("LONG", "SHORT")],  # type: ignore[dict-item]
                "side",
            ),
        ),
        f"<h2>Trades{f' (first {MAX_TRADE_ROWS})' if len(trades) > MAX_TRADE_ROWS else ''}</h2>",
        _table(
            (
                "symbol",
                "side",
                "entry (UTC)",
                "entry price",
                "exit (UTC)",
                "exit price",
                "qty",
                "hold (s)",
                "exit reason",
                "fees",
                "funding",
                "net PnL",
                "return (bps)",
            ),
            [
                (
                    t.symbol,
                    t.side,
                    _utc(t.entry_ts),
                    _fmt(t.entry_price),
                    _utc(t.exit_ts),
                    _fmt(t.exit_price),
                    _fmt(t.qty, 6),
                    _fmt(t.hold_s, 3),
                    t.exit_reason,
                    _fmt(t.fees),
                    _fmt(t.funding),
                    _fmt(t.net_pnl),
                    _fmt(t.ret * 1e4, 2),
                )
                for t in trades[:MAX_TRADE_ROWS]
            ],
        ),
        "<h2>Config</h2>",
        f"<pre>{html.escape(config_text)}</pre>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_tearsheet(text: str, path: Path) -> None:
    """Write the tear sheet atomically.

    Raises:
        OSError: the file cannot be written (no temporary file is left).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def tape_prices(ticks: Mapping[str, object]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per symbol, the mid of each quote, or the trade or kline price where there is none.

    Args:
        ticks: a tape's :class:`~engine.messages.Ticks` per symbol.
    """
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for symbol, t in ticks.items():
        mid = (t.bid + t.ask) / 2.0  # type: ignore[attr-defined]
        price = np.where(np.isfinite(mid), mid, t.price)  # type: ignore[attr-defined]
        ok = np.isfinite(price) & (price > 0)
        out[symbol] = (np.asarray(t.ts)[ok].astype(np.int64), price[ok])  # type: ignore[attr-defined]
    return out
