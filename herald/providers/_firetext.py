"""Firetext SMS client, speaking Firetext's form-encoded send API (as the provider simulator serves it)."""

from __future__ import annotations

import logging

from herald.providers._base import HttpProviderClient, ProviderError, SmsRequest
from herald.providers._transport import HttpAnswer, HttpPost, TransportFailed

logger = logging.getLogger(__name__)


class FiretextClient(HttpProviderClient):
    name: str = "firetext"

    def sms_post(self, request: SmsRequest) -> HttpPost:
        form = {
            "apiKey": self._api_key,
            "from": request.sender,
            "to": request.to,
            "message": request.body,
            "reference": request.reference,
        }
        return self._request("/firetext/send", form=form)

    def sms_sent(self, request: SmsRequest, outcome: HttpAnswer | TransportFailed) -> str:
        code = self._answer(request.reference, outcome).get("code")
        if code != 0:
            # Firetext refuses with HTTP 200 and a non-zero code (bad key, bad number, no credit).
            logger.warning("firetext: refused %s with code %r", request.reference, code)
            raise ProviderError(self.name, f"refused with code {code!r}", retryable=False, status_code=200)
        # Firetext issues no id of its own: its receipts carry back the reference Herald gave it.
        return request.reference
