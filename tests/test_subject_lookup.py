"""subject_token_index: the token that carries the subject, checked by decoding the tokens."""

from __future__ import annotations

import copy

import pytest

from kedit.errors import RequestError
from kedit.methods.locate import subject_token_index

CASES = [
    # (template, subject): subject at the start, in the middle, at the end; one or several tokens
    ("{} is the capital of", "Paris"),
    ("{} is located in the city of", "Eiffel Tower"),
    ("The mother tongue of {} is", "Danielle Darrieux"),
    ("The native language of {} is", "Albert Einstein"),
    ("The official language of {} is", "Zorblaxian Republic"),  # an unseen word: split into pieces
    ("Yesterday we flew to {}", "Paris"),
    ("Yesterday we flew to {}", "Qwzrt"),
    ("Last summer we travelled to {}", "Mount Everest"),
    ("Paris, not {}, is the capital of France.", "Paris"),  # the slot decides, not the first match
]


def _token_spans(tokenizer, ids: list[int]) -> list[tuple[int, int]]:
    """Character span of each token in the decoded text (decoding prefixes, not offsets)."""
    spans, previous = [], 0
    for index in range(len(ids)):
        end = len(tokenizer.decode(ids[: index + 1]))
        spans.append((previous, end))
        previous = end
    return spans


def _subject_tokens(tokenizer, template: str, subject: str) -> tuple[list[int], list[int]]:
    """(ids, indices of the tokens whose decoded non-space characters lie in the subject)."""
    text = template.replace("{}", subject)
    start = template.index("{}")
    end = start + len(subject)
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    inside = []
    for index, (a, b) in enumerate(_token_spans(tokenizer, ids)):
        characters = [i for i in range(a, b) if not text[i].isspace()] or list(range(a, b))
        if all(start <= i < end for i in characters):
            inside.append(index)
        else:
            assert not any(start <= i < end for i in characters), "a token straddles the subject boundary"
    return ids, inside


@pytest.mark.parametrize(("template", "subject"), CASES)
def test_subject_last_and_first_match_decoded_tokens(tokenizer, template, subject):
    ids, inside = _subject_tokens(tokenizer, template, subject)
    assert inside == list(range(inside[0], inside[-1] + 1))  # contiguous
    assert tokenizer.decode(ids[inside[0] : inside[-1] + 1]).strip() == subject

    last = subject_token_index(tokenizer, template, subject, "subject_last")
    first = subject_token_index(tokenizer, template, subject, "subject_first")
    after = subject_token_index(tokenizer, template, subject, "subject_first_after_last")
    assert last == inside[-1]
    assert first == inside[0]
    assert after == min(inside[-1] + 1, len(ids) - 1)
    assert subject_token_index(tokenizer, template, subject, "last") == len(ids) - 1


def test_cases_cover_single_and_multi_token_subjects(tokenizer):
    sizes = [len(_subject_tokens(tokenizer, template, subject)[1]) for template, subject in CASES]
    assert sizes[0] == 1  # "Paris" at the start: one token
    assert sizes[5] == 1  # " Paris" at the end: one token (with its space)
    assert sizes[6] >= 3  # "Qwzrt", one unseen word: several byte-level pieces
    assert min(sizes[1:5]) >= 2  # two-word subjects


@pytest.fixture(scope="module")
def bos_tokenizer(tokenizer):
    """The same tokenizer, but adding <|endoftext|> at the start like Llama's BOS."""
    from tokenizers import processors

    with_bos = copy.deepcopy(tokenizer)
    bos = with_bos.bos_token
    with_bos.backend_tokenizer.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=True),
        processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, with_bos.bos_token_id)]),
    ])
    return with_bos


@pytest.mark.parametrize(("template", "subject"), CASES)
def test_bos_token_shifts_every_index_by_one(tokenizer, bos_tokenizer, template, subject):
    text = template.replace("{}", subject)
    assert bos_tokenizer(text)["input_ids"] == [bos_tokenizer.bos_token_id, *tokenizer(text)["input_ids"]]
    for mode in ("subject_last", "subject_first", "last"):
        assert subject_token_index(bos_tokenizer, template, subject, mode) == \
            subject_token_index(tokenizer, template, subject, mode) + 1


def test_bad_templates_and_modes_raise(tokenizer):
    with pytest.raises(RequestError):
        subject_token_index(tokenizer, "no slot here", "Paris")
    with pytest.raises(RequestError):
        subject_token_index(tokenizer, "{} and {}", "Paris")
    with pytest.raises(ValueError, match="fact_token"):
        subject_token_index(tokenizer, "{} is", "Paris", "subject_middle")
