"""NBMF: learned lossless compression of AI-agent memory records.

>>> import nbmf
>>> blob = nbmf.encode("Remember: the user prefers metric units.")
>>> nbmf.decode(blob)
'Remember: the user prefers metric units.'
>>> nbmf.inspect(blob).kind.name
'TEXT'
"""
from nbmf.blob import Fidelity, Header, Kind, from_envelope, to_envelope
from nbmf.errors import (
    ArtifactError,
    CorruptBlobError,
    FormatError,
    LegacySignatureError,
    NBMFError,
    OutputTooLargeError,
    ServiceError,
    UnknownVersionError,
)
from nbmf.registry import DecodeResult, Registry, default_registry

__version__ = "0.1.0"


def encode(payload, fidelity="lossless", version=None, kind=None, domain=None) -> bytes:
    """Blob of ``payload`` (str -> text, bytes -> bytes, else JSON) with the default registry: written by
    ``version``, else by ``domain``'s version (DOMAINS.json of the model directory), else by CURRENT."""
    return default_registry().encode(payload, fidelity=fidelity, version=version, kind=kind, domain=domain)


def decode(blob, max_output_size: int = 64 << 20):
    """Payload of a blob (format v2 or v1) or a legacy stub blob (dict, or its JSON text/bytes)."""
    return default_registry().decode(blob, max_output_size=max_output_size)


def decode_result(blob, max_output_size: int = 64 << 20) -> DecodeResult:
    return default_registry().decode_result(blob, max_output_size=max_output_size)


def inspect(blob):
    return default_registry().inspect(blob)


__all__ = [
    "ArtifactError", "CorruptBlobError", "DecodeResult", "Fidelity", "FormatError", "Header", "Kind",
    "LegacySignatureError", "NBMFError", "OutputTooLargeError", "Registry", "ServiceError", "UnknownVersionError",
    "decode", "decode_result", "default_registry", "encode", "from_envelope", "inspect", "to_envelope",
]
