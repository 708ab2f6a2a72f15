"""Six synthetic text-classification tasks that mirror the data sets of Dai et al. (2023), a
word-level vocabulary, and the prompts of the paper.

Each task keeps the paper's template and label words (SST-2 "Sentence: ... Label:", MR "Review:
... Sentiment:", Subj "Input: ... Type:", AGNews "News: ... Type:" as in the paper's Table 8,
CB "{premise} Question: {hypothesis} . True, False, or Neither? Answer:").

A sentence of a *lexicon* task (all but CB) mixes three kinds of words:

* **prior words** from the task's fixed class lexicons (``"superb"`` leans Positive), each of the
  sentence's class with probability ``prior_strength`` and of another class otherwise: a weak
  signal that pretraining could store in the weights (though in pretraining the cue word, not
  the prior, decides, and the cue's class changes with every episode);
* one **cue word**, the last word of the input, drawn from a shared pool of nonsense words whose
  class assignment is fixed *per data set* (and redrawn for every pretraining episode): the strong signal, which only the
  demonstrations reveal;
* filler words.

So a model can beat the weak prior only by reading the demonstrations (in-context learning), and
with *nonce* label words ("dax", "wug") it can score above chance only by copying labels from
them. CB is structural: the hypothesis restates a premise fact (True), negates it (False) or
speaks of someone the premise never mentions (Neither).

Example::

    task = TASKS["sst2"]
    data = make_dataset("sst2", n=100, seed=0)       # a fixed data set: its own cue words
    demos = [(data.inputs[i], task.labels[int(data.classes[i])]) for i in range(16)]
    ids, spans = icl_prompt(task, demos, data.inputs[16])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from iclbook import runtime

# ---------------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------------

PAD, BOS, SEP = "<pad>", "<s>", "</s>"
SPECIALS = (PAD, BOS, SEP)

FILLER = (
    "the",
    "a",
    "this",
    "it",
    "was",
    "and",
    "very",
    "quite",
    "so",
    "just",
    "story",
    "thing",
    "one",
    "of",
    "all",
    "really",
)

# Prior (canonical) lexicons: a weak, fixed signal of the class.
PRIOR = {
    "sst2": (
        ("awful", "dreadful", "dull", "bland", "weak", "messy"),
        ("superb", "lovely", "brilliant", "fine", "warm", "sharp"),
    ),
    "sst5": (
        ("horrid", "painful"),
        ("tired", "flat"),
        ("plain", "average"),
        ("pleasant", "decent"),
        ("stunning", "perfect"),
    ),
    "mr": (
        ("boring", "tedious", "clumsy", "silly", "hollow", "stale"),
        ("gripping", "charming", "moving", "witty", "fresh", "clever"),
    ),
    "subj": (
        ("located", "founded", "released", "born", "built", "moved"),
        ("feel", "love", "hate", "think", "believe", "wish"),
    ),
    "agnews": (
        ("war", "minister", "treaty", "election"),
        ("match", "coach", "goal", "team"),
        ("market", "profit", "stocks", "bank"),
        ("software", "chip", "internet", "robot"),
    ),
}

# Cue words: nonsense syllables whose class is fixed per data set (per pretraining episode).
CUES = tuple(
    f"{c}{v}{e}"
    for c, v, e in (
        ("z", "i", "b"),
        ("t", "o", "k"),
        ("m", "u", "r"),
        ("p", "e", "l"),
        ("g", "a", "x"),
        ("v", "o", "n"),
        ("r", "i", "d"),
        ("s", "u", "m"),
        ("k", "e", "f"),
        ("l", "a", "p"),
        ("n", "o", "g"),
        ("b", "i", "v"),
        ("d", "u", "t"),
        ("f", "e", "z"),
        ("h", "a", "m"),
        ("j", "o", "b"),
        ("w", "i", "l"),
        ("y", "u", "p"),
        ("c", "e", "n"),
        ("q", "a", "d"),
        ("x", "o", "s"),
        ("t", "i", "g"),
        ("m", "e", "v"),
        ("p", "u", "k"),
        ("g", "o", "l"),
        ("v", "a", "b"),
        ("r", "u", "n"),
        ("s", "e", "d"),
        ("k", "i", "m"),
        ("l", "o", "t"),
    )
)

NONCE_LABELS = (
    "dax",
    "wug",
    "blicket",
    "fep",
    "toma",
    "kiki",
    "bouba",
    "lorp",
    "mipa",
    "tufa",
    "snod",
    "plim",
    "yark",
    "neem",
    "jop",
    "vorn",
    "glim",
    "sarp",
    "quib",
    "teb",
)

# CB: people, properties.
PEOPLE = ("ana", "ben", "cy", "dee", "eli", "fay", "gus", "hal", "ivy", "jo")
PROPS = ("red", "tall", "calm", "old", "kind", "late", "wet", "shy")


@dataclass(frozen=True)
class Task:
    """One task family: its template, its canonical label words, its class lexicons."""

    name: str
    prefix: str  # the template word before the input ("Sentence:")
    marker: str  # the template word before the label ("Label:")
    labels: tuple[str, ...]

    @property
    def n_classes(self) -> int:
        return len(self.labels)


TASKS: dict[str, Task] = {
    "sst2": Task("sst2", "Sentence:", "Label:", ("Negative", "Positive")),
    "sst5": Task("sst5", "Sentence:", "Label:", ("terrible", "bad", "neutral", "good", "great")),
    "mr": Task("mr", "Review:", "Sentiment:", ("Negative", "Positive")),
    "subj": Task("subj", "Input:", "Type:", ("objective", "subjective")),
    "agnews": Task("agnews", "News:", "Type:", ("World", "Sports", "Business", "Technology")),
    "cb": Task("cb", "Question:", "Answer:", ("True", "False", "Neither")),
}
TASK_NAMES = tuple(TASKS)
CB_CHOICES = ("True,", "False,", "or", "Neither?")
LABEL_POOL = tuple(dict.fromkeys(w for t in TASKS.values() for w in t.labels)) + NONCE_LABELS


def _vocabulary() -> tuple[str, ...]:
    words: list[str] = list(SPECIALS)
    for t in TASKS.values():
        words += [t.prefix, t.marker]
    words += list(CB_CHOICES) + ["is", "not", "."]
    words += list(FILLER) + [w for lex in PRIOR.values() for cls in lex for w in cls]
    words += list(CUES) + list(LABEL_POOL) + list(PEOPLE) + list(PROPS)
    return tuple(dict.fromkeys(words))


VOCAB = _vocabulary()
TOKEN_ID = {w: i for i, w in enumerate(VOCAB)}


def encode(words: Sequence[str]) -> list[int]:
    """Word list -> token ids; an unknown word is a ``ValueError`` (the vocabulary is closed)."""
    try:
        return [TOKEN_ID[w] for w in words]
    except KeyError as err:
        raise ValueError(f"word {err.args[0]!r} is not in the vocabulary") from None


def decode(ids: Sequence[int]) -> str:
    return " ".join(VOCAB[int(i)] for i in ids)


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASK_NAMES)}")
    return TASKS[name]


# ---------------------------------------------------------------------------------------------
# Sentences
# ---------------------------------------------------------------------------------------------

PRIOR_WORDS = 2  # prior-lexicon words per sentence
FILLER_WORDS = 2  # filler words per sentence
PRIOR_STRENGTH = 0.6  # chance that a prior word belongs to the sentence's own class
REPEAT_BLOCK = 3  # inputs per repeated block of an unlabelled pretraining row


def _pick(seq: Sequence, gen: torch.Generator):
    return seq[int(torch.randint(len(seq), (1,), generator=gen))]


def draw_cues(task: Task, gen: torch.Generator, per_class: int = 1) -> tuple[tuple[str, ...], ...]:
    """A fresh assignment of cue words to classes: ``per_class`` distinct cues per class."""
    perm = torch.randperm(len(CUES), generator=gen)[: per_class * task.n_classes].tolist()
    return tuple(tuple(CUES[perm[c * per_class + j]] for j in range(per_class)) for c in range(task.n_classes))


def sentence(
    task: Task,
    y: int,
    cues: tuple[tuple[str, ...], ...],
    gen: torch.Generator,
    prior_strength: float = PRIOR_STRENGTH,
    cue_last: bool = True,
) -> list[str]:
    """The input words of one example of class ``y`` (no template); the cue word is the last
    word, or (``cue_last=False``) at a random position before it, which pretraining never showed."""
    if task.name == "cb":
        return _cb_sentence(y, gen)
    lex = PRIOR[task.name]
    words = []
    for _ in range(PRIOR_WORDS):
        if float(torch.rand((), generator=gen)) < prior_strength:
            c = y
        else:
            others = [c for c in range(task.n_classes) if c != y]
            c = _pick(others, gen)
        words.append(_pick(lex[c], gen))
    words += [_pick(FILLER, gen) for _ in range(FILLER_WORDS)]
    order = torch.randperm(len(words), generator=gen).tolist()
    words = [words[i] for i in order]
    cue = _pick(cues[y], gen)
    if cue_last:
        return words + [cue]
    at = int(torch.randint(len(words), (1,), generator=gen))
    return words[:at] + [cue] + words[at:]


def _cb_sentence(y: int, gen: torch.Generator) -> list[str]:
    """Premise "A is X . B is Y ." then "Question:" and the hypothesis about A (True, False) or
    about a third person C (Neither)."""
    a, b, c = (PEOPLE[i] for i in torch.randperm(len(PEOPLE), generator=gen)[:3].tolist())
    x, z = (PROPS[i] for i in torch.randperm(len(PROPS), generator=gen)[:2].tolist())
    yy = _pick(PROPS, gen)
    first = bool(torch.rand((), generator=gen) < 0.5)
    premise = [a, "is", x, ".", b, "is", yy, "."] if first else [b, "is", yy, ".", a, "is", x, "."]
    if y == 0:
        hyp = [a, "is", x]
    elif y == 1:
        hyp = [a, "is", "not", x]
    else:
        hyp = [c, "is", z]
    return premise + ["Question:"] + hyp + ["."]


# ---------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------


def example_words(task: Task, x: Sequence[str], label: str | None = None) -> list[str]:
    """One filled template: ``prefix x marker [label]`` (CB: ``x True, False, or Neither? Answer:``)."""
    if task.name == "cb":
        words = list(x) + list(CB_CHOICES) + [task.marker]
    else:
        words = [task.prefix, *x, task.marker]
    return words + ([label] if label is not None else [])


def icl_prompt(
    task: Task,
    demos: Sequence[tuple[Sequence[str], str]],
    x: Sequence[str],
    max_len: int | None = None,
    encoder: Callable[[Sequence[str]], list[int]] | None = None,
) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of ``BOS demo_1 SEP ... demo_k SEP query`` and the (start, stop) span of each
    demonstration's tokens (its ``</s>`` excluded). Demonstrations that do not fit ``max_len``
    are dropped from the front of the list's end, as the paper's code truncates the context.
    ``encoder`` maps the words to ids (default :func:`encode`; the inference world passes its
    own, :func:`.world.encode`)."""
    query = example_words(task, x)
    words = [BOS]
    spans = []
    budget = (max_len if max_len is not None else 10**9) - len(query) - 1
    for dx, dy in demos:
        ex = example_words(task, dx, dy)
        if len(words) + len(ex) + 1 > budget + 1:
            break
        spans.append((len(words), len(words) + len(ex)))
        words += ex + [SEP]
    return (encoder or encode)(words + query), spans


