"""Small hand-built records shared by tests that need no model and no corpus."""

from __future__ import annotations

from apa.data.manifest import Utterance, Word


def bear_utterance(uid: str = "000010011") -> Utterance:
    """The example of docs/method.md, Prompt and response (speechocean762 utterance 000010011)."""
    words = [
        Word("WE", ["W", "IY0"], {"accuracy": 10, "stress": 10, "total": 10}, [10, 10]),
        Word("CALL", ["K", "AO0", "L"], {"accuracy": 10, "stress": 10, "total": 10}, [10, 9, 9]),
        Word("IT", ["IH0", "T"], {"accuracy": 10, "stress": 10, "total": 10}, [10, 10]),
        Word("BEAR", ["B", "EH0", "R"], {"accuracy": 6, "stress": 10, "total": 6}, [10, 5, 5]),
    ]
    return Utterance(id=uid, audio="bear.wav", text="WE CALL IT BEAR", words=words, speaker="0001",
                     scores={"accuracy": 8, "fluency": 9, "prosody": 9, "completeness": 10, "total": 8})
