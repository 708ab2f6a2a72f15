"""A second synthetic world for chapter 2, in which in-context learning has to *infer* a label
from a whole input: no single word decides it.

The first world (:mod:`.data`) puts one nonsense cue word at the end of every input whose class
only the demonstrations reveal; the tiny GPT pretrained on it learned to look that word up. This
world removes the cue and spreads the evidence over many words, each of which is a weak and
unreliable witness:

* **Graded affinities.** Every content word has a valence (polarity words, -2 to +2), a kind
  (opinion or fact) or a topic (world, sports, business, technology). A sentence of class ``y``
  draws each of its content words from a distribution that leans towards ``y``; one word names the
  class only about 60% of the time, the whole input about 90% (:func:`reference_accuracy`).
* **Negation.** ``not`` before a polarity word flips its valence, so a bag of words misreads it.
* **Senses.** Each family's words have :data:`SENSES` fixed ways of meaning: the canonical one,
  which documents use, and others that each flip :data:`DRIFT` of the words, as words change
  sense between domains. A pretraining catalogue uses one at random; each evaluation data set
  uses a fixed non-canonical one (:data:`TASK_SENSE`). The weights can hold every sense, and
  only the demonstrations say which one a data set uses: in-context learning as inference of a
  latent concept (Xie et al. 2022), its evidence spread over every word of every demonstration
  (:func:`sense_reader` is the ideal such reader).
* **CB** asks whether a hypothesis about a person follows from a premise (True), contradicts it
  with the antonym of the premise's property (False), or speaks of someone the premise never
  mentions (Neither): no single token tells them apart.

Pretraining text (:func:`pretraining_batch`) mixes three kinds of rows:

* **documents**: inputs of every family, each followed, half of the time, by a verdict phrase
  ``in short <label> .`` with the family's canonical label word: knowledge of the task stored in
  the weights (the zero-shot regime);
* **catalogues**: lists of (input, tag) pairs of one family in formats that are *not* the
  evaluation templates (other prefixes, markers and separators, :data:`FORMATS`), with a
  verbalizer drawn per catalogue (canonical 30% of the time, else words of the label pool) and
  a sense drawn per catalogue (what teaches in-context learning, Shen et al. 2024: pretraining on
  the evaluation format itself makes a meta-trained toy);
* **repeated text**: a block of inputs repeated until the row is full (induction heads form
  early on text that repeats itself, Olsson et al. 2022).

The evaluation templates' prefix and marker words (``Sentence:``, ``Label:``, ...) never occur in
pretraining: a prompt of the chapter is a format the model has not seen, as in the paper. Two
switches of :func:`pretraining_batch`, off in the shipped recipe, vary that for trials
(benchmarks/README, issue 31): ``p_template_words`` lets the template words occur as ordinary
words of documents (known words, never a format), and ``p_word_formats`` gives catalogues formats
of ordinary words (:data:`FORMAT_WORDS`) in place of :data:`FORMATS`' prefixes and markers.

Example::

    task = data.TASKS["sst2"]
    ds = make_dataset("sst2", n=100, seed=0)         # a data set in its task's own sense
    ids, spans = WORLD.prompt(task, demos, ds.inputs[0])
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from iclbook import runtime
from iclbook.implicit import data
from iclbook.implicit.codec import WordCodec
from iclbook.implicit.data import TASK_NAMES, TASKS, Dataset, Task

# ---------------------------------------------------------------------------------------------
# Lexicons
# ---------------------------------------------------------------------------------------------

#: Polarity words by valence, two lexicons: SST-2 and SST-5 read the first, MR the second.
POLARITY = {
    "sst": {
        -2: ("awful", "dreadful", "horrid", "painful", "vile"),
        -1: ("dull", "bland", "weak", "messy", "flat"),
        1: ("fine", "warm", "decent", "pleasant", "neat"),
        2: ("superb", "lovely", "brilliant", "stunning", "perfect"),
    },
    "mr": {
        -2: ("tedious", "clumsy", "hollow", "dire", "inept"),
        -1: ("boring", "silly", "stale", "slow", "thin"),
        1: ("charming", "witty", "fresh", "clever", "solid"),
        2: ("gripping", "moving", "dazzling", "masterful", "tender"),
    },
}
KIND = (
    ("located", "founded", "released", "born", "built", "moved", "listed", "dated"),  # objective
    ("feel", "love", "hate", "think", "believe", "wish", "adore", "doubt"),  # subjective
)
TOPIC = (
    ("war", "minister", "treaty", "election", "border", "troops", "summit", "embassy"),
    ("match", "coach", "goal", "team", "league", "striker", "season", "medal"),
    ("market", "profit", "stocks", "bank", "merger", "shares", "revenue", "trade"),
    ("software", "chip", "internet", "robot", "server", "laptop", "code", "network"),
)
FILLER = data.FILLER
NEGATOR = "not"
PEOPLE = data.PEOPLE
#: CB's properties, in antonym pairs: False states the antonym of the premise's property.
ANTONYMS = (("tall", "short"), ("calm", "angry"), ("old", "young"), ("kind", "mean"), ("wet", "dry"), ("early", "late"))
PROPS = tuple(p for pair in ANTONYMS for p in pair)
ANTONYM = {a: b for x, y in ANTONYMS for a, b in ((x, y), (y, x))}

#: The families: which task reads which lexicon.
FAMILY = {"sst2": "sst", "sst5": "sst", "mr": "mr", "subj": "kind", "agnews": "topic", "cb": "cb"}

# Sentence shape: content words per input and the probabilities that set each word's reliability.
CONTENT = {"sst": 6, "mr": 6, "kind": 8, "topic": 7}
P_NEGATE = 0.3  # chance that a polarity word is negated ("not dull")
LEAN = {"sst": 0.78, "mr": 0.78, "kind": 0.64, "topic": 0.58}  # chance a word leans to its class
CLEAR_LEAN = 0.95  # the lean of a clear-cut catalogue's inputs (pretraining_batch's p_clear)
DRIFT = 0.3  # share of a family's words whose meaning a sense other than the canonical one flips
#: Each family's words have SENSES ways of meaning: sense 0 is the canonical one (documents'),
#: senses 1.. each flip a fixed DRIFT of the words. A catalogue uses one sense drawn at random;
#: an evaluation data set uses a fixed non-canonical sense (TASK_SENSE), which only its
#: demonstrations reveal (in-context learning as inference of a latent concept, Xie et al. 2022).
SENSES = 4
TASK_SENSE = {"sst2": 1, "sst5": 2, "mr": 1, "subj": 1, "agnews": 1, "cb": 0}

# ---------------------------------------------------------------------------------------------
# Formats: the evaluation templates' words (held out of pretraining) and pretraining's own
# ---------------------------------------------------------------------------------------------

#: Pretraining catalogues' formats: prefixes before an input ("" = none), markers before its
#: tag, separators between pairs. None of them is an evaluation template word.
FORMATS = {
    "prefix": ("", "item", "text", "entry", "line", "input", "note", "row", "case", "q"),
    "marker": ("tag", "class", "sort", "=", "->", "gets", "says", "verdict", "means", "as", "=>", "reads", "goes"),
    "separator": (";", "|", "</s>", "//", ",", "#"),
}
VERDICT = ("in", "short")  # documents end in "in short <label> ." half of the time
#: One of pretraining's own catalogue formats (a prefix and a marker of FORMATS): chapter 2 and
#: the in-training readings (:func:`.retrain.world_evaluation`) read the second model in it
#: beside the held-out templates, to tell what a new template costs from what ICL does.
OWN_FORMAT = {"prefix": "item", "marker": "tag"}
#: The words a catalogue's prefix and marker are drawn from with ``pretraining_batch``'s
#: ``p_word_formats``: words with other roles in the text (fillers, CB's people and properties).
FORMAT_WORDS = tuple(FILLER) + tuple(PEOPLE) + tuple(PROPS)


def _vocabulary() -> tuple[str, ...]:
    words: list[str] = list(data.SPECIALS)
    for t in TASKS.values():
        words += [t.prefix, t.marker]
    words += list(data.CB_CHOICES) + ["is", NEGATOR, "."]
    words += [w for key in ("prefix", "marker", "separator") for w in FORMATS[key] if w]
    words += list(VERDICT) + list(FILLER)
    words += [w for lex in POLARITY.values() for ws in lex.values() for w in ws]
    words += [w for ws in KIND + TOPIC for w in ws]
    words += list(data.LABEL_POOL) + list(PEOPLE) + list(PROPS)
    return tuple(dict.fromkeys(words))


VOCAB = _vocabulary()
TOKEN_ID = {w: i for i, w in enumerate(VOCAB)}
HELD_OUT = tuple(dict.fromkeys(w for t in TASKS.values() for w in (t.prefix, t.marker) if w != "Question:"))


def encode(words: Sequence[str]) -> list[int]:
    """Word list -> token ids of this world's closed vocabulary (an unknown word is a ValueError)."""
    try:
        return [TOKEN_ID[w] for w in words]
    except KeyError as err:
        raise ValueError(f"word {err.args[0]!r} is not in the inference world's vocabulary") from None


