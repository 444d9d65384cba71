"""tools.metrics_summary: rates, error shares and percentiles over an interval from two scrapes,
and one summary printed from live /metrics endpoints."""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping

import grpc
import pytest

from meshkit.metrics import MetricsEndpoint, serve_metrics
from meshkit.rpc_metrics import RpcCollector, RpcMetrics
from tests.helpers import free_port
from tools.metrics_summary import RpcRow, envoy_rows, main, parse, quantile, rpc_rows

AUTH = "meshgram.auth.v1.AuthService"
BOUNDS = ("0.001", "0.005", "0.01", "0.1", "+Inf")


def process_text(calls: Mapping[tuple[str, str], int], buckets: Mapping[str, list[int]]) -> str:
    """A service's /metrics with calls by (method, code) and cumulative latency buckets by
    method (one count per bound of BOUNDS)."""
    lines = ["# TYPE meshgram_rpc_calls counter"]
    for (method, code), count in calls.items():
        lines.append(
            f'meshgram_rpc_calls_total{{service="{AUTH}",method="{method}",code="{code}"}} {count}'
        )
    lines.append("# TYPE meshgram_rpc_duration_seconds histogram")
    for method, counts in buckets.items():
        labels = f'service="{AUTH}",method="{method}"'
        for bound, count in zip(BOUNDS, counts, strict=True):
            lines.append(f'meshgram_rpc_duration_seconds_bucket{{{labels},le="{bound}"}} {count}')
        lines.append(f"meshgram_rpc_duration_seconds_count{{{labels}}} {counts[-1]}")
        lines.append(f"meshgram_rpc_duration_seconds_sum{{{labels}}} 1.0")
    return "\n".join(lines) + "\n"


def row(rows: list[RpcRow], method: str) -> RpcRow:
    """The row of one AuthService method."""
    (found,) = [r for r in rows if (r.service, r.method) == (AUTH, method)]
    return found


def test_quantiles_interpolate_inside_the_bucket_that_holds_them() -> None:
    buckets = [(0.001, 0), (0.005, 50), (0.01, 90), (0.1, 100), (float("inf"), 100)]
    # The 50th of 100 calls is the last of the 1..5 ms bucket.
    assert quantile(buckets, 0.5) == pytest.approx(0.005)
    # The 99th is 9/10 of the way through the 10..100 ms bucket.
    assert quantile(buckets, 0.99) == pytest.approx(0.091)
    # The first bucket starts at 0.
    assert quantile([(0.002, 10), (float("inf"), 10)], 0.5) == pytest.approx(0.001)


def test_quantiles_beyond_the_last_bound_report_that_bound_and_none_without_calls() -> None:
    assert quantile([(0.1, 1), (10.0, 1), (float("inf"), 100)], 0.99) == 10.0
    assert quantile([(0.1, 0), (float("inf"), 0)], 0.5) is None


def test_rows_sum_replicas_and_compute_rates_errors_and_percentiles() -> None:
    replica_a = (
        parse(
            process_text(
                {("Login", "OK"): 100, ("Login", "UNAUTHENTICATED"): 10},
                {"Login": [0, 50, 100, 110, 110]},
            )
        ),
        parse(
            process_text(
                {
                    ("Login", "OK"): 160,
                    ("Login", "UNAUTHENTICATED"): 20,
                    ("Login", "INTERNAL"): 5,
                },
                {"Login": [0, 90, 170, 185, 185]},
            )
        ),
    )
    # Restarted between the scrapes: its counters began again from zero.
    replica_b = (
        parse(process_text({("Login", "OK"): 500}, {"Login": [500, 500, 500, 500, 500]})),
        parse(
            process_text(
                {("Login", "OK"): 5, ("Login", "UNAVAILABLE"): 5},
                {"Login": [0, 0, 0, 10, 10]},
            )
        ),
    )

    (login,) = rpc_rows([replica_a, replica_b], seconds=2.0)

    # 75 calls on a (60 OK, 10 UNAUTHENTICATED, 5 INTERNAL) and 10 on b (5 OK, 5 UNAVAILABLE).
    assert login.calls == 85
    assert login.per_second == pytest.approx(42.5)
    assert login.error_ratio == pytest.approx(20 / 85)
    assert login.server_error_ratio == pytest.approx(10 / 85)
    # Interval buckets (cumulative): <=1 ms 0, <=5 ms 40, <=10 ms 70, <=100 ms 85.
    assert login.p50_seconds == pytest.approx(0.005 + 0.005 * (42.5 - 40) / 30)
    assert login.p99_seconds == pytest.approx(0.01 + 0.09 * (84.15 - 70) / 15)


def test_an_rpc_without_calls_in_the_interval_has_a_row_without_figures() -> None:
    scrape = parse(
        process_text(
            {("Login", "OK"): 7, ("Refresh", "OK"): 3},
            {"Login": [0, 7, 7, 7, 7], "Refresh": [3, 3, 3, 3, 3]},
        )
    )
    later = parse(
        process_text(
            {("Login", "OK"): 9, ("Refresh", "OK"): 3},
            {"Login": [0, 9, 9, 9, 9], "Refresh": [3, 3, 3, 3, 3]},
        )
    )

    rows = rpc_rows([(scrape, later)], seconds=1.0)

    assert [r.method for r in rows] == ["Login", "Refresh"]
    assert row(rows, "Login").per_second == 2
    assert row(rows, "Login").error_ratio == 0
    refresh = row(rows, "Refresh")
    assert refresh.per_second == 0
    assert (refresh.error_ratio, refresh.p50_seconds, refresh.p99_seconds) == (None, None, None)


