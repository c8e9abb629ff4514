terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source = "hashicorp/google"
      # google_cloud_run_v2_worker_pool is in the provider since 6.37.0; its containers' depends_on (the sidecar
      # starts after the worker) since 7.10.0 (the provider's changelog).
      version = ">= 7.10.0, < 8.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  push_mode = var.delivery_mode == "push"

  # Google-managed service agents (created by Google when the APIs are enabled).
  pubsub_service_agent    = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  scheduler_service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-cloudscheduler.iam.gserviceaccount.com"

  labels = merge({ app = "convergence" }, var.labels)

  # What `convergence consume` pulls run requests from: the requests topic (pull mode), or the hand-off topic
  # where the push handler forwards runs longer than a push request may last (push mode). Same rule as
  # convergence/infra/topology.py.
  worker_topic = local.push_mode ? google_pubsub_topic.handoff[0].id : google_pubsub_topic.requests.id
}