def decode(ids: Sequence[int]) -> str:
    return " ".join(VOCAB[int(i)] for i in ids)


# ---------------------------------------------------------------------------------------------
# Meanings and sentences
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Meaning:
    """What each content word of a family means in one data set: a word's class (kind, topic)
    or valence sign (polarity) in one sense. ``flipped`` lists the words whose meaning it flips."""

    family: str
    flipped: frozenset[str] = frozenset()


def _family_groups(family: str) -> tuple[tuple[str, ...], ...]:
    """The family's words in their groups: valences -2, -1, 1, 2 for polarity, classes for kind
    and topic (none for CB)."""
    if family in POLARITY:
        return tuple(POLARITY[family].values())
    return {"kind": KIND, "topic": TOPIC}.get(family, ())


def _family_words(family: str) -> tuple[str, ...]:
    return tuple(w for ws in _family_groups(family) for w in ws)


def draw_meaning(family: str, rng: random.Random, drift: float = DRIFT) -> Meaning:
    """Meanings with ``drift`` of the family's words flipped (a polarity word changes
    sign, an opinion word reads as fact and back, a topic word moves to the next topic). The
    flips are spread evenly over the groups (one more in some where the count does not divide),
    so no class or valence is ever left without words."""
    groups = _family_groups(family)
    if not groups:
        return Meaning(family)
    base, extra = divmod(round(drift * sum(map(len, groups))), len(groups))
    more = set(rng.sample(range(len(groups)), extra))
    flipped = [w for g, ws in enumerate(groups) for w in rng.sample(ws, min(len(ws), base + (g in more)))]
    return Meaning(family, frozenset(flipped))


