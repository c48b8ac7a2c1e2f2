"""No credential in the repository: every tracked text file is scanned.

Looked for: AWS access key ids and secret keys, ``password: <value>`` (and ``=``, JSON,
"password '<value>'" as a log line prints it), private keys. Values that are obviously
placeholders or throw-away test values (``<secret key>``, ``...``, ``test-...``,
``example``) pass. The demo prints the local credentials it generates at each start;
none is ever written into a tracked file.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from al_tasks.config import REPO_ROOT

_Q = "['\"]"
PATTERNS = {
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "secret key": re.compile(
        r"(?i)secret(?:[_ -]?access)?(?:[_ -]?key)?" + _Q + r"?[ \t]*[:=][ \t]*" + _Q + r"?([A-Za-z0-9/+=_\-]{12,})"
    ),
    "quoted pass word": re.compile(r"(?i)passw(?:or)?d" + _Q + r"?\s*[:=]?\s*" + _Q + r"([^'\"\n]{4,})" + _Q),
    "pass word setting": re.compile(r"(?i)^\s*[\w.]*passw(?:or)?d\s*[:=]\s*([^\s'\"#]{4,})\s*$", re.MULTILINE),
    "AWS secret key shape": re.compile(
        r"(?<![A-Za-z0-9/+=])(?=[^\s]*[A-Z])(?=[^\s]*[a-z])(?=[^\s]*\d)[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"
    ),
    "pass word in a URL": re.compile(r"://[^/\s:@'\"]+:([^/\s@'\"]+)@"),
    "private key": re.compile("-----BEGIN (?:[A-Z]+ )?PRIV" + "ATE KEY-----"),
}
#: Words that mark a value as a placeholder or a throw-away test value.
FAKE_MARKERS = (
    "<",
    ">",
    "...",
    "…",
    "{",
    "$",
    "*",
    "(",
    "example",
    "test",
    "fake",
    "dummy",
    "changeme",
    "wrong",
    "xxxx",
)
SKIPPED_SUFFIXES = (".gz", ".png", ".jpg", ".parquet", ".zip", ".xlsx", ".lock")


def is_placeholder(value: str) -> bool:
    lowered = value.lower()
    return any(marker in lowered for marker in FAKE_MARKERS) or ("." in value and value.replace(".", "").isidentifier())


def findings(text: str, python: bool = False) -> list[tuple[str, str]]:
    """(kind, matched text) of every credential-looking string in ``text``."""
    found = []
    for kind, pattern in PATTERNS.items():
        for match in pattern.finditer(text):
            if kind == "pass word setting" and python:
                continue  # ``self.password = password`` is code, not a value
            value = match.group(match.lastindex or 0)
            if not is_placeholder(value):
                found.append((kind, match.group(0)))
    return found


def tracked_text_files() -> list[str]:
    names = (
        subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    return [n for n in names if n and not n.endswith(SKIPPED_SUFFIXES)]


def test_no_tracked_file_holds_a_credential():
    files = tracked_text_files()
    assert len(files) > 50 and "docs/airflow.md" in files
    leaks = {}
    for name in files:
        path = REPO_ROOT / name
        if not path.is_file():
            continue  # deleted in the work tree
        raw = path.read_bytes()
        if b"\0" in raw[:8192]:
            continue
        found = findings(raw.decode("utf-8", "replace"), python=name.endswith(".py"))
        if found:
            leaks[name] = found
    assert not leaks, f"credential-looking strings in tracked files: {leaks}"


@pytest.mark.parametrize(
    "line",
    [
        # The shapes of what a past demo run's log left in docs/airflow.md (values made up here).
        "Airflow UI: http://127.0.0.1:8080/  (user 'admin', password '" + "Zq8vLw2Rt5Yp1KmN')",
        "(AWS_ACCESS_KEY_ID=demo-3f2a AWS_SECRET_ACCESS_KEY=" + "H7dK-pQ2rS9tU4vW-xY1zA3bC5dE7fG9)",
        '{"username": "admin", "password": "' + 'hunter2hunter2"}',
        "aws_access_key_id = " + "AKIA" + "Q3EGRZ5W7XN2B4LD",
        "aws_secret_access_key: " + "wJalrXUtnFEMI/K7MDENG" + "/bPxRfiCYzQ9LmN4KpA",
        "smtp_password = " + "s3cr3tP4ss",
        "      POSTGRES_PASSWORD: " + "airflow",
        "sql_alchemy_conn = postgresql://airflow:" + "airflow@db:5432/airflow",
        "-----BEGIN RSA PRIV" + "ATE KEY-----",
    ],
)
def test_the_scan_catches_credentials(line):
    assert findings(line), line


@pytest.mark.parametrize(
    "line",
    [
        "(user 'admin', password '<printed by the demo>')",
        "AWS_SECRET_ACCESS_KEY=<random>",
        '"login": "<access key>", "password": "<secret key>",',
        '-d \'{"username": "admin", "password": "..."}\'',
        'SECRET_KEY = "test-secret-key-0123456789"',
        "connection.update(login=s3.access_key, password=s3.secret_key)",
        "commit 8a18093c0fd0f7b1e2d3c4b5a6978877665544332211",
        "POSTGRES_PASSWORD: ${AL_POSTGRES_PASSWORD:?set AL_POSTGRES_PASSWORD}",
        "postgresql+psycopg2://airflow:${AL_POSTGRES_PASSWORD}@postgres:5432/airflow",
    ],
)
def test_placeholders_pass(line):
    assert not findings(line), line
