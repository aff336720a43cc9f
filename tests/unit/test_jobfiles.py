"""A job's CSV file: every kind of bad file refused with its row numbers, and what Notify accepts accepted."""

from __future__ import annotations

import pytest

from herald.domain import recipients
from herald.domain.jobfiles import MAX_PROBLEMS, MAX_ROWS, JobRow, JobTemplate, RowProblem, check_job_file

SMS = JobTemplate("sms", "Hello ((name)), your code is ((code))", "", None, False)
EMAIL = JobTemplate("email", "Dear ((name)),\n\nYour appointment is on ((date)).", "For ((name))", None, False)
NUMBER = "07700 900123"
OTHER = "07700 900456"


def check(text: str, template: JobTemplate = SMS) -> list[tuple[int, str, str]]:
    return [(p.row, p.column, p.message) for p in check_job_file(text.encode(), template).problems]


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        pytest.param(
            f"phone number,name,code\n{NUMBER},Ann,1\n0770,Bob,2\n",
            [(3, "phone number", recipients.TOO_SHORT)],
            id="bad number",
        ),
        pytest.param(
            f"phone number,name,code\n{NUMBER},Ann,1\n020 7946 0000,Bob,2\n",
            [(3, "phone number", recipients.NOT_A_UK_MOBILE)],
            id="landline",
        ),
        pytest.param(
            f"phone number,name,code\n{NUMBER},Ann,1\n+33 6 12 34 56 78,Bob,2\n",
            [(3, "phone number", recipients.INTERNATIONAL_NOT_ALLOWED)],
            id="international without permission",
        ),
        pytest.param(
            f"phone number,name,code\n{NUMBER},Ann,1\n,Bob,2\n",
            [(3, "phone number", "Missing phone number")],
            id="missing recipient",
        ),
        pytest.param(
            f"phone number,name,code\n{NUMBER},Ann,1\n{OTHER},,2\n{NUMBER}, ,3\n",
            [(3, "name", "Missing value for ((name))"), (4, "name", "Missing value for ((name))")],
            id="missing value",
        ),
        pytest.param(
            f"phone number,name,code\n{NUMBER},Ann\n",
            [(2, "code", "Missing value for ((code))")],
            id="short row is missing values",
        ),
        pytest.param(
            f"phone number,name,code\n{NUMBER},Ann,1\n{OTHER},{'x' * 900},2\n",
            [
                (
                    3,
                    "",
                    "Your message is too long. Text messages cannot be longer than 918 characters. "
                    "Your message is 922 characters long.",
                )
            ],
            id="too long",
        ),
        pytest.param(
            f"phone number,name,code\n{NUMBER},Ann,1\n\n{OTHER},Bob,2\n,,\n{NUMBER},Cy,3\n",
            [(3, "", "Empty row"), (5, "", "Empty row")],
            id="empty rows between rows",
        ),
        pytest.param(
            f"name,code\nAnn,{NUMBER}\n",
            [(1, "", "Missing a column called 'phone number'")],
            id="no recipient column",
        ),
        pytest.param(
            f"phone number,name,Phone_Number,code\n{NUMBER},Ann,{OTHER},1\n",
            [(1, "Phone_Number", "More than one column is called 'phone number'")],
            id="duplicated recipient column",
        ),
        pytest.param(
            f"phone number,name\n{NUMBER},Ann\n",
            [(1, "", "Missing a column called 'code' for ((code))")],
            id="placeholder without a column",
        ),
        pytest.param(
            f"phone number,name,code\n{NUMBER},Ann,1\n{OTHER},Bob,2,surprise\n",
            [(3, "", "The row has 4 values: the header has 3")],
            id="too many fields",
        ),
        pytest.param(
            f'phone number,name,code\n{NUMBER},Ann,1\n{OTHER},"Bob"by,2\n',
            [(3, "", "Badly quoted value (',' expected after '\"')")],
            id="stray quote",
        ),
        pytest.param(
            f'phone number,name,code\n{NUMBER},Ann,1\n{OTHER},"Bob,2\n',
            [(3, "", "Badly quoted value (unexpected end of data)")],
            id="unclosed quote",
        ),
        pytest.param(
            f"phone number,name,code\n{NUMBER},A\x00n,1\n",
            [(2, "name", "name contains a character that is not allowed (NUL)")],
            id="NUL",
        ),
        pytest.param("", [(0, "", "The file is empty")], id="empty file"),
        pytest.param("phone number,name,code\n\n", [(0, "", "The file has no rows after the header")], id="no rows"),
    ],
)
def test_a_bad_file_is_refused_with_its_row_numbers(text: str, problems: list[tuple[int, str, str]]) -> None:
    checked = check_job_file(text.encode(), SMS)
    assert [(p.row, p.column, p.message) for p in checked.problems] == problems
    assert checked.rows == ()


