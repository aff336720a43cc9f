"""gRPC entrypoint for setting services up (the Admin service, served beside Ingest)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import grpc

from herald.grpcsrv.errors import statuses_for_errors
from herald.service_layer.admin import Admin
from herald.service_layer.auth import Authenticator
from herald.v1 import admin_pb2, admin_pb2_grpc

T = TypeVar("T")


class AdminServicer(admin_pb2_grpc.AdminServicer):
    def __init__(self, authenticator: Authenticator, admin: Admin) -> None:
        self._auth = authenticator
        self._admin = admin

    def _call(self, context: grpc.ServicerContext, work: Callable[[], T]) -> T:
        with statuses_for_errors(context):
            self._auth.authenticate_admin(dict(context.invocation_metadata()).get("authorization"))
            return work()
        raise AssertionError("unreachable")

    def CreateService(
        self, request: admin_pb2.CreateServiceRequest, context: grpc.ServicerContext
    ) -> admin_pb2.CreateServiceResponse:
        flags: dict[str, object] = {
            "research_mode": request.research_mode,
            "prefix_sms": request.prefix_sms,
            "can_send_international_sms": request.can_send_international_sms,
        }
        if request.sms_sender:
            flags["sms_sender"] = request.sms_sender
        if request.email_from:
            flags["email_from"] = request.email_from
        service_id = self._call(context, lambda: self._admin.create_service(request.name, **flags))
        return admin_pb2.CreateServiceResponse(id=service_id)

    def CreateApiKey(
        self, request: admin_pb2.CreateApiKeyRequest, context: grpc.ServicerContext
    ) -> admin_pb2.CreateApiKeyResponse:
        key = self._call(
            context, lambda: self._admin.create_api_key(request.service_id, request.name, request.key_type)
        )
        return admin_pb2.CreateApiKeyResponse(key=key)

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
