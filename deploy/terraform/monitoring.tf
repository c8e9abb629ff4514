# Alert policies and one dashboard. Pub/Sub's own metrics (pubsub.googleapis.com/subscription/...) say what the
# queues hold; the service's Prometheus counters, written by the sidecars (run.tf), say how runs end.
#
# The service exports no stream-state metric: a pool that loses its stream ends the process (the instance is
# replaced), and between pulls nothing is counted. "Worker not pulling" is therefore read on Pub/Sub's side:
# the worker subscription has a backlog and no streaming pull responses are sent on it. `consume` uses
# streaming pull only, so subscription/pull_request_count (unary Pull) would stay at zero even when healthy.

locals {
  subscription_filter = "resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = \"%s\" AND metric.type = \"pubsub.googleapis.com/subscription/%s\""

  # Finished run attempts that did not succeed for good: FAILED (permanent) and TIMEOUT. RETRYING attempts are
  # redelivered and show up in the dead-letter alert if they never succeed.
  failed_runs = "convergence_runs_total{status=~\"FAILED|TIMEOUT\"}"
  all_runs    = "convergence_runs_total{status=~\"SUCCESS|FAILED|TIMEOUT\"}"

  failed_run_share = "sum(rate(${local.failed_runs}[15m])) / sum(rate(${local.all_runs}[15m]))"
}

locals {
  # One entry an alert policy, keyed by the name its resource had before for_each (see the moved blocks).
  # A condition holds one of the provider's condition kinds, as a one-element list: the resource renders each
  # kind with a dynamic block, so a kind a condition does not name is left out.
  alert_policies = {
    dead_letters = {
      display_name = "Convergence: dead letters waiting"
      combiner     = "OR"
      severity     = "ERROR"
      conditions = [
        {
          # `consume` drains this subscription within seconds (each request recorded DEAD_LETTERED): a backlog
          # that stays means the drain is failing.
          display_name = "requests dead-letter backlog > 0 for 10 min"
          condition_threshold = [{
            filter             = format(local.subscription_filter, google_pubsub_subscription.dead_letter.name, "num_undelivered_messages")
            comparison         = "COMPARISON_GT"
            threshold_value    = 0
            duration           = "600s"
            per_series_aligner = "ALIGN_MAX"
          }]
        },
        {
          # Nothing drains the ticks hold: any message there is a tick that failed every attempt.
          display_name = "ticks dead-letter backlog > 0"
          condition_threshold = [{
            filter             = format(local.subscription_filter, google_pubsub_subscription.ticks_dead_letter.name, "num_undelivered_messages")
            comparison         = "COMPARISON_GT"
            threshold_value    = 0
            duration           = "0s"
            per_series_aligner = "ALIGN_MAX"
          }]
        },
      ]
      documentation = "Run requests Pub/Sub gave up on: `convergence dlq list`, then `convergence dlq replay` after a fix. Ticks on ${var.ticks_dead_letter_subscription} are kept 7 days for inspection."
    }

    oldest_unacked = {
      display_name = "Convergence: run request unacked past the lease"
      combiner     = "OR"
      severity     = "WARNING"
      conditions = [{
        display_name = "oldest unacked run request older than max_lease_seconds"
        condition_threshold = [{
          filter             = format(local.subscription_filter, google_pubsub_subscription.worker.name, "oldest_unacked_message_age")
          comparison         = "COMPARISON_GT"
          threshold_value    = var.max_lease_seconds
          duration           = "300s"
          per_series_aligner = "ALIGN_MAX"
        }]
      }]
      documentation = "A run request has waited longer than any worker keeps a lease: it is being redelivered over and over (each attempt failing or timing out), or no worker holds it. Check the worker pool's instances and `convergence runs list --status FAILED`."
    }

    failed_runs = {
      display_name = "Convergence: failed-run rate"
      combiner     = "OR"
      severity     = "ERROR"
      conditions = [{
        display_name = "FAILED or TIMEOUT share of finished runs over 15 min"
        condition_prometheus_query_language = [{
          query               = "(${local.failed_run_share} > ${var.failed_run_ratio}) and (sum(increase(${local.failed_runs}[15m])) >= ${var.failed_run_min_count})"
          duration            = "300s"
          evaluation_interval = "60s"
          # The series exist only once a sidecar has written a run: validation would refuse the first apply.
          disable_metric_validation = true
        }]
      }]
      documentation = "`sum by (pipeline, status) (rate(convergence_runs_total[15m]))` shows which pipelines fail; `convergence runs list --status FAILED --since 1h` shows why."
    }

    worker_not_pulling = {
      display_name = "Convergence: worker not pulling"
      combiner     = "AND"
      severity     = "CRITICAL"
      conditions = [
        {
          display_name = "worker subscription backlog > 0 for 10 min"
          condition_threshold = [{
            filter             = format(local.subscription_filter, google_pubsub_subscription.worker.name, "num_undelivered_messages")
            comparison         = "COMPARISON_GT"
            threshold_value    = 0
            duration           = "600s"
            per_series_aligner = "ALIGN_MAX"
          }]
        },
        {
          display_name = "no streaming pull responses on the worker subscription for 10 min"
          condition_absent = [{
            filter             = format(local.subscription_filter, google_pubsub_subscription.worker.name, "streaming_pull_response_count")
            duration           = "600s"
            per_series_aligner = "ALIGN_SUM"
          }]
        },
      ]
      documentation = "Run requests wait and no worker receives them: check that convergence-worker has instances (the autoscaler, convergence-autoscaler) and its logs for a lost stream (PERMISSION_DENIED, NOT_FOUND)."
    }
  }
}

