"""Indicator kernels: TA-Lib-compatible batch functions and O(1) incremental updates.

Every indicator ``x`` comes in three parts:

* ``x(...)``: a batch function over numpy arrays. For the TA-Lib indicators it has
  TA-Lib's lowercase name, parameters, defaults, output order and NaN warm-up.
* ``x_state(...)``: allocates the indicator's state, one float64 array.
* ``x_update(state, ...)``: ``@njit``, consumes one tick or bar without allocating,
  returns the new value (or writes multiple outputs into an ``out`` array). After each
  tick it equals the batch function at that row. O(1) per tick, except CCI
  (O(timeperiod): its mean absolute deviation has no exact recurrence), the market
  profile (O(price bins spanned by the window)), VPIN (O(buckets a trade fills)),
  HT_TRENDLINE (averages up to 50 stored prices) and the book indicators (O(levels)).

:data:`REGISTRY` lists every indicator by name with its kernel, parameters (types and
defaults), inputs and outputs; :func:`spec_from_config` builds a checked
:class:`IndicatorSpec` from a config table, which is how strategies reach them
(:func:`specs_from_config`: a strategy's ``[[strategy.indicators]]``; :func:`bind_to_set`
compiles a strategy's kernel onto its set's own kernels).
:class:`IndicatorSet` fuses a symbol's indicators into one state array updated by one
compiled call per tick or per batch of ticks (:func:`update_batch`).

NaN inputs: a tick whose inputs hold a NaN is skipped (NaN out, state untouched), so
``f(x)[ok]`` equals ``f(x[ok])`` on the NaN-free rows ``ok``.

Nothing else in the engine computes indicators: strategies and model feature rows read
them from here (usually from :attr:`IndicatorSet.values`).
"""

from pathlib import Path as _Path

