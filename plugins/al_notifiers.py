"""Airflow notifiers that deliver active-learning accuracy alerts by webhook and e-mail.

Airflow puts the ``plugins/`` folder on ``sys.path``, so DAGs import this module as
``al_notifiers``. The DAG's alert-check task calls :func:`send_alerts`; the two notifier
classes can also be used on their own, e.g. as ``on_failure_callback``.

Channels and their Airflow connections (see :func:`send_alerts`):

* webhook -- connection ``al_alert_webhook``: the JSON payload of
  :func:`al_tasks.loop.alerts.alert_payload` is POSTed to the connection's URL (Slack incoming
  webhooks accept it as is);
* e-mail  -- connection ``al_alert_smtp``: a plain-text mail to the addresses in the
  connection extra ``to`` (or the notifier's ``to``).

A channel whose connection id is None or not defined is skipped with a log line: a
deployment without e-mail must still be able to run the loop. A channel that is defined
but fails does not stop the others; the failures are raised together at the end so the
calling task fails visibly. :func:`send_alerts` returns the messages delivered, e.g.
``["webhook:al_alert_webhook:below_threshold"]``.

Connections are read with ``BaseHook.get_connection``, i.e. from the configured secrets
backends: ``AIRFLOW_CONN_<ID>`` environment variables, then (inside a task) the
metadata database through the Execution API. Outside a running task -- tests, scripts,
``python -c`` -- Airflow 3's task SDK falls back to the environment-variable backend
(plus any external backend configured in ``[secrets]``), so ``AIRFLOW_CONN_*`` variables
work there without a database or an API server.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections.abc import Iterable, Mapping, Sequence
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from airflow.sdk import BaseHook, BaseNotifier, Connection
from airflow.sdk.exceptions import AirflowNotFoundException

from al_tasks.loop.alerts import Alert, alert_payload

log = logging.getLogger(__name__)

DEFAULT_WEBHOOK_CONN_ID = "al_alert_webhook"
DEFAULT_SMTP_CONN_ID = "al_alert_smtp"
#: Seconds to wait for the webhook receiver / mail server (connection extra ``timeout``).
DEFAULT_TIMEOUT_SECONDS = 10.0

_URL_SCHEMES = ("http", "https")


class AlertDeliveryError(RuntimeError):
    """An alert could not be delivered (non-2xx webhook answer, SMTP refusal, ...)."""


# --- webhook ---------------------------------------------------------------------------


def webhook_url(connection: Connection) -> str:
    """The URL an HTTP connection points to.

    Accepted shapes (all produce ``http://127.0.0.1:8080/hooks/al``)::

        AIRFLOW_CONN_AL_ALERT_WEBHOOK='http://127.0.0.1:8080/hooks/al'
        AIRFLOW_CONN_AL_ALERT_WEBHOOK='{"conn_type": "http", "host": "127.0.0.1",
                                        "port": 8080, "extra": {"endpoint": "/hooks/al"}}'
        AIRFLOW_CONN_AL_ALERT_WEBHOOK='{"conn_type": "http",
                                        "host": "http://127.0.0.1:8080/hooks/al"}'

    * scheme: the one in ``host``, else ``schema`` when it is ``http``/``https`` (the HTTP
      provider's convention), else the connection type when it is ``https``, else http;
    * path: the one in ``host``, followed by extra ``endpoint`` or else by ``schema``
      when that is not a scheme (the URI form ``http://host:port/path`` stores the path
      there).

    Parameters
    ----------
    connection : Connection

    Returns
    -------
    str, absolute URL

    Raises
    ------
    ValueError
        the connection has no host
    """
    host = (connection.host or "").strip()
    if not host:
        raise ValueError(f"connection {connection.conn_id!r} has no host")
    schema = (connection.schema or "").strip()
    extra = connection.extra_dejson

    if "://" in host:
        scheme, netloc, base_path, query, _ = urlsplit(host)
    else:
        if schema.lower() in _URL_SCHEMES:
            scheme = schema.lower()
        elif (connection.conn_type or "").lower() == "https":
            scheme = "https"
        else:
            scheme = "http"
        netloc, _, base_path = host.partition("/")
        query = ""
    if connection.port and not _netloc_has_port(netloc):
        netloc = f"{netloc}:{connection.port}"

    endpoint = str(extra.get("endpoint") or "")
    if not endpoint and schema.lower() not in _URL_SCHEMES:
        endpoint = schema
    path = "/".join(part.strip("/") for part in (base_path, endpoint) if part.strip("/"))
    return urlunsplit((scheme, netloc, "/" + path if path else "", query, ""))


def _netloc_has_port(netloc: str) -> bool:
    # "[::1]" has colons but no port; "[::1]:80" and "host:80" have one.
    return netloc.rsplit("]", 1)[-1].count(":") == 1


class WebhookAlertNotifier(BaseNotifier):
    """POST an alert payload as JSON to the URL of an HTTP connection.

    The URL comes from :func:`webhook_url`. Optional connection fields: ``login`` /
    ``password`` (HTTP basic auth), extra ``headers`` (dict of request headers) and extra
    ``timeout`` (seconds, default 10).

    The request is sent with ``requests`` rather than the HTTP provider's ``HttpHook``:
    that hook reads ``schema`` as the URL scheme and sends every other extra field as a
    request header, so the common URI form ``http://host:port/path`` would break.

    Parameters
    ----------
    alert_payload : dict, JSON-serialisable body, e.g. from
        :func:`al_tasks.loop.alerts.alert_payload`. Templated when the notifier is used as an
        Airflow callback.
    http_conn_id : str, Airflow connection id
    """

    template_fields: Sequence[str] = ("alert_payload", "http_conn_id")

    def __init__(self, alert_payload: dict[str, Any], http_conn_id: str = DEFAULT_WEBHOOK_CONN_ID) -> None:
        super().__init__()
        self.alert_payload = alert_payload
        self.http_conn_id = http_conn_id

    def notify(self, context: Mapping[str, Any]) -> None:
        """Send the payload.

        Parameters
        ----------
        context : Mapping[str, Any], Airflow context (unused, may be empty)

        Raises
        ------
        AlertDeliveryError
            the receiver answered with a non-2xx status
        requests.RequestException
            the receiver could not be reached
        """
        connection = BaseHook.get_connection(self.http_conn_id)
        extra = connection.extra_dejson
        url = webhook_url(connection)
        auth = (connection.login, connection.password or "") if connection.login else None
        response = requests.post(
            url,
            json=self.alert_payload,
            headers=dict(extra.get("headers") or {}),
            auth=auth,
            timeout=float(extra.get("timeout", DEFAULT_TIMEOUT_SECONDS)),
            # A redirect would turn the POST into a GET and hide the failure: 3xx is an error.
            allow_redirects=False,
        )
        if not 200 <= response.status_code < 300:
            raise AlertDeliveryError(
                f"webhook {self.http_conn_id!r} ({url}) answered {response.status_code} "
                f"{response.reason}: {response.text[:200]}"
            )
        self.log.info("Alert posted to webhook %r (%s): %s", self.http_conn_id, url, response.status_code)


# --- e-mail ----------------------------------------------------------------------------


def email_subject(alert_payload: Mapping[str, Any]) -> str:
    """Subject line for an alert payload.

    Parameters
    ----------
    alert_payload : Mapping[str, Any], from :func:`al_tasks.loop.alerts.alert_payload`
        (or any dict with a ``text``)

    Returns
    -------
    str
    """
    alert = alert_payload.get("alert")
    if isinstance(alert, Mapping) and {"kind", "task", "round_number"} <= alert.keys():
        return f"[active learning] {alert['task']}: {alert['kind']} in round {alert['round_number']}"
    text_lines = str(alert_payload.get("text") or "alert").splitlines() or ["alert"]
    # Header lines must stay short; the full text is in the body.
    return f"[active learning] {text_lines[0]}"[:200]


def email_body(alert_payload: Mapping[str, Any]) -> str:
    """Plain-text body for an alert payload: the text, then one ``name: value`` line per field.

    Parameters
    ----------
    alert_payload : Mapping[str, Any]

    Returns
    -------
    str
    """
    lines = [str(alert_payload.get("text", ""))]
    alert = alert_payload.get("alert")
    if isinstance(alert, Mapping):
        lines.append("")
        lines.extend(f"{name}: {value}" for name, value in alert.items() if name != "message")
    return "\n".join(lines) + "\n"


def _address_list(addresses: str | Iterable[str] | None) -> list[str]:
    """Addresses from ``"a@x, b@y; c@z"`` or an iterable of strings."""
    if not addresses:
        return []
    if isinstance(addresses, str):
        addresses = addresses.replace(";", ",").split(",")
    return [a.strip() for a in addresses if a and a.strip()]


def _flag(value: Any) -> bool:
    """Connection extras arrive as JSON booleans or, from URI query strings, as text."""
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


class SmtpAlertNotifier(BaseNotifier):
    """Send an alert payload as a plain-text e-mail through an SMTP connection.

    Uses the SMTP provider's connection conventions, so an existing ``smtp`` connection
    works unchanged: ``host``, ``port``, ``login``/``password`` (log in when both set),
    extra ``from_email``, ``timeout``, ``disable_ssl`` (default false: implicit TLS, as in
    ``SmtpHook``) and ``disable_tls`` (default false: STARTTLS when SSL is off). Extra
    ``to`` holds the default recipients. The mail is sent with ``smtplib`` because
    ``SmtpHook.send_email_smtp`` only sends HTML.

    Parameters
    ----------
    alert_payload : dict, e.g. from :func:`al_tasks.loop.alerts.alert_payload`
    smtp_conn_id : str, Airflow connection id
    to : str | Iterable[str] | None, recipients (``"a@x, b@y"`` or a list);
        None: the connection extra ``to``
    from_email : str | None, sender; None: extra ``from_email``, else the login
        when it is an address
    """

    template_fields: Sequence[str] = ("alert_payload", "smtp_conn_id", "to", "from_email")

    def __init__(
        self,
        alert_payload: dict[str, Any],
        smtp_conn_id: str = DEFAULT_SMTP_CONN_ID,
        to: str | Iterable[str] | None = None,
        from_email: str | None = None,
    ) -> None:
        super().__init__()
        self.alert_payload = alert_payload
        self.smtp_conn_id = smtp_conn_id
        self.to = to
        self.from_email = from_email

    def notify(self, context: Mapping[str, Any]) -> None:
        """Send the mail.

        Parameters
        ----------
        context : Mapping[str, Any], Airflow context (unused, may be empty)

        Raises
        ------
        ValueError
            no recipient or no sender configured
        smtplib.SMTPException, OSError
            the server refused or could not be reached
        """
        connection = BaseHook.get_connection(self.smtp_conn_id)
        extra = connection.extra_dejson
        recipients = _address_list(self.to) or _address_list(extra.get("to"))
        if not recipients:
            raise ValueError(f"no recipient: pass to=... or set extra 'to' on connection {self.smtp_conn_id!r}")
        sender = self.from_email or extra.get("from_email")
        if not sender and connection.login and "@" in connection.login:
            sender = connection.login
        if not sender:
            raise ValueError(
                f"no sender: pass from_email=... or set extra 'from_email' on connection {self.smtp_conn_id!r}"
            )

        message = EmailMessage()
        message["Subject"] = email_subject(self.alert_payload)
        message["From"] = sender
        message["To"] = ", ".join(recipients)
        message.set_content(email_body(self.alert_payload))  # text/plain; charset utf-8

        host = connection.host or "localhost"
        port = connection.port or 0  # 0: smtplib's default port for the protocol
        timeout = float(extra.get("timeout", DEFAULT_TIMEOUT_SECONDS))
        use_ssl = not _flag(extra.get("disable_ssl", False))
        use_starttls = not use_ssl and not _flag(extra.get("disable_tls", False))

        client: smtplib.SMTP
        if use_ssl:
            client = smtplib.SMTP_SSL(host, port, timeout=timeout, context=ssl.create_default_context())
        else:
            client = smtplib.SMTP(host, port, timeout=timeout)
        with client:
            if use_starttls:
                client.starttls(context=ssl.create_default_context())
            if connection.login and connection.password:
                client.login(connection.login, connection.password)
            refused = client.send_message(message, from_addr=sender, to_addrs=recipients)
        if refused:
            raise AlertDeliveryError(f"mail server {host}:{port} refused recipients {refused}")
        self.log.info("Alert mailed via %r to %s", self.smtp_conn_id, ", ".join(recipients))


# --- all channels ----------------------------------------------------------------------


def _connection_defined(conn_id: str | None) -> bool:
    if not conn_id:
        return False
    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return False
    return True


def send_alerts(
    alerts: Sequence[Alert],
    *,
    webhook_conn_id: str | None = DEFAULT_WEBHOOK_CONN_ID,
    smtp_conn_id: str | None = DEFAULT_SMTP_CONN_ID,
    context: Mapping[str, Any] | None = None,
) -> list[str]:
    """Send every alert on every configured channel (skipped channels: module docstring);
    returns one ``"<channel>:<conn id>:<alert kind>"`` entry per message delivered.

    Parameters
    ----------
    alerts : e.g. from :func:`al_tasks.loop.alerts.check_accuracy`
    webhook_conn_id : HTTP connection for the webhook channel
    smtp_conn_id : SMTP connection for the e-mail channel
    context : Airflow context, passed to the notifiers

    Raises
    ------
    AlertDeliveryError
        at least one message on a defined channel failed (the others were still sent)
    """
    if not alerts:
        return []
    channels = {"webhook": webhook_conn_id, "email": smtp_conn_id}
    active = {}
    for channel, conn_id in channels.items():
        if _connection_defined(conn_id):
            active[channel] = conn_id
        else:
            log.warning(
                "Alert channel %s skipped: connection %r is not defined "
                "(set AIRFLOW_CONN_%s or add it in Admin > Connections).",
                channel,
                conn_id,
                str(conn_id or "<none>").upper(),
            )

    sent: list[str] = []
    failures: list[str] = []
    for alert in alerts:
        payload = alert_payload(alert)
        for channel, conn_id in active.items():
            notifier: BaseNotifier
            if channel == "webhook":
                notifier = WebhookAlertNotifier(payload, http_conn_id=conn_id)
            else:
                notifier = SmtpAlertNotifier(payload, smtp_conn_id=conn_id)
            try:
                # notify(), not notifier(context): the payload is finished text, and
                # Jinja must not render a task name or message that contains "{{".
                notifier.notify(dict(context or {}))
            except Exception as exc:  # one broken channel must not silence the other
                log.error("Alert %s on %s (%s) failed: %s", alert.kind, channel, conn_id, exc)
                failures.append(f"{channel}:{conn_id}:{alert.kind}: {exc}")
            else:
                sent.append(f"{channel}:{conn_id}:{alert.kind}")
    if failures:
        raise AlertDeliveryError(f"{len(failures)} alert message(s) failed (sent: {sent}): " + "; ".join(failures))
    return sent
