"""The README's Spark recipe reads the lake: partition discovery from the Hive layout with
``basePath``, the same candles DuckDB counts, stream files included and cryptolake's hidden files
left out. pyspark in local mode (Java 17 on these machines)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from cryptolake.lake import Lake
from cryptolake.lake.append import Appender
from cryptolake.testing import FakeExchange
from tests.helpers import collect, duck

pyspark = pytest.importorskip("pyspark", reason="pyspark is not installed (pip install -e '.[test]')")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    if os.environ.get("CI") == "true":
        raise RuntimeError("CI must have Java for the Spark reader test")
    pytest.skip("no Java for Spark on this machine", allow_module_level=True)


@pytest.mark.slow
def test_spark_reads_the_lake_as_the_readme_says(fake_exchange: FakeExchange, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    assert collect(lake, fake_exchange, "--symbols", "BTC,ETH,SOL", "--since", "2025-11-01").exit_code == 0
    # A stream's file beside a data.parquet (not compacted yet), and another exchange's candles.
    btc = Lake(lake).read_partition("1h", "BTCUSDT", "2025-12")
    Lake(lake).write_partition("1h", "BTCUSDT", btc.head(100).to_arrow())  # what it held already
    Appender(Lake(lake, "bybit"), "1h").append("BTCUSDT", btc.head(5).to_arrow())
    expected = duck(lake).group_by("exchange", "symbol").len().sort("exchange", "symbol").rows()

    from pyspark.sql import SparkSession

    # The README's recipe.
    spark = (
        SparkSession.builder.master("local[1]")
        .appName("cryptolake-test")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    try:
        klines = spark.read.option("basePath", f"{lake}/klines").parquet(f"{lake}/klines")
        assert klines.columns[-4:] == ["exchange", "interval", "symbol", "month"]
        counts = klines.groupBy("exchange", "symbol").count().orderBy("exchange", "symbol").collect()
        assert [(r["exchange"], r["symbol"], r["count"]) for r in counts] == expected
        first = klines.filter("symbol = 'BTCUSDT' AND exchange = 'binance'").orderBy("open_time").first()
        assert first is not None and str(first["open_time"]) == "2025-11-01 00:00:00"
        assert dict(klines.dtypes)["month"] == "string" and dict(klines.dtypes)["volume"] == "double"
    finally:
        spark.stop()
