# One image, two roles (the repository's Dockerfile): `serve` (push endpoint, HTTP door, probes) as a request-
# driven Cloud Run service, and `consume` (streaming-pull workers, dead-letter drain, scheduler ticks) as an
# always-on Cloud Run service with CPU always allocated and no public ingress. Cloud Run worker pools fit
# `consume` too once available in the provider used; the container is the same.

locals {
  common_env = merge({
    ENVIRONMENT                    = var.environment
    GCP_PROJECT_ID                 = var.project_id
    BIGQUERY_LOCATION              = var.bigquery_location
    CENTRAL_DATASET                = var.central_dataset
    KMS_KEY_NAME                   = var.kms_key_name
    REQUESTS_TOPIC                 = var.requests_topic
    REQUESTS_SUBSCRIPTION          = var.requests_subscription
    EVENTS_TOPIC                   = var.events_topic
    TICKS_TOPIC                    = var.ticks_topic
    TICKS_SUBSCRIPTION             = var.ticks_subscription
    DEAD_LETTER_TOPIC              = var.dead_letter_topic
    DEAD_LETTER_SUBSCRIPTION       = var.dead_letter_subscription
    TICKS_DEAD_LETTER_TOPIC        = var.ticks_dead_letter_topic
    TICKS_DEAD_LETTER_SUBSCRIPTION = var.ticks_dead_letter_subscription
    HANDOFF_TOPIC                  = var.handoff_topic
    PUSH_SUBSCRIPTION              = var.push_subscription
    MAX_DELIVERY_ATTEMPTS          = tostring(var.max_delivery_attempts)
    RETRY_MIN_BACKOFF_SECONDS      = tostring(var.retry_min_backoff_seconds)
    RETRY_MAX_BACKOFF_SECONDS      = tostring(var.retry_max_backoff_seconds)
    ACK_DEADLINE_SECONDS           = tostring(var.ack_deadline_seconds)
    PUSH_ACK_DEADLINE_SECONDS      = tostring(var.push_ack_deadline_seconds)
    PUSH_AUDIENCE                  = var.push_audience
    PUSH_SERVICE_ACCOUNT_EMAIL     = google_service_account.push.email
    TICK_WINDOW_MINUTES            = tostring(var.tick_window_minutes)
    RATE_LIMIT_ENABLED             = "true"
    LOG_FORMAT                     = "json"
  }, var.extra_env)
}

resource "google_cloud_run_v2_service" "serve" {
  name     = "convergence-serve"
  location = var.region
  ingress  = "INGRESS_TRAFFIC_ALL"
  labels   = local.labels

  template {
    service_account = google_service_account.runtime.email
    # A push request lasts at most the push subscription's ack deadline.
    timeout = "${var.push_ack_deadline_seconds}s"

    scaling {
      min_instance_count = 0
      max_instance_count = var.serve_max_instances
    }

    containers {
      image = var.image
      args  = ["serve"]

      ports {
        container_port = 8080
      }

      dynamic "env" {
        for_each = local.common_env
        content {
          name  = env.key
          value = env.value
        }
      }

      env {
        name = "CA_ROOT_API_KEY"
        value_source {
          secret_key_ref {
            secret  = var.ca_root_api_key_secret
            version = "latest"
          }
        }
      }

      resources {
        limits = {
          cpu    = "1"
          memory = "1Gi"
        }
      }

      startup_probe {
        http_get {
          path = "/health"
        }
        initial_delay_seconds = 2
        period_seconds        = 3
        failure_threshold     = 10
      }

      liveness_probe {
        http_get {
          path = "/health"
        }
        period_seconds = 30
      }
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.runtime_root_key]
}

resource "google_cloud_run_v2_service" "worker" {
  name     = "convergence-worker"
  location = var.region
  # Nothing calls the worker: its port only serves /health and /metrics inside the project.
  ingress = "INGRESS_TRAFFIC_INTERNAL_ONLY"
  labels  = local.labels

  template {
    service_account = google_service_account.runtime.email

    scaling {
      min_instance_count = var.worker_min_instances
      max_instance_count = var.worker_max_instances
    }

    containers {
      image = var.image
      args  = ["consume"]

      ports {
        container_port = 8080
      }

      dynamic "env" {
        for_each = merge(local.common_env, {
          METRICS_PORT     = "8080" # /health for the probes, /metrics for scraping
          CONSUMER_WORKERS = tostring(var.consumer_workers)
        })
        content {
          name  = env.key
          value = env.value
        }
      }

      env {
        name = "CA_ROOT_API_KEY"
        value_source {
          secret_key_ref {
            secret  = var.ca_root_api_key_secret
            version = "latest"
          }
        }
      }

      resources {
        # Streaming pull and leases run between requests: CPU must stay allocated.
        cpu_idle = false
        limits = {
          cpu    = "2"
          memory = "2Gi"
        }
      }

      startup_probe {
        http_get {
          path = "/health"
        }
        initial_delay_seconds = 2
        period_seconds        = 3
        failure_threshold     = 20
      }
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.runtime_root_key]
}
