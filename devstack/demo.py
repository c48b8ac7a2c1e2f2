"""The demo: the whole loop on this machine, as a user meets it (``make demo``).

    python -m devstack.demo                 # 3 rounds, then stop everything
    python -m devstack.demo --keep-running  # leave the services up afterwards (Ctrl-C stops them)

What it does, all on 127.0.0.1:

1. starts SeaweedFS (S3 on port 8333, bucket ``labelling``, fresh random credentials);
2. puts a random labelled seed of 230 complaints (``Product group`` ground truth) at
   ``s3://labelling/seed/product_group/labels.csv`` and a random *evaluation* file of
   1000 more at ``seed/product_group/evaluation.csv``, so every round's accuracy is
   measured on the same 1000 items that no round ever trains on;
3. creates ``.demo/airflow_home`` (SQLite, LocalExecutor, simple auth manager), runs
   ``airflow db migrate`` and starts ``airflow api-server`` (port 8080), ``scheduler``,
   ``triggerer`` and ``dag-processor`` as separate processes, plus the MLflow UI (5000);
4. triggers the DAG ``active_learning_loop`` through the REST API with
   ``max_rounds=3`` and ``max_evals=32`` (small, so a round takes a minute or two);
5. runs the simulated labeller, which answers every query set in the outbox from the
   ground truth, and prints one line per finished round.

State lives in ``.demo/`` (wiped at the next start, except the fitted features).
Everything started is stopped on exit, each as its own process group.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from al_tasks.cli import add_setting_flags, setting_overrides
from al_tasks.config import REPO_ROOT, LoopConfig
from al_tasks.tracking import tracking_uri
from devstack.airflow_local import (
    DAG_ID,
    AirflowApi,
    AirflowComponents,
    AirflowError,
    AirflowSettings,
    S3Settings,
    follow_loop,
    prepare_airflow_home,
    run_airflow,
)
from devstack.labeller import LabellerThread, sample_seed_files, upload_seed
from devstack.processes import HOST, ManagedProcess, port_in_use, say, start_process, venv_binary

DEMO_DIR = REPO_ROOT / ".demo"
DEMO_BUCKET = "labelling"
SEED_SIZE = 230
EVAL_SIZE = 1000
#: The demo's settings where they differ from LoopConfig's defaults (a flag overrides them):
#: three rounds with a small hyperopt budget, so a round takes a minute or two.
DEMO_SETTINGS = {"max_rounds": 3, "max_evals": 32}


# --- services -------------------------------------------------------------------------------
def start_mlflow_ui(port: int, tracking_uri: str, log_path: Path, env: dict[str, str]) -> ManagedProcess:
    return start_process(
        "mlflow",
        [
            str(venv_binary("mlflow")),
            "ui",
            "--host",
            HOST,
            "--port",
            str(port),
            "--backend-store-uri",
            tracking_uri,
            "--workers",
            "1",
        ],
        env,
        log_path,
    )


def _fresh_demo_state(demo_dir: Path, task: str) -> None:
    """Wipe the previous demo (Airflow DB, S3 data, workspace), keeping only the fitted
    features: they depend on the corpus and settings alone and take a while to refit.
    """
    workspace = demo_dir / "workspace"
    features = workspace / task / "features"
    kept = demo_dir / "features.keep"
    if features.exists():
        shutil.rmtree(kept, ignore_errors=True)
        features.rename(kept)
    for name in ("airflow_home", "seaweedfs", "workspace", "seed"):
        shutil.rmtree(demo_dir / name, ignore_errors=True)
    if kept.exists():
        features.parent.mkdir(parents=True, exist_ok=True)
        kept.rename(features)


def _json_value(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--noise", type=float, default=0.0, help="fraction of wrong labels the labeller gives")
    parser.add_argument(
        "--label-delay",
        type=float,
        default=15.0,
        help="seconds the simulated labeller takes to answer a query set (default 15)",
    )
    parser.add_argument("--api-port", type=int, default=8080)
    parser.add_argument("--s3-port", type=int, default=8333)
    parser.add_argument("--mlflow-port", type=int, default=5000)
    parser.add_argument("--no-mlflow-ui", action="store_true", help="do not start the MLflow UI")
    parser.add_argument(
        "--all-admins",
        action="store_true",
        help="no login in the Airflow UI (everyone is admin; it listens on 127.0.0.1 only)",
    )
    parser.add_argument(
        "--keep-running", action="store_true", help="leave everything running after the rounds; Ctrl-C stops it"
    )
    parser.add_argument("--timeout-minutes", type=float, default=45, help="give up after this long (default 45)")
    parser.add_argument("--dir", type=Path, default=DEMO_DIR, help=f"demo state folder (default {DEMO_DIR})")
    # Every loop setting as a flag (--max-rounds, --max-evals, --batch-size, --strategy, ...),
    # passed to the DAG run as its conf; the demo's own defaults are DEMO_SETTINGS.
    add_setting_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    from al_tasks.tracking import disable_mlflow_telemetry
    from devstack.seaweedfs import SeaweedFSError, start_seaweedfs

    args = _parser().parse_args(argv)
    disable_mlflow_telemetry()
    demo_dir: Path = args.dir.resolve()
    base = LoopConfig.from_env().with_overrides({**DEMO_SETTINGS, **setting_overrides(args)})
    # The DAG run gets the demo's settings and the user's flags, typed by LoopConfig.
    run_settings = {name: _json_value(getattr(base, name)) for name in {**DEMO_SETTINGS, **setting_overrides(args)}}
    task = base.task
    for port, what in (
        (args.api_port, "Airflow API server"),
        (args.s3_port, "SeaweedFS S3"),
        (args.mlflow_port, "MLflow UI"),
    ):
        if port_in_use(port) and not (what == "MLflow UI" and args.no_mlflow_ui):
            print(
                f"error: port {port} on {HOST} ({what}) is in use; stop what runs there or pass "
                f"--{'api' if 'Airflow' in what else 's3' if 'S3' in what else 'mlflow'}-port",
                file=sys.stderr,
            )
            return 2

    _fresh_demo_state(demo_dir, task)
    workspace = demo_dir / "workspace"
    config = base.with_overrides(
        {"workspace": str(workspace), "bucket": DEMO_BUCKET, "s3_endpoint_url": f"http://{HOST}:{args.s3_port}"}
    )
    stack: list[Callable[[], None]] = []  # stop actions, run in reverse order
    labeller: LabellerThread | None = None

    def stop_everything() -> None:
        while stack:
            try:
                stack.pop()()
            except Exception as exc:  # stopping the rest matters more
                print(f"warning: while stopping: {exc}", file=sys.stderr)

    # Ctrl-C stops everything even when started from a shell that ignores SIGINT for
    # background jobs; SIGTERM (e.g. from a CI timeout) does the same.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        say(f"starting SeaweedFS on {config.s3_endpoint_url} (bucket {DEMO_BUCKET!r})")
        access_key, secret_key = "demo-" + secrets.token_hex(6), secrets.token_urlsafe(24)
        weed = start_seaweedfs(
            demo_dir / "seaweedfs",
            bucket=DEMO_BUCKET,
            access_key=access_key,
            secret_key=secret_key,
            s3_port=args.s3_port,
            log_path=demo_dir / "logs" / "weed.log",
        )
        stack.append(weed.stop)
        client = weed.client()

        say(f"seeding: {SEED_SIZE} random labels of {config.label_column!r} + an evaluation file of {EVAL_SIZE}")
        labels, evaluation = sample_seed_files(config, demo_dir / "seed")
        for uri in upload_seed(client, DEMO_BUCKET, task, labels, evaluation):
            say(f"  uploaded {uri}")

        settings = AirflowSettings(
            home=demo_dir / "airflow_home",
            api_port=args.api_port,
            all_admins=args.all_admins,
            s3=S3Settings(config.s3_endpoint_url, access_key, secret_key),
            extra_env={
                "AL_WORKSPACE": str(workspace),
                "AL_BUCKET": DEMO_BUCKET,
                "AL_S3_ENDPOINT_URL": config.s3_endpoint_url,
            },
        )
        env = prepare_airflow_home(settings)
        say(f"airflow db migrate (AIRFLOW_HOME={settings.home})")
        run_airflow(["db", "migrate"], env, log_path=demo_dir / "logs" / "airflow-db-migrate.log")
        say("starting airflow api-server, scheduler, dag-processor, triggerer")
        components = AirflowComponents(settings, env).start()
        stack.append(components.stop)
        if not args.no_mlflow_ui:
            mlflow_ui = start_mlflow_ui(args.mlflow_port, tracking_uri(config), demo_dir / "logs" / "mlflow.log", env)
            stack.append(mlflow_ui.stop)

        api = AirflowApi(
            settings.base_url,
            None if args.all_admins else settings.admin_user,
            None if args.all_admins else settings.admin_password,
        )
        api.wait_for_dag(DAG_ID, timeout=300, components=components)
        conf = {
            "round": 1,
            **run_settings,
            "bucket": DEMO_BUCKET,
            "sensor_poke_seconds": 5,
            "sensor_timeout_seconds": 3600,
        }
        run = api.trigger(DAG_ID, conf=conf, note="started by the demo")
        say(f"triggered {DAG_ID} run {run['dag_run_id']} with conf {json.dumps(conf)}")
        login = (
            "no login needed (all-admins mode)"
            if args.all_admins
            else f"user {settings.admin_user!r}, password {settings.admin_password!r}"
        )
        say(f"Airflow UI: {settings.base_url}/dags/{DAG_ID}  ({login})")
        if not args.no_mlflow_ui:
            say(f"MLflow UI:  http://{HOST}:{args.mlflow_port}  (experiment {config.experiment_name!r})")
        say(
            f"S3 bucket:  {config.s3_endpoint_url}/{DEMO_BUCKET}  (AWS_ACCESS_KEY_ID={access_key} "
            f"AWS_SECRET_ACCESS_KEY={secret_key})"
        )

        labeller = LabellerThread(client, config, noise=args.noise, delay_seconds=args.label_delay)
        labeller.start()
        stack.append(labeller.stop)
        say(
            f"simulated labeller watching s3://{DEMO_BUCKET}/{config.outbox_prefix}/{task}/; "
            "waiting for rounds (a few minutes each; the first also featurizes the corpus)"
        )
        statuses = follow_loop(
            api, max_rounds=base.max_rounds, timeout=args.timeout_minutes * 60, check=components.check_running, echo=say
        )
        ok = all(s["status"] != "failed" for s in statuses)
        say(
            f"done: {len(statuses)} round(s) {'finished' if ok else 'ran, one failed'}; models in MLflow "
            f"({config.model_name!r}, alias 'champion'), workspace {workspace}"
        )
        if args.keep_running:
            say("--keep-running: services stay up; press Ctrl-C to stop them")
            while True:
                components.check_running()
                time.sleep(5)
        return 0 if ok else 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except (AirflowError, SeaweedFSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if stack:
            say("stopping everything the demo started")
            stop_everything()
            say("stopped")


if __name__ == "__main__":
    sys.exit(main())
