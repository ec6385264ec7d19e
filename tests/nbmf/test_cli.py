"""`nbmf encode | decode | inspect`: in process for the cases, through real processes and pipes for the wiring."""
from __future__ import annotations

import importlib
import io
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import nbmf
from nbmf import cli
from nbmf import registry as registry_mod
from nbmf.registry import Registry

NBMF_EXE = Path(sys.executable).with_name("nbmf")
NBMF = [str(NBMF_EXE)] if NBMF_EXE.exists() else [sys.executable, "-m", "nbmf"]
TEXT = "Grüße 😀 — the user prefers metric units.\nSecond line.\n"


@pytest.fixture
def run(monkeypatch):
    """Run ``nbmf ARGV`` in process with a stub-only default registry: (exit code, stdout bytes, stderr text)."""
    monkeypatch.setattr(registry_mod, "_default", Registry(model_dir=None))

    def call(*argv, stdin: bytes = b""):
        out, err = io.BytesIO(), io.StringIO()
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(out, write_through=True))
        monkeypatch.setattr(sys, "stderr", err)
        try:
            rc = cli.main([str(a) for a in argv])
        except SystemExit as e:  # argparse: usage errors and --help
            rc = e.code
        sys.stdout.flush()
        return rc, out.getvalue(), err.getvalue()

    return call


@pytest.fixture
def text_file(tmp_path):
    p = tmp_path / "note.txt"
    p.write_bytes(TEXT.encode())
    return p


# -- round trips ---------------------------------------------------------------------------------
@pytest.mark.parametrize("data", [TEXT.encode(), b"", b"x", bytes(range(256)), os.urandom(3000), b"\xed\xa0\xbd",
                                  b"  {not json but text}\n"],
                         ids=["text", "empty", "one-byte", "all-bytes", "random", "surrogate-bytes", "brace-text"])
def test_encode_decode_gives_the_same_bytes_back(run, tmp_path, data):
    src = tmp_path / "in"
    src.write_bytes(data)
    rc, blob, err = run("encode", src)
    assert rc == 0 and err == ""
    rc, out, _ = run("decode", stdin=blob)
    assert rc == 0 and out == data


def test_auto_kind_is_text_for_utf8_and_bytes_otherwise(run):
    assert nbmf.inspect(run("encode", stdin=TEXT.encode())[1]).kind.name == "TEXT"
    assert nbmf.inspect(run("encode", stdin=b"\xff\x00")[1]).kind.name == "BYTES"


def test_json_kind_stores_the_value(run):
    rc, blob, _ = run("encode", "--kind", "json", stdin=b'{ "b": [1, 2],\n "a": "\xc3\xa9" }')
    assert rc == 0 and nbmf.decode(blob) == {"b": [1, 2], "a": "é"}
    assert run("decode", stdin=blob)[1] == '{"b": [1, 2], "a": "é"}'.encode()


def test_semantic_fidelity(run):
    blob = run("encode", "--fidelity", "semantic", stdin=b"  Cafe\xcc\x81   au\n lait ")[1]
    assert run("decode", stdin=blob)[1] == "Café au lait".encode()
    blob = run("encode", "--kind", "json", "--fidelity", "semantic", stdin=b'{"b": 1, "a": [1, 2]}')[1]
    assert run("decode", stdin=blob)[1] == b'{"a":[1,2],"b":1}'


def test_bytes_kind(run):
    blob = run("encode", "--kind", "bytes", stdin=b"plain ascii")[1]
    assert nbmf.inspect(blob).kind.name == "BYTES" and run("decode", stdin=blob)[1] == b"plain ascii"


def test_files_and_output_option(run, text_file, tmp_path):
    blob_path, back = tmp_path / "note.nbmf", tmp_path / "back.txt"
    assert run("encode", text_file, "-o", blob_path) == (0, b"", "")
    assert run("decode", blob_path, "--output", back) == (0, b"", "")
    assert back.read_bytes() == text_file.read_bytes()
    assert run("decode", "-", stdin=blob_path.read_bytes())[1] == text_file.read_bytes()


