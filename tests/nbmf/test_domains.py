"""Per-domain encoder versions: DOMAINS.json beside CURRENT, encode routing by domain (library and CLI), decode by
the blob's header, and the registration commands."""
from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys

import pytest

import nbmf
import nbmf.registry
from helpers.model_dirs import RELEASED, two_versions
from nbmf import modeldir
from nbmf.blob import blob_version
from nbmf.cli import main
from nbmf.errors import UnknownVersionError
from nbmf.modeldir import ModelDirError
from nbmf.registry import Registry

TEXT = ("Meeting notes: the user asked to move the quarterly review to Thursday afternoon and wants the "
        "summary sent to the finance team before the call.")
RECORD = {"role": "user", "content": "Please remember that my preferred airline is the one with the blue logo."}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return two_versions(tmp_path_factory.mktemp("domains") / "models", {"legal": "v2"})


@pytest.fixture
def default_models(models, monkeypatch):
    """``models`` as the default model directory of the library and of `nbmf` run in this process."""
    monkeypatch.setenv(modeldir.ENV, str(models))
    monkeypatch.setattr(nbmf.registry, "_default", None)
    return models


def test_a_directory_without_domains_reads_as_before(tmp_path):
    d = two_versions(tmp_path / "m")
    assert not (d / modeldir.DOMAINS).exists()
    assert modeldir.domain_versions(d) == {} and modeldir.current(d, "legal") == modeldir.current(d) == "v1"
    reg = Registry(d)
    assert reg.domains == {} and reg.version_for("legal") == reg.version_for(None) == "v1"


def test_set_and_unset_a_domain(tmp_path):
    d = two_versions(tmp_path / "m")
    modeldir.set_current(d, "v2", domain="legal")
    modeldir.set_current(d, "stub", domain="acme:eu")
    assert json.loads((d / modeldir.DOMAINS).read_text()) == {"acme:eu": "stub", "legal": "v2"}
    assert (d / modeldir.CURRENT).read_text() == "v1\n"  # the default is untouched
    assert modeldir.current(d, "legal") == "v2" and modeldir.current(d, "finance") == "v1"
    modeldir.set_current(d, None, domain="legal")
    assert modeldir.domain_versions(d) == {"acme:eu": "stub"} and modeldir.current(d, "legal") == "v1"
    with pytest.raises(UnknownVersionError, match="does not hold"):
        modeldir.set_current(d, "v9", domain="legal")
    with pytest.raises(ValueError, match="domain"):
        modeldir.set_current(d, "v2", domain="")
    with pytest.raises(ValueError, match="unsets a domain"):
        modeldir.set_current(d, None)
    assert not list(d.glob(".*.tmp"))  # every write was renamed into place


@pytest.mark.parametrize("text, error, match", [
    ("{not json", ModelDirError, "not JSON"),
    ('["legal", "v2"]', ModelDirError, "not an object"),
    ('{"legal": "v7"}', UnknownVersionError, "does not hold"),
    ('{"legal": "V2"}', UnknownVersionError, "not a version name"),
    ('{"": "v2"}', ModelDirError, "domain"),
])
def test_a_broken_domains_file_is_an_error_never_a_guess(tmp_path, text, error, match):
    d = two_versions(tmp_path / "m")
    (d / modeldir.DOMAINS).write_text(text)
    with pytest.raises(error, match=match):
        Registry(d)
    with pytest.raises(error, match=match):
        modeldir.current(d, "legal")


def _set_domain(args):
    d, i = args
    modeldir.set_current(d, "v2" if i % 2 else "v1", domain=f"tenant-{i}")


def test_concurrent_domain_writes_lose_no_entry(tmp_path):
    """Eight processes set eight domains at once: each rewrite reads the file under the lock, so all eight stay."""
    d = two_versions(tmp_path / "m")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(_set_domain, [(d, i) for i in range(8)])
    assert modeldir.domain_versions(d) == {f"tenant-{i}": "v2" if i % 2 else "v1" for i in range(8)}


def test_set_current_nests_inside_the_lock(tmp_path):
    d = two_versions(tmp_path / "m")
    with modeldir.locked(d):  # what a registration does: allocate, register, point a domain at it
        modeldir.set_current(d, "v2", domain="legal")
    assert modeldir.current(d, "legal") == "v2"


def test_encode_routes_by_domain_and_decode_by_the_blob(models):
    reg = Registry(models)
    assert reg.domains == {"legal": "v2"} and reg.current == "v1"
    for payload in (TEXT, RECORD):
        legal, other, plain = (reg.encode(payload, domain=d) for d in ("legal", "acme", None))
        assert (blob_version(legal), blob_version(other), blob_version(plain)) == ("v2", "v1", "v1")
        assert blob_version(reg.encode(payload, domain="legal", version="v1")) == "v1"  # a named version wins
        fresh = Registry(models, domains={})  # decode needs no domain: the header names the version
        assert fresh.decode(legal) == fresh.decode(other) == payload
    blobs = reg.encode_many([TEXT, RECORD], fidelity="semantic", domain="legal")
    assert [blob_version(b) for b in blobs] == ["v2", "v2"]
    assert reg.stats.encodes["v2"] >= 4
    with pytest.raises(ValueError, match="domain"):
        reg.encode(TEXT, domain="")


