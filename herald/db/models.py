"""The tables. Migrations in herald/db/migrations are the source of truth for the schema's history."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from herald.domain import job_statuses

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class Service(Base):
    __tablename__ = "services"
    id: Mapped[uuid.UUID] = _uuid_pk()
    # Unique by constraint alone (seed): a concurrent duplicate is caught from the IntegrityError.
    name: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    research_mode: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    restricted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    prefix_sms: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    can_send_international_sms: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    sms_sender: Mapped[str] = mapped_column(String(255), nullable=False, default="Herald")
    email_from: Mapped[str] = mapped_column(String(255), nullable=False, default="herald")
    created_at: Mapped[datetime] = _now()
    # Notify's limits: requests per 60 seconds per key type, and messages per day per type.
    rate_limit: Mapped[int] = mapped_column(Integer, nullable=False, default=3000, server_default="3000")
    sms_message_limit: Mapped[int] = mapped_column(
        BigInteger, nullable=False, default=999_999_999, server_default="999999999"
    )
    email_message_limit: Mapped[int] = mapped_column(
        BigInteger, nullable=False, default=999_999_999, server_default="999999999"
    )
    international_sms_message_limit: Mapped[int] = mapped_column(
        BigInteger, nullable=False, default=250_000, server_default="250000"
    )


class ServiceTeamMember(Base):
    """Who a restricted service, and any team key, may send to (with the guest list)."""

    __tablename__ = "service_team_members"
    __table_args__ = (CheckConstraint("mobile_number IS NOT NULL OR email_address IS NOT NULL", name="reachable"),)
    id: Mapped[uuid.UUID] = _uuid_pk()
    service_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("services.id", ondelete="CASCADE"), nullable=False, index=True
    )
    mobile_number: Mapped[str | None] = mapped_column(String(32))  # normalised, as validate_phone_number's
    email_address: Mapped[str | None] = mapped_column(String(320))  # lower case
    created_at: Mapped[datetime] = _now()


class ServiceGuestListEntry(Base):
    __tablename__ = "service_guest_list"
    __table_args__ = (CheckConstraint("recipient_type IN ('mobile', 'email')", name="recipient_type"),)
    id: Mapped[uuid.UUID] = _uuid_pk()
    service_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("services.id", ondelete="CASCADE"), nullable=False, index=True
    )
    recipient_type: Mapped[str] = mapped_column(String(16), nullable=False)
    recipient: Mapped[str] = mapped_column(String(320), nullable=False)  # normalised as a team member's


class ServiceDataRetention(Base):
    """How long a service keeps its notifications of one type (Notify's service_data_retention); else 7 days."""

    __tablename__ = "service_data_retention"
    __table_args__ = (
        UniqueConstraint("service_id", "notification_type", name="uq_service_data_retention_service_type"),
        CheckConstraint("days_of_retention BETWEEN 3 AND 90", name="days_of_retention"),
        CheckConstraint("notification_type IN ('sms', 'email')", name="notification_type"),
    )
    id: Mapped[uuid.UUID] = _uuid_pk()
    service_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("services.id", ondelete="CASCADE"), nullable=False)
    notification_type: Mapped[str] = mapped_column(String(16), nullable=False)
    days_of_retention: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ServiceCallbackApi(Base):
    """Where a service wants its delivery statuses (Notify's service_callback_api) or its received texts
    (Notify's service_inbound_api) POSTed: one of each kind per service. The bearer token and Herald's
    signing secret are encrypted with SecretBox."""

    __tablename__ = "service_callbacks"
    __table_args__ = (CheckConstraint("callback_type IN ('delivery_status', 'inbound_sms')", name="callback_type"),)
    service_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("services.id", ondelete="CASCADE"), primary_key=True)
    callback_type: Mapped[str] = mapped_column(String(16), primary_key=True)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    bearer_token_encrypted: Mapped[str] = mapped_column(Text, nullable=False)
    signing_secret_encrypted: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class ServiceSmsSender(Base):
    """A service's SMS senders (Notify's service_sms_senders). The default's text is also
    services.sms_sender, which sends without an sms_sender_id use; the default row is made from it the
    first time the service's senders are managed."""

    __tablename__ = "service_sms_senders"
    __table_args__ = (
        Index("uq_service_sms_senders_default", "service_id", unique=True, postgresql_where=text("is_default")),
    )
    id: Mapped[uuid.UUID] = _uuid_pk()
    service_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("services.id", ondelete="CASCADE"), nullable=False, index=True
    )
    # As long as services.sms_sender, which the default is made from; new ones are at most 15 characters.
    sms_sender: Mapped[str] = mapped_column(String(255), nullable=False)
    is_default: Mapped[bool] = mapped_column(Boolean, nullable=False)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ServiceEmailReplyTo(Base):
    """A service's email reply-to addresses (Notify's service_email_reply_to): the default goes on every
    email sent without an email_reply_to_id."""

    __tablename__ = "service_email_reply_to"
    __table_args__ = (
        Index("uq_service_email_reply_to_default", "service_id", unique=True, postgresql_where=text("is_default")),
    )
    id: Mapped[uuid.UUID] = _uuid_pk()
    service_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("services.id", ondelete="CASCADE"), nullable=False, index=True
    )
    email_address: Mapped[str] = mapped_column(String(320), nullable=False)
    is_default: Mapped[bool] = mapped_column(Boolean, nullable=False)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class InboundNumber(Base):
    """The number a service receives text messages on (one per service, one service per number). `number`
    is normalised as recipients.validate_phone_number gives it: country code and digits ("447700900123").
    It is also one of the service's SMS senders."""

    __tablename__ = "inbound_numbers"
    number: Mapped[str] = mapped_column(String(32), primary_key=True)
    service_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("services.id", ondelete="CASCADE"), nullable=False, unique=True
    )
    created_at: Mapped[datetime] = _now()


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (CheckConstraint("key_type IN ('normal', 'team', 'test')", name="key_type"),)
    id: Mapped[uuid.UUID] = _uuid_pk()
    service_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("services.id"), nullable=False, index=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    key_type: Mapped[str] = mapped_column(String(16), nullable=False)
    secret_encrypted: Mapped[str] = mapped_column(Text, nullable=False)  # never the plain secret
    created_at: Mapped[datetime] = _now()
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Template(Base):
    """The current version of a template; every version, this one included, is in templates_history."""

    __tablename__ = "templates"
    __table_args__ = (CheckConstraint("template_type IN ('sms', 'email')", name="template_type"),)
    id: Mapped[uuid.UUID] = _uuid_pk()
    service_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("services.id"), nullable=False, index=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    template_type: Mapped[str] = mapped_column(String(16), nullable=False)
    subject: Mapped[str | None] = mapped_column(Text)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    archived: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TemplateHistory(Base):
    __tablename__ = "templates_history"
    id: Mapped[uuid.UUID] = mapped_column(ForeignKey("templates.id"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    service_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    template_type: Mapped[str] = mapped_column(String(16), nullable=False)
    subject: Mapped[str | None] = mapped_column(Text)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = _now()


class _NotificationColumns:
    """Columns kept for the life of the record, in notifications and then in notification_history."""

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    service_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    template_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    template_version: Mapped[int] = mapped_column(Integer, nullable=False)
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    key_type: Mapped[str] = mapped_column(String(16), nullable=False)
    notification_type: Mapped[str] = mapped_column(String(16), nullable=False)
    reference: Mapped[str | None] = mapped_column(String(1000))
    status: Mapped[str] = mapped_column(String(32), nullable=False)
    billable_units: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # International SMS cost this many times a UK one (Notify's rate multiplier).
    rate_multiplier: Mapped[float] = mapped_column(Float, nullable=False, default=1.0, server_default="1")
    # Hand-off attempts, and why the last one failed (an error code, never the provider's text).
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(String(100))
    sent_by: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A CSV job's row: its job and its row number as a spreadsheet shows it (the header is row 1).
    job_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    job_row_number: Mapped[int | None] = mapped_column(Integer)
    # The time the send asked to be handed off at, answered by reads (next_attempt_at moves on).
    scheduled_for: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Notification(_NotificationColumns, Base):
    __tablename__ = "notifications"
    __table_args__ = (
        ForeignKeyConstraint(
            ["template_id", "template_version"], ["templates_history.id", "templates_history.version"]
        ),
        Index("ix_notifications_service_created", "service_id", "created_at"),
        Index("ix_notifications_status_created", "status", "created_at"),
        Index("ix_notifications_created_at", "created_at"),
        # The sweep's question: which rows still `created` may be attempted (again) now.
        Index(
            "ix_notifications_created_due",
            "next_attempt_at",
            postgresql_where=text("status = 'created'"),
        ),
        # GetJob's counts by status: one grouped read of a job's rows.
        Index("ix_notifications_job_id", "job_id", postgresql_where=text("job_id IS NOT NULL")),
    )
    # Personal data: gone from the record when retention moves it to notification_history.
    to: Mapped[str] = mapped_column(String, nullable=False)
    personalisation: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    subject: Mapped[str | None] = mapped_column(Text)
    # A send with an idempotency key: its request's hash, so the key reused with another request is refused.
    # Derived from the recipient and personalisation (a phone number is found from it by trying them all),
    # so it goes with them.
    request_hash: Mapped[str | None] = mapped_column(String(32))
    # No attempt may start before this: a claimed hand-off's lease, or the due time of a retry.
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The provider of the last attempt, chosen before the hand-off; `sticky_provider` while its answer is
    # unknown (in flight, or lost to a timeout), so a re-drive goes to the same provider, which
    # de-duplicates by reference; after a definite refusal the retry goes to another one.
    last_provider: Mapped[str | None] = mapped_column(String(32))
    sticky_provider: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default="false")
    # When the sweep last re-published the row, so a row waiting in a long queue is not re-published
    # on every sweep.
    republished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # What the notification was sent with (Notify's reply_to_text: the SMS sender, or the email's reply-to
    # address; and its one-click unsubscribe link), so a retry or a scheduled hand-off sends the same.
    reply_to_text: Mapped[str | None] = mapped_column(String(320))
    unsubscribe_url: Mapped[str | None] = mapped_column(Text)


class NotificationHistory(_NotificationColumns, Base):
    __tablename__ = "notification_history"
    __table_args__ = (Index("ix_notification_history_service_created", "service_id", "created_at"),)


class PendingReceipt(Base):
    """A receipt whose notification is not stored yet (the db dispatcher is behind): applied later by
    the scheduler, never dropped for arriving early."""

    __tablename__ = "receipts_pending"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    notification_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False, index=True)
    provider: Mapped[str] = mapped_column(String(32), nullable=False)
    status: Mapped[str] = mapped_column(String(64), nullable=False)
    code: Mapped[str] = mapped_column(String(64), nullable=False)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class Job(Base):
    """A CSV of recipients for one template version (Notify's jobs); its file is in job_files."""

    __tablename__ = "jobs"
    __table_args__ = (
        ForeignKeyConstraint(
            ["template_id", "template_version"], ["templates_history.id", "templates_history.version"]
        ),
        CheckConstraint(f"status IN ({', '.join(repr(status) for status in job_statuses.ALL)})", name="status"),
        Index("ix_jobs_service_created", "service_id", "created_at"),
        # The scheduler's questions: which scheduled jobs are due, which jobs in progress are stuck.
        Index("ix_jobs_scheduled_for", "scheduled_for", postgresql_where=text("status = 'scheduled'")),
        Index("ix_jobs_in_progress", "progress_at", postgresql_where=text("status = 'in progress'")),
    )
    id: Mapped[uuid.UUID] = _uuid_pk()
    service_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("services.id"), nullable=False)
    template_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    template_version: Mapped[int] = mapped_column(Integer, nullable=False)
    notification_type: Mapped[str] = mapped_column(String(16), nullable=False)
    original_file_name: Mapped[str] = mapped_column(String(255), nullable=False)
    row_count: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String(32), nullable=False)
    # The key that created it: its rows are sent as that key's sends (test keys simulated, team keys counted).
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    key_type: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = _now()
    scheduled_for: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    processing_started: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    processing_finished: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Rows expanded onto bulk-* and confirmed by the broker: a processor resumes after them.
    rows_queued: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    # Rows refused while the job was expanded (a service changed since the file was checked): never
    # stored, so the job is finished once the rest are done.
    rows_rejected: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    # When the processor last recorded progress: check-job-status re-queues a job idle for 30 minutes.
    progress_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class JobFile(Base):
    """A job's CSV as uploaded, zlib-compressed: the processor reads its rows from here."""

    __tablename__ = "job_files"
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class TaskRun(Base):
    """When each scheduled task last ran, so a restarted scheduler does not repeat a daily run."""

    __tablename__ = "scheduled_task_runs"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    last_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_summary: Mapped[str | None] = mapped_column(Text)


class InboundSms(Base):
    """A text message someone sent to a service's inbound number (Notify's inbound_sms). Personal data:
    deleted after the service's SMS retention. `created_at` is when callbacks received it."""

    __tablename__ = "inbound_sms"
    __table_args__ = (
        Index("ix_inbound_sms_service_created", "service_id", text("created_at DESC"), text("id DESC")),
        Index("ix_inbound_sms_created_at", "created_at"),
    )
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    service_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("services.id", ondelete="CASCADE"), nullable=False)
    notify_number: Mapped[str] = mapped_column(String(32), nullable=False)
    user_number: Mapped[str] = mapped_column(String(32), nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    provider_date: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    provider_reference: Mapped[str | None] = mapped_column(String(255))
    provider: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
