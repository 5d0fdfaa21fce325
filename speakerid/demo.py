"""The built-in demo corpus: genuinely different synthetic voices (flite and festival).

Four voices are enrolled (flite awb, rms, slt, kal16), each from several sentences; held-out
sentences of each are then identified, together with festival's ked, a voice that is not
enrolled and must come out as unknown. These are synthetic voices, not people.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import SpeakeridError

SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
]
ENROL_SENTENCES = SENTENCES[:12]
HELD_OUT_SENTENCES = SENTENCES[12:]

#: name -> (engine, voice). Different people, not variants of one voice.
ENROLLED_VOICES = {
    "awb": ("flite", "awb"),
    "rms": ("flite", "rms"),
    "slt": ("flite", "slt"),
    "kal": ("flite", "kal16"),
}
UNKNOWN_VOICES = {"ked": ("festival", "ked_diphone")}


class DemoError(SpeakeridError):
    """The demo's speech synthesisers are missing or failed."""


@dataclass(frozen=True)
class DemoCorpus:
    speakers_dir: Path  # <speaker>/<n>.wav, for `index build`
    queries: list[tuple[Path, str | None]]  # held-out clip, true speaker (None: not enrolled)


def _synth(engine: str, voice: str, text: str, out: Path) -> None:
    if engine == "flite":
        cmd = ["flite", "-voice", voice, "-t", text, "-o", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    else:
        proc = subprocess.run(
            ["text2wave", "-eval", f"(voice_{voice})", "-o", str(out)],
            input=text, capture_output=True, text=True,
        )
    if proc.returncode != 0 or not out.is_file():
        raise DemoError(f"{engine} voice {voice} failed: {(proc.stderr or proc.stdout).strip()[:200]}")


def check_tools() -> None:
    missing = [t for t in ("flite", "text2wave") if shutil.which(t) is None]
    if missing:
        raise DemoError(
            f"the demo needs the speech synthesisers {', '.join(missing)}: "
            "apt-get install flite festival festvox-kdlpc16k"
        )


def make_corpus(root: Path) -> DemoCorpus:
    """Synthesise the demo corpus under ``root`` (reused if already there)."""
    check_tools()
    speakers = root / "speakers"
    held = root / "held_out"
    queries: list[tuple[Path, str | None]] = []
    for name, (engine, voice) in {**ENROLLED_VOICES, **UNKNOWN_VOICES}.items():
        enrolled = name in ENROLLED_VOICES
        if enrolled:
            (speakers / name).mkdir(parents=True, exist_ok=True)
            for i, text in enumerate(ENROL_SENTENCES):
                out = speakers / name / f"{i:02d}.wav"
                if not out.is_file():
                    _synth(engine, voice, text, out)
        held.mkdir(parents=True, exist_ok=True)
        for i, text in enumerate(HELD_OUT_SENTENCES[:2]):
            out = held / f"{name}-{i}.wav"
            if not out.is_file():
                _synth(engine, voice, text, out)
            queries.append((out, name if enrolled else None))
    return DemoCorpus(speakers_dir=speakers, queries=queries)
