output "serve_url" {
  description = "Base URL of `serve`: the HTTP door is under /api/v1, push deliveries at /pubsub/push."
  value       = google_cloud_run_v2_service.serve.uri
}

output "runtime_service_account" {
  value = google_service_account.runtime.email
}

output "push_service_account" {
  description = "PUSH_SERVICE_ACCOUNT_EMAIL: the identity whose OIDC tokens /pubsub/push accepts."
  value       = google_service_account.push.email
}

output "topics" {
  value = {
    requests          = google_pubsub_topic.requests.id
    events            = google_pubsub_topic.events.id
    ticks             = google_pubsub_topic.ticks.id
    dead_letter       = google_pubsub_topic.dead_letter.id
    ticks_dead_letter = google_pubsub_topic.ticks_dead_letter.id
  }
}
