"""The BigQuery adapter: client factory (`client`), name validation (`identifiers`), parameterized queries
(`query`), tables from JSON schema files with additive evolution (`tables`), the one write call processors
use (`writer`), stored procedures (`procedures`), the central bootstrap (`bootstrap`), run and step logs
(`runlog`), and the mapping of Google errors to transient/permanent step errors (`errors`).

Modules import google-cloud-bigquery; the pipeline core never imports this package (it reaches it through
`RunContext.services`).
"""
