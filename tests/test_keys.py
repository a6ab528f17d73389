"""API keys: korag.services.keys.KeyRing and `korag keys add/list/revoke`, on real files."""

from __future__ import annotations

import json
import os
import stat
import threading

import pytest

from korag.cli.main import main
from korag.services.keys import ADMIN_TENANT, KeyRing, KeyRingError, check_named_tenant
from korag.settings import Settings


def test_an_added_key_maps_to_its_tenant_and_only_its_hash_is_stored(tmp_path):
    ring = KeyRing(tmp_path / "keys.json")
    assert not ring.configured
    key_id, key = ring.add("acme")
    assert key.startswith("korag_") and len(key) >= 40
    assert ring.configured
    assert ring.tenant_for(key) == "acme"
    assert ring.tenant_for(key + "x") is None
    assert ring.tenant_for("") is None
    text = (tmp_path / "keys.json").read_text()
    assert key not in text and key[len("korag_"):] not in text
    assert key_id in text
    assert stat.S_IMODE(os.stat(tmp_path / "keys.json").st_mode) == 0o600


def test_two_keys_are_different_and_list_never_shows_a_key(tmp_path):
    ring = KeyRing(tmp_path / "keys.json")
    id1, key1 = ring.add("acme")
    id2, key2 = ring.add(ADMIN_TENANT)
    assert key1 != key2 and id1 != id2
    infos = ring.list()
    assert [(i.id, i.tenant) for i in infos] == [(id1, "acme"), (id2, "*")]
    assert infos[1].admin and not infos[0].admin
    assert all(i.created_at and i.created_at.endswith("Z") for i in infos)
    dumped = json.dumps([i.to_json() for i in infos])
    assert key1 not in dumped and key2 not in dumped


def test_revoked_key_is_refused_and_unknown_id_says_so(tmp_path):
    ring = KeyRing(tmp_path / "keys.json")
    key_id, key = ring.add("acme")
    _, other = ring.add("beta")
    assert ring.revoke(key_id) is True
    assert ring.tenant_for(key) is None
    assert ring.tenant_for(other) == "beta"
    assert ring.revoke(key_id) is False
    assert ring.revoke("key_nonexistent") is False


def test_a_running_service_sees_keys_added_and_revoked_by_another_process(tmp_path):
    service = KeyRing(tmp_path / "keys.json")
    assert service.tenant_for("korag_whatever") is None
    cli = KeyRing(tmp_path / "keys.json")
    key_id, key = cli.add("acme")
    assert service.tenant_for(key) == "acme"
    cli.revoke(key_id)
    assert service.tenant_for(key) is None
    assert service.configured  # issue 18: a ring that had keys never turns back to "no keys" (open)
    assert service.list() == []


def test_the_last_key_going_keeps_the_ring_configured_and_logs_a_warning(tmp_path, caplog):
    """Revoking the last key, or removing keys.json, must not make a keyed service open."""
    path = tmp_path / "keys.json"
    service = KeyRing(path)
    assert not service.configured  # never had a key: open mode is possible
    key_id, _ = KeyRing(path).add("acme")
    assert service.configured
    with caplog.at_level("WARNING", logger="korag.keys"):
        KeyRing(path).revoke(key_id)
        assert service.configured and service.list() == []
        assert service.configured  # said once, at the drop to zero
    warnings = [r for r in caplog.records if r.name == "korag.keys" and r.levelname == "WARNING"]
    assert len(warnings) == 1 and "last API key is gone" in warnings[0].getMessage()

    KeyRing(path).add("beta")
    assert service.list()
    path.unlink()  # keys.json removed while running
    assert service.configured and service.list() == []


def test_an_unreadable_key_file_fails_closed(tmp_path):
    path = tmp_path / "keys.json"
    service = KeyRing(path)
    assert not service.configured
    path.write_text("{damaged")
    with pytest.raises(KeyRingError, match="damaged"):
        service.configured  # noqa: B018
    path.unlink()
    assert service.configured  # it may have held keys: never open after that


