"""Tracing is off unless the standard OTEL_* variables turn it on, and a value it cannot honour
stops the service with a message naming the variable."""

from __future__ import annotations

import grpc
import pytest

from meshkit import tracing
from meshkit.tracing import TracingSettings, TracingSettingsError, tracing_settings


def test_tracing_is_off_by_default() -> None:
    assert tracing_settings({}) is None
    assert tracing.service_name("user_svc", {}) == "user_svc"


def test_nothing_is_installed_when_tracing_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in (tracing.ENDPOINT, tracing.TRACES_ENDPOINT, tracing.TRACES_EXPORTER):
        monkeypatch.delenv(variable, raising=False)
    assert tracing.client_interceptors() == []
    assert tracing.server_interceptors() == []
    stop = tracing.configure_tracing("user_svc")
    stop()  # a no-op, safe to call


def test_an_endpoint_turns_tracing_on_with_every_trace_kept() -> None:
    assert tracing_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}) == (
        TracingSettings(
            exporter="otlp", endpoint="http://collector:4317", parent_based=True, ratio=1.0
        )
    )


def test_the_traces_endpoint_wins_over_the_general_one() -> None:
    settings = tracing_settings(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://general:4317",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://traces.example.com:4317",
        }
    )
    assert settings is not None
    assert settings.endpoint == "https://traces.example.com:4317"


def test_the_exporter_alone_uses_the_standard_local_endpoint() -> None:
    settings = tracing_settings({"OTEL_TRACES_EXPORTER": "otlp"})
    assert settings is not None
    assert settings.endpoint == "http://localhost:4317"


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"},
        {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"},
    ],
)
def test_tracing_can_be_switched_off_explicitly(env: dict[str, str]) -> None:
    assert tracing_settings(env) is None


@pytest.mark.parametrize(
    ("sampler", "arg", "parent_based", "ratio"),
    [
        ("always_off", "", False, 0.0),
        ("traceidratio", "0.25", False, 0.25),
        ("parentbased_traceidratio", "0.1", True, 0.1),
        ("parentbased_always_off", "", True, 0.0),
        ("PARENTBASED_TRACEIDRATIO", "", True, 1.0),
    ],
)
def test_the_sampler_follows_the_standard_names(
    sampler: str, arg: str, parent_based: bool, ratio: float
) -> None:
    settings = tracing_settings(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
            "OTEL_TRACES_SAMPLER": sampler,
            "OTEL_TRACES_SAMPLER_ARG": arg,
        }
    )
    assert settings is not None
    assert (settings.parent_based, settings.ratio) == (parent_based, ratio)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER"),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, "SAMPLER_ARG"),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "x"}, "SAMPLER_ARG"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
    ],
)
def test_a_value_that_cannot_be_honoured_is_refused_by_name(
    env: dict[str, str], variable: str
) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", **env}
    with pytest.raises(TracingSettingsError, match=variable):
        tracing_settings(env)


def test_the_service_name_can_be_set() -> None:
    assert tracing.service_name("user_svc", {"OTEL_SERVICE_NAME": "users-eu"}) == "users-eu"


def test_only_server_faults_mark_a_server_span_as_failed() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    spans = TracerProvider().get_tracer("test")
    with spans.start_as_current_span("a") as client_mistake:
        tracing._finish(client_mistake, grpc.StatusCode.NOT_FOUND, server=True)
    with spans.start_as_current_span("b") as fault:
        tracing._finish(fault, grpc.StatusCode.INTERNAL, server=True)
    with spans.start_as_current_span("c") as failed_call:
        tracing._finish(failed_call, grpc.StatusCode.NOT_FOUND, server=False)
    assert client_mistake.status.is_unset
    assert not fault.status.is_ok
    assert not failed_call.status.is_ok


def test_background_work_starts_no_trace_but_calls_and_their_children_do() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON
    from opentelemetry.trace import SpanKind

    from meshkit.trace_sampling import CallsOnly

    spans = TracerProvider(sampler=CallsOnly(ALWAYS_ON)).get_tracer("test")
    with spans.start_as_current_span("sweep", kind=SpanKind.CLIENT) as background:
        assert not background.is_recording()
    with spans.start_as_current_span("call", kind=SpanKind.SERVER) as call:
        with spans.start_as_current_span("SELECT", kind=SpanKind.CLIENT) as statement:
            assert statement.is_recording()
        assert call.is_recording()


def test_a_service_with_a_bad_tracing_value_stops_with_a_message_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from meshkit.settings import ServiceSettings, load_settings

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "sometimes")
    with pytest.raises(SystemExit, match=r"user_svc: cannot start.*\n  OTEL_TRACES_SAMPLER must"):
        load_settings(ServiceSettings, "user_svc")
