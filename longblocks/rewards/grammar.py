"""The answer grammar: where a response states its final answer, its citations, or that it abstains.

One grammar for every language (a response is parsed the same whatever the row's language;
the tables below hold the en, pt and de words). docs/rewards.md gives it in full with
examples. A response's *answer markers*, in the text outside a leading <think> block:

- a label line `Answer: X` — labels `Answer`, `Final answer`, `Short answer`, `Resposta`,
  `Resposta final`, `Antwort`, `Endgültige Antwort`, ... in any case, with markdown around
  them (`**Answer:** X`, `### Answer: X`); with nothing after the colon, X is the next
  non-empty line;
- an inline label ending a line, `... so it is X. Answer: X`;
- `\\boxed{X}` anywhere (`$\\boxed{\\text{X}}$` too);
- a closing statement on the last line: `The answer is X.`, `A resposta é X.`,
  `Die Antwort lautet X.` (also `ist`, `final`/`endgültige`).

The last marker is the final answer; every marker's answer is kept so that answer-line spam
(several markers naming different answers) can be told from repetition. Citations are the
document ids `D1234` in square or round brackets on the final answer's line — `[D1] [D2]`,
`[D1, D2]`, `(D1; D2)` — and never count as part of the answer. A response with no marker
whose last line is an abstention sentence ("The answer cannot be determined from the
documents.") abstains. A response with an unclosed <think> block was cut off: truncated.
"""

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

ParseStatus = Literal["ok", "unparsable", "truncated"]

ARTICLES = frozenset(
    ("a", "an", "the")  # en
    + ("o", "os", "as", "um", "uma", "uns", "umas")  # pt ("a" is shared with en)
    + ("der", "die", "das", "den", "dem", "des", "ein", "eine", "einen", "einem", "einer")  # de
)
LABELS = {  # longest first: "final answer" before "answer"
    "en": ("final answer", "short answer", "correct answer", "answer"),
    "pt": ("resposta final", "resposta curta", "resposta correta", "resposta"),
    "de": ("endgültige antwort", "finale antwort", "richtige antwort", "kurze antwort", "antwort"),
}
STATEMENTS = {  # "the answer is X" on the last line
    "en": r"(?:the\s+)?(?:final\s+|correct\s+)?answer\s+is",
    "pt": r"(?:a\s+)?resposta\s+(?:final\s+|correta\s+)?(?:é|e)",
    "de": r"(?:die\s+)?(?:endgültige\s+|richtige\s+)?antwort\s+(?:ist|lautet)",
}
# Abstentions, matched against the whole normalised answer (so `X or unanswerable` is none).
# The first word of each language is the one the instructions ask for (lexicon `abstain`).
ABSTAIN_WORDS = ("unanswerable", "sem resposta", "nicht beantwortbar")
_FROM_DOCS = r"(?:\s+(?:from|in|by|based on|according to|com base nos|a partir dos|segundo|nos|em|aus|anhand|in|nach)(?:\s+(?:provided|given|fornecidos))?\s+(?:documents|documentos|dokumenten?)(?:\s+alone)?)?"  # noqa: E501
_ABSTAIN_CORES = (
    # en
    r"unanswerable|not answerable|no answer|unknown|insufficient information|no information",
    r"(?:can ?not|can t|could not) be (?:answered|determined|found|known|established)",
    r"(?:is )?not (?:stated|given|mentioned|found|specified|provided|available|present|contained)",
    r"(?:is )?not in documents",
    r"documents do not (?:say|state|contain|mention|give|specify|provide)(?: it| this| answer)?",
    # pt
    r"sem resposta|desconhecid[ao]|informacao insuficiente|nao ha (?:resposta|informacao)",
    r"nao (?:e )?(?:possivel|da para) (?:determinar|responder|saber|afirmar)(?: resposta)?",
    r"nao pode ser (?:determinad[ao]|respondid[ao])|nao consta|nao (?:e )?(?:mencionad[ao]|informad[ao])",
    r"documentos nao (?:dizem|informam|mencionam|contem|indicam)(?: isso)?",
    # de
    r"nicht beantwortbar|unbeantwortbar|keine antwort|unbekannt|unzureichende informationen",
    r"nicht zu (?:beantworten|bestimmen|ermitteln)|nicht in dokumenten(?: enthalten| genannt)?",
    r"(?:lasst sich |kann )?(?:aus dokumenten |anhand dokumente )?nicht (?:bestimmen|beantworten|ermitteln|feststellen|bestimmt werden|beantwortet werden|ermittelt werden)",  # noqa: E501
    r"dokumente (?:nennen|enthalten|sagen|geben) (?:dies |das |es )?nicht(?: an)?",
)
_ABSTAIN = re.compile(
    r"(?:(?:answer|question|this|it|resposta|pergunta|isso|antwort|frage|dies|es)\s+(?:is\s+|e\s+|ist\s+)?)?"
    rf"(?:{'|'.join(_ABSTAIN_CORES)}){_FROM_DOCS}"
)

