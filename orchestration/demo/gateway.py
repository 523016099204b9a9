"""The demo's cross-organisation story (World Wide Flow, docs/flow.md).

Partner p-001 runs its own receiver (a separate process, verifying signatures), discovers
`clicks` through `GET /products`, asks for a subscription to its own clicks, the owner of
clicks (team:ads) approves it, and the gateway pushes the events. The partner's own click
count for an hour then equals the `partner_engagement` count flowsuite serves. Bad requests —
someone else's partner id, an unsupported filter dialect, a private sink — are refused.

The gateway runs inside the demo (its API on a free loopback port, its delivery threads);
because the receiver is on this machine, the demo allows http:// and 127.0.0.1 as a sink,
which production settings refuse.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

PARTNER = "p-001"
OWNER_OF = "clicks"


def gateway_section(demo) -> list[str] | None:
    """Run the story against the demo's broker and metastore; the lines it prints."""
    import httpx

    from connectors.gateway import FlowService, Gateway, GatewaySettings, GatewayStore
    from connectors.gateway.events import product_source
    from connectors.gateway.health import partition_lag
    from quality.expectations import load_checked_specs

    specs = load_checked_specs(demo.settings.products_dir)
    spec = next((s for s in specs if s.name == OWNER_OF and s.flow.enabled), None)
    if spec is None:
        return ["clicks does not allow subscriptions (flow.enabled in dataproducts/clicks.yaml)"]
    settings = GatewaySettings(allow_http=True, allow_sinks=(ipaddress.ip_network("127.0.0.1/32"),),
                               lease_s=5.0, retry_cap_s=2.0, poll_interval_s=0.3)
    store = GatewayStore(demo.metastore)
    service = FlowService(store, specs, settings, demo.settings.kafka_bootstrap)
    server, thread, api = _api_thread(service)
    gateway = Gateway(store, specs, demo.settings.kafka_bootstrap, settings).start()
    work = Path(tempfile.mkdtemp(prefix="flowsuite-partner-"))
    secret_file, events_file = work / "secret", work / "events.jsonl"
    receiver = subprocess.Popen(
        [sys.executable, "-m", "orchestration.demo.receiver", "--secret-file", str(secret_file), "--out", str(events_file)],
        stdout=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    sub_id = None
    partner = httpx.Client(base_url=api, headers={"Authorization": f"Bearer {store.create_token(PARTNER)}"}, timeout=60, trust_env=False)
    owner = httpx.Client(base_url=api, headers={"Authorization": f"Bearer {store.create_token(spec.owner)}"}, timeout=60, trust_env=False)
    try:
        sink = f"http://127.0.0.1:{int(receiver.stdout.readline())}/clicks"
        lines.append(f"gateway API at {api} (flowsuite flow serve runs the same); partner {PARTNER}'s receiver: "
                     f"a separate process at {sink}, verifying Standard Webhooks signatures")
        endpoint = partner.get("/products").json()["endpoints"][OWNER_OF]
        (msg_type,) = endpoint["messages"]
        lines.append(f"{PARTNER}: GET /products → {OWNER_OF}, owner {endpoint['owner']}, source "
                     f"{product_source(spec)}, type {msg_type}, required filter {endpoint['requiredfilters'][0]}")
        good = {"source": product_source(spec), "protocol": "HTTP", "sink": sink,
                "filters": [{"exact": {"partnerid": PARTNER}}], "config": {"startfrom": "earliest"}}
        for what, body in (
            ("someone else's partner id", {**good, "filters": [{"exact": {"partnerid": "p-002"}}]}),
            ("an unsupported filter dialect", {**good, "filters": [{"sql": "partnerid = 'p-001'"}]}),
            ("a private sink", {**good, "sink": "http://10.1.2.3/steal"}),
        ):
            resp = partner.post("/subscriptions", json=body)
            lines.append(f"  refused, {what}: HTTP {resp.status_code}: {resp.json()['error'][:110]}")
        resp = partner.post("/subscriptions", json=good)
        created = resp.json()
        sub_id = created["id"]
        secret_file.write_text(created["webhooksecret"])  # the partner keeps the secret shown once
        lines.append(f"{PARTNER}: POST /subscriptions → HTTP {resp.status_code}, Location {resp.headers['location']}, "
                     f"state {created['state']} (handshake answered by the receiver)")
        approved = owner.post(f"/subscriptions/{sub_id}/approve").json()
        lines.append(f"{spec.owner} (owner of {OWNER_OF}): approve → state {approved['state']}")
        started = time.monotonic()
        sub = store.get(sub_id)
        while time.monotonic() - started < 180:
            lag = partition_lag(store, spec, sub, demo.settings.kafka_bootstrap)
            if lag and all(v["lag"] == 0 for v in lag.values()):
                break
            time.sleep(0.5)
        sub = store.get(sub_id)
        lines.append(f"pushed {sub.delivered:,} events in {time.monotonic() - started:.1f} s "
                     f"(failures {sub.failures}, last outcome {sub.last_outcome}); lag now 0 on every partition")
        lines += _compare_counts(demo, events_file)
    finally:
        if sub_id is not None:
            partner.delete(f"/subscriptions/{sub_id}")  # the demo cleans up; a partner keeps it
        partner.close()
        owner.close()
        gateway.stop()
        server.should_exit = True
        thread.join(10)
        receiver.terminate()
        receiver.wait(10)
    return lines


def _compare_counts(demo, events_file: Path) -> list[str]:
    from examples.engagement import read_lake

    received = [json.loads(line) for line in events_file.read_text().splitlines()] if events_file.exists() else []
    not_mine = sum(1 for e in received if e.get("partnerid") != PARTNER)
    clicks_by_hour: dict[str, set[str]] = {}
    for e in received:
        if e["data"].get("kind") == "click":
            clicks_by_hour.setdefault(e["time"][:13].replace("T", "-"), set()).add(e["data"]["event_id"])
    served = {r["hour_start"].strftime("%Y-%m-%d-%H"): r["clicks"] for r in read_lake(demo.lake, demo.metastore).to_pylist()
              if r["partner_id"] == PARTNER}
    if not clicks_by_hour or not served:
        return [f"the receiver got {len(received)} event(s); nothing to compare yet"]
    hour = max(served, key=lambda h: served[h])
    theirs, ours = len(clicks_by_hour.get(hour, ())), served[hour]
    verdict = "equal" if theirs == ours else "DIFFERENT"
    per_kind = Counter(e["data"].get("kind") for e in received)
    return [
        f"the receiver verified and kept {len(received):,} event(s) ({dict(per_kind)}), {not_mine} of another partner",
        f"{PARTNER}'s own click count for hour {hour}: {theirs:,}; partner_engagement serves {ours:,} → {verdict}",
    ]


def _api_thread(service):
    import socket
    import threading

    import uvicorn

    from connectors.gateway.api import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{port}"
