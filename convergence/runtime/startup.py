"""Start-up checks and the problems that stop a process from starting.

`convergence consume` and `serve` ask Pub/Sub and BigQuery once, with a bounded retry, before anything
runs: without it an unreachable emulator or endpoint makes the streaming pull retry forever, and missing
credentials only surface as a traceback from deep inside a client. Every failure here is a `StartupError`
listing what is wrong; `convergence.cli.main` turns it into a short message and exit code 2.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from google.api_core import exceptions as api_exceptions
from google.api_core.retry import Retry, if_exception_type
from google.auth import exceptions as auth_exceptions

from convergence.observability.logging import mask_text
from convergence.settings import Settings

# How long start-up keeps asking an endpoint that does not answer (a local emulator still booting).
STARTUP_CHECK_SECONDS = 10.0
# The same for a one-shot command's first BigQuery client. Without it the client's defaults apply: its
# DEFAULT_RETRY retries a refused connection for 600 s, with no timeout per request (DEFAULT_TIMEOUT None).
ONE_SHOT_CHECK_SECONDS = 5.0
_TRANSIENT = (api_exceptions.ServiceUnavailable, api_exceptions.DeadlineExceeded, ConnectionError, OSError)
# Settings whose values are secrets: never echoed, whatever message would quote them.
SECRET_SETTINGS = ("CA_ROOT_API_KEY", "SMTP_PASSWORD", "SLACK_WEBHOOK_URL")


class StartupError(RuntimeError):
    """The process cannot start; `problems` says why, one short line each."""

    def __init__(self, problems: list[str]):
        self.problems = list(dict.fromkeys(problems))  # in order, each once
        super().__init__("; ".join(self.problems))


def scrub(text: str, environ: dict[str, str] | None = None) -> str:
    """`text` safe to print: secret-shaped values and the values of secret settings masked."""
    environ = dict(os.environ if environ is None else environ)
    lowered = {key.upper(): value for key, value in environ.items()}
    for name in SECRET_SETTINGS:
        value = lowered.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "[REDACTED]")
    return mask_text(text)


def _first_line(error: BaseException) -> str:
    # google.auth errors often carry (message, cause): the message alone says what is wrong.
    first = error.args[0] if error.args and isinstance(error.args[0], str) else str(error)
    text = first.strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]


def credentials_problem(error: BaseException) -> str:
    return f"Google credentials: {_first_line(error)}"


def unreachable_problem(service: str, where: str, error: BaseException | None = None) -> str:
    reason = f" ({type(error).__name__})" if error is not None else ""
    return f"{service} unreachable at {where}{reason}"


def _retry(timeout: float) -> Retry:
    return Retry(predicate=if_exception_type(*_TRANSIENT), initial=0.25, maximum=2.0, timeout=timeout)


def _call_problem(service: str, where: str, what: str, create: str, error: Exception) -> str | None:
    """The start-up problem one failed call means (None: not one start-up knows about)."""
    if isinstance(error, auth_exceptions.GoogleAuthError | api_exceptions.Unauthenticated):
        return credentials_problem(error)
    if isinstance(error, api_exceptions.NotFound):
        return f"{what} does not exist ({create} creates it)"
    if isinstance(error, api_exceptions.PermissionDenied | api_exceptions.Forbidden):
        return f"no permission to read {what}: {_first_line(error)}"
    if isinstance(error, (api_exceptions.RetryError, *_TRANSIENT)):
        return unreachable_problem(service, where, getattr(error, "cause", None) or error)
    if isinstance(error, api_exceptions.GoogleAPICallError):  # something answers, but not as that service
        return f"{service} at {where} did not answer as expected: {_first_line(error)}"
    return None


def check_pubsub(settings: Settings, *, subscription: str | Sequence[str] | None, topic: str | None,
                 timeout: float = STARTUP_CHECK_SECONDS) -> list[str]:
    """Problems reaching Pub/Sub: the subscriptions this process pulls, the topic it publishes to."""
    from convergence.infra.clients import publisher_client, subscriber_client

    where = settings.pubsub_emulator_host or "pubsub.googleapis.com"
    problems: list[str] = []
    clients: list[Any] = []
    try:
        names = [subscription] if isinstance(subscription, str) else list(subscription or ())
        if names:
            subscriber = subscriber_client(settings)
            clients.append(subscriber)
            for name in names:
                path = settings.subscription_path(name)
                try:
                    subscriber.get_subscription(request={"subscription": path}, retry=_retry(timeout),
                                                timeout=min(5.0, timeout))
                except Exception as error:  # noqa: BLE001 - sorted into problems below; unknown ones re-raised
                    problem = _call_problem("Pub/Sub", where, f"Pub/Sub subscription {path}",
                                            "`convergence infra apply`", error)
                    if problem is None:
                        raise
                    problems.append(problem)
                    if "unreachable" in problem or "credentials" in problem:
                        return problems  # the topic would say the same
        if topic is not None:
            publisher = publisher_client(settings)
            clients.append(publisher)
            path = settings.topic_path(topic)
            try:
                publisher.get_topic(request={"topic": path}, retry=_retry(timeout), timeout=min(5.0, timeout))
            except Exception as error:  # noqa: BLE001 - as above
                problem = _call_problem("Pub/Sub", where, f"Pub/Sub topic {path}", "`convergence infra apply`",
                                        error)
                if problem is None:
                    raise
                problems.append(problem)
    except auth_exceptions.GoogleAuthError as error:  # building a client looks the credentials up
        problems.append(credentials_problem(error))
    finally:
        for client in clients:
            transport = getattr(client, "transport", None) or getattr(client, "_transport", None)
            closer = getattr(transport, "close", None)
            if closer is not None:
                closer()
    return problems


def check_bigquery(settings: Settings, *, timeout: float = STARTUP_CHECK_SECONDS) -> list[str]:
    """Problems reaching BigQuery: the central dataset every run logs to."""
    from convergence.warehouse.client import make_client

    where = settings.bigquery_endpoint or "bigquery.googleapis.com"
    try:
        client = make_client(settings)
    except auth_exceptions.GoogleAuthError as error:
        return [credentials_problem(error)]
    dataset = f"{client.project}.{settings.central_dataset}"
    try:
        client.get_dataset(dataset, retry=_retry(timeout), timeout=min(5.0, timeout))
    except Exception as error:  # noqa: BLE001 - sorted into problems below; unknown ones re-raised
        problem = _call_problem("BigQuery", where, f"BigQuery dataset {dataset}", "`convergence bootstrap`",
                                error)
        if problem is None:
            raise
        return [problem]
    finally:
        client.close()
    return []


def check_bigquery_answers(client: Any, settings: Settings, *, timeout: float = ONE_SHOT_CHECK_SECONDS) -> None:
    """Raise StartupError when BigQuery does not answer `client` or refuses its credentials. Any answer
    passes, a missing dataset too: that is the command's own business (`bootstrap` creates it)."""
    where = settings.bigquery_endpoint or "bigquery.googleapis.com"
    try:
        client.get_dataset(f"{client.project}.{settings.central_dataset}", retry=_retry(timeout),
                           timeout=min(5.0, timeout))
    except (auth_exceptions.GoogleAuthError, api_exceptions.Unauthenticated) as error:
        raise StartupError([credentials_problem(error)]) from None
    except (api_exceptions.RetryError, *_TRANSIENT) as error:
        cause = getattr(error, "cause", None) or error
        raise StartupError([unreachable_problem("BigQuery", where, cause)]) from None
    except api_exceptions.GoogleAPICallError:
        return  # it answered (a 403 or 404 included): the command meets that itself


def check_startup(settings: Settings, *, subscription: str | Sequence[str] | None, topic: str | None,
                  timeout: float = STARTUP_CHECK_SECONDS) -> None:
    """Raise StartupError listing every problem reaching Pub/Sub and BigQuery (nothing when all answer).
    Both are asked side by side: an unreachable pair costs one `timeout`, not two."""
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="startup-check") as pool:
        pubsub = pool.submit(check_pubsub, settings, subscription=subscription, topic=topic, timeout=timeout)
        bigquery = pool.submit(check_bigquery, settings, timeout=timeout)
        problems = pubsub.result() + bigquery.result()
    if problems:
        raise StartupError(problems)
