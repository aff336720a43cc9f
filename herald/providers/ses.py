"""SES email client: boto3's SESv2 SendEmail (``POST /v2/email/outbound-emails``), SigV4-signed.

The same client talks to AWS or to the provider simulator; only ``endpoint_url`` and the keys differ.
Not imported by ``herald.providers``: boto3 and the SES client's service model are ~20 MB of a process's
memory, held only by the processes that send email (a send-sms dispatcher never does).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from herald.providers._base import (
    NOTIFICATION_ID_HEADER,
    NOTIFICATION_ID_TAG,
    ClosingClient,
    EmailRequest,
    ProviderError,
)

if TYPE_CHECKING:
    from mypy_boto3_sesv2.client import SESV2Client
    from mypy_boto3_sesv2.type_defs import (
        BodyTypeDef,
        EmailContentTypeDef,
        MessageHeaderTypeDef,
        SendEmailRequestTypeDef,
    )

logger = logging.getLogger(__name__)

# Codes SES and the AWS front end use for "slow down"; some come with HTTP 400, not 429.
_THROTTLING_CODES = frozenset(
    {"Throttling", "ThrottlingException", "TooManyRequestsException", "RequestThrottled", "RequestLimitExceeded"}
)


class SesClient(ClosingClient):
    """One boto3 SESv2 client, built at construction (building one costs tens of milliseconds of CPU).

    botocore's own retries are off: the dispatcher's retry schedule decides when to send again.
    Empty or absent keys leave boto3 to find credentials itself (environment, IAM role).
    """

    name: str = "ses"

    def __init__(
        self,
        endpoint_url: str | None,
        *,
        region_name: str = "eu-west-2",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        configuration_set_name: str | None = None,
        timeout: float = 5.0,
        max_connections: int = 16,
    ) -> None:
        self._configuration_set_name = configuration_set_name or None
        config = Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},
            # One connection per concurrent hand-off (the dispatcher's send_concurrency).
            max_pool_connections=max_connections,
        )
        # A session of its own: boto3's default session is module state shared by every caller.
        self._client: SESV2Client = boto3.session.Session().client(
            "sesv2",
            endpoint_url=endpoint_url or None,
            region_name=region_name,
            aws_access_key_id=access_key_id or None,
            aws_secret_access_key=secret_access_key or None,
            config=config,
        )

    def close(self) -> None:
        self._client.close()

    def send_email(self, request: EmailRequest) -> str:
        reference = request.reference
        params = self._send_email_params(request)
        try:
            answer = self._client.send_email(**params)
        except ClientError as exc:
            # Only the code and status: SES's message text can name the recipient.
            error = exc.response.get("Error", {})
            code = error.get("Code", "unknown")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            retryable = code in _THROTTLING_CODES or (status is not None and (status == 429 or status >= 500))
            logger.warning("ses: refused %s with %s (HTTP %s)", reference, code, status)
            raise ProviderError(self.name, f"{code} (HTTP {status})", retryable=retryable, status_code=status) from exc
        except BotoConnectionError as exc:
            # Connect refused or timed out: the request never left.
            logger.warning("ses: could not connect to hand off %s: %s", reference, type(exc).__name__)
            raise ProviderError(self.name, f"connection failed ({type(exc).__name__})", retryable=True) from exc
        except HTTPClientError as exc:
            # Read timeout or connection closed mid-answer: SES may hold the message.
            logger.warning("ses: no answer handing off %s: %s", reference, type(exc).__name__)
            raise ProviderError(self.name, f"no answer ({type(exc).__name__})", retryable=True, ambiguous=True) from exc
        except BotoCoreError as exc:
            # Bad parameters, no credentials: the same request fails the same way again.
            logger.warning("ses: could not hand off %s: %s", reference, type(exc).__name__)
            raise ProviderError(self.name, type(exc).__name__, retryable=False) from exc
        except Exception as exc:
            # botocore raises plain exceptions for an answer it cannot parse; a 2xx may mean SES has it.
            logger.warning("ses: malformed answer for %s: %s", reference, type(exc).__name__)
            raise ProviderError(self.name, "malformed answer", retryable=False) from exc
        message_id = answer.get("MessageId")
        if not isinstance(message_id, str) or not message_id:
            logger.warning("ses: answer for %s has no 'MessageId'", reference)
            raise ProviderError(self.name, "answer has no 'MessageId'", retryable=False)
        return message_id

    def _send_email_params(self, request: EmailRequest) -> SendEmailRequestTypeDef:
        headers: list[MessageHeaderTypeDef] = [{"Name": NOTIFICATION_ID_HEADER, "Value": request.reference}]
        if request.unsubscribe_url:
            # RFC 8058 one-click unsubscribe, which Gmail and Yahoo ask of bulk senders.
            headers.append({"Name": "List-Unsubscribe", "Value": f"<{request.unsubscribe_url}>"})
            headers.append({"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"})
        # SES assumes 7-bit ASCII unless told otherwise.
        body: BodyTypeDef = {"Text": {"Data": request.body, "Charset": "UTF-8"}}
        if request.html:
            body["Html"] = {"Data": request.html, "Charset": "UTF-8"}
        content: EmailContentTypeDef = {
            "Simple": {
                "Subject": {"Data": request.subject, "Charset": "UTF-8"},
                "Body": body,
                "Headers": headers,
            }
        }
        params: SendEmailRequestTypeDef = {
            "FromEmailAddress": request.from_address,
            "Destination": {"ToAddresses": [request.to]},
            "Content": content,
            "EmailTags": [{"Name": NOTIFICATION_ID_TAG, "Value": request.reference}],
        }
        if request.reply_to:
            params["ReplyToAddresses"] = [request.reply_to]
        if self._configuration_set_name is not None:
            params["ConfigurationSetName"] = self._configuration_set_name
        return params
