"""Where the lake's bytes live: a local folder or an S3-compatible bucket, behind one seam.

:class:`Storage` is what the lake needs from a store, and nothing more: list a prefix, read an
object (whole or a byte range, with the version read), put one atomically, put one only if it is
still the version that was read (or does not exist yet), delete one. :class:`LocalStorage` keeps
today's behaviour on a disk (temp file, fsync, rename, fsync of the folder); :class:`ObjectStorage`
talks to S3, MinIO, R2 or SeaweedFS with ``obstore``, where a conditional put is one ``PUT`` with
``If-Match`` (``If-None-Match: *`` for a new object): the only coordination writers on several
hosts need. :func:`open_storage` picks one from a lake root (``s3://bucket/prefix`` or a path).

Object storage reads its endpoint, region and credentials from the standard ``AWS_*`` variables
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
``AWS_REGION``, ``AWS_ALLOW_HTTP``); no credential is ever part of an error message.

Every failure is a :class:`~cryptolake.errors.LakeError` with one line that names the object;
a lost conditional put is a :class:`VersionConflict` (the caller re-reads, re-merges, retries).
"""

from __future__ import annotations

import builtins
import contextlib
import os
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from cryptolake.atomic import fsync_dir, write_bytes_atomic
from cryptolake.config import is_bucket_name
from cryptolake.errors import LakeError, VersionConflict

#: A URL scheme (``gs://``, ``S3://``, ``file:///``, a typo like ``s3:/``), not a folder.
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")

__all__ = [
    "LocalStorage",
    "ObjectInfo",
    "ObjectStorage",
    "Storage",
    "VersionConflict",
    "is_object_url",
    "open_storage",
    "update_object",
]

