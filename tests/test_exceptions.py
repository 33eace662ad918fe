"""One error tree per package: every exception class of a package derives from its root."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import warnings
from types import ModuleType

import pytest
from starlette.exceptions import StarletteDeprecationWarning

ROOTS = {"scorers": "ScorerError", "sinks": "SinkError", "stream": "StreamError"}


def _modules(package: str) -> list[ModuleType]:
    pkg = importlib.import_module(package)
    found = [pkg]
    for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}."):
        if info.name.endswith("__main__"):
            continue
        found.append(importlib.import_module(info.name))
    return found


def _exception_classes(package: str) -> dict[str, type[BaseException]]:
    out: dict[str, type[BaseException]] = {}
    for module in _modules(package):
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.split(".")[0] == package:
                out[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return out


@pytest.mark.parametrize("package", sorted(ROOTS))
def test_every_exception_derives_from_the_package_root(package: str) -> None:
    root = getattr(importlib.import_module(package), ROOTS[package])
    classes = _exception_classes(package)
    assert root in classes.values()
    strays = sorted(name for name, cls in classes.items() if not issubclass(cls, root))
    assert strays == [], f"not under {root.__name__}: {strays}"


@pytest.mark.parametrize("package", sorted(ROOTS))
def test_the_tree_is_drawn_in_the_exceptions_docstring(package: str) -> None:
    module = importlib.import_module(f"{package}._exceptions")
    doc = module.__doc__ or ""
    defined = [
        cls.__name__
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__ == module.__name__
    ]
    assert defined
    assert [name for name in defined if name not in doc] == []


def test_stream_errors_are_importable_where_they_were() -> None:
    import stream
    import stream._exceptions as exc
    from stream.api._auth import ApiError
    from stream.registry._filter import FilterError
    from stream.registry._records import RegistryError
    from stream.sdk._feedback import FeedbackError
    from stream.sdk._tokens import TokenError

    assert ApiError is exc.ApiError and FilterError is exc.FilterError and RegistryError is exc.RegistryError
    assert FeedbackError is exc.FeedbackError and TokenError is exc.TokenError
    for name in ("FilterError", "RegistryError", "TokenError", "FeedbackError", "StreamError"):
        assert getattr(stream, name) is getattr(exc, name)


def test_value_errors_stay_value_errors() -> None:
    """Callers that caught `ValueError` (or `RuntimeError` for offsets) still do."""
    from stream._exceptions import FilterError, OffsetError, RegistryError

    assert issubclass(FilterError, ValueError) and issubclass(RegistryError, ValueError)
    assert issubclass(OffsetError, RuntimeError)


def test_a_backwards_offset_raises_a_stream_error() -> None:
    from stream._exceptions import OffsetError, StreamError
    from stream.worker._checkpoint import Checkpoint, Entry

    checkpoint = Checkpoint()
    checkpoint.add("tp", Entry(5, 0))
    with pytest.raises(OffsetError) as info:
        checkpoint.add("tp", Entry(5, 0))
    assert isinstance(info.value, StreamError)
    assert (info.value.partition, info.value.offset, info.value.last) == ("tp", 5, 5)


def test_exit_codes_say_whether_the_input_is_at_fault() -> None:
    from scorers import DecodeError, JudgeTimeoutError, ScorerDefinitionError
    from sinks import SinkUnavailableError
    from stream._exceptions import (
        ConfigError,
        FilterError,
        KafkaUnavailableError,
        RegistryError,
        StreamError,
        TokenError,
        exit_code,
    )

    usage = [
        ConfigError("x"),
        FilterError("x", text="x", column=1),
        RegistryError("x"),
        TokenError("expired", "x"),
        DecodeError("not_json", "x"),
        ScorerDefinitionError("x"),
    ]
    failure = [StreamError("x"), KafkaUnavailableError("x"), SinkUnavailableError("x"), JudgeTimeoutError("x")]
    assert [exit_code(e) for e in usage] == [2] * len(usage)
    assert [exit_code(e) for e in failure] == [1] * len(failure)
    assert exit_code(KeyError("x")) == 1


def test_dead_letter_reasons() -> None:
    from scorers import DecodeError
    from stream._exceptions import TokenError, dead_letter_reason

    assert dead_letter_reason(DecodeError("bad_id", "x")) == "bad_id"
    assert dead_letter_reason(ValueError("x")) == "bad_feedback"
    assert dead_letter_reason(TokenError("expired", "x")) == "bad_feedback"


def test_http_statuses_of_the_tree() -> None:
    from sinks import SinkError, SinkUnavailableError
    from stream._exceptions import (
        ApiError,
        FilterError,
        KafkaUnavailableError,
        PublishError,
        RegistryError,
        StreamError,
        TokenError,
    )
    from stream.api import http_status

    assert http_status(ApiError(404, "trace_not_found", "x")) == 404
    assert http_status(TokenError("expired", "x")) == 401
    assert http_status(TokenError("wrong_trace", "x")) == 403
    assert http_status(FilterError("x", text="x", column=1)) == 422
    assert http_status(RegistryError("x")) == 422
    assert http_status(KafkaUnavailableError("x")) == 503
    assert http_status(PublishError("x")) == 503
    assert http_status(SinkUnavailableError("x")) == 503
    assert http_status(SinkError("x")) == 500
    assert http_status(StreamError("x")) == 500


def test_an_unconverted_stream_error_is_rendered_by_the_api() -> None:
    with warnings.catch_warnings():  # starlette would rather have httpx2; httpx works the same here
        warnings.simplefilter("ignore", StarletteDeprecationWarning)
        from starlette.testclient import TestClient

    from stream._config import Settings
    from stream._exceptions import KafkaUnavailableError
    from stream.api import create_app

    class Store:
        async def get_trace(self, trace_id: str) -> None:
            raise KafkaUnavailableError("escaped")

        async def ping(self) -> None:
            return None

    class Producer:
        async def send_and_wait(self, *args: object, **kwargs: object) -> None:
            return None

    app = create_app(Settings(api_keys=["k"]), producer=Producer(), sink=Store())  # type: ignore[arg-type]
    with TestClient(app) as client:
        response = client.get("/v1/traces/t1", headers={"Authorization": "Bearer k"})
    assert response.status_code == 503
    assert response.json()["error"] == "unavailable"
    assert response.headers["Retry-After"] == "1"
