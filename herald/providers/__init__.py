"""Herald's provider clients: MMG and Firetext for SMS, SES for email, and the SMS provider rotation.

The send dispatcher depends on ``SmsProvider`` / ``EmailProvider`` and handles ``ProviderError``;
MMG and Firetext speak their wire formats over one connection pool each (``PooledTransport``; tests
pass their own ``Transport``), a batch's SMS hand-offs going out side by side from one thread
(``send_sms_all``), SES goes through one boto3 SESv2 client (SigV4). ``ProviderRotation``
picks the SMS provider for each hand-off.
The provider simulator lives in ``herald.providers.simulator`` and is not imported here, so the
dispatcher does not pull in gRPC server-side code it never uses.
"""

from herald.providers._base import (
    NOTIFICATION_ID_HEADER,
    NOTIFICATION_ID_TAG,
    EmailProvider,
    EmailRequest,
    ProviderError,
    SmsProvider,
    SmsRequest,
    send_sms_all,
)
from herald.providers._firetext import FiretextClient
from herald.providers._mmg import MmgClient
from herald.providers._ses import SesClient
from herald.providers._transport import HttpAnswer, HttpPost, PooledTransport, Transport, TransportFailed, post_all
from herald.providers.rotation import ProviderRotation, parse_weights

__all__ = [
    "NOTIFICATION_ID_HEADER",
    "NOTIFICATION_ID_TAG",
    "EmailProvider",
    "EmailRequest",
    "FiretextClient",
    "HttpAnswer",
    "HttpPost",
    "MmgClient",
    "PooledTransport",
    "ProviderError",
    "ProviderRotation",
    "SesClient",
    "SmsProvider",
    "SmsRequest",
    "Transport",
    "TransportFailed",
    "parse_weights",
    "post_all",
    "send_sms_all",
]
