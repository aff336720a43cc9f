"""Template rules, example by example (notify-v2.md sections 1 and 7; Notify's notifications-utils)."""

from __future__ import annotations

import unicodedata
import uuid

import pytest

from herald.domain.templates import (
    EMAIL_MAX_BYTES,
    SMS_CHAR_COUNT_LIMIT,
    EmptyMessage,
    MessageTooLong,
    MissingPersonalisation,
    RenderedEmail,
    RenderedSms,
    TemplateError,
    _markdown,
    _placeholders,
    _sms,
    placeholders,
    render_email,
    render_sms,
    sanitise_sms,
    sms_fragment_count,
)

# ---------------------------------------------------------------------------------------------------------
# Placeholders


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("no placeholders", []),
        ("Hi ((name))", ["name"]),
        ("((b)) then ((a)) then ((b))", ["b", "a"]),
        ("((First name)) and ((first_name)) and ((FIRST-NAME))", ["First name"]),
        ("((show??Shown text)) and ((show))", ["show"]),
        ("((a??b??c))", ["a"]),
        ("(( spaced ))", [" spaced "]),
        ("(not) ((one) (( two))", [" two"]),
        ("(((triple)))", ["triple"]),
    ],
)
def test_placeholders_in_order_of_first_appearance_without_duplicates(text: str, expected: list[str]) -> None:
    assert placeholders(text) == expected


def test_placeholders_across_subject_and_body() -> None:
    assert placeholders("((subject thing)) ((name))", "Dear ((NAME)), ((body thing))") == [
        "subject thing",
        "name",
        "body thing",
    ]


@pytest.mark.parametrize(
    ("key", "template_name"),
    [
        ("name", "name"),
        ("NAME", "name"),
        ("first name", "first_name"),
        ("first_name", "First Name"),
        ("first-name", "firstname"),
        ("First - Name", "first_name"),
    ],
)
def test_keys_match_ignoring_case_spaces_underscores_and_hyphens(key: str, template_name: str) -> None:
    assert render_sms(f"Hi (({template_name}))", {key: "Jo"}).body == "Hi Jo"


@pytest.mark.parametrize("value", ["yes", "Y", "true", "True", "t", "1", "include", "SHOW", "Yes", 1, True])
def test_conditional_text_shown_when_the_value_is_truthy(value: object) -> None:
    assert render_sms("Hi((extra?? and welcome))!", {"extra": value}).body == "Hi and welcome!"


@pytest.mark.parametrize("value", ["no", "n", "false", "0", "", "maybe", "on", 0, False, []])
def test_conditional_text_hidden_otherwise(value: object) -> None:
    assert render_sms("Hi((extra?? and welcome))!", {"extra": value}).body == "Hi!"


def test_conditional_text_keeps_further_question_marks() -> None:
    assert render_sms("((q??Really?? Yes))", {"q": "yes"}).body == "Really?? Yes"


@pytest.mark.parametrize(
    ("value", "sms_body", "email_body"),
    [
        (["a", "b", "c"], "Items: a, b and c", "Items: \n\n* a\n* b\n* c"),
        (["only"], "Items: only", "Items: \n\n* only"),
        (["a", None, "  ", "\u200b", " b "], "Items: a and b", "Items: \n\n* a\n* b"),
        ([], "Items:", "Items:"),
        ([1, 2.5], "Items: 1 and 2.5", "Items: \n\n* 1\n* 2.5"),
    ],
)
def test_list_values(value: list[object], sms_body: str, email_body: str) -> None:
    assert render_sms("Items: ((items))", {"items": value}).body == sms_body
    assert render_email("s", "Items: ((items))", {"items": value}).body == email_body


def test_list_value_becomes_a_bullet_list_in_the_email() -> None:
    rendered = render_email("s", "Bring:((items))", {"items": ["passport", "letter"]})
    assert rendered.plain_text == "Bring:\n\n• passport\n• letter\n"
    assert rendered.html.count("<li ") == 2


