"""A toy English grammar whose sentences carry subject-verb agreement across intervening words.

The reference notes (sequence-models-notes.md, "Vanishing Gradients") show why plain RNNs find long
dependencies hard with "The cat, which already ate ..., was full" versus "The cats, which already
ate ..., were full": the verb's number depends on a noun many words back. This grammar produces that
dependency on purpose, with relative clauses and prepositional phrases between subject and verb whose
nouns often have the other number (attractors: "the cat near the tables is hungry").

Grammar (`?` optional, `*` repeated, `|` alternatives; nesting of modifiers is bounded by `max_depth`):

    Sentence -> NP[animate] Adverb? VP .
    VP       -> Copula Adjective  |  Intransitive  |  Transitive NP
    NP       -> Determiner Adjective? Noun Modifier*  |  Pronoun      (pronouns only after prepositions)
    Modifier -> Preposition NP                                         prepositional phrase
              | that Intransitive  |  that Transitive NP              subject relative: head is the subject
              | that NP Transitive                                     object relative: head is the object

Every present-tense verb agrees in number with its subject: the main verb with the head noun of the
sentence's subject, a subject-relative verb with the noun the clause modifies, an object-relative verb
with the clause's own subject. Only the main verb's number is stored (`Sentence.verb_plural`) so that an
ungrammatical twin can be built; the others follow from the structure when it is rendered.

Sentences are built as structures (`Sentence`, `NounPhrase`, `PrepositionalPhrase`, `RelativeClause`)
and only then rendered to tokens, so the subject, the verb and the words between them are known without
parsing text. `make_minimal_pair` uses this to build probe pairs with an exact number of words between
subject and verb, and `agreement_test_set` collects them into a deterministic test set by distance and
attractor condition (what `lmtrain probe` scores). All words are lowercase; "." is the only punctuation
token.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

# --- Lexicon -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inflection:
    """A word with a singular and a plural form: a noun (cat/cats) or a present-tense verb (sleeps/sleep)."""

    singular: str
    plural: str

    def form(self, plural: bool) -> str:
        return self.plural if plural else self.singular


def _inflections(pairs: str) -> tuple[Inflection, ...]:
    """Parse "cat/cats dog/dogs" into inflections."""
    return tuple(Inflection(*pair.split("/")) for pair in pairs.split())


ANIMATE_NOUNS = _inflections(
    "cat/cats dog/dogs bird/birds horse/horses mouse/mice rabbit/rabbits fox/foxes wolf/wolves "
    "child/children man/men woman/women boy/boys girl/girls baby/babies teacher/teachers "
    "farmer/farmers doctor/doctors student/students king/kings queen/queens pilot/pilots "
    "neighbor/neighbors"
)
INANIMATE_NOUNS = _inflections(
    "table/tables house/houses tree/trees box/boxes garden/gardens car/cars river/rivers "
    "bridge/bridges window/windows door/doors chair/chairs road/roads church/churches "
    "bench/benches wall/walls hill/hills lake/lakes shop/shops park/parks fence/fences "
    "boat/boats tower/towers"
)
NOUNS = ANIMATE_NOUNS + INANIMATE_NOUNS

COPULAS = _inflections("is/are was/were")
INTRANSITIVE_VERBS = _inflections(
    "sleeps/sleep runs/run sings/sing waits/wait smiles/smile laughs/laugh swims/swim works/work "
    "plays/play eats/eat cries/cry dances/dance"
)
# Verbs whose object may be anything, and verbs whose object must be animate ("helps the table" is out).
ANY_OBJECT_VERBS = _inflections(
    "sees/see likes/like watches/watch finds/find loves/love remembers/remember wants/want needs/need"
)
ANIMATE_OBJECT_VERBS = _inflections(
    "chases/chase helps/help meets/meet calls/call thanks/thank follows/follow teaches/teach feeds/feed"
)
TRANSITIVE_VERBS = ANY_OBJECT_VERBS + ANIMATE_OBJECT_VERBS

# Consonant-initial, so that "a" never needs to become "an".
ADJECTIVES = (
    "hungry happy tired small big young little tall sad sick busy brave lazy clever calm quiet "
    "strong gentle famous friendly wet dirty noisy sleepy"
).split()
NEUTRAL_DETERMINERS = ("the", "my", "your", "our", "his")
SINGULAR_DETERMINERS = ("a", "this", "every")
PLURAL_DETERMINERS = ("these", "those", "some", "many", "two", "three")
PREPOSITIONS = ("near", "behind", "beside", "under", "above", "with", "of", "from", "without")
SINGULAR_PRONOUNS = ("him", "her", "it")
PLURAL_PRONOUN = "them"
ADVERBS = ("often", "never", "always", "still", "really", "usually")
COMPLEMENTIZER = "that"
END = "."


def word_number(word: str) -> bool | None:
    """True if `word` is a plural noun, verb or pronoun, False if singular, None if it has no number."""
    return _NUMBER.get(word)


def _number_table() -> dict[str, bool]:
    table = {pronoun: False for pronoun in SINGULAR_PRONOUNS} | {PLURAL_PRONOUN: True}
    for entry in NOUNS + COPULAS + INTRANSITIVE_VERBS + TRANSITIVE_VERBS:
        table[entry.singular] = False
        table[entry.plural] = True
    return table


_NUMBER = _number_table()


def vocabulary() -> list[str]:
    """Every word the grammar can produce, sorted."""
    words = set(_NUMBER) | set(ADJECTIVES) | set(PREPOSITIONS) | set(ADVERBS) | {COMPLEMENTIZER, END}
    words |= set(NEUTRAL_DETERMINERS + SINGULAR_DETERMINERS + PLURAL_DETERMINERS)
    return sorted(words)


# --- Structure -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NounPhrase:
    """`determiner adjective? noun modifier*`; a pronoun is a phrase with only `noun` set."""

    noun: str
    plural: bool
    determiner: str | None = None
    adjective: str | None = None
    modifiers: tuple[PrepositionalPhrase | RelativeClause, ...] = ()


@dataclass(frozen=True)
class PrepositionalPhrase:
    """`preposition object`, as in "near the tables"."""

    preposition: str
    object: NounPhrase


@dataclass(frozen=True)
class RelativeClause:
    """`that verb object?` when `subject` is None (the modified noun is the verb's subject: "that chases
    the dogs"), `that subject verb` otherwise (the modified noun is the verb's object: "that the dogs chase").
    """

    verb: Inflection
    subject: NounPhrase | None = None
    object: NounPhrase | None = None


@dataclass(frozen=True)
class Sentence:
    """`subject adverb? verb complement? .`; the complement is a predicate adjective or an object."""

    subject: NounPhrase
    verb: Inflection
    verb_plural: bool
    adverb: str | None = None
    complement: str | NounPhrase | None = None

    @property
    def agrees(self) -> bool:
        return self.verb_plural == self.subject.plural

    def render(self) -> Rendering:
        tokens: list[str] = []
        agreements: list[tuple[int, int]] = []
        subject_index = _render_noun_phrase(self.subject, tokens, agreements)
        if self.adverb is not None:
            tokens.append(self.adverb)
        verb_index = len(tokens)
        tokens.append(self.verb.form(self.verb_plural))
        agreements.append((subject_index, verb_index))
        if isinstance(self.complement, NounPhrase):
            _render_noun_phrase(self.complement, tokens, agreements)
        elif self.complement is not None:
            tokens.append(self.complement)
        tokens.append(END)
        return Rendering(tokens, subject_index, verb_index, agreements)

    def tokens(self) -> list[str]:
        return self.render().tokens


@dataclass(frozen=True)
class Rendering:
    """A sentence's tokens and where its agreeing words are.

    `agreements` holds one (noun index, verb index) pair per clause, the main clause included; the noun
    is the verb's subject (for a subject relative, the noun the clause modifies).
    """

    tokens: list[str]
    subject_index: int
    verb_index: int
    agreements: list[tuple[int, int]]


def _render_noun_phrase(phrase: NounPhrase, tokens: list[str], agreements: list[tuple[int, int]]) -> int:
    """Append the phrase's tokens; return the index of its head noun."""
    if phrase.determiner is not None:
        tokens.append(phrase.determiner)
    if phrase.adjective is not None:
        tokens.append(phrase.adjective)
    head_index = len(tokens)
    tokens.append(phrase.noun)
    for modifier in phrase.modifiers:
        if isinstance(modifier, PrepositionalPhrase):
            tokens.append(modifier.preposition)
            _render_noun_phrase(modifier.object, tokens, agreements)
            continue
        tokens.append(COMPLEMENTIZER)
        if modifier.subject is None:  # subject relative: the verb agrees with the modified noun
            agreements.append((head_index, len(tokens)))
            tokens.append(modifier.verb.form(phrase.plural))
            if modifier.object is not None:
                _render_noun_phrase(modifier.object, tokens, agreements)
        else:  # object relative: the verb agrees with the clause's own subject
            subject_index = _render_noun_phrase(modifier.subject, tokens, agreements)
            agreements.append((subject_index, len(tokens)))
            tokens.append(modifier.verb.form(modifier.subject.plural))
    return head_index


# --- Random sentences for the corpus -------------------------------------------------------------

# Probabilities of the corpus sampler. They set the length distribution (mostly 5-25 tokens) and how often
# a subject is separated from its verb; three in five subjects carry a modifier.
P_PLURAL = 0.5
P_ADJECTIVE = 0.2
P_NEUTRAL_DETERMINER = 0.7
P_PRONOUN = 0.15
P_SUBJECT_MODIFIER = 0.6
P_SECOND_SUBJECT_MODIFIER = 0.2
P_NESTED_MODIFIER = 0.35
P_OBJECT_MODIFIER = 0.25
P_ADVERB = 0.1


def generate_sentence(rng: random.Random, max_depth: int = 2) -> list[str]:
    """One random sentence's tokens, ending with "."; modifiers nest at most `max_depth` deep."""
    return sample_sentence(rng, max_depth).tokens()


def generate_corpus(num_sentences: int, seed: int, max_depth: int = 2) -> list[str]:
    """`num_sentences` lines of space-separated tokens; the same seed gives the same lines."""
    rng = random.Random(seed)
    return [" ".join(generate_sentence(rng, max_depth)) for _ in range(num_sentences)]


def sample_sentence(rng: random.Random, max_depth: int = 2) -> Sentence:
    """A random grammatical sentence as a structure (see `Sentence.render` for its tokens)."""
    subject = _noun_phrase(rng, ANIMATE_NOUNS, _subject_modifier_count(rng, max_depth), 0, max_depth)
    adverb = rng.choice(ADVERBS) if rng.random() < P_ADVERB else None
    kind = rng.choice(("copula", "intransitive", "transitive"))
    if kind == "copula":
        verb, complement = rng.choice(COPULAS), rng.choice(ADJECTIVES)
    elif kind == "intransitive":
        verb, complement = rng.choice(INTRANSITIVE_VERBS), None
    else:
        verb = rng.choice(TRANSITIVE_VERBS)
        count = 1 if max_depth > 0 and rng.random() < P_OBJECT_MODIFIER else 0
        complement = _noun_phrase(rng, _objects_of(verb), count, 0, max_depth)
    return Sentence(subject, verb, subject.plural, adverb, complement)


def _subject_modifier_count(rng: random.Random, max_depth: int) -> int:
    if max_depth == 0 or rng.random() >= P_SUBJECT_MODIFIER:
        return 0
    return 2 if rng.random() < P_SECOND_SUBJECT_MODIFIER else 1


def _noun_phrase(
    rng: random.Random, nouns: tuple[Inflection, ...], num_modifiers: int, depth: int, max_depth: int
) -> NounPhrase:
    """A phrase headed by one of `nouns` with `num_modifiers` modifiers, whose phrases sit at depth + 1."""
    plural = rng.random() < P_PLURAL
    if rng.random() < P_NEUTRAL_DETERMINER:
        determiner = rng.choice(NEUTRAL_DETERMINERS)
    else:
        determiner = rng.choice(PLURAL_DETERMINERS if plural else SINGULAR_DETERMINERS)
    adjective = rng.choice(ADJECTIVES) if rng.random() < P_ADJECTIVE else None
    noun = rng.choice(nouns)
    animate = noun in ANIMATE_NOUNS
    modifiers = tuple(_modifier(rng, animate, depth + 1, max_depth) for _ in range(num_modifiers))
    return NounPhrase(noun.form(plural), plural, determiner, adjective, modifiers)


def _modifier(
    rng: random.Random, head_animate: bool, depth: int, max_depth: int
) -> PrepositionalPhrase | RelativeClause:
    """A modifier of a noun: half the time a prepositional phrase, else a relative clause.

    Only an animate head can be a subject relative's subject ("the table that sleeps" is out); the
    phrases inside the modifier sit at `depth` and get a modifier of their own below `max_depth`.
    """
    nested = 1 if depth < max_depth and rng.random() < P_NESTED_MODIFIER else 0
    draw = rng.random()
    if draw < 0.5:
        preposition = rng.choice(PREPOSITIONS)
        if rng.random() < P_PRONOUN:
            return PrepositionalPhrase(preposition, _pronoun(rng, rng.random() < P_PLURAL))
        return PrepositionalPhrase(preposition, _noun_phrase(rng, NOUNS, nested, depth, max_depth))
    if draw < 0.75 and head_animate:
        verb = rng.choice(INTRANSITIVE_VERBS + TRANSITIVE_VERBS)
        if verb in INTRANSITIVE_VERBS:
            return RelativeClause(verb)
        return RelativeClause(verb, object=_noun_phrase(rng, _objects_of(verb), nested, depth, max_depth))
    verb = rng.choice(TRANSITIVE_VERBS if head_animate else ANY_OBJECT_VERBS)
    return RelativeClause(verb, subject=_noun_phrase(rng, ANIMATE_NOUNS, nested, depth, max_depth))


def _pronoun(rng: random.Random, plural: bool) -> NounPhrase:
    return NounPhrase(PLURAL_PRONOUN if plural else rng.choice(SINGULAR_PRONOUNS), plural)


def _objects_of(verb: Inflection) -> tuple[Inflection, ...]:
    return ANIMATE_NOUNS if verb in ANIMATE_OBJECT_VERBS else NOUNS


# --- Minimal pairs for probing long-range memory -------------------------------------------------

# Lengths of the intervening phrases a pair is built from: prep + pronoun ("near them"), prep + the + noun
# ("near the tables"), prep + the + adjective + noun or an object relative ("that the dogs chase"). Any
# distance of 2 or more is a sum of these; distance 1 is a lone adverb, which holds no noun.
PHRASE_LENGTHS = (2, 3, 4)


def make_minimal_pair(
    rng: random.Random, distance: int, attractors: bool = True
) -> tuple[list[str], list[str], int]:
    """A grammatical sentence, its twin with the main verb's number flipped, and the verb's index.

    Exactly `distance` words separate the subject noun (always at index 1, after "the") from the verb.
    They are prepositional phrases and object relatives attached to the subject; with `attractors` every
    noun and pronoun in them has the number opposite to the subject's ("the cat near the tables is"),
    otherwise the same number ("the cat near the table is"). Distance 1 is an adverb and holds no noun.
    """
    sentence = sample_pair_sentence(rng, distance, attractors)
    grammatical = sentence.render()
    ungrammatical = replace(sentence, verb_plural=not sentence.verb_plural).render()
    return grammatical.tokens, ungrammatical.tokens, grammatical.verb_index


def sample_pair_sentence(rng: random.Random, distance: int, attractors: bool = True) -> Sentence:
    """The grammatical member of a minimal pair, as a structure (see `make_minimal_pair`)."""
    if distance < 0:
        raise ValueError(f"distance must be 0 or more, got {distance}")
    plural = rng.random() < P_PLURAL
    noun_plural = plural != attractors
    adverb = rng.choice(ADVERBS) if distance == 1 else None
    lengths = split_distance(rng, distance) if distance >= 2 else []
    modifiers = tuple(_intervening_phrase(rng, length, noun_plural) for length in lengths)
    subject = NounPhrase(rng.choice(ANIMATE_NOUNS).form(plural), plural, "the", modifiers=modifiers)
    kind = rng.choice(("copula", "intransitive"))
    if kind == "copula":
        return Sentence(subject, rng.choice(COPULAS), plural, adverb, rng.choice(ADJECTIVES))
    return Sentence(subject, rng.choice(INTRANSITIVE_VERBS), plural, adverb)


def split_distance(rng: random.Random, distance: int) -> list[int]:
    """Random phrase lengths from PHRASE_LENGTHS that sum to `distance` (which must be 0 or at least 2)."""
    if distance == 1 or distance < 0:
        raise ValueError(f"no phrases sum to {distance}; use 0 or a distance of at least 2")
    lengths: list[int] = []
    remaining = distance
    while remaining > 0:
        # Never leave a remainder of 1: no phrase is one word long.
        fitting = [length for length in PHRASE_LENGTHS if remaining - length == 0 or remaining - length >= 2]
        lengths.append(rng.choice(fitting))
        remaining -= lengths[-1]
    return lengths


def _intervening_phrase(
    rng: random.Random, length: int, noun_plural: bool
) -> PrepositionalPhrase | RelativeClause:
    """A modifier of an animate subject, `length` words long, whose one noun has number `noun_plural`."""
    preposition = rng.choice(PREPOSITIONS)
    if length == 2:
        return PrepositionalPhrase(preposition, _pronoun(rng, noun_plural))
    noun = rng.choice(NOUNS).form(noun_plural)
    if length == 3:
        return PrepositionalPhrase(preposition, NounPhrase(noun, noun_plural, "the"))
    if length != 4:
        raise ValueError(f"no intervening phrase is {length} words long; lengths are {PHRASE_LENGTHS}")
    if rng.random() < 0.5:
        return PrepositionalPhrase(preposition, NounPhrase(noun, noun_plural, "the", rng.choice(ADJECTIVES)))
    subject = NounPhrase(rng.choice(ANIMATE_NOUNS).form(noun_plural), noun_plural, "the")
    return RelativeClause(rng.choice(TRANSITIVE_VERBS), subject=subject)


# --- Agreement test sets ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbePair:
    """A minimal pair of a test set: two sentences that differ only in the main verb's number.

    `attractors` is True when every noun between subject and verb has the other number ("the cat near
    the tables is"), False when they all have the subject's number, and None when no noun stands
    between them (distances 0 and 1).
    """

    grammatical: tuple[str, ...]
    ungrammatical: tuple[str, ...]
    verb_index: int
    distance: int
    attractors: bool | None

    @property
    def plural(self) -> bool:
        """Whether the grammatical verb (and the subject) is plural."""
        return bool(word_number(self.grammatical[self.verb_index]))


def probe_conditions(distance: int) -> tuple[bool | None, ...]:
    """The attractor conditions a distance has: none below 2 (no noun fits), else without and with."""
    return (None,) if distance < 2 else (False, True)


MAX_FAILED_DRAWS = 1000
"""Draws in a row that repeat a pair or hit an excluded sentence before `agreement_test_set` gives up."""


def agreement_test_set(
    distances: tuple[int, ...], pairs_per_condition: int, seed: int, exclude: frozenset[str] = frozenset()
) -> list[ProbePair]:
    """`pairs_per_condition` distinct minimal pairs for every distance and attractor condition.

    Each (distance, condition) draws from its own generator, seeded with the seed, the distance and
    the condition, so a set with more distances holds the same pairs for the distances it shares with
    a smaller one. Grammatical sentences found in `exclude` (lines of space-separated tokens, such as
    a training text) are drawn again. Raises ValueError when a distance cannot be built or has fewer
    distinct sentences than asked for (distance 0 has about 2,600).
    """
    pairs = []
    for distance in distances:
        for attractors in probe_conditions(distance):
            rng = random.Random(f"agreement-probe/{seed}/{distance}/{attractors}")
            seen: set[str] = set()
            failures = 0  # draws in a row that gave nothing new: many mean the distance has run out
            while len(seen) < pairs_per_condition and failures < MAX_FAILED_DRAWS:
                grammatical, ungrammatical, verb_index = make_minimal_pair(rng, distance, bool(attractors))
                line = " ".join(grammatical)
                if line in seen or line in exclude:
                    failures += 1
                    continue
                failures = 0
                seen.add(line)
                pairs.append(
                    ProbePair(tuple(grammatical), tuple(ungrammatical), verb_index, distance, attractors)
                )
            if len(seen) < pairs_per_condition:
                raise ValueError(
                    f"distance {distance} has fewer than {pairs_per_condition} distinct pairs that are not "
                    f"excluded (found {len(seen)}); ask for fewer pairs"
                )
    return pairs


# --- The bundled corpus -----------------------------------------------------------------------------

DEFAULT_SEED = 1234
DEFAULT_SIZES = {"train": 13_600, "valid": 1_360, "test": 1_360}
"""Sentences per split of the bundled corpus: about 120,000 / 12,000 / 12,000 words."""
DEFAULT_MAX_DEPTH = 2


@lru_cache(maxsize=1)
def bundled_training_sentences() -> frozenset[str]:
    """The lines of the bundled `train.txt`, regenerated from its seed (the file is not read)."""
    return frozenset(generate_corpus(DEFAULT_SIZES["train"], DEFAULT_SEED, DEFAULT_MAX_DEPTH))


def write_corpus(
    folder: Path,
    seed: int = DEFAULT_SEED,
    sizes: dict[str, int] = DEFAULT_SIZES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> dict[str, Path]:
    """Write one file per split (`train.txt`, ...); split i uses seed `seed + i`. Returns the paths.

    With the defaults this reproduces the bundled `data/agreement/` byte for byte. Each file is written
    to a temporary name and renamed, so a reader never sees half a file.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for offset, (split, num_sentences) in enumerate(sizes.items()):
        lines = generate_corpus(num_sentences, seed + offset, max_depth)
        path = folder / f"{split}.txt"
        temporary = folder / f".{split}.txt.tmp"
        temporary.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        os.replace(temporary, path)
        paths[split] = path
    return paths
