"""SES email client, speaking the simulator's JSON simplification of SES SendEmail."""

from __future__ import annotations

from typing import Any

from herald.providers._base import EmailRequest, HttpProviderClient


class SesClient(HttpProviderClient):
    name: str = "ses"

    def _auth_headers(self, api_key: str) -> dict[str, str]:
        # Real SES signs requests with SigV4; the simplified API takes a bearer key when one is set.
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

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
