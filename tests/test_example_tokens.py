"""The gateway refuses to start with a token we ship as an example (`dev-token-change-me`, …) when
it is reachable beyond loopback: anyone who has read this repository knows those tokens."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from foodcal.settings import SettingsError
from foodcal.settings.checks import is_example_token, is_loopback
from tests.conftest import API_TOKEN, make_settings
from tests.deploy_helpers import ROOT, built_services, env_example, environment
from tests.processes import env_for

EXAMPLES = {
    "API_TOKENS": {"api_tokens": [API_TOKEN, "dev-token-change-me"]},
    "ADMIN_TOKENS": {"admin_tokens": ["dev-admin-change-me"]},
    "INTERNAL_TOKEN": {"internal_token": "dev-internal-change-me"},
}


def _gateway_env(tmp_path, host: str, api_tokens: list[str]) -> dict[str, str]:
    return env_for(
        {
            "bind_host": host,
            "gateway_port": 0,
            "api_tokens": api_tokens,
            "admin_tokens": ["an-operator-token"],
            "internal_token": "an-internal-token",
            "use_chatgpt": False,
            "database_url": f"sqlite:///{tmp_path}/foodcal.db",
            "upload_dir": tmp_path / "uploads",
            "models_dir": tmp_path / "models",
        }
    )


def test_a_gateway_on_every_interface_with_an_example_token_exits_naming_it(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "gateway"],
        cwd=tmp_path,  # no .env here: only the settings above count
        env=_gateway_env(tmp_path, "0.0.0.0", ["dev-token-change-me"]),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0, done.stderr[-2000:]
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith("API_TOKENS: ") and "BIND_HOST=0.0.0.0" in message, done.stderr[-2000:]


@pytest.mark.parametrize(
    ("host", "api_tokens"),
    [("127.0.0.1", ["dev-token-change-me"]), ("0.0.0.0", ["a-token-of-our-own"])],
    ids=["example-tokens-on-loopback", "own-tokens-everywhere"],
)
def test_a_gateway_the_check_lets_through_starts_serving(tmp_path, host, api_tokens):
    """The same start-up as above gets past the check and serves (its log says on which address)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway"],
        cwd=tmp_path,
        env=_gateway_env(tmp_path, host, api_tokens),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        for line in process.stderr:  # ends when the process exits
            lines.append(line)
            if "gateway serving on" in line:
                break
        assert f"gateway serving on {host}:" in "".join(lines), "".join(lines)[-2000:]
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "gateway.example.com"])
def test_an_example_token_is_refused_beyond_loopback(tmp_path, name, host):
    settings = make_settings(tmp_path, bind_host=host, **EXAMPLES[name])
    with pytest.raises(SettingsError, match=f"^{name}: .*example"):
        settings.refuse_example_tokens_beyond_loopback()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"])
def test_every_loopback_spelling_counts_as_loopback(host):
    assert is_loopback(host)  # so example tokens serve there (the process test above starts one)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "gateway.example.com", "127.example.com"])
def test_nothing_else_counts_as_loopback(host):
    assert not is_loopback(host)


def test_the_published_host_decides_where_the_gateway_is_reachable(tmp_path):
    """In a container the gateway binds 0.0.0.0; GATEWAY_PUBLISHED_HOST says what the host exposes."""
    examples = EXAMPLES["API_TOKENS"]
    behind_loopback = make_settings(
        tmp_path, bind_host="0.0.0.0", gateway_published_host="127.0.0.1", **examples
    )
    behind_loopback.refuse_example_tokens_beyond_loopback()
    published = make_settings(tmp_path, bind_host="0.0.0.0", gateway_published_host="0.0.0.0", **examples)
    with pytest.raises(SettingsError, match=r"GATEWAY_PUBLISHED_HOST=0\.0\.0\.0"):
        published.refuse_example_tokens_beyond_loopback()


def test_every_token_we_ship_is_recognised_as_an_example():
    shipped = {key: value for key, value in env_example().items() if "TOKEN" in key}
    for name, service in built_services().items():
        shipped |= {f"{name}:{key}": value for key, value in environment(service).items() if "TOKEN" in key}
    secret = yaml.safe_load((ROOT / "deploy/k8s/secret.yaml").read_text())["stringData"]
    shipped |= {f"k8s:{key}": value for key, value in secret.items() if "TOKEN" in key}
    assert {"API_TOKENS", "ADMIN_TOKENS", "INTERNAL_TOKEN", "k8s:API_TOKENS"} <= set(shipped)
    for where, value in shipped.items():
        assert all(is_example_token(token) for token in value.split(",")), (where, value)
