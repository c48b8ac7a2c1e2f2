"""
### Active-learning labelling loop

One run is one round. A round trains a classifier on every label so far, evaluates it
on the fixed evaluation set, sends the items it is least sure about to the labelling
bucket, waits for the labelled file and stores the labels; then it triggers the next
round of the same loop (conf `round` + 1), unless a stop rule holds.

| task | does |
| --- | --- |
| featurize | Spark TF-IDF features of the corpus (reused when corpus and settings are unchanged) |
| seed | first round only: labels from `s3://<bucket>/seed/<task>/labels.csv` (+ optional `evaluation.csv`) |
| tune | hyperopt search, evaluation, MLflow run with nested trials, registered model version |
| promote | alias `champion` when the new version beats the champion on the evaluation set |
| alert_check | accuracy alerts (below minimum, drop, target reached) to `al_alert_webhook` / `al_alert_smtp` |
| plan_round | ends the loop here when the target accuracy or `max_rounds` is reached or the pool is empty |
| query / export | picks `batch_size` items; `s3://<bucket>/<outbox>/<task>/round-<n>.csv` + `.manifest.json` |
| wait_for_labels | deferrable S3 sensor on `<inbox>/<task>/round-<n>*.csv` (holds no worker slot) |
| ingest_labels | checks the file, stores accepted labels, rejects to `rejects/<task>/round-<n>.csv`, moves the file to `<processed>/<task>/` |
| next_round_decision / trigger_next_round | run `round-<n+1>__<loop id>` with the same Params, or the stop reason |
| loop_status | the round's outcome: accuracy, labels, query set, continuing or stopped and why |

Clearing and re-running any run is safe: paths are per round, round *n* trains only on
labels from earlier rounds, and an existing next-round run is never triggered twice.
See `docs/airflow.md`.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, Param, chain

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
from al_tasks.config import LoopConfig

# Form defaults are the effective settings where the DAG is parsed (defaults overridden
# by AL_* variables), so the trigger form shows what a run would use.
DEFAULTS = LoopConfig.from_env()
STRATEGIES = ["margin", "uncertainty", "entropy", "ranked_batch", "random"]

params = {
    "round": Param(1, type="integer", minimum=1, title="Round",
                   description="The round this run works on. 1 starts a loop; the DAG triggers the next rounds itself."),
    "task": Param(DEFAULTS.task, type="string", pattern=r"^[A-Za-z0-9_.-]+$", title="Task",
                  description="Name of the classification task: workspace folder, MLflow experiment and model, "
                              "S3 folders <prefix>/<task>/."),
    "corpus_path": Param(DEFAULTS.corpus_path, type="string", title="Corpus",
                         description="Corpus in CFPB export format (CSV, CSV.gz or Parquet) on the workers' disk."),
    "label_column": Param(DEFAULTS.label_column, type="string", title="Ground-truth column",
                          description="Column with true labels; used only by the simulated labeller and benchmarks."),
    "classes": Param(list(DEFAULTS.classes), type="array", items={"type": "string"}, title="Classes",
                     description="Allowed label values (one per line). Labels outside them are rejected at ingest. "
                                 "Empty: taken from the seed labels."),
    "positive_class": Param(DEFAULTS.positive_class or None, type=["null", "string"], title="Positive class",
                            description="Binary task: this class against 'rest'. Empty: multi-class."),
    "strategy": Param(DEFAULTS.strategy, type="string", enum=STRATEGIES, title="Query strategy",
                      description="How items are picked: margin, uncertainty or entropy (least sure first), "
                                  "ranked_batch (uncertain and diverse), random (baseline)."),
    "batch_size": Param(DEFAULTS.batch_size, type="number", exclusiveMinimum=0, title="Batch size",
                        description="Labels asked for per round: a count (>= 1) or a fraction of the pool (< 1)."),
    "max_rounds": Param(DEFAULTS.max_rounds, type="integer", minimum=1, title="Max rounds",
                        description="The loop stops after training this round (no query set is sent for it)."),
    "max_evals": Param(DEFAULTS.max_evals, type="integer", minimum=1, title="Tuning evaluations",
                       description="Hyperopt evaluations per round (nested MLflow runs)."),
    "target_accuracy": Param(DEFAULTS.target_accuracy, type="number", minimum=0, maximum=1, title="Target accuracy",
                             description="The loop stops when the evaluation accuracy reaches this "
                                         "(and a target_reached alert is sent)."),
    "alert_min_accuracy": Param(DEFAULTS.alert_min_accuracy, type="number", minimum=0, maximum=1,
                                title="Alert: minimum accuracy",
                                description="Alert when a round's evaluation accuracy is below this."),
    "alert_max_drop": Param(DEFAULTS.alert_max_drop, type="number", minimum=0, maximum=1,
                            title="Alert: maximum drop",
                            description="Alert when accuracy falls more than this below the previous round's."),
    "bucket": Param(DEFAULTS.bucket, type="string", title="Bucket",
                    description="Labelling bucket, reached through the Airflow connection al_s3."),
    "outbox_prefix": Param(DEFAULTS.outbox_prefix, type="string", title="Outbox prefix",
                           description="Query sets appear as <outbox>/<task>/round-<n>.csv (+ .manifest.json)."),
    "inbox_prefix": Param(DEFAULTS.inbox_prefix, type="string", title="Inbox prefix",
                          description="Labelled files are dropped as <inbox>/<task>/round-<n>.csv."),
    "processed_prefix": Param(DEFAULTS.processed_prefix, type="string", title="Processed prefix",
                              description="Ingested labelled files are moved to <processed>/<task>/."),
    "sensor_timeout_seconds": Param(DEFAULTS.sensor_timeout_seconds, type="integer", minimum=1,
                                    title="Wait for labels (s)",
                                    description="How long to wait for the labelled file; then the loop stops "
                                                "(labels stopped arriving). The wait holds no worker slot."),
    "sensor_poke_seconds": Param(DEFAULTS.sensor_poke_seconds, type="integer", minimum=1,
                                 title="Check inbox every (s)", description="How often the inbox is listed."),
    "loop_id": Param(None, type=["null", "string"], title="Loop id",
                     description="Set by the DAG for rounds it triggers (the first round's run id); "
                                 "leave empty when starting a loop."),
}

with DAG(
    dag_id="active_learning_loop",
    dag_display_name="Active-learning labelling loop",
    description="featurize -> tune -> query -> export to S3 -> wait for labels -> retrain, one round per run",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    params=params,
    doc_md=__doc__,
    tags=["active-learning", "labelling"],
    default_args={"owner": "ml", "retries": 1, "retry_delay": timedelta(seconds=30)},
) as dag:
    featurize = FeaturizeOperator(task_id="featurize")
    seed = SeedFromBucketOperator(task_id="seed")
    tune = TrainRoundOperator(task_id="tune")
    promote = PromoteModelOperator(task_id="promote")
    # Retries are for flaky receivers; a channel that stays broken fails this side branch
    # (the run shows red) while the round carries on.
    alert_check = AccuracyAlertOperator(task_id="alert_check", retries=2)
    plan_round = PlanRoundOperator(task_id="plan_round")
    query = QueryRoundOperator(task_id="query")
    export = ExportQuerySetOperator(task_id="export")
    # Timeout and poke interval come from the Params (sensor_*_seconds) at run time.
    wait_for_labels = LabelFileSensor(task_id="wait_for_labels", retries=2)
    ingest_labels = IngestLabelsOperator(task_id="ingest_labels", retries=0)
    next_round_decision = NextRoundDecisionOperator(task_id="next_round_decision")
    trigger_next_round = TriggerNextRoundOperator(task_id="trigger_next_round")
    loop_status = LoopStatusOperator(task_id="loop_status")

    chain(featurize, seed, tune, promote, plan_round, query, export, wait_for_labels, ingest_labels,
          next_round_decision, trigger_next_round, loop_status)
    promote >> alert_check
