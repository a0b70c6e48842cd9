"""The fake exchange's symbols: what each one is (listing, delisting, prices) and the default universe."""

from __future__ import annotations

from dataclasses import dataclass

from cryptolake.timeutils import to_ms

# --------------------------------------------------------------------------------------------
# Public data types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeSymbol:
    """One spot market of the fake exchange.

    ``listed_ms`` is the first trade: each interval's first candle opens at
    ``Interval(i).floor(listed_ms)``. No candle opens at or after ``delisted_ms``; once the
    exchange's now passes it the status reads ``BREAK`` (klines still answer).
    ``volatility`` scales the price swings (stablecoins use a tiny one).
    """

    symbol: str
    base_asset: str
    quote_asset: str
    listed_ms: int
    delisted_ms: int | None = None
    status: str = "TRADING"
    base_price: float = 100.0
    volume_scale: float = 1.0
    volatility: float = 1.0

    def status_at(self, now_ms: int) -> str:
        """The exchangeInfo status at ``now_ms``: ``BREAK`` once delisted."""
        if self.delisted_ms is not None and now_ms >= self.delisted_ms:
            return "BREAK"
        return self.status


def default_symbols() -> list[FakeSymbol]:
    """The default universe: majors, a late listing, stablecoins, delistings, a BTC quote and
    a non-ASCII symbol. ``volume_scale`` values are ~1.6x apart so the 24 h quoteVolume
    ranking is deterministic (BTC > USDC > FDUSD > ETH > SOL > XRP > DOGE > BNB > ADA > ...).
    """
    t = to_ms
    return [
        FakeSymbol("BTCUSDT", "BTC", "USDT", t("2017-08-17T04:00Z"), base_price=30_000.0, volume_scale=100.0),
        FakeSymbol("ETHUSDT", "ETH", "USDT", t("2017-08-17T04:00Z"), base_price=2_000.0, volume_scale=23.0),
        FakeSymbol("BNBUSDT", "BNB", "USDT", t("2017-11-06T03:00Z"), base_price=300.0, volume_scale=3.4),
        FakeSymbol("XRPUSDT", "XRP", "USDT", t("2018-05-04T08:00Z"), base_price=0.5, volume_scale=9.0),
        FakeSymbol("ADAUSDT", "ADA", "USDT", t("2018-04-17T04:00Z"), base_price=0.4, volume_scale=1.3),
        FakeSymbol("DOGEUSDT", "DOGE", "USDT", t("2019-07-05T12:00Z"), base_price=0.1, volume_scale=5.5),
        FakeSymbol("SOLUSDT", "SOL", "USDT", t("2020-08-11T06:00Z"), base_price=60.0, volume_scale=14.0),
        FakeSymbol("NEWUSDT", "NEW", "USDT", t("2025-06-15T10:30Z"), base_price=1.5, volume_scale=0.5),
        FakeSymbol(
            "USDCUSDT",
            "USDC",
            "USDT",
            t("2018-12-15T04:00Z"),
            base_price=1.0,
            volume_scale=60.0,
            volatility=0.002,
        ),
        FakeSymbol(
            "FDUSDUSDT",
            "FDUSD",
            "USDT",
            t("2023-07-26T08:00Z"),
            base_price=1.0,
            volume_scale=37.0,
            volatility=0.002,
        ),
        FakeSymbol(
            "BTCUPUSDT",
            "BTCUP",
            "USDT",
            t("2020-05-14T08:00Z"),
            delisted_ms=t("2022-03-01T00:00Z"),
            base_price=5.0,
            volume_scale=0.3,
        ),
        FakeSymbol(
            "LUNAUSDT",
            "LUNA",
            "USDT",
            t("2020-08-21T10:00Z"),
            delisted_ms=t("2022-05-13T00:00Z"),
            base_price=50.0,
            volume_scale=2.1,
        ),
        FakeSymbol("ETHBTC", "ETH", "BTC", t("2017-07-14T04:00Z"), base_price=0.06, volume_scale=0.00002),
        FakeSymbol(
            "币安人生USDT", "币安人生", "USDT", t("2025-10-08T08:00Z"), base_price=0.2, volume_scale=0.8
        ),
    ]
