"""Instruction-constraint checkers for IFEval and IFBench ids (the `instruction` verifier).

Each checker is ``check(text, **kwargs) -> bool`` registered under its instruction id
(e.g. ``length_constraints:number_words``); kwargs are the benchmark's, extra keys ignored.
Semantics follow the benchmarks' strict checks, re-implemented with the standard library:
where the reference uses NLTK's tokenizer a regex tokenizer stands in; syllables are counted with
IFBench's own counter (syllapy). Ids needing a language detector or a POS tagger (IFBench's
`words:start_verb` needs NLTK's tagger data, which is downloaded at run time and cannot be had
offline) are not registered, so items using them are reported as unscored (None), never scored 0.
"""

from __future__ import annotations

import csv
import io
import json
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

Check = Callable[..., bool]
CHECKS: dict[str, Check] = {}
_PUNCT = string.punctuation


def _check(*ids: str) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        for name in ids:
            CHECKS[name] = fn
        return fn
    return register


def check_constraints(text: str, constraints: list[dict]) -> list[bool] | None:
    """One bool per constraint ``{type, kwargs}``; None if any type has no checker.

    >>> check_constraints("hello world", [{"type": "length_constraints:number_words",
    ...                    "kwargs": {"num_words": 3, "relation": "less than"}}])
    [True]
    >>> check_constraints("hi", [{"type": "language:response_language", "kwargs": {}}]) is None
    True
    """
    if any(c.get("type") not in CHECKS for c in constraints):
        return None
    results = []
    for c in constraints:
        kwargs = {k: v for k, v in (c.get("kwargs") or {}).items() if v is not None}
        try:
            results.append(bool(CHECKS[c["type"]](text, **kwargs)))
        except (ValueError, IndexError, KeyError, TypeError, ZeroDivisionError):
            results.append(False)  # text too short or malformed for the check: not followed
    return results


def coverage(items: Iterable[dict]) -> tuple[int, int]:
    """(items whose every constraint has a checker, all items); accepts barkit items
    (``constraints``) or raw IFEval/IFBench rows (``instruction_id_list``)."""
    covered = total = 0
    for item in items:
        ids = item.get("instruction_id_list") or [c["type"] for c in item.get("constraints", [])]
        total += 1
        covered += all(i in CHECKS for i in ids)
    return covered, total


# ---------------------------------------------------------------------------------------------
# text helpers

_ABBREV = re.compile(r"\b(Mr|Mrs|Ms|Dr|St|Prof|Inc|Ltd|Jr|Sr|Co|vs|etc|e\.g|i\.e)\.", re.IGNORECASE)


def split_sentences(text: str) -> list[str]:
    """Sentences ending in . ! or ? (abbreviations, initials, decimals and URLs kept whole).

    >>> split_sentences("Dr. Smith paid $3.50. Why? Because! e.g. this")
    ['Dr. Smith paid $3.50.', 'Why?', 'Because!', 'e.g. this']
    """
    text = " " + text.replace("\n", " ") + " "
    text = _ABBREV.sub(lambda m: m.group(0).replace(".", "<prd>"), text)
    text = re.sub(r"(\d)\.(\d)", r"\1<prd>\2", text)
    text = re.sub(r"\.(com|net|org|io|gov|edu|me)\b", r"<prd>\1", text)
    text = re.sub(r"\b([A-Za-z])\.(?=[A-Za-z]?\.?\s)", r"\1<prd>", text)
    text = re.sub(r"([.!?]+)(\"|”|')?", lambda m: m.group(0) + "<stop>", text)
    parts = [p.replace("<prd>", ".").strip() for p in text.split("<stop>")]
    return [p for p in parts if p]


_STARTS = (r"(Mr|Mrs|Ms|Dr|Prof|Capt|Cpt|Lt|He\s|She\s|It\s|They\s|Their\s|Our\s|We\s|But\s|However\s|That\s"
           r"|This\s|Wherever)")
