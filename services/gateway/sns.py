"""Amazon SNS message signatures, checked as AWS documents it: the signing certificate is fetched from
SNS itself (and kept), and the signature (SignatureVersion 1: SHA1withRSA, 2: SHA256withRSA) must match
the message's fields in AWS's canonical order."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from herald.providers.sns_messages import HASHES, NotSigned, string_to_sign

__all__ = ["CertificateUnavailable", "NotSigned", "SnsVerifier", "string_to_sign"]


class CertificateUnavailable(Exception):
    """SNS's signing certificate could not be fetched now: the message may be good, try it again."""


class SnsVerifier:
    """`may_fetch` says which certificate URLs are SNS's; certificates are kept by URL (SNS rotates them
    rarely, and a new URL is simply fetched)."""

    def __init__(self, may_fetch: Callable[[str], bool]) -> None:
        self._may_fetch = may_fetch
        self._keys: dict[str, rsa.RSAPublicKey] = {}

    async def verify(self, message: Mapping[str, Any]) -> None:
        digest = HASHES.get(str(message.get("SignatureVersion")))
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