def test_extra_personalisation_is_allowed() -> None:
    assert render_sms("Hi ((name))", {"name": "Jo", "unused": "x", "another": None}).body == "Hi Jo"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(5, "5"), (2.5, "2.5"), (True, "True"), ("", ""), ("  padded  ", "padded ")],
)
def test_scalar_values_are_rendered_with_str(value: object, expected: str) -> None:
    assert render_sms("((v))x", {"v": value}).body == f"{expected}x"


def test_a_later_key_wins_when_two_keys_normalise_alike() -> None:
    assert render_sms("((name))", {"name": "first", "NAME": "second"}).body == "second"


@pytest.mark.parametrize(
    ("body", "personalisation", "message"),
    [
        ("((a)) ((b))", {}, "Missing personalisation: a, b"),
        ("((b)) ((a)) ((B))", {}, "Missing personalisation: b, a"),
        ("((First Name)) ((first_name))", {"other": 1}, "Missing personalisation: First Name"),
        ("((a)) ((b))", {"a": "x"}, "Missing personalisation: b"),
        ("((a)) ((b))", {"a": None, "b": "x"}, "Missing personalisation: a"),
        ("((flag??text)) ((name))", {}, "Missing personalisation: flag, name"),
    ],
)
def test_missing_personalisation_is_reported_all_at_once(
    body: str, personalisation: dict[str, object], message: str
) -> None:
    with pytest.raises(MissingPersonalisation) as caught:
        render_sms(body, personalisation)
    assert caught.value.message == message
    assert str(caught.value) == message
    assert caught.value.field == "personalisation"


def test_missing_email_personalisation_lists_the_subject_first() -> None:
    with pytest.raises(MissingPersonalisation) as caught:
        render_email("About ((topic))", "Dear ((name)), re ((TOPIC)) and ((date))", {})
    assert caught.value.message == "Missing personalisation: topic, name, date"
    assert caught.value.missing == ("topic", "name", "date")


def test_errors_are_value_errors_with_notify_text() -> None:
    for error in (MissingPersonalisation(["a"]), MessageTooLong.sms(919), EmptyMessage()):
        assert isinstance(error, TemplateError)
        assert isinstance(error, ValueError)
        assert error.message == str(error)


# ---------------------------------------------------------------------------------------------------------
# SMS: characters


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Plain ASCII 123 !?", "Plain ASCII 123 !?"),
        ("@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¡ÄÖÑÜ§¿äöñüà", "@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¡ÄÖÑÜ§¿äöñüà"),
        ("^{}\\[~]|€", "^{}\\[~]|€"),
        ("Ŵŷ âêîôû ẁẃẅ ỳýÿ ÂÊÎÔÛŴŶ", "Ŵŷ âêîôû ẁẃẅ ỳýÿ ÂÊÎÔÛŴŶ"),  # Welsh letters are kept
        ("ãõ çñ ā ő ķ", "ao cñ a o k"),  # other diacritics come off
        ("ǖ ḯ ṏ", "ü ï o"),  # stepwise: down to the first character SMS can carry
        ("it’s ‘quoted’ “twice” ‚low„", "it's 'quoted' \"twice\" 'low\""),
        ("a–b—c‑d−e", "a-b-c-d-e"),
        ("wait…", "wait..."),
        ("zero\u200bwidth\u200c\u200d\u2060\ufeff\u180e", "zerowidth"),
        ("no\u00a0break\u202fnarrow\ttab", "no break narrow tab"),
        ("Łódź ł", "Lódz l"),  # ó is one of the Welsh letters
        ("KΩÅ via \u212a\u2126\u212b", "KΩÅ via KΩÅ"),  # Kelvin, Ohm and Angstrom signs
        ("emoji 😀 cjk 中文 cyrillic Жж", "emoji ? cjk ?? cyrillic ??"),
        ("back`tick \x00 \x07 \x7f", "back?tick ? ? ?"),
        ("a ≠ b, a ≮ b", "a ? b, a ? b"),  # never downgraded to the opposite meaning
        ("ω ώ", "? ?"),  # Greek letters outside GSM have no faithful downgrade
    ],
)
def test_sanitise_sms(text: str, expected: str) -> None:
    assert sanitise_sms(text) == expected