def test_bad_rows_are_all_reported_in_row_order() -> None:
    text = f"phone number,name,code\n{NUMBER},Ann,1\nabc,,2\n{OTHER},Bob,\n"
    assert check(text) == [
        (3, "phone number", recipients.UNKNOWN_CHARACTER),
        (3, "name", "Missing value for ((name))"),
        (4, "code", "Missing value for ((code))"),
    ]


def test_not_utf8_names_the_line() -> None:
    data = f"phone number,name,code\n{NUMBER},Ann,1\n{OTHER},Ren\xe9e,2\n".encode("latin-1")
    checked = check_job_file(data, SMS)
    assert checked.problems == (RowProblem(0, "", "The file is not UTF-8 text (line 3 is not): save it as CSV UTF-8"),)
    assert checked.rows == ()


def test_only_the_first_problems_are_listed_but_every_row_is_counted() -> None:
    text = "phone number,name,code\n" + "123,Ann,1\n" * 200
    checked = check_job_file(text.encode(), SMS)
    assert len(checked.problems) == MAX_PROBLEMS
    assert [p.row for p in checked.problems] == list(range(2, 2 + MAX_PROBLEMS))
    assert checked.row_count == 200


def test_a_bom_crlf_and_header_spelling_are_accepted() -> None:
    text = f'\ufeffPhone_Number,NAME, Co-de ,notes\r\n{NUMBER},Ann,1,\r\n"{OTHER}","Bob, Jr",2,x\r\n'
    checked = check_job_file(text.encode(), SMS)
    assert checked.problems == ()
    assert checked.recipient_column == "Phone_Number"
    assert checked.row_count == 2
    assert checked.rows == (
        JobRow(2, "447700900123", {"NAME": "Ann", " Co-de ": "1", "notes": ""}),
        JobRow(3, "447700900456", {"NAME": "Bob, Jr", " Co-de ": "2", "notes": "x"}),
    )


def test_a_value_may_span_lines_and_rows_keep_spreadsheet_numbers() -> None:
    text = f'phone number,name,code\n{NUMBER},"Ann\nSmith",1\n{OTHER},Bob,2\n'
    checked = check_job_file(text.encode(), SMS)
    assert [(row.number, row.personalisation["name"]) for row in checked.rows] == [(2, "Ann\nSmith"), (3, "Bob")]


def test_empty_rows_and_empty_cells_a_spreadsheet_leaves_at_the_end_are_ignored() -> None:
    text = f"phone number,name,code\n{NUMBER},Ann,1,,\n,,\n\n"
    checked = check_job_file(text.encode(), SMS)
    assert checked.problems == ()
    assert checked.row_count == 1


def test_international_numbers_when_the_service_may_send_them() -> None:
    template = JobTemplate("sms", "Hi ((name))", "", None, True)
    checked = check_job_file(b"phone number,name\n+33 6 12 34 56 78,Ann\n", template)
    assert checked.problems == ()
    assert checked.rows[0].recipient == "33612345678"


