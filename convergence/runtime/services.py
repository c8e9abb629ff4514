"""The services a run may use, reached by processors as `context.services`.

Built lazily: a process only creates the clients it actually uses, and tests can build Services
against the emulators with the same code as production.
"""

from __future__ import annotations

import asyncio
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp

from convergence.httpclient import AddressGuard, HttpClient, RetryPolicy
from convergence.pipeline.services import RunServices
from convergence.settings import Settings

if TYPE_CHECKING:
    from google.cloud.bigquery import Client as BigQueryClient

    from convergence.kms import Cipher
    from convergence.notifications.notifier import FailureNotifier
    from convergence.pipeline.executor import ErrorClassifier
    from convergence.publisher.events import EventPublisher
    from convergence.publisher.requests import RequestPublisher
    from convergence.tenancy.credentials import CredentialStore
    from convergence.tenancy.gate import OrgGate
    from convergence.warehouse.runlog import RunLog
    from convergence.warehouse.writer import Writer


class PlatformServices(RunServices, Protocol):
    """RunServices plus what the consumer, the HTTP door, the console and the CLI use around runs."""

    @property
    def writer(self) -> Writer: ...

    @property
    def credentials(self) -> CredentialStore: ...

    @property
    def cipher(self) -> Cipher: ...

    @property
    def gate(self) -> OrgGate: ...

    @property
    def runlog(self) -> RunLog: ...

    @property
    def events(self) -> EventPublisher: ...

    @property
    def requests(self) -> RequestPublisher: ...

    @property
    def handoff(self) -> RequestPublisher: ...

    @property
    def overflow(self) -> RequestPublisher: ...

    @property
    def notifier(self) -> FailureNotifier: ...

    @property
    def error_classifiers(self) -> list[ErrorClassifier]: ...

    async def aclose(self) -> None: ...

    def close(self) -> None: ...


class Services:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._sessions: dict[int, aiohttp.ClientSession] = {}

    # -- BigQuery --------------------------------------------------------------------------
    @cached_property
    def bigquery(self) -> BigQueryClient:
        from convergence.warehouse.client import make_client

        return make_client(self.settings)

    def bigquery_for(self, project: str, credentials: Any = None) -> BigQueryClient:
        """A client on another project (a customer's billing export), with the customer's credentials."""
        from convergence.warehouse.client import make_client

        return make_client(self.settings, project=project, credentials=credentials)

    @cached_property
    def writer(self) -> Writer:
        from convergence.warehouse.writer import Writer

        return Writer(self.bigquery, self.settings)

    @cached_property
    def runlog(self) -> RunLog:
        from convergence.warehouse.runlog import RunLog

        return RunLog(self.bigquery, self.settings)

    def org_dataset(self, org_slug: str) -> str:
        from convergence.warehouse.identifiers import validate_org_slug

        return self.settings.org_dataset(validate_org_slug(org_slug))

    # -- tenancy ---------------------------------------------------------------------------
    @cached_property
    def cipher(self) -> Cipher:
        from convergence.kms import make_cipher

        return make_cipher(self.settings)

    @cached_property
    def credentials(self) -> CredentialStore:
        from convergence.tenancy.credentials import CredentialStore

        return CredentialStore(self.bigquery, self.settings, self.cipher)

    @cached_property
    def gate(self) -> OrgGate:
        from convergence.tenancy.gate import OrgGate

        return OrgGate(self.bigquery, self.settings)

    # -- Pub/Sub ---------------------------------------------------------------------------
    @cached_property
    def events(self) -> EventPublisher:
        from convergence.publisher.events import EventPublisher

        return EventPublisher(self.settings)

    @cached_property
    def requests(self) -> RequestPublisher:
        from convergence.publisher.requests import RequestPublisher

        return RequestPublisher(self.settings)

    @cached_property
    def handoff(self) -> RequestPublisher:
        """Publisher to the topic the pull workers read when push delivery hands a long run over."""
        from convergence.publisher.requests import RequestPublisher

        return RequestPublisher(self.settings, topic=self.settings.handoff_topic)

    @cached_property
    def overflow(self) -> RequestPublisher:
        """Publisher to the overflow topic: runs of an org over its cap, handed off once (consumer/slots.py)."""
        from convergence.publisher.requests import RequestPublisher

        return RequestPublisher(self.settings, topic=self.settings.overflow_topic)

    @cached_property
    def notifier(self) -> FailureNotifier:
        """Failure hook: email/Slack to the platform's recipients when configured (convergence/notifications/),
        else an error log line; and to the org's admin email and Slack webhook unless it opted out."""
        from convergence.notifications.notifier import FailureNotifier
        from convergence.tenancy.contacts import OrgContacts

        return FailureNotifier(self.settings, OrgContacts(self))

    @cached_property
    def error_classifiers(self) -> list[ErrorClassifier]:
        from convergence.warehouse.errors import classify_google_error

        return [classify_google_error]

    # -- outbound HTTP ---------------------------------------------------------------------
    def http(self, provider: str, rate_per_second: float | None = None,
             policy: RetryPolicy | None = None) -> HttpClient:
        """A retrying JSON client on a session shared per event loop (sessions are loop-bound)."""
        loop = asyncio.get_running_loop()
        guard = AddressGuard(enabled=self.settings.is_production,
                             allowed_hosts=frozenset(self.settings.outbound_allowed_hosts))
        session = self._sessions.get(id(loop))
        if session is None or session.closed:
            # The guard's resolver checks each address the connector is about to connect to.
            session = guard.session(timeout=aiohttp.ClientTimeout(total=120, connect=15))
            self._sessions[id(loop)] = session
        from convergence.observability.metrics import provider_response

        return HttpClient(session, provider, guard=guard, policy=policy, rate_per_second=rate_per_second,
                          on_response=provider_response)

    async def aclose(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()

    def close(self) -> None:
        """Flush buffered logs and events; close clients that were created."""
        for name in ("runlog", "events", "requests", "handoff", "overflow"):
            if name in self.__dict__:
                closer = getattr(self.__dict__[name], "close", None)
                if closer:
                    closer()



def _conforms(services: Services) -> PlatformServices:
    # mypy checks here that the wiring object offers every attribute the Protocols describe.
    return services