def test_sanitise_sms_handles_many_different_characters_at_once() -> None:
    text = "".join(chr(c) for c in range(0x400, 0x430)) + "é’"
    assert sanitise_sms(text) == "?" * 0x30 + "é'"


def test_the_downgrade_table_covers_every_decomposable_character() -> None:
    # The table is built from a few Unicode blocks; prove no other character would downgrade.
    covered = [range(start, stop) for start, stop in _sms._DECOMPOSABLE_RANGES]
    for codepoint in range(0x110000):
        character = chr(codepoint)
        if character in _sms.ALLOWED_CHARACTERS or not unicodedata.decomposition(character):
            continue
        if _sms._downgrade(character) is not None:
            assert any(codepoint in block for block in covered), hex(codepoint)


# ---------------------------------------------------------------------------------------------------------
# SMS: fragments


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("", 1),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("a" * 918, 6),
        ("a" * 919, 7),
        ("{" * 80, 1),  # extension characters take two septets
        ("{" * 81, 2),
        ("a" * 158 + "€", 1),
        ("a" * 159 + "€", 2),
        ("a" * 150 + "^{}\\[~]|€", 2),
        ("é" * 160, 1),  # é is in GSM: no UCS-2
        ("ŵ" * 70, 1),  # a Welsh letter outside GSM forces UCS-2
        ("ŵ" + "a" * 70, 2),
        ("ŵ" + "a" * 133, 2),
        ("ŵ" + "a" * 134, 3),
        ("ŵ" + "{" * 69, 1),  # in UCS-2 extension characters are single units
        ("â" + "a" * 69, 1),
    ],
)
def test_sms_fragment_count(text: str, fragments: int) -> None:
    assert sms_fragment_count(text) == fragments


# ---------------------------------------------------------------------------------------------------------
# SMS: rendering


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("  Hello   there  ", "Hello there"),
        ("Hello , world .", "Hello, world."),
        ("Hello\t,world", "Hello,world"),
        ("a\n\n\n\n\nb", "a\n\nb"),
        ("a \n  b  \n\n c", "a\nb\n\nc"),
        ("a\r\nb\rc", "a\nb\nc"),
        ("\n\nstart and end\n\n", "start and end"),
        ("no\u00a0break and zero\u200bwidth", "no break and zerowidth"),
        ("line\u2028separator", "line\nseparator"),
    ],
)
def test_sms_whitespace_is_normalised_as_notify_does(body: str, expected: str) -> None:
    assert render_sms(body, {}).body == expected


def test_render_sms_fills_sanitises_and_counts() -> None:
    rendered = render_sms("Hi ((name)), it’s ((day))…", {"name": "João", "day": "Llun"})
    assert rendered == RenderedSms(
        body="Hi Joao, it's Llun...",
        billed_body="Hi Joao, it's Llun...",
        fragment_count=1,
        character_count=21,
    )


def test_welsh_message_is_billed_as_ucs2() -> None:
    rendered = render_sms("Bore da ((name)), mae’r ŵyl yma. " + "x" * 46, {"name": "Siân"})
    assert "ŵ" in rendered.body and "â" in rendered.body
    assert rendered.character_count == 75
    assert rendered.fragment_count == 2


