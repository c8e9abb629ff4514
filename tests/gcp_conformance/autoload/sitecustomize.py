"""Loaded by every Python process the tests start (this folder is put first on PYTHONPATH): when the
recording directory is set, google-cloud-bigquery is recorded as soon as some code imports it."""

import os

if os.environ.get("CONVERGENCE_BQ_RECORD_DIR"):
    try:
        from tests.gcp_conformance.recorder import install_on_import

        install_on_import()
    except Exception:  # noqa: BLE001, S110 - a process that cannot record still runs; the gap shows as missing statements
        pass
