"""Local order books kept from Binance USD-M diff depth and REST snapshots.

:class:`OrderBook` holds one symbol's price levels (exact integer ticks) and
applies diffs by the documented ``U``/``u``/``pu`` rules; :class:`BookSync` is the
buffer / snapshot / resync protocol around it, a table-driven state machine
(:data:`TRANSITIONS`). Pure Python and numpy: no Trio, no I/O.
"""

from ._book import ApplyResult as ApplyResult
from ._book import OrderBook as OrderBook
from ._book import Side as Side
from ._decode import DepthSnapshot as DepthSnapshot
from ._decode import decode_levels as decode_levels
from ._decode import decode_snapshot as decode_snapshot
from ._errors import BookDecodeError as BookDecodeError
from ._errors import BookError as BookError
from ._errors import BookPriceError as BookPriceError
from ._errors import BookTransitionError as BookTransitionError
from ._prices import PriceGrid as PriceGrid
from ._sync import TRANSITIONS as TRANSITIONS
from ._sync import BookSync as BookSync
from ._sync import DepthDiff as DepthDiff
from ._sync import SyncState as SyncState
from ._sync import SyncStats as SyncStats

__all__ = [
    "TRANSITIONS",
    "ApplyResult",
    "BookDecodeError",
    "BookError",
    "BookPriceError",
    "BookSync",
    "BookTransitionError",
    "DepthDiff",
    "DepthSnapshot",
    "OrderBook",
    "PriceGrid",
    "Side",
    "SyncState",
    "SyncStats",
    "decode_levels",
    "decode_snapshot",
]