resource "google_monitoring_alert_policy" "convergence" {
  for_each = local.alert_policies

  display_name          = each.value.display_name
  combiner              = each.value.combiner
  notification_channels = var.alert_notification_channels
  severity              = each.value.severity
  user_labels           = local.labels

  dynamic "conditions" {
    for_each = each.value.conditions
    content {
      display_name = conditions.value.display_name

      dynamic "condition_threshold" {
        for_each = lookup(conditions.value, "condition_threshold", [])
        content {
          filter          = condition_threshold.value.filter
          comparison      = condition_threshold.value.comparison
          threshold_value = condition_threshold.value.threshold_value
          duration        = condition_threshold.value.duration
          aggregations {
            alignment_period   = "60s"
            per_series_aligner = condition_threshold.value.per_series_aligner
          }
        }
      }

      dynamic "condition_absent" {
        for_each = lookup(conditions.value, "condition_absent", [])
        content {
          filter   = condition_absent.value.filter
          duration = condition_absent.value.duration
          aggregations {
            alignment_period   = "60s"
            per_series_aligner = condition_absent.value.per_series_aligner
          }
        }
      }

      dynamic "condition_prometheus_query_language" {
        for_each = lookup(conditions.value, "condition_prometheus_query_language", [])
        content {
          query                     = condition_prometheus_query_language.value.query
          duration                  = condition_prometheus_query_language.value.duration
          evaluation_interval       = condition_prometheus_query_language.value.evaluation_interval
          disable_metric_validation = condition_prometheus_query_language.value.disable_metric_validation
        }
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = each.value.documentation
  }
}

# The policies were one resource each: keep them in state under their for_each keys instead of replacing them.
moved {
  from = google_monitoring_alert_policy.dead_letters
  to   = google_monitoring_alert_policy.convergence["dead_letters"]
}

moved {
  from = google_monitoring_alert_policy.oldest_unacked
  to   = google_monitoring_alert_policy.convergence["oldest_unacked"]
}

moved {
  from = google_monitoring_alert_policy.failed_runs
  to   = google_monitoring_alert_policy.convergence["failed_runs"]
}

moved {
  from = google_monitoring_alert_policy.worker_not_pulling
  to   = google_monitoring_alert_policy.convergence["worker_not_pulling"]
}

resource "google_monitoring_dashboard" "convergence" {
  dashboard_json = jsonencode({
    displayName = "Convergence"
    mosaicLayout = {
      columns = 12
      tiles = [
        for index, tile in local.dashboard_tiles : {
          xPos   = (index % 2) * 6
          yPos   = floor(index / 2) * 4
          width  = 6
          height = 4
          widget = tile
        }
      ]
    }
  })
}

locals {
  dashboard_tiles = [
    {
      title = "Dead-letter backlog"
      xyChart = {
        dataSets = [
          for subscription in [google_pubsub_subscription.dead_letter.name, google_pubsub_subscription.ticks_dead_letter.name] : {
            plotType       = "LINE"
            legendTemplate = subscription
            timeSeriesQuery = {
              timeSeriesFilter = {
                filter      = format(local.subscription_filter, subscription, "num_undelivered_messages")
                aggregation = { alignmentPeriod = "60s", perSeriesAligner = "ALIGN_MAX" }
              }
            }
          }
        ]
      }
    },
    {
      title = "Worker backlog (undelivered run requests)"
      xyChart = {
        dataSets = [{
          plotType = "LINE"
          timeSeriesQuery = {
            timeSeriesFilter = {
              filter      = format(local.subscription_filter, google_pubsub_subscription.worker.name, "num_undelivered_messages")
              aggregation = { alignmentPeriod = "60s", perSeriesAligner = "ALIGN_MAX" }
            }
          }
        }]
      }
    },
    {
      title = "Oldest unacked run request (s)"
      xyChart = {
        dataSets = [{
          plotType = "LINE"
          timeSeriesQuery = {
            timeSeriesFilter = {
              filter      = format(local.subscription_filter, google_pubsub_subscription.worker.name, "oldest_unacked_message_age")
              aggregation = { alignmentPeriod = "60s", perSeriesAligner = "ALIGN_MAX" }
            }
          }
        }]
        thresholds = [{ value = var.max_lease_seconds, label = "lease" }]
      }
    },
    {
      title = "Streaming pull responses on the worker subscription (/s)"
      xyChart = {
        dataSets = [{
          plotType = "LINE"
          timeSeriesQuery = {
            timeSeriesFilter = {
              filter      = format(local.subscription_filter, google_pubsub_subscription.worker.name, "streaming_pull_response_count")
              aggregation = { alignmentPeriod = "60s", perSeriesAligner = "ALIGN_RATE", crossSeriesReducer = "REDUCE_SUM" }
            }
          }
        }]
      }
    },
    {
      title = "Runs by status (/s)"
      xyChart = {
        dataSets = [{
          plotType        = "STACKED_AREA"
          timeSeriesQuery = { prometheusQuery = "sum by (status) (rate(convergence_runs_total[5m]))" }
        }]
      }
    },
    {
      title = "Failed-run share (FAILED or TIMEOUT)"
      xyChart = {
        dataSets = [{
          plotType        = "LINE"
          timeSeriesQuery = { prometheusQuery = local.failed_run_share }
        }]
        thresholds = [{ value = var.failed_run_ratio, label = "alert" }]
      }
    },
    {
      title = "Runs running and waiting in the workers"
      xyChart = {
        dataSets = [
          for gauge in ["convergence_runs_running", "convergence_runs_waiting"] : {
            plotType        = "LINE"
            legendTemplate  = gauge
            timeSeriesQuery = { prometheusQuery = "sum(${gauge})" }
          }
        ]
      }
    },
    {
      title = "Run requests drained from the dead-letter subscription (/s)"
      xyChart = {
        dataSets = [{
          plotType        = "LINE"
          timeSeriesQuery = { prometheusQuery = "sum(rate(convergence_dead_lettered_total[5m]))" }
        }]
      }
    },
  ]
}
