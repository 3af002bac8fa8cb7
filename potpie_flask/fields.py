"""Strict marshmallow fields whose errors carry pydantic-v1 `type` and `ctx` (SPEC section 3)."""
import datetime as dt
import re

from marshmallow import ValidationError, fields


class Problem(str):
    """An error message that also knows its pydantic type and context."""

    def __new__(cls, msg, type_, ctx=None):
        obj = super().__new__(cls, msg)
        obj.type = type_
        obj.ctx = ctx
        return obj


def fail(msg, type_, **ctx):
    """Raise a validation error with an exact pydantic-style msg, type and ctx."""
    raise ValidationError(Problem(msg, type_, ctx or None))


# Messages of marshmallow's own errors, renamed in BASE_MESSAGES and typed in errors.py.
MISSING = "field required"
NOT_NULL = "none is not an allowed value"
NOT_A_DICT = "value is not a valid dict"
NOT_A_LIST = "value is not a valid list"
EXTRA = "extra fields not permitted"

BASE_MESSAGES = {"required": MISSING, "null": NOT_NULL}

_INTEGER = re.compile(r"[+-]?[0-9]+")
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# Descriptions may span lines: tab, LF and CR are allowed there.
_CONTROL_MULTILINE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_WHITESPACE = re.compile(r"\s")
# Control characters that str.strip() takes for whitespace and would drop unseen at the ends
# (U+001C-U+001F, U+0085); tab, LF, VT, FF and CR there are whitespace, stripped.
_CONTROL_NOT_WHITESPACE = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f]")


def stripped(value):
    """The value without surrounding whitespace, after refusing any control character that is none.

    Tab, LF, VT, FF and CR are whitespace, stripped at the ends (check_text refuses them
    inside a single-line text); every other control character is refused wherever it sits.
    """
    if _CONTROL_NOT_WHITESPACE.search(value):
        fail("must not contain control characters", "value_error")
    return value.strip()


def check_text(value, *, min_length=0, max_length=None, multiline=False, no_whitespace=False):
    """Apply the string rules shared by every text field and return the value."""
    if _SURROGATE.search(value):
        fail("must not contain unpaired surrogates", "value_error")
    if (_CONTROL_MULTILINE if multiline else _CONTROL).search(value):
        fail("must not contain control characters", "value_error")
    if no_whitespace and _WHITESPACE.search(value):
        fail("must not contain whitespace", "value_error")
    # Blank is too short (SPEC section 3): a tag of spaces names nothing.
    if len(value) < min_length or (min_length and value.isspace()):
        fail(
            f"ensure this value has at least {min_length} characters",
            "value_error.any_str.min_length",
            limit_value=min_length,
        )
    if max_length is not None and len(value) > max_length:
        fail(
            f"ensure this value has at most {max_length} characters",
            "value_error.any_str.max_length",
            limit_value=max_length,
        )
    return value


class _RulesInDeserialize:
    """A field whose rules all live in its `_deserialize`, so there are no validators to run.

    marshmallow builds a validator chain (`validate.And`) on every call, empty or not:
    loading a save body took 71 µs with it, 62 without.
    """

    def _validate(self, value):
        if self.validators:
            super()._validate(value)


class Text(_RulesInDeserialize, fields.Field):
    """A JSON string with length and character rules; optionally stripped first."""

    default_error_messages = BASE_MESSAGES

    def __init__(self, *, min_length=0, max_length=None, strip=False, multiline=False,
                 no_whitespace=False, **kwargs):
        super().__init__(**kwargs)
        self.rules = dict(min_length=min_length, max_length=max_length,
                          multiline=multiline, no_whitespace=no_whitespace)
        self.strip = strip
        self.metadata.setdefault("type", "string")
        self.metadata.setdefault("minLength", min_length)
        if max_length is not None:
            self.metadata.setdefault("maxLength", max_length)

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            fail("str type expected", "type_error.str")
        if self.strip:
            value = stripped(value)
        return check_text(value, **self.rules)


class Choice(_RulesInDeserialize, fields.Field):
    """A case-sensitive enumeration of strings."""

    default_error_messages = BASE_MESSAGES

    def __init__(self, choices, **kwargs):
        super().__init__(**kwargs)
        self.choices = tuple(choices)
        self.metadata.setdefault("enum", list(self.choices))
        self.metadata.setdefault("type", "string")
        permitted = ", ".join(f"'{c}'" for c in self.choices)
        self.message = f"value is not a valid enumeration member; permitted: {permitted}"

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str) or value not in self.choices:
            fail(self.message, "type_error.enum", enum_values=list(self.choices))
        return value


