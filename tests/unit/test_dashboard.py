"""The Grafana dashboard and the Prometheus config of the `observability` compose profile."""

import json
import re
from pathlib import Path

import yaml
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

OBSERVABILITY = Path(__file__).resolve().parents[2] / "deploy" / "observability"
DASHBOARD = OBSERVABILITY / "grafana" / "dashboards" / "gateway.json"
_METRIC = re.compile(r"\bgateway_[a-z_]+\b")


def queried_metrics() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert expressions
    return {name for expr in expressions for name in _METRIC.findall(expr)}


def test_every_metric_the_dashboard_queries_is_one_the_gateway_exports(client: TestClient) -> None:
    # Labelled series appear once something was counted: a write, a read, a miss.
    assert client.put("/object/dash", content=b"x").status_code == 201
    assert client.get("/object/dash").status_code == 200
    assert client.get("/object/nothere").status_code == 404
    exposition = client.get("/metrics").text
    exported = {
        sample.name
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }
    missing = queried_metrics() - exported
    assert not missing, f"the dashboard queries metrics the gateway does not export: {missing}"


def test_the_dashboard_covers_requests_latency_nodes_fallbacks_and_repairs() -> None:
    queried = queried_metrics()
    assert {
        "gateway_http_requests_total",
        "gateway_http_request_duration_seconds_bucket",
        "gateway_node_requests_total",
        "gateway_node_errors_total",
        "gateway_known_nodes",
        "gateway_fallback_reads_total",
        "gateway_read_repairs_total",
    } <= queried


def test_prometheus_scrapes_the_gateway_and_grafana_reads_that_prometheus() -> None:
    scrape = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["gateway:3000"]
    sources = yaml.safe_load(
        (OBSERVABILITY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    (source,) = sources["datasources"]
    dashboard = json.loads(DASHBOARD.read_text())
    assert {panel["datasource"]["uid"] for panel in dashboard["panels"]} == {source["uid"]}
    assert source["url"] == "http://prometheus:9090"
