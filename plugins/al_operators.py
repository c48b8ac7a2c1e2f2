"""Airflow operators of the active-learning loop (one DAG run = one round).

Each operator wraps one ``al_tasks`` function and only translates between Airflow and
``al_tasks``: it reads the round's settings from the DAG Params
(``LoopConfig.from_env().with_overrides(params)``), the upstream results from XCom and
S3 access from the ``al_s3`` connection, calls the plain-Python function, and returns a
small JSON-able dict (its XCom).

    featurize -> seed -> tune -> promote -> plan_round -> query -> export
        -> wait_for_labels (al_sensors.LabelFileSensor) -> ingest_labels
        -> next_round_decision -> trigger_next_round -> loop_status
    promote -> alert_check           (a side branch: a broken alert channel fails the
                                      run visibly but never stalls the labelling)

Heavy libraries (Spark, MLflow, pandas) are imported inside ``execute`` so that parsing
the DAG file stays fast.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import BaseBranchOperator, BaseOperator, TriggerRule
from airflow.sdk.exceptions import AirflowSkipException

from al_tasks.config import LoopConfig

#: The Airflow connection (type ``aws``) of the labelling bucket; its extra carries
#: ``endpoint_url`` for S3-compatible stores such as SeaweedFS.
DEFAULT_S3_CONN_ID = "al_s3"
#: ``s3://<bucket>/<SEED_PREFIX>/<task>/labels.csv`` (and optional ``evaluation.csv``).
SEED_PREFIX = "seed"
#: ``s3://<bucket>/<REJECTS_PREFIX>/<task>/round-<n>.csv``: rows refused at ingest.
REJECTS_PREFIX = "rejects"

# Task ids of the DAG; the operators look each other's XCom up by these names.
FEATURIZE, SEED, TUNE, PROMOTE, ALERT_CHECK = "featurize", "seed", "tune", "promote", "alert_check"
PLAN_ROUND, QUERY, EXPORT, WAIT_FOR_LABELS = "plan_round", "query", "export", "wait_for_labels"
INGEST_LABELS, NEXT_ROUND_DECISION = "ingest_labels", "next_round_decision"
TRIGGER_NEXT_ROUND, LOOP_STATUS = "trigger_next_round", "loop_status"


# --- translation helpers (plain functions, usable without a task context) ------------------
def loop_config(params: Mapping[str, Any]) -> LoopConfig:
    """The round's settings: defaults < ``AL_*`` environment < DAG Params / run conf."""
    return LoopConfig.from_env().with_overrides(dict(params))


def round_number(params: Mapping[str, Any]) -> int:
    """The round this run works on (Param ``round``, >= 1)."""
    raw = params.get("round", 1)
    try:
        number = int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"Param round={raw!r}: must be a whole number >= 1") from None
    if number < 1 or float(raw) != number:
        raise ValueError(f"Param round={raw!r}: must be a whole number >= 1")
    return number


def task_prefix(prefix: str, task: str) -> str:
    """``"<prefix>/<task>/"`` with exactly one slash between the parts."""
    return f"{prefix.strip('/')}/{task}/"


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def outbox_keys(config: LoopConfig, round_number: int) -> tuple[str, str]:
    """S3 keys of a round's query set and its manifest in the outbox."""
    base = task_prefix(config.outbox_prefix, config.task) + f"round-{round_number}"
    return f"{base}.csv", f"{base}.manifest.json"


def next_run_id(loop_id: str, next_round: int) -> str:
    """Run id of round ``next_round`` of the loop ``loop_id``.

    Deterministic, so triggering the same round twice (a cleared, re-run old round)
    hits "run already exists" instead of forking the loop.
    """
    return f"round-{next_round}__{loop_id}"


def stop_reason_before_query(config: LoopConfig, round_number: int, accuracy: float, pool_size: int) -> str | None:
    """Why the loop ends with this round's model (no query set is sent), or None.

    Checked after training, so asking people for labels nobody will use is avoided:
    the target accuracy is reached, this is the last allowed round, or the pool is empty.
    """
    if accuracy >= config.target_accuracy:
        return f"target accuracy reached: {accuracy:.4f} >= target_accuracy {config.target_accuracy:.4f}"
    if round_number >= config.max_rounds:
        return f"max_rounds reached: round {round_number} of {config.max_rounds}"
    if pool_size <= 0:
        return "pool exhausted: every corpus item is labelled or in the evaluation set"
    return None