from ._bind import bind_to_set as bind_to_set
from ._common import drop_stale_kernel_cache as _drop_stale_kernel_cache
from ._flow import cvd as cvd
from ._flow import cvd_state as cvd_state
from ._flow import cvd_update as cvd_update
from ._flow import kyle_lambda as kyle_lambda
from ._flow import kyle_lambda_state as kyle_lambda_state
from ._flow import kyle_lambda_update as kyle_lambda_update
from ._levels import ichimoku as ichimoku
from ._levels import ichimoku_cloud as ichimoku_cloud
from ._levels import ichimoku_cloud_state as ichimoku_cloud_state
from ._levels import ichimoku_cloud_update as ichimoku_cloud_update
from ._levels import ichimoku_state as ichimoku_state
from ._levels import ichimoku_update as ichimoku_update
from ._levels import market_profile as market_profile
from ._levels import market_profile_state as market_profile_state
from ._levels import market_profile_update as market_profile_update
from ._liquidity import book_depth as book_depth
from ._liquidity import book_depth_state as book_depth_state
from ._liquidity import book_depth_update as book_depth_update
from ._liquidity import spoofing as spoofing
from ._liquidity import spoofing_state as spoofing_state
from ._liquidity import spoofing_update as spoofing_update
from ._micro import book_imbalance as book_imbalance
from ._micro import book_imbalance_n as book_imbalance_n
from ._micro import book_imbalance_n_state as book_imbalance_n_state
from ._micro import book_imbalance_n_update as book_imbalance_n_update
from ._micro import book_imbalance_state as book_imbalance_state
from ._micro import book_imbalance_update as book_imbalance_update
from ._micro import realized_vol as realized_vol
from ._micro import realized_vol_state as realized_vol_state
from ._micro import realized_vol_update as realized_vol_update
from ._micro import rolling_vwap as rolling_vwap
from ._micro import rolling_vwap_state as rolling_vwap_state
from ._micro import rolling_vwap_update as rolling_vwap_update
from ._micro import spread_bps as spread_bps
from ._micro import spread_bps_state as spread_bps_state
from ._micro import spread_bps_update as spread_bps_update
from ._micro import tick_momentum as tick_momentum
from ._micro import tick_momentum_state as tick_momentum_state
from ._micro import tick_momentum_update as tick_momentum_update
from ._micro import trade_ofi as trade_ofi
from ._micro import trade_ofi_state as trade_ofi_state
from ._micro import trade_ofi_update as trade_ofi_update
from ._micro import twap as twap
from ._micro import twap_state as twap_state
from ._micro import twap_update as twap_update
from ._micro import velocity as velocity
from ._micro import velocity_state as velocity_state
from ._micro import velocity_update as velocity_update
from ._micro import vpin as vpin
from ._micro import vpin_state as vpin_state
from ._micro import vpin_update as vpin_update
from ._micro import vwap as vwap
from ._micro import vwap_state as vwap_state
from ._micro import vwap_update as vwap_update
from ._momentum import RSI_STATE_SIZE as RSI_STATE_SIZE
from ._momentum import aroon as aroon
from ._momentum import aroon_state as aroon_state
from ._momentum import aroon_update as aroon_update
from ._momentum import cci as cci
from ._momentum import cci_state as cci_state
from ._momentum import cci_update as cci_update
from ._momentum import macd as macd
from ._momentum import macd_state as macd_state
from ._momentum import macd_update as macd_update
from ._momentum import mfi as mfi
from ._momentum import mfi_state as mfi_state
from ._momentum import mfi_update as mfi_update
from ._momentum import mom as mom
from ._momentum import mom_state as mom_state
from ._momentum import mom_update as mom_update
from ._momentum import roc as roc
from ._momentum import roc_state as roc_state
from ._momentum import roc_update as roc_update
from ._momentum import rsi as rsi
from ._momentum import rsi_state as rsi_state
from ._momentum import rsi_update as rsi_update
from ._momentum import stoch as stoch
from ._momentum import stoch_state as stoch_state
from ._momentum import stoch_update as stoch_update
from ._momentum import stochrsi as stochrsi
from ._momentum import stochrsi_state as stochrsi_state
from ._momentum import stochrsi_update as stochrsi_update
from ._momentum import trix as trix
from ._momentum import trix_state as trix_state
from ._momentum import trix_update as trix_update
from ._momentum import willr as willr
from ._momentum import willr_state as willr_state
from ._momentum import willr_update as willr_update
from ._oscillators import apo as apo
from ._oscillators import apo_state as apo_state
from ._oscillators import apo_update as apo_update
from ._oscillators import aroonosc as aroonosc
from ._oscillators import aroonosc_state as aroonosc_state
from ._oscillators import aroonosc_update as aroonosc_update
from ._oscillators import bop as bop
from ._oscillators import bop_state as bop_state
from ._oscillators import bop_update as bop_update
from ._oscillators import cmo as cmo
from ._oscillators import cmo_state as cmo_state
from ._oscillators import cmo_update as cmo_update
from ._oscillators import ppo as ppo
from ._oscillators import ppo_state as ppo_state
from ._oscillators import ppo_update as ppo_update
from ._oscillators import ultosc as ultosc
from ._oscillators import ultosc_state as ultosc_state
from ._oscillators import ultosc_update as ultosc_update
from ._overlap import EMA_STATE_SIZE as EMA_STATE_SIZE
from ._overlap import bbands as bbands
from ._overlap import bbands_state as bbands_state
from ._overlap import bbands_update as bbands_update
from ._overlap import ema as ema
from ._overlap import ema_state as ema_state
from ._overlap import ema_update as ema_update
from ._overlap import sma as sma
from ._overlap import sma_state as sma_state
from ._overlap import sma_update as sma_update
from ._overlap import wma as wma
from ._overlap import wma_state as wma_state
from ._overlap import wma_update as wma_update
from ._set import EVENT_DEPTH as EVENT_DEPTH
from ._set import EVENT_QUOTE as EVENT_QUOTE
from ._set import EVENT_TRADE as EVENT_TRADE
from ._set import INDICATOR_NAMES as INDICATOR_NAMES
from ._set import REGISTRY as REGISTRY
from ._set import IndicatorConfigError as IndicatorConfigError
from ._set import IndicatorInfo as IndicatorInfo
from ._set import IndicatorSet as IndicatorSet
from ._set import IndicatorSpec as IndicatorSpec
from ._set import Param as Param
from ._set import check_params as check_params
from ._set import default_specs as default_specs
from ._set import outputs_of as outputs_of
from ._set import parameters_of as parameters_of
from ._set import record_batch as record_batch
from ._set import registry_table as registry_table
from ._set import spec as spec
from ._set import spec_from_config as spec_from_config
from ._set import specs_from_config as specs_from_config
from ._set import update_batch as update_batch
from ._set import update_book as update_book
from ._set import update_depth as update_depth
from ._set import update_quote as update_quote
from ._set import update_trade as update_trade
from ._set import value_names as value_names
from ._stats import linearreg as linearreg
from ._stats import linearreg_angle as linearreg_angle
from ._stats import linearreg_angle_state as linearreg_angle_state
from ._stats import linearreg_angle_update as linearreg_angle_update
from ._stats import linearreg_intercept as linearreg_intercept
from ._stats import linearreg_intercept_state as linearreg_intercept_state
from ._stats import linearreg_intercept_update as linearreg_intercept_update
from ._stats import linearreg_slope as linearreg_slope
from ._stats import linearreg_slope_state as linearreg_slope_state
from ._stats import linearreg_slope_update as linearreg_slope_update
from ._stats import linearreg_state as linearreg_state
from ._stats import linearreg_update as linearreg_update
from ._stats import stddev as stddev
from ._stats import stddev_state as stddev_state
from ._stats import stddev_update as stddev_update
from ._stats import tsf as tsf
from ._stats import tsf_state as tsf_state
from ._stats import tsf_update as tsf_update
from ._stats import var as var
from ._stats import var_state as var_state
from ._stats import var_update as var_update
from ._trend import dema as dema
from ._trend import dema_state as dema_state
from ._trend import dema_update as dema_update
from ._trend import ht_trendline as ht_trendline
from ._trend import ht_trendline_state as ht_trendline_state
from ._trend import ht_trendline_update as ht_trendline_update
from ._trend import kama as kama
from ._trend import kama_state as kama_state
from ._trend import kama_update as kama_update
from ._trend import sar as sar
from ._trend import sar_state as sar_state
from ._trend import sar_update as sar_update
from ._trend import t3 as t3
from ._trend import t3_state as t3_state
from ._trend import t3_update as t3_update
from ._trend import tema as tema
from ._trend import tema_state as tema_state
from ._trend import tema_update as tema_update
from ._volatility import adx as adx
from ._volatility import adx_state as adx_state
from ._volatility import adx_update as adx_update
from ._volatility import adxr as adxr
from ._volatility import adxr_state as adxr_state
from ._volatility import adxr_update as adxr_update
from ._volatility import atr as atr
from ._volatility import atr_state as atr_state
from ._volatility import atr_update as atr_update
from ._volatility import dx as dx
from ._volatility import dx_state as dx_state
from ._volatility import dx_update as dx_update
from ._volatility import minus_di as minus_di
from ._volatility import minus_di_state as minus_di_state
from ._volatility import minus_di_update as minus_di_update
from ._volatility import natr as natr
from ._volatility import natr_state as natr_state
from ._volatility import natr_update as natr_update
from ._volatility import plus_di as plus_di
from ._volatility import plus_di_state as plus_di_state
from ._volatility import plus_di_update as plus_di_update
from ._volmodels import GarchFit as GarchFit
from ._volmodels import garch as garch
from ._volmodels import garch_fit as garch_fit
from ._volmodels import garch_log_likelihood as garch_log_likelihood
from ._volmodels import garch_state as garch_state
from ._volmodels import garch_update as garch_update
from ._volmodels import volvol as volvol
from ._volmodels import volvol_state as volvol_state
from ._volmodels import volvol_update as volvol_update
from ._volume import ad as ad
from ._volume import ad_state as ad_state
from ._volume import ad_update as ad_update
from ._volume import obv as obv
from ._volume import obv_state as obv_state
from ._volume import obv_update as obv_update
from ._volume import vpt as vpt
from ._volume import vpt_state as vpt_state
from ._volume import vpt_update as vpt_update
from ._volume import vwma as vwma
from ._volume import vwma_state as vwma_state
from ._volume import vwma_update as vwma_update

