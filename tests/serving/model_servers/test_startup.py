"""The start-up helpers the predictor and the transformer share: which event loop their
``asyncio.run`` gets, and a body not sent as JSON."""

from __future__ import annotations

import asyncio
import sys

import pytest
from kserve.errors import InvalidInput

from kfloop.errors import ConfigError
from kfloop.serving.model_servers.startup import install_event_loop, require_json

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
