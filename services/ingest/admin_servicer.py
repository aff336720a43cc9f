"""gRPC entrypoint for setting services up and managing them (the Admin service, served beside Ingest)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import grpc

from herald.db import senders as senders_db
from herald.db import services as services_db
from herald.grpcsrv.errors import statuses_for_errors
from herald.service_layer.admin import (
    RETENTION_FIELDS,
    SERVICE_FLAGS,
    SERVICE_LIMITS,
    Admin,
    PlatformMessages,
    ServiceDetails,
)
from herald.service_layer.auth import Authenticator
from herald.service_layer.senders import Senders
from herald.v1 import admin_pb2, admin_pb2_grpc
from services.ingest.calls import metadata, timestamp

T = TypeVar("T")


class AdminServicer(admin_pb2_grpc.AdminServicer):
    """`platform` sends the platform's own messages (without it, those RPCs are UNIMPLEMENTED); `senders`
    manages SMS senders, reply-to addresses and inbound numbers."""

    def __init__(
        self,
        authenticator: Authenticator,
        admin: Admin,
        platform: PlatformMessages | None = None,
        *,
        senders: Senders,
    ) -> None:
        self._auth = authenticator
        self._admin = admin
        self._platform = platform
        self._senders = senders

    def _call(self, context: grpc.ServicerContext, work: Callable[[], T]) -> T:
        with statuses_for_errors(context):
            self._auth.authenticate_admin(metadata(context, "authorization"))
            return work()
        raise AssertionError("unreachable")

    def CreateService(
        self, request: admin_pb2.CreateServiceRequest, context: grpc.ServicerContext
    ) -> admin_pb2.CreateServiceResponse:
        flags: dict[str, object] = {
            "research_mode": request.research_mode,
            "prefix_sms": request.prefix_sms,
            "can_send_international_sms": request.can_send_international_sms,
            # A new service starts in trial mode unless asked otherwise (Notify's).
            "restricted": request.restricted if request.HasField("restricted") else True,
        }
        if request.sms_sender:
            flags["sms_sender"] = request.sms_sender
        if request.email_from:
            flags["email_from"] = request.email_from
        service_id = self._call(context, lambda: self._admin.create_service(request.name, request.id, **flags))
        return admin_pb2.CreateServiceResponse(id=service_id)

    def UpdateService(
        self, request: admin_pb2.UpdateServiceRequest, context: grpc.ServicerContext
    ) -> admin_pb2.Service:
        flags = {f: bool(getattr(request, f)) for f in SERVICE_FLAGS if request.HasField(f)}  # type: ignore[arg-type]
        limit_values = {f: int(getattr(request, f)) for f in SERVICE_LIMITS if request.HasField(f)}  # type: ignore[arg-type]
        details = self._call(
            context,
            lambda: self._admin.update_service(
                request.service_id,
                name=request.name if request.HasField("name") else None,
                flags=flags,
                limit_values=limit_values,
                retention={f: int(getattr(request, f)) for f in RETENTION_FIELDS if request.HasField(f)},  # type: ignore[arg-type]
            ),
        )
        return _service(details)

    def GetService(self, request: admin_pb2.GetServiceRequest, context: grpc.ServicerContext) -> admin_pb2.Service:
        return _service(self._call(context, lambda: self._admin.get_service(request.service_id)))

    def CreateApiKey(
        self, request: admin_pb2.CreateApiKeyRequest, context: grpc.ServicerContext
    ) -> admin_pb2.CreateApiKeyResponse:
        key = self._call(context, lambda: self._admin.new_api_key(request.service_id, request.name, request.key_type))
        return admin_pb2.CreateApiKeyResponse(key=key.key, id=key.id)

    def ListApiKeys(
        self, request: admin_pb2.ListApiKeysRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListApiKeysResponse:
        keys = self._call(context, lambda: self._admin.list_api_keys(request.service_id))
        return admin_pb2.ListApiKeysResponse(keys=[_api_key(k) for k in keys])

    def RevokeApiKey(self, request: admin_pb2.RevokeApiKeyRequest, context: grpc.ServicerContext) -> admin_pb2.ApiKey:
        return _api_key(self._call(context, lambda: self._admin.revoke_api_key(request.service_id, request.key_id)))

    def CreateTemplate(
        self, request: admin_pb2.CreateTemplateRequest, context: grpc.ServicerContext
    ) -> admin_pb2.TemplateVersion:
        template_id = self._call(
            context,
            lambda: self._admin.create_template(
                request.service_id, request.name, request.template_type, request.content, request.subject or None
            ),
        )
        return admin_pb2.TemplateVersion(id=template_id, version=1)

    def UpdateTemplate(
        self, request: admin_pb2.UpdateTemplateRequest, context: grpc.ServicerContext
    ) -> admin_pb2.TemplateVersion:
        version = self._call(
            context,
            lambda: self._admin.update_template(request.template_id, request.content, request.subject or None),
        )
        return admin_pb2.TemplateVersion(id=request.template_id, version=version)

    def ArchiveTemplate(
        self, request: admin_pb2.ArchiveTemplateRequest, context: grpc.ServicerContext
    ) -> admin_pb2.TemplateRecord:
        return _template(self._call(context, lambda: self._admin.archive_template(request.template_id)))

    def ListTemplates(
        self, request: admin_pb2.ListTemplateRecordsRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListTemplatesResponse:
        rows = self._call(context, lambda: self._admin.list_templates(request.service_id, request.include_archived))
        return admin_pb2.ListTemplatesResponse(templates=[_template(t) for t in rows])

    def AddTeamMember(
        self, request: admin_pb2.AddTeamMemberRequest, context: grpc.ServicerContext
    ) -> admin_pb2.TeamMember:
        member_id = self._call(
            context,
            lambda: self._admin.add_team_member(request.service_id, request.mobile_number, request.email_address),
        )
        details = self._call(context, lambda: self._admin.get_service(request.service_id))
        return next(_member(m) for m in details.team if m.id == member_id)

    def RemoveTeamMember(
        self, request: admin_pb2.RemoveTeamMemberRequest, context: grpc.ServicerContext
    ) -> admin_pb2.TeamMember:
        return _member(
            self._call(context, lambda: self._admin.remove_team_member(request.service_id, request.member_id))
        )

    def SetGuestList(
        self, request: admin_pb2.SetGuestListRequest, context: grpc.ServicerContext
    ) -> admin_pb2.GuestList:
        recipients = self._call(
            context, lambda: self._admin.set_guest_list(request.service_id, list(request.recipients))
        )
        return admin_pb2.GuestList(recipients=recipients)

    def _platform_send(
        self, context: grpc.ServicerContext, send: Callable[[PlatformMessages], str]
    ) -> admin_pb2.PlatformMessageResponse:
        platform = self._platform
        if platform is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "This ingest does not send the platform's messages")
            raise AssertionError("unreachable")  # abort raises
        return admin_pb2.PlatformMessageResponse(id=self._call(context, lambda: send(platform)))

    def SendVerifyCode(
        self, request: admin_pb2.SendVerifyCodeRequest, context: grpc.ServicerContext
    ) -> admin_pb2.PlatformMessageResponse:
        return self._platform_send(context, lambda p: p.send_verify_code(request.mobile_number, request.code))

    def SendEmailVerification(
        self, request: admin_pb2.SendEmailVerificationRequest, context: grpc.ServicerContext
    ) -> admin_pb2.PlatformMessageResponse:
        return self._platform_send(
            context, lambda p: p.send_email_verification(request.email_address, request.name, request.url)
        )

    def SendInvitation(
        self, request: admin_pb2.SendInvitationRequest, context: grpc.ServicerContext
    ) -> admin_pb2.PlatformMessageResponse:
        return self._platform_send(
            context,
            lambda p: p.send_invitation(request.service_id, request.email_address, request.from_user_name, request.url),
        )

    def SendPasswordReset(
        self, request: admin_pb2.SendPasswordResetRequest, context: grpc.ServicerContext
    ) -> admin_pb2.PlatformMessageResponse:
        return self._platform_send(
            context, lambda p: p.send_password_reset(request.email_address, request.user_name, request.url)
        )

    def _set_callback(
        self, kind: str, request: admin_pb2.SetDeliveryCallbackRequest, context: grpc.ServicerContext
    ) -> admin_pb2.SetDeliveryCallbackResponse:
        made = self._call(
            context, lambda: self._admin.set_callback(kind, request.service_id, request.url, request.bearer_token)
        )
        return admin_pb2.SetDeliveryCallbackResponse(
            callback=_callback(made.callback), signing_secret=made.signing_secret
        )

    def SetDeliveryCallback(
        self, request: admin_pb2.SetDeliveryCallbackRequest, context: grpc.ServicerContext
    ) -> admin_pb2.SetDeliveryCallbackResponse:
        return self._set_callback(services_db.DELIVERY_STATUS, request, context)

    def GetDeliveryCallback(
        self, request: admin_pb2.GetDeliveryCallbackRequest, context: grpc.ServicerContext
    ) -> admin_pb2.DeliveryCallback:
        kind = services_db.DELIVERY_STATUS
        return _callback(self._call(context, lambda: self._admin.get_callback(kind, request.service_id)))

    def RemoveDeliveryCallback(
        self, request: admin_pb2.GetDeliveryCallbackRequest, context: grpc.ServicerContext
    ) -> admin_pb2.DeliveryCallback:
        kind = services_db.DELIVERY_STATUS
        return _callback(self._call(context, lambda: self._admin.remove_callback(kind, request.service_id)))

    def SetInboundCallback(
        self, request: admin_pb2.SetDeliveryCallbackRequest, context: grpc.ServicerContext
    ) -> admin_pb2.SetDeliveryCallbackResponse:
        return self._set_callback(services_db.INBOUND_SMS, request, context)

    def GetInboundCallback(
        self, request: admin_pb2.GetDeliveryCallbackRequest, context: grpc.ServicerContext
    ) -> admin_pb2.DeliveryCallback:
        kind = services_db.INBOUND_SMS
        return _callback(self._call(context, lambda: self._admin.get_callback(kind, request.service_id)))

    def RemoveInboundCallback(
        self, request: admin_pb2.GetDeliveryCallbackRequest, context: grpc.ServicerContext
    ) -> admin_pb2.DeliveryCallback:
        kind = services_db.INBOUND_SMS
        return _callback(self._call(context, lambda: self._admin.remove_callback(kind, request.service_id)))

    def AddSmsSender(
        self, request: admin_pb2.AddSmsSenderRequest, context: grpc.ServicerContext
    ) -> admin_pb2.SmsSender:
        return _sms_sender(
            self._call(
                context,
                lambda: self._senders.add_sms_sender(request.service_id, request.sms_sender, request.is_default),
            )
        )

    def ListSmsSenders(
        self, request: admin_pb2.ListSendersRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListSmsSendersResponse:
        rows = self._call(context, lambda: self._senders.list_sms_senders(request.service_id))
        return admin_pb2.ListSmsSendersResponse(senders=[_sms_sender(r) for r in rows])

    def UpdateSmsSender(
        self, request: admin_pb2.UpdateSmsSenderRequest, context: grpc.ServicerContext
    ) -> admin_pb2.SmsSender:
        return _sms_sender(
            self._call(
                context,
                lambda: self._senders.update_sms_sender(
                    request.service_id,
                    request.sms_sender_id,
                    request.sms_sender if request.HasField("sms_sender") else None,
                    request.is_default if request.HasField("is_default") else None,
                ),
            )
        )

    def AddReplyTo(self, request: admin_pb2.AddReplyToRequest, context: grpc.ServicerContext) -> admin_pb2.ReplyTo:
        return _reply_to(
            self._call(
                context,
                lambda: self._senders.add_reply_to(request.service_id, request.email_address, request.is_default),
            )
        )

    def ListReplyTos(
        self, request: admin_pb2.ListSendersRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListReplyTosResponse:
        rows = self._call(context, lambda: self._senders.list_reply_tos(request.service_id))
        return admin_pb2.ListReplyTosResponse(reply_tos=[_reply_to(r) for r in rows])

    def UpdateReplyTo(
        self, request: admin_pb2.UpdateReplyToRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ReplyTo:
        return _reply_to(
            self._call(
                context,
                lambda: self._senders.update_reply_to(
                    request.service_id,
                    request.email_reply_to_id,
                    request.email_address if request.HasField("email_address") else None,
                    request.is_default if request.HasField("is_default") else None,
                ),
            )
        )

    def SetInboundNumber(
        self, request: admin_pb2.SetInboundNumberRequest, context: grpc.ServicerContext
    ) -> admin_pb2.InboundNumber:
        row, sender_id = self._call(
            context, lambda: self._senders.set_inbound_number(request.service_id, request.number)
        )
        return admin_pb2.InboundNumber(
            number=row.number, service_id=row.service_id, sms_sender_id=sender_id, created_at=timestamp(row.created_at)
        )


def _service(details: ServiceDetails) -> admin_pb2.Service:
    s = details.service
    return admin_pb2.Service(
        id=s.id,
        name=s.name,
        active=s.active,
        research_mode=s.research_mode,
        restricted=s.restricted,
        prefix_sms=s.prefix_sms,
        can_send_international_sms=s.can_send_international_sms,
        sms_sender=s.sms_sender,
        email_from=s.email_from,
        rate_limit=s.rate_limit,
        sms_message_limit=s.sms_message_limit,
        email_message_limit=s.email_message_limit,
        international_sms_message_limit=s.international_sms_message_limit,
        team_members=[_member(m) for m in details.team],
        guest_list=details.guest_list,
        sms_data_retention_days=details.retention_days["sms"],
        email_data_retention_days=details.retention_days["email"],
    )


def _callback(row: services_db.CallbackRow) -> admin_pb2.DeliveryCallback:
    """Never the bearer token nor the signing secret."""
    return admin_pb2.DeliveryCallback(service_id=row.service_id, url=row.url, updated_at=timestamp(row.updated_at))


def _sms_sender(row: senders_db.SmsSenderRow) -> admin_pb2.SmsSender:
    return admin_pb2.SmsSender(
        id=row.id,
        service_id=row.service_id,
        sms_sender=row.sms_sender,
        is_default=row.is_default,
        is_inbound_number=row.is_inbound_number,
        created_at=timestamp(row.created_at),
        updated_at=timestamp(row.updated_at),
    )


def _reply_to(row: senders_db.ReplyToRow) -> admin_pb2.ReplyTo:
    return admin_pb2.ReplyTo(
        id=row.id,
        service_id=row.service_id,
        email_address=row.email_address,
        is_default=row.is_default,
        created_at=timestamp(row.created_at),
        updated_at=timestamp(row.updated_at),
    )


def _member(member: services_db.TeamMemberRow) -> admin_pb2.TeamMember:
    return admin_pb2.TeamMember(
        id=member.id, mobile_number=member.mobile_number or "", email_address=member.email_address or ""
    )


def _api_key(key: services_db.ApiKeyInfo) -> admin_pb2.ApiKey:
    return admin_pb2.ApiKey(
        id=key.id,
        name=key.name,
        key_type=key.key_type,
        created_at=timestamp(key.created_at),
        revoked_at=timestamp(key.revoked_at),
    )


def _template(t: services_db.TemplateRow) -> admin_pb2.TemplateRecord:
    return admin_pb2.TemplateRecord(
        id=t.id,
        name=t.name,
        template_type=t.template_type,
        version=t.version,
        archived=t.archived,
        subject=t.subject or "",
        content=t.content,
    )