@functools.cache
def sense(family: str, index: int) -> Meaning:
    """The family's meanings in sense ``index`` (0 = canonical; 1 .. SENSES - 1 each flip a
    fixed :data:`DRIFT` of the words, drawn once from a stream of their own)."""
    if not 0 <= index < SENSES:
        raise ValueError(f"sense must lie in 0..{SENSES - 1}, got {index}")
    if index == 0:
        return Meaning(family)
    families = ("sst", "mr", "kind", "topic", "cb")
    return draw_meaning(family, random.Random(3000 + 10 * families.index(family) + index))


@functools.cache
def _lexicon(family: str, meaning: Meaning) -> dict:
    """The family's words grouped by what they mean under ``meaning``: valence -> words for
    polarity, class -> words for kind and topic."""
    if family in POLARITY:
        out: dict = {v: [] for v in (-2, -1, 1, 2)}
        for v, ws in POLARITY[family].items():
            for w in ws:
                out[-v if w in meaning.flipped else v].append(w)
    else:
        groups = KIND if family == "kind" else TOPIC
        out = {c: [] for c in range(len(groups))}
        for c, ws in enumerate(groups):
            for w in ws:
                out[(c + 1) % len(groups) if w in meaning.flipped else c].append(w)
    return {k: tuple(v) for k, v in out.items()}


