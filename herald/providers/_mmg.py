"""MMG SMS client, speaking MMG's JSON send API (as the provider simulator serves it)."""

from __future__ import annotations

import httpx

from herald.providers._base import HttpProviderClient, SmsRequest


class MmgClient(HttpProviderClient):
    name: str = "mmg"

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str = "",
        timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        # MMG authenticates with the bare key in a Basic header, not a base64 user:password pair.
        headers = {"Authorization": f"Basic {api_key}"} if api_key else None
        super().__init__(base_url, timeout=timeout, transport=transport, headers=headers)

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
