"""Exact conversion between Binance decimal price strings and integer ticks.

Binance sends prices as decimal strings (``"61800.20"``). The book keys its levels
by integer ticks so that equal prices are equal keys and ordering is integer
ordering; a float of a price is only ever produced for output, never compared.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from ._errors import BookPriceError


def _is_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def decimal_places(text: str) -> int:
    """Digits after the decimal point of a plain decimal string (``"0.10"`` -> 2)."""
    _whole, _dot, frac = text.partition(".")
    return len(frac)


def parse_units(text: str, decimals: int) -> int:
    """A non-negative decimal string as an exact integer count of ``10**-decimals``.

    Trailing zeros beyond ``decimals`` are accepted (``"1.500"`` with 2 decimals is
    150); any other digit there is a price the grid cannot hold.

    Raises:
        BookPriceError: ``text`` is not a plain decimal (digits, at most one
            point, no sign or exponent) or is finer than ``10**-decimals``.
    """
    whole, dot, frac = text.partition(".")
    if not _is_digits(whole) or (dot and not _is_digits(frac)):
        raise BookPriceError(f"price {text!r} is not a plain decimal string")
    if len(frac) > decimals:
        if frac[decimals:].strip("0"):
            raise BookPriceError(f"price {text!r} has more than {decimals} decimal places")
        frac = frac[:decimals]
    units = int(whole) * 10**decimals
    return (units + int(frac.ljust(decimals, "0"))) if decimals else units


@attrs.frozen(kw_only=True)
class PriceGrid:
    """The tick grid of one symbol: ``price = ticks * tick_units * 10**-decimals``.

    Attributes:
        decimals: decimal places of the unit (2 for ``"0.10"``).
        tick_units: the tick size in units of ``10**-decimals`` (10 for ``"0.10"``).
    """

    decimals: int = attrs.field(validator=attrs.validators.ge(0))
    tick_units: int = attrs.field(validator=attrs.validators.gt(0))

    @classmethod
    def from_tick_size(cls, tick_size: str) -> PriceGrid:
        """The grid of an exchangeInfo ``PRICE_FILTER.tickSize`` such as ``"0.10"``.

        Raises:
            BookPriceError: the tick size is malformed or zero.
        """
        decimals = decimal_places(tick_size)
        units = parse_units(tick_size, decimals)
        if units <= 0:
            raise BookPriceError(f"tick size {tick_size!r} is not positive")
        return cls(decimals=decimals, tick_units=units)

    @classmethod
    def infer(cls, prices: Iterable[str]) -> PriceGrid:
        """The finest decimal step among ``prices`` (one tick = one last digit).

        Binance prints every price of a symbol with the same number of decimal
        places (its ``pricePrecision``), so the snapshot's prices give the unit.
        Without the real tick size, off-grid prices cannot be detected.
        """
        return cls(decimals=max((decimal_places(p) for p in prices), default=0), tick_units=1)

    def ticks(self, price: str) -> int:
        """The exact tick count of a decimal price string.

        Raises:
            BookPriceError: malformed, finer than the grid, or not a multiple of the tick.
        """
        whole, _dot, frac = price.partition(".")
        if len(frac) == self.decimals and whole.isdigit() and frac.isdigit() and price.isascii():
            # Binance's own form, exactly ``decimals`` places: one int() (~0.25 us
            # against ~0.6 us), what a book pays for a price its memo has dropped.
            units = int(whole + frac)
        else:
            units = parse_units(price, self.decimals)
        if self.tick_units == 1:
            return units
        ticks, rest = divmod(units, self.tick_units)
        if rest:
            raise BookPriceError(f"price {price!r} is not on the tick grid {self.tick_text()}")
        return ticks

    def price(self, ticks: int) -> float:
        """The float nearest to the price (``float("61800.20")`` exactly, not a product)."""
        # int / int is correctly rounded in Python, so this equals float(price_text).
        return ticks * self.tick_units / 10**self.decimals

    def text(self, ticks: int) -> str:
        """The price as a decimal string with the grid's decimal places."""
        units = ticks * self.tick_units
        if not self.decimals:
            return str(units)
        sign = "-" if units < 0 else ""
        whole, frac = divmod(abs(units), 10**self.decimals)
        return f"{sign}{whole}.{frac:0{self.decimals}d}"

    def tick_text(self) -> str:
        """The tick size as a decimal string (``"0.10"``)."""
        return self.text(1)
