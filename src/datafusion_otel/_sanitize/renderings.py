"""Every text DataFusion 55 may print for a literal value.

A value reaches a plan, an error or a file in many forms: quoted and bare, with its quotes
doubled, in graphviz with ``"`` turned into ``_``, a LIKE prefix with its last character
incremented (Parquet pruning bounds), a timestamp as epoch seconds / ms / us / ns, a float in
plain and scientific notation, binary as ``192,255,238`` or ``C0FFEE``. `renderings` returns
them all for one value; `redact` replaces them and checks that none is left.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import math
from collections.abc import Iterable
from typing import Any

__all__ = ["renderings", "string_renderings"]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_EPOCH_DATE = dt.date(1970, 1, 1)
_LIKE_WILDCARDS = ("%", "_")


def _incremented(text: str) -> str | None:
    """``text`` with its last character incremented: DataFusion's prefix upper bound."""
    if not text:
        return None
    last = ord(text[-1])
    if last >= 0x10FFFF:
        return None
    try:
        return text[:-1] + chr(last + 1)
    except ValueError:  # pragma: no cover - surrogate range
        return None


def _like_prefix(pattern: str) -> str:
    """The fixed prefix of a LIKE pattern, backslash escapes resolved (as DataFusion reads it)."""
    out: list[str] = []
    chars = iter(pattern)
    for char in chars:
        if char == "\\":
            out.append(next(chars, ""))
        elif char in _LIKE_WILDCARDS:
            break
        else:
            out.append(char)
    return "".join(out)


def _temporal_from_text(text: str) -> list[str]:
    """Epoch renderings of ``text`` when it reads as a date or a timestamp."""
    body = text.strip()
    if not (8 <= len(body) <= 40) or not body[:4].isdigit():
        return []
    out: list[str] = []
    try:
        stamp = dt.datetime.fromisoformat(body.replace(" ", "T", 1))
    except ValueError:
        return out
    out.extend(_timestamp_forms(stamp))
    if len(body) == 10:  # a date: Date32 counts days
        out.append(str((stamp.date() - _EPOCH_DATE).days))
    return out


