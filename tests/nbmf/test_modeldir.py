"""nbmf.modeldir: one rule for version names, listing, CURRENT and registration, used by every caller."""
from __future__ import annotations

import hashlib
import json
import threading

import pytest

from nbmf import artifact, modeldir
from nbmf.blob import LEGACY, blob_version, is_legacy
from nbmf.errors import ArtifactError, NBMFError, UnknownVersionError
from nbmf.registry import Registry


def fake_artifact(path, version: str):
    """A directory that passes ``read_manifest`` (format, hashes) without being a loadable model."""
    path.mkdir(parents=True)
    files = {}
    for name in (artifact.WEIGHTS, artifact.TOKENIZER):
        data = f"{version}:{name}".encode()
        (path / name).write_bytes(data)
        files[name] = "sha256:" + hashlib.sha256(data).hexdigest()
    manifest = {"format": artifact.FORMAT, "version": version, "files": files}
    (path / modeldir.MANIFEST).write_text(json.dumps(manifest))
    return path


@pytest.mark.parametrize("name, eid", [("stub", 0), ("v1", 1), ("v7", 7), ("v10", 10), ("v300", 300)])
def test_names_round_trip(name, eid):
    assert modeldir.version_id(name) == eid and modeldir.version_name(eid) == name


@pytest.mark.parametrize("name", ["v01", "v007", "v0", "V1", "1", "v", "v-1", "v1.0", " v1", "v1\n", "v\uff11",
                                  "v\u0661", "stubby", "", None])
def test_one_spelling_per_version(name):
    """Leading zeros, other digits and other cases are refused: each version has exactly one name."""
    with pytest.raises(ValueError, match="no leading zeros"):
        modeldir.version_id(name)
    assert not modeldir.is_version_name(name)


def test_neural_id_refuses_the_stub():
    assert modeldir.neural_id("v3") == 3 == artifact.encoder_id_of("v3")
    with pytest.raises(ValueError, match="v1, v2"):
        modeldir.neural_id("stub")


@pytest.fixture
def odd_dir(tmp_path):
    """v2 and v10 are versions; v01 (leading zero), V3 (case), v4 (no manifest) and a file are not."""
    for name in ("v2", "v10", "v01", "V3"):
        fake_artifact(tmp_path / name, name)
    (tmp_path / "v4").mkdir()
    (tmp_path / "v5").write_text("not a directory")
    (tmp_path / ".v6.tmp").mkdir()  # a registration that died half way
    return tmp_path


def test_listing_follows_the_name_rule_and_numeric_order(odd_dir):
    assert modeldir.versions(odd_dir) == ["v2", "v10"]
    assert list(modeldir.version_dirs(odd_dir)) == [2, 10]
    assert Registry(odd_dir).versions() == ["stub", "v2", "v10"]  # the library sees exactly the same
    assert modeldir.next_version(odd_dir) == "v11"
    assert modeldir.versions(odd_dir / "missing") == [] and modeldir.next_version(odd_dir / "missing") == "v1"


def test_next_version_never_reuses_a_half_written_one(tmp_path):
    fake_artifact(tmp_path / "v1", "v1")
    (tmp_path / ".v2.tmp").mkdir()
    assert modeldir.next_version(tmp_path) == "v3"


def test_current_has_one_meaning(odd_dir):
    assert modeldir.current(odd_dir) is None and modeldir.current(None) is None  # no CURRENT: the stub encodes
    for text, want in [("", None), ("  \n", None), ("stub\n", "stub"), ("v10\n", "v10")]:
        (odd_dir / "CURRENT").write_text(text)
        assert modeldir.current(odd_dir) == want
        assert Registry(odd_dir).current == (want or "stub")


@pytest.mark.parametrize("text, match", [("v3", "does not hold"), ("v01", "not a version name"),
                                         ("latest", "not a version name"), ("v4", "does not hold")])
def test_a_current_naming_no_held_version_raises_everywhere(odd_dir, text, match):
    (odd_dir / "CURRENT").write_text(text + "\n")
    with pytest.raises(UnknownVersionError, match=match):
        modeldir.current(odd_dir)
    with pytest.raises(UnknownVersionError):
        Registry(odd_dir)