def test_envelope_round_trip(run, text_file):
    rc, env_bytes, _ = run("encode", "--envelope", text_file)
    env = json.loads(env_bytes)
    assert rc == 0 and env["encoder"] == "stub" and env["length"] == len(TEXT.encode())
    assert nbmf.from_envelope(env) == run("encode", text_file)[1]
    assert run("decode", stdin=env_bytes)[1] == TEXT.encode()
    assert run("decode", stdin=b"\n  " + env_bytes)[1] == TEXT.encode()  # leading whitespace is fine


def test_legacy_blobs_decode(run, make_legacy_blob):
    payload = {"role": "user", "content": "héllo 😀"}
    rc, out, err = run("decode", stdin=json.dumps(make_legacy_blob(payload)).encode())
    assert rc == 0 and json.loads(out) == payload and err == ""
    assert run("decode", stdin=json.dumps(make_legacy_blob("old  text")).encode())[1] == b"old  text"
    rc, out, err = run("decode", stdin=json.dumps(make_legacy_blob("word " * 600, "semantic")).encode())
    assert rc == 0 and out == ("word " * 600).strip()[:2048].encode() and "2048" in err


# -- inspect -------------------------------------------------------------------------------------
def test_inspect_text_and_json(run, text_file):
    blob = run("encode", "--fidelity", "semantic", text_file)[1]
    rc, out, _ = run("inspect", stdin=blob)
    lines = dict(line.split(None, 1) for line in out.decode().splitlines())
    assert rc == 0 and lines["encoder"] == "stub" and lines["fidelity"] == "semantic" and lines["checksum"] == "ok"
    rc, out, _ = run("inspect", "--json", stdin=blob)
    info = json.loads(out)
    h = nbmf.inspect(blob)
    assert info == {**h.to_dict(), "codec": "stub (zlib-9)", "blob_bytes": len(blob),
                    "body_bytes": len(blob) - h.header_size, "checksum": "ok"}


def test_inspect_legacy(run, make_legacy_blob):
    legacy = make_legacy_blob({"a": 1})
    rc, out, _ = run("inspect", "--json", stdin=json.dumps(legacy).encode())
    assert rc == 0 and json.loads(out)["format"] == "legacy" and json.loads(out)["meta"] == legacy["meta"]


def test_inspect_shows_a_damaged_header_and_fails(run, text_file):
    blob = bytearray(run("encode", text_file)[1])
    blob[-1] ^= 1
    rc, out, err = run("inspect", "--json", stdin=bytes(blob))
    assert rc == 1 and json.loads(out)["checksum"] == "FAILED" and "CorruptBlobError" in err


# -- errors: typed, on stderr, non-zero, no output -------------------------------------------------
def test_damaged_blob_is_exit_1_with_no_output(run, text_file):
    blob = run("encode", text_file)[1]
    for bad in (blob[:-1], blob + b"\x00", bytes([blob[0]]) + bytes([blob[1] ^ 4]) + blob[2:], b""):
        rc, out, err = run("decode", stdin=bad)
        assert rc == 1 and out == b"" and err.startswith("nbmf decode: CorruptBlobError")


@pytest.mark.parametrize("argv, stdin, error", [
    (["decode"], b"{not json", "FormatError"),
    (["decode"], b'{"meta": {}}', "FormatError"),
    (["decode"], b"\x00\x01", "FormatError"),
    (["encode", "--kind", "text"], b"\xff", "FormatError"),
    (["encode", "--kind", "json"], b"{", "FormatError"),
    (["encode", "--version", "v9"], b"x", "UnknownVersionError"),
])
def test_data_errors_are_exit_1(run, argv, stdin, error):
    rc, out, err = run(*argv, stdin=stdin)
    assert rc == 1 and out == b"" and error in err and err.startswith(f"nbmf {argv[0]}: ")


