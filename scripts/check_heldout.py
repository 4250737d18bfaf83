#!/usr/bin/env python3
"""Checks the held-out question files that measure what THAU really learned.

`thau eval answers` asks every question of a held-out file through the chat path and
counts an answer correct when it contains one of the item's `expect` strings. That only
measures knowledge if the questions were never trained on and are not the training
questions with a word or two changed: a model that memorised "How many bones does an
adult have?" should not get credit for "How many bones does an adult have, roughly?".
So every question is compared with every question the learning loop can train on or ask
itself: the qa.jsonl questions and their paraphrases, and the "What is {title}?" questions
built from the passages' titles with the templates of agents/questioner.toml. A question
is refused when, after normalising (lowercase, no accents, no punctuation), it equals one
of them, shares a run of NGRAM words with one, or has a token-set Jaccard similarity of
JACCARD_MAX or more with one.

It also refuses an item with a missing or empty field, an `expect` string that the
source does not state or that the question already contains (echoing the question would
pass), a `source` that does not exist, and a question asked twice:

* an item whose source is in data/corpus/ tests what THAU learned, so each `expect`
  string must occur (case- and accent-folded) in the corpus text of its language (the
  passages and the qa.jsonl answers), one of them in the source file itself, and the
  topic must be one of that language's corpus topics;
* any other source is a document THAU has never seen (tests/data/invented/), so each
  `expect` string must occur in that document, at least one must not occur in the
  corpus (the fact has to be new), and the document's folder must hold no qa.jsonl.

The default file, data/eval/qa_heldout.jsonl, must also have at least MIN_ITEMS items,
as many Spanish as English.

    python3 scripts/check_heldout.py [FILE ...]

Prints one summary line per file and exits 0 when every file is clean; otherwise prints
one line per problem (FILE:LINE: what is wrong) and exits 1.
"""
import json
import pathlib
import re
import sys
import tomllib
import unicodedata
from collections import Counter

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "data/corpus"
DEFAULT = ROOT / "data/eval/qa_heldout.jsonl"
QUESTIONER = ROOT / "agents/questioner.toml"

# A shared run of this many words with a training question is a copy.
NGRAM = 4
# Token-set Jaccard similarity at or above this with a training question is a copy.
JACCARD_MAX = 0.6
# The default file needs at least this many items, half of them per language.
MIN_ITEMS = 120
LANGS = ("en", "es")
FIELDS = ("question", "expect", "answer", "lang", "topic", "source")
# `expect` holds 1..MAX_EXPECT short key spans, not sentences.
MAX_EXPECT = 3
MAX_EXPECT_CHARS = 40
# Templates used when agents/questioner.toml cannot be read (same as the runtime's).
DEFAULT_TEMPLATES = {
    "en": ["What is {concept}?", "Can you explain {concept}?", "Tell me about {concept}."],
    "es": ["¿Qué es {concept}?", "¿Puedes explicar {concept}?", "Háblame de {concept}."],
}


def fold(text):
    """Lowercase without accents, whitespace collapsed: how answers are matched."""
    nfkd = unicodedata.normalize("NFKD", text.lower())
    plain = "".join(c for c in nfkd if not unicodedata.combining(c))
    return " ".join(plain.split())


def tokens(text):
    """The words of a question, folded, punctuation dropped."""
    return re.findall(r"[^\W_]+", fold(text))


def ngrams(toks):
    return {tuple(toks[i:i + NGRAM]) for i in range(len(toks) - NGRAM + 1)}


def jaccard(a, b):
    return len(a & b) / len(a | b) if a or b else 1.0


def title_of(text):
    for line in text.splitlines():
        if line.startswith("# ") and line[2:].strip():
            return line[2:].strip()
    return None


