"""The storage seam (cryptolake.lake.storage): the same contract on a local folder and on a real
S3 server on 127.0.0.1 (moto's server for behaviour, SeaweedFS for races, since moto's
conditional checks are not atomic)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from cryptolake.errors import LakeError
from cryptolake.lake.storage import LocalStorage, ObjectStorage, Storage, VersionConflict, open_storage
from tests.conftest import s3_env

SECRET = "s3cret-never-shown-0123456789"


def _env(endpoint: str) -> dict[str, str]:
    return s3_env(endpoint, SECRET)


@pytest.fixture
def moto_storage(moto_endpoint: str, request: pytest.FixtureRequest) -> ObjectStorage:
    bucket = f"lake-{abs(hash(request.node.nodeid)) % 10**8}"
    assert httpx.put(f"{moto_endpoint}/{bucket}").status_code == 200
    storage = open_storage(f"s3://{bucket}/prefix", _env(moto_endpoint))
    assert isinstance(storage, ObjectStorage)
    return storage


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return open_storage(tmp_path / "lake")
    return request.getfixturevalue("moto_storage")  # type: ignore[no-any-return]


def test_put_read_list_delete(storage: Storage) -> None:
    assert storage.read("klines/a/data.parquet") is None
    version = storage.put("klines/a/data.parquet", b"PAR1 one")
    data, read_version = storage.read("klines/a/data.parquet")  # type: ignore[misc]
    assert data == b"PAR1 one" and read_version == version
    storage.put("klines/b/data.parquet", b"two")
    storage.put("_meta/state.json", b"{}")
    assert [o.path for o in storage.list("klines")] == ["klines/a/data.parquet", "klines/b/data.parquet"]
    assert [o.size for o in storage.list("klines")] == [8, 3]
    assert storage.read_range("klines/a/data.parquet", 5, 8) == b"one"
    storage.delete("klines/a/data.parquet")
    storage.delete("klines/a/data.parquet")  # no error when gone
    assert storage.read("klines/a/data.parquet") is None


def test_a_conditional_put_wins_only_against_the_version_it_read(storage: Storage) -> None:
    first = storage.put_if("p/data.parquet", b"v1", None)
    with pytest.raises(VersionConflict):
        storage.put_if("p/data.parquet", b"again", None)  # it exists now
    second = storage.put_if("p/data.parquet", b"v2", first)
    with pytest.raises(VersionConflict):
        storage.put_if("p/data.parquet", b"stale", first)  # someone wrote v2 since
    assert storage.read("p/data.parquet") == (b"v2", second)


def test_errors_are_one_line_and_never_show_credentials(moto_endpoint: str) -> None:
    storage = open_storage("s3://no-such-bucket/x", _env(moto_endpoint))
    with pytest.raises(LakeError) as caught:
        storage.put("a", b"b")
    message = str(caught.value)
    assert "\n" not in message and "s3://no-such-bucket/x/a" in message
    assert SECRET not in message and "cryptolake-test" not in message
    with pytest.raises(LakeError, match="expected s3://bucket/prefix"):
        open_storage("s3://")
    with pytest.raises(LakeError, match="invalid lake path"):
        LocalStorage(Path("/tmp")).read("../etc/passwd")


def test_concurrent_conditional_writers_never_lose_an_update(seaweed_endpoint: str) -> None:
    """Eight writers each add 20 to a counter by read, change, conditional put, retry on a lost
    race: every one of the 160 updates survives (SeaweedFS checks If-Match atomically)."""
    storage = open_storage("s3://race/counter", _env(seaweed_endpoint))
    storage.put("n", b"0")
    conflicts = []

    def writer() -> None:
        for _ in range(20):
            while True:
                read = storage.read("n")
                assert read is not None
                try:
                    storage.put_if("n", str(int(read[0]) + 1).encode(), read[1])
                    break
                except VersionConflict:
                    conflicts.append(1)

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert storage.read("n")[0] == b"160"  # type: ignore[index]
    assert conflicts  # the races happened, and were lost cleanly


# -- partition commits without a lock -----------------------------------------------------------

_WRITER = """
import sys
sys.path.insert(0, {tests!r})
from test_lake_append import candles, NOV, MIN
from cryptolake.lake.commit import commit_partition
from cryptolake.lake.storage import open_storage
storage = open_storage("s3://race/lake", {env!r})
conflicts = 0
for step in range(30):
    slots = [{offset} + 2 * (step * 3 + i) for i in range(3)]
    result = commit_partition(storage, "klines/p/data.parquet", "2026-11", candles([NOV + s * MIN for s in slots]))
    conflicts += result.conflicts
