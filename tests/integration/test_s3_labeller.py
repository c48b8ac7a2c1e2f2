"""The S3 helpers and the simulated labeller against a real SeaweedFS server."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from al_tasks.config import PRODUCT_GROUPS, REPO_ROOT, SHIPPED_CORPUS, LoopConfig
from al_tasks.io import s3
from al_tasks.labelling.export import export_query_set
from al_tasks.labelling.ingest import read_labelled_file
from devstack.labeller import answer_query_set, answer_query_set_with_stats, load_truth, run_once

ID, TEXT, TRUTH = "Complaint ID", "Consumer complaint narrative", "Product group"
TASK = "product_group"


@pytest.fixture(scope="module")
def corpus() -> pd.DataFrame:
    return pd.read_csv(SHIPPED_CORPUS, dtype=str, keep_default_na=False, usecols=[ID, TEXT, TRUTH])


@pytest.fixture(scope="module")
def truth() -> dict[str, str]:
    return load_truth(str(SHIPPED_CORPUS), id_column=ID, label_column=TRUTH)


def export_round(corpus: pd.DataFrame, tmp_path, round_number: int, n: int = 200) -> tuple[pd.DataFrame, bytes]:
    """Export ``n`` real complaints as round ``round_number``'s query set; (rows, csv bytes)."""
    rows = corpus.sample(n, random_state=round_number).reset_index(drop=True)
    query_df = pd.DataFrame(
        {
            "id": rows[ID].astype("int64").to_numpy(),
            "text": rows[TEXT].to_numpy(),
            "predicted_label": "credit_reporting",
            "confidence": 0.5,
            "score": 0.5,
            "strategy": "margin",
            "round": round_number,
        }
    )
    csv_path = tmp_path / f"round-{round_number}.csv"
    export_query_set(
        query_df,
        csv_path,
        tmp_path / f"round-{round_number}.json",
        round_number=round_number,
        model_version="1",
        strategy="margin",
        task=TASK,
    )
    return rows, csv_path.read_bytes()


def loop_config(server, prefix: str) -> LoopConfig:
    return LoopConfig().with_overrides(
        {
            "s3_endpoint_url": server.endpoint_url,
            "bucket": server.bucket,
            "task": TASK,
            "outbox_prefix": f"{prefix}/outbox",
            "inbox_prefix": f"{prefix}/inbox",
            "processed_prefix": f"{prefix}/processed",
        }
    )


# --- the server and the helpers ------------------------------------------------------------------
def test_server_refuses_wrong_credentials(seaweedfs):
    good = seaweedfs.client()
    s3.write_bytes(good, seaweedfs.bucket, "auth-check.txt", b"ok")
    assert s3.read_bytes(good, seaweedfs.bucket, "auth-check.txt") == b"ok"

    cases = {
        "SignatureDoesNotMatch": s3.s3_client(seaweedfs.endpoint_url, seaweedfs.access_key, "wrong-secret"),
        "InvalidAccessKeyId": s3.s3_client(seaweedfs.endpoint_url, "nobody", seaweedfs.secret_key),
    }
    for code, client in cases.items():
        with pytest.raises(ClientError) as info:
            client.get_object(Bucket=seaweedfs.bucket, Key="auth-check.txt")
        assert info.value.response["Error"]["Code"] == code
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        with pytest.raises(ClientError):
            s3.write_bytes(client, seaweedfs.bucket, "intruder.txt", b"x")
    import boto3
    from botocore import UNSIGNED

    anonymous = boto3.client(
        "s3",
        endpoint_url=seaweedfs.endpoint_url,
        region_name="us-east-1",
        config=Config(signature_version=UNSIGNED, s3={"addressing_style": "path"}),
    )
    with pytest.raises(ClientError) as info:
        anonymous.list_objects_v2(Bucket=seaweedfs.bucket)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert not s3.object_exists(good, seaweedfs.bucket, "intruder.txt")


def test_credentials_fall_back_to_environment(seaweedfs, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.secret_key)
    s3.s3_client(seaweedfs.endpoint_url).head_bucket(Bucket=seaweedfs.bucket)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(ClientError):
        s3.s3_client(seaweedfs.endpoint_url).head_bucket(Bucket=seaweedfs.bucket)


