# Defaults match convergence/settings/model.py, so the service and the infrastructure agree without extra settings.

variable "project_id" {
  description = "GCP project to deploy into."
  type        = string
}

variable "region" {
  description = "Region of Cloud Run and Cloud Scheduler."
  type        = string
  default     = "us-central1"
}

variable "image" {
  description = "Container image built from the repository's Dockerfile (one image: `serve` and `consume`)."
  type        = string
}

variable "environment" {
  description = "ENVIRONMENT of the service (production turns on the start-up security validation)."
  type        = string
  default     = "production"
}

variable "labels" {
  description = "Extra labels on every resource that takes labels."
  type        = map(string)
  default     = {}
}

variable "delivery_mode" {
  description = "pull: `consume` workers pull run requests. push: Pub/Sub pushes them to `serve` (OIDC), and `consume` pulls the hand-off topic only."
  type        = string
  default     = "pull"
  validation {
    condition     = contains(["pull", "push"], var.delivery_mode)
    error_message = "delivery_mode must be pull or push."
  }
}

# ---- Pub/Sub names (settings: REQUESTS_TOPIC, ...) --------------------------------------------------------

variable "requests_topic" {
  type    = string
  default = "pipeline-requests"
}

variable "requests_subscription" {
  type    = string
  default = "pipeline-requests-worker"
}

variable "events_topic" {
  type    = string
  default = "pipeline-events"
}

variable "ticks_topic" {
  type    = string
  default = "scheduler-ticks"
}

variable "ticks_subscription" {
  type    = string
  default = "scheduler-ticks-worker"
}

variable "dead_letter_topic" {
  type    = string
  default = "pipeline-requests-dead-letter"
}

variable "dead_letter_subscription" {
  type    = string
  default = "pipeline-requests-dead-letter-worker"
}

variable "ticks_dead_letter_topic" {
  type    = string
  default = "scheduler-ticks-dead-letter"
}

variable "ticks_dead_letter_subscription" {
  type    = string
  default = "scheduler-ticks-dead-letter-hold"
}

variable "push_subscription" {
  type    = string
  default = "pipeline-requests-push"
}

variable "overflow_topic" {
  type    = string
  default = "pipeline-requests-overflow"
}

variable "overflow_subscription" {
  type    = string
  default = "pipeline-requests-overflow-worker"
}

variable "handoff_topic" {
  type    = string
  default = "pipeline-requests-handoff"
}

# ---- delivery policy (settings: MAX_DELIVERY_ATTEMPTS, RETRY_*_BACKOFF_SECONDS, ACK_DEADLINE_SECONDS) -----

variable "max_delivery_attempts" {
  description = "Deliveries before a message goes to its dead-letter topic (5-100)."
  type        = number
  default     = 5
  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be between 5 and 100."
  }
}

variable "retry_min_backoff_seconds" {
  type    = number
  default = 10
}

variable "retry_max_backoff_seconds" {
  type    = number
  default = 600
}

variable "ack_deadline_seconds" {
  type    = number
  default = 60
}

variable "push_ack_deadline_seconds" {
  description = "Ack deadline of the push subscription: also how long a push request may last (Cloud Run timeout)."
  type        = number
  default     = 600
}

variable "push_audience" {
  description = "OIDC audience of push tokens (any string both sides agree on; a fixed one avoids a cycle with the service URL)."
  type        = string
  default     = "convergence-push"
}

# ---- scheduler -----------------------------------------------------------------------------------------------

variable "tick_schedule" {
  description = "Cron of the tick (Cloud Scheduler). Each tick covers the last tick_window_minutes."
  type        = string
  default     = "0 * * * *"
}

variable "tick_window_minutes" {
  description = "TICK_WINDOW_MINUTES: at least the tick period (60 for an hourly tick); longer catches up missed ticks."
  type        = number
  default     = 60
}

# ---- the service ---------------------------------------------------------------------------------------------

