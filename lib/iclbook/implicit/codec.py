"""From examples to token ids: the one place where a prompt meets a vocabulary.

Every probe of the chapter builds its token ids through a *codec*:

* :data:`WORDS` (a :class:`WordCodec`) reads the synthetic tasks' word lists with the chapter's
  closed word-level vocabulary (:mod:`.data`); the tiny model was pretrained on it.
* :class:`TextCodec` reads strings (the real data sets of :mod:`.hf`) with a Hugging Face
  tokenizer: each filled template is rendered as text (``"Sentence: a fine film Label: Positive"``)
  and cut into the model's own subword tokens.

Both lay a prompt out as the paper's code did: ``BOS demo_1 SEP ... demo_k SEP query``, with the
tokenizer's ``</s>`` as ``SEP`` (fairseq's newline), and both report the token span of every
demonstration. A label word is scored by the log-probability of its *first* token after the
query's marker (``" Positive"``, with its leading space): the paper's mean over the label's
tokens is the same number for its label words, which are all single tokens, and a codec refuses a
verbalizer whose words share a first token (they could not be told apart).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from iclbook.implicit import data

Demos = Sequence[tuple[object, str]]


class Codec(Protocol):
    """What the probes need from a vocabulary."""

    pad_id: int
    nonce_pool: tuple[str, ...]

    def prompt(
        self, task: data.Task, demos: Demos, x, max_len: int | None = None
    ) -> tuple[list[int], list[tuple[int, int]]]: ...

    def example(self, task: data.Task, x, label: str) -> list[int]: ...

    def label_ids(self, labels: Sequence[str]) -> list[int]: ...


def _check_distinct(labels: Sequence[str], ids: Sequence[int]) -> list[int]:
    if len(set(ids)) != len(ids):
        raise ValueError(f"label words {tuple(labels)} do not start with distinct tokens {tuple(ids)}")
    return list(ids)


class WordCodec:
    """The synthetic tasks' word lists over the closed vocabulary of :mod:`.data` (a subclass
    with another ``encode`` and ``pad_id`` reads another closed vocabulary: :mod:`.world`'s)."""

    pad_id = data.TOKEN_ID[data.PAD]
    nonce_pool = data.NONCE_LABELS
    encode = staticmethod(data.encode)

    def prompt(self, task, demos, x, max_len=None):
        return data.icl_prompt(task, demos, x, max_len=max_len, encoder=self.encode)

    def example(self, task, x, label):
        return self.encode([data.BOS, *data.example_words(task, x, label)])

    def label_ids(self, labels):
        return _check_distinct(labels, self.encode(labels))


WORDS = WordCodec()


class TextCodec:
    """Strings through a Hugging Face tokenizer, with the paper's text templates.

    ``bos_id`` and ``sep_id`` default to the tokenizer's BOS and EOS tokens (OPT and XGLM: ``</s>``
    is both, as in fairseq); ``pad_id`` only fills the right end of a batch, which a causal
    model never reads, so any valid id will do."""

    def __init__(self, tokenizer, *, bos_id: int | None = None, sep_id: int | None = None, pad_id: int | None = None):
        self.tokenizer = tokenizer
        self.bos_id = tokenizer.bos_token_id if bos_id is None else bos_id
        self.sep_id = tokenizer.eos_token_id if sep_id is None else sep_id
        if self.bos_id is None or self.sep_id is None:
            raise ValueError("the tokenizer has no BOS or EOS token: pass bos_id and sep_id")
        pad = tokenizer.pad_token_id if pad_id is None else pad_id
        self.pad_id = self.sep_id if pad is None else pad
        self.nonce_pool = self._distinct_first_tokens(data.NONCE_LABELS)

    def ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @staticmethod
    def text(task: data.Task, x: str, label: str | None = None) -> str:
        """One filled template as text: the word template of :func:`.data.example_words` with the
        whole input as one slot (``"Sentence: {x} Label: {label}"``)."""
        if not isinstance(x, str):
            raise ValueError(f"a TextCodec reads strings, got {type(x).__name__} (use WORDS for word lists)")
        return " ".join(data.example_words(task, [x], label))

    def prompt(self, task, demos, x, max_len=None):
        query = self.ids(self.text(task, x))
        budget = (max_len if max_len is not None else 10**9) - len(query)
        ids, spans = [self.bos_id], []
        for dx, dy in demos:
            ex = self.ids(self.text(task, dx, dy))
            if len(ids) + len(ex) + 1 > budget:
                break
            spans.append((len(ids), len(ids) + len(ex)))
            ids += ex + [self.sep_id]
        return ids + query, spans

    def example(self, task, x, label):
        return [self.bos_id] + self.ids(self.text(task, x, label))

    def label_ids(self, labels):
        firsts = []
        for w in labels:
            ids = self.ids(" " + w)
            if not ids:
                raise ValueError(f"label word {w!r} encodes to no token")
            firsts.append(ids[0])
        return _check_distinct(labels, firsts)

    def _distinct_first_tokens(self, words: Sequence[str]) -> tuple[str, ...]:
        """``words`` whose first tokens differ from every earlier kept word's (so any draw of
        them is a valid verbalizer)."""
        kept, seen = [], set()
        for w in words:
            ids = self.ids(" " + w)
            if ids and ids[0] not in seen:
                kept.append(w)
                seen.add(ids[0])
        return tuple(kept)
