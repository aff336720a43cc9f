"""SES email client, speaking the simulator's JSON simplification of SES SendEmail."""

from __future__ import annotations

from typing import Any

import httpx

from herald.providers._base import EmailRequest, HttpProviderClient


class SesClient(HttpProviderClient):
    name: str = "ses"

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str = "",
        timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        # Real SES signs requests with SigV4; the simplified API takes a bearer key when one is set.
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        super().__init__(base_url, timeout=timeout, transport=transport, headers=headers)

    def send_email(self, request: EmailRequest) -> str:
        payload: dict[str, Any] = {
            "Source": request.from_address,
            "Destination": {"ToAddresses": [request.to]},
            "Message": {
                "Subject": {"Data": request.subject},
                "Body": {"Text": {"Data": request.body}, "Html": {"Data": request.html}},
            },
            "reference": request.reference,
        }
        if request.reply_to is not None:
            payload["ReplyToAddresses"] = [request.reply_to]
        answer = self._post("/ses/send", request.reference, json=payload)
        return self._field(answer, "MessageId", request.reference)
