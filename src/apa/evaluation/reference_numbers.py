"""Published numbers on the SO762 test set, to print beside ours (docs/method.md, Published numbers).

One table of rows, each a system with its (PCC, SCC) per (level, aspect) field as printed in
the paper (Tables 1-3), plus the human inter-annotator agreement. ``None`` means the paper
gives no number ("-"); ``NaN`` means the paper reports the metric as undefined (the
completeness column of the fine-tuned models). Phone RMSE is on SO762's original 0-2 scale.
`apa evaluate` and `apa report` read these rows; nothing else should copy the numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

from apa.tasks import Task

NAN = math.nan

# Short names for the fields, so that each row below fits on a few lines.
P_ACC = ("phone", "accuracy")
W_ACC, W_STR, W_TOT = ("word", "accuracy"), ("word", "stress"), ("word", "total")
S_ACC, S_FLU, S_PRO = ("sentence", "accuracy"), ("sentence", "fluency"), ("sentence", "prosody")
S_COM, S_TOT = ("sentence", "completeness"), ("sentence", "total")

Field = tuple[str, str]
PccScc = tuple[float | None, float | None]


@dataclass(frozen=True)
class PaperRow:
    system: str
    # The paper table the row comes from (1, 2, 3); None for rows from elsewhere.
    table: int | None
    values: Mapping[Field, PccScc]
    phone_rmse: float | None = None  # 0-2 scale
    note: str = ""
    source: str = field(default="Wang et al., Fine-tuning LMMs for APA", compare=False)

    def get(self, level: str, aspect: str) -> PccScc:
        return self.values.get((level, aspect), (None, None))

    def covers(self, fields: tuple[Field, ...]) -> bool:
        """Whether the row has any number (or NaN) for one of ``fields``."""
        return any(self.get(*f) != (None, None) for f in fields)


def _pcc(**values: float) -> dict[Field, PccScc]:
    """PCC-only numbers (the paper prints '0.61 / -')."""
    return {_FIELDS[name]: (value, None) for name, value in values.items()}


_FIELDS = {"p_acc": P_ACC, "w_acc": W_ACC, "w_str": W_STR, "w_tot": W_TOT, "s_acc": S_ACC,
           "s_flu": S_FLU, "s_pro": S_PRO, "s_com": S_COM, "s_tot": S_TOT}

REFERENCE_ROWS: tuple[PaperRow, ...] = (
    # Table 1: multi-granularity, multi-aspect (task `multi`).
    PaperRow("GOPT", 1, phone_rmse=0.29, values=_pcc(
        p_acc=0.61, w_acc=0.53, w_str=0.29, w_tot=0.55,
        s_acc=0.71, s_flu=0.75, s_pro=0.76, s_com=0.16, s_tot=0.74)),
    PaperRow("HMamba", 1, phone_rmse=0.25, values=_pcc(
        p_acc=0.74, w_acc=0.71, w_str=0.37, w_tot=0.72,
        s_acc=0.81, s_flu=0.85, s_pro=0.84, s_com=0.28, s_tot=0.83)),
    PaperRow("Azure PA", 1, values={
        W_ACC: (0.62, 0.47), S_ACC: (0.70, 0.68), S_FLU: (0.72, 0.62), S_PRO: (0.84, 0.78),
        S_COM: (0.26, 0.14), S_TOT: (0.78, 0.75)}),
    PaperRow("paper FT", 1, phone_rmse=0.39, values={
        P_ACC: (0.38, 0.34), W_ACC: (0.51, 0.46), W_STR: (0.11, 0.11), W_TOT: (0.52, 0.46),
        S_ACC: (0.69, 0.63), S_FLU: (0.74, 0.70), S_PRO: (0.73, 0.67), S_COM: (NAN, NAN),
        S_TOT: (0.72, 0.67)}),
    PaperRow("paper SimPO", 1, phone_rmse=0.39, values={
        P_ACC: (0.38, 0.34), W_ACC: (0.52, 0.47), W_STR: (0.08, 0.08), W_TOT: (0.53, 0.47),
        S_ACC: (0.68, 0.62), S_FLU: (0.73, 0.69), S_PRO: (0.73, 0.68), S_COM: (NAN, NAN),
        S_TOT: (0.72, 0.66)}),
    # Table 2: word + sentence (task `word_sentence`), PCC only; completeness not reported
    # ("correlations remain unavailable").
    PaperRow("paper FT", 2, values=_pcc(
        w_acc=0.57, w_str=-0.01, w_tot=0.58, s_acc=0.69, s_flu=0.74, s_pro=0.78, s_tot=0.72)),
    PaperRow("paper SimPO", 2, values=_pcc(
        w_acc=0.58, w_str=-0.01, w_tot=0.60, s_acc=0.69, s_flu=0.74, s_pro=0.73, s_tot=0.72)),
    PaperRow("paper FT + private data", 2, note="trained on SO762 plus 18,000 private utterances",
             values=_pcc(w_acc=0.63, w_str=0.15, w_tot=0.64, s_acc=0.76, s_flu=0.80, s_pro=0.78,
                         s_tot=0.78)),
    # Table 3: single-granularity, single-aspect tasks (one model per column).
    PaperRow("GOPT", 3, note="word accuracy as printed in Table 3 (Table 1 gives 0.53)",
             values=_pcc(w_acc=0.61, s_acc=0.71, s_flu=0.75, s_pro=0.76, s_tot=0.74)),
    PaperRow("Azure PA", 3, values={
        W_ACC: (0.62, 0.47), S_ACC: (0.70, 0.68), S_FLU: (0.72, 0.62), S_PRO: (0.84, 0.78),
        S_TOT: (0.78, 0.75)}),
    PaperRow("paper zero-shot", 3, values={W_ACC: (-0.03, -0.02)}),
    PaperRow("paper FT", 3, values={
        W_ACC: (0.62, 0.57), S_ACC: (0.74, 0.69), S_FLU: (0.79, 0.78), S_PRO: (0.77, 0.76),
        S_TOT: (0.77, 0.71)}),
    PaperRow("paper DPO", 3, values={
        W_ACC: (0.60, 0.55), S_ACC: (0.76, 0.70), S_FLU: (0.79, 0.78), S_PRO: (0.78, 0.76),
        S_TOT: (0.76, 0.71)}),
    # One expert against the others, as reported by later work (PCC); no sentence accuracy
    # or completeness. `so762/resource/experts.json` allows computing it directly.
    PaperRow("human (one expert vs rest)", None, note="inter-annotator agreement, later work",
             source="later work on SO762",
             values=_pcc(p_acc=0.56, w_acc=0.59, w_str=0.21, w_tot=0.60, s_flu=0.67, s_pro=0.65,
                         s_tot=0.68)),
)

HUMAN_ROW = REFERENCE_ROWS[-1]


def rows_for_task(task: Task) -> list[PaperRow]:
    """Rows comparable with ``task``: its paper table's rows, then human agreement, each kept
    only when it has a number for at least one of the task's fields."""
    rows = [row for row in REFERENCE_ROWS if row.table == task.paper_table] + [HUMAN_ROW]
    return [row for row in rows if row.covers(task.fields)]
