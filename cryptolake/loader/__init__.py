"""Loaders: make a database match the lake. The lake never imports this package.

PostgreSQL needs the ``postgres`` extra (``pip install 'cryptolake[postgres]'``); psycopg is
imported only when a loader is created.
"""

from __future__ import annotations

from cryptolake.loader.postgres import PartitionFailure, PostgresLoader, SyncReport, sync_postgres

__all__ = ["PartitionFailure", "PostgresLoader", "SyncReport", "sync_postgres"]
