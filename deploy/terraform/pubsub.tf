# Topics and subscriptions: the same topology as convergence/infra/topology.py (`convergence infra apply` builds it on the
# emulator). Every consuming subscription has a retry policy (without one a nack is redelivered at once, in
# a loop) and a dead-letter policy; dead-letter subscriptions never expire and keep what they hold.

resource "google_pubsub_topic" "requests" {
  name   = var.requests_topic
  labels = local.labels
}

resource "google_pubsub_topic" "events" {
  name   = var.events_topic
  labels = local.labels
}

resource "google_pubsub_topic" "ticks" {
  name   = var.ticks_topic
  labels = local.labels
}

resource "google_pubsub_topic" "dead_letter" {
  name   = var.dead_letter_topic
  labels = local.labels
}

resource "google_pubsub_topic" "ticks_dead_letter" {
  name   = var.ticks_dead_letter_topic
  labels = local.labels
}

# Runs of an org over its cap, handed off once by `consume`; their subscription waits for the org's slots.
resource "google_pubsub_topic" "overflow" {
  name   = var.overflow_topic
  labels = local.labels
}

resource "google_pubsub_topic" "handoff" {
  count  = local.push_mode ? 1 : 0
  name   = var.handoff_topic
  labels = local.labels
}

# ---- run requests ----------------------------------------------------------------------------------------

resource "google_pubsub_subscription" "worker" {
  name                 = var.requests_subscription
  topic                = local.worker_topic
  ack_deadline_seconds = var.ack_deadline_seconds
  labels               = local.labels

  retry_policy {
    minimum_backoff = "${var.retry_min_backoff_seconds}s"
    maximum_backoff = "${var.retry_max_backoff_seconds}s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  expiration_policy {
    ttl = "" # never expires
  }

  # The service agent must be allowed to forward to the dead-letter topic before messages start failing.
  depends_on = [google_pubsub_topic_iam_member.agent_publishes_dead_letters]
}

# Pulled by `consume` with the requests' delivery policy: a flooding org's copies wait here by the lease, so
# they never hold the flow control of the requests subscription.
resource "google_pubsub_subscription" "overflow" {
  name                 = var.overflow_subscription
  topic                = google_pubsub_topic.overflow.id
  ack_deadline_seconds = var.ack_deadline_seconds
  labels               = local.labels

  retry_policy {
    minimum_backoff = "${var.retry_min_backoff_seconds}s"
    maximum_backoff = "${var.retry_max_backoff_seconds}s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [google_pubsub_topic_iam_member.agent_publishes_dead_letters]
}

resource "google_pubsub_subscription" "push" {
  count                = local.push_mode ? 1 : 0
  name                 = var.push_subscription
  topic                = google_pubsub_topic.requests.id
  ack_deadline_seconds = var.push_ack_deadline_seconds
  labels               = local.labels

  push_config {
    push_endpoint = "${google_cloud_run_v2_service.serve.uri}/pubsub/push"
    oidc_token {
      service_account_email = google_service_account.push.email
      audience              = var.push_audience
    }
  }

  retry_policy {
    minimum_backoff = "${var.retry_min_backoff_seconds}s"
    maximum_backoff = "${var.retry_max_backoff_seconds}s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [
    google_pubsub_topic_iam_member.agent_publishes_dead_letters,
    google_service_account_iam_member.agent_mints_push_tokens,
    google_cloud_run_v2_service_iam_member.push_invokes_serve,
  ]
}

# Drained by `consume`: each dead-lettered request is recorded DEAD_LETTERED with its body (`dlq replay`).
resource "google_pubsub_subscription" "dead_letter" {
  name                 = var.dead_letter_subscription
  topic                = google_pubsub_topic.dead_letter.id
  ack_deadline_seconds = var.ack_deadline_seconds
  labels               = local.labels

  retry_policy {
    minimum_backoff = "${var.retry_min_backoff_seconds}s"
    maximum_backoff = "${var.retry_max_backoff_seconds}s"
  }

  expiration_policy {
    ttl = ""
  }
}

# ---- scheduler ticks -------------------------------------------------------------------------------------

resource "google_pubsub_subscription" "ticks" {
  name                 = var.ticks_subscription
  topic                = google_pubsub_topic.ticks.id
  ack_deadline_seconds = var.ack_deadline_seconds
  labels               = local.labels

  retry_policy {
    minimum_backoff = "${var.retry_min_backoff_seconds}s"
    maximum_backoff = "${var.retry_max_backoff_seconds}s"
  }

  # A tick that keeps failing is held for inspection, not looped over or dropped.
  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.ticks_dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [google_pubsub_topic_iam_member.agent_publishes_dead_letters]
}

resource "google_pubsub_subscription" "ticks_dead_letter" {
  name                       = var.ticks_dead_letter_subscription
  topic                      = google_pubsub_topic.ticks_dead_letter.id
  ack_deadline_seconds       = var.ack_deadline_seconds
  message_retention_duration = "604800s" # 7 days, the maximum
  labels                     = local.labels

  retry_policy {
    minimum_backoff = "${var.retry_min_backoff_seconds}s"
    maximum_backoff = "${var.retry_max_backoff_seconds}s"
  }

  expiration_policy {
    ttl = ""
  }
}
