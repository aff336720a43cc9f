"""Herald's provider clients: MMG and Firetext for SMS, SES for email, and the SMS provider rotation.

The send dispatcher depends on ``SmsProvider`` / ``EmailProvider`` and handles ``ProviderError``;
MMG and Firetext speak their wire formats over one connection pool each (``PooledTransport``; tests
pass their own ``Transport``), a batch's SMS hand-offs going out side by side from one thread
(``send_sms_all``). ``ProviderRotation`` picks the SMS provider for each hand-off.
Two modules are not imported here, so that a process holds only what it uses:
``herald.providers.ses`` (``SesClient``: one boto3 SESv2 client, SigV4), since boto3 and the SES
client are ~20 MB that a process sending only SMS never needs, and ``herald.providers.simulator``,
since the dispatcher never uses its gRPC server-side code.
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
    "SmsProvider",
    "SmsRequest",
    "Transport",
    "TransportFailed",
    "parse_weights",
    "post_all",
    "send_sms_all",
]
