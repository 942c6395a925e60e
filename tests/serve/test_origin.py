"""Host and Origin checks: a foreign web page or a DNS-rebinding host name cannot drive the
server; the openai client (no Origin) and the server's own page can."""

from __future__ import annotations

import pytest
import requests
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from omniflex.serve import ServeSettings
from omniflex.serve.origin import effective_hosts, host_allowed, origin_allowed
from tests.serve.conftest import start_server


def test_host_rules():
    loopback = effective_hosts("127.0.0.1", ())
    assert host_allowed("127.0.0.1:8000", loopback) and host_allowed("localhost", loopback)
    assert host_allowed("[::1]:8000", loopback) and host_allowed(None, loopback)
    assert not host_allowed("evil.example:8000", loopback)  # DNS rebinding
    assert effective_hosts("0.0.0.0", ()) == ("*",)
    assert host_allowed("anything", effective_hosts("0.0.0.0", ()))
    assert not host_allowed("other", effective_hosts("0.0.0.0", ("api.example",)))


def test_origin_rules():
    assert origin_allowed(None, "127.0.0.1:8000", ())  # not a browser
    assert origin_allowed("http://127.0.0.1:8000", "127.0.0.1:8000", ())  # its own page
    assert not origin_allowed("http://127.0.0.1:9000", "127.0.0.1:8000", ())
    assert not origin_allowed("https://evil.example", "127.0.0.1:8000", ())
    assert not origin_allowed("null", "127.0.0.1:8000", ())
    assert origin_allowed("https://app.example/", "x", ("https://app.example",))
    assert origin_allowed("https://evil.example", "x", ("*",))


def test_settings_take_tuples_of_names():
    with pytest.raises(ValueError, match="allowed_hosts must be a tuple"):
        ServeSettings(allowed_hosts="localhost")  # type: ignore[arg-type]
    assert ServeSettings(allowed_origins=["https://a.example"]).allowed_origins == (
        "https://a.example",
    )


@pytest.fixture(scope="module")
def guarded(base_assistant):
    settings = ServeSettings(api_key=None, warmup=False, voice_guard=False,
                             allowed_origins=("https://app.example",))  # fmt: skip
    server = start_server(base_assistant, settings)
    yield server
    server.stop()


def test_foreign_host_and_origin_are_refused_over_http(guarded):
    url = guarded.url + "/v1/models"
    assert requests.get(url).status_code == 200  # no Origin: the openai client, curl
    rebound = requests.get(url, headers={"Host": "evil.example:8000"})
    assert rebound.status_code == 403 and rebound.json()["error"]["code"] == "forbidden_host"
    page = requests.get(url, headers={"Origin": "https://evil.example"})
    assert page.status_code == 403 and "--allowed-origin" in page.json()["error"]["message"]
    own = guarded.url.replace("http://", "")
    assert requests.get(url, headers={"Origin": f"http://{own}"}).status_code == 200
    assert requests.get(url, headers={"Origin": "https://app.example"}).status_code == 200


def test_foreign_page_cannot_open_the_realtime_websocket(guarded):
    ws = guarded.ws_url + "/realtime"
    with pytest.raises(InvalidStatus) as refused:
        connect(ws, origin="https://evil.example", open_timeout=10)
    assert refused.value.response.status_code == 403
    with connect(ws, origin=guarded.url, open_timeout=10) as socket:
        assert '"session.created"' in socket.recv(timeout=10)  # the server's own page