@pytest.mark.parametrize(
    ("prefix", "billed"),
    [
        ("Acme", "Acme: Your code is 1234"),
        ("  Acme Council  ", "Acme Council: Your code is 1234"),
        ("Café", "Café: Your code is 1234"),
        ("Ŵyl", "Ŵyl: Your code is 1234"),
        (None, "Your code is 1234"),
        ("", "Your code is 1234"),
    ],
)
def test_prefix_goes_on_the_billed_body_only(prefix: str | None, billed: str) -> None:
    rendered = render_sms("Your code is ((code))", {"code": 1234}, prefix=prefix)
    assert rendered.body == "Your code is 1234"
    assert rendered.billed_body == billed
    assert rendered.character_count == len("Your code is 1234")


def test_prefix_counts_towards_fragments() -> None:
    body = "a" * 155
    assert render_sms(body, {}).fragment_count == 1
    assert render_sms(body, {}, prefix="Acme").fragment_count == 2  # "Acme: " + 155 = 161


def test_welsh_prefix_switches_the_message_to_ucs2() -> None:
    rendered = render_sms("a" * 66, {}, prefix="Ŵyl")
    assert rendered.billed_body == "Ŵyl: " + "a" * 66
    assert rendered.fragment_count == 2  # 71 UCS-2 units
    assert render_sms("a" * 66, {}, prefix="Wyl").fragment_count == 1


def test_918_characters_is_the_limit_and_the_prefix_does_not_count() -> None:
    rendered = render_sms("a" * SMS_CHAR_COUNT_LIMIT, {}, prefix="A long service name")
    assert rendered.character_count == 918
    assert rendered.fragment_count == 7  # 918 + 21 = 939 characters billed


@pytest.mark.parametrize(
    ("body", "personalisation", "length"),
    [
        ("a" * 919, {}, 919),
        ("((x))", {"x": "b" * 5000}, 5000),
        ("Hi ((x))", {"x": "…" * 306}, 921),  # counted as sent: each ellipsis is three characters
    ],
)
def test_too_long_sms(body: str, personalisation: dict[str, object], length: int) -> None:
    with pytest.raises(MessageTooLong) as caught:
        render_sms(body, personalisation, prefix="Acme")
    assert caught.value.message == (
        "Your message is too long. Text messages cannot be longer than 918 characters. "
        f"Your message is {length} characters long."
    )
    assert caught.value.length == length


@pytest.mark.parametrize(
    ("body", "personalisation"),
    [("((x))", {"x": ""}), ("((x))", {"x": "  \n \u200b "}), ("  ", {}), ("((x??shown))", {"x": "no"})],
)
def test_empty_sms(body: str, personalisation: dict[str, object]) -> None:
    with pytest.raises(EmptyMessage) as caught:
        render_sms(body, personalisation, prefix="Acme")
    assert caught.value.message == "Your message is empty."


def test_missing_personalisation_is_checked_before_length() -> None:
    with pytest.raises(MissingPersonalisation):
        render_sms("a" * 2000 + "((x))", {})


# ---------------------------------------------------------------------------------------------------------
# Email: subject and content.body


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Hello ((name))", "Hello Jo"),
        ("  Hello\n  ((name))  \t ", "Hello Jo"),
        ("Hello\u00a0((name))\u200b!", "Hello Jo!"),
        ("Update - ((name)) ,here", "Update – Jo,here"),
        ('It\'s "((name))"', "It’s “Jo”"),
        ("Items: ((items))", "Items: a, b and c"),
        ("Write to o'brien@example.com", "Write to o'brien@example.com"),
    ],
)
def test_email_subject(subject: str, expected: str) -> None:
    personalisation = {"name": "Jo", "items": ["a", "b", "c"]}
    assert render_email(subject, "body", personalisation).subject == expected


def test_email_body_is_the_filled_markdown() -> None:
    rendered = render_email("s", "\n# Hi ((name))\n\n* one\n* ((two))\n\n", {"name": "Jo", "two": "<2>"})
    assert rendered.body == "# Hi Jo\n\n* one\n* <2>"
    assert rendered.sanitised_content == {}