def ft_example(task: Task, x: Sequence[str], label: str) -> list[int]:
    """Token ids of one finetuning example, ``BOS template(x, y)`` (as the paper's FT loader)."""
    return encode([BOS, *example_words(task, x, label)])


# ---------------------------------------------------------------------------------------------
# Data sets and pretraining episodes
# ---------------------------------------------------------------------------------------------


@dataclass
class Dataset:
    """A fixed data set of one task: inputs, classes, and the data set's own cue words."""

    task: Task
    inputs: list[list[str]]
    classes: torch.Tensor  # (n,) long
    cues: tuple[tuple[str, ...], ...] = field(default=())

    def __len__(self) -> int:
        return len(self.inputs)

    def subset(self, idx: Sequence[int]) -> Dataset:
        return Dataset(self.task, [self.inputs[i] for i in idx], self.classes[list(idx)], self.cues)


def make_dataset(
    name: str, n: int, seed: int, *, split: str = "test", cues_per_class: int = 1, cue_last: bool = True
) -> Dataset:
    """``n`` balanced-in-expectation examples of task ``name``. The cue words are a property of
    the data set (fixed by the task name, the same in every split); ``seed`` and ``split`` choose
    the examples.

    Two variants leave the regime the model was pretrained in (one cue per class, always the
    input's last word): ``cues_per_class > 1`` draws several cues per class, so a query's cue may
    appear in no demonstration and its label cannot be found by matching one token;
    ``cue_last=False`` moves the cue to a random earlier position."""
    task = get_task(name)
    if n < 1:
        raise ValueError(f"need n >= 1 examples, got {n}")
    if task.name == "cb" and (cues_per_class != 1 or not cue_last):
        raise ValueError("CB has no cue words: its variants are not defined")
    if cues_per_class < 1 or cues_per_class * task.n_classes > len(CUES):
        raise ValueError(f"cues_per_class must be 1..{len(CUES) // task.n_classes}, got {cues_per_class}")
    cue_gen = torch.Generator().manual_seed(1000 + TASK_NAMES.index(name))
    cues = draw_cues(task, cue_gen, per_class=cues_per_class)
    salt = {"train": 1, "dev": 2, "test": 3}.get(split)
    if salt is None:
        raise ValueError(f"split must be 'train', 'dev' or 'test', got {split!r}")
    gen = runtime.stream("task-split", seed, salt * 104729 + TASK_NAMES.index(name))
    classes = torch.randint(task.n_classes, (n,), generator=gen)
    inputs = [sentence(task, int(y), cues, gen, cue_last=cue_last) for y in classes]
    return Dataset(task, inputs, classes, cues)