def test_an_admin_naming_tenant_star_is_refused():
    assert check_named_tenant("acme") == "acme"
    with pytest.raises(KeyRingError, match="admin role, not a tenant"):
        check_named_tenant("*")
    with pytest.raises(KeyRingError, match="empty"):
        check_named_tenant(" ")


def test_env_keys_are_accepted_with_their_tenants(tmp_path):
    ring = KeyRing(tmp_path / "keys.json", "secret-key-number-one=acme, admin-key-0123456789==*")
    assert ring.configured
    assert ring.tenant_for("secret-key-number-one") == "acme"
    assert ring.tenant_for("admin-key-0123456789=") == "*"  # the last '=' separates the tenant
    assert ring.tenant_for("secret-key-number-two") is None
    assert {(i.tenant, i.source, i.created_at) for i in ring.list()} == {("acme", "env", None), ("*", "env", None)}
    env_id = ring.list()[0].id
    with pytest.raises(KeyRingError, match="KORAG_API_KEYS"):
        ring.revoke(env_id)


@pytest.mark.parametrize("value, reason", [
    ("secret-key-number-one", "item 1 is not KEY=TENANT"),
    ("secret-key-number-one=acme,=beta", "item 2 is not KEY=TENANT"),
    ("short=acme", "at least 16"),
])
def test_bad_env_keys_are_refused_naming_the_item(tmp_path, value, reason):
    with pytest.raises(KeyRingError, match=reason):
        KeyRing(tmp_path / "keys.json", value)


def test_from_settings_reads_data_dir_and_env(tmp_path):
    settings = Settings(data_dir=tmp_path / "d", api_keys="0123456789abcdef=acme")
    ring = KeyRing.from_settings(settings)
    assert ring.path == tmp_path / "d" / "keys.json"
    assert ring.tenant_for("0123456789abcdef") == "acme"
    assert not KeyRing.from_settings(Settings(data_dir=tmp_path / "e", api_keys="")).configured


def test_a_damaged_key_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "keys.json"
    path.write_text("{not json")
    with pytest.raises(KeyRingError, match="keys.json: the key file is damaged"):
        KeyRing(path).tenant_for("korag_x")


def test_empty_tenant_is_refused(tmp_path):
    with pytest.raises(KeyRingError, match="empty"):
        KeyRing(tmp_path / "keys.json").add("  ")
    assert not (tmp_path / "keys.json").exists()


def test_concurrent_writers_lose_no_key(tmp_path):
    keys: list[str] = []

    def writer():
        ring = KeyRing(tmp_path / "keys.json")
        for _ in range(5):
            keys.append(ring.add("t")[1])

    threads = [threading.Thread(target=writer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ring = KeyRing(tmp_path / "keys.json")
    assert len(ring.list()) == 30
    assert all(ring.tenant_for(k) == "t" for k in keys)


def test_cli_add_list_revoke(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KORAG_DATA_DIR", str(tmp_path / "data"))
    assert main(["keys", "add", "--tenant", "acme"]) == 0
    out, err = capsys.readouterr()
    key = out.strip()
    assert key.startswith("korag_") and "not shown again" in err
    assert KeyRing(tmp_path / "data" / "keys.json").tenant_for(key) == "acme"

    assert main(["keys", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["keys"]
    assert [k["tenant"] for k in listed] == ["acme"]
    assert key not in json.dumps(listed)

    assert main(["keys", "revoke", listed[0]["id"]]) == 0
    out, err = capsys.readouterr()
    assert "revoked" in out and "that was the last key" in err and "korag keys add" in err
    assert KeyRing(tmp_path / "data" / "keys.json").tenant_for(key) is None
    assert main(["keys", "revoke", listed[0]["id"]]) == 2
    assert "no key" in capsys.readouterr().err

    assert main(["keys", "add", "--tenant", "*", "--json"]) == 0
    added = json.loads(capsys.readouterr().out)
    assert added["tenant"] == "*" and added["key"].startswith("korag_")
    assert main(["keys", "list"]) == 0
    assert added["id"] in capsys.readouterr().out
