"""MATH final answers: Minerva's extraction and normalisation, and answer equivalence.

The Minerva prompt (Lewkowycz et al., 2022) ends every solution with "Final Answer: The final
answer is X. I hope it is correct."; MATH's reference solutions mark X with ``\\boxed{}``.
``normalize_final_answer`` follows the paper's Appendix D (as lm-eval's ``minerva_math`` copies it):
units and filler words are dropped, ``\\text{}``/``\\textbf{}``/``\\overline{}``/``\\boxed{}`` are
unwrapped, shorthand ``\\frac12``/``\\sqrt2`` gets braces, spaces and ``$`` go. Before it, the MATH
authors' own rules that Minerva's omit: ``\\left``/``\\right``, ``\\dfrac``/``\\tfrac``, ``\\!``.
Equivalence is equality of the normalised strings, or of their values when both are plain
rational numbers (``0.5`` and ``\\frac{1}{2}``); Minerva's SymPy check is not used (see README).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fractions import Fraction

from evalharness.shapes.answer_extraction import boxed

# The answer runs to ". I hope it is correct" or, where a stop string cut that, the end of the line.
FINAL_ANSWER = re.compile(r"Final Answer: The final answer is(.*?)(?:\.? I hope it is correct|\n|$)")

# Minerva, Appendix D.
SUBSTITUTIONS = (
    ("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), (r"\ ", ""), (" ", ""), ("mbox", "text"),
    (",\\text{and}", ","), ("\\text{and}", ","), ("\\text{m}", "\\text{}"),
)  # fmt: skip
REMOVED_EXPRESSIONS = (
    "square", "ways", "integers", "dollars", "mph", "inches", "ft", "hours", "km", "units",
    "\\ldots", "sue", "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm",
    "pounds", "meters", "meals", "edges", "students", "childrentickets", "multiples",
    "\\text{s}", "\\text{.}", "\\text{\ns}", "\\text{}^2", "\\text{}^3", "\\text{\n}", "\\text{}",
    r"\mathrm{th}", r"^\circ", r"^{\circ}", r"\;", r",\!", "{,}", '"', "\\dots",
)  # fmt: skip
# The MATH authors' strip_string rules that Minerva's list lacks.
LATEX_SPELLINGS = (("\\left", ""), ("\\right", ""), ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\!", ""))


def minerva_answer(generation: str) -> str | None:
    """X from "Final Answer: The final answer is X. I hope it is correct." (the closing sentence
    may be cut by a stop string), else the last ``\\boxed{}``, else None."""
    match = FINAL_ANSWER.search(generation)
    if match and match.group(1).strip().rstrip("."):
        return match.group(1).strip().rstrip(".")
    return boxed(generation)


def normalize_final_answer(answer: str) -> str:
    """Minerva's normalisation, after the MATH authors' LaTeX spellings (see the module doc)."""
    for before, after in LATEX_SPELLINGS:
        answer = answer.replace(before, after)
    answer = answer.split("=")[-1]
    for before, after in SUBSTITUTIONS:
        answer = answer.replace(before, after)
    for expression in REMOVED_EXPRESSIONS:
        answer = answer.replace(expression, "")
    answer = re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\\3$", answer)
    answer = re.sub(r"(\\text\{)(.*?)(\})", "\\2", answer)
    answer = re.sub(r"(\\textbf\{)(.*?)(\})", "\\2", answer)
    answer = re.sub(r"(\\overline\{)(.*?)(\})", "\\2", answer)
    answer = re.sub(r"(\\boxed\{)(.*)(\})", "\\2", answer)
    answer = re.sub(r"(frac)([^{])(.)", "frac{\\2}{\\3}", answer)
    answer = re.sub(r"(sqrt)([^{])", "sqrt{\\2}", answer)
    answer = answer.replace("$", "")
    if answer.replace(",", "").isdigit():
        answer = answer.replace(",", "")
    return answer


_FRACTION = re.compile(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}")
_NUMBER = re.compile(r"-?(\d+(\.\d*)?|\.\d+)")


def as_rational(normalized: str) -> Fraction | None:
    """The value of a normalised answer that is a plain number or ``\\frac{a}{b}``, else None."""
    text = normalized.strip()
    fraction = _FRACTION.fullmatch(text)
    try:
        if fraction:
            sign, numerator, denominator = fraction.groups()
            value = Fraction(int(numerator), int(denominator))
            return -value if sign else value
        if _NUMBER.fullmatch(text):
            return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None
    return None


def math_equivalent(prediction: str | None, references: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised reference, as a string or as a
    rational number; 0.0 for no answer."""
    if prediction is None:
        return 0.0
    predicted = normalize_final_answer(prediction)
    for reference in references:
        gold = normalize_final_answer(reference)
        if predicted == gold:
            return 1.0
        value, gold_value = as_rational(predicted), as_rational(gold)
        if value is not None and value == gold_value:
            return 1.0
    return 0.0
