import pytest

from foodcal.settings import SettingsError, load_settings


def test_settings_read_environment_with_typed_values(monkeypatch):
    monkeypatch.setenv("API_TOKENS", "token-one-123, token-two-456")
    monkeypatch.setenv("GATEWAY_PORT", "6001")
    monkeypatch.setenv("USE_CHATGPT", "false")
    monkeypatch.setenv("TORCHSERVE_ENDPOINTS", "10.0.0.1:7070,10.0.0.2:7070")
    settings = load_settings(_env_file=None)
    assert settings.api_tokens == ["token-one-123", "token-two-456"]
    assert settings.gateway_port == 6001
    assert settings.use_chatgpt is False
    assert settings.torchserve_endpoints == ["10.0.0.1:7070", "10.0.0.2:7070"]


def test_settings_read_dotenv_file(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("USE_TRAINED_MODEL=false\nOPENAI_MODEL=gpt-4o\n")
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.use_trained_model is False
    assert settings.openai_model == "gpt-4o"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GATEWAY_PORT", "not-a-port"),
        ("GATEWAY_PORT", "70000"),
        ("USE_CHATGPT", "maybe"),
        ("DATABASE_URL", "mysql://nope"),
        ("OPENAI_TIMEOUT_S", "-1"),
        ("LOG_LEVEL", "LOUD"),
    ],
)
def test_bad_setting_stops_startup_naming_it(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as raised:
        load_settings(_env_file=None)
    assert variable in str(raised.value)


def test_gateway_requires_api_tokens():
    settings = load_settings(_env_file=None, api_tokens=[])
    with pytest.raises(SettingsError, match="API_TOKENS"):
        settings.require_api_tokens()
    with pytest.raises(SettingsError, match="API_TOKENS"):
        load_settings(_env_file=None, api_tokens=["short"]).require_api_tokens()


def test_internal_services_require_internal_token():
    with pytest.raises(SettingsError, match="INTERNAL_TOKEN"):
        load_settings(_env_file=None, internal_token="").require_internal_token()


def test_chatgpt_needs_both_flag_and_key():
    assert not load_settings(_env_file=None, use_chatgpt=True, openai_api_key="").chatgpt_enabled
    assert not load_settings(_env_file=None, use_chatgpt=False, openai_api_key="sk-x").chatgpt_enabled
    assert load_settings(_env_file=None, use_chatgpt=True, openai_api_key="sk-x").chatgpt_enabled


def test_empty_openai_base_url_means_openai(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "")
    assert load_settings(_env_file=None).openai_base_url is None
