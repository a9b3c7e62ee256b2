"""Binance public-data CSV files as a replay source (plain or zipped, header or not)."""

from __future__ import annotations

import zipfile

import pytest
import trio

from engine.feeds import CaptureStats, expand_paths, merge_captures, scan_symbols
from engine.feeds._capture import AggTrade, BookTicker, Kline, Trade
from engine.testing import replay, replay_config

AGG_HEADER = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"
BOOK_HEADER = (
    "update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,transaction_time,event_time"
)
AGG = [
    "26129,61800.30,0.006,51200,51200,1723161256322,false",
    "26130,61800.20,0.010,51201,51202,1723161256410,true",
]
BOOK = [
    "5123107839020,61800.20,2.507,61800.30,2.510,1723161256313,1723161256313",
    "5123107839100,61800.10,1.000,61800.30,2.000,1723161256400,1723161256401",
]
KLINE = ["1723161240000,61790,61810,61780,61800.5,12.5,1723161299999,772500,800,6,370000,0"]
TRADES = ["5266583935,61800.30,0.006,370.8018,1723161256322,false"]


def write(path, lines, *, header=None, zipped=False):
    text = "\n".join(([header] if header else []) + lines) + "\n"
    if zipped:
        with zipfile.ZipFile(path, "w") as z:
            z.writestr(path.stem + ".csv", text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("zipped", [False, True])
@pytest.mark.parametrize("header", [True, False])
def test_each_kind_decodes(tmp_path, zipped, header):
    ext = ".zip" if zipped else ".csv"
    agg_header = AGG_HEADER if header else None
    book_header = BOOK_HEADER if header else None
    files = [
        write(
            tmp_path / f"BTCUSDT-aggTrades-2024-08-08{ext}", AGG, header=agg_header, zipped=zipped
        ),
        write(
            tmp_path / f"BTCUSDT-bookTicker-2024-08-08{ext}",
            BOOK,
            header=book_header,
            zipped=zipped,
        ),
        write(tmp_path / f"BTCUSDT-1m-2024-08-08{ext}", KLINE, zipped=zipped),
        write(tmp_path / f"ETHUSDT-trades-2024-08-08{ext}", TRADES, zipped=zipped),
    ]
    stats = CaptureStats()
    events = list(merge_captures(expand_paths(files), stats))
    kinds = [type(m) for _ts, m in events]
    assert sorted(k.__name__ for k in kinds) == sorted(
        ["AggTrade", "AggTrade", "BookTicker", "BookTicker", "Kline", "Trade"]
    )
    assert [ts for ts, _m in events] == sorted(ts for ts, _m in events)  # merged by time
    agg = [m for _ts, m in events if isinstance(m, AggTrade)]
    assert (agg[0].trade_id, agg[0].price, agg[0].buyer_maker) == (26129, 61800.3, False)
    book = next(m for _ts, m in events if isinstance(m, BookTicker))
    assert (book.bid, book.ask, book.update_id) == (61800.2, 61800.3, 5123107839020)
    kline = next(m for _ts, m in events if isinstance(m, Kline))
    assert kline.bar.close == 61800.5 and kline.bar.closed
    assert next(m for _ts, m in events if isinstance(m, Trade)).symbol == "ETHUSDT"
    assert stats.skipped.get("header", 0) == (2 if header else 0)
    assert scan_symbols(expand_paths(files)) == ["BTCUSDT", "ETHUSDT"]


def test_bad_rows_are_counted(tmp_path):
    bad = "26131,not-a-price,0.1,1,1,1723161256500,false"
    path = write(tmp_path / "BTCUSDT-aggTrades-2024-08-08.csv", [*AGG, bad, ""])
    stats = CaptureStats()
    assert len(list(merge_captures([path], stats))) == 2
    assert stats.skipped["bad_row"] == 1


def test_replay_runs_on_csv_files(tmp_path):
    files = [
        write(tmp_path / "BTCUSDT-bookTicker-2024-08-08.csv", BOOK, header=BOOK_HEADER),
        write(tmp_path / "BTCUSDT-aggTrades-2024-08-08.zip", AGG, zipped=True),
    ]
    report = trio.run(replay, replay_config(tmp_path, files))
    assert report.symbols == ["BTCUSDT"] and report.events == 4


def test_microsecond_times_are_told_by_magnitude(tmp_path):
    # Binance's spot files moved to microseconds in 2025; the unit is found per file.
    us = [
        ",".join(f"{int(c) * 1000}" if i == 5 else c for i, c in enumerate(row.split(",")))
        for row in AGG
    ]
    path = write(tmp_path / "BTCUSDT-aggTrades-2024-08-08.csv", us)
    stats = CaptureStats()
    events = list(merge_captures([path], stats))
    assert [ts for ts, _m in events] == [1723161256322 * 10**6, 1723161256410 * 10**6]
    assert [m.event_time for _ts, m in events] == [1723161256322, 1723161256410]
    assert stats.units == {str(path): "us"}


def test_bad_values_and_duplicates_in_csv_are_counted(tmp_path):
    rows = [
        *AGG,
        "26131,Infinity,0.1,1,1,1723161256500,false",
        "26132,61800.1,-0.1,1,1,1723161256501,false",
        AGG[1],  # a duplicated row
    ]
    path = write(tmp_path / "BTCUSDT-aggTrades-2024-08-08.csv", rows)
    stats = CaptureStats()
    assert len(list(merge_captures([path], stats))) == 2
    assert stats.skipped == {"bad_price": 1, "bad_qty": 1, "duplicate": 1}


def test_a_delivery_contract_file_is_refused(tmp_path):
    from engine import DataError

    path = write(tmp_path / "ETHUSDT_240927-aggTrades-2024-08-08.csv", AGG)
    with pytest.raises(DataError, match="ETHUSDT_240927 is a USD-M delivery contract"):
        scan_symbols([path])


LEAN_TRADE = ["0,0.3067,0.3068,0.3066,0.3068,274004", "60000,0.3068,0.3072,0.3067,0.3071,1031647"]
LEAN_QUOTE = [
    "0,0.3066,0.3067,0.3066,0.3067,88126,0.3067,0.3068,0.3067,0.3068,236586",
    "60000,0.3067,0.3071,0.3067,0.307,342957,0.3068,0.3072,0.3068,0.3071,125790",
]
MIDNIGHT_MS = 1670889600000  # 2022-12-13 00:00 UTC


def lean_zip(path, inner: str, rows: list[str]):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(inner, "\n".join(rows) + "\n")
    return path


def test_lean_minute_bars_replay(tmp_path):
    trade = lean_zip(
        tmp_path / "20221213_trade.zip", "20221213_adausdt_minute_trade_perp.csv", LEAN_TRADE
    )
    quote = lean_zip(
        tmp_path / "20221213_quote.zip", "20221213_adausdt_minute_quote_perp.csv", LEAN_QUOTE
    )
    assert scan_symbols([trade, quote]) == ["ADAUSDT"]
    stats = CaptureStats()
    events = list(merge_captures([quote, trade], stats))
    assert [(ts // 10**6, type(m).__name__) for ts, m in events] == [
        (MIDNIGHT_MS + 59_999, "BookTicker"),
        (MIDNIGHT_MS + 59_999, "Kline"),
        (MIDNIGHT_MS + 119_999, "BookTicker"),
        (MIDNIGHT_MS + 119_999, "Kline"),
    ]
    book = events[0][1]
    assert (book.bid, book.bid_qty, book.ask, book.ask_qty) == (0.3067, 88126, 0.3068, 236586)
    assert events[1][1].bar.close == 0.3068 and events[1][1].bar.volume == 274004
    # Without "_perp" LEAN's bars are spot: namespaced, never the USD-M symbol.
    spot = lean_zip(
        tmp_path / "20221214_trade.zip", "20221214_adausdt_minute_trade.csv", LEAN_TRADE
    )
    assert scan_symbols([spot]) == ["ADAUSDT.SPOT"]
