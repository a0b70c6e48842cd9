"""The kinds of collection run the scheduler knows, without the scheduler's imports.

``cryptolake scheduler trigger --type`` needs them to build its options when the CLI starts,
long before (and usually without) :mod:`cryptolake.scheduler`, which loads filelock,
APScheduler and the lake. :mod:`cryptolake.scheduler` re-exports both names.
"""

from __future__ import annotations

from typing import Literal, get_args

CollectionType = Literal["forward", "backward", "gaps", "full"]

#: ``forward``, ``backward``, ``gaps`` and ``full`` (all three, in that order of steps).
COLLECTION_TYPES: tuple[str, ...] = get_args(CollectionType)
