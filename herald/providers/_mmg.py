"""MMG SMS client, speaking MMG's JSON send API (as the provider simulator serves it)."""

from __future__ import annotations

from herald.providers._base import HttpProviderClient, SmsRequest
from herald.providers._transport import HttpAnswer, HttpPost, TransportFailed


class MmgClient(HttpProviderClient):
    name: str = "mmg"

    def _auth_headers(self, api_key: str) -> dict[str, str]:
        # MMG authenticates with the bare key in a Basic header, not a base64 user:password pair.
        return {"Authorization": f"Basic {api_key}"} if api_key else {}

    def sms_post(self, request: SmsRequest) -> HttpPost:
        payload = {
            "reqType": "BULK",
            "MSISDN": request.to,
            "msg": request.body,
            "sender": request.sender,
            "cid": request.reference,
            "multi": True,
        }
        return self._request("/mmg/send", json=payload)

    def sms_sent(self, request: SmsRequest, outcome: HttpAnswer | TransportFailed) -> str:
        return self._field(self._answer(request.reference, outcome), "reference", request.reference)