# The IFEval/IFBench checkers' rule-based splitter, as substitutions applied in order: periods that end no
# sentence become <prd>, a few starts after an abbreviation force a <stop>, closing quotes move inside.
_SENTENCE_RULES = [
    (r"(Mr|St|Mrs|Ms|Dr)[.]", r"\1<prd>"),
    (r"[.](com|net|org|io|gov|edu|me)", r"<prd>\1"),
    (r"([0-9])[.]([0-9])", r"\1<prd>\2"),
    (r"\.{2,}", lambda m: "<prd>" * len(m.group(0)) + "<stop>"),
    (r"Ph\.D\.", "Ph<prd>D<prd>"),
    (r"\s([A-Za-z])[.] ", r" \1<prd> "),
    (r"([A-Z][.][A-Z][.](?:[A-Z][.])?) " + _STARTS, r"\1<stop> \2"),
    (r"([A-Za-z])[.]([A-Za-z])[.]([A-Za-z])[.]", r"\1<prd>\2<prd>\3<prd>"),
    (r"([A-Za-z])[.]([A-Za-z])[.]", r"\1<prd>\2<prd>"),
    (r" (Inc|Ltd|Jr|Sr|Co)[.] " + _STARTS, r" \1<stop> \2"),
    (r" (Inc|Ltd|Jr|Sr|Co)[.]", r" \1<prd>"),
    (r" ([A-Za-z])[.]", r" \1<prd>"),
]


def split_into_sentences(text: str) -> list[str]:
    """The official IFBench checkers' sentence splitter (rules above; empty pieces between stops kept, a
    trailing one dropped). IFBench's ratio:, sentence: and most custom checks count with it.

    >>> split_into_sentences('He said "stop." Then? Mr. Lee left!')
    ['He said "stop".', 'Then?', 'Mr. Lee left!']
    """
    text = (" " + text + "  ").replace("\n", " ")
    for pattern, replacement in _SENTENCE_RULES:
        text = re.sub(pattern, replacement, text)
    for closing in ("”", '"'):
        text = text.replace("." + closing, closing + ".")
    text = text.replace('!"', '"!').replace('?"', '"?')
    for mark in ".?!":
        text = text.replace(mark, mark + "<stop>")
    sentences = [s.strip() for s in text.replace("<prd>", ".").split("<stop>")]
    return sentences[:-1] if sentences and not sentences[-1] else sentences


def count_words(text: str) -> int:
    return len(re.findall(r"\w+", text))


def tokenize(text: str) -> list[str]:
    """Words and punctuation marks as separate tokens (a stand-in for NLTK's word_tokenize)."""
    return re.findall(r"\w+(?:['’]\w+)?|[^\w\s]", text)


def _compare(count: int, target: int, relation: str) -> bool:
    if relation == "less than":
        return count < int(target)
    if relation == "at least":
        return count >= int(target)
    if relation == "exactly":
        return count == int(target)
    raise ValueError(f"unknown relation {relation!r}")


def _strip_punct(word: str) -> str:
    return word.strip(_PUNCT + " ")


def _no_punct(text: str) -> str:
    return text.translate(str.maketrans("", "", _PUNCT))


# ---------------------------------------------------------------------------------------------
# IFEval: keywords, length, content, format, combination, start/end, case, punctuation


@_check("keywords:existence")
def _keywords_existence(text: str, keywords: list[str], **_: Any) -> bool:
    return all(re.search(re.escape(k), text, re.IGNORECASE) for k in keywords)


@_check("keywords:frequency")
def _keyword_frequency(text: str, keyword: str, frequency: int, relation: str, **_: Any) -> bool:
    return _compare(len(re.findall(re.escape(keyword), text, re.IGNORECASE)), frequency, relation)


@_check("keywords:forbidden_words")
def _forbidden_words(text: str, forbidden_words: list[str], **_: Any) -> bool:
    return not any(re.search(r"\b" + re.escape(w) + r"\b", text, re.IGNORECASE) for w in forbidden_words)


@_check("keywords:letter_frequency")
def _letter_frequency(text: str, letter: str, let_frequency: int, let_relation: str, **_: Any) -> bool:
    return _compare(text.lower().count(letter.lower()), let_frequency, let_relation)


@_check("length_constraints:number_sentences")
def _number_sentences(text: str, num_sentences: int, relation: str, **_: Any) -> bool:
    return _compare(len(split_sentences(text)), num_sentences, relation)


@_check("length_constraints:number_words")
def _number_words(text: str, num_words: int, relation: str, **_: Any) -> bool:
    return _compare(count_words(text), num_words, relation)


