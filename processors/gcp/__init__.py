"""GCP processors: REST APIs with a customer's service account, and the billing export copy (dual client)."""
