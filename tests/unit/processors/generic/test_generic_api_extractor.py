"""generic.api_extractor end to end: the executor, a local REST stand-in over real HTTP that checks every
request, the real warehouse Writer on the BigQuery emulator.

Every auth type and every pagination type; 10,000+ rows land once; a 429 storm obeys the rate limit and
finishes; a failure at page N keeps pages 1..N-1 and names N; a redelivery does not duplicate; memory
stays at one batch (rows are written while later pages are still being fetched); the SSRF guard refuses
loopback and metadata addresses in production; credential resolution follows the order of
convergence/extractors/credentials.py.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from convergence.devstack.providers.rest_server import ExpectedAuth, RestStandIn
from convergence.pipeline import RunStatus
from convergence.warehouse.writer import Writer
from tests.paths import REPO_ROOT
from tests.support.generic import (
    DictCredentials,
    TestServices,
    make_settings,
    new_org,
    pipeline,
    run,
    table_rows,
)

pytestmark = [pytest.mark.emulator]

SECRET = "sk-live-3f9a1c0b7d"


@pytest.fixture
async def env(local_stack):
    """start(server, **settings) -> (base_url, services); everything closed at the end."""
    opened = []

    async def start(server: RestStandIn, credentials: DictCredentials | None = None, **overrides):
        base = await server.start()
        services = TestServices(make_settings(local_stack, **overrides), credentials)
        opened.append((server, services))
        return base, services

    yield start
    for server, services in opened:
        await services.aclose()
        await server.stop()


def extract_step(url: str, **config) -> dict:
    destination = {"table": "vendor_records_raw", "batch_size": 300, **config.pop("destination", {})}
    return {"step_id": "extract_records", "ps_type": "generic.api_extractor",
            "config": {"url": url, "destination": destination, **config}}


def raw_ids(services, org, table="vendor_records_raw") -> list[int]:
    return [json.loads(r["raw_json"])["id"] for r in table_rows(services, org, table)]


CASES = {
    # pagination type + path, with a different auth type each time (all four, plus none)
    "cursor+bearer": ("cursor", {"type": "cursor", "param": "after", "response_path": "meta.next_cursor", "limit": 100},
                      "data", ExpectedAuth("bearer", SECRET), {"type": "bearer"}),
    "offset+header": ("offset", {"type": "offset", "limit": 100, "total_path": "total"}, "results",
                      ExpectedAuth("header", SECRET, name="X-Vendor-Key"),
                      {"type": "header", "header_name": "X-Vendor-Key"}),
    "page+query": ("page", {"type": "page", "limit": 100, "limit_param": "per_page", "total_pages_path": "total_pages"},
                   "items", ExpectedAuth("query", SECRET, name="token"), {"type": "query", "param_name": "token"}),
    "link_body+basic": ("link", {"type": "link", "next_url_path": "links.next"}, "data",
                        ExpectedAuth("basic", SECRET, username="etl-bot"), {"type": "basic", "username": "etl-bot"}),
    "link_header+bearer": ("header", {"type": "link"}, None, ExpectedAuth("bearer", SECRET), {"type": "bearer"}),
    "none+none": ("single", {"type": "none"}, "data", ExpectedAuth("none"), {"type": "none"}),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_each_pagination_and_auth_type_lands_every_row_once(env, case):
    path, pagination, data_path, expected_auth, auth = CASES[case]
    total = 250 if path != "single" else 100
    server = RestStandIn(total=total, page_size=100, auth=expected_auth)
    base, services = await env(server)
    org = new_org()
    step = extract_step(f"{base}/v1/{path}/records", auth={**auth, "provider": "VENDOR_API"},
                        pagination=pagination, data_path=data_path)
    result, _ = await run(pipeline([step]), services, org, secrets={"VENDOR_API": SECRET})

    assert result.status is RunStatus.SUCCESS, result.error
    step_result = result.steps[0]
    assert step_result.rows_processed == total
    assert sorted(raw_ids(services, org)) == list(range(total))
    # The server checked every request's credential; none was refused, and it saw each page once.
    assert all(h.authorized and h.status == 200 for h in server.hits)
    expected_pages = -(-total // 100)
    assert len(server.hits) == expected_pages == step_result.result["pages"]
    if expected_auth.kind != "none":
        assert step_result.result["credential_source"] == "context_secrets"
    if path == "cursor":
        assert [h.query.get("limit") for h in server.hits] == ["100"] * expected_pages
    if path == "link":  # relative and absolute next links were both followed
        assert [h.page for h in server.hits] == [1, 2, 3]


async def test_ten_thousand_rows_across_pages_land_exactly_once(env):
    server = RestStandIn(total=10_250, page_size=500)
    base, services = await env(server)
    org = new_org()
    step = extract_step(f"{base}/v1/offset/records", pagination={"type": "offset", "limit": 500},
                        data_path="results", destination={"batch_size": 2000})
    result, _ = await run(pipeline([step]), services, org)

    assert result.status is RunStatus.SUCCESS, result.error
    ids = raw_ids(services, org)
    assert len(ids) == 10_250 and len(set(ids)) == 10_250 and min(ids) == 0 and max(ids) == 10_249
    assert result.steps[0].result["batches"] == 6  # 5 x 2000 + 250
    assert result.steps[0].result["write_methods"] == "load"  # >= 100 rows per write: load jobs
    assert result.steps[0].result["load_jobs"] == 1  # the whole step in one load job, not one per batch


async def test_a_429_storm_obeys_the_rate_limit_and_finishes(env):
    server = RestStandIn(total=600, page_size=50)
    server.storm(4, retry_after=0.2)  # the first four requests are refused with Retry-After: 0.2
    server.limit_rate(20)  # afterwards, a request sooner than 50 ms after the last accepted one gets a 429
    base, services = await env(server)
    org = new_org()
    step = extract_step(f"{base}/v1/page/records", pagination={"type": "page", "limit": 50, "limit_param": "per_page"},
                        data_path="items", rate_limit={"requests_per_second": 20, "max_retries": 6,
                                                       "initial_backoff_seconds": 0.05})
    result, _ = await run(pipeline([step]), services, org)

    assert result.status is RunStatus.SUCCESS, result.error
    assert sorted(raw_ids(services, org)) == list(range(600))
    statuses = Counter(h.status for h in server.hits)
    assert statuses[429] == 4  # only the storm: the client's own throttle never tripped the server's limit
    assert statuses[200] == 13  # 12 pages of 50 and the empty 13th that ends the page paginator
    gaps = [b.at - a.at for a, b in zip(server.hits, server.hits[1:], strict=False)]
    assert min(gaps) >= 0.045  # never faster than 20 requests/s
    assert all(gap >= 0.19 for gap in gaps[:4])  # each Retry-After was waited for


async def test_failure_at_page_n_keeps_the_pages_before_it_and_names_n(env):
    server = RestStandIn(total=1000, page_size=100)
    server.fail_at_page(6, status=503)  # every attempt at page 6 fails
    base, services = await env(server)
    org = new_org()
    step = extract_step(f"{base}/v1/cursor/records", pagination={"type": "cursor", "param": "after",
                                                                 "response_path": "meta.next_cursor", "limit": 100},
                        data_path="data", rate_limit={"max_retries": 2, "initial_backoff_seconds": 0.01})
    result, _ = await run(pipeline([step]), services, org)

    assert result.status is RunStatus.FAILED
    error = result.steps[0].error
    assert error.code == "PROVIDER_UNAVAILABLE" and error.retryable  # still transient: Pub/Sub retries
    assert "failed at page 6" in error.message and "pages 1..5 (500 rows) were written" in error.message
    # Pages 1..5: one full batch of 300 written on the way, the 200 buffered rows flushed on the failure.
    assert sorted(raw_ids(services, org)) == list(range(500))
    assert [h.page for h in server.hits if h.status == 503] == [6, 6, 6]


async def test_a_redelivered_run_replaces_what_its_failed_attempt_wrote(env):
    server = RestStandIn(total=500, page_size=100)
    server.fail_at_page(4, status=500, times=3)  # attempt 1 gives up at page 4 (3 tries), attempt 2 passes
    base, services = await env(server)
    org = new_org()
    step = extract_step(f"{base}/v1/offset/records", pagination={"type": "offset", "limit": 100},
                        data_path="results", rate_limit={"max_retries": 2, "initial_backoff_seconds": 0.01})
    first, _ = await run(pipeline([step]), services, org, run_id="run_redelivered_1")
    assert first.status is RunStatus.FAILED and len(raw_ids(services, org)) == 300

    second, _ = await run(pipeline([step]), services, org, run_id="run_redelivered_1", attempt=2)
    assert second.status is RunStatus.SUCCESS, second.error
    assert second.steps[0].result["rows_of_earlier_attempt_removed"] == 300
    assert sorted(raw_ids(services, org)) == list(range(500))


async def test_a_replace_mode_that_fails_half_way_keeps_the_earlier_content(env):
    """overwrite is applied once, at the end of the step: a failure after a full batch writes nothing (the
    table used to lose its content to the first batch and keep a partial extraction)."""
    server = RestStandIn(total=500, page_size=100)
    base, services = await env(server)
    org = new_org()
    step = extract_step(f"{base}/v1/offset/records", pagination={"type": "offset", "limit": 100},
                        data_path="results", destination={"write_mode": "overwrite"},
                        rate_limit={"max_retries": 2, "initial_backoff_seconds": 0.01})
    first, _ = await run(pipeline([step]), services, org, run_id="run_overwrite_1")
    assert first.status is RunStatus.SUCCESS, first.error
    assert first.steps[0].result["write_methods"] == "staged_merge"

    server.fail_at_page(4, status=500)  # after one full batch of 300
    second, _ = await run(pipeline([step]), services, org, run_id="run_overwrite_2")
    assert second.status is RunStatus.FAILED
    error = second.steps[0].error
    assert "failed at page 4" in error.message and "nothing was written" in error.message, error.message
    rows = table_rows(services, org, "vendor_records_raw")
    assert {r["run_id"] for r in rows} == {"run_overwrite_1"}
    assert sorted(json.loads(r["raw_json"])["id"] for r in rows) == list(range(500))


async def test_a_row_the_writer_refuses_stops_the_step_and_writes_nothing(env):
    server = RestStandIn(total=1000, page_size=100)
    base, services = await env(server)
    org = new_org()
    step = extract_step(f"{base}/v1/offset/records", pagination={"type": "offset", "limit": 100},
                        data_path="results", destination={
                            "table": "vendor_users", "schema_file": "configs/example/usage/schemas/vendor_users.json",
                            "field_map": {"id": "no_such_field"}})  # id is REQUIRED
    result, _ = await run(pipeline([step]), services, org)
    assert result.status is RunStatus.FAILED
    error = result.steps[0].error
    assert error.code == "INVALID_ROW" and not error.retryable and "REQUIRED" in error.message
    assert len(server.hits) < 10  # the refusal stopped the fetching
    assert table_rows(services, org, "vendor_users") == []


async def test_rows_stream_through_one_batch_at_a_time_into_one_load(env, monkeypatch):
    """Memory is bounded by the batch: at most two batches are held (one filling, one being spooled while
    the next pages are fetched), and the step's ONE write consumes its rows while later pages are still to
    be fetched (rows are spooled lazily, never collected), then loads them with one job."""
    server = RestStandIn(total=3000, page_size=100)
    base, services = await env(server)
    consumed: list[int] = []  # pages fetched when the write took the first row of each 500-row batch
    results = []
    real_write = Writer.write

    def spy(self, dataset, table, rows, **options):
        def watched():
            for i, row in enumerate(rows):
                if i % 500 == 0:
                    consumed.append(len(server.hits))
                yield row

        results.append(real_write(self, dataset, table, watched(), **options))
        return results[-1]

    monkeypatch.setattr(Writer, "write", spy)
    org = new_org()
    step = extract_step(f"{base}/v1/page/records", pagination={"type": "page", "limit": 100, "limit_param": "per_page",
                                                               "total_pages_path": "total_pages"},
                        data_path="items", destination={"batch_size": 500})
    result, _ = await run(pipeline([step]), services, org)

    assert result.status is RunStatus.SUCCESS, result.error
    assert 500 <= result.steps[0].result["max_rows_in_memory"] <= 1000
    # One Writer.write for the step (it used to be one per batch), one load job into the table.
    assert [(r.rows_written, r.batches, r.load_jobs, r.method) for r in results] == [(3000, 6, 1, "load")]
    assert result.steps[0].result["load_jobs"] == 1 and result.steps[0].result["batches"] == 6
    assert sorted(raw_ids(services, org)) == list(range(3000))
    # Counted in pages, not clock time, so a loaded machine cannot change the answer: batch i fills at page
    # 5(i+1), and the next batch's emit waits until batch i is spooled, so the write has taken batch i by
    # page 5(i+2) at the latest.
    assert len(consumed) == 6
    assert all(pages <= 5 * (i + 2) for i, pages in enumerate(consumed[:5])), consumed
    assert consumed[0] < len(server.hits) == 30  # the first batch was spooled long before the source ended


async def test_an_open_step_write_leaves_the_loops_default_threads_free(env):
    """A step's write waits in its thread for the whole step: in a thread of its own, so the loop's default
    pool (DNS lookups, the run log, every other to_thread call) stays free. With that pool at one thread, a
    to_thread call still runs while a write is open between two batches."""
    from convergence.pipeline import RunContext
    from convergence.processors.generic._sink import TableSink

    _, services = await env(RestStandIn(total=1))
    loop = asyncio.get_running_loop()
    previous = loop._default_executor  # noqa: SLF001 - put back afterwards
    one = ThreadPoolExecutor(max_workers=1, thread_name_prefix="default-one")
    loop.set_default_executor(one)
    org = new_org()
    context = RunContext(org_slug=org, run_id="run_open_write", pipeline_id="p", services=services)
    sink = TableSink(services, context, "extract_records", table="vendor_records_raw", schema_file=None,
                     mode="append", batch_size=100)
    try:
        async with sink.open_write() as write:
            await write.send(sink.shape([{"id": i} for i in range(100)], 1))  # open, waiting for more rows
            # A guard, not a measurement: sharing the default pool, this call would wait for the step's end.
            assert await asyncio.wait_for(asyncio.to_thread(lambda: "ran"), timeout=60) == "ran"
            await write.send(sink.shape([{"id": i} for i in range(100, 150)], 2))
            await write.finish()
    finally:
        loop._default_executor = previous  # noqa: SLF001
        one.shutdown(wait=False)
    assert write.rows_written == 150 and write.result.load_jobs == 1
    assert sorted(raw_ids(services, org)) == list(range(150))


async def test_ssrf_guard_refuses_loopback_and_metadata_in_production(env):
    server = RestStandIn(total=10)
    base, services = await env(server, environment="production")
    org = new_org()
    for url in (f"{base}/v1/single/records", "http://169.254.169.254/computeMetadata/v1/instance",
                "https://169.254.169.254/computeMetadata/v1/instance", "https://localhost:1/x"):
        result, _ = await run(pipeline([extract_step(url, data_path="data")]), services, org)
        assert result.status is RunStatus.FAILED
        error = result.steps[0].error
        assert error.code == "BLOCKED_ADDRESS" and not error.retryable, (url, error)
        assert "failed at page 1" in error.message
    assert server.hits == []  # nothing ever reached the server


async def test_allow_listed_host_passes_the_guard_in_production(env):
    server = RestStandIn(total=10)
    base, services = await env(server, environment="production", outbound_allowed_hosts=["127.0.0.1"])
    org = new_org()
    result, _ = await run(pipeline([extract_step(f"{base}/v1/single/records", data_path="data")]), services, org)
    assert result.status is RunStatus.SUCCESS, result.error
    assert result.steps[0].rows_processed == 10


async def test_a_next_link_to_another_host_is_refused(env):
    server = RestStandIn(total=10)
    base, services = await env(server)
    org = new_org()

    # A body link to another origin would hand the credential to that host.
    step = extract_step(f"{base}/v1/link/records", pagination={"type": "link", "next_url_path": "links.next"},
                        data_path="data", auth={"type": "bearer", "secret_key": "tok"})
    server.page_size = 5
    server._url = lambda request, **params: "http://127.0.0.2:9/steal"  # noqa: SLF001 - inject a hostile link
    result, _ = await run(pipeline([step]), services, org, secrets={"tok": SECRET})
    assert result.status is RunStatus.FAILED
    assert result.steps[0].error.code == "PROVIDER_BAD_RESPONSE"
    assert "failed at page 2" in result.steps[0].error.message and "another host" in result.steps[0].error.message
    assert len(raw_ids(services, org)) == 5  # page 1 was kept


async def test_credential_resolution_order(env):
    server = RestStandIn(total=5, auth=ExpectedAuth("bearer", SECRET))
    org = new_org()
    store = DictCredentials({(org, "VENDOR_API"): SECRET})
    base, services = await env(server, credentials=store)
    step = extract_step(f"{base}/v1/single/records", data_path="data",
                        auth={"type": "bearer", "provider": "VENDOR_API", "secret_key": "vendor_token"})
    config = pipeline([step])

    # 1. context secrets (from a kms_decrypt step, under the provider's lower-case name) come first
    result, _ = await run(config, services, org, secrets={"vendor_api": SECRET, "vendor_token": "wrong"})
    assert result.steps[0].result["credential_source"] == "context_secrets" and store.calls == []
    # 2. then org_integration_credentials through the credential store (KMS)
    result, context = await run(config, services, org, secrets={"vendor_token": "wrong"})
    assert result.steps[0].result["credential_source"] == "org_integration_credentials"
    assert store.calls == [(org, "VENDOR_API")] and context.secrets["vendor_api"] == SECRET  # masked from now on
    # 3. then the secret named in the config
    store.secrets.clear()
    result, _ = await run(config, services, org, secrets={"vendor_token": SECRET})
    assert result.steps[0].result["credential_source"] == "named_secret"
    # none: a permanent, explicit error
    result, _ = await run(config, services, org)
    assert result.steps[0].error.code == "CREDENTIAL_NOT_FOUND" and not result.steps[0].error.retryable


async def test_a_rejected_credential_is_permanent_and_never_leaks(env):
    server = RestStandIn(total=5, auth=ExpectedAuth("query", SECRET, name="key"))
    base, services = await env(server)
    org = new_org()
    step = extract_step(f"{base}/v1/single/records", data_path="data",
                        auth={"type": "query", "param_name": "key", "secret_key": "tok"})
    result, _ = await run(pipeline([step]), services, org, secrets={"tok": "sk-wrong-key-123"})
    error = result.steps[0].error
    assert error.code == "PROVIDER_AUTH_FAILED" and not error.retryable
    assert "sk-wrong-key-123" not in error.message
    assert len(server.hits) == 1  # a 401 is not retried


async def test_typed_destination_from_a_schema_file_with_merge(env):
    server = RestStandIn(total=120, page_size=50)
    base, services = await env(server)
    org = new_org()
    step = extract_step(f"{base}/v1/offset/records", pagination={"type": "offset", "limit": 50},
                        data_path="results", destination={
                            "table": "vendor_users", "write_mode": "merge", "key_columns": ["id"],
                            "schema_file": "configs/example/usage/schemas/vendor_users.json",
                            "field_map": {"tier": "attributes.tier"}})
    for _ in range(2):  # merge: running twice leaves one row per id
        result, _ = await run(pipeline([step]), services, org)
        assert result.status is RunStatus.SUCCESS, result.error
    rows = table_rows(services, org, "vendor_users", order_by="id")
    assert [r["id"] for r in rows] == list(range(120))
    assert rows[4] | {"ingested_at": None} == {
        "org_slug": org, "id": 4, "name": "record-0000004", "email": "user4@example.com", "amount": 0.04,
        "active": True, "tier": "pro", "tags": '["alpha"]', "ingested_at": None}
    assert result.steps[0].result["fields_not_in_schema"] == "attributes, created_at"


async def test_a_typed_destination_refuses_a_row_that_is_not_an_object(env):
    from convergence.pipeline import RunContext
    from convergence.pipeline.errors import ErrorCode, PermanentStepError
    from convergence.processors.generic._sink import TableSink

    _, services = await env(RestStandIn(total=1))
    context = RunContext(org_slug=new_org(), run_id="run_typed_rows", pipeline_id="p", services=services)
    sink = TableSink(services, context, "extract_records", table="vendor_users", mode="append",
                     schema_file=REPO_ROOT / "configs/example/usage/schemas/vendor_users.json")
    assert sink.shape([{"id": 1, "name": "a"}])[0]["id"] == 1
    with pytest.raises(PermanentStepError) as refused:
        sink.shape([["not", "an", "object"]])
    assert refused.value.code == ErrorCode.PROVIDER_BAD_RESPONSE and not refused.value.retryable
    assert "needs JSON objects as rows, got list" in str(refused.value)


async def test_a_redelivery_whose_first_attempt_created_no_table_deletes_nothing(env):
    from convergence.pipeline import RunContext
    from convergence.processors.generic._sink import TableSink

    _, services = await env(RestStandIn(total=1))
    context = RunContext(org_slug=new_org(), run_id="run_never_wrote", pipeline_id="p", services=services,
                         attempt=2)
    sink = TableSink(services, context, "extract_records", table="vendor_records_raw", schema_file=None,
                     mode="append")
    assert await sink.prepare() == 0


async def test_small_typed_appends_and_the_raw_table_both_load(env):
    server = RestStandIn(total=40, page_size=40)
    base, services = await env(server)
    org = new_org()
    typed = extract_step(f"{base}/v1/single/records", data_path="data", destination={
        "table": "vendor_users", "schema_file": "configs/example/usage/schemas/vendor_users.json",
        "field_map": {"tier": "attributes.tier"}})
    result, _ = await run(pipeline([typed]), services, org)
    # Load jobs even for 40 rows: streamed rows could not be deleted by a redelivery's DML for 30 minutes.
    assert result.steps[0].result["write_methods"] == "load"
    # The raw ELT table carries run_id (a redelivery deletes by it): load jobs too.
    result, _ = await run(pipeline([extract_step(f"{base}/v1/single/records", data_path="data")]), services, org)
    assert result.steps[0].result["write_methods"] == "load"