@_check("length_constraints:number_paragraphs")
def _number_paragraphs(text: str, num_paragraphs: int, **_: Any) -> bool:
    """Paragraphs separated by the markdown divider ***; empty ones only at the ends."""
    parts = re.split(r"\s?\*\*\*\s?", text)
    inner_empty = any(not p.strip() for p in parts[1:-1])
    count = sum(1 for p in parts if p.strip())
    return not inner_empty and count == int(num_paragraphs)


@_check("length_constraints:nth_paragraph_first_word")
def _nth_paragraph_first_word(text: str, num_paragraphs: int, nth_paragraph: int,
                              first_word: str, **_: Any) -> bool:
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    if len(paragraphs) != int(num_paragraphs) or int(nth_paragraph) > len(paragraphs):
        return False
    words = paragraphs[int(nth_paragraph) - 1].split()
    return bool(words) and _strip_punct(words[0]).lower() == first_word.lower()


@_check("detectable_content:number_placeholders")
def _placeholders(text: str, num_placeholders: int, **_: Any) -> bool:
    return len(re.findall(r"\[.*?\]", text)) >= int(num_placeholders)


@_check("detectable_content:postscript")
def _postscript(text: str, postscript_marker: str = "P.S.", **_: Any) -> bool:
    marker = postscript_marker.lower().strip()
    if marker == "p.p.s":
        pattern = r"\s*p\.\s?p\.\s?s.*$"
    elif marker == "p.s.":
        pattern = r"\s*p\.\s?s\..*$"
    else:
        pattern = r"\s*" + re.escape(marker) + r".*$"
    return re.search(pattern, text.lower(), re.MULTILINE) is not None


