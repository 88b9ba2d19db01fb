"""The task table (docs/method.md, Tasks): which (level, aspect) fields each task scores.

Everything that depends on a task (prompts, score text, pairs, metrics) reads this table;
nothing else hard-codes aspect lists.
"""

from __future__ import annotations

from dataclasses import dataclass

from apa.data.manifest import ASPECTS, LEVELS  # the score fields are the manifest schema's
from apa.errors import ApaError


@dataclass(frozen=True)
class Task:
    name: str
    sentence: tuple[str, ...] = ()
    word: tuple[str, ...] = ()
    phone: tuple[str, ...] = ()
    paper_table: int | None = None

    def aspects(self, level: str) -> tuple[str, ...]:
        return getattr(self, level)

    @property
    def levels(self) -> tuple[str, ...]:
        return tuple(level for level in LEVELS if self.aspects(level))

    @property
    def fields(self) -> tuple[tuple[str, str], ...]:
        """All (level, aspect) pairs of the task, in output order."""
        return tuple((level, aspect) for level in self.levels for aspect in self.aspects(level))

    @property
    def needs_phones(self) -> bool:
        return bool(self.phone)


def _task(name: str, table: int, **levels: tuple[str, ...]) -> Task:
    for level, aspects in levels.items():
        assert all(a in ASPECTS[level] for a in aspects), (name, level, aspects)
        assert list(aspects) == [a for a in ASPECTS[level] if a in aspects], "canonical order"
    return Task(name=name, paper_table=table, **levels)


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        _task("multi", 1, sentence=ASPECTS["sentence"], word=ASPECTS["word"], phone=ASPECTS["phone"]),
        _task("word_sentence", 2, sentence=ASPECTS["sentence"], word=ASPECTS["word"]),
        _task("word_accuracy", 3, word=("accuracy",)),
        _task("sentence_accuracy", 3, sentence=("accuracy",)),
        _task("sentence_fluency", 3, sentence=("fluency",)),
        _task("sentence_prosody", 3, sentence=("prosody",)),
        _task("sentence_total", 3, sentence=("total",)),
    )
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ApaError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}") from None
