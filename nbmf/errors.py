"""One exception family for everything the codec library refuses. Caller misuse is ValueError/TypeError."""


class NBMFError(Exception):
    """Base class: a blob, envelope or artifact that cannot be used as given."""


class FormatError(NBMFError):
    """Not an NBMF blob, envelope or legacy record at all (wrong structure or field types)."""


class CorruptBlobError(NBMFError):
    """The blob fails its checksum or its body does not decode to its header's length: it was damaged."""


class LegacySignatureError(CorruptBlobError):
    """A legacy stub blob whose sha256 signature does not match its decoded payload."""


class UnknownVersionError(NBMFError):
    """The blob names an encoder version this registry does not hold."""


class OutputTooLargeError(NBMFError):
    """Decoding would produce more than ``max_output_size`` bytes (a decompression-bomb guard)."""


class PayloadError(NBMFError, ValueError):
    """A payload that cannot be stored exactly: a JSON value that would not round-trip (non-string keys,
    tuples, NaN or Infinity, integers past 4,300 digits, nesting past nbmf.payload.MAX_DEPTH). (A stored blob
    whose content cannot be rebuilt is CorruptBlobError.)"""


class ArtifactError(NBMFError):
    """A model artifact is missing files, fails its hashes, or does not describe a loadable model."""


class ServiceError(NBMFError):
    """The codec service refused a request (``nbmf.client``) for a reason this library has no class of its own for
    (its own refusals come back as their classes: CorruptBlobError, FormatError, ...), or answered 503 and no local
    codec could stand in. ``status`` is the HTTP status, ``error`` the service's error name."""

    def __init__(self, status: int, error: str, detail: str):
        super().__init__(f"{status} {error}: {detail}")
        self.status, self.error, self.detail = status, error, detail