def envoy_text(edge: int, edge_4xx: int, edge_5xx: int, edge_ms: list[int], auth: int) -> str:
    """Envoy's /stats/prometheus with the edge listener's totals, the admin listener's and the
    auth_svc cluster's (time buckets in milliseconds, bounds 1, 10, 100, +Inf)."""
    edge_labels = 'envoy_http_conn_manager_prefix="edge"'
    lines = [
        "# TYPE envoy_http_downstream_rq_total counter",
        f"envoy_http_downstream_rq_total{{{edge_labels}}} {edge}",
        'envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix="admin"} 1000',
        "# TYPE envoy_http_downstream_rq_xx counter",
        f'envoy_http_downstream_rq_xx{{envoy_response_code_class="4",{edge_labels}}} {edge_4xx}',
        f'envoy_http_downstream_rq_xx{{envoy_response_code_class="5",{edge_labels}}} {edge_5xx}',
        "# TYPE envoy_http_downstream_rq_time histogram",
    ]
    for bound, count in zip(("1", "10", "100", "+Inf"), edge_ms, strict=True):
        lines.append(f'envoy_http_downstream_rq_time_bucket{{{edge_labels},le="{bound}"}} {count}')
    lines += [
        f"envoy_http_downstream_rq_time_count{{{edge_labels}}} {edge_ms[-1]}",
        f"envoy_http_downstream_rq_time_sum{{{edge_labels}}} 0",
        "# TYPE envoy_cluster_upstream_rq_total counter",
        f'envoy_cluster_upstream_rq_total{{envoy_cluster_name="auth_svc"}} {auth}',
    ]
    return "\n".join(lines) + "\n"


def test_envoy_rows_show_the_edge_and_each_cluster_but_not_the_admin_listener() -> None:
    before = parse(envoy_text(100, edge_4xx=10, edge_5xx=0, edge_ms=[0, 50, 100, 100], auth=40))
    after = parse(envoy_text(300, edge_4xx=30, edge_5xx=2, edge_ms=[0, 150, 300, 300], auth=90))

    rows = envoy_rows(before, after, seconds=4.0)

    assert [r.name for r in rows] == ["edge (downstream)", "auth_svc (upstream)"]
    edge, auth = rows
    assert edge.per_second == 50
    assert edge.ratio_4xx == pytest.approx(0.1)
    assert edge.ratio_5xx == pytest.approx(0.01)
    # Envoy's buckets are milliseconds: 100 of 200 calls took 1..10 ms.
    assert edge.p50_seconds == pytest.approx(0.010)
    assert edge.p99_seconds == pytest.approx(0.010 + 0.090 * (198 - 100) / 100)
    assert auth.per_second == 12.5
    assert (auth.ratio_4xx, auth.p50_seconds) == (0, None)


@pytest.fixture
def endpoints() -> Iterator[tuple[RpcMetrics, MetricsEndpoint, MetricsEndpoint]]:
    """Two /metrics endpoints on loopback: a process with per-RPC figures and one without
    (started before they existed)."""
    metrics = RpcMetrics()
    current = serve_metrics("127.0.0.1", 0, [RpcCollector(metrics)])
    old = serve_metrics("127.0.0.1", 0, [])
    try:
        yield metrics, current, old
    finally:
        current.close()
        old.close()


def test_once_prints_a_row_per_rpc_and_names_processes_without_figures(
    endpoints: tuple[RpcMetrics, MetricsEndpoint, MetricsEndpoint],
) -> None:
    metrics, current, old = endpoints
    metrics.started(f"/{AUTH}/Refresh").finished(grpc.StatusCode.OK, 0.002)
    silent = f"127.0.0.1:{free_port()}"
    now = [100.0]

    def calls_meanwhile(seconds: float) -> None:
        """Stand in for the interval: time passes and calls arrive."""
        now[0] += seconds
        for code in (grpc.StatusCode.OK,) * 3 + (grpc.StatusCode.UNAVAILABLE,):
            metrics.started(f"/{AUTH}/Login").finished(code, 0.003)

    out = io.StringIO()
    targets = f"127.0.0.1:{current.port},127.0.0.1:{old.port},{silent}"
    status = main(
        ["--once", "--interval", "2", "--targets", targets, "--envoy", ""],
        out=out,
        sleep=calls_meanwhile,
        clock=lambda: now[0],
    )

    assert status == 0
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("meshgram per-RPC figures over 2.0 s from 2 process(es)")
    assert any(line.startswith(f"{silent}: not answering") for line in lines)
    assert any(line.startswith("no per-RPC figures") and f":{old.port}" in line for line in lines)
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in lines if line.startswith(AUTH)}
    # Login: 4 calls in 2 s, one UNAVAILABLE (a server-side error), all in the 2.5..5 ms bucket.
    rate, errors, server_errors, p50, p99 = rows[(AUTH, "Login")]
    assert (rate, errors, server_errors) == ("2.00", "25.0%", "25.0%")
    assert float(p50) == pytest.approx(3.75, abs=0.05)
    assert float(p99) == pytest.approx(4.975, abs=0.05)
    # Refresh was called before the interval only: listed, without figures.
    assert rows[(AUTH, "Refresh")] == ["0.00", "-", "-", "-", "-"]
