"""Text -> intent, confidence, language and slots: one understanding for the chat and the mailbox.

A linear classifier (scikit-learn logistic regression) over character n-grams and words of the
normalised text (`core.understanding.text`), trained at start-up from the catalog's examples:
nothing is downloaded, the model is the catalog. Character n-grams carry Polish inflection and
typos ("zgubilem telefn" shares most of its 3-5 letter pieces with "zgubiłem telefon"); one model
for both languages carries mixed-language text. The language is a naive Bayes over the same
examples' letters.

An answer is *clear* when one intent wins by enough: the mailbox answers only then, and the chat
asks back otherwise. Action intents (ACTION_INTENTS) need more, since asking back is cheap and a
wrong action is not.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.understanding.catalog import ACTION_INTENTS, IntentCatalog
from core.understanding.text import Normaliser, fold

__all__ = ["Understanding", "Understood"]

# Probability the winning intent needs, and its lead over the runner-up, to be "clear".
MIN_CONFIDENCE = 0.45
MIN_MARGIN = 0.10
ACTION_MIN_CONFIDENCE = 0.80
# Below this the language is not told by the text: the caller's default (the chat's language) holds.
LANGUAGE_MIN_CONFIDENCE = 0.75
# Only the start of a long mail decides: the question is there, and the cost stays bounded.
MAX_CHARS = 1000


@dataclass(frozen=True)
class Options:
    """How the understanding is built; the defaults are what won on the labelled set (bench.understanding
    --compare measures the others)."""

    # rapidfuzz puts an unknown word right when it is near a catalog word. Off: on the labelled set
    # the character n-grams already carry typos, and correcting made it slightly worse (--compare).
    typos: bool = False
    lemmas: bool = False  # simplemma lemmas added as word features
    char_ngrams: tuple[int, int] = (2, 5)
    c: float = 80.0  # the logistic regression's inverse regularisation


@dataclass(frozen=True)
class Understood:
    """What a text means: the intent (out_of_scope when nothing clearly fits) and how sure we are."""

    intent: str
    confidence: float
    language: str
    clear: bool
    faq_entry: str | None = None
    slots: tuple[tuple[str, str], ...] = ()
    # The likeliest intents, best first, with their probabilities (the chat offers them as buttons).
    candidates: tuple[tuple[str, float], ...] = ()

    def slot(self, name: str) -> str | None:
        return next((value for key, value in self.slots if key == name), None)


class Understanding:
    """Trained once from a catalog; `understand` is then a few sparse dot products."""

    def __init__(self, catalog: IntentCatalog, options: Options | None = None) -> None:
        # Imported here, not with the module: every `mleg` command imports the chat, few train a model.
        from scipy.sparse import hstack
        from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.naive_bayes import MultinomialNB

        self.catalog = catalog
        self.options = options or Options()
        self.normaliser = Normaliser(catalog.shorthand, catalog.emoji)
        examples = catalog.examples()
        self.normaliser.learn(text for text, _, _ in examples)
        texts = [self._normalise(text) for text, _, _ in examples]
        labels = [label for _, label, _ in examples]
        self._topics = {t.label: t for t in catalog.topics}
        # Whole phrasings seen in the catalog under one topic only: taken as they are.
        seen: dict[str, set[str]] = {}
        for text, label in zip(texts, labels, strict=True):
            seen.setdefault(text, set()).add(label)
        self._exact = {text: next(iter(found)) for text, found in seen.items() if len(found) == 1}

        self._chars = TfidfVectorizer(analyzer="char_wb", ngram_range=self.options.char_ngrams, sublinear_tf=True,
                                      dtype=np.float32)
        self._words = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), token_pattern=r"\S+",
                                      sublinear_tf=True, dtype=np.float32)
        features = hstack([self._chars.fit_transform(texts), self._words.fit_transform(texts)]).tocsr()
        model = LogisticRegression(C=self.options.c, max_iter=3000)
        model.fit(features, labels)
        self._labels: list[str] = [str(c) for c in model.classes_]
        self._coef = np.ascontiguousarray(model.coef_.T, dtype=np.float32)
        self._intercept = model.intercept_.astype(np.float32)
        self._vectorisers = [(v.build_analyzer(), v.vocabulary_, v.idf_.astype(np.float32))
                             for v in (self._chars, self._words)]
        self._offsets = [0, len(self._chars.vocabulary_)]
        self._intent_of = [self._topics[label].intent for label in self._labels]
        self._intents = sorted(set(self._intent_of))
        self._intent_index = np.array([self._intents.index(i) for i in self._intent_of])

        self._letters = CountVectorizer(analyzer="char_wb", ngram_range=(1, 3))
        languages = [lang for _, _, lang in examples]
        counts = self._letters.fit_transform([fold(text) for text, _, _ in examples])
        bayes = MultinomialNB(alpha=0.5).fit(counts, languages)
        self._languages = [str(c) for c in bayes.classes_]
        self._letter_log = np.ascontiguousarray(bayes.feature_log_prob_.T)
        self._language_prior = bayes.class_log_prior_
        self._letter_analyser = self._letters.build_analyzer()
        self._letter_vocabulary: dict[str, int] = self._letters.vocabulary_
        # The last text whose language was worked out, and the answer (None: the text does not tell).
        # The mailbox asks twice for each mail's question (its answer's language, then the FAQ match).
        self._last_language: tuple[str, str | None] = ("", None)

    # --- the public surface -----------------------------------------------------------------
    def understand(self, text: str, default_language: str = "pl") -> Understood:
        """What `text` means; `default_language` when its language is not clear from it."""
        text = text[:MAX_CHARS]
        language = self.language(text, default_language)
        normal = self._normalise(text)
        if not normal:
            return Understood("out_of_scope", 0.0, language, False)
        exact = self._exact.get(normal)
        if exact is not None:
            topic = self._topics[exact]
            return Understood(topic.intent, 1.0, language, True, self._faq(topic), topic.slots,
                              ((topic.intent, 1.0),))
        probabilities = self._probabilities(normal)
        per_intent = np.bincount(self._intent_index, weights=probabilities, minlength=len(self._intents))
        order = np.argsort(per_intent)[::-1]
        best, runner_up = self._intents[order[0]], float(per_intent[order[1]]) if len(order) > 1 else 0.0
        confidence = float(per_intent[order[0]])
        candidates = tuple((self._intents[i], round(float(per_intent[i]), 4)) for i in order[:4])
        needed = ACTION_MIN_CONFIDENCE if best in ACTION_INTENTS else MIN_CONFIDENCE
        clear = confidence >= needed and confidence - runner_up >= MIN_MARGIN
        # The topic within the winning intent that fits best names the FAQ entry and the slots.
        topic_index = max((i for i, intent in enumerate(self._intent_of) if intent == best),
                          key=lambda i: probabilities[i])
        topic = self._topics[self._labels[topic_index]]
        if not clear or best == "out_of_scope":
            return Understood("out_of_scope", round(confidence, 4) if best == "out_of_scope" else 0.0,
                              language, best == "out_of_scope" and clear, None, (), candidates)
        return Understood(best, round(confidence, 4), language, True, self._faq(topic), topic.slots, candidates)

    def language(self, text: str, default: str = "pl") -> str:
        """"pl" or "en" by the letters of the text; `default` when they do not tell."""
        text = text[:MAX_CHARS]
        last_text, told = self._last_language  # one read: another thread may replace it meanwhile
        if text != last_text or not text:
            told = self._told_language(text)
            self._last_language = (text, told)
        return told or default

    def named_language(self, text: str) -> str | None:
        """The language `text` names ("polski", "English", "po angielsku": the catalog's [language]), if any."""
        return self.catalog.language_names.get(fold(" ".join(text[:MAX_CHARS].split())))

    def _told_language(self, text: str) -> str | None:
        folded = fold(text)
        if sum(ch.isalpha() for ch in folded) < 3:
            return None
        # What CountVectorizer.transform and the naive Bayes compute for one text, without the
        # transform's per-call set-up, which cost more than the sums themselves.
        counts = Counter(self._letter_analyser(folded))
        found = [(self._letter_vocabulary[gram], count) for gram, count in counts.items()
                 if gram in self._letter_vocabulary]
        scores = self._language_prior.copy()
        if found:
            found.sort()  # the sparse product's order
            index = np.fromiter((i for i, _ in found), dtype=np.intp, count=len(found))
            weights = np.fromiter((c for _, c in found), dtype=np.float64, count=len(found))
            scores = scores + weights @ self._letter_log[index]
        scores = np.exp(scores - scores.max())
        scores /= scores.sum()
        best = int(np.argmax(scores))
        return self._languages[best] if scores[best] >= LANGUAGE_MIN_CONFIDENCE else None

    def faq_entries(self) -> set[str]:
        return {t.faq for t in self.catalog.topics if t.faq}

    # --- inside -----------------------------------------------------------------------------
    def _faq(self, topic: object) -> str | None:
        faq = getattr(topic, "faq", None)
        return faq or self.catalog.faq_for(getattr(topic, "intent", ""))

    def _normalise(self, text: str) -> str:
        normal = " ".join(self.normaliser.words(text, fix_typos=self.options.typos))
        if self.options.lemmas and normal:
            import simplemma  # only for this variant: its dictionaries take seconds to load

            lemmas = (fold(simplemma.lemmatize(w, lang=("pl", "en"))) for w in text.lower().split())
            normal += " " + " ".join(f"~{lemma}" for lemma in lemmas if lemma.isalnum())
        return normal

    def _probabilities(self, normal: str) -> np.ndarray:
        scores = self._intercept.copy()
        for (analyse, vocabulary, idf), offset in zip(self._vectorisers, self._offsets, strict=True):
            # What TfidfVectorizer.transform computes for one text (sublinear tf * idf, l2), without
            # its per-call set-up, which costs more than the sums themselves on a short message.
            counts = Counter(analyse(normal))
            found = [(vocabulary[term], count) for term, count in counts.items() if term in vocabulary]
            if not found:
                continue
            index = np.fromiter((i for i, _ in found), dtype=np.intp, count=len(found))
            weights = (1.0 + np.log(np.fromiter((c for _, c in found), dtype=np.float32, count=len(found))))
            weights *= idf[index]
            weights /= np.sqrt(np.dot(weights, weights))
            scores += weights @ self._coef[index + offset]
        scores = np.exp(scores - scores.max())
        return np.asarray(scores / scores.sum())


_CACHE: dict[tuple[str, float], Understanding] = {}
_LOCK = threading.Lock()


def load_understanding(path: Path) -> Understanding:
    """The understanding trained from the catalog at `path`, once per process and catalog version."""
    key = (str(path.resolve()), path.stat().st_mtime)
    with _LOCK:
        found = _CACHE.get(key)
        if found is None:
            found = Understanding(IntentCatalog.load(path))
            _CACHE[key] = found
        return found