# ---------------------------------------------------------------------------------------------------------
# Email: markdown to HTML and plain text

P = '<p style="Margin: 0 0 20px 0; font-size: 19px; line-height: 25px; color: #0B0C0C;">'
LINK = '<a style="word-wrap: break-word; color: #1D70B8;" href='


@pytest.mark.parametrize(
    ("markdown", "html_fragments", "plain"),
    [
        ("One\n\nTwo", [f"{P}One</p>{P}Two</p>"], "One\n\nTwo\n"),
        ("Line one\nline two", [f"{P}Line one<br>line two</p>"], "Line one\nline two\n"),
        (
            "# Heading\nText",
            ['<h2 style="Margin: 0 0 15px 0;', ">Heading</h2>", f"{P}Text</p>"],
            "Heading\n" + "=" * 65 + "\n\nText\n",
        ),
        ("## Sub", ['<h3 style="', ">Sub</h3>"], "Sub\n" + "-" * 65 + "\n"),
        ("#Tight # ", [">Tight</h2>"], "Tight\n" + "=" * 65 + "\n"),
        ("### Small", [f"{P}Small</p>"], "Small\n"),
        ("Title\n===", [">Title</h2>"], "Title\n" + "=" * 65 + "\n"),
        ("Title\n---", [">Title</h3>"], "Title\n" + "-" * 65 + "\n"),
        (
            "* one\n* two",
            ['list-style-type: disc;">', ">one</li>", ">two</li>", "</ul></td></tr></table>"],
            "• one\n• two\n",
        ),
        ("- one\n- two", ["<ul ", ">one</li>"], "• one\n• two\n"),
        ("• one\n•two", ["<ul ", ">two</li>"], "• one\n• two\n"),
        (
            "1. one\n2. two\n\n3. three",
            ['list-style-type: decimal;">', f"{P}three</p></li>"],
            "1. one\n2. two\n3. three\n",
        ),
        ("* one\ncontinued", [">one<br>continued</li>"], "• one\ncontinued\n"),
        ("-5 degrees and 1.5 litres", [f"{P}-5 degrees and 1.5 litres</p>"], "-5 degrees and 1.5 litres\n"),
        (
            "^ Inset\n^ text\n\nAfter",
            [
                '<div style="Margin: 0 0 20px 0;"><blockquote style="',
                f"{P}Inset<br>text</p></blockquote></div>{P}After</p>",
            ],
            "Inset\ntext\n\nAfter\n",
        ),
        ("Above\n\n---\n\nBelow", ['<hr style="border: 0;'], "Above\n\n" + ("=-" * 33)[:65] + "\n\nBelow\n"),
        ("***", ["<hr "], ("=-" * 33)[:65] + "\n"),
        (
            "See [the guide](https://example.com/guide?a=1&b=2) now",
            [f'{LINK}"https://example.com/guide?a=1&b=2">the guide</a> now'],
            "See the guide: https://example.com/guide?a=1&b=2 now\n",
        ),
        (
            '[t](https://x.org "Title")',
            ['href="https://x.org" title="Title">t</a>'],
            "t (Title): https://x.org\n",
        ),
        (
            "Visit https://www.gov.uk/help. Or (https://x.org/a_(b)).",
            [
                f'{LINK}"https://www.gov.uk/help">https://www.gov.uk/help</a>. Or (',
                '%28b%29">https://x.org/a_(b)</a>).',
            ],
            "Visit https://www.gov.uk/help. Or (https://x.org/a_(b)).\n",
        ),
        ("<https://x.org/y>", [f'{LINK}"https://x.org/y">https://x.org/y</a>'], "https://x.org/y\n"),
        ("[bad](javascript:alert(1))", [f"{P}bad</p>"], "bad\n"),
        ("![alt](https://x.org/i.png) text", [f"{P} text</p>"], "text\n"),
        (
            "*not emphasis* and `not code` and <b>not html</b> & more",
            [f"{P}*not emphasis* and `not code` and &lt;b&gt;not html&lt;/b&gt; &amp; more</p>"],
            "*not emphasis* and `not code` and <b>not html</b> & more\n",
        ),
        (
            "\\# not a heading \\- \\[not a link\\](x) 1\\. \\\\",
            [f"{P}# not a heading – [not a link](x) 1. \\</p>"],
            "# not a heading – [not a link](x) 1. \\\n",
        ),
        ("\\* not a list", [f"{P}* not a list</p>"], "* not a list\n"),
        ('It\'s "quoted" - see', [f"{P}It’s “quoted” – see</p>"], "It’s “quoted” – see\n"),
        ("Visit GOV.UK today", [f"{P}Visit GOV.\u200bUK today</p>"], "Visit GOV.\u200bUK today\n"),
    ],
)
def test_email_markdown(markdown: str, html_fragments: list[str], plain: str) -> None:
    rendered = render_email("s", markdown, {})
    for fragment in html_fragments:
        assert fragment in rendered.html
    assert rendered.plain_text == plain


