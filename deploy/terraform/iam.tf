# Identities and the bindings the design needs, each as narrow as the resource allows.

# ---- the service's own identity (both roles: serve and consume) -------------------------------------------

resource "google_service_account" "runtime" {
  account_id   = "convergence-runtime"
  display_name = "Convergence service (serve and consume)"
}

locals {
  runtime = "serviceAccount:${google_service_account.runtime.email}"
  # Topics the service publishes to: run requests (CLI, door, scheduler fan-out, hand-off, DLQ replay),
  # events, and the hand-off topic in push mode.
  published_topics = merge(
    {
      requests = google_pubsub_topic.requests.id
      events   = google_pubsub_topic.events.id
    },
    local.push_mode ? { handoff = google_pubsub_topic.handoff[0].id } : {},
  )
  pulled_subscriptions = {
    worker      = google_pubsub_subscription.worker.id
    dead_letter = google_pubsub_subscription.dead_letter.id
    ticks       = google_pubsub_subscription.ticks.id
  }
}

resource "google_pubsub_topic_iam_member" "runtime_publishes" {
  for_each = local.published_topics
  topic    = each.value
  role     = "roles/pubsub.publisher"
  member   = local.runtime
}

resource "google_pubsub_subscription_iam_member" "runtime_pulls" {
  for_each     = local.pulled_subscriptions
  subscription = each.value
  role         = "roles/pubsub.subscriber"
  member       = local.runtime
}

# BigQuery: the central dataset and one dataset per org (created at onboarding), so project level.
resource "google_project_iam_member" "runtime_bigquery" {
  for_each = toset(["roles/bigquery.dataEditor", "roles/bigquery.jobUser"])
  project  = var.project_id
  role     = each.value
  member   = local.runtime
}

resource "google_kms_crypto_key_iam_member" "runtime_kms" {
  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = local.runtime
}

resource "google_secret_manager_secret_iam_member" "runtime_root_key" {
  secret_id = var.ca_root_api_key_secret
  role      = "roles/secretmanager.secretAccessor"
  member    = local.runtime
}

# ---- Pub/Sub service agent: dead-letter forwarding ---------------------------------------------------------
# To forward a message it gave up on, the agent publishes to the dead-letter topic and acknowledges it on the
# source subscription (shared/research/pubsub_consumer.md 3.1). Without these, attempts are not even counted.

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
      worker = google_pubsub_subscription.worker.id
      ticks  = google_pubsub_subscription.ticks.id
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
