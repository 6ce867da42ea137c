"""One suite, two backends: the local folder and S3 (moto)."""

import hashlib
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from services.core.storage import LocalStorage, Storage
from services.core.storage.s3 import S3Storage
from tests.conftest import moto_storage


@pytest.fixture(params=["local", "s3"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    if request.param == "local":
        yield LocalStorage(tmp_path / "objects")
    else:
        endpoint = request.getfixturevalue("moto_endpoint")
        async with moto_storage(endpoint, request.getfixturevalue("s3_bucket")) as s3:
            yield s3


async def read_all(storage: Storage, key: str) -> bytes:
    return b"".join([chunk async for chunk in storage.read(key)])


async def test_a_30_mb_file_written_in_pieces_round_trips_byte_exact(storage: Storage) -> None:
    data = os.urandom(30 * 1024 * 1024 + 12_345)  # six 5 MiB parts and a tail on S3
    async with storage.writer("acme/exports/j1/big.bin") as upload:
        for offset in range(0, len(data), 777_777):
            await upload.write(data[offset : offset + 777_777])
    assert upload.result is not None
    assert upload.result.size == len(data)
    assert upload.result.sha256 == hashlib.sha256(data).hexdigest()
    stored = await read_all(storage, "acme/exports/j1/big.bin")
    assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(data).hexdigest()
    stat = await storage.stat("acme/exports/j1/big.bin")
    assert stat is not None
    assert stat.size == len(data)


async def test_a_small_file_and_put_file(storage: Storage, tmp_path: Path) -> None:
    source = tmp_path / "report.csv"
    source.write_bytes(b"a,b\n1,2\n")
    stored = await storage.put_file("acme/imports/j2/source", source, content_type="text/csv")
    assert stored.size == 8
    assert await read_all(storage, "acme/imports/j2/source") == b"a,b\n1,2\n"


async def test_a_failed_upload_leaves_nothing_behind(storage: Storage) -> None:
    async def broken_writer() -> None:
        async with storage.writer("acme/exports/j3/partial.bin") as upload:
            await upload.write(os.urandom(6 * 1024 * 1024))  # past one S3 part
            raise RuntimeError("writer broke")

    with pytest.raises(RuntimeError, match="writer broke"):
        await broken_writer()
    assert await storage.stat("acme/exports/j3/partial.bin") is None
    if isinstance(storage, S3Storage):
        listed = await storage.client.list_multipart_uploads(Bucket=storage.bucket)
        assert listed.get("Uploads", []) == []
    # Nothing stale is left for the cleanup cron either.
    assert await storage.abort_stale_uploads(timedelta(0)) == 0


async def test_an_unfinished_upload_is_aborted_by_the_stale_upload_sweep(storage: Storage) -> None:
    upload = await storage._start("acme/exports/j4/orphan.bin", "application/octet-stream")
    await upload.write(os.urandom(6 * 1024 * 1024))  # a worker died here
    if isinstance(storage, LocalStorage):  # moto reports every upload as initiated in 2010
        assert await storage.abort_stale_uploads(timedelta(hours=1)) == 0  # too young
    assert await storage.abort_stale_uploads(timedelta(0)) == 1
    assert await storage.stat("acme/exports/j4/orphan.bin") is None


async def test_delete_and_delete_prefix(storage: Storage) -> None:
    for name in ("a", "b", "c"):
        async with storage.writer(f"acme/exports/j5/{name}") as upload:
            await upload.write(b"x")
    async with storage.writer("acme/exports/j6/keep") as upload:
        await upload.write(b"y")
    await storage.delete("acme/exports/j5/a")
    await storage.delete("acme/exports/j5/never-existed")
    assert await storage.stat("acme/exports/j5/a") is None
    assert await storage.delete_prefix("acme/exports/j5/") == 2
    assert await storage.stat("acme/exports/j5/b") is None
    assert await read_all(storage, "acme/exports/j6/keep") == b"y"


async def test_reading_a_missing_key_raises_file_not_found(storage: Storage) -> None:
    with pytest.raises(FileNotFoundError):
        await read_all(storage, "acme/exports/none")


async def test_check_passes_on_a_working_storage(storage: Storage) -> None:
    await storage.check()


async def test_local_keys_cannot_escape_the_root(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "objects")
    for key in ("../etc/passwd", "/abs", "a/../../b", ".uploads/x"):
        with pytest.raises(ValueError, match="invalid storage key"):
            storage.path(key)


async def test_local_storage_serves_files_itself(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "objects")
    url = await storage.presigned_url("k", expires_in=60, filename="a.csv", content_type="text/csv")
    assert url is None


async def test_s3_presigned_url_expires_and_names_the_file(s3_storage: S3Storage) -> None:
    async with s3_storage.writer("acme/exports/j7/orders.csv") as upload:
        await upload.write(b"id\n1\n")
    url = await s3_storage.presigned_url(
        "acme/exports/j7/orders.csv",
        expires_in=900,
        filename="Bestellungen März.csv",
        content_type="text/csv",
    )
    assert url is not None
    query = parse_qs(urlparse(url).query)
    assert query["X-Amz-Expires"] == ["900"]  # moto does not enforce expiry: read it from the URL
    assert "X-Amz-Signature" in query
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    assert response.status_code == 200
    assert response.content == b"id\n1\n"
    disposition = response.headers["content-disposition"]
    assert 'filename="Bestellungen M_rz.csv"' in disposition
    assert "filename*=UTF-8''Bestellungen%20M%C3%A4rz.csv" in disposition


async def test_s3_download_links_use_the_public_endpoint_browsers_reach(
    moto_endpoint: str, s3_bucket: str
) -> None:
    # The workers reach moto as 127.0.0.1; browsers, say, as localhost (compose: minio:9000
    # inside, localhost:9000 from the host). The link must name the browsers' host.
    public = moto_endpoint.replace("127.0.0.1", "localhost")
    async with moto_storage(moto_endpoint, s3_bucket):
        pass
    async with S3Storage.connect(
        bucket=s3_bucket,
        endpoint_url=moto_endpoint,
        access_key_id="testing",
        secret_access_key="testing",
        public_url=public,
    ) as storage:
        async with storage.writer("acme/exports/j8/orders.csv") as upload:
            await upload.write(b"id\n1\n")
        url = await storage.presigned_url(
            "acme/exports/j8/orders.csv", expires_in=60, filename="o.csv", content_type="text/csv"
        )
    assert url is not None
    assert urlparse(url).netloc == urlparse(public).netloc
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    assert response.status_code == 200
    assert response.content == b"id\n1\n"
