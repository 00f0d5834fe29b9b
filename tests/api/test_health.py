"""/healthz, /readyz, /metrics; request ids; unknown routes and methods."""
import re
import time

from conftest import assert_error


def test_healthz_needs_no_key(api):
    r = api.get("/healthz", root=True)
    assert r.status_code == 200
    assert r.json()["status"] == "ok"
    assert r.headers["x-request-id"].startswith("req_")


def test_readyz(api):
    r = api.get("/readyz", root=True)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ready"


def test_request_ids_are_unique(api):
    ids = {api.get("/healthz", root=True).headers["x-request-id"] for _ in range(20)}
    assert len(ids) == 20
    assert all(re.fullmatch(r"req_[0-9A-Za-z]{24}", i) for i in ids)


def test_request_ids_sort_by_creation(api):
    """The time comes first, so the ledger's primary key appends."""
    first = api.get("/healthz", root=True).headers["x-request-id"]
    time.sleep(0.005)
    second = api.get("/healthz", root=True).headers["x-request-id"]
    assert first[:13] < second[:13]
    r = api.get("/tenants")
    assert r.status_code == 401 and r.headers["x-request-id"].startswith("req_")


def test_metrics_admin_only(api, tenant):
    t, key = tenant
    assert_error(api.get("/metrics", root=True), 401)
    assert_error(api.get("/metrics", root=True, key=key), 403)
    assert_error(api.get("/metrics", root=True, key="sk-admin-" + "Z" * 43), 401)


def parse_metrics(text):
    """[(name, {label: value}, value)] for every sample line."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$', line)
        assert m, f"not a Prometheus sample line: {line!r}"
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"',
                                 m.group(3) or ""))
        float(m.group(4))  # value parses
        samples.append((m.group(1), labels, m.group(4)))
    return samples


def test_metrics_text_and_labels(api, tenant, other_tenant):
    t, key = tenant
    o, _ = other_tenant
    # Traffic on tenant-specific paths, by id and by slug, good and bad.
    for ref in (t["id"], t["slug"], o["slug"], "no_such_tenant_metrics"):
        api.aget(f"/tenants/{ref}/settings")
        api.get(f"/tenants/{ref}/settings", key=key)
    api.get(f"/unknown/{t['slug']}/path")
    r = api.get("/metrics", root=True, key=api.srv.admin_key)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert "# TYPE" in text and "# HELP" in text
    samples = parse_metrics(text)
    assert samples
    # Request counters by route and status, and a latency histogram.
    routed = [s for s in samples if "route" in s[1] and "status" in s[1]]
    assert routed, "no sample carries both route and status labels"
    assert any(n.endswith("_bucket") and "le" in lb for n, lb, _ in samples)
    assert any(n.endswith("_sum") for n, _, _ in samples)
    assert any(n.endswith("_count") for n, _, _ in samples)
    routes = {lb["route"] for _, lb, _ in samples if "route" in lb}
    assert any("{" in rt and "settings" in rt for rt in routes), routes
    # No tenant ids, slugs or raw unknown paths in any label.
    for ref in (t["id"], t["slug"], o["id"], o["slug"], "no_such_tenant_metrics"):
        assert ref not in text, f"{ref} leaked into /metrics"
    # Statuses are labelled: 200, 401/403/404 were all produced above.
    statuses = {lb["status"] for _, lb, _ in samples if "status" in lb}
    assert {"200", "404"} <= statuses, statuses


def test_unknown_route_404_and_wrong_method_405(api):
    assert_error(api.aget("/no/such/route"), 404)
    r = api.request("PUT", "/tenants", key=api.srv.admin_key, json={})
    assert r.status_code == 405, r.text
    body = r.json()["error"]
    assert body["type"] == "invalid_request_error" and body["message"]
    assert "allow" in {k.lower() for k in r.headers}
