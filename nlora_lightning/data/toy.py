"""The small generated benchmark shipped with the package (demo and tests).

Four tasks with disjoint label sets, in the CL_Benchmark layout, so the same loader reads it:

    toy_benchmark/<group>/<task>/{train,test,labels}.json  and  _meta/instruction_config.json

Each sample is built from word lists by a seeded generator, so the files are reproducible:
``python -m nlora_lightning.data.toy --out DIR`` writes them again, byte for byte (a test checks
that the shipped copy matches). The tasks are easy for a 135M instruction-tuned model to learn in a
few dozen steps and still show forgetting, because each task's answers are words the others never use.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from nlora_lightning.io import write_text_atomic

__all__ = ["TOY_BENCHMARK_DIR", "TOY_TASKS", "generate_toy_benchmark"]

TOY_BENCHMARK_DIR = Path(__file__).resolve().parent / "toy_benchmark"
TOY_TASKS = ["reviews", "topics", "intents", "languages"]
_SEED = 20241014
_SIZES = {"train": 320, "test": 64}

_INSTRUCTIONS = {
    "SENT": "What is the sentiment of the following review? Choose one from the option.\n",
    "TOPIC": "What is the topic of the following text? Choose one from the option.\n",
    "INTENT": "What kind of sentence is the following text? Choose one from the option.\n",
    "LANG": "In which language is the following text written? Choose one from the option.\n",
}

_THINGS = ["food", "service", "room", "staff", "music", "coffee", "view", "price", "seat", "movie", "book", "screen"]
_POSITIVE = ["wonderful", "excellent", "delightful", "great", "lovely", "superb", "friendly", "perfect", "amazing", "pleasant"]
_NEGATIVE = ["terrible", "awful", "horrible", "dreadful", "rude", "disgusting", "broken", "boring", "poor", "disappointing"]

_TOPIC_WORDS = {
    "animal": ["dog", "cat", "horse", "rabbit", "fox", "owl", "tiger", "goat", "parrot", "dolphin", "bear", "frog"],
    "vehicle": ["bus", "truck", "bicycle", "train", "tractor", "motorbike", "van", "tram", "scooter", "ferry", "taxi", "jeep"],
    "food": ["pizza", "soup", "bread", "apple", "cheese", "salad", "noodles", "pancake", "banana", "sandwich", "rice", "cookie"],
}
_TOPIC_FRAMES = [
    "I saw a {w} near the {p} this morning.",
    "My neighbour talks about the {w} at the {p} every day.",
    "There is a picture of a {w} next to the {p}.",
    "The children drew a big {w} behind the {p}.",
    "Yesterday a {w} was the main story at the {p}.",
    "She keeps thinking about the {w} she saw at the {p}.",
]
_PLACES = ["market", "school", "station", "river", "library", "park", "church", "harbour"]

_INTENT_FRAMES = {
    "question": [
        "Where did you put the {c} {x}?", "Is the {c} {x} ready yet?", "Why is the {c} {x} on the table?",
        "When will the {c} {x} arrive?", "Who took the {c} {x} this morning?", "How much does the {c} {x} cost?",
    ],
    "command": [
        "Put the {c} {x} on the shelf now.", "Bring me the {c} {x}, please.", "Close the {c} {x} before you leave.",
        "Clean the {c} {x} after lunch.", "Give the {c} {x} to your sister.", "Move the {c} {x} to the garage.",
    ],
    "statement": [
        "The {c} {x} is on the table.", "I bought a new {c} {x} yesterday.", "Our {c} {x} was painted blue.",
        "The {c} {x} arrived this morning.", "My brother fixed the {c} {x} last week.", "The {c} {x} costs ten euros.",
    ],
}
_COLOURS = ["red", "green", "small", "old", "heavy", "wooden", "shiny", "yellow"]
_OBJECTS = ["lamp", "box", "door", "window", "chair", "bag", "key", "letter", "cup", "ladder", "blanket", "umbrella"]

_LANGUAGE_WORDS = {
    "english": (["the cat", "my friend", "the teacher", "a farmer", "the baker"], ["eats", "sees", "likes", "finds", "buys"],
                ["the bread", "an apple", "the house", "a flower", "the water"], ["today", "every morning", "in the garden", "at night"]),
    "french": (["le chat", "mon ami", "le professeur", "un fermier", "le boulanger"], ["mange", "voit", "aime", "trouve", "achete"],
               ["le pain", "une pomme", "la maison", "une fleur", "l'eau"], ["aujourd'hui", "chaque matin", "dans le jardin", "la nuit"]),
    "spanish": (["el gato", "mi amigo", "el profesor", "un granjero", "el panadero"], ["come", "ve", "quiere", "encuentra", "compra"],
                ["el pan", "una manzana", "la casa", "una flor", "el agua"], ["hoy", "cada manana", "en el jardin", "por la noche"]),
}


def _reviews(rng: random.Random) -> tuple[str, str]:
    label = rng.choice(["positive", "negative"])
    words = _POSITIVE if label == "positive" else _NEGATIVE
    a, b = rng.sample(_THINGS, 2)
    return label, f"Review: The {a} was {rng.choice(words)} and the {b} was {rng.choice(words)}."


def _topics(rng: random.Random) -> tuple[str, str]:
    label = rng.choice(sorted(_TOPIC_WORDS))
    return label, "Text: " + rng.choice(_TOPIC_FRAMES).format(w=rng.choice(_TOPIC_WORDS[label]), p=rng.choice(_PLACES))


def _intents(rng: random.Random) -> tuple[str, str]:
    label = rng.choice(sorted(_INTENT_FRAMES))
    return label, "Text: " + rng.choice(_INTENT_FRAMES[label]).format(x=rng.choice(_OBJECTS), c=rng.choice(_COLOURS))


def _languages(rng: random.Random) -> tuple[str, str]:
    label = rng.choice(sorted(_LANGUAGE_WORDS))
    subjects, verbs, objects, times = _LANGUAGE_WORDS[label]
    return label, f"Text: {rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} {rng.choice(times)}"


_TASKS = {
    "reviews": ("SENT", ["positive", "negative"], _reviews),
    "topics": ("TOPIC", ["animal", "vehicle", "food"], _topics),
    "intents": ("INTENT", ["question", "command", "statement"], _intents),
    "languages": ("LANG", ["english", "french", "spanish"], _languages),
}


def generate_toy_benchmark(out_dir: str | Path, seed: int = _SEED) -> Path:
    """Write the toy benchmark into ``out_dir`` (CL_Benchmark layout); returns ``out_dir``."""
    out = Path(out_dir)
    for index, (task, (group, labels, make)) in enumerate(_TASKS.items()):
        rng = random.Random(seed * 31 + index)
        seen: set[str] = set()
        splits: dict[str, list[dict[str, str]]] = {}
        for split, size in _SIZES.items():
            records = []
            while len(records) < size:
                label, sentence = make(rng)
                if sentence in seen:  # train and test never share a sentence
                    continue
                seen.add(sentence)
                records.append({"label": label, "sentence": sentence})
            splits[split] = records
        task_dir = out / group / task
        for split, records in splits.items():
            write_text_atomic(task_dir / f"{split}.json", json.dumps(records, indent=1) + "\n")
        write_text_atomic(task_dir / "labels.json", json.dumps(labels) + "\n")
    instructions = {g: [{"instruction_type": "zero-shot", "instruction": text}] for g, text in _INSTRUCTIONS.items()}
    write_text_atomic(out / "_meta" / "instruction_config.json", json.dumps(instructions, indent=2) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(TOY_BENCHMARK_DIR), help="target directory (default: the packaged copy)")
    parser.add_argument("--seed", type=int, default=_SEED)
    args = parser.parse_args()
    print(generate_toy_benchmark(args.out, args.seed))


if __name__ == "__main__":
    main()