def _valence_level(task: Task, y: int, rng: random.Random) -> int:
    """The latent valence of a polarity input of class ``y``: SST-5's five classes are levels
    -2..2; a binary class is a level of its sign, of either strength."""
    if task.n_classes == 5:
        return y - 2
    return (1 if y == 1 else -1) * (1 + (rng.random() < 0.5))


#: The chance that a polarity word is strong (valence +-2), by the strength of its input's level.
P_STRONG = {0: 0.25, 1: 0.25, 2: 0.75}
#: A polarity word's valences: the columns of :func:`_log_likelihoods`.
VALENCES = (-2, -1, 1, 2)


def _word_valence(level: int, lean: float, rng: random.Random) -> int:
    """A word's valence for an input at ``level``: the level's own sign ``lean`` of the time
    (strong at a strong level), else the other sign; a neutral level (0) draws either sign."""
    sign = 1 if level > 0 else -1 if level < 0 else (1 if rng.random() < 0.5 else -1)
    if rng.random() >= lean:
        sign = -sign
    strong = rng.random() < P_STRONG[abs(level)]
    return sign * (2 if strong else 1)


def sentence(task: Task, y: int, meaning: Meaning, rng: random.Random, lean: float | None = None) -> list[str]:
    """The input words of one example of class ``y`` under ``meaning`` (no template); ``lean``
    (default: the family's, :data:`LEAN`) is the chance that a content word leans to ``y``."""
    family = FAMILY[task.name]
    if family == "cb":
        return _cb_sentence(y, rng)
    lex = _lexicon(family, meaning)
    lean = LEAN[family] if lean is None else lean
    words: list[list[str]] = []
    for _ in range(CONTENT[family]):
        if family in POLARITY:
            v = _word_valence(_valence_level(task, y, rng), lean, rng)
            if rng.random() < P_NEGATE:
                words.append([NEGATOR, rng.choice(lex[-v])])
            else:
                words.append([rng.choice(lex[v])])
        else:
            c = y
            if rng.random() >= lean:
                c = rng.choice([k for k in lex if k != y])
            words.append([rng.choice(lex[c])])
    words.append([rng.choice(FILLER)])
    rng.shuffle(words)
    return [w for group in words for w in group]


def _cb_sentence(y: int, rng: random.Random) -> list[str]:
    """Premise "A is X . B is Y ." then "Question:" and a hypothesis: "A is X" (True), "A is
    <antonym of X>" (False), or about a third person C (Neither)."""
    a, b, c = rng.sample(PEOPLE, 3)
    x = rng.choice(PROPS)
    z = rng.choice([p for p in PROPS if p not in (x, ANTONYM[x])])
    first = rng.random() < 0.5
    premise = [a, "is", x, ".", b, "is", z, "."] if first else [b, "is", z, ".", a, "is", x, "."]
    if y == 0:
        hyp = [a, "is", x]
    elif y == 1:
        hyp = [a, "is", ANTONYM[x]]
    else:
        hyp = [c, "is", rng.choice((x, ANTONYM[x], z))]
    return premise + ["Question:"] + hyp + ["."]


# ---------------------------------------------------------------------------------------------
# Data sets, prompts, the codec
# ---------------------------------------------------------------------------------------------


def make_dataset(name: str, n: int, seed: int, *, split: str = "test") -> Dataset:
    """``n`` examples of task ``name`` in this world. The data set's meanings are its task's sense
    of its family (:data:`TASK_SENSE`), the same in every split; ``seed`` and ``split`` choose the
    examples (the stream "world-split", apart from the first world's)."""
    task = data.get_task(name)
    if n < 1:
        raise ValueError(f"need n >= 1 examples, got {n}")
    salt = {"train": 1, "dev": 2, "test": 3}.get(split)
    if salt is None:
        raise ValueError(f"split must be 'train', 'dev' or 'test', got {split!r}")
    meaning = sense(FAMILY[name], TASK_SENSE[name])
    rng = random.Random(runtime.stream_seed("library/world-split", seed, salt * 104729 + TASK_NAMES.index(name)))
    classes = [rng.randrange(task.n_classes) for _ in range(n)]
    inputs = [sentence(task, y, meaning, rng) for y in classes]
    ds = Dataset(task, inputs, torch.tensor(classes))
    ds.meaning = meaning  # type: ignore[attr-defined]
    return ds