class StrictBool(_RulesInDeserialize, fields.Boolean):
    """JSON true or false, nothing else."""

    default_error_messages = BASE_MESSAGES

    def _deserialize(self, value, attr, data, **kwargs):
        if value is True or value is False:
            return value
        fail("value could not be parsed to a boolean", "type_error.bool")


class UtcDateTime(_RulesInDeserialize, fields.DateTime):
    """An ISO 8601 datetime, converted to naive UTC; no time zone means UTC."""

    default_error_messages = BASE_MESSAGES
    # A date and a time, at least to the minute, and maybe an offset: fromisoformat alone takes
    # a date, an hour alone, a week date, any character between date and time, or one before
    # a Z (Python 3.11).
    _DATE_AND_TIME = re.compile(
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]+)?)?"
        r"([Zz]|[+-][0-9]{2}(:?[0-9]{2}(:?[0-9]{2}([.,][0-9]+)?)?)?)?")

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            if not (isinstance(value, str) and self._DATE_AND_TIME.fullmatch(value)):
                raise ValueError(value)
            # The rest in any ISO 8601 form, a Z suffix included, from Python 3.11 (setup.cfg);
            # RFC 3339 allows its z in lower case too, as the t this takes already.
            parsed = dt.datetime.fromisoformat(value[:-1] + "Z" if value.endswith("z") else value)
            if parsed.tzinfo is not None:
                # OverflowError: an offset that moves year 1 or 9999 out of datetime's range.
                parsed = parsed.astimezone(dt.timezone.utc).replace(tzinfo=None)
        except (TypeError, ValueError, OverflowError):
            fail("invalid datetime format", "value_error.datetime")
        return parsed


class BoundedList(_RulesInDeserialize, fields.List):
    """A JSON list with a maximum number of items."""

    default_error_messages = {**BASE_MESSAGES, "invalid": NOT_A_LIST}

    def __init__(self, inner, *, max_items, **kwargs):
        super().__init__(inner, **kwargs)
        self.max_items = max_items
        self.metadata.setdefault("maxItems", max_items)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, list) and len(value) > self.max_items:
            fail(
                f"ensure this value has at most {self.max_items} items",
                "value_error.list.max_items",
                limit_value=self.max_items,
            )
        return super()._deserialize(value, attr, data, **kwargs)


class Object(_RulesInDeserialize, fields.Nested):
    """A nested JSON object validated by its own schema."""

    default_error_messages = {**BASE_MESSAGES, "type": NOT_A_DICT}


class QueryInt(_RulesInDeserialize, fields.Field):
    """An integer query parameter within [minimum, maximum]."""

    default_error_messages = BASE_MESSAGES

    def __init__(self, *, minimum=None, maximum=None, **kwargs):
        super().__init__(**kwargs)
        self.minimum, self.maximum = minimum, maximum
        self.metadata.setdefault("type", "integer")
        if minimum is not None:
            self.metadata.setdefault("minimum", minimum)
        if maximum is not None:
            self.metadata.setdefault("maximum", maximum)

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str) or not _INTEGER.fullmatch(value):
            fail("value is not a valid integer", "type_error.integer")
        try:
            number = int(value)
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            fail("value is not a valid integer", "type_error.integer")
        if self.minimum is not None and number < self.minimum:
            fail(f"ensure this value is greater than or equal to {self.minimum}",
                 "value_error.number.not_ge", limit_value=self.minimum)
        if self.maximum is not None and number > self.maximum:
            fail(f"ensure this value is less than or equal to {self.maximum}",
                 "value_error.number.not_le", limit_value=self.maximum)
        return number


class QueryBool(_RulesInDeserialize, fields.Field):
    """`true` or `false` in a query string."""

    default_error_messages = BASE_MESSAGES

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.metadata.setdefault("type", "boolean")

    def _deserialize(self, value, attr, data, **kwargs):
        if value == "true":
            return True
        if value == "false":
            return False
        fail("value could not be parsed to a boolean", "type_error.bool")
