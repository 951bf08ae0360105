"""A synthetic language to train on: deterministic, seeded, with learnable structure.

Every seed makes a different language: its own lexicon (200 words spelled from a skewed
letter distribution), its own word-to-word transition table, its own set of question
words. Sentences that start with a question word end in "?", so a model gains from
looking back across the sentence (attention), not only at the last few characters.

    python3 data.py SEED N_CHARS OUT.txt     # write a corpus, e.g. 0 600000 corpus.txt

Text uses exactly the 32 symbols of ALPHABET; a token is the index of its symbol.
"""

import random
import sys

ALPHABET = "\n ,.;?abcdefghijklmnopqrstuvwxyz"
assert len(ALPHABET) == 32


def make_language(seed):
    rng = random.Random(seed)
    letters = list("abcdefghijklmnopqrstuvwxyz")
    rng.shuffle(letters)
    vowels, consonants = letters[:6], letters[6:]
    weights_c = [1.0 / (i + 1) for i in range(len(consonants))]
    weights_v = [1.0 / (i + 1) for i in range(len(vowels))]
    words = set()
    while len(words) < 200:
        n = rng.choice([2, 3, 3, 4, 4, 5, 5, 6, 7])
        start_vowel = rng.random() < 0.3
        w = "".join(
            rng.choices(vowels, weights_v)[0] if (i % 2 == 0) == start_vowel else rng.choices(consonants, weights_c)[0]
            for i in range(n)
        )
        words.add(w)
    words = sorted(words)
    rng.shuffle(words)
    successors = {}
    for w in words:
        nexts = rng.sample(words, 6)
        probs = [rng.random() ** 2 + 0.05 for _ in nexts]
        successors[w] = (nexts, probs)
    questions = set(words[:20])
    return words, successors, questions


def generate(seed, n_chars, text_seed=None):
    """`n_chars` characters of the language of `seed`, drawn with `text_seed` (default: from seed)."""
    words, successors, questions = make_language(seed)
    rng = random.Random(seed * 7919 + 17 if text_seed is None else text_seed)
    out, size = [], 0
    while size < n_chars:
        paragraph = []
        for _ in range(rng.randint(2, 5)):
            w = rng.choice(words)
            question = w in questions
            sentence = [w]
            for _ in range(rng.randint(3, 12)):
                nexts, probs = successors[w]
                w = rng.choices(nexts, probs)[0]
                sentence.append(("," if rng.random() < 0.08 else "") + " " + w)
            paragraph.append("".join(sentence) + ("?" if question else rng.choice([".", ".", ".", ";"])))
        text = " ".join(paragraph) + "\n"
        out.append(text)
        size += len(text)
    return "".join(out)[:n_chars]


if __name__ == "__main__":
    seed, n, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    with open(path, "w") as f:
        f.write(generate(seed, n))