def test_registry_domains_given_explicitly(models):
    reg = Registry(models, current="v2", domains={"ops": "v1"})
    assert blob_version(reg.encode(TEXT)) == "v2" and blob_version(reg.encode(TEXT, domain="ops")) == "v1"
    with pytest.raises(UnknownVersionError, match="domain 'ops'"):
        Registry(models, domains={"ops": "v5"})


def test_library_encode_with_a_domain(default_models):
    assert blob_version(nbmf.encode(TEXT, domain="legal")) == "v2"
    assert blob_version(nbmf.encode(TEXT, domain="globex")) == blob_version(nbmf.encode(TEXT)) == "v1"
    assert nbmf.decode(nbmf.encode(RECORD, domain="legal")) == RECORD


def test_cli_encode_with_a_domain(default_models, tmp_path):
    src = tmp_path / "note.txt"
    src.write_text(TEXT)
    for domain, version in (("legal", "v2"), ("acme", "v1")):
        assert main(["encode", str(src), "--domain", domain, "-o", str(tmp_path / f"{domain}.nbmf")]) == 0
        blob = (tmp_path / f"{domain}.nbmf").read_bytes()
        assert blob_version(blob) == version and nbmf.decode(blob) == TEXT
    assert main(["encode", str(src), "--domain", "", "-o", str(tmp_path / "x.nbmf")]) == 2


def test_cli_current_and_register(tmp_path, capsys):
    d = two_versions(tmp_path / "m")
    assert main(["current", "--model-dir", str(d), "--domain", "legal"]) == 0
    assert capsys.readouterr().out == "v1\n"  # no own version: the default
    assert main(["current", "v2", "--model-dir", str(d), "--domain", "legal"]) == 0
    assert capsys.readouterr().out == "v2\n" and modeldir.current(d, "legal") == "v2"
    assert main(["current", "v9", "--model-dir", str(d), "--domain", "legal"]) == 1  # not held: refused
    assert main(["current", "V2", "--model-dir", str(d)]) == 2
    assert main(["current", "v2", "--unset", "--model-dir", str(d), "--domain", "legal"]) == 2
    capsys.readouterr()

    # an artifact exported under another name becomes the next version, for one domain only
    assert main(["register", str(RELEASED), "--domain", "finance", "--model-dir", str(d)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["version"], out["current"], out["domains"]) == ("v3", "v1", {"finance": "v3", "legal": "v2"})
    assert json.loads((d / "v3" / "manifest.json").read_text())["version"] == "v3"
    assert not list(d.glob(".register-*")) and not list(d.glob(".v*.tmp"))
    assert main(["register", str(RELEASED), "--default", "--model-dir", str(d)]) == 0
    assert json.loads(capsys.readouterr().out)["current"] == "v4"
    assert main(["current", "--unset", "--domain", "legal", "--model-dir", str(d)]) == 0
    assert capsys.readouterr().out == "v4\n"
    assert main(["versions", "--json", "--model-dir", str(d)]) == 0
    assert json.loads(capsys.readouterr().out)["domains"] == {"finance": "v3"}
    reg = Registry(d)
    assert [blob_version(reg.encode(TEXT, domain=x)) for x in ("finance", "legal")] == ["v3", "v4"]


def test_nbmf_encode_domain_in_a_fresh_process(models, tmp_path):
    """The installed command, as a user runs it: NBMF_MODEL_DIR names the directory, --domain picks the version."""
    p = subprocess.run([sys.executable, "-m", "nbmf", "encode", "--domain", "legal", "--kind", "json"],
                       input=json.dumps(RECORD).encode(), capture_output=True, timeout=300,
                       env={**os.environ, modeldir.ENV: str(models)})
    assert p.returncode == 0, p.stderr.decode()
    assert blob_version(p.stdout) == "v2" and Registry(models).decode(p.stdout) == RECORD


def test_the_services_encoder_interface_honors_domains(models):
    from nbmf import compat

    legal = compat.ProductionNBMFEncoder("legal", model_path=str(models))
    other = compat.ProductionNBMFEncoder("acme", model_path=str(models))
    assert (legal.version, other.version) == ("v2", "v1") and legal.model_loaded
    blob = legal.encode(TEXT, "lossless")
    assert blob["encoder"] == "v2" and other.encode(TEXT, "lossless")["encoder"] == "v1"
    assert other.decode(blob) == TEXT
    with pytest.raises(ValueError, match="domain"):
        compat.ProductionNBMFEncoder("bad\ndomain", model_path=str(models))