class WorldCodec(WordCodec):
    """The codec (:mod:`.codec`) of this world's word lists: the first world's layout, this
    world's vocabulary."""

    pad_id = TOKEN_ID[data.PAD]
    encode = staticmethod(encode)


WORLD = WorldCodec()


# ---------------------------------------------------------------------------------------------
# Pretraining text
# ---------------------------------------------------------------------------------------------


def _document(task: Task, rng: random.Random, verdict: bool, p_template_words: float = 0.0) -> list[str]:
    y = rng.randrange(task.n_classes)
    words = sentence(task, y, Meaning(FAMILY[task.name]), rng)
    if p_template_words and rng.random() < p_template_words:  # a template word as a word of text
        words.insert(rng.randrange(len(words) + 1), rng.choice(HELD_OUT))
    if task.name == "cb":
        words = words + ["True,", "False,", "or", "Neither?"] if verdict else words
    return words + ([*VERDICT, task.labels[y], "."] if verdict else [])


def pretraining_batch(
    batch: int,
    seq_len: int,
    rng: random.Random,
    p_catalogue: float = 0.5,
    p_repeat: float = 0.15,
    p_canonical: float = 0.3,
    p_verdict: float = 0.5,
    p_clear: float = 0.0,
    p_echo: float = 0.0,
    p_word_formats: float = 0.0,
    p_template_words: float = 0.0,
) -> torch.Tensor:
    """``(batch, seq_len + 1)`` token ids of pretraining rows: catalogues with probability
    ``p_catalogue``, repeated text with ``p_repeat``, documents otherwise (module docstring). A
    catalogue, and a block of repeated text, reads one sense of its family drawn at random.

    Switches for trials (0 draws nothing, so the other rows are unchanged): a catalogue's prefix
    and marker are words of :data:`FORMAT_WORDS` with probability ``p_word_formats``, and a
    document carries one template word (:data:`HELD_OUT`) at a random place with probability
    ``p_template_words``."""
    pad = TOKEN_ID[data.PAD]
    rows = torch.full((batch, seq_len + 1), pad, dtype=torch.long)
    for r in range(batch):
        u = rng.random()
        words = [data.BOS]
        if u < p_catalogue:
            task = TASKS[rng.choice(TASK_NAMES)]
            meaning = sense(FAMILY[task.name], rng.randrange(SENSES))
            if rng.random() < p_canonical:
                verbal = task.labels
            else:
                verbal = tuple(rng.sample(data.LABEL_POOL, task.n_classes))
            prefix, marker, sep = (rng.choice(FORMATS[k]) for k in ("prefix", "marker", "separator"))
            if p_word_formats and rng.random() < p_word_formats:
                prefix, marker = rng.choice(FORMAT_WORDS), rng.choice(FORMAT_WORDS)
            lean = CLEAR_LEAN if rng.random() < p_clear else None
            shown: list[tuple[list[str], int]] = []
            while len(words) < seq_len + 1:
                if shown and rng.random() < p_echo:
                    x, y = rng.choice(shown)  # an entry the catalogue already listed, listed again
                else:
                    y = rng.randrange(task.n_classes)
                    x = sentence(task, y, meaning, rng, lean)
                    shown.append((x, y))
                words += ([prefix] if prefix else []) + x + [marker, verbal[y], sep]
        elif u < p_catalogue + p_repeat:
            task = TASKS[rng.choice(TASK_NAMES)]
            meaning = sense(FAMILY[task.name], rng.randrange(SENSES))
            block = []
            for _ in range(data.REPEAT_BLOCK):
                block += sentence(task, rng.randrange(task.n_classes), meaning, rng) + [data.SEP]
            while len(words) < seq_len + 1:
                words += block
        else:
            while len(words) < seq_len + 1:
                task = TASKS[rng.choice(TASK_NAMES)]
                words += _document(task, rng, rng.random() < p_verdict, p_template_words) + [data.SEP]
        ids = encode(words[: seq_len + 1])
        rows[r, : len(ids)] = torch.tensor(ids)
    return rows