def test_personalisation_is_html_escaped_in_the_html_part() -> None:
    rendered = render_email("s", "Hi ((name))", {"name": '<script>alert("x")</script> & co'})
    assert rendered.html == f"{P}Hi &lt;script&gt;alert(“x”)&lt;/script&gt; &amp; co</p>"
    assert rendered.body == 'Hi <script>alert("x")</script> & co'
    assert "<script>" in rendered.plain_text


def test_autolink_href_cannot_break_out_of_the_attribute() -> None:
    rendered = render_email("s", 'https://x.org/"onmouseover="alert(1)', {})
    assert 'href="https://x.org/%22onmouseover=%22alert%281%29">' in rendered.html


def test_email_size_limit() -> None:
    just_fits = "a" * EMAIL_MAX_BYTES
    assert render_email("s", "((x))", {"x": just_fits}).body == just_fits
    with pytest.raises(MessageTooLong) as caught:
        render_email("s", "((x))", {"x": "é" * 1_000_001})
    assert caught.value.message == (
        "Your message is too long. Emails cannot be longer than 2000000 bytes. Your message is 2000002 bytes."
    )


@pytest.mark.parametrize(
    ("body", "personalisation"),
    [("", {}), ("((x))", {"x": ""}), ("((x))", {"x": " \n "}), ("((a))((b))", {"a": "", "b": []})],
)
def test_empty_email(body: str, personalisation: dict[str, object]) -> None:
    with pytest.raises(EmptyMessage) as caught:
        render_email("s", body, personalisation)
    assert caught.value.message == "Your message is empty."


def test_only_a_body_wrapped_in_placeholders_can_be_empty() -> None:
    # Notify's rule: text outside a placeholder guarantees content, even if it is only whitespace.
    assert render_email("s", " ((x))", {"x": ""}).body == ""


# ---------------------------------------------------------------------------------------------------------
# Email: sanitise_content_for


def test_sanitise_content_for_as_the_client_integration_test_expects() -> None:
    uuid = "3d3b3f7e-8e1a-4a5e-9f7d-0f6c9d1b2a3c"
    rendered = render_email("Hi ((name))", "Hello ((name))", {"name": uuid}, sanitise_content_for=["name"])
    escaped = uuid.replace("-", "\\-")
    assert rendered.body == f"Hello {escaped}"
    assert rendered.sanitised_content == {"name": {"unsanitised": uuid, "sanitised": escaped}}
    assert rendered.html == f"{P}Hello {uuid}</p>"
    assert rendered.plain_text == f"Hello {uuid}\n"
    assert rendered.subject == f"Hi {uuid}"


