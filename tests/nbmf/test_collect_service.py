"""`nbmf collect` over the memory service's warm tier: plain and AES-GCM files, tenants, classes, bad files."""

import base64
import hashlib
import json

import pytest

import nbmf
from helpers.service_store import write_blob, write_record
from nbmf.bench.anchors import legacy_blob
from nbmf.data.collect import CollectConfig, collect
from nbmf.data.dataset import read_records
from nbmf.data.sources import Source
from nbmf.payload import canonical, to_raw
from nbmf.registry import as_blob

SECRET = b"\xfb\xff\xfe" * 11  # 33 bytes: base64 spells it with '+' and '/', urlsafe with '-' and '_'
KEY = hashlib.sha256(SECRET).digest()  # what the service derives from any spelling of SECRET
ENV = "DAENA_MEMORY_AES_KEY"
LOSSLESS = ("legal", "finance", "pii")
SEMANTIC = ("chat", "ops_log", "research_note")

# (record id, tenant, class, payload, encrypted); ids with "/" become "_" in the file name
GOOD = [
    ("contract/1", "default", "legal", {"party": "Ünïcode GmbH", "amount": 1200.5, "ok": True}, False),
    ("inv-7", "acme", "finance", [1, 2.0, "3", None, {"b": 1, "a": 2}], True),
    ("person/9", "acme", "pii", "Name:  Jane   Doe\n  born 1990 ", True),
    ("c1", "globex", "chat", {"messages": [{"role": "user", "content": "Hi  there"}], "z": 1, "a": 2}, True),
    ("log 3", "default", "ops_log", "disk   full  on\tnode-3 ", False),
    ("r/5", "globex", "research_note", {"title": "ε-greedy", "tags": ["rl", "bandits"]}, False),
    ("m1", "initech", "misc", {"note": "a class the policy does not name"}, True),
]


def expected(payload, fidelity):
    raw, kind = to_raw(payload)
    return (canonical(raw, kind) if fidelity == "semantic" else raw), kind.label


@pytest.fixture
def store(tmp_path):
    root = tmp_path / "warm"
    paths = {}
    for rid, tenant, cls, payload, enc in GOOD:
        paths[rid] = write_record(root, rid, cls, payload, tenant=tenant, key=KEY if enc else None)
    # the tenant only in the key prefix (meta without tenant_id)
    paths["prefix-only"] = write_record(root, "prefix-only", "legal", {"x": 1}, tenant="umbrella", tenant_in_meta=False)
    corrupt = root / "records" / "broken__chat.json"
    corrupt.write_text('{"payload": {"a": ')
    wrong_key = write_record(root, "w1", "pii", {"secret": "s"}, key=hashlib.sha256(b"another key").digest())
    no_payload = root / "records" / "np__legal.json"
    no_payload.write_text(json.dumps({"meta": {"tenant_id": "acme"}, "cls": "legal"}))
    nan = write_record(root, "nan", "finance", {"hidden-field-name": float("nan")}, key=KEY)
    blob = legacy_blob({"role": "user", "content": "placeholder"})
    blob["meta"].update(encoder_version="production_placeholder", encoder_domain="legal")
    write_blob(root, "placeholder", blob)
    return {"root": root, "paths": paths, "corrupt": corrupt, "wrong_key": wrong_key, "no_payload": no_payload,
            "nan": nan}


def run(tmp_path, root, name="ds", **kw):
    kw.setdefault("progress", False)
    return collect(CollectConfig(sources=(str(root),), out=tmp_path / name, **kw))


def test_the_layout_is_recognized_without_a_flag(store, tmp_path):
    assert Source(str(store["root"])).is_service
    assert not Source(str(tmp_path / "warm" / "blobs")).is_service
    with pytest.raises(ValueError, match="records/"):
        Source(f"service://{tmp_path / 'warm' / 'blobs'}").check()


def test_collect_decrypts_and_maps_tenant_class_kind_fidelity(store, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, base64.urlsafe_b64encode(SECRET).decode())
    mf = run(tmp_path, store["root"])
    rows = {r["origin"]: r for r in read_records(tmp_path / "ds", include_semantic=True)}
    assert mf["records"] == len(rows) == len(GOOD) + 1
    for rid, tenant, cls, payload, _ in GOOD:
        row = rows[str(store["paths"][rid])]
        fidelity = "semantic" if cls in SEMANTIC else "lossless"  # misc: not in the policy, kept exact
        raw, kind = expected(payload, fidelity)
        key = rid.replace("/", "_")
        assert row["id"] == (key if tenant == "default" else f"{tenant}:{key}")
        assert (row["raw"], row["kind"], row["fidelity"]) == (raw, kind, fidelity), rid
        assert row["domain"] == ("general" if tenant == "default" else tenant)
        assert row["type"] == {"c1": "conversation", "person/9": "document", "log 3": "document"}.get(rid, "structured")
        assert row["source"] == "service:warm"
    assert rows[str(store["paths"]["prefix-only"])]["domain"] == "umbrella"

    reasons = {b["origin"]: b["reason"] for b in mf["bad_lines"]["examples"]}
    assert mf["bad_lines"]["count"] == len(reasons) == 4  # blobs/ is not read: the placeholder blob is no bad line
    assert "not valid JSON" in reasons[str(store["corrupt"])]
    assert "cannot decrypt" in reasons[str(store["wrong_key"])] and ENV in reasons[str(store["wrong_key"])]
    assert "'payload'" in reasons[str(store["no_payload"])]
    nan = reasons[str(store["nan"])]  # a refused payload of an encrypted file: no decrypted content in the report
    assert "withheld" in nan and "hidden-field-name" not in nan


