"""`herald services|keys|templates|team|guest-list|platform|senders|inbound-number|service-callbacks ...`:
managing services through the Admin API.

Every command calls ingest's herald.v1.Admin with an admin token signed with HERALD_ADMIN_SECRET. Output is
a readable table, or with --json one JSON document for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from herald.domain.apikeys import create_admin_token
from herald.grpcsrv.errors import field_violations
from herald.settings import Settings
from herald.v1 import admin_pb2, admin_pb2_grpc

COMMANDS = (
    "services",
    "keys",
    "templates",
    "team",
    "guest-list",
    "platform",
    "senders",
    "inbound-number",
    "service-callbacks",  # `herald callbacks` runs the callbacks service
)

_SERVICE_FLAGS = {
    "restricted": "trial mode: only the team and the guest list may be sent to",
    "research_mode": "simulated delivery, nothing reaches a provider",
    "prefix_sms": "texts start with the service's name",
    "can_send_international_sms": "texts to numbers outside the UK",
}
_SERVICE_LIMITS = {
    "rate_limit": "requests per 60 seconds, per key type",
    "sms_message_limit": "texts a day",
    "email_message_limit": "emails a day",
    "international_sms_message_limit": "international texts a day",
    "sms_data_retention_days": "days texts are kept (3 to 90)",
    "email_data_retention_days": "days emails are kept (3 to 90)",
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds the Admin API's commands to `herald`'s subcommands."""
    services = _group(sub, "services", "create, change and show services")
    create = _command(services, "create", "a new service, in trial mode unless --live")
    create.add_argument("name")
    create.add_argument("--id", default="", help="a given id (default: a new one)")
    create.add_argument("--live", action="store_true", help="not restricted from the start")
    create.add_argument("--research-mode", action="store_true")
    create.add_argument("--prefix-sms", action="store_true")
    create.add_argument("--international", action="store_true", help="may text numbers outside the UK")
    create.add_argument("--sms-sender", default="")
    create.add_argument("--email-from", default="")
    update = _command(services, "update", "change only what is given")
    update.add_argument("service_id")
    update.add_argument("--name")
    for flag, meaning in _SERVICE_FLAGS.items():
        update.add_argument(f"--{flag.replace('_', '-')}", action=argparse.BooleanOptionalAction, help=meaning)
    for limit, meaning in _SERVICE_LIMITS.items():
        update.add_argument(f"--{limit.replace('_', '-')}", type=int, help=meaning)
    _command(services, "show", "a service, its team and its guest list").add_argument("service_id")

    keys = _group(sub, "keys", "API keys")
    key = _command(keys, "create", "a new key, shown once")
    key.add_argument("service_id")
    key.add_argument("--name", required=True)
    key.add_argument("--type", dest="key_type", choices=["normal", "team", "test"], default="normal")
    _command(keys, "list", "a service's keys").add_argument("service_id")
    revoke = _command(keys, "revoke", "refused by ingest once its cache expires (HERALD_CACHE_SECONDS)")
    revoke.add_argument("service_id")
    revoke.add_argument("key_id")

    templates = _group(sub, "templates", "templates")
    template = _command(templates, "create", "a new template, version 1")
    template.add_argument("service_id")
    template.add_argument("--name", required=True)
    template.add_argument("--type", dest="template_type", choices=["sms", "email"], required=True)
    template.add_argument("--content", required=True)
    template.add_argument("--subject", default="")
    edit = _command(templates, "update", "a new version")
    edit.add_argument("template_id")
    edit.add_argument("--content", required=True)
    edit.add_argument("--subject", default="")
    _command(templates, "archive", "sends with it are refused; its versions stay").add_argument("template_id")
    listing = _command(templates, "list", "a service's templates")
    listing.add_argument("service_id")
    listing.add_argument("--all", action="store_true", help="archived ones too")

    team = _group(sub, "team", "who a restricted service or a team key may send to")
    add = _command(team, "add", "a team member, by mobile number and/or email address")
    add.add_argument("service_id")
    add.add_argument("--mobile", default="")
    add.add_argument("--email", default="")
    remove = _command(team, "remove", "a team member")
    remove.add_argument("service_id")
    remove.add_argument("member_id")

    guests = _group(sub, "guest-list", "a restricted service's other recipients")
    replace = _command(guests, "set", "replace the guest list (no recipients: empty it)")
    replace.add_argument("service_id")
    replace.add_argument("recipients", nargs="*", help="mobile numbers and email addresses")

    platform = _group(sub, "platform", "the platform's own messages, sent by its built-in service")
    code = _command(platform, "verify-code", "a sign-in code by text")
    code.add_argument("--to", required=True)
    code.add_argument("--code", required=True)
    verify = _command(platform, "email-verification", "confirm an email address")
    verify.add_argument("--to", required=True)
    verify.add_argument("--name", required=True)
    verify.add_argument("--url", required=True)
    invite = _command(platform, "invitation", "an invitation to join a service's team")
    invite.add_argument("service_id")
    invite.add_argument("--to", required=True)
    invite.add_argument("--from-user", required=True)
    invite.add_argument("--url", required=True)
    reset = _command(platform, "password-reset", "a password reset link")
    reset.add_argument("--to", required=True)
    reset.add_argument("--user-name", required=True)
    reset.add_argument("--url", required=True)

    senders = _group(sub, "senders", "a service's SMS senders and email reply-to addresses, one default each")
    for kind, value, help_text in (
        ("sms", "sms_sender", "SMS senders: a phone number, or 3 to 11 letters, digits and spaces"),
        ("reply-to", "email_address", "email reply-to addresses"),
    ):
        verbs = senders.add_parser(kind, help=help_text).add_subparsers(dest="verb", required=True)
        add_sender = _command(verbs, "add", "a new one (the first reply-to address is the default)")
        add_sender.add_argument("service_id")
        add_sender.add_argument(value)
        add_sender.add_argument("--default", action="store_true", help="make it the default")
        _command(verbs, "list", "the default first").add_argument("service_id")
        change = _command(verbs, "update", "change only what is given")
        change.add_argument("service_id")
        change.add_argument("sender_id")
        change.add_argument(f"--{value.replace('_', '-')}", dest=value)
        change.add_argument("--default", action="store_true", help="make it the default")

    inbound = _group(sub, "inbound-number", "the number a service receives texts on")
    number = _command(inbound, "set", "also makes it the service's default SMS sender")
    number.add_argument("service_id")
    number.add_argument("number")

    callbacks = _group(sub, "service-callbacks", "where a service's delivery statuses and received texts are POSTed")
    for kind, help_text in _CALLBACK_KINDS.items():
        verbs = callbacks.add_parser(kind, help=help_text).add_subparsers(dest="verb", required=True)
        register_callback = _command(verbs, "set", "register or replace it; its new signing secret is shown once")
        register_callback.add_argument("service_id")
        register_callback.add_argument("url", help="https (http only in local mode)")
        register_callback.add_argument("--bearer-token", required=True, help="at least 10 characters")
        _command(verbs, "show", "its URL (never the token)").add_argument("service_id")
        _command(verbs, "remove", "stop sending them").add_argument("service_id")


