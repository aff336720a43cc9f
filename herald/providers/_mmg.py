"""MMG SMS client, speaking MMG's JSON send API (as the provider simulator serves it)."""

from __future__ import annotations

from herald.providers._base import HttpProviderClient, SmsRequest


class MmgClient(HttpProviderClient):
    name: str = "mmg"

    def _auth_headers(self, api_key: str) -> dict[str, str]:
        # MMG authenticates with the bare key in a Basic header, not a base64 user:password pair.
        return {"Authorization": f"Basic {api_key}"} if api_key else {}

    def send_sms(self, request: SmsRequest) -> str:
        payload = {
            "reqType": "BULK",
            "MSISDN": request.to,
            "msg": request.body,
            "sender": request.sender,
            "cid": request.reference,
            "multi": True,
        }
        answer = self._post("/mmg/send", request.reference, json=payload)
        return self._field(answer, "reference", request.reference)
