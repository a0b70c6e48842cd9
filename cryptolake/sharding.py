"""Shards: a stable share of the symbols for each of N collector processes.

``--shard K/N`` makes a process collect only the symbols whose shard is K: the symbol's place is
a hash of its exchange and name, so it is the same in every process, on every host and in every
run, whatever else is in the universe; N processes with shards 1/N ... N/N together cover every
symbol exactly once, each within its own IP's request weight.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

_SHARD_RE = re.compile(r"^\s*([0-9]+)\s*/\s*([0-9]+)\s*$", re.ASCII)
#: The most shards a universe is split into.
MAX_SHARDS = 1024


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS or not 1 <= self.index <= self.count:
            raise ValueError(
                f"a shard is K/N with 1 <= K <= N <= {MAX_SHARDS}, got {self.index}/{self.count}"
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"2/4"`` -> ``Shard(2, 4)``.

        Raises:
            ValueError: not ``K/N`` with ``1 <= K <= N``.
        """
        match = _SHARD_RE.match(text)
        if match is None:
            raise ValueError(f"a shard is K/N such as 1/4 (this process's share K of N), got {text!r}")
        return cls(int(match.group(1)), int(match.group(2)))

    def owns(self, exchange: str, symbol: str) -> bool:
        """Whether ``symbol`` of ``exchange`` is this shard's."""
        return shard_of(exchange, symbol, self.count) == self.index

    def select(self, exchange: str, symbols: Iterable[str]) -> list[str]:
        """This shard's symbols, in the given order."""
        return [s for s in symbols if self.owns(exchange, s)]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(exchange: str, symbol: str, count: int) -> int:
    """The shard (1-based, of ``count``) that owns ``symbol`` of ``exchange``: the first 8 bytes
    of the SHA-256 of ``exchange:symbol`` modulo ``count``, plus one."""
    digest = hashlib.sha256(f"{exchange}:{symbol}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count + 1