def test_s3_helpers_round_trip(seaweedfs, s3_prefix, tmp_path):
    client, bucket = seaweedfs.client(), seaweedfs.bucket
    local = tmp_path / "round-1.csv"
    local.write_bytes("\ufeffid,label\r\n1,mortgage\r\n".encode("utf-8"))
    assert (
        s3.upload_file(client, local, bucket, f"{s3_prefix}/outbox/t/round-1.csv")
        == f"s3://{bucket}/{s3_prefix}/outbox/t/round-1.csv"
    )
    s3.write_bytes(client, bucket, f"{s3_prefix}/inbox/t/round-1 (1).csv", b"id,label\n1,other\n")
    s3.write_bytes(client, bucket, f"{s3_prefix}/inbox/t/round-10.csv", b"x")
    s3.write_bytes(client, bucket, f"{s3_prefix}/inbox-other/round-1.csv", b"x")

    assert s3.list_keys(client, bucket, f"{s3_prefix}/inbox/t/") == [
        f"{s3_prefix}/inbox/t/round-1 (1).csv",
        f"{s3_prefix}/inbox/t/round-10.csv",
    ]
    downloaded = s3.download_file(client, bucket, f"{s3_prefix}/outbox/t/round-1.csv", tmp_path / "dl" / "x.csv")
    assert downloaded.read_bytes() == local.read_bytes()

    moved = s3.move_object(
        client, bucket, f"{s3_prefix}/inbox/t/round-1 (1).csv", f"{s3_prefix}/processed/t/round-1 (1).csv"
    )
    assert moved == f"s3://{bucket}/{s3_prefix}/processed/t/round-1 (1).csv"
    assert not s3.object_exists(client, bucket, f"{s3_prefix}/inbox/t/round-1 (1).csv")
    assert s3.read_bytes(client, bucket, f"{s3_prefix}/processed/t/round-1 (1).csv") == b"id,label\n1,other\n"
    assert s3.list_keys(client, bucket, f"{s3_prefix}/nothing-here/") == []


def test_list_keys_follows_pagination(seaweedfs, s3_prefix):
    client = seaweedfs.client()
    for i in range(7):
        s3.write_bytes(client, seaweedfs.bucket, f"{s3_prefix}/many/{i:02d}.csv", b"x")
    page_of_three = client.list_objects_v2(Bucket=seaweedfs.bucket, Prefix=f"{s3_prefix}/many/", MaxKeys=3)
    assert page_of_three["IsTruncated"] and len(page_of_three["Contents"]) == 3
    original = client.get_paginator

    def small_pages(name):
        paginator = original(name)
        paginate = paginator.paginate
        paginator.paginate = lambda **kw: paginate(**kw, PaginationConfig={"PageSize": 3})
        return paginator

    client.get_paginator = small_pages
    assert s3.list_keys(client, seaweedfs.bucket, f"{s3_prefix}/many/") == [
        f"{s3_prefix}/many/{i:02d}.csv" for i in range(7)
    ]


# --- the simulated labeller ---------------------------------------------------------------------------------
def test_simulated_labeller_answers_the_outbox_with_ground_truth(seaweedfs, s3_prefix, corpus, tmp_path):
    """``python -m devstack.labeller --once`` answers round 1 and leaves round 2 alone,
    because round 2's answer has already been processed."""
    client, bucket = seaweedfs.client(), seaweedfs.bucket
    rows1, query1 = export_round(corpus, tmp_path, 1)
    _, query2 = export_round(corpus, tmp_path, 2)
    outbox = f"{s3_prefix}/outbox/{TASK}"
    s3.write_bytes(client, bucket, f"{outbox}/round-1.csv", query1)
    s3.write_bytes(client, bucket, f"{outbox}/round-1.json", b"{}")  # manifests are ignored
    s3.write_bytes(client, bucket, f"{outbox}/round-2.csv", query2)
    s3.write_bytes(client, bucket, f"{s3_prefix}/processed/{TASK}/Round-2 (1).CSV", b"id,label\n")

    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": seaweedfs.access_key,
        "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key,
        "AL_OUTBOX_PREFIX": f"{s3_prefix}/outbox",
        "AL_INBOX_PREFIX": f"{s3_prefix}/inbox",
        "AL_PROCESSED_PREFIX": f"{s3_prefix}/processed",
    }
    command = [
        sys.executable,
        "-m",
        "devstack.labeller",
        "--once",
        "--s3-endpoint-url",
        seaweedfs.endpoint_url,
        "--bucket",
        bucket,
        "--task",
        TASK,
        "--corpus-path",
        str(SHIPPED_CORPUS),
        "--label-column",
        TRUTH,
    ]
    done = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    inbox_key = f"{s3_prefix}/inbox/{TASK}/round-1.csv"
    assert done.stdout.splitlines() == [
        f"answered s3://{bucket}/{outbox}/round-1.csv -> s3://{bucket}/{inbox_key}: "
        "200 rows, 200 labelled (0 wrong on purpose), 0 left blank"
    ]
    assert s3.list_keys(client, bucket, f"{s3_prefix}/inbox/") == [inbox_key]

    local = tmp_path / "answer.csv"
    s3.download_file(client, bucket, inbox_key, local)
    result = read_labelled_file(
        local, query_ids=rows1[ID], classes=PRODUCT_GROUPS, source_name=f"s3://{bucket}/{inbox_key}"
    )
    assert result.rejects.empty and result.skipped.empty
    assert result.accepted["id"].tolist() == rows1[ID].tolist()
    assert result.accepted["label"].tolist() == rows1[TRUTH].tolist()

    # Nothing is answered twice.
    again = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stdout == ""


