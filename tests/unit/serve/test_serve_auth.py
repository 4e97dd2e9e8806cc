"""API keys: digests only, both header styles, constant-time comparison of every key."""

from __future__ import annotations

import hashlib

import pytest

from serve_apps.scoring import auth
from serve_apps.scoring.app import ApiKeysArgs, load_key_digests
from serve_apps.scoring.auth import KeyRing, hash_key, new_key, parse_key_file, presented_key
from sluice.errors import ConfigError

ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # sha256("abc")


def test_hash_key_is_sha256_hex():
    assert hash_key("abc") == ABC
    key = new_key()
    assert key.startswith("sk_") and len(key) > 40 and hash_key(key) != hash_key(new_key())


def test_keyring_accepts_only_the_stored_keys():
    ring = KeyRing.from_digests({"a": hash_key("alpha"), "b": f"sha256:{hash_key('beta')}"})
    assert ring.check("alpha") == "a" and ring.check("beta") == "b"
    for wrong in ("ALPHA", "alpha ", "", None, hash_key("alpha")):
        assert ring.check(wrong) is None


def test_every_digest_is_compared_in_constant_time(monkeypatch):
    calls = []

    def spy(a, b):
        calls.append((len(a), len(b)))
        return a == b

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    ring = KeyRing.from_digests([hash_key(f"k{i}") for i in range(4)])
    assert ring.check("k0") == "key0"  # matches the first, still compares all four
    assert calls == [(32, 32)] * 4


def test_plain_keys_and_empty_rings_are_refused():
    with pytest.raises(ConfigError, match="not a SHA-256 hex digest"):
        KeyRing.from_digests({"a": "my-secret-key"})
    with pytest.raises(ConfigError, match="no API keys configured"):
        KeyRing.from_digests({})


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ([(b"authorization", b"Bearer s3cret")], "s3cret"),
        ([(b"Authorization", b"bearer   s3cret ")], "s3cret"),
        ([(b"x-api-key", b"s3cret")], "s3cret"),
        ([(b"X-API-Key", b"s3cret")], "s3cret"),
        ([(b"authorization", b"Basic czNjcmV0")], None),
        ([(b"authorization", b"Bearer ")], None),
        ([], None),
    ],
)
def test_presented_key_from_either_header(headers, key):
    assert presented_key(headers) == key


def test_key_file_and_env_override(tmp_path):
    good = tmp_path / "keys"
    good.write_text(f"# comment\nops {hash_key('o')}  # trailing\n\napp {hash_key('p')}\n")
    assert parse_key_file(good) == {"ops": hash_key("o"), "app": hash_key("p")}
    other = tmp_path / "other"
    other.write_text(f"svc {hash_key('s')}\n")
    args = ApiKeysArgs(file=str(good), sha256={"inline": hash_key("i")})
    assert set(load_key_digests(args, "127.0.0.1", environ={})) == {"ops", "app", "inline"}
    env = {"SLUICE_API_KEYS_FILE": str(other)}
    assert set(load_key_digests(args, "127.0.0.1", environ=env)) == {"svc", "inline"}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("ops plain-text-key\n", "not a SHA-256 hex digest"),
        (f"ops {hash_key('a')} extra\n", "expected '<name> <sha256 hex>'"),
        (f"ops {hash_key('a')}\nops {hash_key('b')}\n", "appears twice"),
    ],
)
def test_bad_key_files_name_the_line(tmp_path, text, match):
    path = tmp_path / "keys"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        parse_key_file(path)
    assert str(path) in str(info.value)


def test_the_demo_key_file_holds_digests_only():
    from sluice.config import REPO_ROOT

    keys = parse_key_file(REPO_ROOT / "configs" / "api_keys")
    assert keys and all(len(d) == 64 for d in keys.values())
    assert keys["demo"] == hashlib.sha256(b"sluice-demo-key").hexdigest()


DEMO = hashlib.sha256(b"sluice-demo-key").hexdigest()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "scoring.example.com", "", None])
def test_the_published_demo_key_is_refused_beyond_loopback(host, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text(f"demo {DEMO}\nops {hash_key('o')}\n")
    for args in (ApiKeysArgs(file=str(keys)), ApiKeysArgs(sha256={"d": f"sha256:{DEMO.upper()}"})):
        with pytest.raises(ConfigError, match="sluice serve hash-key --new") as info:
            load_key_digests(args, host, environ={})
        assert "SLUICE_API_KEYS_FILE" in str(info.value) and repr(host) in str(info.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_the_demo_key_works_on_loopback(host):
    demo = ApiKeysArgs(file="configs/api_keys")
    assert load_key_digests(demo, host, environ={}) == {"demo": DEMO}


def test_a_key_of_ones_own_works_beyond_loopback(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text(f"svc {hash_key(new_key())}\n")
    env = {"SLUICE_API_KEYS_FILE": str(keys)}  # in place of configs/api_keys, as documented
    assert set(load_key_digests(ApiKeysArgs(file="configs/api_keys"), "0.0.0.0", env)) == {"svc"}


def test_serve_deploy_of_the_shipped_files_refuses_to_start(monkeypatch):
    """`serve deploy configs/serve.yaml` as shipped: Serve binds what the file says (or its
    default), and the builder, run by Serve, refuses the demo key there."""
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from serve_apps.scoring import app as scoring_app
    from sluice.config import REPO_ROOT

    raw = yaml.safe_load((REPO_ROOT / "configs" / "serve.yaml").read_text())
    bind = ServeDeploySchema.model_validate(raw).http_options.host
    monkeypatch.setattr(scoring_app, "serve_http_host", lambda: bind)
    monkeypatch.delenv("SLUICE_API_KEYS_FILE", raising=False)
    with pytest.raises(ConfigError, match="demo key published") as info:
        scoring_app.build_app(scoring_app.ScoringAppArgs.model_validate(raw["applications"][0]["args"]))
    assert "sluice serve hash-key --new" in str(info.value)