_ALL_LABELS = "|".join(label.replace(" ", r"\s+") for lang in LABELS.values() for label in lang)
# A label, optionally bold/heading, then a colon; it starts a line or follows a space or a
# sentence end, so 'Answer' inside a word or name never matches.
LABEL = re.compile(
    rf"(?:^|(?<=[\s.;!?)\]]))[*_#>\s]*(?:the\s+|a\s+|die\s+)?(?:{_ALL_LABELS})[*_\s]*[:：][*_\s]*(.*)$",
    re.IGNORECASE,
)
STATEMENT = re.compile(
    rf"(?:^|(?<=[\s.;!?*]))(?:so,?\s+|thus,?\s+|logo,?\s+|also\s+)?(?:{'|'.join(STATEMENTS.values())})\s*:?\s+(.+)$",
    re.IGNORECASE,
)
BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")
LATEX_TEXT = re.compile(r"\\(?:text|mathrm|textbf|mathbf)\{([^{}]*)\}")
DOC_ID = re.compile(r"\bD\d+\b", re.IGNORECASE)
CITATION_GROUP = re.compile(r"[\[(]\s*D\d+(?:\s*(?:[,;/&]|and|e|und)\s*D\d+)*\s*[\])]", re.IGNORECASE)
THINK = re.compile(r"^\s*<think>.*?</think>", re.DOTALL)
_WRAPPING = " \t*_`\"'“”„«».,;:!$"


@dataclass(frozen=True)
class Parsed:
    answer: str | None  # the final answer without citations or markup; None if there is none
    citations: tuple[str, ...]  # document ids cited with the final answer, first mention first
    status: ParseStatus
    answers: tuple[str, ...] = ()  # every marker's answer, in order (the last is `answer`)


def normalize(text: str) -> str:
    """Case, accents, punctuation, articles and spacing removed: 'The Ávila Works.' -> 'avila works'."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = re.sub(r"[^\w\s]|_", " ", text)
    return " ".join(word for word in text.split() if word not in ARTICLES)


def is_abstention(answer: str) -> bool:
    """The whole answer says the documents do not answer the question (any documented phrasing)."""
    return _ABSTAIN.fullmatch(normalize(answer)) is not None


def contains_abstention(answer: str) -> bool:
    return _ABSTAIN.search(normalize(answer)) is not None


def report_text(response: str) -> str:
    """The response without its leading <think> block."""
    return THINK.sub("", response)


def _clean(text: str) -> tuple[str, tuple[str, ...]]:
    """(answer without citations and markup, cited ids in order)."""
    cited = tuple(dict.fromkeys(i.upper() for g in CITATION_GROUP.findall(text) for i in DOC_ID.findall(g)))
    text = CITATION_GROUP.sub(" ", text)
    text = LATEX_TEXT.sub(r"\1", BOXED.sub(r"\1", text))
    statement = STATEMENT.match(text.strip(_WRAPPING))  # 'Answer: the answer is X'
    if statement:
        text = statement.group(1)
    return " ".join(text.split()).strip(_WRAPPING), cited


def _markers(lines: list[str]) -> list[tuple[int, str, str]]:
    """(line number, answer text, text its citations are read from) for every answer marker."""
    found = []
    for n, line in enumerate(lines):
        label = LABEL.search(line)
        boxes = BOXED.findall(line)
        if boxes:
            found += [(n, box, line) for box in boxes]
        elif label:
            text = label.group(1)
            if not text.strip(_WRAPPING):  # the answer is on the next non-empty line
                following = next((x for x in lines[n + 1 :] if x.strip()), "")
                found.append((n, following, following))
            else:
                found.append((n, text, line))  # citations anywhere on the answer line
    last = max((n for n, line in enumerate(lines) if line.strip()), default=None)
    if last is not None and not any(n == last for n, _, _ in found):
        statement = STATEMENT.search(lines[last])
        if statement:
            found.append((last, statement.group(1), statement.group(1)))
    return found


def parse_response(response: str, truncated: bool = False) -> Parsed:
    """The final answer, its citations and every marker's answer (see the module docstring)."""
    if truncated or ("<think>" in response and "</think>" not in response):
        return Parsed(None, (), "truncated")
    lines = report_text(response).strip().splitlines()
    markers = [m for m in _markers(lines) if _clean(m[1])[0]]  # 'Answer:' and nothing after: none
    if not markers:
        last = next((line for line in reversed(lines) if line.strip()), "")
        for sentence in reversed(re.split(r"(?<=[.!?])\s+", last.strip())):
            if sentence.strip() and is_abstention(sentence):  # a closing abstention sentence
                return Parsed(sentence.strip(_WRAPPING), (), "ok", (sentence,))
            break
        return Parsed(None, (), "unparsable")
    answers = tuple(_clean(text)[0] for _, text, _ in markers)
    _, cited = _clean(markers[-1][2])
    return Parsed(answers[-1], cited, "ok", answers)
