"""Small boto3 helpers for the labelling bucket (any S3-compatible store).

Plain functions over a boto3 S3 client; no Airflow import. Argument order follows
boto3's own (``upload_file(path, bucket, key)``, ``download_file(bucket, key, path)``).

    >>> client = s3_client("http://127.0.0.1:8333")          # doctest: +SKIP
    >>> write_bytes(client, "labelling", "outbox/t/round-1.csv", b"id,label\\n")  # doctest: +SKIP
    >>> list_keys(client, "labelling", "outbox/t/")            # doctest: +SKIP
    ['outbox/t/round-1.csv']
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

__all__ = [
    "delete_object",
    "download_file",
    "is_transient_error",
    "list_keys",
    "list_objects",
    "move_object",
    "object_exists",
    "object_size",
    "read_bytes",
    "s3_client",
    "upload_file",
    "write_bytes",
]


def s3_client(
    endpoint_url: str | None,
    access_key: str | None = None,
    secret_key: str | None = None,
    region: str = "us-east-1",
) -> Any:
    """A boto3 S3 client for ``endpoint_url`` with path-style addressing.

    Path-style (``http://host:port/bucket/key``) because S3-compatible stores on
    127.0.0.1 have no per-bucket DNS names. ``access_key``/``secret_key`` default to the
    ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` environment variables (and then to
    boto3's usual credential chain). ``endpoint_url`` None or "" means AWS itself.

    Checksums are only sent when an operation requires them: newer botocore adds
    CRC trailers by default, which not every S3-compatible server accepts.
    """
    config = Config(
        region_name=region,
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url or None,
        aws_access_key_id=access_key or None,
        aws_secret_access_key=secret_key or None,
        region_name=region,
        config=config,
    )


def upload_file(client: Any, local_path: str | os.PathLike, bucket: str, key: str) -> str:
    """Upload the file at ``local_path`` to ``s3://bucket/key``; returns that URI."""
    client.upload_file(str(local_path), bucket, key)
    return f"s3://{bucket}/{key}"


def download_file(client: Any, bucket: str, key: str, local_path: str | os.PathLike) -> Path:
    """Download ``s3://bucket/key`` to ``local_path`` (parent folders created); returns the path."""
    path = Path(local_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    client.download_file(bucket, key, str(path))
    return path


def list_objects(client: Any, bucket: str, prefix: str = "") -> list[dict]:
    """Every object under ``prefix`` as boto3 dicts (``Key``, ``Size``, ``LastModified``, ...),
    sorted by key. Follows pagination, so no 1000-key limit.
    """
    objects: list[dict] = []
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        objects.extend(page.get("Contents", []))
    return sorted(objects, key=lambda obj: obj["Key"])


def list_keys(client: Any, bucket: str, prefix: str = "") -> list[str]:
    """Keys (str) of every object under ``prefix``, sorted."""
    return [obj["Key"] for obj in list_objects(client, bucket, prefix)]


def object_exists(client: Any, bucket: str, key: str) -> bool:
    """True if ``s3://bucket/key`` exists (HEAD succeeds); False on 404."""
    from botocore.exceptions import ClientError

    try:
        client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
            return False
        raise
    return True


def object_size(client: Any, bucket: str, key: str) -> int:
    """Size in bytes of ``s3://bucket/key`` (a HEAD request; nothing is downloaded)."""
    return int(client.head_object(Bucket=bucket, Key=key)["ContentLength"])


def move_object(client: Any, bucket: str, src_key: str, dst_key: str) -> str:
    """Move ``src_key`` to ``dst_key`` inside ``bucket`` (server-side copy, then delete).

    S3 has no rename; the copy happens first, so a failure in between leaves the
    object in both places rather than in neither. Returns ``s3://bucket/dst_key``.
    """
    client.copy_object(Bucket=bucket, Key=dst_key, CopySource={"Bucket": bucket, "Key": src_key})
    client.delete_object(Bucket=bucket, Key=src_key)
    return f"s3://{bucket}/{dst_key}"


def read_bytes(client: Any, bucket: str, key: str) -> bytes:
    """The whole body of ``s3://bucket/key`` as bytes."""
    response = client.get_object(Bucket=bucket, Key=key)
    with response["Body"] as body:
        return body.read()


def write_bytes(client: Any, bucket: str, key: str, data: bytes, content_type: str | None = None) -> str:
    """Store ``data`` at ``s3://bucket/key`` (overwriting); returns that URI."""
    extra = {"ContentType": content_type} if content_type else {}
    client.put_object(Bucket=bucket, Key=key, Body=data, **extra)
    return f"s3://{bucket}/{key}"


def delete_object(client: Any, bucket: str, key: str) -> None:
    """Delete ``s3://bucket/key`` (no error if it is already gone)."""
    client.delete_object(Bucket=bucket, Key=key)


#: S3 error codes that mean "try again later", not "this request is wrong".
TRANSIENT_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "RequestTimeTooSkewed", "Throttling"}
)


def is_transient_error(exc: BaseException) -> bool:
    """True if ``exc`` (from boto3 or aiobotocore) is an outage that may pass: the server
    cannot be reached, the connection broke or timed out, or it answered 5xx / "slow down".

    False for errors a retry cannot fix (wrong credentials, no such bucket, access denied).
    """
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(exc, (ConnectionError, HTTPClientError, TimeoutError, ConnectionRefusedError)):
        return True
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return error.get("Code") in TRANSIENT_CODES or int(status) >= 500
    # aiohttp's connection errors are OSErrors; a missing local file is not an outage.
    return isinstance(exc, OSError) and not isinstance(exc, (FileNotFoundError, PermissionError))
