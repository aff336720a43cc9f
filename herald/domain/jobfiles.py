"""A job's CSV file checked as Notify checks an upload: pure, no I/O; nothing is sent unless it all passes.

Notify's rules: the recipient column is `phone number` (texts) or `email address` (emails), headers are
matched like placeholders (case, spaces, `_` and `-` ignored), every placeholder needs a column, extra
columns are allowed, a UTF-8 BOM and `\\r\\n` are fine, and at most MAX_ROWS rows. Each row is checked with
the rules single sends use: the recipient with herald.domain.recipients, the message rendered with
herald.domain.templates, each value with herald.domain.inputs.

Two leniencies where spreadsheets, not people, make the mess: empty rows after the last row are ignored
(spreadsheets leave them), and so are empty cells beyond the header's width (ragged trailing commas).
Empty rows between rows and non-empty cells beyond the header are problems.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass

from herald.domain import inputs, recipients, templates
from herald.domain.templates._placeholders import normalise_key, parse

MAX_ROWS = 100_000
MAX_PROBLEMS = 50
MAX_FILE_BYTES = 50 * 1024 * 1024
FILE_TOO_LARGE = f"The file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB"
MAX_FILE_NAME = 255

RECIPIENT_COLUMNS = {"sms": "phone number", "email": "email address"}


@dataclass(frozen=True, slots=True)
class JobTemplate:
    type: str  # "sms" | "email"
    content: str
    subject: str  # "" for sms
    prefix: str | None  # service name for the SMS prefix, or None
    allow_international: bool  # the service may send international SMS


@dataclass(frozen=True, slots=True)
class JobRow:
    number: int  # as a spreadsheet shows it: the header is row 1, the first data row 2
    recipient: str  # normalised as single sends normalise it
    personalisation: dict[str, str]  # every column but the recipient's, keyed by the header as written


@dataclass(frozen=True, slots=True)
class RowProblem:
    row: int  # as JobRow.number; 1 for header problems, 0 for whole-file problems
    column: str  # the header as written, or ""
    message: str


@dataclass(frozen=True, slots=True)
class CheckedFile:
    rows: tuple[JobRow, ...]  # empty when problems is not empty
    problems: tuple[RowProblem, ...]  # the first MAX_PROBLEMS problems, in row order
    row_count: int  # data rows seen (even when problems)
    recipient_column: str  # the header as written, or "" when there is none


@dataclass(frozen=True, slots=True)
class _Columns:
    """Where the header puts what the template needs."""

    width: int
    recipient: int
    # (column index, header as written, placeholder as written, times the body shows it) per placeholder
    placeholders: tuple[tuple[int, str, str, int], ...]
    # (column index, header as written) of the values a row's personalisation carries
    personalisation: tuple[tuple[int, str], ...]


def check_job_file(data: bytes, template: JobTemplate) -> CheckedFile:
    try:
        text = data.decode("utf-8-sig")  # drops a leading BOM, as Excel's "CSV UTF-8" writes one
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        message = f"The file is not UTF-8 text (line {line} is not): save it as CSV UTF-8"
        return CheckedFile((), (RowProblem(0, "", message),), 0, "")
    # strict: a stray or unclosed quote is a problem, not a silent merge of the rows that follow.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return CheckedFile((), (RowProblem(0, "", "The file is empty"),), 0, "")
    except csv.Error as exc:
        return CheckedFile((), (RowProblem(1, "", f"The header is badly quoted ({exc})"),), 0, "")
    columns, header_problems, recipient_column = _read_header(header, template)
    return _Checker(template, columns, header_problems, recipient_column, "\x00" in text).run(reader)


def _read_header(header: list[str], template: JobTemplate) -> tuple[_Columns | None, list[RowProblem], str]:
    """Where the columns the template needs are (None when the header has problems), the header's
    problems, and the recipient column as written ("" when there is none)."""
    wanted = RECIPIENT_COLUMNS[template.type]
    keys = [normalise_key(name) for name in header]
    recipient_key = normalise_key(wanted)
    found = [index for index, key in enumerate(keys) if key == recipient_key]
    problems = [RowProblem(1, header[index], f"More than one column is called '{wanted}'") for index in found[1:]]
    if not found:
        problems.append(RowProblem(1, "", f"Missing a column called '{wanted}'"))
    # A later column beats an earlier one that normalises the same, as personalisation keys do.
    by_key = {key: index for index, key in enumerate(keys) if key}
    shown = [slot.key for slot in parse(template.content).slots]
    needed: list[tuple[int, str, str, int]] = []
    for name in templates.placeholders(template.subject, template.content):
        key = normalise_key(name)
        index = by_key.get(key, -1)
        if index < 0:
            problems.append(RowProblem(1, "", f"Missing a column called '{name}' for (({name}))"))
        else:
            needed.append((index, header[index], name, shown.count(key)))
    recipient_column = header[found[0]] if found else ""
    if problems:
        return None, problems, recipient_column
    recipient = found[0]
    # The recipient's own column is personalisation only when the template shows it, as in Notify.
    shows_recipient = any(entry[0] == recipient for entry in needed)
    personalisation = tuple(
        (index, name)
        for index, name in enumerate(header)
        if keys[index] and (index != recipient or shows_recipient) and by_key[keys[index]] == index
    )
    return _Columns(len(header), recipient, tuple(needed), personalisation), [], recipient_column


class _Checker:
    """One pass over the rows: counts them all, checks them until MAX_PROBLEMS problems are found."""

    def __init__(
        self,
        template: JobTemplate,
        columns: _Columns | None,
        problems: list[RowProblem],
        recipient_column: str,
        nul: bool,
    ) -> None:
        self._template = template
        self._nul = nul  # values are checked for NUL only when the file holds one
        self._columns = columns
        self._problems = problems
        self._recipient_column = recipient_column
        self._rows: list[JobRow] = []
        self._phone = template.type == "sms"
        self._budget = _render_budget(template, columns)

    def run(self, reader: Iterator[list[str]]) -> CheckedFile:
        number = 1  # the header's
        last = 1  # the last row that was not empty
        empty: list[int] = []  # empty rows since then: problems only if a row with values follows
        while True:
            number += 1
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                empty, last = self._flush(empty), number
                self._add(RowProblem(number, "", f"Badly quoted value ({exc})"))
                continue
            if not any(cell.strip() for cell in cells):
                empty.append(number)
                continue
            empty, last = self._flush(empty), number
            if number - 1 <= MAX_ROWS and len(self._problems) < MAX_PROBLEMS and self._columns is not None:
                self._check(number, cells, self._columns)
        row_count = last - 1
        if row_count > MAX_ROWS:
            message = f"The file has {row_count:,} rows: at most {MAX_ROWS:,} are allowed"
            return CheckedFile((), (RowProblem(0, "", message),), row_count, self._recipient_column)
        if row_count == 0 and not self._problems:
            self._problems.append(RowProblem(0, "", "The file has no rows after the header"))
        problems = tuple(self._problems[:MAX_PROBLEMS])
        return CheckedFile(() if problems else tuple(self._rows), problems, row_count, self._recipient_column)

    def _flush(self, empty: list[int]) -> list[int]:
        for number in empty:
            self._add(RowProblem(number, "", "Empty row"))
        return []

    def _add(self, problem: RowProblem) -> None:
        if len(self._problems) < MAX_PROBLEMS:
            self._problems.append(problem)

    def _check(self, number: int, cells: list[str], columns: _Columns) -> None:
        if len(cells) > columns.width:
            if any(cell.strip() for cell in cells[columns.width :]):
                self._add(RowProblem(number, "", f"The row has {len(cells)} values: the header has {columns.width}"))
                return
        elif len(cells) < columns.width:
            cells = cells + [""] * (columns.width - len(cells))
        found = len(self._problems)
        recipient = self._recipient(number, cells[columns.recipient])
        size = 0
        for index, header, name, shown in columns.placeholders:
            value = cells[index]
            if not value.strip():
                self._add(RowProblem(number, header, f"Missing value for (({name}))"))
            size += shown * len(value)
        personalisation = {name: cells[index] for index, name in columns.personalisation}
        if self._nul:
            for name, value in personalisation.items():
                try:
                    inputs.check_text(value, name)
                except inputs.InputError as exc:
                    self._add(RowProblem(number, name, exc.message))
        if len(self._problems) == found and size > self._budget:
            self._render(number, personalisation)
        if recipient is not None and len(self._problems) == found:
            self._rows.append(JobRow(number, recipient, personalisation))

    def _recipient(self, number: int, value: str) -> str | None:
        column = self._recipient_column
        if not value.strip():
            self._add(RowProblem(number, column, f"Missing {RECIPIENT_COLUMNS[self._template.type]}"))
            return None
        try:
            if self._phone:
                return recipients.validate_phone_number(value, allow_international=self._template.allow_international)
            return recipients.validate_email_address(value)
        except recipients.RecipientError as exc:
            self._add(RowProblem(number, column, exc.message))
            return None

    def _render(self, number: int, personalisation: dict[str, str]) -> None:
        try:
            _render(self._template, personalisation)
        except templates.TemplateError as exc:
            self._add(RowProblem(number, "", exc.message))


def _render(template: JobTemplate, personalisation: dict[str, str]) -> None:
    """Raises the TemplateError a single send of this row would get."""
    if template.type == "sms":
        templates.render_sms(template.content, personalisation, prefix=template.prefix)
    else:
        templates.render_email(template.subject, template.content, personalisation, html=False)  # checks only


def _render_budget(template: JobTemplate, columns: _Columns | None) -> int:
    """How many characters of values (each counted as often as the body shows it) a row may hold and still
    be sure to render, so most rows skip rendering (an email's HTML takes 100 µs). -1: render every row.

    Values only add to the template's own text, so if it renders with every value empty, no row's message
    is empty. A text message's sanitising at most triples its length ("…" becomes "..."); an email's
    character is at most 4 bytes.
    """
    if columns is None:
        return -1
    try:
        _render(template, {name: "" for _, _, name, _ in columns.placeholders})
    except templates.TemplateError:
        return -1
    if template.type == "sms":
        return templates.SMS_CHAR_COUNT_LIMIT // 3 - len(template.content)
    return (templates.EMAIL_MAX_BYTES - len(template.content.encode())) // 4