def pretraining_batch(
    batch: int, seq_len: int, gen: torch.Generator, p_canonical: float = 0.3, p_plain: float = 0.2
) -> torch.Tensor:
    """``(batch, seq_len + 1)`` token ids of pretraining episodes.

    An episode is one task with a fresh cue assignment and a verbalizer that is the canonical
    one with probability ``p_canonical`` and otherwise a random draw of distinct label words from
    the pool (canonical words of every task and nonce words): ``BOS ex_1 SEP ex_2 SEP ...`` until
    the row is full, so every label token is predicted from all the examples before it. With
    probability ``p_plain`` (0.2 in the shipped model's recipe, :class:`.pretrain.PretrainConfig`)
    a row holds unlabelled inputs only, a block of ``REPEAT_BLOCK`` inputs repeated until the row
    is full: text that repeats itself is what lets a small model
    form induction heads early (Olsson et al. 2022), which the label copying then reuses."""
    rows = torch.full((batch, seq_len + 1), TOKEN_ID[PAD], dtype=torch.long)
    for r in range(batch):
        task = TASKS[_pick(TASK_NAMES, gen)]
        cues = draw_cues(task, gen)
        if float(torch.rand((), generator=gen)) < p_canonical:
            verbal = task.labels
        else:
            idx = torch.randperm(len(LABEL_POOL), generator=gen)[: task.n_classes].tolist()
            verbal = tuple(LABEL_POOL[i] for i in idx)
        plain = float(torch.rand((), generator=gen)) < p_plain
        ids = [TOKEN_ID[BOS]]
        if plain:
            # unlabelled text that repeats itself, as natural text repeats its phrases
            block = []
            for _ in range(REPEAT_BLOCK):
                y = int(torch.randint(task.n_classes, (1,), generator=gen))
                block += encode(sentence(task, y, cues, gen)) + [TOKEN_ID[SEP]]
            while len(ids) < seq_len + 1:
                ids += block
        while len(ids) < seq_len + 1:
            y = int(torch.randint(task.n_classes, (1,), generator=gen))
            x = sentence(task, y, cues, gen)
            ids += encode(example_words(task, x, verbal[y])) + [TOKEN_ID[SEP]]
        rows[r] = torch.tensor(ids[: seq_len + 1])
    return rows