def test_max_output_size(run):
    blob = run("encode", stdin=b"a" * 1000)[1]
    rc, out, err = run("decode", "--max-output-size", "999", stdin=blob)
    assert rc == 1 and out == b"" and "OutputTooLargeError" in err
    assert run("decode", "--max-output-size", "1000", stdin=blob)[1] == b"a" * 1000


def test_unknown_version_in_a_blob(run):
    from nbmf.blob import pack

    blob = pack(encoder_id=9, fidelity=0, kind=0, original_length=1, body=b"x")
    rc, _, err = run("decode", stdin=blob)
    assert rc == 1 and "encoder v9; this registry holds stub" in err


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["encode", "--kind", "xml"], ["decode", "--max-output-size", "big"]])
def test_usage_errors_are_exit_2(run, argv):
    rc, out, err = run(*argv)
    assert rc == 2 and out == b"" and "usage:" in err


def test_missing_file_is_exit_2(run, tmp_path):
    rc, _, err = run("decode", tmp_path / "nope.nbmf")
    assert rc == 2 and "nope.nbmf" in err


def test_bad_version_name_is_exit_2(run):
    rc, _, err = run("encode", "--version", "latest", stdin=b"x")
    assert rc == 2 and "stub" in err


# -- help and subcommands ------------------------------------------------------------------------
def test_subcommand_modules_import_and_register():
    for name in cli.SUBCOMMAND_MODULES:
        assert callable(importlib.import_module(name).register), name
    choices = cli.build_parser()._subparsers._group_actions[0].choices
    assert {"encode", "decode", "inspect", "collect", "bench", "migrate"} <= set(choices)


@pytest.mark.parametrize("command", ["encode", "decode", "inspect"])
def test_help(run, command):
    rc, out, _ = run(command, "--help")
    assert rc == 0 and b"example" in out and b"usage: nbmf " + command.encode() in out


def test_top_level_help_lists_the_commands(run):
    rc, out, _ = run("--help")
    assert rc == 0 and all(c in out for c in (b"encode", b"decode", b"inspect", b"collect", b"bench", b"migrate"))


# -- real processes: the installed `nbmf` script, `python -m nbmf`, a shell pipe, the default registry ---
def _env():
    env = {k: v for k, v in os.environ.items() if k != "NBMF_MODEL_DIR"}  # the repository's released models
    return env


@pytest.mark.parametrize("content", [TEXT.encode(), bytes(range(256)) * 3], ids=["text", "binary"])
def test_shell_pipe_round_trip_with_the_default_registry(tmp_path, content):
    src, out = tmp_path / "f", tmp_path / "out"
    src.write_bytes(content)
    nb = " ".join(shlex.quote(a) for a in NBMF)
    r = subprocess.run(["bash", "-c", f"set -o pipefail; {nb} encode {shlex.quote(str(src))} | {nb} decode > "
                        f"{shlex.quote(str(out))}"], env=_env(), capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    assert out.read_bytes() == content


def test_python_m_nbmf(tmp_path):
    src = tmp_path / "f.txt"
    src.write_bytes(TEXT.encode())
    nb = [sys.executable, "-m", "nbmf"]
    enc = subprocess.run(nb + ["encode", "--version", "stub", str(src)], env=_env(), capture_output=True, timeout=300)
    assert enc.returncode == 0, enc.stderr.decode()
    info = subprocess.run(nb + ["inspect", "--json"], input=enc.stdout, env=_env(), capture_output=True, timeout=300)
    assert info.returncode == 0 and json.loads(info.stdout)["encoder"] == "stub"
    bad = subprocess.run(nb + ["decode"], input=enc.stdout[:-2], env=_env(), capture_output=True, timeout=300)
    assert bad.returncode == 1 and bad.stdout == b"" and b"CorruptBlobError" in bad.stderr
