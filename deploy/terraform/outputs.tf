output "serve_url" {
  description = "Base URL of `serve`: the HTTP door is under /api/v1, push deliveries at /pubsub/push."
  value       = google_cloud_run_v2_service.serve.uri
}

output "serve_service_account" {
  value = google_service_account.serve.email
}

output "worker_service_account" {
  value = google_service_account.worker.email
}

output "worker_pool" {
  description = "The `consume` worker pool, scaled by convergence-autoscaler on the worker subscription's backlog."
  value       = google_cloud_run_v2_worker_pool.worker.id
}

output "dashboard" {
  value = google_monitoring_dashboard.convergence.id
}

output "push_service_account" {
  description = "PUSH_SERVICE_ACCOUNT_EMAIL: the identity whose OIDC tokens /pubsub/push accepts."
  value       = google_service_account.push.email
}

output "topics" {
  value = {
    requests          = google_pubsub_topic.requests.id
    overflow          = google_pubsub_topic.overflow.id
    events            = google_pubsub_topic.events.id
    ticks             = google_pubsub_topic.ticks.id
    dead_letter       = google_pubsub_topic.dead_letter.id
    ticks_dead_letter = google_pubsub_topic.ticks_dead_letter.id
  }
}
