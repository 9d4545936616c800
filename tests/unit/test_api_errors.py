"""Every error of the API has one body shape, and /docs needs no network."""

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from openanomaly.api.app import create_app
from openanomaly.settings import Settings
from tests.unit.test_api import PIPELINE, TOKEN, auth, fake_container


@pytest.fixture
def client() -> Iterator[TestClient]:
    settings = Settings(api={"token": TOKEN, "max_body_bytes": 4096})
    with fake_container(settings) as c, TestClient(create_app(c)) as tc:
        yield tc


def _error(body: Any) -> dict[str, Any]:
    """The error of a body of the one shape (and nothing else in it)."""
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"type", "message", "details"}, error
    assert isinstance(error["type"], str) and re.fullmatch(r"[A-Z][A-Za-z]+", error["type"])
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], list)
    return dict(error)


def test_every_error_has_the_same_shape(client: TestClient) -> None:
    cases = [
        (client.get("/api/v1/pipelines"), 401, "Unauthorized"),  # HTTPException, auth
        (client.get("/api/v1/pipelines/nope", headers=auth()), 404, "NotFound"),  # core error
        (client.get("/no/such/route"), 404, "NotFound"),  # routing
        (client.post("/api/v1/pipelines", headers=auth()), 405, "MethodNotAllowed"),
        (
            client.put("/api/v1/pipelines/x", json={**PIPELINE, "id": "y"}, headers=auth()),
            422,
            "ConfigError",
        ),
        (
            client.put("/api/v1/pipelines/p", json={"id": "p", "step": "1x"}, headers=auth()),
            422,
            "ValidationError",
        ),
        (client.post("/api/v1/pipelines/nope/infer", headers=auth()), 404, "NotFound"),
        (
            client.put("/api/v1/pipelines/p", json={**PIPELINE, "query": "m" * 5000}),
            413,
            "PayloadTooLarge",
        ),
    ]
    for response, status, kind in cases:
        assert response.status_code == status, (response.request.url, response.text)
        assert response.headers["content-type"] == "application/json"
        assert _error(response.json())["type"] == kind, response.text
    assert cases[0][0].headers["www-authenticate"] == "Bearer"
    assert "GET" in cases[3][0].headers["allow"]


def test_a_validation_error_lists_each_field_without_echoing_the_input(
    client: TestClient,
) -> None:
    body = {"id": "p", "step": "1x", "scoring": {"interval": 2}, "secret": "hunter2"}
    error = _error(client.put("/api/v1/pipelines/p", json=body, headers=auth()).json())
    locs = {tuple(d["loc"]) for d in error["details"]}
    assert {("body", "query"), ("body", "step"), ("body", "scoring", "interval")} <= locs
    assert all(set(d) == {"loc", "msg", "type"} for d in error["details"])
    assert "body.scoring.interval" in error["message"] and "hunter2" not in str(error)


def test_pipelines_read_back_with_durations_as_written(client: TestClient) -> None:
    body = {**PIPELINE, "infer": {"every": "5m", "context": 7200}}
    client.put("/api/v1/pipelines/p", json=body, headers=auth())
    read = client.get("/api/v1/pipelines/p", headers=auth()).json()
    assert (read["step"], read["infer"]["every"], read["infer"]["context"]) == ("1m", "5m", "2h")


def test_docs_load_nothing_from_another_host(client: TestClient) -> None:
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        links = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
        assert links, html
        external = re.findall(r"https?://[^\s\"'<>]+", html)
        assert external == [], external
        for url in links:
            asset = client.get(url)
            assert asset.status_code == 200 and len(asset.content) > 1000, url
    assert client.get("/openapi.json").json()["info"]["title"] == "OpenAnomaly"


def test_a_crash_has_the_shape_and_hides_its_message() -> None:
    with fake_container(Settings()) as c:
        app = create_app(c)

        @app.get("/boom")
        def boom() -> None:
            raise RuntimeError("secret internals")

        with TestClient(app, raise_server_exceptions=False) as client:
            r = client.get("/boom")
    assert r.status_code == 500
    assert _error(r.json()) == {
        "type": "InternalServerError",
        "message": "internal error",
        "details": [],
    }
