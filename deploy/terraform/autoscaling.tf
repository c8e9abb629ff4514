# The worker pool scaled on the run-request backlog. Cloud Run worker pools do not scale on a queue themselves:
# Google's answer is Cloud Run External Metrics Autoscaling (CREMA; Cloud Run docs, "Autoscale worker pools with
# external metrics"), a small Cloud Run service that polls a KEDA scaler and sets the pool's
# manual_instance_count through the Cloud Run Admin API. Here it polls KEDA's gcp-pubsub scaler on the worker
# subscription (Cloud Monitoring's subscription/num_undelivered_messages, so it sees the backlog a minute or
# two late: Cloud Monitoring's ingestion delay). Not on the overflow subscription, on purpose: its backlog is
# runs of orgs already at their concurrency cap, which more instances would only run faster than the cap means.

locals {
  # A worker holds up to 2 x CONSUMER_WORKERS messages (consumer/flow.py, max_messages): one instance per that
  # many undelivered messages keeps every instance's flow control full and no more.
  backlog_per_instance = 2 * var.consumer_workers

  worker_pool_path = "projects/${var.project_id}/locations/${var.region}/workerpools/${google_cloud_run_v2_worker_pool.worker.name}"

  autoscaler_config = yamlencode({
    apiVersion = "crema/v1"
    kind       = "CremaConfig"
    spec = {
      pollingInterval = var.autoscaler_polling_seconds
      triggerAuthentications = [{
        metadata = { name = "autoscaler-identity" }
        spec     = { podIdentity = { provider = "gcp" } } # the autoscaler's own service account
      }]
      scaledObjects = [{
        spec = {
          scaleTargetRef  = { name = local.worker_pool_path }
          minReplicaCount = var.worker_min_instances
          maxReplicaCount = var.worker_max_instances
          triggers = [{
            type = "gcp-pubsub"
            name = "run-request-backlog"
            metadata = {
              subscriptionName = google_pubsub_subscription.worker.id
              mode             = "SubscriptionSize"
              value            = tostring(local.backlog_per_instance)
            }
            authenticationRef = { name = "autoscaler-identity" }
          }]
        }
      }]
    }
  })
}

resource "google_service_account" "autoscaler" {
  account_id   = "convergence-autoscaler"
  display_name = "Scales convergence-worker on the run-request backlog (CREMA)"
}

resource "google_parameter_manager_parameter" "autoscaler" {
  parameter_id = "convergence-autoscaler"
  format       = "YAML"
  labels       = local.labels
}

# Versions are immutable: a changed config is a new version (named by its content), which the service then reads.
resource "google_parameter_manager_parameter_version" "autoscaler" {
  parameter            = google_parameter_manager_parameter.autoscaler.id
  parameter_version_id = "config-${substr(sha256(local.autoscaler_config), 0, 12)}"
  parameter_data       = local.autoscaler_config

  lifecycle {
    create_before_destroy = true
  }
}

resource "google_cloud_run_v2_service" "autoscaler" {
  name     = "convergence-autoscaler"
  location = var.region
  # Nothing calls it: with pollingInterval set it invokes itself.
  ingress = "INGRESS_TRAFFIC_INTERNAL_ONLY"
  labels  = local.labels

  template {
    service_account = google_service_account.autoscaler.email

    # One instance, always: two autoscalers on one worker pool would race.
    scaling {
      min_instance_count = 1
      max_instance_count = 1
    }

    containers {
      image          = var.autoscaler_image
      base_image_uri = var.autoscaler_base_image

      env {
        name  = "CREMA_CONFIG"
        value = google_parameter_manager_parameter_version.autoscaler.name
      }
      env {
        name  = "OUTPUT_SCALER_METRICS"
        value = "False"
      }
      env {
        name  = "ENABLE_CLOUD_LOGGING"
        value = "False"
      }

      resources {
        cpu_idle = false # it polls between requests
        limits = {
          cpu    = "1"
          memory = "512Mi"
        }
      }
    }
  }

  depends_on = [
    google_project_iam_member.autoscaler,
    google_cloud_run_v2_worker_pool_iam_member.autoscaler_scales_worker,
    google_service_account_iam_member.autoscaler_acts_as_worker,
  ]
}

# Its rights: read its config, read the backlog, set the worker pool's instance count (which acts as the pool's
# identity, hence serviceAccountUser on it). Parameter Manager has no per-parameter IAM resource in the provider,
# and Cloud Monitoring reads are project-wide.
resource "google_project_iam_member" "autoscaler" {
  for_each = toset(["roles/parametermanager.parameterViewer", "roles/monitoring.viewer"])
  project  = var.project_id
  role     = each.value
  member   = "serviceAccount:${google_service_account.autoscaler.email}"
}

resource "google_cloud_run_v2_worker_pool_iam_member" "autoscaler_scales_worker" {
  name     = google_cloud_run_v2_worker_pool.worker.name
  location = var.region
  role     = "roles/run.developer"
  member   = "serviceAccount:${google_service_account.autoscaler.email}"
}

resource "google_service_account_iam_member" "autoscaler_acts_as_worker" {
  service_account_id = google_service_account.worker.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.autoscaler.email}"
}
