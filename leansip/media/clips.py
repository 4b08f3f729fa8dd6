"""What a call sends: queued clips of 8 kHz mono int16 audio, cut into 20 ms frames. Pure.

Both media paths take their outgoing audio from a :class:`ClipQueue`: the RTP session
(:class:`leansip.ua.session.MediaSession`) once per tick, and the WebRTC track (:mod:`leansip.io.webrtc`) once per
``recv``. A prompt file, a whole recording or each frame of a PCM stream is one clip; the application learns when a
clip has been sent from :meth:`ClipQueue.take_finished`.
"""

from __future__ import annotations

from array import array
from collections import deque

__all__ = ["ClipQueue", "FRAME_SAMPLES"]

FRAME_SAMPLES = 160  # 20 ms at 8 kHz


class ClipQueue:
    """What a call sends: clips of 8 kHz mono int16 (files, prompts, a stream of PCM frames) played in order,
    silence when none is left. :meth:`next_frame` hands out one 20 ms frame at a time, across clip boundaries;
    :meth:`take_finished` names the clips sent to the end (or dropped) since the last call. Pure."""

    def __init__(self) -> None:
        self._clips: deque[tuple[int, array]] = deque()
        self._pos = 0
        self._next_clip = 1
        self._finished: list[int] = []
        self._silence = array("h", [0]) * FRAME_SAMPLES

    def play(self, samples: array, *, interrupt: bool = False) -> int:
        """Queue ``samples`` after what is queued (``interrupt``: instead of it). Returns the clip's id."""
        if interrupt:
            self.stop_playing()
        clip = self._next_clip
        self._next_clip += 1
        self._clips.append((clip, samples))
        return clip

    def stop_playing(self) -> None:
        """Drop every queued clip (they are reported finished)."""
        self._finished += [clip for clip, _ in self._clips]
        self._clips.clear()
        self._pos = 0

    @property
    def queued_samples(self) -> int:
        """Samples still to send (for pacing a stream of frames)."""
        return sum(len(s) for _, s in self._clips) - self._pos

    def take_finished(self) -> list[int]:
        out, self._finished = self._finished, []
        return out

    def next_frame(self) -> array:
        """The next 160 samples: from the clips, padded with silence at the end of the last one."""
        chunk = array("h")
        while len(chunk) < FRAME_SAMPLES and self._clips:
            clip, src = self._clips[0]
            need = FRAME_SAMPLES - len(chunk)
            chunk += src[self._pos:self._pos + need]
            self._pos += need
            if self._pos >= len(src):
                self._clips.popleft()
                self._finished.append(clip)
                self._pos = 0
        if not chunk:
            return self._silence
        if len(chunk) < FRAME_SAMPLES:
            chunk.extend([0] * (FRAME_SAMPLES - len(chunk)))
        return chunk
