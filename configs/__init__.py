"""The pipeline configurations: YAML pipelines, JSON table schemas, SQL and seed data, installed with the
package as `convergence.configs`."""
