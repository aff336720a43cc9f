"""The provider simulator's received text messages: someone texts one of Herald's inbound numbers, and the
provider posts it to Herald's inbound webhook in its own format (``POST /_inbound`` on the simulator).

MMG posts JSON: ``MSISDN`` (the sender), ``Number`` (the inbound number), ``Message`` (URL-encoded with
"+" for a space, characters outside ASCII as backslash escapes), ``ID`` (MMG's id), ``DateRecieved`` (sic;
London time, URL-encoded). Firetext posts a form: ``source``, ``destination``, ``message``, ``time``
(London time). Both with the provider's credential (HTTP Basic), as receipts are posted.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote_plus, urlencode
from zoneinfo import ZoneInfo

import httpx
import orjson

from herald.providers._sim_sends import Answer, BadRequest, error, json_object

INBOUND_PATHS: Final = {"mmg": "/notifications/sms/receive/mmg", "firetext": "/notifications/sms/receive/firetext"}
_LONDON: Final = ZoneInfo("Europe/London")
_TIMEOUT_SECONDS: Final = 10.0
_FIELDS: Final = frozenset({"provider", "to", "from", "text"})


def mmg_message(text: str) -> str:
    """MMG's encoding of a text: backslash escapes for what is not ASCII (and for a backslash), then
    URL-encoded with "+" for a space."""
    return quote_plus(text.encode("unicode_escape").decode("ascii"))


def mmg_inbound(to: str, sender: str, text: str, at: datetime) -> dict[str, str]:
    return {
        "MSISDN": sender,
        "Number": to,
        "Message": mmg_message(text),
        "ID": str(uuid.uuid4()),
        "DateRecieved": quote_plus(at.astimezone(_LONDON).strftime("%Y-%m-%d %H:%M:%S")),
        "Trigger": "",
        "Channel": "SMS",
    }


def firetext_inbound(to: str, sender: str, text: str, at: datetime) -> dict[str, str]:
    return {
        "source": sender,
        "destination": to,
        "message": text,
        "time": at.astimezone(_LONDON).strftime("%Y-%m-%d %H:%M:%S"),
    }


def _text_field(data: Mapping[str, Any], name: str, *, required: bool = True) -> str:
    value = data.get(name, "")
    if not isinstance(value, str) or (required and not value):
        raise BadRequest(f"{name} must be {'a non-empty string' if required else 'a string'}")
    return value


class InboundPoster:
    """Posts received texts to the gateway under `base_url`, with each provider's credential, from the
    simulator's event loop (httpx's async client: make it and use it on that loop)."""

    def __init__(self, base_url: str, credentials: Mapping[str, str]) -> None:
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=_TIMEOUT_SECONDS)
        self._credentials = dict(credentials)

    async def handle(self, body: bytes) -> Answer:
        """``POST /_inbound`` ``{"provider": "mmg" | "firetext" (default mmg), "to": inbound number, "from":
        sender, "text": ...}``: posted once, the gateway's answer passed back (502 if it was not 200)."""
        data = json_object(body)
        unknown = set(data) - _FIELDS
        if unknown:
            raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
        provider = data.get("provider", "mmg")
        if provider not in INBOUND_PATHS:
            raise BadRequest(f"provider must be one of {', '.join(INBOUND_PATHS)}")
        to, sender = _text_field(data, "to"), _text_field(data, "from")
        text = _text_field(data, "text", required=False)
        now = datetime.now(UTC)
        if provider == "mmg":
            content = orjson.dumps(mmg_inbound(to, sender, text, now))
            headers = {"Content-Type": "application/json"}
        else:
            content = urlencode(firetext_inbound(to, sender, text, now)).encode()
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
        try:
            answer = await self._client.post(
                INBOUND_PATHS[provider], content=content, headers=headers, auth=("herald", self._credentials[provider])
            )
        except httpx.HTTPError as exc:
            return Answer(502, error("gateway_unreachable", type(exc).__name__))
        try:
            said = answer.json()
        except ValueError:
            said = answer.text
        return Answer(200 if answer.status_code == 200 else 502, {"status": answer.status_code, "answer": said})

    async def close(self) -> None:
        await self._client.aclose()
