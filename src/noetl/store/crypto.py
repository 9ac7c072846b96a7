"""Encryption at rest for credential data.

Cipher choice: AES-256-GCM (`cryptography`'s AESGCM) with a fresh random 96-bit nonce per
encryption, in an envelope: the data is sealed under a random 32-byte data key, and the data
key is sealed under the master key. Reasons over Fernet (AES-128-CBC + HMAC):

* it is the format upstream NoETL stores in `credential.data_encrypted` (local KMS provider:
  `{"v":1,"alg":"AES-256-GCM","ct":..,"dek":{"p":"local","kid":..,"kv":"v1","ct":..}}`, each
  `ct` the base64 of nonce followed by ciphertext and tag, no associated data), so a shared
  PostgreSQL database stays readable by both implementations under the same key;
* a 256-bit authenticated cipher in one primitive, and an envelope that lets the master key be
  rotated later by re-wrapping data keys only.

The master key comes from `NOETL_ENCRYPTION_KEY` when set (read through `noetl.settings` by
`Cipher.from_env`, the one place a store's cipher is built; `Cipher.from_key` takes it explicitly): a value that decodes (standard or
URL-safe base64, as Fernet keys are written) to exactly 32 bytes is the key itself; any other
string is treated as a passphrase and stretched with PBKDF2-HMAC-SHA256 (600,000 iterations,
a fixed application salt, so every process derives the same key). Otherwise the key is read
from `<user data dir>/encryption.key`, which is generated on first use with mode 0600.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from noetl.errors import CredentialError

log = logging.getLogger(__name__)

KEY_ENV = "NOETL_ENCRYPTION_KEY"
KEY_FILE_NAME = "encryption.key"
KEY_BYTES = 32
_NONCE_BYTES = 12
_ALG = "AES-256-GCM"
_KDF_SALT = b"noetl.credential.master-key.v1"
_KDF_ITERATIONS = 600_000


class Cipher:
    """Seals credential data (a JSON object) into a text envelope and opens it again."""

    def __init__(self, key: bytes, *, key_id: str = "local") -> None:
        if len(key) != KEY_BYTES:
            raise CredentialError(f"an encryption key must be {KEY_BYTES} bytes, got {len(key)}")
        self._master = AESGCM(key)
        self.key_id = key_id

    @classmethod
    def from_key(cls, text: str | None, key_file: Path | None = None) -> Cipher:
        """The key `text` gives (the value of NOETL_ENCRYPTION_KEY), else the key in `key_file`
        (default: the per-user data dir; created if missing)."""
        text = (text or "").strip()
        if text:
            return cls(key_from_text(text), key_id=f"env:{KEY_ENV}")
        path = key_file or default_key_file()
        return cls(load_key_file(path), key_id=f"file:{path.name}")

    @classmethod
    def from_env(cls, key_file: Path | None = None) -> Cipher:
        """`from_key` with the configured NOETL_ENCRYPTION_KEY (`noetl.settings`)."""
        from noetl.settings import settings

        return cls.from_key(settings().encryption_key, key_file)

    def encrypt(self, data: Mapping[str, Any]) -> str:
        plain = json.dumps(dict(data), separators=(",", ":"), ensure_ascii=False).encode()
        data_key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
        envelope = {
            "v": 1,
            "alg": _ALG,
            "ct": _seal(AESGCM(data_key), plain),
            "dek": {"p": "local", "kid": self.key_id, "kv": "v1", "ct": _seal(self._master, data_key)},
        }
        return json.dumps(envelope, separators=(",", ":"))

    def decrypt(self, token: str, *, name: str | None = None) -> dict[str, Any]:
        what = f"credential '{name}'" if name else "credential"
        try:
            envelope = json.loads(token)
            wrapped = envelope["dek"]
            provider = wrapped.get("p", "local")
            sealed_key, sealed_data = wrapped["ct"], envelope["ct"]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CredentialError(f"{what} has malformed encrypted data") from exc
        if provider != "local" or envelope.get("alg", _ALG) != _ALG:
            raise CredentialError(
                f"{what} was encrypted with {envelope.get('alg')} via key provider '{provider}', "
                "which this NoETL cannot open"
            )
        try:
            data_key = _open(self._master, sealed_key)
        except InvalidTag as exc:
            raise CredentialError(f"cannot decrypt {what}: wrong {KEY_ENV}?") from exc
        try:
            data = json.loads(_open(AESGCM(data_key), sealed_data))
        except (InvalidTag, ValueError) as exc:
            raise CredentialError(f"{what} has corrupt encrypted data") from exc
        if not isinstance(data, dict):
            raise CredentialError(f"{what} does not decrypt to a JSON object")
        return data


def _seal(aead: AESGCM, plain: bytes) -> str:
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return base64.b64encode(nonce + aead.encrypt(nonce, plain, None)).decode("ascii")


def _open(aead: AESGCM, sealed: str) -> bytes:
    try:
        raw = base64.b64decode(sealed, validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ValueError("not base64") from exc
    if len(raw) <= _NONCE_BYTES:
        raise ValueError("too short")
    return aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], None)


def key_from_text(text: str) -> bytes:
    """A 32-byte key from its base64 text (standard or URL-safe), else derived from a passphrase."""
    return _decode_key(text) or _derive(text)


def _decode_key(text: str) -> bytes | None:
    for altchars in (None, b"-_"):
        try:
            key = base64.b64decode(text, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(key) == KEY_BYTES:
            return key
    return None


@functools.lru_cache(maxsize=4)
def _derive(passphrase: str) -> bytes:
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=_KDF_SALT, iterations=_KDF_ITERATIONS)
    return kdf.derive(passphrase.encode())


def default_key_file() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("noetl")) / KEY_FILE_NAME


def load_key_file(path: Path) -> bytes:
    """The key stored in `path`, generating the file (mode 0600) when it does not exist."""
    try:
        if not path.exists():
            _create_key_file(path)
        if os.name == "posix":
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                log.warning("key file %s was readable by others (mode %o); setting it to 0600", path, mode)
                path.chmod(0o600)
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialError(f"cannot use key file {path}: {exc}") from exc
    key = _decode_key(text)
    if key is None:
        raise CredentialError(f"key file {path} does not hold a base64 {KEY_BYTES}-byte key")
    return key


def _create_key_file(path: Path) -> None:
    """Write a new key to a private temp file and link it into place: a concurrent creator wins
    cleanly (the link fails with FileExistsError) and nobody ever reads a half-written key."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = base64.urlsafe_b64encode(AESGCM.generate_key(bit_length=KEY_BYTES * 8))
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(key + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            pass
    finally:
        temp.unlink(missing_ok=True)
