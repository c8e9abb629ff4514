# One image, two roles (the repository's Dockerfile): `serve` (push endpoint, HTTP door, probes) as a request-
# driven Cloud Run service, and `consume` (streaming-pull workers, dead-letter drain, scheduler ticks) as a
# Cloud Run worker pool: no endpoint, CPU always allocated, instances set by the autoscaler (autoscaling.tf).
#
# Both carry Google's Managed Service for Prometheus sidecar (Cloud Run docs, "Write Prometheus metrics by using
# the Prometheus sidecar"). Its default RunMonitoring config scrapes 0.0.0.0:8080/metrics every 30 s: `serve`
# serves /metrics on its HTTP port 8080, `consume` on METRICS_PORT, set to 8080 below, so no config secret.
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
    TRACING_EXPORTER               = var.tracing_exporter
    HANDOFF_TOPIC                  = var.handoff_topic
    OVERFLOW_TOPIC                 = var.overflow_topic
    OVERFLOW_SUBSCRIPTION          = var.overflow_subscription
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
    service_account = google_service_account.serve.email
    # A push request lasts at most the push subscription's ack deadline.
    timeout = "${var.push_ack_deadline_seconds}s"

    scaling {
      min_instance_count = 0
      max_instance_count = var.serve_max_instances
    }

    containers {
      name  = "serve"
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

    # Request-based billing throttles CPU between requests, so some 30 s scrapes of an idle instance fail; the
    # sidecar's start-up and shut-down scrapes still run (same doc page). Counters lose nothing: they are
    # cumulative and the next scrape carries them.
    containers {
      name       = "collector"
      image      = var.prometheus_sidecar_image
      depends_on = ["serve"]

      resources {
        limits = {
          cpu    = "1"
          memory = "512Mi"
        }
      }

      liveness_probe {
        http_get {
          path = "/liveness"
          port = 13133
        }
        timeout_seconds = 30
        period_seconds  = 30
      }
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.roles_root_key]
}

resource "google_cloud_run_v2_worker_pool" "worker" {
  name     = "convergence-worker"
  location = var.region
  labels   = local.labels

  # MANUAL: the instance count is whatever the autoscaler last set (autoscaling.tf); this is only the count at
  # creation. Worker pools have no backlog-based scaling of their own (the provider's `scaling` block offers
  # MANUAL, or AUTOMATIC between min and max with no metric to choose), hence the external autoscaler.
  scaling {
    scaling_mode          = "MANUAL"
    manual_instance_count = var.worker_min_instances
  }

  template {
    service_account = google_service_account.worker.email

    containers {
      name  = "consume"
      image = var.image
      args  = ["consume"]

      dynamic "env" {
        for_each = merge(local.common_env, {
          METRICS_PORT     = "8080" # /health for the probes, /metrics for the sidecar
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

      # Worker pools always allocate CPU (no requests to throttle between), which streaming pull and leases need.
      resources {
        limits = {
          cpu    = "2"
          memory = "2Gi"
        }
      }

      startup_probe {
        http_get {
          path = "/health"
          port = 8080
        }
        initial_delay_seconds = 2
        period_seconds        = 3
        failure_threshold     = 20
      }
    }

    containers {
      name       = "collector"
      image      = var.prometheus_sidecar_image
      depends_on = ["consume"]

      resources {
        limits = {
          cpu    = "1"
          memory = "512Mi"
        }
      }

      liveness_probe {
        http_get {
          path = "/liveness"
          port = 13133
        }
        timeout_seconds = 30
        period_seconds  = 30
      }
    }
  }

  lifecycle {
    # The autoscaler owns the instance count; an apply must not reset it.
    ignore_changes = [scaling[0].manual_instance_count]
  }

  depends_on = [google_secret_manager_secret_iam_member.roles_root_key]
}
