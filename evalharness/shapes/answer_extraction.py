"""Pull final answers out of free-form generations and normalise them for exact match."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

# lm-eval's gsm8k_cot strict pattern: the exemplars end with "The answer is N."
STRICT_ANSWER = re.compile(r"The answer is (\-?[0-9\.\,]+)\.")
# Any number, optionally with a dollar sign, thousands separators and decimals.
ANY_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def normalize_number(text: str) -> str:
    """Drop commas, '$', surrounding space and a trailing period; '18.00' and '18' compare equal."""
    cleaned = text.strip().replace(",", "").replace("$", "").rstrip(".").strip()
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return cleaned
    return format(value.normalize(), "f") if value == value.to_integral_value() else str(value.normalize())


def strict_answer(generation: str) -> str | None:
    match = STRICT_ANSWER.search(generation)
    return normalize_number(match.group(1)) if match else None


def last_number(generation: str) -> str | None:
    matches = ANY_NUMBER.findall(generation)
    return normalize_number(matches[-1]) if matches else None


def gsm8k_gold(answer: str) -> str:
    """The number after '####' in a GSM8K solution."""
    _, sep, final = answer.rpartition("####")
    if not sep:
        raise ValueError("no '####' in the answer")
    return normalize_number(final)