def test_the_prefix_counts_as_single_sends_count_it() -> None:
    # The 918 characters are the body's; the service-name prefix is extra, as in Notify.
    template = JobTemplate("sms", "((body))", "", "A Council", False)
    ok = check_job_file(f"phone number,body\n{NUMBER},{'x' * 918}\n".encode(), template)
    too_long = check_job_file(f"phone number,body\n{NUMBER},{'x' * 919}\n".encode(), template)
    assert ok.problems == ()
    assert [p.row for p in too_long.problems] == [2]


def test_a_template_that_is_only_a_placeholder_cannot_be_sent_empty() -> None:
    template = JobTemplate("sms", "((body))", "", None, False)
    # A value of spaces is missing; one that sanitises away to nothing is an empty message.
    assert check(f"phone number,body\n{NUMBER}, \n{OTHER},\u200b\n", template) == [
        (2, "body", "Missing value for ((body))"),
        (3, "", "Your message is empty."),
    ]


def test_the_recipient_column_is_personalisation_when_the_template_shows_it() -> None:
    template = JobTemplate("sms", "Sent to ((phone number))", "", None, False)
    checked = check_job_file(f"phone number\n{NUMBER}\n".encode(), template)
    assert checked.rows == (JobRow(2, "447700900123", {"phone number": NUMBER}),)


def test_email_rows() -> None:
    text = "Email Address,name,date\n ann@example.com ,Ann,Monday\nnot-an-address,Bob,Tuesday\nc@example.com,Cy,\n"
    assert check(text, EMAIL) == [
        (3, "Email Address", recipients.INVALID_EMAIL),
        (4, "date", "Missing value for ((date))"),
    ]
    good = check_job_file(b"email address,name,date\n ann@example.com ,Ann,Monday\n", EMAIL)
    assert good.rows == (JobRow(2, "ann@example.com", {"name": "Ann", "date": "Monday"}),)


def test_the_recipient_column_is_named_even_when_the_header_has_problems() -> None:
    checked = check_job_file(f"Phone-Number,name\n{NUMBER},Ann\n".encode(), SMS)
    assert (checked.recipient_column, checked.row_count, checked.rows) == ("Phone-Number", 1, ())


def test_an_email_placeholder_only_in_the_subject_needs_a_column() -> None:
    template = JobTemplate("email", "Hello", "For ((name))", None, False)
    assert check("email address\na@example.com\n", template) == [(1, "", "Missing a column called 'name' for ((name))")]


def test_an_email_column_is_not_a_phone_column() -> None:
    assert check(f"phone number,name,date\n{NUMBER},Ann,Monday\n", EMAIL) == [
        (1, "", "Missing a column called 'email address'")
    ]


def _rows(count: int) -> bytes:
    lines = ["phone number,name,code", *(f"07911{i:06d},Person {i},{i}" for i in range(count))]
    return "\n".join(lines).encode()


def test_the_largest_file_allowed_passes() -> None:
    checked = check_job_file(_rows(MAX_ROWS), SMS)
    assert checked.problems == ()
    assert len(checked.rows) == checked.row_count == MAX_ROWS
    last = JobRow(MAX_ROWS + 1, f"447911{MAX_ROWS - 1:06d}", {"name": "Person 99999", "code": "99999"})
    assert checked.rows[-1] == last


def test_one_row_more_is_refused() -> None:
    checked = check_job_file(_rows(MAX_ROWS + 1), SMS)
    assert checked.problems == (RowProblem(0, "", "The file has 100,001 rows: at most 100,000 are allowed"),)
    assert checked.rows == ()
    assert checked.row_count == MAX_ROWS + 1


def test_an_email_too_large_to_send() -> None:
    template = JobTemplate("email", "Page ((page))\n" * 20, "Subject", None, False)
    text = f"email address,page\na@example.com,small\nb@example.com,{'x' * 120_000}\n"
    [(row, column, message)] = check(text, template)
    assert (row, column) == (3, "")
    assert message.startswith("Your message is too long. Emails cannot be longer than 2000000 bytes.")