def _group(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    return sub.add_parser(name, help=help_text).add_subparsers(dest="action", required=True)


def _command(
    actions: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
) -> argparse.ArgumentParser:
    parser = actions.add_parser(name, help=help_text)
    parser.add_argument("--target", help="ingest address (default: HERALD_INGEST_ADDRESS)")
    parser.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    return parser


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Runs one command; 0 on success, 1 when the Admin API refused it (the reason on stderr)."""
    with grpc.insecure_channel(args.target or settings.ingest_address) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        token = create_admin_token(settings.admin_secret)
        metadata = [("authorization", f"Bearer {token}")]

        def call(rpc: str, request: Message) -> Any:
            return getattr(stub, rpc)(request, metadata=metadata, timeout=30)

        try:
            answer, show = _COMMANDS[(args.command, args.action)](args, call)
        except grpc.RpcError as exc:
            fields = "".join(f"\n  {field}: {description}" for field, description in field_violations(exc))
            print(f"refused: {exc.code().name}: {exc.details()}{fields}", file=sys.stderr)
            return 1
    if args.json:
        print(
            json.dumps(
                MessageToDict(answer, preserving_proto_field_name=True, always_print_fields_with_no_presence=True),
                indent=2,
                ensure_ascii=False,
            )
        )
    else:
        show(answer)
    return 0


Call = Callable[[str, Message], Any]
Show = Callable[[Any], None]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    for row in [list(headers), ["-" * w for w in widths], *cells]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def pairs(rows: Sequence[tuple[str, object]]) -> None:
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")


def _show_service(service: admin_pb2.Service) -> None:
    pairs(
        [
            ("id", service.id),
            ("name", service.name),
            ("restricted (trial mode)", service.restricted),
            ("research mode", service.research_mode),
            ("prefix texts", service.prefix_sms),
            ("international texts", service.can_send_international_sms),
            ("sms sender", service.sms_sender),
            ("email from", service.email_from),
            ("rate limit (per 60 s)", f"{service.rate_limit:,}"),
            ("texts a day", f"{service.sms_message_limit:,}"),
            ("emails a day", f"{service.email_message_limit:,}"),
            ("international texts a day", f"{service.international_sms_message_limit:,}"),
            ("texts kept (days)", service.sms_data_retention_days),
            ("emails kept (days)", service.email_data_retention_days),
        ]
    )
    print(f"\nteam ({len(service.team_members)})")
    table(["id", "mobile", "email"], [(m.id, m.mobile_number, m.email_address) for m in service.team_members])
    print(f"\nguest list ({len(service.guest_list)})")
    for recipient in service.guest_list:
        print(f"  {recipient}")


def _show_member(member: admin_pb2.TeamMember) -> None:
    table(["id", "mobile", "email"], [(member.id, member.mobile_number, member.email_address)])


def _show_keys(keys: Sequence[admin_pb2.ApiKey]) -> None:
    table(
        ["id", "name", "type", "created", "revoked"],
        [
            (
                k.id,
                k.name,
                k.key_type,
                k.created_at.ToDatetime().isoformat(timespec="seconds"),
                k.revoked_at.ToDatetime().isoformat(timespec="seconds") if k.HasField("revoked_at") else "",
            )
            for k in keys
        ],
    )


def _show_templates(templates: Sequence[admin_pb2.TemplateRecord]) -> None:
    table(
        ["id", "name", "type", "version", "archived"],
        [(t.id, t.name, t.template_type, t.version, "yes" if t.archived else "") for t in templates],
    )


def _services_create(args: argparse.Namespace, call: Call) -> tuple[Message, Show]:
    request = admin_pb2.CreateServiceRequest(
        name=args.name,
        id=args.id,
        restricted=not args.live,
        research_mode=args.research_mode,
        prefix_sms=args.prefix_sms,
        can_send_international_sms=args.international,
        sms_sender=args.sms_sender,
        email_from=args.email_from,
    )
    answer = call("CreateService", request)
    return answer, lambda a: print(f"service {a.id} ({'live' if args.live else 'trial mode'})")


def _services_update(args: argparse.Namespace, call: Call) -> tuple[Message, Show]:
    request = admin_pb2.UpdateServiceRequest(service_id=args.service_id)
    if args.name is not None:
        request.name = args.name
    for field in (*_SERVICE_FLAGS, *_SERVICE_LIMITS):
        if getattr(args, field) is not None:
            setattr(request, field, getattr(args, field))
    return call("UpdateService", request), _show_service


def _services_show(args: argparse.Namespace, call: Call) -> tuple[Message, Show]:
    return call("GetService", admin_pb2.GetServiceRequest(service_id=args.service_id)), _show_service


def _keys_create(args: argparse.Namespace, call: Call) -> tuple[Message, Show]:
    request = admin_pb2.CreateApiKeyRequest(service_id=args.service_id, name=args.name, key_type=args.key_type)
    answer = call("CreateApiKey", request)
    return answer, lambda a: print(f"key {a.id} (shown once, keep it now):\n{a.key}")


def _keys_list(args: argparse.Namespace, call: Call) -> tuple[Message, Show]:
    answer = call("ListApiKeys", admin_pb2.ListApiKeysRequest(service_id=args.service_id))
    return answer, lambda a: _show_keys(a.keys)


def _keys_revoke(args: argparse.Namespace, call: Call) -> tuple[Message, Show]:
    answer = call("RevokeApiKey", admin_pb2.RevokeApiKeyRequest(service_id=args.service_id, key_id=args.key_id))
    return answer, lambda a: _show_keys([a])


def _templates_create(args: argparse.Namespace, call: Call) -> tuple[Message, Show]:
    request = admin_pb2.CreateTemplateRequest(
        service_id=args.service_id,
        name=args.name,
        template_type=args.template_type,
        content=args.content,
        subject=args.subject,
    )
    answer = call("CreateTemplate", request)
    return answer, lambda a: print(f"template {a.id} version {a.version}")


def _templates_update(args: argparse.Namespace, call: Call) -> tuple[Message, Show]:
    request = admin_pb2.UpdateTemplateRequest(template_id=args.template_id, content=args.content, subject=args.subject)
    answer = call("UpdateTemplate", request)
    return answer, lambda a: print(f"template {a.id} version {a.version}")


def _templates_archive(args: argparse.Namespace, call: Call) -> tuple[Message, Show]:
    answer = call("ArchiveTemplate", admin_pb2.ArchiveTemplateRequest(template_id=args.template_id))
    return answer, lambda a: _show_templates([a])


def _templates_list(args: argparse.Namespace, call: Call) -> tuple[Message, Show]:
    request = admin_pb2.ListTemplateRecordsRequest(service_id=args.service_id, include_archived=args.all)
    return call("ListTemplates", request), lambda a: _show_templates(a.templates)


def _team_add(args: argparse.Namespace, call: Call) -> tuple[Message, Show]:
    request = admin_pb2.AddTeamMemberRequest(
        service_id=args.service_id, mobile_number=args.mobile, email_address=args.email
    )
    return call("AddTeamMember", request), _show_member


def _team_remove(args: argparse.Namespace, call: Call) -> tuple[Message, Show]:
    request = admin_pb2.RemoveTeamMemberRequest(service_id=args.service_id, member_id=args.member_id)
    return call("RemoveTeamMember", request), _show_member


def _guest_list_set(args: argparse.Namespace, call: Call) -> tuple[Message, Show]:
    request = admin_pb2.SetGuestListRequest(service_id=args.service_id, recipients=args.recipients)
    answer = call("SetGuestList", request)
    return answer, lambda a: print("\n".join([f"guest list ({len(a.recipients)})", *a.recipients]))


def _sent(answer: admin_pb2.PlatformMessageResponse) -> None:
    print(f"accepted {answer.id}")


def _platform_verify_code(args: argparse.Namespace, call: Call) -> tuple[Message, Show]:
    return call("SendVerifyCode", admin_pb2.SendVerifyCodeRequest(mobile_number=args.to, code=args.code)), _sent


def _platform_email_verification(args: argparse.Namespace, call: Call) -> tuple[Message, Show]:
    request = admin_pb2.SendEmailVerificationRequest(email_address=args.to, name=args.name, url=args.url)
    return call("SendEmailVerification", request), _sent


def _platform_invitation(args: argparse.Namespace, call: Call) -> tuple[Message, Show]:
    request = admin_pb2.SendInvitationRequest(
        service_id=args.service_id, email_address=args.to, from_user_name=args.from_user, url=args.url
    )
    return call("SendInvitation", request), _sent


def _platform_password_reset(args: argparse.Namespace, call: Call) -> tuple[Message, Show]:
    request = admin_pb2.SendPasswordResetRequest(email_address=args.to, user_name=args.user_name, url=args.url)
    return call("SendPasswordReset", request), _sent


def _show_sms_senders(senders: Sequence[admin_pb2.SmsSender]) -> None:
    table(
        ["id", "sender", "default", "inbound number"],
        [(s.id, s.sms_sender, "yes" if s.is_default else "", "yes" if s.is_inbound_number else "") for s in senders],
    )


def _show_reply_tos(reply_tos: Sequence[admin_pb2.ReplyTo]) -> None:
    table(
        ["id", "email address", "default"],
        [(r.id, r.email_address, "yes" if r.is_default else "") for r in reply_tos],
    )


def _senders_sms(args: argparse.Namespace, call: Call) -> tuple[Message, Show]:
    if args.verb == "add":
        request = admin_pb2.AddSmsSenderRequest(
            service_id=args.service_id, sms_sender=args.sms_sender, is_default=args.default
        )
        return call("AddSmsSender", request), lambda a: _show_sms_senders([a])
    if args.verb == "list":
        answer = call("ListSmsSenders", admin_pb2.ListSendersRequest(service_id=args.service_id))
        return answer, lambda a: _show_sms_senders(a.senders)
    update = admin_pb2.UpdateSmsSenderRequest(service_id=args.service_id, sms_sender_id=args.sender_id)
    if args.sms_sender is not None:
        update.sms_sender = args.sms_sender
    if args.default:
        update.is_default = True
    return call("UpdateSmsSender", update), lambda a: _show_sms_senders([a])


def _senders_reply_to(args: argparse.Namespace, call: Call) -> tuple[Message, Show]:
    if args.verb == "add":
        request = admin_pb2.AddReplyToRequest(
            service_id=args.service_id, email_address=args.email_address, is_default=args.default
        )
        return call("AddReplyTo", request), lambda a: _show_reply_tos([a])
    if args.verb == "list":
        answer = call("ListReplyTos", admin_pb2.ListSendersRequest(service_id=args.service_id))
        return answer, lambda a: _show_reply_tos(a.reply_tos)
    update = admin_pb2.UpdateReplyToRequest(service_id=args.service_id, email_reply_to_id=args.sender_id)
    if args.email_address is not None:
        update.email_address = args.email_address
    if args.default:
        update.is_default = True
    return call("UpdateReplyTo", update), lambda a: _show_reply_tos([a])


def _inbound_number_set(args: argparse.Namespace, call: Call) -> tuple[Message, Show]:
    request = admin_pb2.SetInboundNumberRequest(service_id=args.service_id, number=args.number)
    answer = call("SetInboundNumber", request)
    return answer, lambda a: print(f"inbound number {a.number} for service {a.service_id} (sender {a.sms_sender_id})")


# `herald service-callbacks KIND`: the Admin RPCs' name part (SetDeliveryCallback, SetInboundCallback, ...).
_CALLBACK_KINDS = {
    "delivery": "delivery statuses of the service's notifications",
    "inbound": "text messages received on the service's inbound number",
}
_CALLBACK_RPCS = {"delivery": "DeliveryCallback", "inbound": "InboundCallback"}


def _show_callback(callback: admin_pb2.DeliveryCallback) -> None:
    pairs(
        [
            ("service", callback.service_id),
            ("url", callback.url),
            ("updated", callback.updated_at.ToDatetime().isoformat(timespec="seconds")),
        ]
    )


def _callbacks(args: argparse.Namespace, call: Call) -> tuple[Message, Show]:
    rpc = _CALLBACK_RPCS[args.action]
    if args.verb == "set":
        request = admin_pb2.SetDeliveryCallbackRequest(
            service_id=args.service_id, url=args.url, bearer_token=args.bearer_token
        )

        def show_new(answer: admin_pb2.SetDeliveryCallbackResponse) -> None:
            _show_callback(answer.callback)
            print(f"signing secret (shown once): {answer.signing_secret}")

        return call(f"Set{rpc}", request), show_new
    get = admin_pb2.GetDeliveryCallbackRequest(service_id=args.service_id)
    if args.verb == "show":
        return call(f"Get{rpc}", get), _show_callback
    return call(f"Remove{rpc}", get), lambda a: print(f"removed: {a.url}")


_COMMANDS: dict[tuple[str, str], Callable[[argparse.Namespace, Call], tuple[Message, Show]]] = {
    ("services", "create"): _services_create,
    ("services", "update"): _services_update,
    ("services", "show"): _services_show,
    ("keys", "create"): _keys_create,
    ("keys", "list"): _keys_list,
    ("keys", "revoke"): _keys_revoke,
    ("templates", "create"): _templates_create,
    ("templates", "update"): _templates_update,
    ("templates", "archive"): _templates_archive,
    ("templates", "list"): _templates_list,
    ("team", "add"): _team_add,
    ("team", "remove"): _team_remove,
    ("guest-list", "set"): _guest_list_set,
    ("platform", "verify-code"): _platform_verify_code,
    ("platform", "email-verification"): _platform_email_verification,
    ("platform", "invitation"): _platform_invitation,
    ("platform", "password-reset"): _platform_password_reset,
    ("senders", "sms"): _senders_sms,
    ("senders", "reply-to"): _senders_reply_to,
    ("inbound-number", "set"): _inbound_number_set,
    ("service-callbacks", "delivery"): _callbacks,
    ("service-callbacks", "inbound"): _callbacks,
}
