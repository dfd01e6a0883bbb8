from pathlib import Path

import pytest

from voxline.config import ConfigError, ServiceConfig, load_config


def test_defaults_are_the_embedded_service_on_loopback() -> None:
    cfg = load_config(env={})
    assert cfg == ServiceConfig()
    assert (cfg.host, cfg.http_port, cfg.agent) == ("127.0.0.1", 8080, "assistant")
    assert cfg.providers.llm.engine == "llama" and not cfg.auth_enabled


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    f = tmp_path / "voxline.toml"
    f.write_text(
        'http_port = 9000\nmax_sessions = 5\napi_tokens = ["a", "b"]\n'
        '[providers.llm]\nengine = "openai"\nbase_url = "http://127.0.0.1:1234/v1"\n'
    )
    env = {"VOXLINE_MAX_SESSIONS": "7", "VOXLINE_PROVIDERS__LLM__MODEL": "gpt-x",
           "VOXLINE_ICE_HOSTS": "127.0.0.1, ::1", "PATH": "/bin"}
    cfg = load_config(f, env=env, overrides={"http_port": 9100, "agent": None})
    assert cfg.http_port == 9100  # flag beats file
    assert cfg.max_sessions == 7  # env beats file
    assert cfg.api_tokens == ("a", "b") and cfg.auth_enabled
    assert cfg.ice_hosts == ("127.0.0.1", "::1")
    assert cfg.providers.llm == cfg.providers.llm.__class__(
        engine="openai", model="gpt-x", base_url="http://127.0.0.1:1234/v1")


@pytest.mark.parametrize(
    "env,message",
    [
        ({"VOXLINE_HTTP_PORT": "eighty"}, "http_port must be int"),
        ({"VOXLINE_NO_SUCH_THING": "1"}, "unknown configuration key no_such_thing"),
        ({"VOXLINE_PROVIDERS__LLM__NOPE": "1"}, "unknown configuration key providers.llm.nope"),
    ],
)
def test_bad_values_name_the_key(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(env=env)


def test_bad_file_is_a_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("http_port = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(f, env={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml", env={})


@pytest.mark.parametrize(
    "env,message",
    [
        ({"VOXLINE_SIP_TRUNK_PASSWORD": "pw"}, "sip_trunk_password is set but sip_trunk_user is not"),
        ({"VOXLINE_SIP_REGISTER": "sip:10.0.0.5"}, "sip_register needs sip_trunk_user"),
        ({"VOXLINE_SIP_REGISTER": "tel:+1555", "VOXLINE_SIP_TRUNK_USER": "u"}, "sip_register must be a sip:"),
        ({"VOXLINE_SIP_OUTBOUND_PROXY": "a b"}, "sip_outbound_proxy"),
        ({"VOXLINE_SIP_TRUNK_DOMAIN": "u@trunk"}, "sip_trunk_domain must be a sip: host"),
        ({"VOXLINE_SIP_REGISTER_EXPIRES": "30"}, "sip_register_expires must be 60-86400"),
        ({"VOXLINE_SIP_RING_TIMEOUT": "0"}, "sip_ring_timeout must be more than 0"),
        ({"VOXLINE_SIP_DIAL_ALLOW": "10.0.0.0/8, nonsense"}, "sip_dial_allow"),
        ({"VOXLINE_SIP_TRUNK_USER": 'a"b'}, "sip_trunk_user must be at most 256 characters"),
    ],
)
def test_sip_trunk_settings_are_checked(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(env=env)


def test_sip_trunk_settings() -> None:
    cfg = load_config(env={"VOXLINE_SIP_TRUNK_USER": "alice", "VOXLINE_SIP_TRUNK_PASSWORD": "pw",
                           "VOXLINE_SIP_OUTBOUND_PROXY": "127.0.0.1:5090", "VOXLINE_SIP_REGISTER": "sip:127.0.0.1:5090"})
    assert (cfg.sip_trunk_user, cfg.sip_outbound_proxy, cfg.sip_register) == ("alice", "127.0.0.1:5090",
                                                                             "sip:127.0.0.1:5090")
    assert ServiceConfig().sip_register == "" and ServiceConfig().sip_ring_timeout == 60.0


def test_the_paced_resampler_is_hq_unless_fast_is_asked_for() -> None:
    assert ServiceConfig().resample == "hq"
    assert ServiceConfig(resample="fast").resample == "fast"
    with pytest.raises(ConfigError, match="resample must be hq or fast"):
        ServiceConfig(resample="best")
