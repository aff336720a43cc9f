"""Notify's v2 response bodies, built from Herald's protobuf answers. `root` is the request's URL root
(scheme, host and a trailing slash), from which every `uri` is made absolute, as Notify makes them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from google.protobuf.timestamp_pb2 import Timestamp

from herald.v1 import ingest_pb2, reads_pb2
from herald.v1.notifications_pb2 import Notification, NotificationType

TYPE_NAMES = {NotificationType.SMS: "sms", NotificationType.EMAIL: "email"}


def timestamp(ts: Timestamp, present: bool) -> str | None:
    """Notify's format, %Y-%m-%dT%H:%M:%S.%fZ; None for a time that is not set."""
    if not present:
        return None
    return ts.ToDatetime().strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def sent(
    answer: ingest_pb2.SendResponse, root: str, service_id: str, one_click_unsubscribe_url: str | None = None
) -> dict[str, Any]:
    """The 201 of POST /v2/notifications/sms and /email (Notify's create_response)."""
    body: dict[str, Any] = {
        "id": answer.id,
        "reference": answer.reference or None,
        "uri": f"{root}v2/notifications/{answer.id}",
        "template": {
            "id": answer.template.id,
            "version": answer.template.version,
            "uri": f"{root}services/{service_id}/templates/{answer.template.id}",
        },
        "scheduled_for": timestamp(answer.scheduled_for, answer.HasField("scheduled_for")),
    }
    if answer.from_email:
        body["content"] = {
            "from_email": answer.from_email,
            "body": answer.body,
            "subject": answer.subject,
            "one_click_unsubscribe_url": one_click_unsubscribe_url,
        }
        body["sanitised_content"] = {
            key: {"unsanitised": value.unsanitised, "sanitised": value.sanitised}
            for key, value in answer.sanitised_content.items()
        }
    else:
        body["content"] = {"from_number": answer.from_number, "body": answer.body}
    return body


def notification(n: Notification, root: str) -> dict[str, Any]:
    """Notify's Notification.serialize for an SMS or an email (no letter fields have values)."""
    is_sms = n.type == NotificationType.SMS
    return {
        "id": n.id,
        "reference": n.reference or None,
        "email_address": None if is_sms else n.email_address,
        "phone_number": n.phone_number if is_sms else None,
        "line_1": None,
        "line_2": None,
        "line_3": None,
        "line_4": None,
        "line_5": None,
        "line_6": None,
        "postcode": None,
        "type": TYPE_NAMES.get(n.type, "sms"),
        "status": n.status,
        "template": {
            "id": n.template.id,
            "version": n.template.version,
            "uri": f"{root}v2/template/{n.template.id}/version/{n.template.version}",
        },
        "body": n.body,
        "subject": None if is_sms else n.subject,
        "created_at": timestamp(n.created_at, n.HasField("created_at")),
        "created_by_name": None,  # set by Notify for one-off sends from its web app; Herald has none
        "sent_at": timestamp(n.sent_at, n.HasField("sent_at")),
        "completed_at": timestamp(n.completed_at, n.HasField("completed_at")),
        "scheduled_for": timestamp(n.scheduled_for, n.HasField("scheduled_for")),
        "postage": None,
        "one_click_unsubscribe_url": n.one_click_unsubscribe_url or None,
    }


def notification_with_cost(listed: reads_pb2.ListedNotification, root: str) -> dict[str, Any]:
    """GET /v2/notifications/{id}: Notify's serialize_with_cost_data."""
    body = notification(listed.notification, root)
    n = listed.notification
    if not listed.is_cost_data_ready:
        body.update(cost_details={}, cost_in_pounds=None, is_cost_data_ready=False)
    elif n.type == NotificationType.SMS:
        body["cost_details"] = {
            "billable_sms_fragments": n.billable_units,
            "international_rate_multiplier": listed.rate_multiplier,
            "sms_rate": listed.sms_rate,
        }
        body.update(cost_in_pounds=listed.cost_in_pounds, is_cost_data_ready=True)
    else:
        body.update(cost_details={}, cost_in_pounds=0.0, is_cost_data_ready=True)
    return body


def template(t: reads_pb2.Template) -> dict[str, Any]:
    """Notify's TemplateBase.serialize_for_v2."""
    is_sms = t.type == NotificationType.SMS
    return {
        "id": t.id,
        "type": TYPE_NAMES.get(t.type, "sms"),
        "created_at": timestamp(t.created_at, t.HasField("created_at")),
        "updated_at": timestamp(t.updated_at, t.HasField("updated_at")),
        "created_by": "",  # Herald records no template authors (Notify: the author's email address)
        "version": t.version,
        "body": t.body,
        "subject": None if is_sms else t.subject,
        "name": t.name,
        "personalisation": {name: {"required": True} for name in t.placeholders},
        "postage": None,
        "letter_contact_block": None,
    }


def preview(p: ingest_pb2.TemplatePreview) -> dict[str, Any]:
    is_sms = p.type == NotificationType.SMS
    return {
        "id": p.id,
        "type": TYPE_NAMES.get(p.type, "sms"),
        "version": p.version,
        "body": p.body,
        "html": None if is_sms else p.html,
        "subject": None if is_sms else p.subject,
        "postage": None,
    }


def page_links(base: str, query: Sequence[tuple[str, str]], last_id: str | None) -> dict[str, str]:
    """`current` repeats the request; `next` asks for what is older than the page's last notification.
    older_than comes first in `next`: Notify's clients take the first UUID of the link."""
    links = {"current": f"{base}?{urlencode(query)}" if query else base}
    if last_id is not None:
        rest = [(key, value) for key, value in query if key != "older_than"]
        links["next"] = f"{base}?{urlencode([('older_than', last_id), *rest])}"
    return links


def received_text(t: reads_pb2.ReceivedText) -> dict[str, Any]:
    """Notify's InboundSms.serialize."""
    return {
        "id": t.id,
        "created_at": timestamp(t.created_at, True),
        "service_id": t.service_id,
        "notify_number": t.notify_number,
        "user_number": t.user_number,
        "content": t.content,
    }
