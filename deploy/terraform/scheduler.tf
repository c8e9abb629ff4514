# Cloud Scheduler publishes a tick to the ticks topic; `consume` fans it out into run requests
# (consumer/ticks.py, publisher/fanout.py). The body is static: the service takes the tick time from the
# message's publish time, rounded to the minute. Delivery is at least once: a duplicated tick derives the same
# deterministic run_ids and the ledger (org_pipeline_execution_queue) skips what already went out.

resource "google_cloud_scheduler_job" "tick" {
  name        = "convergence-tick"
  description = "Scheduler tick: fan scheduled pipelines out into run requests"
  region      = var.region
  schedule    = var.tick_schedule
  time_zone   = "Etc/UTC"

  pubsub_target {
    topic_name = google_pubsub_topic.ticks.id
    data       = base64encode(jsonencode({ source = "cloud-scheduler", job = "convergence-tick" }))
    attributes = {
      kind = "tick"
    }
  }

  retry_config {
    retry_count          = 3
    min_backoff_duration = "10s"
    max_backoff_duration = "60s"
  }

  depends_on = [google_pubsub_topic_iam_member.scheduler_publishes_ticks]
}
