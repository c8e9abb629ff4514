"""Settings model (pydantic-settings).

Every external address (emulators, KMS, provider base URLs) is a setting so that the embedded local
stack and production differ only in environment variables.
"""

from __future__ import annotations

import re
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from convergence.paths import bundled_configs_dir, local_state_dir

_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
_RESOURCE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}$")


# Cloud Run sends SIGKILL this long after SIGTERM (Cloud Run docs, "Container runtime contract"); `docker stop`
# defaults to the same 10 s.
PLATFORM_STOP_SECONDS = 10.0
# Kept free at the end of that window for the interpreter's own exit.
EXIT_MARGIN_SECONDS = 1.0
# Kept for flushing run-log rows and events after the runs' grace: production refuses a longer grace.
MIN_FLUSH_SECONDS = 2.0


class Environment(StrEnum):
    LOCAL = "local"
    DEVELOPMENT = "development"
    STAGING = "staging"
    PRODUCTION = "production"

    @property
    def dataset_suffix(self) -> str:
        """Suffix of per-org datasets: `{org_slug}_{suffix}` (e.g. `acme_prod`)."""
        return {"local": "local", "development": "dev", "staging": "stage", "production": "prod"}[self.value]


class SettingsError(RuntimeError):
    """Settings are missing or invalid; the message lists every problem."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    environment: Environment = Environment.DEVELOPMENT
    gcp_project_id: str = "convergence-local"
    bigquery_location: str = "US"
    central_dataset: str = "organizations"

    # Emulators: set by the local stack, never in production.
    pubsub_emulator_host: str | None = None
    bigquery_emulator_host: str | None = None

    # Pub/Sub resources.
    requests_topic: str = "pipeline-requests"
    requests_subscription: str = "pipeline-requests-worker"
    events_topic: str = "pipeline-events"
    ticks_topic: str = "scheduler-ticks"
    ticks_subscription: str = "scheduler-ticks-worker"
    dead_letter_topic: str = "pipeline-requests-dead-letter"
    dead_letter_subscription: str = "pipeline-requests-dead-letter-worker"
    max_delivery_attempts: int = Field(default=5, ge=5, le=100)
    retry_min_backoff_seconds: int = Field(default=10, ge=0, le=600)
    retry_max_backoff_seconds: int = Field(default=600, ge=0, le=600)
    ack_deadline_seconds: int = Field(default=60, ge=10, le=600)
    # Failed scheduler ticks get their own dead-letter topic: the requests DLQ holds run requests only.
    ticks_dead_letter_topic: str = "scheduler-ticks-dead-letter"
    ticks_dead_letter_subscription: str = "scheduler-ticks-dead-letter-hold"
    # Scheduler: a tick covers the slots in (tick - tick_window_minutes, tick]. At least the ticks' period
    # (Cloud Scheduler job: hourly); longer catches up missed ticks (the ledger skips what already went out).
    tick_window_minutes: int = Field(default=60, ge=1, le=7 * 24 * 60)
    # Push mode (Cloud Run): set push_endpoint to create a push subscription on the requests topic. The pull
    # subscription then reads handoff_topic, where the push handler forwards runs too long for a push request.
    push_endpoint: str | None = None
    push_subscription: str = "pipeline-requests-push"
    push_ack_deadline_seconds: int = Field(default=600, ge=10, le=600)
    handoff_topic: str = "pipeline-requests-handoff"
    # Runs of an org over its cap are handed off here once; their own subscription waits for the org's
    # slots by the lease, so they never fill the flow control of the requests subscription.
    overflow_topic: str = "pipeline-requests-overflow"
    overflow_subscription: str = "pipeline-requests-overflow-worker"

    # Consumer: concurrency and flow control.
    consumer_workers: int = Field(default=8, ge=1, le=256)
    per_org_concurrency: int = Field(default=2, ge=1, le=256)
    max_lease_extension_seconds: int = Field(default=90, ge=10, le=600)
    # Running runs' share of the 10 s Cloud Run allows between SIGTERM and SIGKILL (Cloud Run docs, "Container
    # runtime contract"); the rest flushes run-log rows and events.
    shutdown_grace_seconds: float = Field(default=6.0, ge=0)
    metrics_port: int | None = None
    # Hot path batching (consumer/admission.py, convergence/runtime/batching.py): concurrent runs share BigQuery calls.
    # An org's gate standing (status, subscription, plan, runs today) is reused this long; a suspension
    # therefore takes effect within this many seconds on a consumer that checked the org (0: every run).
    gate_cache_seconds: float = Field(default=5.0, ge=0, le=300)
    # Events are ordered per org through this many ordering keys (publisher/events.py): an org's events
    # always share one key; fewer keys, bigger publish batches.
    events_ordering_keys: int = Field(default=16, ge=1, le=1024)
    # How long a batch (admission lookups, run-log rows) waits for company before going out.
    batch_delay_ms: float = Field(default=5.0, ge=0, le=1000)
    # Per-org gauges (runs waiting/running) for at most this many orgs per process; 0: aggregate only.
    metrics_org_label_limit: int = Field(default=0, ge=0, le=1000)
    # OpenTelemetry spans (observability/otel.py): "none" (the default: no span is made), "cloud_trace"
    # (production) or "console" (stderr). Sampled per trace id, so every process keeps or drops a run alike.
    tracing_exporter: Literal["none", "cloud_trace", "console"] = "none"
    tracing_sample_ratio: float = Field(default=1.0, ge=0, le=1)

    # Pipelines.
    configs_dir: Path = Field(default_factory=bundled_configs_dir)
    # Where ps_types are looked up, in order (plugin packages after the built-in `processors`).
    processor_packages: list[str] = Field(default_factory=lambda: ["convergence.processors"])
    write_batch_size: int = Field(default=1000, ge=1, le=50_000)
    streaming_insert_threshold: int = Field(default=100, ge=1)
    # Upper bound on the Google client's own retries of one BigQuery call (its default is 600 s).
    bigquery_retry_deadline_seconds: float = Field(default=60.0, gt=0, le=600)

    # Credentials.
    kms_key_name: str | None = None
    kms_endpoint: str | None = None
    local_keyring_path: Path = Field(default_factory=lambda: local_state_dir() / "keyring.key")

    # HTTP door and security.
    ca_root_api_key: SecretStr | None = None
    disable_auth: bool = False
    rate_limit_enabled: bool = True
    rate_limit_requests_per_minute: int = Field(default=100, ge=1)
    rate_limit_global_requests_per_minute: int = Field(default=10_000, ge=1)
    # HTTP door: a verified org API key is trusted this long without asking BigQuery again (0: every
    # request). A revoked key keeps working at most this long on an instance that verified it.
    api_key_cache_seconds: float = Field(default=30.0, ge=0, le=600)
    # Browser origins allowed to call the HTTP door (CORS), as JSON: '["https://app.example.com"]'.
    # Empty (the default): no cross-origin call is allowed. "*" is refused in production.
    cors_origins: list[str] = Field(default_factory=list)
    # Signed run requests (schemas/signing.py): the first key signs what this process publishes, every key
    # verifies. REQUIRE_SIGNED_REQUESTS makes the consumer refuse unsigned or badly signed requests.
    request_signing_keys: list[SecretStr] = Field(default_factory=list)
    require_signed_requests: bool = False
    push_verify_token: bool = True
    push_audience: str | None = None
    push_service_account_email: str | None = None
    # Where the OIDC signing certs ({kid: PEM}) come from; a setting so tests serve their own.
    push_certs_url: str = "https://www.googleapis.com/oauth2/v1/certs"
    # A 10 MB message is ~13.4 MB once base64'd in the push envelope; 14 MiB leaves room for attributes.
    push_max_body_bytes: int = Field(default=14 * 1024 * 1024, ge=1024)
    # Time kept back from the ack deadline for answering a push; None: 10% of it, between 2 and 15 s.
    push_deadline_margin_seconds: float | None = Field(default=None, ge=0)
    http_host: str = "0.0.0.0"  # noqa: S104 - containers listen on all interfaces
    http_port: int = 8080

    # Logging.
    log_level: str = "INFO"
    log_format: str = Field(default="auto", pattern="^(auto|json|console)$")

    # External providers: base URLs are settings so stand-in servers can replace them.
    openai_base_url: str = "https://api.openai.com"
    anthropic_base_url: str = "https://api.anthropic.com"
    deepseek_base_url: str = "https://api.deepseek.com"
    # Hosts processors may call even when they resolve to non-public addresses (production SSRF guard);
    # an IP address or CIDR entry ("10.8.0.0/16") allows those addresses whatever name leads to them.
    outbound_allowed_hosts: list[str] = Field(default_factory=list)
    # Google REST APIs (gcp.api_extractor): "{service}" is the API's short name (cloudbilling, compute).
    # A local stand-in serving every API on one address is just "http://127.0.0.1:PORT".
    gcp_api_url_template: str = "https://{service}.googleapis.com"

    # Notifications: email over SMTP and a Slack incoming webhook, for failed runs and steps.
    notifications_enabled: bool = True
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_use_tls: bool = True  # STARTTLS on a plain connection (port 587)
    smtp_use_ssl: bool = False  # implicit TLS from the first byte (port 465)
    smtp_from_email: str = "pipelines@convergence.local"
    smtp_timeout_seconds: float = Field(default=20.0, gt=0, le=120)
    smtp_ca_file: Path | None = None  # extra CA bundle to verify the SMTP server's certificate (private CA)
    default_admin_email: str | None = None
    slack_webhook_url: SecretStr | None = None

    @field_validator(
        "requests_topic", "requests_subscription", "events_topic", "ticks_topic", "ticks_subscription",
        "dead_letter_topic", "dead_letter_subscription",
    )
    @classmethod
    def _pubsub_name(cls, value: str) -> str:
        if not _RESOURCE_NAME.match(value) or value.lower().startswith("goog"):
            raise ValueError(
                f"{value!r} is not a valid Pub/Sub resource name "
                "(3-255 chars, starts with a letter, not 'goog')"
            )
        return value

    @field_validator(
        "ticks_dead_letter_topic", "ticks_dead_letter_subscription", "push_subscription", "handoff_topic",
        "overflow_topic", "overflow_subscription",
    )
    @classmethod
    def _more_pubsub_names(cls, value: str) -> str:
        if not _RESOURCE_NAME.match(value) or value.lower().startswith("goog"):
            raise ValueError(f"{value!r} is not a valid Pub/Sub resource name")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not _ORIGIN.match(origin):
                raise ValueError(f"{origin!r} is not an origin: scheme://host[:port], no path (or \"*\")")
        return value

    @field_validator("gcp_project_id")
    @classmethod
    def _project_id(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9\-]{4,28}[a-z0-9]", value):
            raise ValueError(f"{value!r} is not a valid GCP project id")
        return value

    @property
    def is_production(self) -> bool:
        return self.environment is Environment.PRODUCTION

    @property
    def bigquery_endpoint(self) -> str | None:
        return f"http://{self.bigquery_emulator_host}" if self.bigquery_emulator_host else None

    def org_dataset(self, org_slug: str) -> str:
        return f"{org_slug}_{self.environment.dataset_suffix}"

    def topic_path(self, topic: str) -> str:
        return f"projects/{self.gcp_project_id}/topics/{topic}"

    def subscription_path(self, subscription: str) -> str:
        return f"projects/{self.gcp_project_id}/subscriptions/{subscription}"


def pubsub_resource_fields() -> tuple[str, ...]:
    """The settings naming a Pub/Sub topic or subscription (tests and benchmarks give each a unique name)."""
    return tuple(name for name in Settings.model_fields if name.endswith(("_topic", "_subscription")))


def _format_validation_error(error: ValidationError) -> str:
    lines = ["invalid settings:"]
    for item in error.errors():
        name = ".".join(str(p) for p in item["loc"]).upper() or "(settings)"
        lines.append(f"  - {name}: {item['msg']}")
    return "\n".join(lines)


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment; raise SettingsError with every problem listed."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise SettingsError(_format_validation_error(error)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def reset_settings() -> None:
    """Forget cached settings (tests and the local stack change the environment)."""
    get_settings.cache_clear()
