"""Properties of template rendering that must hold for any input."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from herald.domain.templates import (
    TemplateError,
    email_parts,
    render_email,
    render_sms,
    sanitise_sms,
    sms_fragment_count,
)
from herald.domain.templates._placeholders import fill, fill_strings, lookup, parse
from herald.domain.templates._sms import (
    ALLOWED_CHARACTERS,
    EXTENDED_GSM_CHARACTERS,
    _is_sendable_as_is,
    normalise_sms_whitespace,
)

# Text that exercises the interesting characters: markdown, placeholders, Welsh, GSM extensions,
# downgradable and undowngradable characters, and all kinds of whitespace.
_ALPHABET = st.sampled_from(
    list("ab Z09 .,!?()#*-_^[]{}\\|~€`<>&\"'\n\r\t") + list("éêŵŷâÂøΩ’–…\u00a0\u200b\u2028😀中Ж≠ǖ")
)
interesting_text = st.text(alphabet=_ALPHABET, max_size=60) | st.text(max_size=60)
scalar = st.none() | interesting_text | st.integers() | st.floats(allow_nan=True) | st.booleans()
value = scalar | st.lists(scalar, max_size=4)
keys = st.sampled_from(["name", "Name", "first name", "FIRST_NAME", "flag", "items", "x"]) | st.text(max_size=8)
personalisation = st.dictionaries(keys, value, max_size=6)
template = st.lists(
    interesting_text
    | st.sampled_from(["((name))", "((first_name))", "((flag??shown))", "((items))", "((x))", "# ", "\n\n* "]),
    max_size=8,
).map("".join)


@settings(max_examples=150, deadline=None)
@given(body=template, values=personalisation, prefix=st.none() | interesting_text)
def test_render_sms_raises_nothing_but_template_errors(
    body: str, values: dict[str, object], prefix: str | None
) -> None:
    try:
        rendered = render_sms(body, values, prefix=prefix)
    except TemplateError:
        return
    assert set(rendered.body) <= ALLOWED_CHARACTERS
    assert set(rendered.billed_body) <= ALLOWED_CHARACTERS
    assert 0 < rendered.character_count == len(rendered.body) <= 918
    assert rendered.fragment_count == sms_fragment_count(rendered.billed_body) >= 1


@settings(max_examples=150, deadline=None)
@given(subject=template, body=template, values=personalisation, sanitise=st.lists(keys, max_size=3))
def test_render_email_raises_nothing_but_template_errors(
    subject: str, body: str, values: dict[str, object], sanitise: list[str]
) -> None:
    try:
        rendered = render_email(subject, body, values, sanitise_content_for=sanitise)
    except TemplateError:
        return
    assert "\n" not in rendered.subject
    assert rendered.plain_text.endswith("\n")
    for change in rendered.sanitised_content.values():
        assert change["unsanitised"] != change["sanitised"]


# Links with a placeholder in them (their values are encoded for the HTML part), and bodies whose filled
# ends are whitespace: the two cases where the HTML part is not the filled body's own rendering.
_LINKED = st.sampled_from(["[a](https://x.org/((name)))", "https://x.org/?q=((x))", " ", "\n", "((flag??\n))"])


@settings(max_examples=300, deadline=None)
@given(
    subject=template,
    body=st.lists(template | _LINKED, max_size=4).map("".join),
    values=personalisation,
    sanitise=st.lists(keys, max_size=3),
)
def test_an_email_accepted_without_its_parts_gets_the_same_ones_at_its_hand_off(
    subject: str, body: str, values: dict[str, object], sanitise: list[str]
) -> None:
    try:
        whole = render_email(subject, body, values, sanitise_content_for=sanitise)
    except TemplateError:
        return
    accepted = render_email(subject, body, values, sanitise_content_for=sanitise, html=False)
    assert (accepted.subject, accepted.body, accepted.sanitised_content) == (
        whole.subject,
        whole.body,
        whole.sanitised_content,
    )
    if accepted.html:  # made at ingest: a placeholder in a link, or whitespace at the filled body's ends
        assert (accepted.html, accepted.plain_text) == (whole.html, whole.plain_text)
    else:
        assert email_parts(accepted.body) == (whole.html, whole.plain_text)


@settings(max_examples=200, deadline=None)
@given(text=interesting_text)
def test_sanitising_is_idempotent_and_leaves_only_sms_characters(text: str) -> None:
    once = sanitise_sms(text)
    assert sanitise_sms(once) == once
    assert set(once) <= ALLOWED_CHARACTERS


@settings(max_examples=200, deadline=None)
@given(text=interesting_text, more=interesting_text)
def test_fragment_count_never_falls_as_the_message_grows(text: str, more: str) -> None:
    shorter = sanitise_sms(text)
    longer = sanitise_sms(text + more)
    assert longer.startswith(shorter)
    assert 1 <= sms_fragment_count(shorter) <= sms_fragment_count(longer)


@settings(max_examples=50, deadline=None)
@given(length=st.integers(min_value=0, max_value=1200), extension=st.booleans(), welsh=st.booleans())
def test_fragment_count_is_monotonic_in_length(length: int, extension: bool, welsh: bool) -> None:
    filler = "{" if extension else "a"
    prefix = "ŵ" if welsh else ""
    counts = [sms_fragment_count(prefix + filler * n) for n in (length, length + 1, length + 67)]
    assert counts == sorted(counts)


@settings(max_examples=300, deadline=None)
@given(body=template, values=personalisation, prefix=interesting_text)
def test_prefix_shortcut_matches_cleaning_the_whole_message(body: str, values: dict[str, object], prefix: str) -> None:
    try:
        rendered = render_sms(body, values, prefix=prefix)
    except TemplateError:
        return
    filled = fill(parse(body), lookup(values), markdown_lists=False)
    if prefix:
        whole = sanitise_sms(normalise_sms_whitespace(f"{prefix.strip()}: {filled}"))
        assert rendered.billed_body == whole


@settings(max_examples=300, deadline=None)
@given(body=template | st.sampled_from(["100%", "%s ((name)) %%((x))%"]), values=personalisation)
def test_render_sms_is_the_filled_template_cleaned_up_and_sanitised(body: str, values: dict[str, object]) -> None:
    # The documented rules, written out without render_sms's shortcuts (string fills, text sent as it is).
    try:
        rendered = render_sms(body, values)
    except TemplateError:
        return
    filled = fill(parse(body), lookup(values), markdown_lists=False)
    assert rendered.body == rendered.billed_body == sanitise_sms(normalise_sms_whitespace(filled))


@settings(max_examples=300, deadline=None)
@given(body=template | st.just("%s ((name)) %%((x))%"), values=personalisation)
def test_string_fill_is_fill_whenever_it_answers(body: str, values: dict[str, object]) -> None:
    parsed, looked_up = parse(body), lookup(values)
    filled = fill_strings(parsed, looked_up)
    answers = all(slot.conditional is None and type(looked_up.get(slot.key)) is str for slot in parsed.slots)
    assert (filled is not None) is answers
    if filled is not None:
        assert filled == fill(parsed, looked_up, markdown_lists=False) == fill(parsed, looked_up, markdown_lists=True)


_ASCII_LINES = st.text(alphabet=st.sampled_from(list("ab .,`~^{\n\t\r\x1b")), max_size=80)


@settings(max_examples=500, deadline=None)
@given(text=interesting_text | _ASCII_LINES)
def test_text_sent_as_it_is_is_what_clean_up_and_sanitising_leave_alone(text: str) -> None:
    if _is_sendable_as_is(text):
        assert normalise_sms_whitespace(text) == text
        assert sanitise_sms(text) == text


def test_the_usual_message_is_sent_as_it_is() -> None:
    assert _is_sendable_as_is("Hello Ada, your code is 12.\n\nDo not share it: call 0300 123 4567 (9am-5pm)!")
    assert not _is_sendable_as_is("Hello Ada , your code")
    assert not _is_sendable_as_is("Helló Ada")
    assert not _is_sendable_as_is("Hello\n")


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("ab \n^{}[]~|\\")), max_size=400))
def test_an_ascii_message_counts_its_extension_characters_twice(text: str) -> None:
    units = len(text) + sum(character in EXTENDED_GSM_CHARACTERS for character in text)
    assert sms_fragment_count(text) == (1 if units <= 160 else math.ceil(units / 153))
