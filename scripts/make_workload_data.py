"""Build the small workload files under tests/data/ (deterministic; no download).

    python scripts/make_workload_data.py [--out tests/data] [--seed 0]

sharegpt_small.json: 200 ShareGPT-format conversations of chat-like filler text, prompts of
20-400 words and replies of 10-300 words (most of them short, as in real chats); a few are
multi-turn or start with a system turn, and a few have no reply and are skipped by the loader.
trace_small.jsonl: 120 rows with ``prompt``, ``output_len`` and a ``timestamp`` (seconds): bursts
of requests close together with idle gaps between them, about half a minute in all.
The tests check that the committed files are what this script builds.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

SHAREGPT = "sharegpt_small.json"
TRACE = "trace_small.jsonl"
CONVERSATIONS = 200
TRACE_ROWS = 120
_VOCABULARY = (
    "the a model server request token cache batch memory answer question time data user "
    "system prompt reply queue latency throughput kernel layer weight value key page "
    "block schedule prefill decode sample output input length limit budget device host core "
    "thread process file text image word line list table report result error warning note "
    "is are was be can will should could would may might must has have had does do "
    "and or but so then because when while if after before until since though "
    "fast slow long short large small new old first last next other same different "
    "run send read write load store find check measure tune serve start stop wait keep "
    "in on at of to for with from by about over under between into through"
)
WORDS = tuple(_VOCABULARY.split())


def _sentence_text(rng: random.Random, n_words: int, *, question: bool) -> str:
    """``n_words`` words in sentences of 6-16 words; a question mark ends a question."""
    sentences = []
    left = n_words
    while left > 0:
        take = min(left, rng.randint(6, 16))
        words = [rng.choice(WORDS) for _ in range(take)]
        words[0] = words[0].capitalize()
        sentences.append(" ".join(words) + ".")
        left -= take
    if question:
        sentences[-1] = sentences[-1][:-1] + "?"
    return " ".join(sentences)


def _length(rng: random.Random, low: int, high: int, median: int) -> int:
    """A skewed length in ``low..high``: log-normal around ``median``, clipped."""
    return max(low, min(high, round(rng.lognormvariate(math.log(median), 0.8))))


def _turn(role: str, text: str) -> dict[str, str]:
    return {"from": role, "value": text}


def build_sharegpt(seed: int) -> str:
    """The ShareGPT file's text."""
    rng = random.Random(f"sharegpt-{seed}")
    entries = []
    for i in range(CONVERSATIONS):
        prompt = _sentence_text(rng, _length(rng, 20, 400, 50), question=True)
        reply = _sentence_text(rng, _length(rng, 10, 300, 45), question=False)
        turns = [_turn("human", prompt), _turn("gpt", reply)]
        kind = i % 20
        if kind == 7:  # a system turn first
            turns.insert(0, _turn("system", _sentence_text(rng, 12, question=False)))
        elif kind in (3, 13):  # a follow-up exchange
            follow = _sentence_text(rng, _length(rng, 10, 60, 20), question=True)
            turns += [_turn("human", follow), _turn("gpt", _sentence_text(rng, 30, question=False))]
        elif kind == 19:  # no reply: skipped by the loader
            turns = turns[:1]
        entries.append({"id": f"conv-{i:03d}", "conversations": turns})
    return "[\n" + ",\n".join(json.dumps(e) for e in entries) + "\n]\n"


def build_trace(seed: int) -> str:
    """The trace file's text: bursts of 4-16 requests ~50 ms apart, 1-4 s idle between them."""
    rng = random.Random(f"trace-{seed}")
    rows = []
    now = 0.0
    burst_left = 0
    for _ in range(TRACE_ROWS):
        if burst_left == 0:
            burst_left = rng.randint(4, 16)
            now += rng.uniform(1.0, 4.0) if rows else 0.0
        else:
            now += rng.expovariate(1 / 0.05)
        burst_left -= 1
        prompt = _sentence_text(rng, _length(rng, 20, 200, 60), question=True)
        output_len = _length(rng, 16, 256, 64)
        rows.append({"prompt": prompt, "output_len": output_len, "timestamp": round(now, 3)})
    return "".join(json.dumps(r) + "\n" for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent.parent / "tests/data")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / SHAREGPT).write_text(build_sharegpt(args.seed), encoding="utf-8")
    (args.out / TRACE).write_text(build_trace(args.seed), encoding="utf-8")
    print(f"wrote {args.out / SHAREGPT} and {args.out / TRACE}")


if __name__ == "__main__":
    main()
