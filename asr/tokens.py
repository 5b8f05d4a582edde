"""Token ids with a fixed meaning, and the :class:`Token` a streaming session emits."""

from __future__ import annotations

from dataclasses import dataclass

BOS_ID = 1  # <s>, the first prompt token
EOS_ID = 2  # </s>, end of transcription
STREAMING_PAD_ID = 32  # [STREAMING_PAD]: nothing new at this 80 ms slot; also the prompt filler
STREAMING_WORD_ID = 33  # [STREAMING_WORD]: word boundary marker in the text stream
N_SPECIAL_IDS = 1000  # ids below this are control/special ids and carry no text


@dataclass(frozen=True, slots=True)
class Token:
    """One generated id, in order, with its text and its place in the audio.

    ``text`` is what this id adds to the transcript ('' for control ids, and for a byte piece
    that only completes a character together with a later token). ``start_s``/``end_s`` are
    seconds in the input audio's own clock: the 80 ms slot the model was transcribing when it
    emitted the id (the emission step minus the delay), clamped to the audio fed so far.
    """

    id: int
    text: str
    start_s: float
    end_s: float

    @property
    def is_control(self) -> bool:
        return self.id < N_SPECIAL_IDS
