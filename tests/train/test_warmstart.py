"""init_from's inversion (train/warmstart.py): a released artifact's integer weights back to a float model that
re-exports to the same artifact, for every model family and for the released v1 itself. No Ray."""
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def _reexported(artifact: Path) -> tuple[dict, dict]:
    """(the artifact's integer params, those of its dequantized float model exported again)."""
    from nbmf.artifact import load_artifact
    from nbmf.export import integer_params
    from nbmf.models import build_model
    from train.warmstart import load_into, load_warm_start

    warm = load_warm_start(artifact)
    model = build_model(warm.cfg)
    load_into(model, warm.state)
    _, _, int_model, _ = load_artifact(artifact)
    return int_model.params, integer_params(model.set_qat(True).eval())


def _assert_same_model(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for name, want in a.items():
        want, got = np.asarray(want).astype(np.int64), np.asarray(b[name]).astype(np.int64)
        assert want.shape == got.shape, name
        if name.endswith("_m"):  # fixed-point multipliers in [2**30, 2**31): float32 weights move the last digits
            assert np.all(np.abs(want - got) <= 2.0**-20 * np.abs(want)), name
        elif name.endswith("_lut"):  # a table entry may sit on a rounding boundary of the fitted scale
            assert np.abs(want - got).max(initial=0) <= 1 and (want != got).sum() <= max(1, want.size // 100), name
        else:  # int8 weights, shifts, embedding, slopes: exactly
            assert np.array_equal(want, got), name


def test_v1_dequantizes_to_a_float_model_that_reexports_v1():
    _assert_same_model(*_reexported(REPO / "models" / "v1"))


@pytest.mark.parametrize("family", ["transformer", "cnn", "recurrent", "hybrid"])
def test_every_family_round_trips(tmp_path, family):
    from helpers.artifacts import tiny_artifact

    _assert_same_model(*_reexported(tiny_artifact(tmp_path / "v1", family=family, steps=12)))


def test_dequantized_v1_predicts_as_the_integer_runtime():
    """The float model's QAT forward pass and the int8 runtime give the same bits on real records: the coded
    bodies are the float model's information content plus the range coder's flush (at most 8 bytes a record)."""
    import math

    import torch
    from torch.nn import functional as F

    from nbmf.codecs.neural import load_codec
    from nbmf.data.corpus import iter_records
    from nbmf.models import build_model, sequence_for
    from train.warmstart import load_into, load_warm_start

    warm = load_warm_start(REPO / "models" / "v1")
    model = build_model(warm.cfg)
    load_into(model, warm.state)
    model.set_qat(True).eval()
    codec = load_codec(REPO / "models" / "v1")
    records = [r for r in iter_records(REPO / "data" / "sample" / "val.jsonl", limit=80) if 0 < len(r.raw) < 2000]
    bits_float = bits_coded = 0.0
    for r in records:
        ids = codec.tokenizer.encode_batch([r.raw])[0]
        seq = sequence_for(ids, int(r.kind), 0, warm.cfg)
        with torch.no_grad():
            logits = model(torch.from_numpy(seq[None, :-1]))[0]
        bits_float += float(F.cross_entropy(logits, torch.from_numpy(seq[1:]), reduction="sum")) / math.log(2)
        bits_coded += 8 * len(codec.encode_raw(r.raw, r.kind))
    n = len(records)
    assert n >= 20 and bits_float * 0.99 <= bits_coded <= bits_float * 1.01 + 64 * n, (bits_coded, bits_float, n)


def test_init_from_refuses_what_is_not_an_artifact(tmp_path, capsys):
    from train.driver import main

    assert main(["--config", str(REPO / "train" / "configs" / "finetune.yaml"), f"init_from={tmp_path}"]) == 2
    assert "init_from:" in capsys.readouterr().err


def test_a_match_model_is_carried_into_the_adapted_artifact(tmp_path):
    """Warm-starting from v2 (v1's network + a match model) keeps the match model: the new artifact ships the same
    match.json, decodes exactly, and codes the records smaller than the same network without it."""
    from nbmf.artifact import MATCH
    from nbmf.codecs.neural import load_codec
    from nbmf.data.corpus import iter_records
    from nbmf.models import build_model
    from nbmf.tokenizer import Tokenizer
    from train.export import export_with_bench
    from train.warmstart import load_into, load_warm_start

    warm = load_warm_start(REPO / "models" / "v2")
    assert warm.match is not None and load_warm_start(REPO / "models" / "v1").match is None
    model = build_model(warm.cfg)
    load_into(model, warm.state)
    tok = Tokenizer.from_json(warm.tokenizer_json)
    kw = dict(version="v1", rows=[], val_bpb=None)
    with_match = tmp_path / "with"
    export_with_bench(model, warm.cfg, tok, with_match, match=warm.match, **kw)
    export_with_bench(model, warm.cfg, tok, tmp_path / "without", **kw)
    assert (with_match / MATCH).read_bytes() == (REPO / "models" / "v2" / MATCH).read_bytes()
    records = [r for _, r in zip(range(60), iter_records(REPO / "data" / "sample" / "val.jsonl"))]
    items = [(r.raw, r.kind) for r in records]
    codecs = [load_codec(d, threads=1) for d in (with_match, tmp_path / "without")]
    bodies = [c.encode_many(items) for c in codecs]
    jobs = [(b, k, len(raw)) for b, (raw, k) in zip(bodies[0], items)]
    assert codecs[0].decode_many(jobs) == [raw for raw, _ in items]
    assert sum(map(len, bodies[0])) < sum(map(len, bodies[1]))