@pytest.mark.parametrize(
    ("value", "sanitised"),
    [
        ("Plain words", "Plain words"),
        (
            "**bold** _it_ `code` #tag +1 -1 1. ! |x|",
            "\\*\\*bold\\*\\* \\_it\\_ \\`code\\` \\#tag \\+1 \\-1 1\\. \\! \\|x\\|",
        ),
        ("(a) {b} [c] <d> back\\slash", "\\(a\\) \\{b\\} \\[c\\] \\<d\\> back\\\\slash"),
        ("[click](https://evil.example/phish)", "\\[click\\]\\("),
        ("go to https://evil.example/x?y=1 now", "go to  now"),
        ("or HTTP://EVIL.EXAMPLE", "or "),
        ("or www.evil.example/path", "or "),
        ("or xhttps://evil.example", "or x"),
        ("or https://127.0.0.1:8080/a", "or "),
        ("Mr J.Smith", "Mr J\\. Smith"),
        ("see report.pdf", "see report\\. pdf"),
        ("evil.co.uk/login", "evil\\. co\\. uk/login"),
        ("-evil.example", "\\-evil\\. example"),
        ("write to jo.bloggs@example.com", "write to jo\\.bloggs@example\\.com"),
        ("^ and ~ are left alone", "^ and ~ are left alone"),
    ],
)
def test_sanitise_content_for_values(value: str, sanitised: str) -> None:
    rendered = render_email("s", "((v))!", {"v": value}, sanitise_content_for=["v"])
    assert rendered.body == f"{sanitised}!"
    expected = {} if value == sanitised else {"v": {"unsanitised": value, "sanitised": sanitised}}
    assert rendered.sanitised_content == expected


def test_sanitised_markdown_renders_as_the_original_characters() -> None:
    value = "# **Not** a [heading](x) - 1. item"
    rendered = render_email("s", "((v))", {"v": value}, sanitise_content_for=["v"])
    assert rendered.plain_text == "# **Not** a [heading](x) – 1. item\n"
    assert "<a " not in rendered.html and "<h2" not in rendered.html


def test_sanitise_content_for_only_touches_the_listed_keys() -> None:
    rendered = render_email(
        "s",
        "((a key)) ((b)) ((c))",
        {"A_key": "x-y", "b": "x-y", "c": "plain"},
        sanitise_content_for=["a key", "c", "not-there"],
    )
    assert rendered.body == "x\\-y x-y plain"
    assert rendered.sanitised_content == {"A_key": {"unsanitised": "x-y", "sanitised": "x\\-y"}}


def test_sanitise_content_for_lists_and_numbers() -> None:
    rendered = render_email(
        "s", "((items)) ((n))", {"items": ["a-b", None, "c"], "n": -1.5}, sanitise_content_for=["items", "n"]
    )
    assert rendered.body == "* a\\-b\n* c \\-1\\.5"
    assert rendered.sanitised_content == {
        "items": {"unsanitised": "a-b\nc", "sanitised": "a\\-b\nc"},
        "n": {"unsanitised": "-1.5", "sanitised": "\\-1\\.5"},
    }


def test_rendered_email_shape() -> None:
    rendered = render_email("Subject", "Body", {})
    assert rendered == RenderedEmail(
        subject="Subject", body="Body", html=f"{P}Body</p>", sanitised_content={}, plain_text="Body\n"
    )


def test_nice_typography_leaves_email_addresses_alone() -> None:
    assert _markdown.nice_typography("mail o'neil@example.com, it's") == "mail o'neil@example.com, it’s"


def test_a_template_longer_than_the_cache_holds_is_parsed_alike_and_not_kept() -> None:
    long_text = "Dear ((name)), " + "word " * 2_500 + "((code))"
    kept = _placeholders._parse_cached.cache_info().currsize
    assert _placeholders.parse(long_text) == _placeholders._parse(long_text)
    assert _placeholders._parse_cached.cache_info().currsize == kept
    short = f"Hello ((name)) {uuid.uuid4()}"
    assert _placeholders.parse(short) is _placeholders.parse(short)  # cached: the same object
