"""Loaded by a `convergence consume` process a test starts with this folder first on PYTHONPATH: every
acknowledge / modify_ack_deadline RPC the subscriber client sends, and whether Pub/Sub accepted it, goes
as one JSON line to $CONVERGENCE_PUBSUB_SPY. Then the next sitecustomize on the path runs (the BigQuery
recorder's)."""

import importlib.util
import json
import os
import sys
import threading
import time

_lock = threading.Lock()


def _record(path, entry):
    with _lock, open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(entry) + "\n")


def _install(path):
    from google.pubsub_v1.services.subscriber import client

    def spy(name, seconds_of):
        original = getattr(client.SubscriberClient, name)

        def call(self, *args, **kwargs):
            request = kwargs.get("request") or (args[0] if args else None)
            ack_ids = list(kwargs.get("ack_ids") or getattr(request, "ack_ids", None) or [])
            subscription = kwargs.get("subscription") or getattr(request, "subscription", None)
            entry = {"rpc": name, "subscription": subscription, "seconds": seconds_of(kwargs, request),
                     "ack_ids": ack_ids, "at": time.time()}
            try:
                result = original(self, *args, **kwargs)
            except Exception as error:
                _record(path, {**entry, "ok": False, "error": type(error).__name__})
                raise
            _record(path, {**entry, "ok": True})
            return result

        setattr(client.SubscriberClient, name, call)

    spy("acknowledge", lambda kwargs, request: None)
    spy("modify_ack_deadline",
        lambda kwargs, request: kwargs.get("ack_deadline_seconds", getattr(request, "ack_deadline_seconds", None)))


def _next_sitecustomize():
    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        candidate = os.path.join(os.path.abspath(entry or "."), "sitecustomize.py")
        if os.path.dirname(candidate) != here and os.path.isfile(candidate):
            spec = importlib.util.spec_from_file_location("_next_sitecustomize", candidate)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return


if os.environ.get("CONVERGENCE_PUBSUB_SPY"):
    try:
        _install(os.environ["CONVERGENCE_PUBSUB_SPY"])
    except Exception as error:  # noqa: BLE001 - the test then finds no records and says so
        sys.stderr.write(f"pubsub spy not installed: {error!r}\n")
_next_sitecustomize()
