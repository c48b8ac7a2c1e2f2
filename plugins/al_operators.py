"""Airflow operators of the active-learning loop (one DAG run = one round).

Each operator calls one ``al_tasks`` function and only translates between Airflow and
``al_tasks``: the round's settings come from the DAG Params
(:func:`al_common.config_from_params`), upstream results arrive as templated arguments
(pass ``other_task.output`` -- an XComArg -- so the DAG file shows the data flow), S3
access comes from the ``al_s3`` connection, and the return value (a small JSON-able
dict) is the task's XCom.

    featurize -> seed -> tune -> promote -> plan_round -> query (skipped when a stop rule holds) -> export
        -> wait_for_labels (al_sensors.LabelFileSensor) -> ingest_labels
        -> next_round_decision -> trigger_next_round -> loop_status
    tune -> alert_check      (a side branch: a broken alert channel fails the run
                              visibly but never stalls the labelling)

Heavy libraries (Spark, MLflow, pandas) load inside ``execute`` so that parsing the DAG
file stays fast.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import BaseOperator, TriggerRule
from airflow.sdk.exceptions import AirflowSkipException
from al_common import S3_CONN_ID, SMTP_CONN_ID, WEBHOOK_CONN_ID, config_from_params, round_from_params, s3_client

from al_tasks.config import LoopConfig


class LoopOperator(BaseOperator):
    """Base of the loop's operators: the run's settings and round, the bucket's client."""

    ui_color = "#e8f4fd"

    def __init__(self, *, aws_conn_id: str = S3_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.aws_conn_id = aws_conn_id

    @staticmethod
    def params_of(context: Mapping[str, Any]) -> dict[str, Any]:
        return {key: context["params"][key] for key in context["params"]}

    def config(self, context: Mapping[str, Any]) -> LoopConfig:
        return config_from_params(self.params_of(context))

    def round_of(self, context: Mapping[str, Any]) -> int:
        return round_from_params(self.params_of(context))

    def client(self):
        return s3_client(self.aws_conn_id)


def _required(value: Any, what: str) -> Any:
    if not value:
        raise RuntimeError(f"the upstream result {what!r} is missing (its task left no XCom); run it first")
    return value


# --- stages -------------------------------------------------------------------------------
class FeaturizeOperator(LoopOperator):
    """Featurize the corpus with Spark (``al_tasks.loop.rounds.featurize_corpus``); reused
    as is when corpus and settings are unchanged.
    """

    def execute(self, context):
        from al_tasks.loop.rounds import featurize_corpus

        return featurize_corpus(self.config(context))


class SeedFromBucketOperator(LoopOperator):
    """Seed the task from ``s3://<bucket>/<seed_prefix>/<task>/labels.csv`` unless already
    seeded (``al_tasks.loop.seeding.seed_from_bucket``); an ``evaluation.csv`` beside it
    becomes the fixed evaluation set.

    Parameters
    ----------
    features : the featurize task's result (templated; pass ``featurize.output``)
    """

    template_fields = ("features",)

    def __init__(self, *, features: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.features = features

    def execute(self, context):
        from al_tasks.loop.rounds import feature_set_for
        from al_tasks.loop.seeding import seed_from_bucket

        config = self.config(context)
        corpus_ids = feature_set_for(config, _required(self.features, "features")["features"]).ids()
        return seed_from_bucket(self.client(), config, corpus_ids)


class TrainRoundOperator(LoopOperator):
    """Tune, evaluate on the fixed set, log to MLflow and register
    (``al_tasks.loop.rounds.train_round``), on the labels of earlier rounds only.

    Parameters
    ----------
    features : the featurize task's result (templated)
    """

    template_fields = ("features",)

    def __init__(self, *, features: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.features = features

    def execute(self, context):
        from al_tasks.loop.rounds import train_round

        features = _required(self.features, "features")["features"]
        return train_round(self.config(context), self.round_of(context), features=features)


class PromoteModelOperator(LoopOperator):
    """Move the ``champion`` alias to this round's version when it beats the champion on the
    fixed evaluation set (``al_tasks.tracking.promote_if_better``).

    Parameters
    ----------
    trained : the tune task's result (templated)
    """

    template_fields = ("trained",)

    def __init__(self, *, trained: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.trained = trained

    def execute(self, context):
        from al_tasks.tracking import promote_if_better

        trained = _required(self.trained, "trained")
        return promote_if_better(self.config(context), trained["model_version"], trained["accuracy"])


class AccuracyAlertOperator(LoopOperator):
    """Check this round's accuracy against the alert rules (``al_tasks.loop.alerts``) and
    deliver the alerts (``al_notifiers.send_alerts``; an undefined channel is skipped).

    Parameters
    ----------
    trained : the tune task's result (templated)
    """

    template_fields = ("trained",)

    def __init__(
        self,
        *,
        trained: Any,
        webhook_conn_id: str | None = WEBHOOK_CONN_ID,
        smtp_conn_id: str | None = SMTP_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.trained, self.webhook_conn_id, self.smtp_conn_id = trained, webhook_conn_id, smtp_conn_id

    def execute(self, context):
        from al_notifiers import send_alerts

        from al_tasks.loop.alerts import round_alerts

        accuracy = _required(self.trained, "trained")["accuracy"]
        alerts, previous = round_alerts(self.config(context), self.round_of(context), accuracy)
        sent = send_alerts(alerts, webhook_conn_id=self.webhook_conn_id, smtp_conn_id=self.smtp_conn_id)
        alerted = [dataclasses.asdict(a) for a in alerts]
        return {"alerts": alerted, "sent": sent, "accuracy": accuracy, "previous_accuracy": previous}


class PlanRoundOperator(LoopOperator):
    """Decide whether this round asks for labels at all (``al_tasks.loop.rounds.plan_query``):
    a stop rule may already hold with this round's model. Returns the plan (XCom), which
    the query task follows.

    Parameters
    ----------
    trained : the tune task's result (templated)
    features : the featurize task's result (templated)
    """

    template_fields = ("trained", "features")

    def __init__(self, *, trained: Any, features: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.trained, self.features = trained, features

    def execute(self, context):
        from al_tasks.loop.rounds import plan_query

        return plan_query(
            self.config(context),
            self.round_of(context),
            _required(self.trained, "trained")["accuracy"],
            features=_required(self.features, "features")["features"],
        )


class QueryRoundOperator(LoopOperator):
    """Pick the items to label with this round's model (``al_tasks.loop.rounds.query_round``),
    unless the plan ends the loop: then it skips, and export and the wait skip with it.

    Parameters
    ----------
    plan : the plan_round task's result (templated)
    trained : the tune task's result (templated)
    features : the featurize task's result (templated)
    """

    template_fields = ("plan", "trained", "features")

    def __init__(self, *, plan: Any, trained: Any, features: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan, self.trained, self.features = plan, trained, features

    def execute(self, context):
        from al_tasks.loop.rounds import query_round

        if not _required(self.plan, "plan")["query"]:
            raise AirflowSkipException(f"no query set this round: {self.plan['stop_reason']}")
        trained = _required(self.trained, "trained")
        return query_round(
            self.config(context),
            self.round_of(context),
            model_version=trained["model_version"],
            run_id=trained["run_id"],
            features=_required(self.features, "features")["features"],
        )


class ExportQuerySetOperator(LoopOperator):
    """Upload the query set to ``s3://<bucket>/<outbox>/<task>/round-<n>.csv`` and its
    manifest (``al_tasks.labelling.inbox.export_round``).

    Parameters
    ----------
    queried : the query task's result (templated)
    """

    template_fields = ("queried",)

    def __init__(self, *, queried: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.queried = queried

    def execute(self, context):
        from al_tasks.labelling.inbox import export_round

        queried = _required(self.queried, "queried")
        return export_round(
            self.client(),
            self.config(context),
            self.round_of(context),
            query_csv=queried["query_csv"],
            manifest=queried["manifest"],
        )


class IngestLabelsOperator(LoopOperator):
    """Store the round's labelled file and file it away (``al_tasks.labelling.inbox.ingest_round``).

    Runs when the wait was skipped too (trigger rule ``none_failed``) and then skips
    itself, so its XCom is never a stale one of an earlier try: no file, no result.

    Parameters
    ----------
    arrival : the sensor's result (templated; None when no file arrived)
    """

    template_fields = ("arrival",)

    def __init__(self, *, arrival: Any, **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", TriggerRule.NONE_FAILED)
        super().__init__(**kwargs)
        self.arrival = arrival

    def execute(self, context):
        from al_tasks.labelling.inbox import ingest_round

        if not self.arrival:
            raise AirflowSkipException("no labelled file arrived for this round (or none was asked for)")
        return ingest_round(self.client(), self.config(context), self.round_of(context))


class NextRoundDecisionOperator(LoopOperator):
    """Whether the loop goes on, and with what (``al_tasks.loop.policy.decide_next_round``).

    Adds ``already_exists``: the next round's run was created before (this round was
    cleared and re-run), so it must not be triggered again.

    Parameters
    ----------
    plan : the plan_round task's result (templated)
    ingested : the ingest task's result (templated; None when nothing was ingested)
    """

    template_fields = ("plan", "ingested")

    def __init__(self, *, plan: Any, ingested: Any, **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", TriggerRule.NONE_FAILED)
        super().__init__(**kwargs)
        self.plan, self.ingested = plan, ingested

    def execute(self, context):
        from al_tasks.loop.policy import decide_next_round

        params = self.params_of(context)
        decision = decide_next_round(
            self.config(context),
            _required(self.plan, "plan"),
            self.ingested or None,
            params=params,
            loop_id=str(params.get("loop_id") or context["run_id"]),
        )
        ti = context["ti"]
        exists = decision["continue"] and ti.get_dr_count(dag_id=ti.dag_id, run_ids=[decision["next_run_id"]])
        return {**decision, "already_exists": bool(exists)}


class TriggerNextRoundOperator(TriggerDagRunOperator):
    """Trigger this DAG again for the next round, unless the loop stops or that run exists.

    Parameters
    ----------
    decision : the next_round_decision task's result (templated)
    """

    ui_color = "#ffefeb"
    template_fields = (*TriggerDagRunOperator.template_fields, "decision")

    def __init__(self, *, decision: Any, **kwargs: Any) -> None:
        kwargs.setdefault("trigger_dag_id", "{{ dag.dag_id }}")
        super().__init__(
            skip_when_already_exists=True,
            logical_date=None,
            wait_for_completion=False,
            openlineage_inject_parent_info=False,
            **kwargs,
        )
        self.decision = decision

    def execute(self, context):
        decision = _required(self.decision, "decision")
        if not decision["continue"]:
            raise AirflowSkipException(f"loop stops, no next round: {decision['reason']}")
        if decision["already_exists"]:
            raise AirflowSkipException(
                f"round {decision['next_round']} already exists as run "
                f"{decision['next_run_id']!r}; not triggering it again (this round was re-run)"
            )
        self.trigger_run_id, self.conf = decision["next_run_id"], decision["next_conf"]
        self.log.info("triggering round %s as run %s", decision["next_round"], self.trigger_run_id)
        super().execute(context)


class LoopStatusOperator(LoopOperator):
    """The round's outcome in one place (``al_tasks.loop.rounds.round_status``): accuracy,
    labels, query set, and whether and why the loop goes on or stops.

    Parameters
    ----------
    results : the results of the round's tasks by name (templated): ``trained``,
        ``promotion``, ``plan``, ``exported``, ``ingested``, ``decision``
    """

    ui_color = "#eaf7e6"
    template_fields = ("results",)

    def __init__(self, *, results: Mapping[str, Any], **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", TriggerRule.NONE_FAILED)
        super().__init__(**kwargs)
        self.results = results

    def execute(self, context):
        from al_tasks.loop.rounds import round_status

        return round_status(self.round_of(context), **{k: v or {} for k, v in self.results.items()})