def test_noise_and_partial_are_respected_and_seeded(seaweedfs, s3_prefix, corpus, truth, tmp_path):
    client = seaweedfs.client()
    cfg = loop_config(seaweedfs, s3_prefix)
    rows, query = export_round(corpus, tmp_path, 3)
    s3.write_bytes(client, cfg.bucket, f"{cfg.outbox_prefix}/{TASK}/round-3.csv", query)

    # Too young for a 1-hour delay: left for a later poll.
    assert run_once(client, cfg, truth, delay_seconds=3600, wait_for_delay=False, echo=lambda _: None) == []
    lines: list[str] = []
    written = run_once(client, cfg, truth, noise=0.1, partial=0.2, seed=5, echo=lines.append)
    assert written == [f"{cfg.inbox_prefix}/{TASK}/round-3.csv"]
    assert "200 rows, 160 labelled (16 wrong on purpose), 40 left blank" in lines[0]

    local = s3.download_file(client, cfg.bucket, written[0], tmp_path / "answer.csv")
    result = read_labelled_file(local, query_ids=rows[ID], classes=PRODUCT_GROUPS)
    assert result.rejects.empty  # noisy labels are still valid classes
    assert len(result.skipped) == 40 and len(result.accepted) == 160
    wrong = [label != truth[i] for i, label in zip(result.accepted["id"], result.accepted["label"])]
    assert sum(wrong) == 16

    # The same seed gives the same answer; another seed another one.
    answer = s3.read_bytes(client, cfg.bucket, written[0])
    same = answer_query_set(
        query, truth, noise=0.1, partial=0.2, classes=PRODUCT_GROUPS, rng=np.random.default_rng([5, 3])
    )
    other = answer_query_set(
        query, truth, noise=0.1, partial=0.2, classes=PRODUCT_GROUPS, rng=np.random.default_rng([6, 3])
    )
    assert same == answer and other != answer


def test_answer_keeps_every_other_cell_and_binary_task_uses_rest(corpus, tmp_path):
    rows, query = export_round(corpus, tmp_path, 4, n=120)
    binary = load_truth(str(SHIPPED_CORPUS), id_column=ID, label_column=TRUTH, positive_class="debt_collection")
    answer, stats = answer_query_set_with_stats(
        query, binary, noise=0.0, partial=0.0, classes=("debt_collection", "rest"), rng=np.random.default_rng(0)
    )
    assert stats.rows == 120 and stats.blank == 0 and stats.noisy == 0
    before = pd.read_csv(io.BytesIO(query), dtype=str, keep_default_na=False, encoding="utf-8-sig")
    after = pd.read_csv(io.BytesIO(answer), dtype=str, keep_default_na=False, encoding="utf-8-sig")
    pd.testing.assert_frame_equal(before.drop(columns="label"), after.drop(columns="label"))
    expected = ["debt_collection" if t == "debt_collection" else "rest" for t in rows[TRUTH]]
    assert after["label"].tolist() == expected
    assert 0 < expected.count("debt_collection") < 120

    with pytest.raises(ValueError, match="have no ground truth"):
        answer_query_set(query, {}, noise=0, partial=0, classes=PRODUCT_GROUPS, rng=np.random.default_rng(0))