def test_without_the_key_encrypted_files_are_bad_lines_that_say_so(store, tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    mf = run(tmp_path, store["root"])
    encrypted = [str(store["paths"][rid]) for rid, *_, enc in GOOD if enc] + [str(store["wrong_key"]),
                                                                              str(store["nan"])]
    reasons = {b["origin"]: b["reason"] for b in mf["bad_lines"]["examples"]}
    assert all(f"set {ENV}" in reasons[p] for p in encrypted)
    assert mf["records"] == sum(not enc for *_, enc in GOOD) + 1  # the plain ones, prefix-only included
    assert mf["bad_lines"]["count"] == len(encrypted) + 2  # + the corrupt and payload-less files


@pytest.mark.parametrize("spelling", ["urlsafe", "standard", "hex", "passphrase"])
def test_every_key_spelling_the_service_reads(tmp_path, monkeypatch, spelling):
    secret, value = {
        "urlsafe": (SECRET, base64.urlsafe_b64encode(SECRET).decode()),
        "standard": (SECRET, base64.b64encode(SECRET).decode()),
        "hex": (SECRET, SECRET.hex()),  # 66 hex digits: not base64 (length), so read as hex
        "passphrase": (b"correct horse battery staple!", "correct horse battery staple!"),
    }[spelling]
    # each spelling reaches its own branch: urlsafe-only and standard-only characters, a hex length that is no
    # base64 length, a passphrase that is neither base64 (25 base64 characters once spaces are dropped) nor hex
    assert {"urlsafe": set("-_") <= set(value), "standard": set("+/") <= set(value), "hex": len(value) % 4 == 2,
            "passphrase": len(value.replace(" ", "").rstrip("!")) % 4 == 1}[spelling]
    root = tmp_path / "warm"
    path = write_record(root, "doc/1", "legal", {"k": "v"}, tenant="acme", key=hashlib.sha256(secret).digest())
    monkeypatch.setenv(ENV, value)
    mf = run(tmp_path, root)
    assert mf["bad_lines"]["count"] == 0 and mf["records"] == 1
    (row,) = read_records(tmp_path / "ds")
    assert (row["id"], row["raw"], row["origin"]) == ("acme:doc_1", to_raw({"k": "v"})[0], str(path))


def test_class_fidelity_override_keeps_exact_bytes(store, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, SECRET.hex())
    mf = run(tmp_path, store["root"], class_fidelity=(("chat", "lossless"), ("legal", "semantic")))
    assert mf["options"]["class_fidelity"] == (("chat", "lossless"), ("legal", "semantic"))
    written = json.loads((tmp_path / "ds" / "manifest.json").read_text())["options"]["class_fidelity"]
    assert written == [["chat", "lossless"], ["legal", "semantic"]]
    rows = {r["origin"]: r for r in read_records(tmp_path / "ds", include_semantic=True)}
    chat = rows[str(store["paths"]["c1"])]
    assert (chat["fidelity"], chat["raw"]) == ("lossless", to_raw(GOOD[3][3])[0])
    legal = rows[str(store["paths"]["contract/1"])]
    assert (legal["fidelity"], legal["raw"]) == ("semantic", expected(GOOD[0][3], "semantic")[0])
    with pytest.raises(ValueError, match="fidelity is one of"):
        CollectConfig(sources=("x",), out=tmp_path / "y", class_fidelity=(("chat", "lossy"),))


def test_cli_collects_a_service_store(store, tmp_path, monkeypatch, capsys):
    from nbmf.cli import main

    monkeypatch.setenv(ENV, "correct horse battery staple!")  # not the store's key: every encrypted file is bad
    rc = main(["collect", "--service", str(store["root"]), "-o", str(tmp_path / "c"), "--no-progress",
               "--class-fidelity", "chat=lossless"])
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    n_encrypted = sum(enc for *_, enc in GOOD) + 2
    assert rc == 0 and out["records"] == sum(not enc for *_, enc in GOOD) + 1
    assert out["bad_lines"] == n_encrypted + 2 and captured.err.count("cannot decrypt") == n_encrypted
    assert main(["collect", str(store["root"]), "-o", str(tmp_path / "d"), "--class-fidelity", "chat"]) == 2
    assert "CLS=FIDELITY" in capsys.readouterr().err


@pytest.mark.parametrize("version", ["stub", "production_placeholder"])
@pytest.mark.parametrize("fidelity", ["lossless", "semantic"])
def test_placeholder_blobs_decode_as_legacy(tmp_path, version, fidelity):
    """blobs/ documents the production placeholder wrote: old stub blobs with encoder_version/encoder_domain."""
    payload = {"role": "assistant", "content": "Booked  for two at 7pm.", "n": [1, 2]}
    blob = legacy_blob(payload, fidelity)
    blob["meta"].update(encoder_version=version, encoder_domain="finance")
    path = write_blob(tmp_path, "b", blob)
    assert as_blob(path.read_bytes()) == blob
    res = nbmf.decode_result(path.read_bytes())
    assert res.legacy and res.fidelity.label == fidelity and not res.truncated
    if fidelity == "lossless":
        assert res.payload == payload
    else:  # the old stub's preview: its canonical JSON text (sorted keys, json.dumps spacing)
        assert res.payload == json.dumps(payload, ensure_ascii=False, sort_keys=True)