@_check("detectable_format:number_bullet_lists")
def _bullet_lists(text: str, num_bullets: int, **_: Any) -> bool:
    stars = re.findall(r"^\s*\*[^\*].*$", text, re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", text, re.MULTILINE)
    return len(stars) + len(dashes) == int(num_bullets)


@_check("detectable_format:constrained_response")
def _constrained_response(text: str, **_: Any) -> bool:
    options = ("My answer is yes.", "My answer is no.", "My answer is maybe.")
    return any(option in text.strip() for option in options)


@_check("detectable_format:number_highlighted_sections")
def _highlights(text: str, num_highlights: int, **_: Any) -> bool:
    single = [h for h in re.findall(r"\*[^\n\*]*\*", text) if h.strip("*").strip()]
    double = [h for h in re.findall(r"\*\*[^\n\*]*\*\*", text) if h.removeprefix("**").removesuffix("**").strip()]
    return len(single) + len(double) >= int(num_highlights)


@_check("detectable_format:multiple_sections")
def _sections(text: str, section_spliter: str, num_sections: int, **_: Any) -> bool:
    parts = re.split(r"\s?" + re.escape(section_spliter) + r"\s?\d+\s?", text)
    return len(parts) - 1 >= int(num_sections)


@_check("detectable_format:json_format")
def _json_format(text: str, **_: Any) -> bool:
    body = text.strip()
    body = re.sub(r"^```(?:json|Json|JSON)?\s*|\s*```$", "", body).strip()
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


@_check("detectable_format:title")
def _title(text: str, **_: Any) -> bool:
    return any(t.strip("<>").strip() for t in re.findall(r"<<[^\n]+>>", text))


@_check("combination:two_responses")
def _two_responses(text: str, **_: Any) -> bool:
    parts = text.split("******")
    if any(not p.strip() for p in parts[1:-1]):
        return False
    valid = [p for p in parts if p.strip()]
    return len(valid) == 2 and valid[0].strip() != valid[1].strip()


@_check("combination:repeat_prompt")
def _repeat_prompt(text: str, prompt_to_repeat: str, **_: Any) -> bool:
    return text.strip().lower().startswith(prompt_to_repeat.strip().lower())


@_check("startend:end_checker")
def _end_checker(text: str, end_phrase: str, **_: Any) -> bool:
    return text.strip().strip('"').lower().endswith(end_phrase.strip().lower())


@_check("startend:quotation")
def _quotation(text: str, **_: Any) -> bool:
    body = text.strip()
    return len(body) > 1 and body[0] == '"' and body[-1] == '"'


@_check("change_case:capital_word_frequency")
def _capital_words(text: str, capital_frequency: int, capital_relation: str, **_: Any) -> bool:
    return _compare(sum(1 for w in tokenize(text) if w.isupper()), capital_frequency, capital_relation)


@_check("change_case:english_capital")
def _all_capital(text: str, **_: Any) -> bool:
    return text.isupper()


@_check("change_case:english_lowercase")
def _all_lowercase(text: str, **_: Any) -> bool:
    return text.islower()


@_check("punctuation:no_comma")
def _no_comma(text: str, **_: Any) -> bool:
    return "," not in text


# ---------------------------------------------------------------------------------------------
# IFBench: count:*

_CONJUNCTIONS = {"and", "but", "for", "nor", "or", "so", "yet"}
_PRONOUNS = set(
    "i me my mine myself we us our ours ourselves you your yours yourself yourselves he him his "
    "himself she her hers herself it its itself they them their theirs themselves".split()
)
_PERSON_NAMES = (
    "Emma Liam Sophia Jackson Olivia Noah Ava Lucas Isabella Mason Mia Ethan Charlotte Alexander "
    "Amelia Benjamin Harper Leo Zoe Daniel Chloe Samuel Lily Matthew Grace Owen Abigail Gabriel "
    "Ella Jacob Scarlett Nathan Victoria Elijah Layla Nicholas Audrey David Hannah Christopher "
    "Penelope Thomas Nora Andrew Aria Joseph Claire Ryan Stella Jonathan"
).split()
_STOPWORDS = set(
    "i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself "
    "yourselves he him his himself she she's her hers herself it it's its itself they them their "
    "theirs themselves what which who whom this that that'll these those am is are was were be been "
    "being have has had having do does did doing a an the and but if or because as until while of "
    "at by for with about against between into through during before after above below to from up "
    "down in out on off over under again further then once here there when where why how all any "
    "both each few more most other some such no nor not only own same so than too very s t can will "
    "just don don't should should've now d ll m o re ve y ain aren aren't couldn couldn't didn "
    "didn't doesn doesn't hadn hadn't hasn hasn't haven haven't isn isn't ma mightn mightn't mustn "
    "mustn't needn needn't shan shan't shouldn shouldn't wasn wasn't weren weren't won won't wouldn "
    "wouldn't".split()
)


@_check("count:word_count_range")
def _word_count_range(text: str, min_words: int, max_words: int, **_: Any) -> bool:
    return int(min_words) <= count_words(text) <= int(max_words)


@_check("count:unique_word_count")
def _unique_words(text: str, N: int, **_: Any) -> bool:
    return len({_strip_punct(w) for w in text.lower().split()}) >= int(N)


@_check("count:conjunctions")
def _conjunctions(text: str, small_n: int, **_: Any) -> bool:
    used = {w for w in text.split() if _strip_punct(w).lower() in _CONJUNCTIONS}
    return len(used) >= int(small_n)


@_check("count:person_names")
def _person_names(text: str, N: int, **_: Any) -> bool:
    return sum(1 for name in _PERSON_NAMES if name in text) >= int(N)


@_check("count:numbers")
def _numbers(text: str, N: int, **_: Any) -> bool:
    return len(re.findall(r"\d+", _no_punct(text))) == int(N)


@_check("count:pronouns")
def _pronouns(text: str, N: int, **_: Any) -> bool:
    words = _no_punct(text.replace("/", " ").lower()).split()
    return sum(1 for w in words if w in _PRONOUNS) >= int(N)


@_check("count:punctuation")
def _punctuation_cover(text: str, **_: Any) -> bool:
    """Every standard mark . , ! ? ; : at least once, plus an interrobang (?! / !? / ‽)."""
    marker = next((m for m in ("?!", "!?", "‽") if m in text), None)
    if marker is None:
        return False
    rest = text.replace(marker, "", 1) if marker != "‽" else text
    return {".", ",", "!", "?", ";", ":"} <= set(rest)


@_check("count:words_japanese")
def _nth_word_japanese(text: str, N: int, **_: Any) -> bool:
    japanese = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")
    for i, word in enumerate(text.split(), start=1):
        word = _strip_punct(word)
        if i % int(N) == 0 and word and not word.isdigit() and not japanese.search(word):
            return False
    return True


@_check("count:keywords_multiple")
def _keywords_multiple(text: str, keyword1: str, keyword2: str, keyword3: str, keyword4: str,
                       keyword5: str, **_: Any) -> bool:
    lowered = text.lower()
    targets = zip([keyword1, keyword2, keyword3, keyword4, keyword5], [1, 2, 3, 5, 7])
    return all(lowered.count(k.lower()) == n for k, n in targets)


# ---------------------------------------------------------------------------------------------
# IFBench: ratio:*, sentence:*, repeat:*


@_check("ratio:stop_words")
def _stop_words(text: str, percentage: float, **_: Any) -> bool:
    words = re.findall(r"\w+", text)
    stops = sum(1 for w in words if w.lower() in _STOPWORDS)
    return 100 * stops / len(words) <= float(percentage)


def _endings(text: str) -> Counter:
    return Counter(s[-1] for s in split_into_sentences(text) if s.endswith((".", "?", "!")))


@_check("ratio:sentence_type")
def _sentence_type(text: str, **_: Any) -> bool:
    ends = _endings(text)
    return ends["."] == 2 * ends["?"]


@_check("ratio:sentence_balance")
def _sentence_balance(text: str, **_: Any) -> bool:
    ends = _endings(text)
    return ends["."] == ends["?"] == ends["!"]


@_check("ratio:sentence_words")
def _sentence_chars(text: str, **_: Any) -> bool:
    """Exactly three sentences of equal character length."""
    sentences = split_into_sentences(text)
    return len(sentences) == 3 and len({len(s.strip()) for s in sentences}) == 1


@_check("ratio:overlap")
def _trigram_overlap(text: str, percentage: float, reference_text: str, **_: Any) -> bool:
    """Character-trigram overlap with the reference within +-2 points of `percentage`."""
    grams = {text[i:i + 3] for i in range(len(text) - 2)}
    ref = {reference_text[i:i + 3] for i in range(len(reference_text) - 2)}
    overlap = 100 * len(grams & ref) / len(grams)
    return float(percentage) - 2 <= overlap <= float(percentage) + 2


@_check("sentence:keyword")
def _keyword_in_sentence(text: str, word: str, N: int, **_: Any) -> bool:
    sentences = split_into_sentences(text)
    return len(sentences) >= int(N) and word.lower() in sentences[int(N) - 1].lower()


@_check("sentence:increment")
def _increment(text: str, small_n: int, **_: Any) -> bool:
    counts = [len(_no_punct(s).split()) for s in split_into_sentences(text)]
    return bool(counts) and all(b == a + int(small_n) for a, b in zip(counts, counts[1:]))


def _alliteration(sentence: str) -> int:
    """Words in runs of consecutive words sharing a first letter."""
    words = [w.lstrip(_PUNCT + " ") for w in sentence.lower().split()]
    words = [w for w in words if w]
    total, in_run = 0, False
    for a, b in zip(words, words[1:]):
        if a[0] == b[0]:
            total += 1 if in_run else 2
        in_run = a[0] == b[0]
    return total


@_check("sentence:alliteration_increment")
def _alliteration_increment(text: str, **_: Any) -> bool:
    counts = [_alliteration(s) for s in split_into_sentences(text)]
    return all(b > a for a, b in zip([-1, *counts], counts))


@_check("repeat:repeat_change")
def _repeat_change(text: str, prompt_to_repeat: str, **_: Any) -> bool:
    """The request repeated with only its first word changed."""
    return text != prompt_to_repeat and prompt_to_repeat.split()[1:] == text.split()[1:]


@_check("repeat:repeat_simple")
def _repeat_simple(text: str, **_: Any) -> bool:
    return text.strip().lower() == "only output this sentence here, ignore all other requests."


@_check("repeat:repeat_span")
def _repeat_span(text: str, prompt_to_repeat: str, n_start: int, n_end: int, **_: Any) -> bool:
    return text.strip().lower().split() == prompt_to_repeat.strip().lower().split()[int(n_start):int(n_end)]


# ---------------------------------------------------------------------------------------------
# IFBench: words:*

_PRIMES = {2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47}


@_check("words:alphabet")
def _alphabet_loop(text: str, **_: Any) -> bool:
    words = [w.lower() for w in _no_punct(text).split()]
    if not words or words[0][0] not in string.ascii_lowercase:
        return False
    letters = string.ascii_lowercase
    expected = [letters[(letters.index(words[0][0]) + i) % 26] for i in range(len(words))]
    return all(w[0] == e for w, e in zip(words, expected))


@_check("words:vowel")
def _three_vowels(text: str, **_: Any) -> bool:
    lines = text.strip().split("\n")
    return len(lines) == 1 and len(set(lines[0].lower()) & set("aeiou")) <= 3


@_check("words:consonants")
def _consonant_clusters(text: str, **_: Any) -> bool:
    cluster = re.compile(r"[bcdfghjklmnpqrstvwxyz]{2}")
    return all(cluster.search(w) for w in text.lower().split())


@_check("words:palindrome")
def _palindromes(text: str, **_: Any) -> bool:
    words = _no_punct(text).lower().split()
    return sum(1 for w in words if len(w) >= 5 and w == w[::-1]) >= 10


@_check("words:prime_lengths")
def _prime_lengths(text: str, **_: Any) -> bool:
    return all(len(w) in _PRIMES for w in _no_punct(text).split())


@_check("words:odd_even_syllables")
def _alternating_syllable_parity(text: str, **_: Any) -> bool:
    """Words alternate between odd and even syllable counts, counted by syllapy (IFBench's own counter: its
    word list, then its vowel-group rule)."""
    import syllapy

    parities = [syllapy.count(w) % 2 for w in _no_punct(text).lower().split()]
    return all(a != b for a, b in zip(parities, parities[1:]))


@_check("words:repeats")
def _limited_repeats(text: str, small_n: int, **_: Any) -> bool:
    counts = Counter(_no_punct(text.lower()).split())
    return all(c <= int(small_n) for c in counts.values())


@_check("words:no_consecutive")
def _no_consecutive_letter(text: str, **_: Any) -> bool:
    words = _no_punct(text.lower()).split()
    return all(a[0] != b[0] for a, b in zip(words, words[1:]))


@_check("words:last_first")
def _last_first(text: str, **_: Any) -> bool:
    sentences = split_into_sentences(text)
    for a, b in zip(sentences, sentences[1:]):
        if a.rstrip(_PUNCT + " ").split()[-1].lower() != b.lstrip(_PUNCT + " ").split()[0].lower():
            return False
    return True


@_check("words:paragraph_last_first")
def _paragraph_last_first(text: str, **_: Any) -> bool:
    for paragraph in text.split("\n"):
        if not paragraph.strip():
            continue
        words = _strip_punct(paragraph.strip().lower()).split()
        if not words or words[0] != words[-1]:
            return False
    return True


@_check("words:keywords_specific_position")
def _keyword_position(text: str, keyword: str, n: int, m: int, **_: Any) -> bool:
    sentences = split_into_sentences(text)
    if len(sentences) < int(n):
        return False
    words = tokenize(sentences[int(n) - 1])
    return len(words) >= int(m) and words[int(m) - 1] == keyword


@_check("words:words_position")
def _words_position(text: str, keyword: str, **_: Any) -> bool:
    words = tokenize(text)
    return len(words) >= 2 and words[1] == words[-2] == keyword


# ---------------------------------------------------------------------------------------------
# IFBench: format:*


def _is_emoji(ch: str) -> bool:
    cp = ord(ch)
    return (0x1F000 <= cp <= 0x1FAFF or 0x2600 <= cp <= 0x27BF or 0x2B00 <= cp <= 0x2BFF
            or 0x2300 <= cp <= 0x23FF or cp in (0x00A9, 0x00AE, 0x203C, 0x2049, 0x2122, 0x3030))


def _ends_with_emoji(sentence: str) -> bool:
    body = _no_punct(sentence).strip().rstrip("\ufe0f\u200d ")
    return bool(body) and _is_emoji(body[-1])


@_check("format:emoji")
def _emoji_sentences(text: str, **_: Any) -> bool:
    """Every sentence ends with an emoji (or the emoji opens the next sentence)."""
    sentences = split_into_sentences(text)
    for i, sentence in enumerate(sentences):
        if _ends_with_emoji(sentence):
            continue
        following = _no_punct(sentences[i + 1]).strip() if i + 1 < len(sentences) else ""
        if not following or not _is_emoji(following[0]):
            return False
    return bool(sentences)


@_check("format:line_indent")
def _indent_stairs(text: str, **_: Any) -> bool:
    indents = [len(line) - len(line.lstrip(" ")) for line in text.split("\n") if line.strip()]
    return all(b > a for a, b in zip(indents, indents[1:]))


@_check("format:list")
def _special_bullets(text: str, sep: str, **_: Any) -> bool:
    return text.count(sep) >= 2


@_check("format:newline")
def _word_per_line(text: str, **_: Any) -> bool:
    plain = _no_punct(text).strip()
    lines = [line for line in plain.split("\n") if line]
    return len(lines) == len(plain.split())


@_check("format:no_bullets_bullets")
def _sentences_then_bullets(text: str, **_: Any) -> bool:
    """At least two sentences, then at least two '*' bullet lines, nothing after."""
    sentences = bullets = 0
    for line in text.split("\n"):
        if line.strip().startswith("*"):
            if sentences < 2:
                return False
            bullets += 1
        elif bullets:
            return False
        else:
            sentences += len(split_into_sentences(line.strip()))
    return bullets >= 2


@_check("format:no_whitespace")
def _no_whitespace(text: str, **_: Any) -> bool:
    return not any(ch.isspace() for ch in text)


@_check("format:options")
def _options(text: str, options: str, **_: Any) -> bool:
    strict = re.match(r"\W*[aA]\W*[bB]\W*[cC]\W*", options) is not None
    sep = "/" if "/" in options else "or" if "or" in options else ","
    choices = [o.strip() for o in options.split(sep)]
    if strict:
        return text in choices
    return _strip_punct(text).lower() in {_strip_punct(c).lower() for c in choices}


@_check("format:output_template")
def _output_template(text: str, **_: Any) -> bool:
    return all(part in text for part in ("My Answer:", "My Conclusion:", "Future Outlook:"))


@_check("format:parentheses")
def _nested_brackets(text: str, **_: Any) -> bool:
    """A correctly closed group of brackets nested at least 5 deep."""
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    deepest = 0
    for ch in text:
        if ch in "([{":
            stack.append(ch)
            deepest = max(deepest, len(stack))
        elif ch in pairs:
            if stack and stack[-1] == pairs[ch]:
                stack.pop()
                if deepest >= 5:
                    return True
            else:
                stack, deepest = [], 0
    return False


@_check("format:quotes")
def _nested_quotes(text: str, **_: Any) -> bool:
    """Quotes nested at least 3 deep (alternating ' and ")."""
    stack: list[str] = []
    reached = 0
    for ch in text:
        if stack and ch == stack[-1]:
            stack.pop()
            if reached - len(stack) >= 3:
                return True
        elif ch in "\"'":
            stack.append(ch)
            reached = max(reached, len(stack))
    return False


@_check("format:quote_unquote")
def _quote_explained(text: str, **_: Any) -> bool:
    """No two quoted phrases back to back, and the text does not end on a quote."""
    body = text.replace("“", '"').replace("”", '"').replace("'\"'", "")
    body = "".join(body.split())
    return '""' not in body and body.strip(string.digits + _PUNCT.replace('"', ""))[-1] != '"'


@_check("format:sub-bullets")
def _sub_bullets(text: str, **_: Any) -> bool:
    return all("-" in chunk for chunk in text.split("*")[1:])


@_check("format:thesis")
def _italic_thesis(text: str, **_: Any) -> bool:
    """An HTML-italic (<i>/<em>) thesis followed by non-italic text."""
    match = re.search(r"<(i|em)>(.*?)</\1>(.*)", text, re.DOTALL)
    return match is not None and bool(match.group(2).strip()) and bool(match.group(3).strip())


@_check("format:title_case")
def _title_case(text: str, **_: Any) -> bool:
    for word in tokenize(text):
        head, tail = word[0], word[1:]
        if head.islower() and (tail.isupper() or tail.islower()):
            return False
    return True


# ---------------------------------------------------------------------------------------------
# IFBench: custom:*

_EUROPEAN_CAPITALS_NORTH_OF_45 = (
    "Reykjavik Helsinki Oslo Tallinn Stockholm Riga Moscow Copenhagen Vilnius Minsk Dublin Berlin "
    "Amsterdam Warsaw London Brussels Prague Luxembourg Paris Vienna Bratislava Budapest Vaduz "
    "Chisinau Bern Ljubljana Zagreb"
).split()


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


@_check("custom:multiples")
def _multiples_of_7(text: str, **_: Any) -> bool:
    return re.findall(r"\d+", text.replace(",", ", ")) == [str(i) for i in range(14, 51, 7)]


@_check("custom:european_capitals_sort")
def _european_capitals(text: str, **_: Any) -> bool:
    capitals = [c.strip() for c in _ascii(text).split(",") if c.strip()]
    return capitals == _EUROPEAN_CAPITALS_NORTH_OF_45


@_check("custom:reverse_newline")
def _reverse_alpha_lines(text: str, **_: Any) -> bool:
    """From the 'Zimbabwe' line on, at least 52 lines in reverse alphabetical order."""
    lines = [_strip_punct(line) for line in text.split("\n") if _strip_punct(line)]
    start = next((i for i, line in enumerate(lines) if "Zimbabwe" in line), None)
    if start is None or len(lines) - start < 52:
        return False
    tail = [_ascii(line) for line in lines[start:]]
    return tail == sorted(tail, reverse=True)


@_check("custom:word_reverse")
def _word_reverse(text: str, **_: Any) -> bool:
    restored = " ".join(_no_punct(text.lower().strip()).split()[::-1])
    return "bald eagle" in restored and restored in split_into_sentences(restored)


@_check("custom:character_reverse")
def _character_reverse(text: str, **_: Any) -> bool:
    return "elgae dlab" in text.lower()


@_check("custom:sentence_alphabet")
def _sentence_alphabet(text: str, **_: Any) -> bool:
    sentences = split_into_sentences(text)
    return len(sentences) == 26 and all(
        s.split()[0].lower()[0] == chr(ord("a") + i) for i, s in enumerate(sentences))


def _csv_rows(text: str, delimiter: str = ",") -> list[list[str]]:
    return list(csv.reader(io.StringIO(text), delimiter=delimiter))


@_check("custom:csv_city")
def _csv_city(text: str, **_: Any) -> bool:
    rows = _csv_rows(text)
    return (len(rows) == 8 and rows[0] == ["ID", "Country", "City", "Year", "Count"]
            and all(len(r) == 5 for r in rows[1:]))


@_check("custom:csv_special_character")
def _csv_special(text: str, **_: Any) -> bool:
    """14 rows under the product header, one quoted field holding a special character."""
    header = r'^"?ProductID"?,[ \t]*"?Category"?,[ \t]*"?Brand"?,[ \t]*"?Price"?,[ \t]*"?Stock"?$'
    if not re.match(header, text.split("\n")[0].strip()):
        return False
    rows = _csv_rows(text.replace('"', '"""'))
    if len(rows) != 15 or any(len(r) != 5 for r in rows[1:]):
        return False
    return any(re.match(r'".*[^\d\w\s].*"', field) for r in rows[1:] for field in r)


@_check("custom:csv_quotes")
def _csv_quotes(text: str, **_: Any) -> bool:
    """Tab-delimited, 3 rows under the student header, every field in double quotes."""
    header = r'^"?StudentID"?\t *"?Subject"?\t *"?Grade"?\t *"?Semester"?\t *"?Score"?$'
    if not re.match(header, text.split("\n")[0].strip()):
        return False
    rows = _csv_rows(text.replace('"', '"""'), delimiter="\t")
    return len(rows) == 4 and all(
        len(r) == 5 and all(f.strip()[:1] == '"' and f.strip()[-1:] == '"' for f in r) for r in rows)


@_check("custom:date_format_list")
def _napoleon_dates(text: str, **_: Any) -> bool:
    """Comma-separated YYYY-MM-DD dates within 1769-1821 with valid month/day."""
    days = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}
    for date in text.strip().split(","):
        match = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})", date.strip())
        if not match:
            return False
        year, month, day = map(int, match.groups())
        if not 1769 <= year <= 1821 or month not in days or day > days[month]:
            return False
    return True


@_check("custom:mcq_count_length")
def _mcq(text: str, **_: Any) -> bool:
    """Four 'Question' blocks, five A-E options each, questions growing longer, no preamble."""
    if not text.startswith("Question"):
        return False
    blocks = [b.strip() for b in re.split(r"\n*(?:Question \d+[.|):;]?\s*)", text) if b.strip()]
    if len(blocks) != 4:
        return False
    lengths = []
    for block in blocks:
        question, options, done = "", 0, False
        for line in block.split("\n"):
            if re.match(r"^[A-Ea-e][.|)]\s*\w+", line.strip()):
                options, done = options + 1, True
            elif not done:
                question += " " + line.strip()
        if options != 5:
            return False
        lengths.append(len(question.strip()))
    return all(a < b for a, b in zip(lengths, lengths[1:]))
