"""What the local stack cannot show on its own: that BigQuery itself would accept what the tests send.

`recorder` writes down every statement and table schema sent through google-cloud-bigquery, in the pytest
process and in every Python process the tests start; `plugin` analyzes them with Google's SQL front end at
the end of the session and fails the run on any refusal."""
