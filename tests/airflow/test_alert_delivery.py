"""Alert delivery to real local servers through the Airflow notifiers.

The tests start an HTTP server (``http.server`` in a thread) and an SMTP server
(aiosmtpd) on 127.0.0.1 with free ports, define the Airflow connections with
``AIRFLOW_CONN_*`` environment variables, and check what the servers received.
"""

from __future__ import annotations

import email
import email.policy
import importlib
import json
import logging
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from al_tasks.loop.alerts import ACCURACY_DROP, Alert, alert_payload, check_accuracy

PLUGINS_DIR = Path(__file__).resolve().parents[2] / "plugins"
THRESHOLDS = {"min_accuracy": 0.60, "max_drop": 0.03, "target_accuracy": 0.90}


def kinds(alerts: list[Alert]) -> list[str]:
    return [a.kind for a in alerts]


# --- delivery: fixtures ----------------------------------------------------------------


@pytest.fixture(scope="module")
def notifiers(tmp_path_factory) -> Iterator[Any]:
    """The ``al_notifiers`` plugin module, imported with a throw-away AIRFLOW_HOME."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow_home")))
        mp.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        mp.syspath_prepend(str(PLUGINS_DIR))  # as Airflow does for its plugins folder
        yield importlib.import_module("al_notifiers")
        sys.modules.pop("al_notifiers", None)


@pytest.fixture(autouse=True)
def _no_proxy_no_stale_connections(monkeypatch):
    # A proxy from the environment must not intercept requests to 127.0.0.1, and a
    # connection defined in the developer's shell must not leak into a test.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.delenv("AIRFLOW_CONN_AL_ALERT_WEBHOOK", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_AL_ALERT_SMTP", raising=False)


class WebhookReceiver:
    """HTTP server on 127.0.0.1 recording each POST; answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                self.send_response(receiver.status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if receiver.status < 300 else b"receiver says no")

            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def json_bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for r in self.requests]


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