#: How many lost races one read-change-put survives before it gives up.
MAX_ATTEMPTS = 20


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object: its path under the storage root, size and version."""

    path: str
    size: int
    version: str


class Storage(Protocol):
    """What the lake needs from a store. Paths are ``/``-separated and relative to the root."""

    url: str

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object under ``prefix`` (recursively), sorted by path."""
        ...

    def read(self, path: str) -> tuple[bytes, str] | None:
        """The object's bytes and the version read; None if there is none."""
        ...

    def read_range(self, path: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of an object (a Parquet footer without the data)."""
        ...

    def head(self, path: str) -> ObjectInfo | None:
        """The object's size and version without its bytes; None if there is none."""
        ...

    def put(self, path: str, data: bytes) -> str:
        """Replace (or create) the object atomically: readers see the old bytes or the new,
        never a part. Returns the new version."""
        ...

    def put_if(
        self, path: str, data: bytes, version: str | None, metadata: Mapping[str, str] | None = None
    ) -> str:
        """:meth:`put`, only if the object is still at ``version`` (None: only if there is none).
        ``metadata``: user metadata stored with the object (object storage only; a folder keeps
        its commit records beside the files instead).

        Raises:
            VersionConflict: it changed or appeared since.
        """
        ...

    def delete(self, path: str) -> None:
        """Remove the object (no error if there is none)."""
        ...


def is_object_url(root: str | Path) -> bool:
    """Whether a lake root names object storage (``s3://...``) rather than a folder."""
    return str(root).startswith("s3://")


def update_object(storage: Storage, path: str, change: Callable[[bytes | None], bytes | None]) -> bool:
    """Read ``path``, compute its new bytes with ``change`` (None: leave it), put them only if the
    object is still the version read, and on a lost race do it all again: two writers of one
    object (a ``_meta`` record, a state document) never lose each other's change. Returns
    whether it wrote.

    Raises:
        LakeError: :data:`MAX_ATTEMPTS` races lost in a row, or the store failed.
    """
    for attempt in range(MAX_ATTEMPTS):
        read = storage.read(path)
        data, version = (None, None) if read is None else read
        new = change(data)
        if new is None:
            return False
        try:
            storage.put_if(path, new, version)
            return True
        except VersionConflict:
            time.sleep(min(0.5, 0.005 * 2**attempt) * random.random())  # let the winner finish
    raise LakeError(
        f"gave up writing {storage.url}/{path} after {MAX_ATTEMPTS} lost races with other writers"
    )


def open_storage(root: str | Path, environ: Mapping[str, str] | None = None) -> Storage:
    """The storage of a lake root: ``s3://bucket[/prefix]`` or a local folder.

    Raises:
        LakeError: an ``s3://`` root without a bucket, or ``obstore`` is not installed.
    """
    text = str(root)
    if is_object_url(text):
        return ObjectStorage(text, environ if environ is not None else os.environ)
    if not text.strip() or _SCHEME.match(text):
        raise LakeError(f"invalid lake root {text!r}: a local folder or s3://bucket/prefix")
    return LocalStorage(Path(root))


# -- a local folder -------------------------------------------------------------------------


class LocalStorage:
    """A lake in a local folder: atomic puts by temp file, fsync and rename (and an fsync of the
    folder), versions from the file's inode, size and change time.

    A conditional put checks the version and renames; it is atomic against other writers only
    under the lake's writer lock, which every local writer holds (one host, one lock file).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.url = str(self.root)

    def _path(self, path: str) -> Path:
        return self.root.joinpath(*check_path(path).split("/"))

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        found = []
        if base.is_file():
            stat = base.stat()
            return [ObjectInfo(prefix, stat.st_size, _local_version(stat))]
        for folder, _dirs, files in os.walk(base):
            for name in files:
                full = Path(folder) / name
                with contextlib.suppress(FileNotFoundError):
                    stat = full.stat()
                    found.append(
                        ObjectInfo(full.relative_to(self.root).as_posix(), stat.st_size, _local_version(stat))
                    )
        return sorted(found, key=lambda o: o.path)

    def read(self, path: str) -> tuple[bytes, str] | None:
        try:
            with open(self._path(path), "rb") as handle:
                data = handle.read()
                return data, _local_version(os.fstat(handle.fileno()))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LakeError(f"cannot read {self._path(path)}: {exc.strerror or exc}") from None

    def head(self, path: str) -> ObjectInfo | None:
        try:
            stat = self._path(path).stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LakeError(f"cannot read {self._path(path)}: {exc.strerror or exc}") from None
        return ObjectInfo(path, stat.st_size, _local_version(stat))

    def read_range(self, path: str, start: int, end: int) -> bytes:
        _check_range(path, start, end)
        try:
            with open(self._path(path), "rb") as handle:
                handle.seek(start)
                return handle.read(end - start)
        except OSError as exc:
            raise LakeError(f"cannot read {self._path(path)}: {exc.strerror or exc}") from None

    def put(self, path: str, data: bytes) -> str:
        target = self._path(path)
        try:
            write_bytes_atomic(target, data)  # temp file, fsync, rename
            fsync_dir(target.parent)  # and the rename itself survives a power cut
            return _local_version(target.stat())
        except OSError as exc:
            raise LakeError(f"cannot write {target}: {exc.strerror or exc}") from None

    def put_if(
        self, path: str, data: bytes, version: str | None, metadata: Mapping[str, str] | None = None
    ) -> str:
        target = self._path(path)
        try:
            current = _local_version(target.stat())
        except FileNotFoundError:
            current = None
        if current != version:
            raise VersionConflict(path)
        return self.put(path, data)

    def delete(self, path: str) -> None:
        try:
            self._path(path).unlink(missing_ok=True)
        except OSError as exc:
            raise LakeError(f"cannot delete {self._path(path)}: {exc.strerror or exc}") from None


def check_prefix(url: str) -> str:
    """``url`` if it is ``s3://bucket[/prefix]`` with a valid bucket and a prefix of plain segments.

    Raises:
        LakeError: a bad bucket name, credentials in the URL, an empty (``//``), ``.`` or ``..``
            segment, a query or a fragment.
    """
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise LakeError(
            "invalid lake URL: no credentials in it; use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    if not is_bucket_name(parts.netloc):
        raise LakeError(
            f"invalid lake URL {url!r}: {parts.netloc!r} is not a bucket name (3-63 lowercase "
            "letters, digits, . or -)"
        )
    segments = parts.path.strip("/").split("/") if parts.path.strip("/") else []
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise LakeError(f"invalid lake URL {url!r}: no ?query or #fragment in s3://bucket/prefix")
    if any(seg in ("", ".", "..") for seg in segments):
        raise LakeError(f"invalid lake URL {url!r}: the prefix has an empty, . or .. segment")
    return url


def check_path(path: str) -> str:
    """``path`` if it names an object under the root: relative, ``/``-separated, no empty,
    ``.`` or ``..`` segment, no control character.

    Raises:
        LakeError: it does not.
    """
    parts = path.split("/")
    if (
        not path
        or any(p in ("", ".", "..") for p in parts)
        or any(ord(ch) < 32 or ch in "\\\x7f" for ch in path)
    ):
        raise LakeError(f"invalid lake path {path!r}: a relative path such as klines/.../data.parquet")
    return path


def _check_range(path: str, start: int, end: int) -> None:
    if not 0 <= start <= end:
        raise LakeError(f"invalid byte range [{start}, {end}) of {path!r}")


def _local_version(stat: os.stat_result) -> str:
    return f"{stat.st_ino}-{stat.st_size}-{stat.st_mtime_ns}-{stat.st_ctime_ns}"


def _checked_endpoint(environ: Mapping[str, str]) -> Any:
    """``AWS_ENDPOINT_URL`` split, if it is an http(s) URL with a host and a valid port.

    Raises:
        LakeError: it is not (obstore would panic on some of these).
    """
    text = environ.get("AWS_ENDPOINT_URL", "")
    if "AWS_ENDPOINT_URL" in environ and not text.strip():
        raise LakeError("AWS_ENDPOINT_URL is empty: unset it for AWS, or give http(s)://host[:port]")
    bad = LakeError("AWS_ENDPOINT_URL must be http(s)://host[:port] (such as http://127.0.0.1:9000)")
    try:
        endpoint = urlsplit(text)
        port = endpoint.port  # ValueError for a port that is not one
    except ValueError:
        raise bad from None
    if text and (
        endpoint.scheme not in ("http", "https")
        or not endpoint.hostname
        or endpoint.query
        or endpoint.fragment
        or any(ch.isspace() for ch in text)
        or (port is not None and not 0 < port < 65536)
    ):
        raise bad
    return endpoint


def _guarded(make: Callable[[], Any], action: str) -> Any:
    """``make()``, with obstore's configuration errors (and panics) as one line."""
    try:
        return make()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - a Rust panic is a BaseException
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LakeError(f"cannot {action}: {text[:200]}") from None


#: What to do about S3's commonest refusals.
_HINTS = {
    "NoSuchBucket": ": the bucket does not exist (create it, or check the URL and AWS_ENDPOINT_URL)",
    "InvalidAccessKeyId": ": check AWS_ACCESS_KEY_ID",
    "SignatureDoesNotMatch": ": check AWS_SECRET_ACCESS_KEY",
    "AccessDenied": ": the credentials may not do this",
}


# -- S3-compatible object storage ------------------------------------------------------------


class ObjectStorage:
    """A lake in an S3-compatible bucket (``s3://bucket/prefix``), through ``obstore``.

    A put is one ``PUT`` (S3 makes an object visible whole or not at all); a conditional put
    sends ``If-Match: <etag>`` or ``If-None-Match: *`` and a lost race is a
    :class:`VersionConflict`.
    """

    def __init__(self, url: str, environ: Mapping[str, str]) -> None:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise LakeError(f"invalid lake URL {url!r}: expected s3://bucket/prefix")
        check_prefix(url)
        try:
            from obstore.store import S3Store
        except ImportError:
            raise LakeError("an s3:// lake needs obstore: pip install 'cryptolake[s3]'") from None
        self.url = url.rstrip("/")
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        config: dict[str, Any] = {}
        names = {
            "AWS_ENDPOINT_URL": "endpoint",
            "AWS_ACCESS_KEY_ID": "access_key_id",
            "AWS_SECRET_ACCESS_KEY": "secret_access_key",
            "AWS_SESSION_TOKEN": "session_token",
            "AWS_DEFAULT_REGION": "region",
            "AWS_REGION": "region",
        }
        for variable, key in names.items():
            if environ.get(variable):
                config[key] = environ[variable]
        client: dict[str, Any] = {}
        if environ.get("AWS_ALLOW_HTTP", "").lower() in ("1", "true", "yes"):
            client["allow_http"] = True
        if "region" not in config:
            config["region"] = "us-east-1"
        endpoint = _checked_endpoint(environ)
        if bool(config.get("access_key_id")) != bool(config.get("secret_access_key")):
            raise LakeError(
                "set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or neither, for an instance role)"
            )
        if endpoint.scheme == "http" and not client.get("allow_http"):
            raise LakeError(
                "AWS_ENDPOINT_URL is an http:// URL: set AWS_ALLOW_HTTP=true to allow an unencrypted endpoint"
            )
        self._secrets = [
            str(v)
            for v in (config.get("access_key_id"), config.get("secret_access_key"), config.get("session_token"),
                      endpoint.username, endpoint.password)
            if v and len(str(v)) >= 4  # shorter: not a real credential, and masking it would garble the text
        ]  # fmt: skip
        self._config = dict(config)
        self._allow_http = bool(client.get("allow_http"))
        config["conditional_put"] = "etag"
        client.setdefault("connect_timeout", "5s")
        self._store = _guarded(
            lambda: S3Store(
                self.bucket,
                prefix=self.prefix or None,
                config=config,  # type: ignore[arg-type]  # built from the environment, keys checked above
                client_options=client,  # type: ignore[arg-type]
                # A store that does not answer fails a command within half a minute, not obstore's 3.
                retry_config={"max_retries": 4, "retry_timeout": timedelta(seconds=30)},
            ),
            "configure the S3 store",
        )

    def _where(self, path: str) -> str:
        return f"{self.url}/{path}"

    def url_of(self, path: str) -> str:
        """The ``s3://bucket/prefix/path`` URL of an object, as other readers name it."""
        return f"{self.url}/{path}" if path else self.url

    def polars_options(self) -> dict[str, str]:
        """``storage_options`` for ``polars.scan_parquet`` (polars reads S3 with object_store too)."""
        names = {
            "endpoint": "aws_endpoint_url",
            "access_key_id": "aws_access_key_id",
            "secret_access_key": "aws_secret_access_key",
            "session_token": "aws_session_token",
            "region": "aws_region",
        }
        options = {names[k]: str(v) for k, v in self._config.items() if k in names}
        if self._allow_http:
            options["aws_allow_http"] = "true"
        return options

    def arrow_filesystem(self) -> Any:
        """A ``pyarrow.fs.S3FileSystem`` on the same endpoint and credentials (paths ``bucket/key``)."""
        from pyarrow import fs

        c = self._config
        return fs.S3FileSystem(
            access_key=c.get("access_key_id"),
            secret_key=c.get("secret_access_key"),
            session_token=c.get("session_token"),
            region=c.get("region"),
            endpoint_override=c.get("endpoint"),
            scheme="http" if self._allow_http else "https",
        )

    def arrow_path(self, path: str) -> str:
        """An object's path as :meth:`arrow_filesystem` names it (``bucket/prefix/path``)."""
        return "/".join(p for p in (self.bucket, self.prefix, path) if p)

    def fsspec_filesystem(self) -> Any:
        """An fsspec filesystem for ``s3://`` on the same endpoint and credentials (obstore's),
        for DuckDB's ``register_filesystem`` where its httpfs extension is not installed."""
        try:
            import fsspec
            import obstore.fsspec
        except ImportError:
            raise LakeError("querying an s3:// lake needs fsspec: pip install 'cryptolake[s3]'") from None
        obstore.fsspec.register("s3")
        config = {k: v for k, v in self._config.items()}
        client = {"allow_http": True} if self._allow_http else {}
        return fsspec.filesystem("s3", config=config, client_options=client, skip_instance_cache=True)

    def _fail(self, action: str, path: str, exc: BaseException) -> LakeError:
        full = str(exc)
        code = re.search(r"<Code>([A-Za-z]+)</Code>", full)
        status = re.search(r"status code: (\d{3})|Status \{\s*status: (\d{3})", full)
        if code is not None:  # S3's own answer: its error code says it best
            number = next((g for g in status.groups() if g), "") if status is not None else ""
            text = code.group(1) + (f" (HTTP {number})" if number else "")
            text += _HINTS.get(code.group(1), "")
        elif "169.254.169.254" in full:  # obstore fell back to the instance metadata service
            text = "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or run with an instance role)"
        elif "403" in full or "lacked the necessary privileges" in full:
            text = "access denied (HTTP 403): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        else:
            text = full.strip().splitlines()[0] if full.strip() else type(exc).__name__
        for secret in self._secrets:  # an endpoint with user:password@, a key echoed back
            text = text.replace(secret, "***")
        return LakeError(f"cannot {action} {self._where(path)}: {text[:300]}")

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        import obstore

        try:
            found = [
                ObjectInfo(
                    str(meta["path"]), int(meta["size"]), str(meta.get("e_tag") or meta["last_modified"])
                )
                for batch in obstore.list(self._store, prefix=prefix or None)
                for meta in batch
            ]
        except Exception as exc:  # noqa: BLE001 - obstore's errors, as one line
            raise self._fail("list", prefix, exc) from None
        return sorted(found, key=lambda o: o.path)

    def holds_any(self, prefix: str) -> bool:
        """Whether any object is under ``prefix`` (one small listing, not the whole prefix)."""
        import obstore

        try:
            for batch in obstore.list(self._store, prefix=prefix or None, chunk_size=1):
                if batch:
                    return True
        except Exception as exc:  # noqa: BLE001
            raise self._fail("list", prefix, exc) from None
        return False

    def folders(self, prefix: str) -> builtins.list[str]:
        """The names of the "folders" right under ``prefix`` (a listing with a delimiter)."""
        import obstore

        try:
            found = obstore.list_with_delimiter(self._store, prefix=prefix or None)
        except Exception as exc:  # noqa: BLE001
            raise self._fail("list", prefix, exc) from None
        return sorted(str(p).rstrip("/").rpartition("/")[2] for p in found["common_prefixes"])

    def read(self, path: str) -> tuple[bytes, str] | None:
        import obstore
        from obstore.exceptions import NotFoundError

        check_path(path)
        try:
            result = obstore.get(self._store, path)
            data = bytes(result.bytes())
            return data, str(result.meta.get("e_tag"))
        except (NotFoundError, FileNotFoundError):
            return None
        except Exception as exc:  # noqa: BLE001
            raise self._fail("read", path, exc) from None

    def head(self, path: str) -> ObjectInfo | None:
        import obstore
        from obstore.exceptions import NotFoundError

        check_path(path)
        try:
            meta = obstore.head(self._store, path)
        except (NotFoundError, FileNotFoundError):
            return None
        except Exception as exc:  # noqa: BLE001
            raise self._fail("read", path, exc) from None
        return ObjectInfo(path, int(meta["size"]), str(meta.get("e_tag") or meta["last_modified"]))

    def read_range_and_metadata(self, path: str, start: int, end: int) -> tuple[bytes, dict[str, str]]:
        """:meth:`read_range`, with the object's user metadata (one request)."""
        import obstore

        check_path(path)
        _check_range(path, start, end)
        try:
            result = obstore.get(self._store, path, options={"range": (start, end)})
            return bytes(result.bytes()), {str(k): str(v) for k, v in result.attributes.items()}
        except Exception as exc:  # noqa: BLE001
            raise self._fail("read", path, exc) from None

    def read_range(self, path: str, start: int, end: int) -> bytes:
        import obstore

        check_path(path)
        _check_range(path, start, end)
        try:
            return bytes(obstore.get_range(self._store, path, start=start, end=end))
        except Exception as exc:  # noqa: BLE001
            raise self._fail("read", path, exc) from None

    def put(self, path: str, data: bytes) -> str:
        import obstore

        check_path(path)
        try:
            result = obstore.put(self._store, path, data, mode="overwrite", use_multipart=False)
        except Exception as exc:  # noqa: BLE001
            raise self._fail("write", path, exc) from None
        return str(result.get("e_tag"))

    def put_if(
        self, path: str, data: bytes, version: str | None, metadata: Mapping[str, str] | None = None
    ) -> str:
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        check_path(path)
        mode: Any = "create" if version is None else {"e_tag": version}
        try:
            result = obstore.put(
                self._store, path, data, mode=mode, use_multipart=False, attributes=dict(metadata or {})
            )
        except (AlreadyExistsError, PreconditionError):
            raise VersionConflict(self._where(path)) from None
        except Exception as exc:  # noqa: BLE001
            if "409" in str(exc) or "ConditionalRequestConflict" in str(exc):
                raise VersionConflict(self._where(path)) from None  # S3: a concurrent conditional write
            raise self._fail("write", path, exc) from None
        return str(result.get("e_tag"))

    def delete(self, path: str) -> None:
        import obstore

        check_path(path)
        try:
            obstore.delete(self._store, path)
        except FileNotFoundError:
            return
        except Exception as exc:  # noqa: BLE001
            raise self._fail("delete", path, exc) from None
