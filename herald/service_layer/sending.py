"""Accepting a send: validate, render, and hand the message to the broker before answering.

Nothing is written to the database here. The db dispatcher stores the message within milliseconds;
until then GetNotification answers NOT_FOUND for the new id (documented for API users).

Accepted means storable: every field that reaches the queue has been checked to be something the
database will take (canonical ids, no NUL or lone surrogates, bounded personalisation), so no accepted
message is ever dead-lettered for its content.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

import orjson
from google.protobuf.struct_pb2 import Struct
from sqlalchemy import Engine

from herald import metrics
from herald.db import notifications as notifications_db
from herald.db import senders as senders_db
from herald.db import services as services_db
from herald.db.errors import is_transient
from herald.domain import inputs, international, limits, recipients, senders, templates
from herald.domain.ids import random_uuids
from herald.queues.codec import KEY_TYPES, TYPE_NAMES
from herald.queues.topology import DB_QUEUE
from herald.service_layer.auth import Caller
from herald.service_layer.errors import InvalidRequest
from herald.service_layer.rules import Checks, ServiceRules
from herald.v1.notifications_pb2 import NotificationType
from herald.v1.queue_pb2 import NotificationMessage

MAX_REFERENCE = 1000
# The values made per message (SendCommand, Rendered, Accepted) are plain slots dataclasses, not frozen:
# a frozen one sets each field through object.__setattr__, four times the cost, and a batch makes 1,000.
# Plain ints: a protobuf enum's attribute lookup runs Python code on every use, and a batch makes 1,000.
_SMS: int = NotificationType.SMS
_EMAIL: int = NotificationType.EMAIL


@dataclass(slots=True)
class SendCommand:
    type: NotificationType.ValueType
    to: str
    template_id: str
    # A plain mapping or the request's google.protobuf.Struct: either is made plain (and checked) once.
    personalisation: Mapping[str, Any] | Struct = field(default_factory=dict)
    reference: str = ""
    sanitise_content_for: Sequence[str] = ()
    # The caller's Idempotency-Key: the notification id is derived from it, so a repeat is the same
    # notification (stored once, handed off once).
    idempotency_key: str = ""
    sms_sender_id: str = ""  # SMS: one of the service's senders; empty: its default
    email_reply_to_id: str = ""  # email: one of the service's reply-to addresses; empty: its default
    unsubscribe_url: str = ""  # email: the one-click unsubscribe link
    scheduled_for: datetime | None = None  # hand off then, not at once


MAX_IDEMPOTENCY_KEY = 255
_IDEMPOTENCY_NAMESPACE = uuid.UUID("5b0e6b0e-8d8f-4a36-9a53-6f1b1b2a7c11")


def notification_id(service_id: str, idempotency_key: str) -> str:
    """A fresh id, or the one a service's idempotency key always gives."""
    if not idempotency_key:
        return str(uuid.uuid4())
    return str(uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{service_id}\n{idempotency_key}"))


# The IETF Idempotency-Key draft's rule (and Knock's): a key's repeat must be the same request.
KEY_REUSED = "This idempotency-key was already used for a different request"


def fingerprint(command: SendCommand, to: str, template_id: str, personalisation: Mapping[str, Any]) -> str:
    """A keyed send's request as a short hash, made after validation: the same request gives the same hash
    (the recipient normalised, ids lower case, personalisation in any key order), any other a different one."""
    request = (
        command.type,
        to,
        template_id,
        personalisation,
        command.reference,
        command.sms_sender_id.lower(),
        command.email_reply_to_id.lower(),
        command.unsubscribe_url,
        command.scheduled_for,
        sorted(command.sanitise_content_for),  # it changes an email's body
    )
    return hashlib.blake2b(orjson.dumps(request, option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest()


def _reused(call: _Call, message: NotificationMessage) -> bool:
    """Whether a keyed message's key was taken by another request: stored with one, or accepted earlier in
    the call for one. A row stored before request hashes were kept (None) takes any."""
    if not message.request_hash:
        return False
    return call.request_hashes.get(message.id, message.request_hash) not in (None, message.request_hash)


def _runs(prepared: list[tuple[int, NotificationMessage]]) -> Iterator[list[tuple[int, NotificationMessage]]]:
    """Consecutive messages of one type with no keyed id twice."""
    run: list[tuple[int, NotificationMessage]] = []
    ids: set[str] = set()
    for entry in prepared:
        message = entry[1]
        if run and (message.type != run[0][1].type or (message.request_hash and message.id in ids)):
            yield run
            run, ids = [], set()
        run.append(entry)
        if message.request_hash:
            ids.add(message.id)
    if run:
        yield run


def _checked_key(key: str) -> str:
    if len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise InvalidRequest.one(
            "idempotency-key", f"idempotency-key must be at most {MAX_IDEMPOTENCY_KEY} printable characters"
        )
    return key


@dataclass(slots=True)
class Rendered:
    body: str  # as the caller sees it: no service-name prefix
    billed_body: str  # as the provider gets it
    subject: str
    html: str
    fragment_count: int  # SMS billable units; 0 for email
    sanitised_content: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    text: str = ""  # an email's plain-text part, made with its HTML part


@dataclass(frozen=True, slots=True)
class Preview:
    template: services_db.TemplateRow
    rendered: Rendered


@dataclass(slots=True)
class Accepted:
    id: str
    reference: str
    template_id: str
    template_version: int
    body: str
    subject: str
    from_number: str
    from_email: str
    sanitised_content: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    scheduled_for: datetime | None = None


class Publish(Protocol):
    def __call__(self, routing_key: str, item: bytes, timeout: float = ...) -> None: ...


class PublishMany(Protocol):
    def __call__(self, routing_key: str, items: Sequence[bytes], timeout: float = ...) -> None: ...


# How long a caller without a deadline is given for its broker confirm.
DEFAULT_PUBLISH_TIMEOUT = 15.0
MAX_BATCH = 1000


def _one_by_one(publish: Publish) -> PublishMany:
    def publish_many(routing_key: str, items: Sequence[bytes], timeout: float = DEFAULT_PUBLISH_TIMEOUT) -> None:
        for item in items:
            publish(routing_key, item, timeout)

    return publish_many


@dataclass(frozen=True, slots=True)
class ItemRefused:
    """A batch item's own error: what the item would have got alone."""

    code: str  # a gRPC status code name
    field: str
    message: str

    @classmethod
    def of(cls, error: InvalidRequest | limits.LimitExceeded) -> ItemRefused:
        if isinstance(error, InvalidRequest):
            field, message = error.violations[0]
            return cls("INVALID_ARGUMENT", field, message)
        return cls("RESOURCE_EXHAUSTED", "", error.message)


class _Call:
    """What one call's messages share, worked out once: a batch's thousand messages are one caller's, with
    the same rules, mostly the same template, and one acceptance time (stamped when the call began)."""

    __slots__ = (
        "_checks",
        "_fresh",
        "_rules",
        "_senders",
        "_templates",
        "accepted_at",
        "caller",
        "key_type",
        "request_hashes",
    )

    def __init__(self, caller: Caller, rules: ServiceRules | None, size: int = 1) -> None:
        """`size`: how many messages the call sends (a fresh id is made for each)."""
        self.caller = caller
        self._fresh = iter(random_uuids(size))
        self.key_type = KEY_TYPES[caller.key.key_type]
        self.accepted_at = divmod(time.time_ns(), 1_000_000_000)  # a protobuf Timestamp's seconds and nanos
        self._rules = rules
        self._checks: dict[int, Checks] = {}
        # What the call's items read, each read once: a template or its refusal, the service's senders.
        self._templates: dict[tuple[str, str], services_db.TemplateRow | InvalidRequest] = {}
        self._senders: senders_db.ServiceSenders | None = None
        # Keyed sends: the request hash each id's row was stored with (None: none), read once per call, and
        # those of the call's own keyed messages as the rules accept them.
        self.request_hashes: dict[str, str | None] = {}

    def fresh_id(self) -> str:
        return next(self._fresh, None) or str(uuid.uuid4())

    def checks(self, notification_type: NotificationType.ValueType) -> Checks:
        assert self._rules is not None
        checks = self._checks.get(notification_type)
        if checks is None:
            checks = self._checks[notification_type] = self._rules.checks(self.caller, notification_type)
        return checks

    def template(
        self, template_id: str, type_name: str, load: Callable[[Caller, str, str], services_db.TemplateRow]
    ) -> services_db.TemplateRow:
        """`load`'s answer, once per template and type in this call (a refusal is kept and raised again)."""
        found = self._templates.get((template_id, type_name))
        if found is None:
            try:
                found = load(self.caller, template_id, type_name)
            except InvalidRequest as refused:
                found = refused
            self._templates[(template_id, type_name)] = found
        if isinstance(found, InvalidRequest):
            raise InvalidRequest(found.violations)  # a new one: raising the kept one again grows its traceback
        return found

    def senders(self, load: Callable[[str], senders_db.ServiceSenders]) -> senders_db.ServiceSenders:
        if self._senders is None:
            self._senders = load(self.caller.service.id)
        return self._senders


class Sender:
    def __init__(
        self,
        engine: Engine,
        publish: Publish,
        email_domain: str,
        cache_seconds: float = 0.0,
        stale_seconds: float = 0.0,
        rules: ServiceRules | None = None,
        publish_many: PublishMany | None = None,
    ) -> None:
        self._engine = engine
        self._publish = publish
        # A batch's messages go out together (one broker message, one confirm) when the publisher can.
        self._publish_many = publish_many or _one_by_one(publish)
        self._rules = rules
        self._email_domain = email_domain
        self._templates: _Cache[services_db.TemplateRow] = _Cache("template", cache_seconds, stale_seconds)
        self._senders: _Cache[senders_db.ServiceSenders] = _Cache("senders", cache_seconds, stale_seconds)
        # One batch's preparation at a time: four threads interleaving theirs under the interpreter lock
        # took half as much CPU again per message as one after another (measured: 50 against 29 µs). What a
        # batch reads from the database is read before it takes its turn (_read_ahead), and it is counted
        # against the limits (Redis, perhaps) after.
        self._one_batch_at_a_time = threading.Lock()

    def send(self, caller: Caller, command: SendCommand, timeout: float | None = None) -> Accepted:
        """`timeout`: how long the caller waits (its deadline); the answer comes within it, and is true."""
        call = self._call(caller, (command,))
        message, accepted = self._prepare(call, command)
        if _reused(call, message):  # refused before the limits, so a refusal counts nothing
            raise InvalidRequest.one("idempotency-key", KEY_REUSED)
        if self._rules is not None:  # trial mode, team keys, rate and daily limits
            call.checks(command.type).check(message.to)
        self._publish(DB_QUEUE[command.type], message.SerializeToString(), timeout or DEFAULT_PUBLISH_TIMEOUT)
        metrics.incr("api.accepted", type=TYPE_NAMES[command.type], key_type=caller.key.key_type)
        return accepted

    def send_batch(
        self, caller: Caller, commands: Sequence[SendCommand], timeout: float | None = None
    ) -> list[Accepted | ItemRefused]:
        """Each command checked on its own; those accepted go to the broker together (one message per
        queue, one confirm) before any answer. Returns, in order, each one's Accepted or ItemRefused."""
        if len(commands) > MAX_BATCH:
            raise InvalidRequest.one("items", f"A batch holds at most {MAX_BATCH} messages, not {len(commands)}")
        deadline = time.monotonic() + (timeout or DEFAULT_PUBLISH_TIMEOUT)
        call = self._call(caller, commands)
        self._read_ahead(call, commands)  # a batch waiting on the database must not hold the others up
        with self._one_batch_at_a_time:
            results, prepared = self._prepare_batch(call, commands)
        queued = self._counted(call, results, prepared)  # outside the turn: the counter may wait on Redis
        for queue, bodies in queued.items():
            self._publish_many(queue, bodies, deadline - time.monotonic())
        accepted_by_type: dict[NotificationType.ValueType, int] = {}
        for command, result in zip(commands, results, strict=True):
            if isinstance(result, Accepted):
                accepted_by_type[command.type] = accepted_by_type.get(command.type, 0) + 1
        for type_, count in accepted_by_type.items():
            metrics.incr("api.accepted", count, type=TYPE_NAMES[type_], key_type=caller.key.key_type)
        return results

    def _read_ahead(self, call: _Call, commands: Sequence[SendCommand]) -> None:
        """What the call's items will read (templates, senders, the rules' guest list), read now, each once."""
        for template_id, type_ in {(c.template_id, c.type) for c in commands}:
            with contextlib.suppress(InvalidRequest):  # kept by the call, and given to each item that names it
                call.template(template_id, TYPE_NAMES[type_], self._template)
        if any(c.sms_sender_id or c.type == _EMAIL for c in commands):
            call.senders(self._service_senders)
        if self._rules is not None:
            for type_ in {c.type for c in commands}:
                call.checks(type_)

    def _prepare_batch(
        self, call: _Call, commands: Sequence[SendCommand]
    ) -> tuple[list[Accepted | ItemRefused], list[tuple[int, NotificationMessage]]]:
        """Each command's answer so far, and the messages of those checked and rendered, with their index."""
        results: list[Accepted | ItemRefused] = []
        prepared: list[tuple[int, NotificationMessage]] = []
        for index, command in enumerate(commands):
            try:
                message, accepted = self._prepare(call, command)
            except InvalidRequest as exc:
                results.append(ItemRefused.of(exc))
                continue
            prepared.append((index, message))
            results.append(accepted)
        return results, prepared

    def _counted(
        self, call: _Call, results: list[Accepted | ItemRefused], prepared: list[tuple[int, NotificationMessage]]
    ) -> dict[str, list[bytes]]:
        """The key check and the service's rules applied to the prepared messages in order, as if sent one
        after another: a run at a time, a run being of one type (the types share the rate limit) and naming
        no keyed id twice (a key is taken by the first of its requests the rules accept). The refused
        become their ItemRefused in `results`, the others the queued messages by queue."""
        queued: dict[str, list[bytes]] = {}
        for run in _runs(prepared):
            fresh = []
            for index, message in run:
                if _reused(call, message):  # refused before the limits, so a refusal counts nothing
                    results[index] = ItemRefused.of(InvalidRequest.one("idempotency-key", KEY_REUSED))
                else:
                    fresh.append((index, message))
            type_ = run[0][1].type
            if self._rules is not None:  # trial mode, team keys, rate and daily limits
                refusals = call.checks(type_).check_many([message.to for _, message in fresh])
            else:
                refusals = [None] * len(fresh)
            items = queued.setdefault(DB_QUEUE[type_], [])
            for (index, message), refused in zip(fresh, refusals, strict=True):
                if refused is not None:
                    results[index] = ItemRefused.of(refused)
                    continue
                items.append(message.SerializeToString())
                if message.request_hash:
                    call.request_hashes.setdefault(message.id, message.request_hash)
        return queued

    def job_row(self, caller: Caller, command: SendCommand, template: services_db.TemplateRow) -> NotificationMessage:
        """A CSV job's row as a single send's message: checked and rendered the same way, with the job's
        template version; the caller's rules apply only if this Sender has them (a job's processor has none:
        a job's limits are checked for the whole job)."""
        call = _Call(caller, self._rules)
        message = self._prepare(call, command, template)[0]
        if self._rules is not None:
            call.checks(command.type).check(message.to)
        return message

    def _call(self, caller: Caller, commands: Sequence[SendCommand]) -> _Call:
        """A call's shared values, with the request hashes stored for its keyed sends (one read)."""
        call = _Call(caller, self._rules, len(commands))
        keyed = [notification_id(caller.service.id, c.idempotency_key) for c in commands if c.idempotency_key]
        if keyed:
            call.request_hashes = self._stored_request_hashes(keyed)
        return call

    def _stored_request_hashes(self, ids: list[str]) -> dict[str, str | None]:
        """While the database is away none are known: those repeats go unchecked (counted), and the db
        dispatcher still sends only the row stored first."""
        try:
            with self._engine.connect() as conn:
                return notifications_db.request_hashes(conn, ids)
        except Exception as exc:
            if not is_transient(exc):
                raise
            metrics.incr("ingest.idempotency_unchecked", len(ids))
            return {}

    def template(self, caller: Caller, template_id: str) -> services_db.TemplateRow:
        """The current version of one of the caller's templates that is not archived, or InvalidRequest."""
        return self._template(caller, template_id, None)

    def _prepare(
        self, call: _Call, command: SendCommand, template: services_db.TemplateRow | None = None
    ) -> tuple[NotificationMessage, Accepted]:
        """Everything a send checks and renders, up to the message the broker will carry: all but the
        service's rules (trial mode, team keys, the limits), which the caller applies once it is ready."""
        caller, service = call.caller, call.caller.service
        # Notify's order: the request's shape (recipient, reference) before the template.
        if command.type == _SMS:
            to = self._validated(
                "phone_number",
                lambda: recipients.validate_phone_number(
                    command.to, allow_international=service.can_send_international_sms
                ),
            )
        else:
            to = self._validated("email_address", lambda: recipients.validate_email_address(command.to))
        if len(command.reference) > MAX_REFERENCE:
            raise InvalidRequest.one("reference", f"reference {command.reference[:20]}... is too long")
        if command.sms_sender_id or command.email_reply_to_id or command.unsubscribe_url or command.scheduled_for:
            _check_options(command)
        personalisation = _checked(lambda: _check_strings(command))
        key = _checked_key(command.idempotency_key) if command.idempotency_key else ""
        template = template or call.template(command.template_id, TYPE_NAMES[command.type], self._template)
        message = NotificationMessage(
            id=notification_id(service.id, key) if key else call.fresh_id(),
            service_id=service.id,
            template_id=template.id,
            template_version=template.version,
            type=command.type,
            to=to,
            reference=command.reference,
            key_type=call.key_type,
            api_key_id=caller.key.id,
            research_mode=service.research_mode,
            personalisation_json=orjson.dumps(personalisation).decode(),
        )
        # An email's HTML and text parts are made at its hand-off (templates.email_parts), if it has one.
        rendered = self._render(service, template, personalisation, command.sanitise_content_for, html=False)
        # Notify's order: the sender after the template, before trial mode and the limits.
        if command.type == _SMS:
            message.sender = self._sms_sender(call, command.sms_sender_id)
        else:
            message.sender = f"{service.email_from}@{self._email_domain}"
            message.reply_to = self._reply_to(call, command.email_reply_to_id)
            message.unsubscribe_url = command.unsubscribe_url
        if key:
            message.request_hash = fingerprint(command, to, template.id, personalisation)
        message.body, message.subject = rendered.billed_body, rendered.subject
        message.html, message.text = rendered.html, rendered.text
        message.billable_units = rendered.fragment_count
        if command.type == _SMS:
            # Crown Dependencies' mobiles are +44 but billed twice over, as Notify bills them.
            message.rate_multiplier = international.international_billing(to).multiplier
        if command.scheduled_for is not None:
            message.scheduled_for.FromDatetime(command.scheduled_for)
        message.created_at.seconds, message.created_at.nanos = call.accepted_at
        return message, Accepted(
            id=message.id,
            reference=command.reference,
            template_id=template.id,
            template_version=template.version,
            body=rendered.body,
            subject=rendered.subject,
            from_number=message.sender if command.type == _SMS else "",
            from_email=message.sender if command.type == _EMAIL else "",
            sanitised_content=rendered.sanitised_content,
            scheduled_for=command.scheduled_for,
        )

    def _sms_sender(self, call: _Call, sender_id: str) -> str:
        """The text of the asked-for sender, or the service's default."""
        service = call.caller.service
        if not sender_id:
            return service.sms_sender
        found = call.senders(self._service_senders).sms_senders.get(sender_id)
        if found is None:
            raise InvalidRequest.one(
                "sms_sender_id", f"sms_sender_id {sender_id} does not exist in database for service id {service.id}"
            )
        return found

    def _reply_to(self, call: _Call, reply_to_id: str) -> str:
        """The asked-for reply-to address, or the service's default; empty when it has none."""
        known = call.senders(self._service_senders)
        if not reply_to_id:
            return known.default_reply_to or ""
        found = known.reply_tos.get(reply_to_id)
        if found is None:
            service_id = call.caller.service.id
            raise InvalidRequest.one(
                "email_reply_to_id",
                f"email_reply_to_id {reply_to_id} does not exist in database for service id {service_id}",
            )
        return found

    def _service_senders(self, service_id: str) -> senders_db.ServiceSenders:
        def load() -> senders_db.ServiceSenders:
            with self._engine.connect() as conn:
                return senders_db.service_senders(conn, service_id)

        return self._senders.get(service_id, load)

    def preview(
        self, caller: Caller, template_id: str, personalisation: Mapping[str, Any] | Struct, version: int = 0
    ) -> Preview:
        """What a send would produce, without sending: body, subject, HTML and billed fragments."""
        template = self._template(caller, template_id, None, version or None)
        plain = _checked(lambda: inputs.plain_personalisation(personalisation))
        rendered = self._render(caller.service, template, plain, (), html=True)
        return Preview(template, rendered)

    def _render(
        self,
        service: services_db.ServiceRow,
        template: services_db.TemplateRow,
        personalisation: Mapping[str, Any],
        sanitise_content_for: Sequence[str],
        *,
        html: bool,
    ) -> Rendered:
        try:
            if template.template_type == "sms":
                prefix = service.name if service.prefix_sms else None
                sms = templates.render_sms(template.content, personalisation, prefix=prefix)
                return Rendered(sms.body, sms.billed_body, "", "", sms.fragment_count)
            email = templates.render_email(
                template.subject or "",
                template.content,
                personalisation,
                sanitise_content_for=sanitise_content_for,
                html=html,
            )
        except templates.TemplateError as exc:
            raise InvalidRequest.one(exc.field, exc.message) from None
        return Rendered(email.body, email.body, email.subject, email.html, 0, email.sanitised_content, email.plain_text)

    def _template(
        self, caller: Caller, template_id: str, type_name: str | None, version: int | None = None
    ) -> services_db.TemplateRow:
        template_id = _checked(lambda: inputs.canonical_uuid(template_id, "template_id"))
        template = self._load_template(template_id, version)
        # Another service's template is "not found" too: its existence is not the caller's business.
        if template is None or template.service_id != caller.service.id:
            raise InvalidRequest.one("template_id", "Template not found")
        if template.archived:
            raise InvalidRequest.one("template_id", "Template has been deleted")
        if type_name is not None and template.template_type != type_name:
            raise InvalidRequest.one(
                "template_id",
                f"{template.template_type} template is not suitable for {type_name} notification",
            )
        return template

    @staticmethod
    def _validated(field_name: str, validate: Callable[[], str]) -> str:
        try:
            return validate()
        except recipients.InternationalNotAllowed as exc:
            raise InvalidRequest.one(field_name, exc.message) from None
        except recipients.RecipientError as exc:
            # Notify's schema errors name the field first: "phone_number Not enough digits".
            raise InvalidRequest.one(field_name, f"{field_name} {exc.message}") from None

    def _load_template(self, template_id: str, version: int | None) -> services_db.TemplateRow | None:
        """The current version is cached (see _Cache); a past version is read as asked."""

        def load() -> services_db.TemplateRow | None:
            with self._engine.connect() as conn:
                return services_db.get_template(conn, template_id, version)

        return load() if version is not None else self._templates.get_or_none(template_id, load)


T = TypeVar("T")


class _Cache(Generic[T]):
    """What ingest reads per send, kept for `cache_seconds`. While the database is away, the last good
    copy serves for up to `stale_seconds` past its time. Nothing is cached for an id not found."""

    def __init__(self, what: str, cache_seconds: float, stale_seconds: float) -> None:
        self._what = what
        self._cache_seconds = cache_seconds
        self._stale_seconds = stale_seconds
        self._items: dict[str, tuple[float, T]] = {}

    def get(self, key: str, load: Callable[[], T]) -> T:
        found = self.get_or_none(key, load)
        assert found is not None  # `load` returns a T
        return found

    def get_or_none(self, key: str, load: Callable[[], T | None]) -> T | None:
        now = time.monotonic()
        cached = self._items.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            value = load()
        except Exception as exc:
            if cached is not None and is_transient(exc) and now - cached[0] < self._stale_seconds:
                metrics.incr("ingest.stale_served", what=self._what)
                return cached[1]
            raise
        if value is not None and self._cache_seconds > 0:
            self._items[key] = (now + self._cache_seconds, value)
        return value


def _checked(check: Callable[[], T]) -> T:
    try:
        return check()
    except inputs.InputError as exc:
        raise InvalidRequest.one(exc.field, exc.message) from None


def _check_options(command: SendCommand) -> None:
    """What a send may ask for beyond its message, checked with the request's shape (Notify's schema)."""
    try:
        if command.sms_sender_id:
            inputs.canonical_uuid(command.sms_sender_id, "sms_sender_id")
        if command.email_reply_to_id:
            inputs.canonical_uuid(command.email_reply_to_id, "email_reply_to_id")
        if command.unsubscribe_url:
            senders.unsubscribe_url(command.unsubscribe_url)
        if command.scheduled_for is not None:
            senders.scheduled_for(command.scheduled_for, datetime.now(UTC))
    except (inputs.InputError, senders.SenderError) as exc:
        raise InvalidRequest.one(exc.field, exc.message) from None


def _check_strings(command: SendCommand) -> dict[str, Any]:
    """Every string of the command the database will hold, and the personalisation made plain."""
    inputs.check_text(command.to, "email_address" if command.type == _EMAIL else "phone_number")
    inputs.check_text(command.reference, "reference")
    for value in command.sanitise_content_for:
        inputs.check_text(value, "sanitise_content_for")
    return inputs.plain_personalisation(command.personalisation)
