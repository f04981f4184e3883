"""The agreement grammar: determinism, the committed corpus, minimal pairs, and agreement itself."""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
from pathlib import Path

import pytest

from lmtrain.data.agreement import (
    COPULAS,
    INTRANSITIVE_VERBS,
    NOUNS,
    TRANSITIVE_VERBS,
    agreement_test_set,
    bundled_training_sentences,
    generate_corpus,
    generate_sentence,
    make_minimal_pair,
    probe_conditions,
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


def test_test_set_has_distinct_pairs_per_distance_and_condition_and_is_deterministic():
    distances = (0, 1, 2, 8)
    pairs = agreement_test_set(distances, 30, seed=5)
    assert pairs == agreement_test_set(distances, 30, seed=5)
    assert pairs != agreement_test_set(distances, 30, seed=6)
    groups: dict = {}
    for pair in pairs:
        groups.setdefault((pair.distance, pair.attractors), []).append(" ".join(pair.grammatical))
    assert list(groups) == [(0, None), (1, None), (2, False), (2, True), (8, False), (8, True)]
    for (distance, _), lines in groups.items():
        assert len(lines) == 30 and len(set(lines)) == 30
        assert probe_conditions(distance) == ((None,) if distance < 2 else (False, True))


def test_test_set_pairs_differ_in_one_verb_and_both_forms_are_in_the_vocabulary():
    known = set(vocabulary())
    for pair in agreement_test_set((0, 1, 2, 4, 8, 16), 40, seed=0):
        differing = [
            i for i, (a, b) in enumerate(zip(pair.grammatical, pair.ungrammatical, strict=True)) if a != b
        ]
        assert differing == [pair.verb_index]
        assert set(pair.grammatical) <= known and set(pair.ungrammatical) <= known
        assert pair.verb_index - 2 == pair.distance
        assert pair.plural == word_number(pair.grammatical[1])
        between = {word_number(word) for word in pair.grammatical[2 : pair.verb_index]} - {None}
        expected = {None: set(), False: {pair.plural}, True: {not pair.plural}}[pair.attractors]
        assert between == expected


def test_more_distances_keep_the_pairs_of_the_shared_ones():
    small = agreement_test_set((2, 8), 20, seed=1)
    large = agreement_test_set((0, 2, 4, 8), 20, seed=1)
    assert [pair for pair in large if pair.distance in (2, 8)] == small


def test_excluded_sentences_are_never_drawn_and_a_small_space_runs_out():
    everything = {" ".join(pair.grammatical) for pair in agreement_test_set((0,), 300, seed=2)}
    again = agreement_test_set((0,), 300, seed=2, exclude=frozenset(list(everything)[:100]))
    assert not {" ".join(pair.grammatical) for pair in again} & set(list(everything)[:100])
    with pytest.raises(ValueError, match="fewer than 5000 distinct pairs"):
        agreement_test_set((0,), 5000, seed=0)


def test_no_probe_sentence_is_a_line_of_the_bundled_training_text():
    training = bundled_training_sentences()
    assert training == set((DATA / "train.txt").read_text(encoding="utf-8").splitlines())
    pairs = agreement_test_set((0, 1, 2), 200, seed=0, exclude=training)
    assert not {" ".join(pair.grammatical) for pair in pairs} & training
    # Without the exclusion, short pairs would often be copies of training lines.
    unexcluded = agreement_test_set((0,), 200, seed=0)
    assert sum(" ".join(pair.grammatical) in training for pair in unexcluded) > 10
