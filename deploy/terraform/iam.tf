# Identities and the bindings the design needs, each as narrow as the resource allows.

# ---- the service's identities: one per role --------------------------------------------------------------
# `serve` takes run requests from the HTTP door (and push deliveries in push mode); `consume` pulls, fans ticks
# out and drains the dead letters. Separate identities keep each role to the rights it uses: only the worker
# may pull, only these two may publish run requests.

resource "google_service_account" "serve" {
  account_id   = "convergence-serve"
  display_name = "Convergence serve (HTTP door, push endpoint)"
}

resource "google_service_account" "worker" {
  account_id   = "convergence-worker"
  display_name = "Convergence consume (streaming pull, ticks, dead letters)"
}

locals {
  serve_member  = "serviceAccount:${google_service_account.serve.email}"
  worker_member = "serviceAccount:${google_service_account.worker.email}"
  role_members = {
    serve  = local.serve_member
    worker = local.worker_member
  }

  # Who may publish run requests: a run request names its org and the worker trusts that, so publishing on this
  # topic is acting for any tenant. The door publishes what an org's API key asked for; the worker publishes
  # the scheduler's fan-out (Cloud Scheduler itself only publishes ticks, below) and hand-offs. Topic-level
  # members only: no project-wide roles/pubsub.publisher anywhere in this configuration.
  requests_publishers = {
    serve  = local.serve_member
    worker = local.worker_member
  }

  # Other topics: events from both roles (each runs runs), the overflow topic from the worker (it acts for
  # any tenant too: only the worker hands runs off), the hand-off topic from `serve` in push mode.
  other_publishers = merge(
    {
      for role, member in local.role_members : "events-${role}" => {
        topic  = google_pubsub_topic.events.id
        member = member
      }
    },
    {
      overflow-worker = {
        topic  = google_pubsub_topic.overflow.id
        member = local.worker_member
      }
    },
    local.push_mode ? {
      handoff-serve = {
        topic  = google_pubsub_topic.handoff[0].id
        member = local.serve_member
      }
    } : {},
  )

  pulled_subscriptions = {
    worker      = google_pubsub_subscription.worker.id
    overflow    = google_pubsub_subscription.overflow.id
    dead_letter = google_pubsub_subscription.dead_letter.id
    ticks       = google_pubsub_subscription.ticks.id
  }

  # Project-level roles of both roles. BigQuery: the central dataset and one dataset per org (created at
  # onboarding). metricWriter: the Managed Prometheus sidecar writes with the revision's identity.
  # cloudtrace.agent: the service exports its run and step spans to Cloud Trace (TRACING_EXPORTER).
  project_roles = {
    for pair in setproduct(keys(local.role_members), [
      "roles/bigquery.dataEditor",
      "roles/bigquery.jobUser",
      "roles/monitoring.metricWriter",
      "roles/cloudtrace.agent",
    ]) : "${pair[0]}-${pair[1]}" => { member = local.role_members[pair[0]], role = pair[1] }
  }
}

resource "google_pubsub_topic_iam_member" "requests_publishers" {
  for_each = local.requests_publishers
  topic    = google_pubsub_topic.requests.id
  role     = "roles/pubsub.publisher"
  member   = each.value
}

resource "google_pubsub_topic_iam_member" "role_publishes" {
  for_each = local.other_publishers
  topic    = each.value.topic
  role     = "roles/pubsub.publisher"
  member   = each.value.member
}

resource "google_pubsub_subscription_iam_member" "worker_pulls" {
  for_each     = local.pulled_subscriptions
  subscription = each.value
  role         = "roles/pubsub.subscriber"
  member       = local.worker_member
}

resource "google_project_iam_member" "roles" {
  for_each = local.project_roles
  project  = var.project_id
  role     = each.value.role
  member   = each.value.member
}

resource "google_kms_crypto_key_iam_member" "roles_kms" {
  for_each      = local.role_members
  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = each.value
}

resource "google_secret_manager_secret_iam_member" "roles_root_key" {
  for_each  = local.role_members
  secret_id = var.ca_root_api_key_secret
  role      = "roles/secretmanager.secretAccessor"
  member    = each.value
}

# ---- Pub/Sub service agent: dead-letter forwarding ---------------------------------------------------------
# To forward a message it gave up on, the agent publishes to the dead-letter topic and acknowledges it on the
# source subscription. Without these, attempts are not even counted.

resource "google_pubsub_topic_iam_member" "agent_publishes_dead_letters" {
  for_each = {
    requests = google_pubsub_topic.dead_letter.id
    ticks    = google_pubsub_topic.ticks_dead_letter.id
  }
  topic  = each.value
  role   = "roles/pubsub.publisher"
  member = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "agent_acks_sources" {
  for_each = merge(
    {
      worker   = google_pubsub_subscription.worker.id
      overflow = google_pubsub_subscription.overflow.id
      ticks    = google_pubsub_subscription.ticks.id
    },
    local.push_mode ? { push = google_pubsub_subscription.push[0].id } : {},
  )
  subscription = each.value
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

# ---- push delivery: an OIDC identity that may invoke `serve` -----------------------------------------------

resource "google_service_account" "push" {
  account_id   = "convergence-push"
  display_name = "Pub/Sub push to convergence serve (OIDC)"
}

# The agent mints the push identity's OIDC tokens.
resource "google_service_account_iam_member" "agent_mints_push_tokens" {
  service_account_id = google_service_account.push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent
}

resource "google_cloud_run_v2_service_iam_member" "push_invokes_serve" {
  name     = google_cloud_run_v2_service.serve.name
  location = var.region
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.push.email}"
}

# The HTTP door authenticates callers with org API keys and /pubsub/push verifies OIDC tokens itself, so the
# service may be public; public_api = false leaves invocation to IAM (the push identity, and whoever is added).
resource "google_cloud_run_v2_service_iam_member" "public_serve" {
  count    = var.public_api ? 1 : 0
  name     = google_cloud_run_v2_service.serve.name
  location = var.region
  role     = "roles/run.invoker"
  member   = "allUsers"
}

# ---- Cloud Scheduler: publishes ticks ------------------------------------------------------------------------

resource "google_pubsub_topic_iam_member" "scheduler_publishes_ticks" {
  topic  = google_pubsub_topic.ticks.id
  role   = "roles/pubsub.publisher"
  member = local.scheduler_service_agent
}