#: Token ids after which pretraining predicts a label: the catalogue markers and "short" (the
#: verdict phrase). The loss may weight those targets (:func:`.pretrain.lm_loss`).
LABEL_MARKERS = torch.tensor(sorted({TOKEN_ID[w] for w in (*FORMATS["marker"], VERDICT[-1])}))


# ---------------------------------------------------------------------------------------------
# Readers without a language model: how much one word and the whole input say
# ---------------------------------------------------------------------------------------------


def word_features(task: Task, words: Sequence[str], meaning: Meaning | None = None) -> torch.Tensor:
    """The evidence of an input under ``meaning`` (default: the canonical one), summed over its
    content words: per class of kind and topic, one count; for polarity, the signed valence
    with negation read (SST-5's levels get the mean valence)."""
    family = FAMILY[task.name]
    lex = _lexicon(family, meaning or Meaning(family))
    where = {w: k for k, ws in lex.items() for w in ws}
    if family in POLARITY:
        total, count, negate = 0.0, 0, False
        for w in words:
            if w == NEGATOR:
                negate = True
                continue
            if w in where:
                total += -where[w] if negate else where[w]
                count += 1
            negate = False
        return torch.tensor([total / max(count, 1)])
    counts = torch.zeros(len(lex))
    for w in words:
        if w in where:
            counts[where[w]] += 1
    return counts


@functools.cache
def _log_likelihoods(name: str) -> torch.Tensor:
    """``(classes, groups)`` log P(group | class) of one content word of task ``name``'s data
    sets, exact from the rules that write them (:func:`sentence`): groups are the valences
    :data:`VALENCES` (negation read) for polarity, the classes for kind and topic."""
    task = data.get_task(name)
    family = FAMILY[name]
    lean = LEAN[family]
    if family not in POLARITY:
        k = task.n_classes
        return torch.full((k, k), (1 - lean) / (k - 1), dtype=torch.float64).fill_diagonal_(lean).log()
    out = torch.zeros(task.n_classes, len(VALENCES), dtype=torch.float64)
    for y in range(task.n_classes):
        sign = 1 if y == 1 else -1
        levels = {y - 2: 1.0} if task.n_classes == 5 else {sign: 0.5, 2 * sign: 0.5}
        for level, p_level in levels.items():
            q = P_STRONG[abs(level)]
            for j, v in enumerate(VALENCES):
                agree = 0.5 if level == 0 else lean if (v > 0) == (level > 0) else 1 - lean
                out[y, j] += p_level * agree * (q if abs(v) == 2 else 1 - q)
    return out.log()


def _reading(task: Task, words: Sequence[str], meaning: Meaning) -> tuple[torch.Tensor, float]:
    """What an input's content words say under ``meaning``: ``(classes,)`` log P(words' groups |
    class) (:func:`_log_likelihoods`), and log P(which words | their groups), the part of the
    input's likelihood that tells senses apart but not classes."""
    family = FAMILY[task.name]
    lex = _lexicon(family, meaning)
    where = {w: g for g, ws in lex.items() for w in ws}
    table = _log_likelihoods(task.name)
    evidence = torch.zeros(task.n_classes, dtype=torch.float64)
    choice, negate = 0.0, False
    for w in words:
        if w == NEGATOR and family in POLARITY:
            negate = True
            continue
        if w in where:
            g = where[w]
            evidence += table[:, VALENCES.index(-g if negate else g) if family in POLARITY else g]
            choice -= math.log(len(lex[g]))
        negate = False
    return evidence, choice


