"""What the fake exchange saw: one :class:`RequestRecord` per request and the :class:`FakeStats` summary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class RequestRecord:
    """One API (or archive) request as the fake saw it. ``status`` 0 means the connection was
    dropped; ``chaos`` names the chaos kind (or ``"rate_limit_storm"``) that answered it, if any.
    An archive request's ``path`` is the whole (decoded) path, e.g. the file's; its weight is 0."""

    t: float
    path: str
    params: dict[str, str]
    status: int
    weight: int
    used_weight: int
    chaos: str | None = None


@dataclass
class FakeStats:
    """Counters since start or the last :meth:`FakeExchange.reset` (control calls excluded).

    ``chaos_faults`` counts chaos faults by kind; ``storm_rate_limited`` counts the 429s of
    rate-limit storms (they are in ``rate_limited`` too).

    Bulk-archive requests are in ``requests``, ``by_status``, ``log`` and ``by_path`` (under
    ``/data/spot/monthly/klines``, ``/data/spot/daily/klines``, ``/data (other)`` or
    ``/ (listing)``, never a key per file) and also in ``archive_requests``, ``archive_bytes``
    (body bytes sent) and ``archive_by_kind`` (``listing``, ``monthly``, ``daily``,
    ``checksum``, ``not_found``: every 404).
    """

    requests: int = 0
    by_path: dict[str, int] = field(default_factory=dict)
    by_status: dict[int, int] = field(default_factory=dict)
    rate_limited: int = 0
    banned: int = 0
    chaos_faults: dict[str, int] = field(default_factory=dict)
    storm_rate_limited: int = 0
    max_window_weight: int = 0
    window_weights: list[tuple[float, int]] = field(default_factory=list)
    log: list[RequestRecord] = field(default_factory=list)
    archive_requests: int = 0
    archive_bytes: int = 0
    archive_by_kind: dict[str, int] = field(default_factory=dict)

    def to_json(self, include_log: bool = False) -> dict[str, Any]:
        """A JSON-ready dict (``by_status`` keys become strings, as JSON requires)."""
        data: dict[str, Any] = {
            "requests": self.requests,
            "by_path": dict(self.by_path),
            "by_status": {str(k): v for k, v in self.by_status.items()},
            "rate_limited": self.rate_limited,
            "banned": self.banned,
            "chaos_faults": dict(self.chaos_faults),
            "storm_rate_limited": self.storm_rate_limited,
            "max_window_weight": self.max_window_weight,
            "window_weights": [[start, weight] for start, weight in self.window_weights],
            "archive_requests": self.archive_requests,
            "archive_bytes": self.archive_bytes,
            "archive_by_kind": dict(self.archive_by_kind),
        }
        if include_log:
            data["log"] = [asdict(record) for record in self.log]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FakeStats:
        """Inverse of :meth:`to_json` (for tests that read ``GET /fake/stats``)."""
        return cls(
            requests=data["requests"],
            by_path=dict(data["by_path"]),
            by_status={int(k): v for k, v in data["by_status"].items()},
            rate_limited=data["rate_limited"],
            banned=data["banned"],
            chaos_faults=dict(data.get("chaos_faults", {})),
            storm_rate_limited=data.get("storm_rate_limited", 0),
            max_window_weight=data["max_window_weight"],
            window_weights=[(float(s), int(w)) for s, w in data["window_weights"]],
            log=[RequestRecord(**record) for record in data.get("log", [])],
            archive_requests=data.get("archive_requests", 0),
            archive_bytes=data.get("archive_bytes", 0),
            archive_by_kind=dict(data.get("archive_by_kind", {})),
        )
