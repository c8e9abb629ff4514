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
  description = "`consume` workers always running (streaming pull needs a live process)."
  type        = number
  default     = 1
}

variable "worker_max_instances" {
  type    = number
  default = 10
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