# Kernels compile (or load from cache) lazily, at first call: checking here is early enough.
_drop_stale_kernel_cache(_Path(__file__).parent)

__all__ = [
    "EMA_STATE_SIZE",
    "EVENT_DEPTH",
    "EVENT_QUOTE",
    "EVENT_TRADE",
    "INDICATOR_NAMES",
    "REGISTRY",
    "RSI_STATE_SIZE",
    "GarchFit",
    "IndicatorConfigError",
    "IndicatorInfo",
    "IndicatorSet",
    "IndicatorSpec",
    "Param",
    "ad",
    "ad_state",
    "ad_update",
    "adx",
    "adx_state",
    "adx_update",
    "adxr",
    "adxr_state",
    "adxr_update",
    "apo",
    "apo_state",
    "apo_update",
    "aroon",
    "aroon_state",
    "aroon_update",
    "aroonosc",
    "aroonosc_state",
    "aroonosc_update",
    "atr",
    "atr_state",
    "atr_update",
    "bbands",
    "bbands_state",
    "bbands_update",
    "bind_to_set",
    "book_depth",
    "book_depth_state",
    "book_depth_update",
    "book_imbalance",
    "book_imbalance_n",
    "book_imbalance_n_state",
    "book_imbalance_n_update",
    "book_imbalance_state",
    "book_imbalance_update",
    "bop",
    "bop_state",
    "bop_update",
    "cci",
    "cci_state",
    "cci_update",
    "check_params",
    "cmo",
    "cmo_state",
    "cmo_update",
    "cvd",
    "cvd_state",
    "cvd_update",
    "default_specs",
    "dema",
    "dema_state",
    "dema_update",
    "dx",
    "dx_state",
    "dx_update",
    "ema",
    "ema_state",
    "ema_update",
    "garch",
    "garch_fit",
    "garch_log_likelihood",
    "garch_state",
    "garch_update",
    "ht_trendline",
    "ht_trendline_state",
    "ht_trendline_update",
    "ichimoku",
    "ichimoku_cloud",
    "ichimoku_cloud_state",
    "ichimoku_cloud_update",
    "ichimoku_state",
    "ichimoku_update",
    "kama",
    "kama_state",
    "kama_update",
    "kyle_lambda",
    "kyle_lambda_state",
    "kyle_lambda_update",
    "linearreg",
    "linearreg_angle",
    "linearreg_angle_state",
    "linearreg_angle_update",
    "linearreg_intercept",
    "linearreg_intercept_state",
    "linearreg_intercept_update",
    "linearreg_slope",
    "linearreg_slope_state",
    "linearreg_slope_update",
    "linearreg_state",
    "linearreg_update",
    "macd",
    "macd_state",
    "macd_update",
    "market_profile",
    "market_profile_state",
    "market_profile_update",
    "mfi",
    "mfi_state",
    "mfi_update",
    "minus_di",
    "minus_di_state",
    "minus_di_update",
    "mom",
    "mom_state",
    "mom_update",
    "natr",
    "natr_state",
    "natr_update",
    "obv",
    "obv_state",
    "obv_update",
    "outputs_of",
    "parameters_of",
    "plus_di",
    "plus_di_state",
    "plus_di_update",
    "ppo",
    "ppo_state",
    "ppo_update",
    "realized_vol",
    "realized_vol_state",
    "realized_vol_update",
    "record_batch",
    "registry_table",
    "roc",
    "roc_state",
    "roc_update",
    "rolling_vwap",
    "rolling_vwap_state",
    "rolling_vwap_update",
    "rsi",
    "rsi_state",
    "rsi_update",
    "sar",
    "sar_state",
    "sar_update",
    "sma",
    "sma_state",
    "sma_update",
    "spec",
    "spec_from_config",
    "specs_from_config",
    "spoofing",
    "spoofing_state",
    "spoofing_update",
    "spread_bps",
    "spread_bps_state",
    "spread_bps_update",
    "stddev",
    "stddev_state",
    "stddev_update",
    "stoch",
    "stoch_state",
    "stoch_update",
    "stochrsi",
    "stochrsi_state",
    "stochrsi_update",
    "t3",
    "t3_state",
    "t3_update",
    "tema",
    "tema_state",
    "tema_update",
    "tick_momentum",
    "tick_momentum_state",
    "tick_momentum_update",
    "trade_ofi",
    "trade_ofi_state",
    "trade_ofi_update",
    "trix",
    "trix_state",
    "trix_update",
    "tsf",
    "tsf_state",
    "tsf_update",
    "twap",
    "twap_state",
    "twap_update",
    "ultosc",
    "ultosc_state",
    "ultosc_update",
    "update_batch",
    "update_book",
    "update_depth",
    "update_quote",
    "update_trade",
    "value_names",
    "var",
    "var_state",
    "var_update",
    "velocity",
    "velocity_state",
    "velocity_update",
    "volvol",
    "volvol_state",
    "volvol_update",
    "vpin",
    "vpin_state",
    "vpin_update",
    "vpt",
    "vpt_state",
    "vpt_update",
    "vwap",
    "vwap_state",
    "vwap_update",
    "vwma",
    "vwma_state",
    "vwma_update",
    "willr",
    "willr_state",
    "willr_update",
    "wma",
    "wma_state",
    "wma_update",
]
