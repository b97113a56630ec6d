"""One exception hierarchy for the library; each class carries the CLI exit code it maps to.

| exit | class               | meaning                                                     |
|------|---------------------|-------------------------------------------------------------|
| 1    | OciartError         | anything else (registry refused, unsupported operation)     |
| 2    | UsageError          | bad arguments or reference, existing file without overwrite |
|      |                     | (OverwriteError)                                            |
| 3    | NotFoundError       | repository, tag, manifest, blob or file not found           |
| 4    | AuthError           | missing or wrong credentials, access denied                 |
| 5    | VerificationError   | digest or size mismatch, malformed or oversized content,    |
|      |                     | unsafe path, encrypted layer without a fitting key or with  |
|      |                     | a bad HMAC (DecryptionError)                                |
| 6    | NetworkError        | connection, TLS or timeout failure after retries; a host    |
|      |                     | that does not resolve or refuses (UnreachableError)         |
| 7    | ConflictError       | compare-and-set lost: the tag is elsewhere (another writer) |
| 8    | LocalIOError        | local disk full, permission denied, unusable output path    |
| 130  | Interrupted         | interrupted by SIGINT (143: SIGTERM)                        |
"""

from __future__ import annotations


class OciartError(Exception):
    """Base class. ``str(err)`` is the one line the CLI prints."""

    exit_code = 1
    kind = "error"


class UsageError(OciartError):
    exit_code = 2
    kind = "usage"


class InvalidReferenceError(UsageError):
    kind = "invalid-reference"


class OverwriteError(UsageError):
    """A local destination (file, key) exists with different content and overwriting was not allowed."""

    kind = "exists"


class NotFoundError(OciartError):
    exit_code = 3
    kind = "not-found"


class AuthError(OciartError):
    exit_code = 4
    kind = "auth"


class VerificationError(OciartError):
    exit_code = 5
    kind = "verification"

    def __init__(self, message: str, rejected: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__(message)
        #: Why each signature or attestation found was not accepted (verification failures).
        self.rejected = list(rejected)


class DigestMismatchError(VerificationError):
    kind = "digest-mismatch"


class InvalidContentError(VerificationError):
    """Malformed or oversized manifest, index, or other metadata."""

    kind = "invalid-content"


class TooLargeError(InvalidContentError):
    """Restoring an artifact would write more than its declared sizes allow (or ``--max-size``)."""

    kind = "too-large"


class UnsafePathError(VerificationError):
    """A file name in an artifact would be written outside the target directory."""

    kind = "unsafe-path"


class DecryptionError(VerificationError):
    """An encrypted layer cannot be opened: no key given, none of the keys is a recipient, malformed options."""

    kind = "decryption"


class HmacMismatchError(DecryptionError):
    """An encrypted layer's HMAC does not match its ciphertext (altered, or encrypted under another key)."""

    kind = "hmac-mismatch"


class NetworkError(OciartError):
    exit_code = 6
    kind = "network"


class UnreachableError(NetworkError):
    """The host name does not resolve or the host refuses the connection: not transient, never retried."""

    kind = "unreachable"


class ConflictError(OciartError):
    """A compare-and-set lost: a tag was not where the caller expected it (another writer moved it first).

    ``current`` is the digest the tag points at now (the one that won), None when the tag does not exist.
    """

    exit_code = 7
    kind = "conflict"

    def __init__(self, message: str, current: str | None = None) -> None:
        super().__init__(message)
        self.current = current


class LocalIOError(OciartError):
    """A local file operation failed: disk full, permission denied, an output path that cannot be used."""

    exit_code = 8
    kind = "local-io"


class Interrupted(OciartError):
    """The command was interrupted: SIGINT (exit 130) or SIGTERM (exit 143)."""

    exit_code = 130
    kind = "interrupted"

    def __init__(self, signum: int = 2) -> None:
        super().__init__("interrupted")
        self.exit_code = 128 + signum


def from_os_error(exc: OSError) -> OciartError:
    """The one mapping of a local ``OSError`` to ociart's hierarchy: a missing file is not found, the rest is I/O."""
    if isinstance(exc, FileNotFoundError):
        return NotFoundError(_os_message(exc))
    return LocalIOError(_os_message(exc))


def _os_message(exc: OSError) -> str:
    reason = exc.strerror or str(exc) or type(exc).__name__
    name = exc.filename
    return f"{name}: {reason}" if name is not None else reason


class RegistryError(OciartError):
    """The registry answered with an error that fits no narrower class."""

    kind = "registry"

    def __init__(self, message: str, status: int | None = None, codes: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.codes = codes


class UnsupportedError(RegistryError):
    """The registry (or store) does not implement the operation."""

    kind = "unsupported"