print(conflicts)
"""


def test_two_processes_committing_one_partition_keep_both_sets_of_candles(seaweed_endpoint: str) -> None:
    """Two writers (processes) commit 30 batches each into the same partition object at once,
    one the even minutes, one the odd: every candle of both survives."""
    from cryptolake.lake.storage import open_storage

    tests = str(Path(__file__).parent)
    env = _env(seaweed_endpoint)
    code = [_WRITER.format(tests=tests, env=env, offset=offset) for offset in (0, 1)]
    pythonpath = os.pathsep.join([str(Path(__file__).parent.parent), tests])
    children = [
        subprocess.Popen(
            [sys.executable, "-c", c],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": pythonpath},
        )  # fmt: skip
        for c in code
    ]
    outputs = [child.communicate(timeout=120)[0] for child in children]
    assert all(child.returncode == 0 for child in children), outputs
    print("lost races per writer:", [o.strip() for o in outputs])
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = open_storage("s3://race/lake", env).read("klines/p/data.parquet")
    assert data is not None
    table = pq.read_table(pa.BufferReader(data[0]))
    opens = [t.value for t in table.column("open_time")]
    from tests.test_lake_append import MIN, NOV

    assert opens == [NOV + i * MIN for i in range(180)]  # both writers' 90 candles, each once


def test_a_commit_merges_replaces_and_skips_like_the_local_lake(moto_storage: ObjectStorage) -> None:
    from cryptolake.lake.commit import commit_partition
    from tests.test_lake_append import MIN, NOV, candles

    key = "klines/exchange=binance/interval=1m/symbol=BTCUSDT/month=2026-11/data.parquet"
    first = commit_partition(moto_storage, key, "2026-11", candles([NOV + i * MIN for i in range(10)]))
    assert (first.added, first.changed, first.written) == (10, 0, True)
    same = commit_partition(moto_storage, key, "2026-11", candles([NOV + i * MIN for i in range(5)]))
    assert not same.written  # nothing new: no PUT
    changed = commit_partition(
        moto_storage, key, "2026-11", candles([NOV + i * MIN for i in range(8, 12)], price=7)
    )
    assert (changed.added, changed.changed) == (2, 2)
    moto_storage.put("klines/bad/data.parquet", b"not parquet")
    with pytest.raises(LakeError, match="cannot read Parquet partition"):
        commit_partition(moto_storage, "klines/bad/data.parquet", "2026-11", candles([NOV]))


def test_bad_paths_and_roots_are_refused_in_one_line(storage: Storage, tmp_path: Path) -> None:
    for path in ["", "/", "/etc/passwd", "a/", "a//b", "a/./b", "../x", "a\x00b", "a\\b"]:
        with pytest.raises(LakeError, match="invalid lake path"):
            storage.put(path, b"x")
        with pytest.raises(LakeError, match="invalid lake path"):
            storage.put_if(path, b"x", None)
    storage.put("k", b"abc")
    with pytest.raises(LakeError, match="invalid byte range"):
        storage.read_range("k", 3, 1)
    for root in ["", "gs://bucket/x", "S3://bucket/x", "file:///tmp/x", "s3:/bucket/x"]:
        with pytest.raises(LakeError, match="invalid lake root"):
            open_storage(root)
    assert not list(tmp_path.glob("gs*")) and not Path("gs:").exists()


def test_credentials_in_an_endpoint_are_masked() -> None:
    secret = "SUPERSECRETKEY123"
    storage = open_storage(
        "s3://bucket/p",
        {"AWS_ENDPOINT_URL": f"http://AKIDSECRETID:{secret}@127.0.0.1:9", "AWS_SECRET_ACCESS_KEY": secret,
         "AWS_ACCESS_KEY_ID": "AKIDSECRETID", "AWS_ALLOW_HTTP": "true"},
    )  # fmt: skip
    with pytest.raises(LakeError) as caught:
        storage.read("a")
    assert secret not in str(caught.value) and "AKIDSECRETID" not in str(caught.value)


def test_a_commit_refuses_candles_of_another_month(moto_storage: ObjectStorage) -> None:
    from cryptolake.lake.commit import commit_partition
    from tests.test_lake_append import NOV, candles

    with pytest.raises(ValueError, match="outside 2026-10"):
        commit_partition(moto_storage, "k/data.parquet", "2026-10", candles([NOV]))