def _rule(task: Task, words: Sequence[str], meaning: Meaning | None) -> int:
    """The class the world's Bayes reader gives an input under ``meaning`` (default: the
    canonical one): the class of highest likelihood under the rules that write the data
    (:func:`_reading`; ties to the smallest index), the best any reader told the meaning can
    do. CB's is exact: its premise decides."""
    if task.name == "cb":
        q = words.index("Question:")
        who, prop = words[q + 1], words[q + 3]
        facts = {words[i]: words[i + 2] for i in (0, 4)}
        return 2 if who not in facts else (0 if facts[who] == prop else 1)
    return int(_reading(task, words, meaning or Meaning(FAMILY[task.name]))[0].argmax())


def reference_accuracy(name: str, n: int, seed: int) -> dict[str, float]:
    """How much the words of task ``name``'s test inputs say, without a model, on ``n`` test
    examples of evaluation seed ``seed``: ``one_word``, the meaning of one content word drawn at
    random, read alone (one token: a negation before it unread); ``whole_input``, the Bayes
    reader (:func:`_rule`) of the whole input in the data set's own sense; ``canonical``, the
    same reader in the canonical sense, the one documents teach. CB has no content words: its
    ``one_word`` is NaN and its reader is exact. ``senses``: the best zero-shot reader, which
    knows every sense but not which one the data set uses (:func:`sense_reader` with no
    demonstrations)."""
    test = make_dataset(name, n, seed, split="test")
    task, meaning = test.task, test.meaning  # type: ignore[attr-defined]
    y = test.classes.tolist()
    whole = [_rule(task, x, meaning) == c for x, c in zip(test.inputs, y)]
    canon = [_rule(task, x, None) == c for x, c in zip(test.inputs, y)]
    one = float("nan")
    if FAMILY[name] != "cb":
        rng = random.Random(seed)
        hits = []
        for x, c in zip(test.inputs, y):
            spots = [i for i, w in enumerate(x) if w not in (NEGATOR, *FILLER)]
            i = rng.choice(spots)
            hits.append(_rule(task, [x[i]], meaning) == c)
        one = sum(hits) / len(hits)
    zero = (sense_reader(task, [], test.inputs) == test.classes).float().mean()
    return {
        "one_word": one,
        "whole_input": sum(whole) / len(whole),
        "canonical": sum(canon) / len(canon),
        "senses": float(zero),
    }


def sense_reader(
    task: Task, demos: Sequence[tuple[Sequence[str], int]], queries: Sequence[Sequence[str]]
) -> torch.Tensor:
    """``(n,)`` the classes the ideal reader of this world gives ``queries``: it knows every
    sense of the task's family and the rules that write the data, holds every sense equally
    likely before the prompt, and gives each query its most probable class given the ``demos``
    (inputs and labels) and the query itself, every sense weighed by how likely it makes them
    (:func:`_reading`). Bayes-optimal for the prompt: with demonstrations, the ceiling of
    in-context learning as inference of the sense; with none, the best zero-shot reader (it
    knows the senses, not which one the data set uses, and reads what the query's own words
    say of it)."""
    if task.name == "cb":  # CB's senses are all the canonical one, and its rule is exact
        return torch.tensor([_rule(task, x, None) for x in queries], dtype=torch.long)
    senses = [sense(FAMILY[task.name], i) for i in range(SENSES)]

    def joint(x: Sequence[str]) -> torch.Tensor:
        """``(sense, class)`` log P(input, class | sense), up to a constant."""
        rows = []
        for m in senses:
            evidence, choice = _reading(task, x, m)
            rows.append(evidence + choice)
        return torch.stack(rows)

    # log P(demonstrations | sense), up to a constant, as a column
    fit = sum((joint(x)[:, int(y)] for x, y in demos), torch.zeros(SENSES, dtype=torch.float64))[:, None]
    out = [int((joint(x) + fit).logsumexp(0).argmax()) for x in queries]
    return torch.tensor(out, dtype=torch.long)
