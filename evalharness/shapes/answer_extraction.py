"""Pull final answers out of free-form generations and normalise them for exact match."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
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


def boxed(generation: str) -> str | None:
    """The content of the last ``\\boxed{…}`` (braces may nest), as MATH solutions mark answers."""
    start = generation.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for i in range(begin, len(generation)):
        if generation[i] == "{":
            depth += 1
        elif generation[i] == "}":
            if depth == 0:
                return generation[begin:i].strip()
            depth -= 1
    return None


def first_line(generation: str) -> str:
    """The generation up to its first newline, stripped (short answers: NQ, TriviaQA)."""
    return generation.strip().split("\n", 1)[0].strip()


# --- normalisation and comparison (SQuAD's evaluate-v2.0.py rules) ------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def normalize_text(text: str) -> str:
    """Lower case, drop punctuation and the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str | None, references: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised reference (an alias)."""
    if prediction is None:
        return 0.0
    normalized = normalize_text(prediction)
    return float(any(normalized == normalize_text(ref) for ref in references))


def token_f1(prediction: str | None, references: Sequence[str]) -> float:
    """The best bag-of-tokens F1 against any reference; an empty reference (an unanswerable
    SQuAD v2 question) scores 1 only for an empty prediction."""
    predicted = normalize_text(prediction or "").split()
    best = 0.0
    for reference in references:
        gold = normalize_text(reference).split()
        if not predicted or not gold:
            best = max(best, float(predicted == gold))
            continue
        common = Counter(predicted) & Counter(gold)
        overlap = sum(common.values())
        if overlap:
            precision, recall = overlap / len(predicted), overlap / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def numeric_match(prediction: str | None, references: Sequence[str]) -> float:
    """1.0 when the number equals a reference number (both normalised: '18.00' == '18')."""
    if prediction is None:
        return 0.0
    return float(any(normalize_number(prediction) == normalize_number(ref) for ref in references))


# --- "the answer is X" (BIG-Bench Hard chain of thought) ------------------------------------

THE_ANSWER_IS = re.compile(r"the answer is (.*)", re.IGNORECASE)
_CHOICE = re.compile(r"\(([A-Z])\)")
_LABELS = frozenset(("true", "false", "yes", "no", "valid", "invalid"))


def after_the_answer_is(generation: str) -> str | None:
    """The rest of the line after the first "the answer is ", without a final period (lm-eval's
    bbh cot_fewshot ``get-answer`` filter; any letter case)."""
    match = THE_ANSWER_IS.search(generation)
    if not match:
        return None
    answer = match.group(1).strip()
    return answer[:-1].strip() if answer.endswith(".") else answer


def answer_form_match(prediction: str | None, references: Sequence[str]) -> float:
    """Exact match in the form of the reference: a choice "(B)" matches "(B) …" or a bare "B";
    True/False, Yes/No and valid/invalid compare the first word in any case; integers compare
    as numbers; anything else (sorted words, bracket sequences) must match up to whitespace."""
    if prediction is None:
        return 0.0
    for reference in references:
        ref = reference.strip()
        if _CHOICE.fullmatch(ref):
            found = _CHOICE.search(prediction)
            letter = found.group(1) if found else prediction.strip().rstrip(".)").lstrip("(")
            matched = f"({letter})" == ref
        elif ref.lower() in _LABELS:
            words = prediction.split()
            matched = bool(words) and words[0].strip(".,!\"'").lower() == ref.lower()
        elif re.fullmatch(r"-?\d+", ref):
            number = ANY_NUMBER.search(prediction)
            matched = number is not None and normalize_number(number.group(0)) == normalize_number(ref)
        else:
            matched = " ".join(prediction.split()) == " ".join(ref.split())
        if matched:
            return 1.0
    return 0.0
