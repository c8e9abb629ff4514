"""Integration processors: credentials for the steps that follow (integrations.kms_decrypt)."""