def _timestamp_forms(stamp: dt.datetime) -> list[str]:
    aware = stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=dt.timezone.utc)
    delta = aware - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    forms = [str(micros * 1000), str(micros), str(micros // 1000), str(micros // 1_000_000)]
    naive = stamp.replace(tzinfo=None)
    forms += [naive.isoformat(), naive.isoformat(sep=" "), str(naive)]
    forms += [aware.isoformat(), naive.isoformat() + "Z", naive.isoformat() + "+00:00"]
    return forms


def string_renderings(text: str) -> list[str]:
    """Renderings of a string literal (also one read from SQL text).

    Args:
        text: The literal's value.

    Returns:
        The value as printed bare, quoted (``'`` doubled), as graphviz prints it (``"`` ->
        ``_``), Rust-debug escaped, line by line, as a LIKE prefix and its increment, and the
        epoch / day forms of a date or timestamp text.
    """
    out = [text, text.replace('"', "_"), text.replace("'", "''"), text.strip()]
    out.append(text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n"))
    out.append(text.replace("\n", "\\n"))
    out.append(text.replace('"', '\\"'))
    out.extend(line for line in text.splitlines())
    graphviz = text.replace('"', "_")  # DataFusion's DOT: Utf8(_value_), "_" is a word character
    out.append(f"_{graphviz}_")
    for line in graphviz.splitlines():
        out += [f"_{line}", f"{line}_", f"_{line}_"]
    prefix = text
    for wildcard in _LIKE_WILDCARDS:
        if wildcard in prefix:
            prefix = prefix.split(wildcard, 1)[0]
    for base in {text, prefix, text.rstrip("%"), _like_prefix(text)}:
        out.append(base)
        bumped = _incremented(base)
        if bumped is not None:
            out.append(bumped)
    out.extend(_temporal_from_text(text))
    return out


def _int_renderings(value: int) -> list[str]:
    out = [str(value), str(-value), f"{value}.0", f"{-value}.0", format(value, "x"),
           format(value, "X"), format(abs(value), "x"), format(abs(value), "X")]  # fmt: skip
    if abs(value) >= 10**15:
        out.append(_rust_float(float(value)))
        out.append(repr(float(value)))
    return out


def _rust_float(value: float) -> str:
    """``value`` as Rust's Display prints an f64: no exponent, ``.0`` dropped."""
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value == int(value) and abs(value) < 1e300:
        return str(int(value))
    return format(decimal.Decimal(repr(value)), "f")


def _float_renderings(value: float) -> list[str]:
    if math.isnan(value) or math.isinf(value):
        return []
    out = [repr(value), str(value), _rust_float(value), f"{value:e}", f"{value:g}"]
    out.append(repr(float(f"{value:.7g}")))  # the same value as Float32 prints it
    mantissa, _, exponent = repr(value).partition("e")
    if exponent:
        out.append(f"{mantissa}e{int(exponent)}")
        out.append(f"{mantissa}E{int(exponent)}")
    out.extend(_decimal_renderings(decimal.Decimal(repr(value))))
    if value == int(value):
        out.extend(_int_renderings(int(value)))
    return out


def _decimal_renderings(value: decimal.Decimal) -> list[str]:
    if not value.is_finite():
        return []
    sign, digits, exponent = value.as_tuple()
    unscaled = "".join(str(d) for d in digits).lstrip("0") or "0"
    out = [str(value), format(value, "f"), unscaled, "-" + unscaled]
    scale = -int(exponent) if isinstance(exponent, int) else 0
    for extra in range(0, 4):  # decimal with a wider scale: 12.345 as 12.34500
        out.append(format(value.quantize(decimal.Decimal(1).scaleb(-(scale + extra))), "f"))
        out.append(unscaled + "0" * extra)
    if sign:
        out.append(format(-value, "f"))
    return out


def _bytes_renderings(value: bytes) -> list[str]:
    if not value:
        return []
    out = [",".join(str(b) for b in value), value.hex(), value.hex().upper(),
           "[" + ", ".join(str(b) for b in value) + "]"]  # fmt: skip
    out.append(str(int.from_bytes(value, "big")))
    with contextlib.suppress(UnicodeDecodeError):
        out.extend(string_renderings(value.decode("utf-8")))
    return out


def _interval_renderings(value: Any) -> list[str]:
    parts = [getattr(value, name, None) for name in ("months", "days", "nanoseconds")]
    out: list[str] = []
    for part in parts:
        if isinstance(part, int) and part:
            out.extend(_int_renderings(part))
    return out


def renderings(value: Any) -> set[str]:
    """Return every rendering DataFusion 55 may print for ``value``.

    Args:
        value: A literal's Python value: str, int, float, Decimal, bytes, date, datetime,
            time, timedelta, interval (``months``/``days``/``nanoseconds``), list or dict.

    Returns:
        The renderings (empty strings removed). Values of a list or struct and their
        combined form (``[a, b]``) are included.
    """
    out: list[str] = []
    _collect(value, out, 0)
    return {r for r in out if r}


def _collect(value: Any, out: list[str], depth: int) -> None:
    if value is None or isinstance(value, bool) or depth > 8:
        return
    if isinstance(value, str):
        out.extend(string_renderings(value))
    elif isinstance(value, int):
        out.extend(_int_renderings(value))
    elif isinstance(value, float):
        out.extend(_float_renderings(value))
    elif isinstance(value, decimal.Decimal):
        out.extend(_decimal_renderings(value))
    elif isinstance(value, (bytes, bytearray, memoryview)):
        out.extend(_bytes_renderings(bytes(value)))
    elif isinstance(value, dt.datetime):
        out.extend(_timestamp_forms(value))
    elif isinstance(value, dt.date):
        out += [value.isoformat(), str((value - _EPOCH_DATE).days)]
    elif isinstance(value, dt.time):
        out += [value.isoformat(), str(value)]
        seconds = value.hour * 3600 + value.minute * 60 + value.second
        micros = seconds * 1_000_000 + value.microsecond
        out += [str(seconds), str(micros // 1000), str(micros), str(micros * 1000)]
    elif isinstance(value, dt.timedelta):
        micros = value // dt.timedelta(microseconds=1)
        out += [str(value), str(micros * 1000), str(micros), str(micros // 1000)]
        out.append(str(int(value.total_seconds())))
    elif isinstance(value, dict):
        _collect_many(value.values(), out, depth)
    elif isinstance(value, (list, tuple)):
        _collect_many(value, out, depth)
        out.append("[" + ", ".join(str(v) for v in value) + "]")
    elif hasattr(value, "nanoseconds") and hasattr(value, "days"):
        out.extend(_interval_renderings(value))
    else:  # an unknown value type: its text at least
        out.append(str(value))


def _collect_many(values: Iterable[Any], out: list[str], depth: int) -> None:
    for item in values:
        _collect(item, out, depth + 1)
