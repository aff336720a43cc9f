"""Herald's provider clients: MMG and Firetext for SMS, SES for email.

The send dispatcher depends on ``SmsProvider`` / ``EmailProvider`` and handles ``ProviderError``;
the concrete clients below speak each provider's wire format over one pooled HTTP connection each.
The provider simulator lives in ``herald.providers.simulator`` and is not imported here, so the
dispatcher does not pull in gRPC server-side code it never uses.
"""

from herald.providers._base import EmailProvider, EmailRequest, ProviderError, SmsProvider, SmsRequest
from herald.providers._firetext import FiretextClient
from herald.providers._mmg import MmgClient
from herald.providers._ses import SesClient

__all__ = [
    "EmailProvider",
    "EmailRequest",
    "FiretextClient",
    "MmgClient",
    "ProviderError",
    "SesClient",
    "SmsProvider",
    "SmsRequest",
]