def templates():
    try:
        return tomllib.loads(QUESTIONER.read_text(encoding="utf-8"))["params"]["templates"]["by_lang"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return DEFAULT_TEMPLATES


def title_questions(title, lang, tpls):
    return [t.replace("{concept}", title.lower()) for t in tpls.get(lang, [])]


def relative(path):
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


class Corpus:
    """The shipped corpus: training questions, folded text and topics per language."""

    def __init__(self):
        self.tpls = templates()
        self.questions = []  # (original text, token list, token set)
        self.text = {lang: [] for lang in LANGS}
        self.topics = {lang: set() for lang in LANGS}
        for path in sorted(CORPUS.rglob("*")):
            if not path.is_file():
                continue
            lang = path.parent.name
            raw = path.read_text(encoding="utf-8")
            if path.suffix == ".jsonl":
                for line in raw.splitlines():
                    if not line.strip():
                        continue
                    row = json.loads(line)
                    for q in [row["question"], *row.get("paraphrases", [])]:
                        self.add_question(q)
                    self.text.setdefault(lang, []).append(fold(row["answer"]))
                    self.topics.setdefault(lang, set()).add(row.get("topic", "general"))
            elif path.suffix in (".md", ".txt"):
                self.text.setdefault(lang, []).append(fold(raw))
                self.topics.setdefault(lang, set()).add(path.stem)
                title = title_of(raw)
                if title:
                    for q in title_questions(title, lang, self.tpls):
                        self.add_question(q)
        self.text = {lang: "\n".join(parts) for lang, parts in self.text.items()}
        self.grams = {}
        for i, (_, toks, _) in enumerate(self.questions):
            for g in ngrams(toks):
                self.grams.setdefault(g, i)

    def add_question(self, q):
        toks = tokens(q)
        self.questions.append((q, toks, set(toks)))

    def overlap(self, question, extra=()):
        """(problem or None, closest Jaccard, closest training question)."""
        toks = tokens(question)
        tset = set(toks)
        best, near = -1.0, ""
        pool = self.questions + [(q, tokens(q), set(tokens(q))) for q in extra]
        for q, qtoks, qset in pool:
            if qtoks == toks:
                return f"same question as training question {q!r}", 1.0, q
            j = jaccard(tset, qset)
            if j > best:
                best, near = j, q
        grams = ngrams(toks)
        for g in sorted(grams):
            if g in self.grams:
                q = self.questions[self.grams[g]][0]
                return f"shares {' '.join(g)!r} with training question {q!r}", best, near
        for q, qtoks, _ in pool[len(self.questions):]:
            shared = grams & ngrams(qtoks)
            if shared:
                g = sorted(shared)[0]
                return f"shares {' '.join(g)!r} with training question {q!r}", best, near
        if best >= JACCARD_MAX:
            return f"Jaccard {best:.2f} with training question {near!r}", best, near
        return None, best, near


def check_file(path, corpus):
    """Problems found in one file, and its summary line."""
    problems = []
    name = relative(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        return [f"{name}: cannot read: {e}"], None
    per_lang = Counter()
    seen = {}
    closest = (-1.0, "", "")
    for n, line in enumerate(lines, 1):
        where = f"{name}:{n}"
        if not line.strip():
            problems.append(f"{where}: empty line")
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"{where}: not JSON: {e}")
            continue
        if not isinstance(item, dict):
            problems.append(f"{where}: not a JSON object")
            continue
        missing = [f for f in FIELDS if not item.get(f)]
        if missing:
            problems.append(f"{where}: missing or empty field(s): {', '.join(missing)}")
            continue
        q, expect, lang, source = item["question"], item["expect"], item["lang"], item["source"]
        if not all(isinstance(item[f], str) for f in FIELDS if f != "expect"):
            problems.append(f"{where}: question, answer, lang, topic and source must be strings")
            continue
        if (not isinstance(expect, list) or not 1 <= len(expect) <= MAX_EXPECT
                or not all(isinstance(e, str) and e.strip() for e in expect)):
            problems.append(f"{where}: expect must be a list of 1 to {MAX_EXPECT} non-empty strings")
            continue
        if lang not in LANGS:
            problems.append(f"{where}: lang {lang!r} is not one of {', '.join(LANGS)}")
            continue
        per_lang[lang] += 1
        key = " ".join(tokens(q))
        if key in seen:
            problems.append(f"{where}: same question as line {seen[key]}")
        else:
            seen[key] = n
        for e in expect:
            if len(e) > MAX_EXPECT_CHARS:
                problems.append(f"{where}: expect {e!r} is longer than {MAX_EXPECT_CHARS} characters")
            if fold(e) in fold(q):
                problems.append(f"{where}: expect {e!r} is in the question; echoing it would pass")
        src = ROOT / source
        in_corpus = CORPUS.resolve() in src.resolve().parents
        if in_corpus:
            if src.parent.name != lang:
                problems.append(f"{where}: source {source!r} is not in data/corpus/{lang}/")
            if item["topic"] not in corpus.topics.get(lang, ()):
                problems.append(f"{where}: topic {item['topic']!r} is not a corpus topic of {lang!r}")
            for e in expect:
                if fold(e) not in corpus.text.get(lang, ""):
                    problems.append(f"{where}: expect {e!r} is not in the {lang} corpus")
        if not src.is_file():
            problems.append(f"{where}: source {source!r} does not exist")
            continue
        src_text = fold(src.read_text(encoding="utf-8"))
        extra = []
        if in_corpus:
            if not any(fold(e) in src_text for e in expect):
                problems.append(f"{where}: no expect string occurs in the source {source!r}")
        else:
            if (src.parent / "qa.jsonl").exists():
                problems.append(f"{where}: {relative(src.parent / 'qa.jsonl')} would train on the document's answers")
            for e in expect:
                if fold(e) not in src_text:
                    problems.append(f"{where}: expect {e!r} is not in the source {source!r}")
            if all(fold(e) in corpus.text.get(lang, "") for e in expect):
                problems.append(f"{where}: every expect string is already in the {lang} corpus; the fact is not new")
            title = title_of(src.read_text(encoding="utf-8"))
            if title:
                extra = title_questions(title, lang, corpus.tpls)
        problem, score, near = corpus.overlap(q, extra)
        if problem:
            problems.append(f"{where}: {q!r} {problem}")
        elif score > closest[0]:
            closest = (score, q, near)
    if path.resolve() == DEFAULT.resolve():
        total = sum(per_lang.values())
        if total < MIN_ITEMS:
            problems.append(f"{name}: {total} items, at least {MIN_ITEMS} needed")
        if len({per_lang[lang] for lang in LANGS}) != 1:
            counts = ", ".join(f"{lang} {per_lang[lang]}" for lang in LANGS)
            problems.append(f"{name}: languages are not balanced ({counts})")
    counts = ", ".join(f"{lang} {per_lang[lang]}" for lang in LANGS)
    summary = f"{name}: {sum(per_lang.values())} items ({counts})"
    if closest[0] >= 0:
        summary += (f"; closest overlap: Jaccard {closest[0]:.2f}, "
                    f"{closest[1]!r} ~ {closest[2]!r}")
    return problems, summary


def main():
    paths = [pathlib.Path(a) for a in sys.argv[1:]] or [DEFAULT]
    corpus = Corpus()
    failed = False
    for path in paths:
        problems, summary = check_file(path, corpus)
        for p in problems:
            print(p)
        if problems:
            failed = True
            print(f"{relative(path)}: REFUSED, {len(problems)} problem(s)")
        else:
            print(summary)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
