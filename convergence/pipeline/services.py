"""What a run may use through `RunContext.services`, as Protocols: the runtime's wiring object
(convergence.runtime.services.Services) is one implementation, test doubles are others.

Only what processors reach is described here. The adapters' own types (BigQuery client, KMS, aiohttp) stay
out of the core: the BigQuery client is opaque (`Any`), the rest are described by the calls processors make.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from convergence.settings import Settings


class JsonHttpClient(Protocol):
    """A retrying JSON client for one provider (convergence.httpclient.HttpClient)."""

    async def request_json(self, method: str, url: str, *, params: Mapping[str, Any] | list[Any] | None = None,
                           headers: Mapping[str, str] | None = None, json: Any = None,
                           auth: Any = None) -> tuple[Any, Mapping[str, str]]:
        """(decoded JSON body, response headers); raises a step error once the retries are spent."""
        ...


class WriteSummary(Protocol):
    """What a write reports back (convergence.warehouse.writer.WriteResult)."""

    @property
    def table_id(self) -> str: ...

    @property
    def rows_written(self) -> int: ...


class TableWriter(Protocol):
    """Rows into one warehouse table, in one of the write modes (convergence.warehouse.writer.Writer).
    Blocking: processors call it through `asyncio.to_thread`."""

    def write(self, dataset: str, table: str, rows: Iterable[Mapping[str, Any]], *,
              mode: str = "append", org_slug: str | None = None,
              date_column: str | None = None, date_range: tuple[Any, Any] | None = None,
              key_columns: Sequence[str] | None = None, schema_path: str | Path | None = None,
              partitioning: Any = None, clustering: Sequence[str] | None = None,
              streaming: bool = False) -> WriteSummary: ...


class CredentialVault(Protocol):
    """The org's stored provider credentials, encrypted at rest (convergence.tenancy.credentials).
    Blocking calls; `get` raises LookupError when the org has none."""

    def canonical(self, provider: str) -> str: ...

    def get(self, org_slug: str, provider: str) -> str: ...

    def put(self, org_slug: str, provider: str, secret: str, *, credential_name: str | None = None,
            validation_status: str = "PENDING") -> str: ...

    def set_status(self, org_slug: str, provider: str, status: str, error: str | None = None, *,
                   only_from_valid: bool = False, not_changed_since: datetime | None = None) -> int: ...


class RunServices(Protocol):
    """The adapters a run's processors reach, provided by the runtime; the core never imports them."""

    @property
    def settings(self) -> Settings: ...

    @property
    def bigquery(self) -> Any:
        """The service's BigQuery client (google.cloud.bigquery.Client); processors use it through
        convergence.warehouse.facade.Warehouse."""
        ...

    def bigquery_for(self, project: str, credentials: Any = None) -> Any:
        """A BigQuery client on another project (a customer's billing export), with its credentials."""
        ...

    def org_dataset(self, org_slug: str) -> str:
        """The org's dataset name; raises on an invalid slug."""
        ...

    @property
    def writer(self) -> TableWriter: ...

    @property
    def credentials(self) -> CredentialVault: ...

    def http(self, provider: str, rate_per_second: float | None = None, policy: Any = None) -> JsonHttpClient:
        """A client for one provider on a session shared per event loop; `policy` is a
        convergence.httpclient.RetryPolicy (None: the default retries)."""
        ...
