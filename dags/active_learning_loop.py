"""
### Active-learning labelling loop

One run is one round. A round trains a classifier on every label so far, evaluates it
on the fixed evaluation set, sends the items it is least sure about to the labelling
bucket, waits for the labelled file and stores the labels; then it triggers the next
round of the same loop (conf `round` + 1), unless a stop rule holds.

| task | does |
| --- | --- |
| featurize | Spark TF-IDF features of the corpus (reused when corpus and settings are unchanged) |
| seed | first round only: labels from `s3://<bucket>/<seed>/<task>/labels.csv` (+ optional `evaluation.csv`) |
| tune | hyperopt search, evaluation, MLflow run with nested trials, registered model version |
| promote | alias `champion` when the new version beats the champion on the evaluation set |
| alert_check | accuracy alerts (below minimum, drop, target reached) to `al_alert_webhook` / `al_alert_smtp` |
| plan_round | ends the loop here when the target accuracy or `max_rounds` is reached or the pool is empty |
| query / export | picks `batch_size` items; `s3://<bucket>/<outbox>/<task>/round-<n>.csv` + `.manifest.json` |
| wait_for_labels | deferred S3 sensor: `<inbox>/<task>/round-<n>*.csv` or `.xlsx` (no worker slot, rides out outages) |
| ingest_labels | checks and stores the labels; rejects to `<rejects>/<task>/`; the file to `<processed>/<task>/` |
| next_round_decision / trigger_next_round | run `round-<n+1>__<loop id>` with the same Params, or the stop reason |
| loop_status | the round's outcome: accuracy, labels, query set, continuing or stopped and why |

Clearing and re-running any run is safe: paths are per round, round *n* trains only on
labels from earlier rounds, and an existing next-round run is never triggered twice.
See `docs/airflow.md`.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG
from al_common import MACROS, loop_params, spark_queue
from al_operators import (
    AccuracyAlertOperator,
    ExportQuerySetOperator,
    FeaturizeOperator,
    IngestLabelsOperator,
    LoopStatusOperator,
    NextRoundDecisionOperator,
    PlanRoundOperator,
    PromoteModelOperator,
    QueryRoundOperator,
    SeedFromBucketOperator,
    TrainRoundOperator,
    TriggerNextRoundOperator,
)
from al_sensors import LabelFileSensor

with DAG(
    dag_id="active_learning_loop",
    dag_display_name="Active-learning labelling loop",
    description="featurize -> tune -> query -> export to S3 -> wait for labels -> retrain, one round per run",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    params=loop_params(),
    user_defined_macros=MACROS,
    doc_md=__doc__,
    tags=["active-learning", "labelling"],
    default_args={"owner": "ml", "retries": 1, "retry_delay": timedelta(seconds=30)},
) as dag:
    # Spark-heavy tasks go to the Spark queue (AL_SPARK_QUEUE; "default" in the embedded setup).
    featurize = FeaturizeOperator(task_id="featurize", queue=spark_queue())
    seed = SeedFromBucketOperator(task_id="seed", features=featurize.output)
    tune = TrainRoundOperator(task_id="tune", features=featurize.output, queue=spark_queue())
    promote = PromoteModelOperator(task_id="promote", trained=tune.output)
    # Retries are for flaky receivers; a channel that stays broken fails this side branch
    # (the run shows red) while the round carries on.
    alert_check = AccuracyAlertOperator(task_id="alert_check", trained=tune.output, retries=2)
    plan_round = PlanRoundOperator(task_id="plan_round", trained=tune.output, features=featurize.output)
    query = QueryRoundOperator(
        task_id="query",
        plan=plan_round.output,
        trained=tune.output,
        features=featurize.output,
        queue=spark_queue(),
    )
    export = ExportQuerySetOperator(task_id="export", queried=query.output)
    # The wait itself rides out S3 outages (al_sensors.LabelFileTrigger); these retries
    # cover the S3 calls made on the worker before and after it.
    wait_for_labels = LabelFileSensor(
        task_id="wait_for_labels",
        retries=6,
        retry_delay=timedelta(seconds=10),
        retry_exponential_backoff=True,
        max_retry_delay=timedelta(minutes=10),
        bucket_name="{{ al_setting(params, 'bucket') }}",
        bucket_key="{{ al_inbox_key_regex(params) }}",
        timeout_seconds="{{ al_setting(params, 'sensor_timeout_seconds') }}",
        poke_seconds="{{ al_setting(params, 'sensor_poke_seconds') }}",
    )
    ingest_labels = IngestLabelsOperator(task_id="ingest_labels", arrival=wait_for_labels.output, retries=0)
    next_round_decision = NextRoundDecisionOperator(
        task_id="next_round_decision", plan=plan_round.output, ingested=ingest_labels.output
    )
    trigger_next_round = TriggerNextRoundOperator(task_id="trigger_next_round", decision=next_round_decision.output)
    loop_status = LoopStatusOperator(
        task_id="loop_status",
        results={
            "trained": tune.output,
            "promotion": promote.output,
            "plan": plan_round.output,
            "exported": export.output,
            "ingested": ingest_labels.output,
            "decision": next_round_decision.output,
        },
    )

    # Data dependencies come from the XComArgs above; these add the order that carries no data.
    seed >> tune
    promote >> plan_round
    export >> wait_for_labels
    trigger_next_round >> loop_status
