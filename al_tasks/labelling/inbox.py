"""The bucket side of labelling: file names, and a round's ingest from the inbox.

Names
    A round's labelled file is ``<inbox>/<task>/round-<n>.csv`` (or ``.xlsx``) or what
    spreadsheets make of that name on "save as" (``Round-1 (1).CSV``,
    ``round-1_labelled.xlsx``, ...): :func:`match_inbox_key` is the rule,
    :func:`inbox_key_regex` the same rule for the sensor (one rule, so the sensor never
    fires on a key the ingest would not take).

Ingest (:func:`ingest_round`), given a boto3 S3 client
    pick the newest matching inbox file (on a re-run whose file was already moved, the
    one in ``<processed>/<task>/``), download it, check it (:func:`read_labelled_file`),
    append the accepted labels to the store as round ``n`` (idempotent per file hash),
    write refused rows to the rejects log and to ``<rejects>/<task>/round-<n>.csv``, and
    move the file to ``<processed>/<task>/``. Every step is safe to repeat.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from al_tasks.config import LoopConfig
from al_tasks.errors import InputFileNotFoundError, LabelFileError
from al_tasks.io import s3
from al_tasks.io.people_csv import people_csv_bytes
from al_tasks.labelling.ingest import LabelledFile, read_labelled_file
from al_tasks.labelling.rejects import write_rejects
from al_tasks.workspace import TaskWorkspace

log = logging.getLogger(__name__)


# --- names ----------------------------------------------------------------------------------
def accepted_inbox_names(round_number: int) -> list[str]:
    """Examples of file names accepted as round ``round_number``'s labelled file.

    The rule (:func:`match_inbox_key`): case-insensitive, starts with ``round-<n>``
    followed by a non-digit (so round 1 never takes ``round-10.csv``), ends with ``.csv``
    or ``.xlsx``, directly in the task's inbox folder (not in a sub-folder).
    """
    n = int(round_number)
    return [
        f"round-{n}.csv",
        f"round-{n} (1).csv",
        f"round-{n}-labelled.csv",
        f"round-{n}_labelled.csv",
        f"Round-{n}.CSV",
        f"round-{n} - Sheet1.csv",
        f"round-{n}.csv.csv",
        f"round-{n}.xlsx",
        f"Round-{n} (1).XLSX",
    ]


def _inbox_name_regex(round_number: int) -> str:
    return rf"round-{int(round_number)}(?!\d)[^/]*\.(?:csv|xlsx)"


def match_inbox_key(key: str, round_number: int, prefix: str | None = None) -> bool:
    """True if ``key`` is a labelled file of ``round_number`` (:func:`inbox_key_regex`).

    ``prefix`` (the task's inbox or processed folder) given: the key must be a file
    directly in that folder, exactly what the sensor waits for. None: only the part
    after the last ``/`` is looked at (a local path). Spreadsheet lock files
    (``~$round-1.csv``, ``.~lock.round-1.csv#``) do not match.
    """
    if prefix is None:
        prefix, key = "", str(key).rsplit("/", 1)[-1]
    return re.match(inbox_key_regex(round_number, prefix), str(key)) is not None


def matching_inbox_keys(keys: Iterable[str], round_number: int, prefix: str | None = None) -> list[str]:
    """The keys among ``keys`` that :func:`match_inbox_key` accepts, in the given order."""
    return [k for k in keys if match_inbox_key(k, round_number, prefix)]


def inbox_key_regex(round_number: int, prefix: str = "") -> str:
    """The rule of :func:`match_inbox_key` as the pattern of ``S3KeySensor(use_regex=True)``
    (``re.match`` on the whole key; ``prefix`` is matched literally).
    """
    return f"{re.escape(prefix)}(?i:{_inbox_name_regex(round_number)})$"


def regex_literal_prefix(pattern: str) -> str:
    """The fixed text every key matching ``pattern`` starts with (a listing can be limited
    to it): for :func:`inbox_key_regex` the task's inbox folder.

    >>> regex_literal_prefix(inbox_key_regex(1, "inbox/t-1/"))
    'inbox/t-1/'
    """
    prefix: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern) and not pattern[i + 1].isalnum():
            prefix.append(pattern[i + 1])
            i += 2
            continue
        if ch in "*?{":  # the character before is optional or repeated
            prefix = prefix[:-1]
        if ch in ".^$*+?{}[]|()\\":
            break
        prefix.append(ch)
        i += 1
    return "".join(prefix)


# --- finding and fetching -------------------------------------------------------------------------
def newest_matching(client: Any, bucket: str, prefix: str, round_number: int) -> tuple[str | None, list[str]]:
    """(newest key under ``prefix`` naming round ``round_number``'s file, the other matches)."""
    objects = {obj["Key"]: obj for obj in s3.list_objects(client, bucket, prefix)}
    keys = matching_inbox_keys(sorted(objects), round_number, prefix)
    if not keys:
        return None, []
    keys.sort(key=lambda k: (objects[k]["LastModified"], k), reverse=True)
    return keys[0], keys[1:]


def find_labelled_file(client: Any, config: LoopConfig, round_number: int) -> tuple[str, bool, list[str]]:
    """(key of round ``n``'s labelled file, True if it is already in processed/, ignored keys)."""
    bucket = config.bucket
    inbox, processed = config.task_prefix("inbox_prefix"), config.task_prefix("processed_prefix")
    key, others = newest_matching(client, bucket, inbox, round_number)
    if key is not None:
        return key, False, others
    key, others = newest_matching(client, bucket, processed, round_number)
    if key is None:
        raise InputFileNotFoundError(
            f"no labelled file for round {round_number} in s3://{bucket}/{inbox} (nor in s3://{bucket}/{processed}): "
            f"upload it as s3://{bucket}/{inbox}round-{round_number}.csv"
        )
    log.info(
        "re-run: the labelled file of round %s was already moved to s3://%s/%s; reading it from there",
        round_number,
        bucket,
        key,
    )
    return key, True, others


def query_ids_of_round(client: Any, config: LoopConfig, round_number: int) -> list[str]:
    """The ids the labeller was asked about: the round's manifest (workspace copy, else
    the one in the outbox).
    """
    local = TaskWorkspace(config).round_dir(round_number) / "manifest.json"
    if local.exists():
        return json.loads(local.read_text())["ids"]
    key = outbox_keys(config, round_number)[1]
    if not s3.object_exists(client, config.bucket, key):
        raise InputFileNotFoundError(
            f"no manifest for round {round_number}: neither {local} nor "
            f"s3://{config.bucket}/{key} exists; re-run the round's query"
        )
    return json.loads(s3.read_bytes(client, config.bucket, key))["ids"]


def outbox_keys(config: LoopConfig, round_number: int) -> tuple[str, str]:
    """S3 keys of a round's query set and its manifest in the outbox."""
    base = config.task_prefix("outbox_prefix") + f"round-{int(round_number)}"
    return f"{base}.csv", f"{base}.manifest.json"


# --- the round's ingest ------------------------------------------------------------------------
def check_labelled_file(client: Any, config: LoopConfig, round_number: int, key: str) -> LabelledFile:
    """Download ``key`` into the round's folder and check it against the round's query set.

    A file over ``max_label_file_mb`` is refused before it is downloaded; one with more
    rows than :meth:`LoopConfig.label_file_row_limit` while it is read.
    """
    source = f"s3://{config.bucket}/{key}"
    max_bytes = int(config.max_label_file_mb * 1e6)
    query_ids = query_ids_of_round(client, config, round_number)
    local = TaskWorkspace(config).labelled_file_path(round_number, PurePosixPath(key).name)
    try:
        size = s3.object_size(client, config.bucket, key)
        if size > max_bytes:
            raise LabelFileError(
                f"{source}: the file is {size / 1e6:.1f} MB, over the limit of {config.max_label_file_mb:g} MB "
                "(setting max_label_file_mb); it was not read. A labelled query set is far smaller: "
                "check that this is the right file, or raise the limit"
            )
        # Bytes as they are, streamed to disk: a file with bad bytes must reach the checks undecoded.
        s3.download_file(client, config.bucket, key, local)
        return read_labelled_file(
            local,
            query_ids=query_ids,
            classes=config.classes,
            source_name=source,
            max_bytes=max_bytes,
            max_rows=config.label_file_row_limit(len(query_ids)),
        )
    except LabelFileError as exc:
        raise LabelFileError(
            f"{exc}. Fix the file, upload it again to s3://{config.bucket}/"
            f"{config.task_prefix('inbox_prefix')} and clear the ingest task of this run"
        ) from None


def record_rejects(client: Any, config: LoopConfig, round_number: int, parsed: LabelledFile) -> str | None:
    """Write a file's refused rows to the rejects log and the bucket; returns their S3 URI."""
    if not len(parsed.rejects):
        return None
    source = parsed.source_name
    write_rejects(
        parsed.rejects,
        TaskWorkspace(config).rejects_path,
        source=source,
        round_number=round_number,
        source_sha256=parsed.source_sha256,
    )
    key = config.task_prefix("rejects_prefix") + f"round-{int(round_number)}.csv"
    for_people = parsed.rejects.assign(source=source, source_sha256=parsed.source_sha256)
    s3.write_bytes(client, config.bucket, key, people_csv_bytes(for_people), content_type="text/csv")
    for row in parsed.rejects.head(20).itertuples(index=False):
        log.warning("rejected %s line %s (id %r, label %r): %s", source, row.line, row.id, row.label, row.reason)
    return f"s3://{config.bucket}/{key}"


def ingest_round(client: Any, config: LoopConfig, round_number: int) -> dict:
    """Ingest round ``round_number``'s labelled file from the inbox (see the module docstring).

    Returns (JSON-able) the file's counts (:meth:`LabelledFile.summary`) plus ``round``,
    ``added_to_store``, ``rejects_uri``, ``processed_uri``, ``ignored_files``, ``re_run``.
    """
    key, already_processed, others = find_labelled_file(client, config, round_number)
    bucket = config.bucket
    for other in others:
        log.warning(
            "ignoring s3://%s/%s: s3://%s/%s is newer and is the one used for round %s",
            bucket,
            other,
            bucket,
            key,
            round_number,
        )
    parsed = check_labelled_file(client, config, round_number, key)
    for warning in parsed.warnings:
        log.warning("%s", warning)
    added = TaskWorkspace(config).store.append(
        parsed.accepted, round_number=round_number, source=parsed.source_name, source_sha256=parsed.source_sha256
    )
    rejects_uri = record_rejects(client, config, round_number, parsed)
    processed_uri = parsed.source_name
    if not already_processed:
        processed_uri = s3.move_object(
            client, bucket, key, config.task_prefix("processed_prefix") + PurePosixPath(key).name
        )
    summary = {
        **parsed.summary(),
        "round": int(round_number),
        "added_to_store": added,
        "rejects_uri": rejects_uri,
        "processed_uri": processed_uri,
        "ignored_files": [f"s3://{bucket}/{k}" for k in others],
        "re_run": already_processed,
    }
    log.info(
        "round %s labels from %s: %s accepted (%s new in the store), %s left blank, %s rejected%s",
        round_number,
        parsed.source_name,
        summary["accepted"],
        added,
        summary["skipped"],
        summary["rejected"],
        f" (see {rejects_uri})" if rejects_uri else "",
    )
    return summary


# --- the round's query set out -------------------------------------------------------------------
def export_round(client: Any, config: LoopConfig, round_number: int, *, query_csv: str, manifest: str) -> dict:
    """Upload a round's query set to ``<outbox>/<task>/round-<n>.csv``, the workbook
    written next to it (``.xlsx``, when there is one) as ``round-<n>.xlsx`` and the
    manifest as ``round-<n>.manifest.json`` (manifest first: whoever sees the query set
    can rely on the manifest).

    Re-running overwrites them. Returns ``{"query_csv_uri", "query_xlsx_uri" (None
    without a workbook), "manifest_uri", "items", "inbox", "expected_name"}``.
    """
    csv_key, manifest_key = outbox_keys(config, round_number)
    xlsx_key = csv_key.removesuffix(".csv") + ".xlsx"
    workbook = Path(query_csv).with_suffix(".xlsx")
    bucket = config.bucket
    s3.upload_file(client, manifest, bucket, manifest_key)
    xlsx_uri = s3.upload_file(client, workbook, bucket, xlsx_key) if workbook.exists() else None
    s3.upload_file(client, query_csv, bucket, csv_key)
    items = len(json.loads(Path(manifest).read_text(encoding="utf-8"))["ids"])
    result = {
        "query_csv_uri": f"s3://{bucket}/{csv_key}",
        "query_xlsx_uri": xlsx_uri,
        "manifest_uri": f"s3://{bucket}/{manifest_key}",
        "items": items,
        "inbox": f"s3://{bucket}/{config.task_prefix('inbox_prefix')}",
        "expected_name": f"round-{int(round_number)}.csv",
    }
    log.info(
        "query set of round %s: %s and %s (%s items); waiting for the labelled file (.csv or .xlsx) as %s%s",
        round_number,
        result["query_csv_uri"],
        xlsx_uri or "no workbook",
        items,
        result["inbox"],
        result["expected_name"],
    )
    return result


def already_ingested(client: Any, config: LoopConfig, round_number: int) -> str | None:
    """The URI of round ``n``'s labelled file if it was already ingested (moved to
    ``<processed>/<task>/``), else None.
    """
    key, _ = newest_matching(client, config.bucket, config.task_prefix("processed_prefix"), round_number)
    return f"s3://{config.bucket}/{key}" if key else None