class MailReceiver:
    """aiosmtpd handler keeping every envelope."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    # aiosmtpd calls handle_DATA by this name.
    async def handle_DATA(self, server, session, envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def messages(self) -> list[email.message.EmailMessage]:
        return [email.message_from_bytes(e.original_content, policy=email.policy.default) for e in self.envelopes]


@pytest.fixture
def smtp_server() -> Iterator[tuple[MailReceiver, int]]:
    from aiosmtpd.controller import Controller

    class FreePortController(Controller):
        # Bind port 0 and read back the port the OS chose (no probe-then-bind race);
        # aiosmtpd's own start-up check connects to self.port, so set it first.
        def _trigger_server(self) -> None:
            self.port = self.server.sockets[0].getsockname()[1]
            super()._trigger_server()

    receiver = MailReceiver()
    controller = FreePortController(receiver, hostname="127.0.0.1", port=0)
    controller.start()
    yield receiver, controller.port
    controller.stop()


def define_webhook_connection(monkeypatch, port: int) -> None:
    # URI form: the path lands in the connection's ``schema``.
    monkeypatch.setenv("AIRFLOW_CONN_AL_ALERT_WEBHOOK", f"http://127.0.0.1:{port}/hooks/al?timeout=5")


def define_smtp_connection(monkeypatch, port: int, **extra: Any) -> None:
    # JSON form; the local server speaks neither SMTPS nor STARTTLS.
    extra = {
        "to": "ml-team@example.org; oncall@example.org",
        "from_email": "airflow@example.org",
        "disable_ssl": True,
        "disable_tls": True,
        **extra,
    }
    monkeypatch.setenv(
        "AIRFLOW_CONN_AL_ALERT_SMTP",
        json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": port, "extra": extra}),
    )


# --- delivery: tests -------------------------------------------------------------------


def test_env_var_connection_resolves_outside_a_task(notifiers, monkeypatch):
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    define_webhook_connection(monkeypatch, 8123)
    connection = BaseHook.get_connection("al_alert_webhook")
    assert (connection.conn_type, connection.host, connection.port) == ("http", "127.0.0.1", 8123)
    assert notifiers.webhook_url(connection) == "http://127.0.0.1:8123/hooks/al"
    with pytest.raises(AirflowNotFoundException):
        BaseHook.get_connection("al_alert_smtp")


def test_breach_is_posted_to_webhook(notifiers, monkeypatch, webhook_receiver):
    define_webhook_connection(monkeypatch, webhook_receiver.port)
    alerts = check_accuracy("product_group", 3, 0.52, 0.61, **THRESHOLDS)

    sent = notifiers.send_alerts(alerts, webhook_conn_id="al_alert_webhook", smtp_conn_id="al_alert_smtp")

    assert sent == [
        "webhook:al_alert_webhook:below_threshold",
        "webhook:al_alert_webhook:accuracy_drop",
    ]
    assert [r["path"] for r in webhook_receiver.requests] == ["/hooks/al", "/hooks/al"]
    assert webhook_receiver.requests[0]["headers"]["Content-Type"] == "application/json"
    first, second = webhook_receiver.json_bodies()
    assert first == alert_payload(alerts[0])
    assert first["alert"]["kind"] == "below_threshold"
    assert first["alert"]["accuracy"] == 0.52
    assert "accuracy 0.520 is below the alert minimum 0.600" in first["text"]
    assert second["alert"]["kind"] == "accuracy_drop"
    assert "dropped by 0.090, from 0.610 to 0.520" in second["text"]


def test_webhook_error_status_fails_the_send(notifiers, monkeypatch, webhook_receiver):
    webhook_receiver.status = 500
    define_webhook_connection(monkeypatch, webhook_receiver.port)
    alerts = check_accuracy("product_group", 3, 0.40, None, **THRESHOLDS)

    with pytest.raises(notifiers.AlertDeliveryError, match="500"):
        notifiers.send_alerts(alerts, webhook_conn_id="al_alert_webhook", smtp_conn_id=None)
    with pytest.raises(notifiers.AlertDeliveryError, match="receiver says no"):
        notifiers.WebhookAlertNotifier(alert_payload(alerts[0])).notify({})
    assert len(webhook_receiver.requests) == 2


def test_breach_is_mailed(notifiers, monkeypatch, smtp_server):
    receiver, port = smtp_server
    define_smtp_connection(monkeypatch, port)
    alerts = check_accuracy("product_group", 4, 0.74, 0.80, **THRESHOLDS)
    assert kinds(alerts) == [ACCURACY_DROP]

    sent = notifiers.send_alerts(alerts, webhook_conn_id="al_alert_webhook", smtp_conn_id="al_alert_smtp")

    assert sent == ["email:al_alert_smtp:accuracy_drop"]
    (envelope,) = receiver.envelopes
    assert envelope.mail_from == "airflow@example.org"
    assert envelope.rcpt_tos == ["ml-team@example.org", "oncall@example.org"]
    (message,) = receiver.messages()
    assert message["Subject"] == "[active learning] product_group: accuracy_drop in round 4"
    assert message["To"] == "ml-team@example.org, oncall@example.org"
    assert message.get_content_type() == "text/plain"
    body = message.get_content()
    assert "accuracy dropped by 0.060, from 0.800 to 0.740 (allowed drop 0.030)" in body
    assert "round_number: 4" in body


def test_recipient_parameter_overrides_connection_extra(notifiers, monkeypatch, smtp_server):
    receiver, port = smtp_server
    define_smtp_connection(monkeypatch, port)
    (alert,) = check_accuracy("product_group", 1, 0.3, None, **THRESHOLDS)

    notifier = notifiers.SmtpAlertNotifier(alert_payload(alert), to=["lead@example.org"], from_email="al@example.org")
    notifier.notify({})

    (envelope,) = receiver.envelopes
    assert (envelope.mail_from, envelope.rcpt_tos) == ("al@example.org", ["lead@example.org"])


def test_both_channels_receive_every_alert(notifiers, monkeypatch, webhook_receiver, smtp_server):
    mail, smtp_port = smtp_server
    define_webhook_connection(monkeypatch, webhook_receiver.port)
    define_smtp_connection(monkeypatch, smtp_port)
    alerts = check_accuracy("product_group", 9, 0.93, 0.88, **THRESHOLDS)

    sent = notifiers.send_alerts(alerts, webhook_conn_id="al_alert_webhook", smtp_conn_id="al_alert_smtp")

    assert sent == ["webhook:al_alert_webhook:target_reached", "email:al_alert_smtp:target_reached"]
    assert webhook_receiver.json_bodies()[0]["alert"]["kind"] == "target_reached"
    assert "reached the target 0.900" in mail.messages()[0].get_content()


def test_undefined_channels_are_skipped_with_a_log_line(notifiers, caplog):
    alerts = check_accuracy("product_group", 2, 0.1, None, **THRESHOLDS)
    with caplog.at_level(logging.WARNING, logger="al_notifiers"):
        sent = notifiers.send_alerts(alerts, webhook_conn_id="al_alert_webhook", smtp_conn_id="al_alert_smtp")
    assert sent == []
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 2
    assert "'al_alert_webhook' is not defined" in skipped[0]
    assert "'al_alert_smtp' is not defined" in skipped[1]


def test_webhook_notifier_as_templated_airflow_callback(notifiers, monkeypatch, webhook_receiver):
    # Used as on_failure_callback, Airflow calls notifier(context), which renders Jinja.
    define_webhook_connection(monkeypatch, webhook_receiver.port)
    notifier = notifiers.WebhookAlertNotifier({"text": "Task {{ task_id }} failed"})
    notifier({"task_id": "evaluate"})
    assert webhook_receiver.json_bodies() == [{"text": "Task evaluate failed"}]
