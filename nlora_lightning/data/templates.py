"""The prompt template of O-LoRA / N-LoRA (reference, section 3)."""

from __future__ import annotations

from typing import Optional

__all__ = ["ANSWER_SUFFIX", "build_prompt"]

ANSWER_SUFFIX = "\nAnswer:"


def build_prompt(
    task: str, group: str, instruction: Optional[str], labels: list[str], sentence: str, task_header: bool = True
) -> tuple[str, tuple[int, int]]:
    """The source text for one sample and the character span of its sentence inside it.

    Every task but COPA::

        "Task:" + group + "\\nDataset:" + task + "\\n" + instruction + "Option: " + ", ".join(labels) + " \\n" + sentence + "\\nAnswer:"

    COPA: ``sentence + "\\nAnswer:"`` (its sentence states the question and the options).
    The span lets truncation shorten the sentence alone, keeping instruction, options and "Answer:".

    Args:
        task_header: Keep the ``Task:``/``Dataset:`` lines (the paper's template). ``False`` drops
            them, as later work (GainLoRA, SAPT) does, so the prompt no longer names the dataset;
            the instruction and the label options stay.

    Example:
        >>> build_prompt("COPA", "COPA", None, ["A", "B"], "Pick one.")
        ('Pick one.\\nAnswer:', (0, 9))
    """
    if task == "COPA":
        head = ""
    else:
        if instruction is None:
            raise ValueError(f"task {task!r} needs an instruction")
        header = "Task:" + group + "\nDataset:" + task + "\n" if task_header else ""
        head = header + instruction + "Option: " + ", ".join(labels) + " \n"
    return head + sentence + ANSWER_SUFFIX, (len(head), len(head) + len(sentence))
