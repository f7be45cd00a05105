"""The start-up helpers the predictor and the transformer share: which event loop their
``asyncio.run`` gets, and a body not sent as JSON."""

from __future__ import annotations

import asyncio
import sys

import pytest
from kserve.errors import InvalidInput

from kfloop.errors import ConfigError
from kfloop.serving.http_protocol import CoalescingHttpToolsProtocol
from kfloop.serving.model_servers import startup
from kfloop.serving.model_servers.startup import install_event_loop, request_id_of, require_json

uvloop = pytest.importorskip("uvloop")


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


@pytest.fixture(autouse=True)
def default_policy():
    asyncio.set_event_loop_policy(None)
    yield
    asyncio.set_event_loop_policy(None)


@pytest.mark.parametrize("choice", ["auto", "uvloop"])
def test_asyncio_run_gets_a_uvloop_loop(choice):
    install_event_loop(choice)
    asyncio.get_event_loop_policy().get_event_loop().close()  # the current loop KServe's set-up needs
    assert asyncio.run(_loop_type()) is uvloop.Loop


def test_asyncio_choice_keeps_the_standard_loop():
    install_event_loop("asyncio")
    assert asyncio.run(_loop_type()) is not uvloop.Loop


def test_uvloop_choice_without_uvloop_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        install_event_loop("uvloop")
    install_event_loop("auto")  # falls back to asyncio's loop quietly
    assert not isinstance(asyncio.get_event_loop_policy(), uvloop.EventLoopPolicy)


@pytest.mark.parametrize("payload", [b"instances=1", "instances=1"])
def test_a_body_not_sent_as_json_is_invalid_input(payload):
    with pytest.raises(InvalidInput, match="content-type: application/json"):
        require_json(payload)
    require_json({"instances": []})


def test_request_ids_come_from_the_header_else_the_body_and_are_bounded():
    assert request_id_of({"x-request-id": "h"}, "b") == "h"
    assert request_id_of({"ce-id": "c"}, None) == "c"
    assert request_id_of({}, "b") == "b" and request_id_of({}, None) is None and request_id_of(None, "") is None
    for headers, body_id in (({"x-request-id": "h" * 257}, None), ({}, "b" * 8200), ({"x-request-id": "h"}, "b" * 300)):
        with pytest.raises(InvalidInput, match="the limit is 256 bytes"):
            request_id_of(headers, body_id)
    with pytest.raises(InvalidInput, match="not printable ASCII"):
        request_id_of({}, "caf\u00e9")
    with pytest.raises(InvalidInput, match='"id" must be a string'):
        request_id_of({}, 7)


def test_http_host_binds_kserves_rest_server_and_refuses_grpc_on_every_address(monkeypatch):
    import kserve.model_server

    monkeypatch.setattr(kserve.model_server, "RESTServer", kserve.model_server.RESTServer)  # restored after
    parser = startup.argparse.ArgumentParser(parents=[kserve.model_server.parser])
    startup.add_listen_flags(parser)
    assert parser.parse_args([]).http_host == "0.0.0.0"
    assert parser.parse_args([]).enable_grpc is False  # off unless asked for: the manifests route HTTP only
    with pytest.raises(ConfigError, match="pass --enable_grpc false"):
        startup.model_server(parser.parse_args(["--http_host", "127.0.0.1", "--enable_grpc", "true"]))
    startup.listen_on("127.0.0.1")
    server = kserve.model_server.RESTServer("kserve.model_server:app", None, None, 12345)
    assert server.config.host == "127.0.0.1" and server.config.port == 12345
    assert server.config.http is CoalescingHttpToolsProtocol  # each answer's head and body in one write
    startup.listen_on(None)
    server = kserve.model_server.RESTServer("kserve.model_server:app", None, None, 12345)
    assert server.config.host == "0.0.0.0" and server.config.http is CoalescingHttpToolsProtocol
