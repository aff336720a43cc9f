"""Amazon SNS message signatures, checked as AWS documents it: the signing certificate is fetched from
SNS itself (and kept), and the signature (SignatureVersion 1: SHA1withRSA, 2: SHA256withRSA) must match
the message's fields in AWS's canonical order."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from typing import Any, Final

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

# The fields signed, in order, by message type (fields a message lacks, e.g. Subject, are left out).
_SIGNED_FIELDS: Final = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
_HASHES: Final[Mapping[str, Callable[[], hashes.HashAlgorithm]]] = {"1": hashes.SHA1, "2": hashes.SHA256}


class NotSigned(Exception):
    """The message is not signed by SNS."""


class CertificateUnavailable(Exception):
    """SNS's signing certificate could not be fetched now: the message may be good, try it again."""


def string_to_sign(message: Mapping[str, Any]) -> bytes:
    fields = _SIGNED_FIELDS.get(str(message.get("Type")))
    if fields is None:
        raise NotSigned("unknown message type")
    parts = []
    for name in fields:
        if name in message:
            value = message[name]
            if not isinstance(value, str):
                raise NotSigned(f"{name} is not a string")
            parts.append(f"{name}\n{value}\n")
    return "".join(parts).encode()


class SnsVerifier:
    """`may_fetch` says which certificate URLs are SNS's; certificates are kept by URL (SNS rotates them
    rarely, and a new URL is simply fetched)."""

    def __init__(self, may_fetch: Callable[[str], bool]) -> None:
        self._may_fetch = may_fetch
        self._keys: dict[str, rsa.RSAPublicKey] = {}

    async def verify(self, message: Mapping[str, Any]) -> None:
        digest = _HASHES.get(str(message.get("SignatureVersion")))
        url = message.get("SigningCertURL")
        if digest is None or not isinstance(url, str) or not url.endswith(".pem") or not self._may_fetch(url):
            raise NotSigned("not signed by Amazon SNS")
        try:
            signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
        except binascii.Error:
            raise NotSigned("signature is not base64") from None
        key = await self._key(url)
        try:
            key.verify(signature, string_to_sign(message), padding.PKCS1v15(), digest())
        except InvalidSignature:
            raise NotSigned("signature does not match") from None

    async def _key(self, url: str) -> rsa.RSAPublicKey:
        key = self._keys.get(url)
        if key is not None:
            return key
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                answer = await client.get(url)
                answer.raise_for_status()
            public_key = x509.load_pem_x509_certificate(answer.content).public_key()
        except httpx.HTTPError:
            raise CertificateUnavailable(url) from None
        except ValueError:
            raise NotSigned("signing certificate is not a PEM certificate") from None
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise NotSigned("signing certificate is not RSA")
        self._keys[url] = public_key
        return public_key
