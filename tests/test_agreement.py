"""The agreement grammar: determinism, the committed corpus, minimal pairs, and agreement itself."""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
from pathlib import Path

import pytest

from lmtrain.agreement import (
    COPULAS,
    INTRANSITIVE_VERBS,
    NOUNS,
    TRANSITIVE_VERBS,
    generate_corpus,
    generate_sentence,
    make_minimal_pair,
    sample_pair_sentence,
    sample_sentence,
    split_distance,
    vocabulary,
    word_number,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "agreement"
SPLITS = ("train.txt", "valid.txt", "test.txt")
DISTANCES = (0, 1, 2, 4, 8)
VERBS = COPULAS + INTRANSITIVE_VERBS + TRANSITIVE_VERBS


def test_same_seed_gives_same_lines_and_other_seeds_differ():
    assert generate_corpus(300, seed=7) == generate_corpus(300, seed=7)
    assert generate_corpus(300, seed=7) != generate_corpus(300, seed=8)


def test_committed_files_equal_a_fresh_generation(tmp_path):
    script = ROOT / "scripts" / "make_agreement_corpus.py"
    command = [sys.executable, str(script), "--out", str(tmp_path), "--seed", "1234"]
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    for name in SPLITS:
        committed = (DATA / name).read_bytes()
        assert committed == (tmp_path / name).read_bytes(), f"{name} differs from a fresh generation"
        assert hashlib.sha256(committed).hexdigest() in readme, f"README lacks the sha256 of {name}"


def test_words_are_lowercase_and_dot_is_the_only_punctuation():
    words = vocabulary()
    assert 100 <= len(words) <= 250
    assert all(word == "." or (word.isalpha() and word.islower()) for word in words)
    forms = [form for entry in NOUNS + VERBS for form in (entry.singular, entry.plural)]
    assert len(forms) == len(set(forms)), "a word form would have two numbers"


def test_generated_sentences_use_the_vocabulary_and_end_with_a_dot():
    rng = random.Random(0)
    known = set(vocabulary())
    lengths = []
    for _ in range(2000):
        tokens = generate_sentence(rng)
        assert tokens[-1] == "." and "." not in tokens[:-1]
        assert set(tokens) <= known
        lengths.append(len(tokens))
    assert sum(5 <= length <= 25 for length in lengths) / len(lengths) > 0.8
    assert max(lengths) > 20


def test_every_clause_in_corpus_sentences_agrees():
    rng = random.Random(1)
    for _ in range(2000):
        sentence = sample_sentence(rng, max_depth=3)
        rendering = sentence.render()
        tokens = rendering.tokens
        assert sentence.agrees
        assert (rendering.subject_index, rendering.verb_index) in rendering.agreements
        assert word_number(tokens[rendering.subject_index]) == sentence.subject.plural
        for noun_index, verb_index in rendering.agreements:
            assert noun_index < verb_index
            assert word_number(tokens[noun_index]) is not None
            assert word_number(tokens[noun_index]) == word_number(tokens[verb_index]), " ".join(tokens)


def test_max_depth_zero_gives_no_modifiers():
    rng = random.Random(2)
    for _ in range(200):
        sentence = sample_sentence(rng, max_depth=0)
        assert sentence.subject.modifiers == ()
        assert len(sentence.render().agreements) == 1


@pytest.mark.parametrize("attractors", [True, False])
@pytest.mark.parametrize("distance", DISTANCES)
def test_minimal_pairs_differ_only_in_the_number_of_the_verb(distance, attractors):
    rng = random.Random(distance)
    for _ in range(200):
        grammatical, ungrammatical, verb_index = make_minimal_pair(rng, distance, attractors)
        assert len(grammatical) == len(ungrammatical)
        differing = [i for i, (a, b) in enumerate(zip(grammatical, ungrammatical, strict=True)) if a != b]
        assert differing == [verb_index]
        good, bad = grammatical[verb_index], ungrammatical[verb_index]
        assert any({good, bad} == {verb.singular, verb.plural} for verb in VERBS)

        subject_plural = word_number(grammatical[1])
        assert subject_plural is not None and grammatical[0] == "the"
        assert verb_index - 1 - 1 == distance
        assert word_number(good) == subject_plural and word_number(bad) != subject_plural
        numbers_between = {word_number(word) for word in grammatical[2:verb_index]} - {None}
        if distance >= 2:
            assert numbers_between == {subject_plural != attractors}
        else:
            assert numbers_between == set()


def test_pair_structure_puts_the_subject_at_index_one():
    rng = random.Random(3)
    for distance in DISTANCES:
        rendering = sample_pair_sentence(rng, distance).render()
        assert rendering.subject_index == 1
        assert rendering.verb_index - rendering.subject_index - 1 == distance


def test_split_distance_sums_exactly_and_rejects_unreachable_distances():
    rng = random.Random(4)
    for distance in [0, *range(2, 30)]:
        assert sum(split_distance(rng, distance)) == distance
    with pytest.raises(ValueError):
        split_distance(rng, 1)
    with pytest.raises(ValueError):
        make_minimal_pair(rng, -1)
