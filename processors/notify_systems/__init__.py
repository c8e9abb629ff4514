"""Notification processors (email over SMTP, Slack incoming webhook), usable as pipeline steps."""