class LoopOperator(BaseOperator):
    """Base of the loop's operators: config, round number, XCom and S3 helpers."""

    ui_color = "#e8f4fd"

    def __init__(self, *, aws_conn_id: str = DEFAULT_S3_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.aws_conn_id = aws_conn_id

    # -- context -> al_tasks ------------------------------------------------------------
    @staticmethod
    def params_of(context: Mapping[str, Any]) -> dict[str, Any]:
        return {key: context["params"][key] for key in context["params"]}

    def config(self, context: Mapping[str, Any]) -> LoopConfig:
        return loop_config(self.params_of(context))

    def round_of(self, context: Mapping[str, Any]) -> int:
        """This run's round (Param ``round``)."""
        return round_number(self.params_of(context))

    @staticmethod
    def upstream(context: Mapping[str, Any], task_id: str, key: str = "return_value") -> Any:
        """XCom ``key`` of ``task_id`` in this run (None when it did not run)."""
        return context["ti"].xcom_pull(task_ids=task_id, key=key)

    def required_upstream(self, context: Mapping[str, Any], task_id: str) -> dict:
        value = self.upstream(context, task_id)
        if not value:
            raise RuntimeError(f"task {task_id!r} of this run left no result (XCom); run it first")
        return value

    def feature_set(self, context: Mapping[str, Any], config: LoopConfig):
        """The featurize task's feature set (cheap: reads its manifest)."""
        from al_tasks.featurize import FeatureSet
        from al_tasks.rounds import feature_set_for

        featurized = self.upstream(context, FEATURIZE)
        if featurized and Path(featurized["features"], "_SUCCESS").exists():
            return FeatureSet.load(featurized["features"])
        return feature_set_for(config, log=self.log.info)

    def s3_hook(self):
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook(aws_conn_id=self.aws_conn_id)

    def task_states(self, context: Mapping[str, Any], task_ids: Sequence[str]) -> dict[str, str | None]:
        """State of each of ``task_ids`` in this run (XComs of a skipped task may be stale
        after a clear, states are not)."""
        ti = context["ti"]
        run_id = context["run_id"]
        found = ti.get_task_states(dag_id=ti.dag_id, task_ids=list(task_ids), run_ids=[run_id])
        by_task = found.get(run_id, found) if isinstance(found, dict) else {}
        return {task_id: _state_name(by_task.get(task_id)) for task_id in task_ids}


def _state_name(state: Any) -> str | None:
    if state is None:
        return None
    return str(getattr(state, "value", state))


# --- stages -------------------------------------------------------------------------------
class FeaturizeOperator(LoopOperator):
    """Featurize the corpus with Spark; reused as is when corpus and settings are unchanged
    (``al_tasks.featurize`` keys its output by a fingerprint of both)."""

    def execute(self, context):
        from al_tasks.rounds import feature_set_for

        config = self.config(context)
        fs = feature_set_for(config, log=self.log.info)
        return {"features": str(fs.root), "fingerprint": fs.fingerprint, "n_docs": fs.n_docs,
                "reused": fs.reused, "seconds": round(fs.seconds, 1)}


class SeedFromBucketOperator(LoopOperator):
    """Seed the task from ``s3://<bucket>/seed/<task>/labels.csv`` unless already seeded.

    An optional ``evaluation.csv`` beside it becomes the fixed evaluation set; without
    it the workspace holds out ``eval_fraction`` of the seed labels. Idempotent: a
    seeded workspace is left as it is and nothing is downloaded.
    """

    def __init__(self, *, seed_prefix: str = SEED_PREFIX, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seed_prefix = seed_prefix

    def execute(self, context):
        from al_tasks.workspace import TaskWorkspace

        config = self.config(context)
        workspace = TaskWorkspace(config)
        if workspace.is_seeded():
            result = {"seeded": False, "n_train": len(workspace.store), "n_eval": len(workspace.evaluation())}
            self.log.info("task %r is already seeded (%s training labels, %s evaluation labels): nothing to do",
                          config.task, result["n_train"], result["n_eval"])
            return result
        hook = self.s3_hook()
        prefix = task_prefix(self.seed_prefix, config.task)
        labels_key, evaluation_key = prefix + "labels.csv", prefix + "evaluation.csv"
        if not hook.check_for_key(labels_key, config.bucket):
            raise FileNotFoundError(
                f"task {config.task!r} is not seeded and {s3_uri(config.bucket, labels_key)} does not exist: "
                "upload a CSV with columns id,label of randomly chosen corpus items there "
                f"(optionally {evaluation_key.rsplit('/', 1)[-1]} beside it as the fixed evaluation set)"
            )
        local = workspace.root / "seed"
        labels_path = _download(hook, config.bucket, labels_key, local / "labels.csv")
        overrides = {}
        if hook.check_for_key(evaluation_key, config.bucket):
            overrides["eval_labels_path"] = str(_download(hook, config.bucket, evaluation_key, local / "evaluation.csv"))
        seed_config = config.with_overrides(overrides)
        corpus_ids = self.feature_set(context, config).ids()
        result = TaskWorkspace(seed_config).seed(labels_path, corpus_ids, log=self.log.info)
        result["seed_labels"] = s3_uri(config.bucket, labels_key)
        result["evaluation_labels"] = s3_uri(config.bucket, evaluation_key) if overrides else None
        return result


class TrainRoundOperator(LoopOperator):
    """Tune, evaluate on the fixed set, log to MLflow and register (``al_tasks.rounds.train_round``).

    Trains only on labels from rounds before this one, so re-running an old round sees
    the labels it saw the first time.
    """

    def execute(self, context):
        from al_tasks.rounds import train_round

        config = self.config(context)
        number = self.round_of(context)
        return train_round(config, number, feature_set=self.feature_set(context, config), log=self.log.info)


class PromoteModelOperator(LoopOperator):
    """Move the ``champion`` alias to this round's model version when it beats the champion
    on the fixed evaluation set (``al_tasks.tracking.promote_if_better``)."""

    def execute(self, context):
        from al_tasks.tracking import promote_if_better

        config = self.config(context)
        trained = self.required_upstream(context, TUNE)
        result = promote_if_better(config, trained["model_version"], trained["accuracy"])
        if result["promoted"]:
            self.log.info("model version %s is the new champion (accuracy %.4f)", trained["model_version"],
                          trained["accuracy"])
        else:
            self.log.info("champion stays version %s (accuracy %s); this round's version %s scored %.4f",
                          result["champion_version"], result["previous_accuracy"], trained["model_version"],
                          trained["accuracy"])
        return result


class AccuracyAlertOperator(LoopOperator):
    """Check this round's accuracy against the alert rules and deliver the alerts.

    Rules: ``al_tasks.alerts.check_round_accuracy`` against the previous round's
    accuracy (its ``summary.json``); delivery: ``al_notifiers.send_alerts`` on the
    connections ``al_alert_webhook`` / ``al_alert_smtp`` (an undefined one is skipped).
    """

    def __init__(self, *, webhook_conn_id: str | None = "al_alert_webhook",
                 smtp_conn_id: str | None = "al_alert_smtp", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.webhook_conn_id = webhook_conn_id
        self.smtp_conn_id = smtp_conn_id

    def execute(self, context):
        from al_notifiers import send_alerts

        from al_tasks.alerts import check_round_accuracy
        from al_tasks.workspace import TaskWorkspace

        config = self.config(context)
        number = self.round_of(context)
        trained = self.required_upstream(context, TUNE)
        previous = TaskWorkspace(config).read_summary(number - 1) if number > 1 else None
        previous_accuracy = previous.get("accuracy") if previous else None
        alerts = check_round_accuracy(config, number, trained["accuracy"], previous_accuracy)
        for alert in alerts:
            self.log.warning("alert %s: %s", alert.kind, alert.message)
        if not alerts:
            self.log.info("round %s: accuracy %.4f (previous %s) raises no alert", number, trained["accuracy"],
                          "none" if previous_accuracy is None else f"{previous_accuracy:.4f}")
        sent = send_alerts(alerts, webhook_conn_id=self.webhook_conn_id, smtp_conn_id=self.smtp_conn_id,
                           context=context)
        return {"alerts": [dataclasses.asdict(a) for a in alerts], "sent": sent,
                "accuracy": trained["accuracy"], "previous_accuracy": previous_accuracy}


class PlanRoundOperator(BaseBranchOperator, LoopOperator):
    """Decide whether this round asks for labels at all.

    Follows ``query`` unless a stop rule already holds with this round's model (target
    accuracy reached, ``max_rounds`` reached, pool exhausted); then the query, export,
    wait and ingest tasks are skipped and ``next_round_decision`` records the reason.
    The decision is in XCom key ``plan``.
    """

    def __init__(self, *, follow_task_id: str = QUERY, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.follow_task_id = follow_task_id

    def choose_branch(self, context):
        import numpy as np

        from al_tasks.workspace import TaskWorkspace

        config = self.config(context)
        number = self.round_of(context)
        trained = self.required_upstream(context, TUNE)
        workspace = TaskWorkspace(config)
        known = np.concatenate([workspace.labelled(before_round=number)["id"].to_numpy(),
                                workspace.evaluation()["id"].to_numpy()])
        pool_size = int(len(np.setdiff1d(self.feature_set(context, config).ids(), known)))
        reason = stop_reason_before_query(config, number, trained["accuracy"], pool_size)
        plan = {"round": number, "query": reason is None, "stop_reason": reason, "pool_size": pool_size,
                "accuracy": trained["accuracy"]}
        context["ti"].xcom_push(key="plan", value=plan)
        if reason:
            self.log.info("round %s is the last one, no query set is sent: %s", number, reason)
            return None
        self.log.info("round %s: querying %s of a pool of %s", number, config.batch_count(pool_size), pool_size)
        return self.follow_task_id


class QueryRoundOperator(LoopOperator):
    """Pick the items to label with this round's model (``al_tasks.rounds.query_round``):
    writes ``rounds/round-<n>/query.csv`` and ``manifest.json`` in the workspace."""

    def execute(self, context):
        from al_tasks.rounds import query_round

        config = self.config(context)
        trained = self.required_upstream(context, TUNE)
        return query_round(config, self.round_of(context), model_version=trained["model_version"],
                           run_id=trained["run_id"], feature_set=self.feature_set(context, config),
                           log=self.log.info)


class ExportQuerySetOperator(LoopOperator):
    """Upload the query set to ``s3://<bucket>/<outbox>/<task>/round-<n>.csv`` and its
    manifest to ``round-<n>.manifest.json`` (manifest first: whoever sees the CSV can
    rely on the manifest being there). Re-running overwrites both."""

    def execute(self, context):
        config = self.config(context)
        number = self.round_of(context)
        queried = self.required_upstream(context, QUERY)
        csv_key, manifest_key = outbox_keys(config, number)
        hook = self.s3_hook()
        hook.load_file(queried["manifest"], manifest_key, bucket_name=config.bucket, replace=True)
        hook.load_file(queried["query_csv"], csv_key, bucket_name=config.bucket, replace=True)
        result = {"query_csv_uri": s3_uri(config.bucket, csv_key), "manifest_uri": s3_uri(config.bucket, manifest_key),
                  "items": queried["n_queried"],
                  "inbox": s3_uri(config.bucket, task_prefix(config.inbox_prefix, config.task)),
                  "expected_name": f"round-{number}.csv"}
        self.log.info("query set of round %s: %s (%s items); waiting for the labelled file as %s%s",
                      number, result["query_csv_uri"], result["items"], result["inbox"], result["expected_name"])
        return result


class IngestLabelsOperator(LoopOperator):
    """Read the returned file, store its labels as round ``n`` and file it away.

    * picks the newest inbox file whose name ``al_tasks.labelling.match_inbox_key``
      accepts for this round (other matches are left and named in the log); on a
      re-run whose file was already moved, the one in ``processed/<task>/``;
    * checks it against the round's query ids (the manifest) and the classes
      (``read_labelled_file``); appends accepted labels to the label store as round
      ``n`` (idempotent per file hash);
    * writes refused rows, with their reason, to the workspace's ``rejects.csv`` and
      to ``s3://<bucket>/rejects/<task>/round-<n>.csv``;
    * moves the file to ``processed/<task>/``.

    A file that cannot be read at all fails the task with the file and the problem
    named; fix it, upload it again and clear this task.
    """

    def __init__(self, *, rejects_prefix: str = REJECTS_PREFIX, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rejects_prefix = rejects_prefix

    def execute(self, context):
        from al_tasks.labelling import LabelFileError, matching_inbox_keys, read_labelled_file, write_rejects
        from al_tasks.workspace import TaskWorkspace

        config = self.config(context)
        number = self.round_of(context)
        hook = self.s3_hook()
        bucket = config.bucket
        inbox = task_prefix(config.inbox_prefix, config.task)
        processed = task_prefix(config.processed_prefix, config.task)

        source_key, others = _newest_matching(hook, bucket, inbox, number, matching_inbox_keys)
        already_processed = source_key is None
        if already_processed:
            source_key, others = _newest_matching(hook, bucket, processed, number, matching_inbox_keys)
            if source_key is None:
                raise FileNotFoundError(
                    f"no labelled file for round {number} in {s3_uri(bucket, inbox)} (nor in "
                    f"{s3_uri(bucket, processed)}): upload it as {s3_uri(bucket, inbox)}round-{number}.csv")
            self.log.info("re-run: the labelled file of round %s was already moved to %s; reading it from there",
                          number, s3_uri(bucket, source_key))
        for other in others:
            self.log.warning("ignoring %s: %s is newer and is the one used for round %s",
                             s3_uri(bucket, other), s3_uri(bucket, source_key), number)

        workspace = TaskWorkspace(config)
        file_name = PurePosixPath(source_key).name
        local = _download(hook, bucket, source_key, workspace.round_dir(number) / "labelled" / file_name)
        query_ids = self._query_ids(hook, config, number, workspace)
        source = s3_uri(bucket, source_key)
        try:
            parsed = read_labelled_file(local, query_ids=query_ids, classes=config.classes, source_name=source)
        except LabelFileError as exc:
            raise LabelFileError(
                f"{exc}. Fix the file, upload it again to {s3_uri(bucket, inbox)} and clear task "
                f"'{self.task_id}' of this run") from exc
        added = workspace.store.append(parsed.accepted, round_number=number, source=source,
                                       source_sha256=parsed.source_sha256)
        rejects_uri = None
        if len(parsed.rejects):
            write_rejects(parsed.rejects, workspace.rejects_path, source=source)
            rejects_frame = parsed.rejects.assign(source=source)
            rejects_key = task_prefix(self.rejects_prefix, config.task) + f"round-{number}.csv"
            hook.load_bytes(rejects_frame.to_csv(index=False).encode("utf-8"), rejects_key, bucket_name=bucket,
                            replace=True)
            rejects_uri = s3_uri(bucket, rejects_key)
            for row in parsed.rejects.head(20).itertuples(index=False):
                self.log.warning("rejected %s line %s (id %r, label %r): %s", source, row.line, row.id, row.label,
                                 row.reason)
        processed_uri = source
        if not already_processed:
            target_key = processed + file_name
            hook.copy_object(source_key, target_key, source_bucket_name=bucket, dest_bucket_name=bucket)
            hook.delete_objects(bucket, [source_key])
            processed_uri = s3_uri(bucket, target_key)
        summary = {**parsed.summary(), "round": number, "added_to_store": added, "rejects_uri": rejects_uri,
                   "processed_uri": processed_uri, "ignored_files": [s3_uri(bucket, k) for k in others],
                   "re_run": already_processed}
        self.log.info("round %s labels from %s: %s accepted (%s new in the store), %s left blank, %s rejected%s",
                      number, source, summary["accepted"], added, summary["skipped"], summary["rejected"],
                      f" (see {rejects_uri})" if rejects_uri else "")
        return summary

    def _query_ids(self, hook, config: LoopConfig, number: int, workspace) -> list[str]:
        """The ids the labeller was asked about: the round's manifest (workspace copy,
        else the one in the outbox)."""
        local = workspace.round_dir(number) / "manifest.json"
        if local.exists():
            return json.loads(local.read_text())["ids"]
        _, manifest_key = outbox_keys(config, number)
        if not hook.check_for_key(manifest_key, config.bucket):
            raise FileNotFoundError(f"no manifest for round {number}: neither {local} nor "
                                    f"{s3_uri(config.bucket, manifest_key)} exists; re-run task '{QUERY}'")
        return json.loads(hook.read_key(manifest_key, config.bucket))["ids"]


class NextRoundDecisionOperator(LoopOperator):
    """Whether the loop goes on, and with what: the stop rules in one place.

    Stops when ``plan_round`` ended the loop (target accuracy, max rounds, empty pool),
    when no labelled file arrived before the sensor's timeout, or when the file gave no
    usable label (labels stopped arriving). Otherwise returns the next run's id and
    conf: every Param of this run with ``round`` + 1 and the ``loop_id``.
    Runs when upstream tasks were skipped (trigger rule ``none_failed``).
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", TriggerRule.NONE_FAILED)
        super().__init__(**kwargs)

    def execute(self, context):
        config = self.config(context)
        number = self.round_of(context)
        params = self.params_of(context)
        loop_id = str(params.get("loop_id") or context["run_id"])
        states = self.task_states(context, [PLAN_ROUND, WAIT_FOR_LABELS, INGEST_LABELS])
        plan = self.upstream(context, PLAN_ROUND, key="plan") or {}
        ingested = self.upstream(context, INGEST_LABELS) if states[INGEST_LABELS] == "success" else None
        if plan.get("stop_reason"):
            reason = plan["stop_reason"]
        elif states[WAIT_FOR_LABELS] == "skipped" or ingested is None:
            reason = (f"labels stopped arriving: no labelled file for round {number} reached "
                      f"{s3_uri(config.bucket, task_prefix(config.inbox_prefix, config.task))} within "
                      f"sensor_timeout_seconds={config.sensor_timeout_seconds}")
        elif int(ingested.get("accepted", 0)) == 0:
            reason = (f"labels stopped arriving: {ingested.get('source')} gave no usable label "
                      f"({ingested.get('skipped', 0)} left blank, {ingested.get('rejected', 0)} rejected)")
        else:
            reason = None
        decision: dict[str, Any] = {"round": number, "continue": reason is None, "reason": reason, "loop_id": loop_id}
        if reason is None:
            next_conf = {key: _jsonable(value) for key, value in params.items()}
            next_conf.update(round=number + 1, loop_id=loop_id)
            decision.update(next_round=number + 1, next_run_id=next_run_id(loop_id, number + 1), next_conf=next_conf)
            self.log.info("loop goes on: round %s as run %s", number + 1, decision["next_run_id"])
        else:
            self.log.info("loop stops after round %s: %s", number, reason)
        return decision


class TriggerNextRoundOperator(TriggerDagRunOperator):
    """Trigger this DAG again for the next round, unless the loop stops.

    The run id is ``round-<n+1>__<loop id>``: when that run already exists (this round
    was cleared and re-run), nothing is triggered and the task is skipped, so an old
    round never forks the loop. Skipped as well, with the reason, when the loop stops.
    """

    ui_color = "#ffefeb"

    def __init__(self, *, decision_task_id: str = NEXT_ROUND_DECISION, **kwargs: Any) -> None:
        kwargs.setdefault("trigger_dag_id", "{{ dag.dag_id }}")
        super().__init__(skip_when_already_exists=True, logical_date=None, wait_for_completion=False,
                         openlineage_inject_parent_info=False, **kwargs)
        self.decision_task_id = decision_task_id

    def execute(self, context):
        decision = context["ti"].xcom_pull(task_ids=self.decision_task_id)
        if not decision:
            raise RuntimeError(f"task {self.decision_task_id!r} left no decision (XCom)")
        if not decision["continue"]:
            raise AirflowSkipException(f"loop stops, no next round: {decision['reason']}")
        run_id = decision["next_run_id"]
        ti = context["ti"]
        if ti.get_dr_count(dag_id=self.trigger_dag_id, run_ids=[run_id]):
            raise AirflowSkipException(
                f"round {decision['next_round']} already exists as run {run_id!r}; not triggering it again "
                "(this round was re-run)")
        self.trigger_run_id = run_id
        self.conf = decision["next_conf"]
        self.log.info("triggering round %s of %s as run %s", decision["next_round"], self.trigger_dag_id, run_id)
        super().execute(context)


class LoopStatusOperator(LoopOperator):
    """The round's outcome in one place (task log and XCom): accuracy, labels, query set,
    and whether and why the loop goes on or stops."""

    ui_color = "#eaf7e6"

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", TriggerRule.NONE_FAILED)
        super().__init__(**kwargs)

    def execute(self, context):
        number = self.round_of(context)
        trained = self.upstream(context, TUNE) or {}
        promotion = self.upstream(context, PROMOTE) or {}
        exported = self.upstream(context, EXPORT) or {}
        decision = self.upstream(context, NEXT_ROUND_DECISION) or {}
        states = self.task_states(context, [EXPORT, INGEST_LABELS, TRIGGER_NEXT_ROUND])
        ingested = self.upstream(context, INGEST_LABELS) if states[INGEST_LABELS] == "success" else None
        if states[EXPORT] != "success":
            exported = {}
        if decision.get("continue"):
            triggered = states[TRIGGER_NEXT_ROUND] == "success"
            status = "continuing"
            detail = (f"round {decision['next_round']} triggered as run {decision['next_run_id']}" if triggered
                      else f"round {decision['next_round']} already exists as run {decision['next_run_id']}")
        else:
            status, detail = "stopped", decision.get("reason") or "unknown"
        result = {
            "round": number,
            "status": status,
            "detail": detail,
            "reason": decision.get("reason"),
            "n_labelled": trained.get("n_labelled"),
            "n_eval": trained.get("n_eval"),
            "accuracy": trained.get("accuracy"),
            "macro_f1": trained.get("macro_f1"),
            "model_version": trained.get("model_version"),
            "champion_version": promotion.get("champion_version"),
            "mlflow_run_id": trained.get("run_id"),
            "query_csv_uri": exported.get("query_csv_uri"),
            "labels_accepted": None if ingested is None else ingested.get("accepted"),
            "labels_rejected": None if ingested is None else ingested.get("rejected"),
            "rejects_uri": None if ingested is None else ingested.get("rejects_uri"),
            "next_run_id": decision.get("next_run_id"),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        accuracy = result["accuracy"]
        self.log.info(
            "round %s: %s labels, accuracy %s, macro-F1 %s, model v%s (champion v%s); query set %s; labels back: %s; "
            "loop %s: %s", number, result["n_labelled"],
            "n/a" if accuracy is None else f"{accuracy:.4f}",
            "n/a" if result["macro_f1"] is None else f"{result['macro_f1']:.4f}",
            result["model_version"], result["champion_version"], result["query_csv_uri"] or "none",
            "n/a" if ingested is None else f"{ingested.get('accepted')} accepted, {ingested.get('rejected')} rejected",
            status, detail)
        return result


# --- small helpers ------------------------------------------------------------------------
def _download(hook, bucket: str, key: str, path: Path) -> Path:
    """Bytes of ``s3://bucket/key`` written to ``path`` (parents created); returns ``path``.

    Through ``get_object`` rather than ``S3Hook.read_key``, which would decode the bytes:
    a labelled file with bad bytes must reach ``read_labelled_file`` as it is.
    """
    body = hook.get_key(key, bucket).get()["Body"]
    try:
        data = body.read()
    finally:
        body.close()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _newest_matching(hook, bucket: str, prefix: str, number: int, matching) -> tuple[str | None, list[str]]:
    """(newest key under ``prefix`` that names round ``number``'s labelled file, the other
    matching keys)."""
    objects = hook.get_file_metadata(prefix, bucket) or []
    by_key = {obj["Key"]: obj for obj in objects}
    keys = matching(sorted(by_key), number)
    if not keys:
        return None, []
    keys.sort(key=lambda k: (by_key[k]["LastModified"], k), reverse=True)
    return keys[0], keys[1:]


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value
