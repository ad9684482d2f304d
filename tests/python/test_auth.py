"""The Python client against a broker with auth (docs/security.md): keys from `busctl
keygen` files, a refused key and a wrong broker key as Unauthenticated, a rule's refusal
as PermissionDenied."""
import os
import subprocess

import pytest

import sagebus

from conftest import BUSD, Broker

BUSCTL = os.path.join(os.path.dirname(BUSD), "..", "tools", "busctl")

RULES = """
[broker]
key-file = "server.key_secret"

[[principal]]
name = "py"
key-files = ["client.key"]
allow.name = [">"]
allow.register = ["echo"]
allow.call = ["echo.>"]
"""


@pytest.fixture
def secured(tmp_path):
    for name in ("server", "client", "stranger", "impostor"):
        subprocess.run([BUSCTL, "keygen", str(tmp_path / name)], check=True, timeout=30,
                       capture_output=True)
    rules = tmp_path / "auth.toml"
    rules.write_text(RULES)
    broker = Broker("--auth", str(rules))
    yield broker, tmp_path
    broker.stop()


def test_keys_from_files_get_in_and_refusals_are_their_own_exceptions(secured):
    broker, keys = secured
    allowed = {"server_key": str(keys / "server.key"),
               "client_key": str(keys / "client.key_secret")}
    with sagebus.Client(broker.endpoint, **allowed) as c, \
            sagebus.Client(broker.endpoint, **allowed) as caller:
        echo = sagebus.Service(c, "echo")
        echo.handle("echo", lambda r: r.payload)
        echo.start(wait=10)
        assert caller.call("echo", "echo", b"secret") == b"secret"
        with pytest.raises(sagebus.PermissionDenied, match="call"):
            caller.call("other", "m")
        other = sagebus.Service(caller, "other")
        other.handle("m", lambda r: b"")
        with pytest.raises(sagebus.PermissionDenied, match="register"):
            other.start(wait=10)
        echo.stop()

    with sagebus.Client(broker.endpoint, server_key=str(keys / "server.key"),
                        client_key=str(keys / "stranger.key_secret")) as stranger:
        with pytest.raises(sagebus.Unauthenticated, match=broker.endpoint.split("//")[1]):
            stranger.call("echo", "echo", b"x", timeout=5)

    with sagebus.Client(broker.endpoint, server_key=str(keys / "impostor.key"),
                        client_key=str(keys / "client.key_secret")) as fooled:
        with pytest.raises(sagebus.Unauthenticated):
            fooled.call("echo", "echo", b"x", timeout=5)

    with sagebus.Client(broker.endpoint) as plain:
        with pytest.raises(sagebus.Unauthenticated):
            plain.call("echo", "echo", b"x", timeout=5)