def test_register_copies_renames_and_points_current(tmp_path):
    src = fake_artifact(tmp_path / "staged", "v1")
    reg = tmp_path / "models"
    with modeldir.locked(reg):
        dest = modeldir.register(src, reg, "v1")
    assert dest == reg / "v1" and modeldir.versions(reg) == ["v1"] and modeldir.current(reg) == "v1"
    assert sorted(p.name for p in reg.iterdir()) == [".lock", "CURRENT", "v1"]  # no temporary left behind
    with modeldir.locked(reg):
        modeldir.register(fake_artifact(tmp_path / "s2", "v2"), reg, "v2", make_current=False)
    assert modeldir.versions(reg) == ["v1", "v2"] and modeldir.current(reg) == "v1"


def test_register_never_replaces_and_checks_the_artifact(tmp_path):
    reg = tmp_path / "models"
    modeldir.register(fake_artifact(tmp_path / "a", "v1"), reg, "v1")
    before = (reg / "v1" / artifact.WEIGHTS).read_bytes()
    with pytest.raises(modeldir.ModelDirError, match="never replaced"):
        modeldir.register(fake_artifact(tmp_path / "b", "v1"), reg, "v1")
    assert (reg / "v1" / artifact.WEIGHTS).read_bytes() == before
    with pytest.raises(modeldir.ModelDirError, match="exported as 'v1'"):
        modeldir.register(tmp_path / "a", reg, "v2")
    with pytest.raises(ValueError, match="leading zeros"):
        modeldir.register(tmp_path / "a", reg, "v01")
    bad = fake_artifact(tmp_path / "c", "v2")
    (bad / artifact.TOKENIZER).write_text("edited")
    with pytest.raises(ArtifactError):
        modeldir.register(bad, reg, "v2")
    assert modeldir.versions(reg) == ["v1"] and not (reg / ".v2.tmp").exists()
    assert issubclass(modeldir.ModelDirError, NBMFError)


def test_set_current_refuses_a_version_not_held(tmp_path):
    fake_artifact(tmp_path / "v1", "v1")
    modeldir.set_current(tmp_path, "v1")
    assert (tmp_path / "CURRENT").read_text() == "v1\n"
    with pytest.raises(UnknownVersionError):
        modeldir.set_current(tmp_path, "v2")
    modeldir.set_current(tmp_path, "stub")
    assert modeldir.current(tmp_path) == "stub"


def test_locked_registrations_get_distinct_versions(tmp_path):
    """Eight concurrent allocate-and-register steps under the lock: eight versions, none lost or shared."""
    reg = tmp_path / "models"
    errors = []

    def one(i):
        try:
            with modeldir.locked(reg):
                version = modeldir.next_version(reg)
                modeldir.register(fake_artifact(tmp_path / f"staged{i}", version), reg, version)
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert modeldir.versions(reg) == [f"v{i}" for i in range(1, 9)]


def test_default_model_dir_is_the_env_var_first(tmp_path, monkeypatch):
    monkeypatch.setenv(modeldir.ENV, str(tmp_path))
    assert modeldir.default_model_dir() == tmp_path


@pytest.mark.parametrize("blob, legacy", [
    ({"meta": {}}, True), (b'{"meta": {}}', True), ('{"meta": {}}', True), (bytearray(b"{"), True),
    (memoryview(b"{x"), True), (b"@\x00", False), (b"", False), ("", False), (b" {", False), (7, False),
])
def test_one_legacy_sniff(blob, legacy):
    assert is_legacy(blob) is legacy


def test_blob_version_names_legacy_stub_and_neural():
    from nbmf.blob import Fidelity, Kind, pack

    assert blob_version(b'{"meta": {}, "code": "", "sig": ""}') == LEGACY == "legacy"
    for eid, name in [(0, "stub"), (1, "v1"), (300, "v300")]:
        blob = pack(encoder_id=eid, fidelity=Fidelity.LOSSLESS, kind=Kind.TEXT, original_length=0, body=b"")
        assert blob_version(blob) == name