variable "central_dataset" {
  type    = string
  default = "organizations"
}

variable "bigquery_location" {
  type    = string
  default = "US"
}

variable "kms_key_name" {
  description = "projects/P/locations/L/keyRings/R/cryptoKeys/K that encrypts org credentials and API keys."
  type        = string
}

variable "ca_root_api_key_secret" {
  description = "Secret Manager secret id holding CA_ROOT_API_KEY (at least 32 characters)."
  type        = string
}

variable "public_api" {
  description = "Let anyone reach `serve` (the HTTP door checks org API keys itself; /pubsub/push checks OIDC tokens itself). false: only the push identity may invoke it."
  type        = bool
  default     = true
}

variable "serve_max_instances" {
  type    = number
  default = 10
}

variable "worker_min_instances" {
  description = "`consume` instances always running, whatever the backlog: at least 1, since the same process fans scheduler ticks out and drains the dead letters."
  type        = number
  default     = 1
  validation {
    condition     = var.worker_min_instances >= 1
    error_message = "worker_min_instances must be at least 1: ticks and dead letters are handled by `consume` only."
  }
}

variable "worker_max_instances" {
  description = "Most `consume` instances the autoscaler may run."
  type        = number
  default     = 10
}

variable "consumer_workers" {
  description = "CONSUMER_WORKERS: concurrent runs per worker instance."
  type        = number
  default     = 8
}

variable "extra_env" {
  description = "More environment variables for both roles (provider base URLs, SMTP, Slack...)."
  type        = map(string)
  default     = {}
}

# ---- monitoring and scaling ----------------------------------------------------------------------------------

variable "prometheus_sidecar_image" {
  description = "Google's Managed Service for Prometheus sidecar for Cloud Run (pin a released tag)."
  type        = string
  default     = "us-docker.pkg.dev/cloud-ops-agents-artifacts/cloud-run-gmp-sidecar/cloud-run-gmp-sidecar:1.2.0"
}

variable "autoscaler_image" {
  description = "Cloud Run External Metrics Autoscaling (CREMA), Google's prebuilt image (pin a release tag)."
  type        = string
  default     = "us-central1-docker.pkg.dev/cloud-run-oss-images/crema-v1/autoscaler:1.2"
}

variable "autoscaler_base_image" {
  description = "Runtime base image the CREMA image is built for (it is built FROM scratch, for automatic base image updates)."
  type        = string
  default     = "us-central1-docker.pkg.dev/serverless-runtimes/google-24/runtimes/java25"
}

variable "autoscaler_polling_seconds" {
  description = "How often the autoscaler reads the backlog and sets the worker pool's instance count."
  type        = number
  default     = 30
}

variable "alert_notification_channels" {
  description = "Notification channel ids (projects/P/notificationChannels/N) for every alert policy; empty: incidents are opened, nobody is notified."
  type        = list(string)
  default     = []
}

variable "max_lease_seconds" {
  description = "The consumer's max_lease_duration (consumer/flow.py: 2 x the longest pipeline timeout + 300 s; 7200 s under configs/). An unacked run request older than this is no longer leased by anyone."
  type        = number
  default     = 14700
}

variable "failed_run_ratio" {
  description = "Alert when this share of finished runs (FAILED or TIMEOUT) is exceeded over 15 minutes."
  type        = number
  default     = 0.2
}

variable "failed_run_min_count" {
  description = "...and at least this many runs failed in those 15 minutes (one failure of one run is not a rate)."
  type        = number
  default     = 3
}

variable "tracing_exporter" {
  description = "OpenTelemetry traces of runs and steps: cloud_trace (Cloud Trace, needs roles/cloudtrace.agent, granted in iam.tf) or none."
  type        = string
  default     = "cloud_trace"
  validation {
    condition     = contains(["cloud_trace", "none"], var.tracing_exporter)
    error_message = "tracing_exporter is cloud_trace or none."
  }
}
