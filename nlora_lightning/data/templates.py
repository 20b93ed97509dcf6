"""Prompt templates: O-LoRA / N-LoRA's (reference, section 3) and SAPT's for natural-instructions tasks."""

from __future__ import annotations

from typing import Optional

__all__ = ["ANSWER_SUFFIX", "NI_INPUT_PREFIX", "NI_OUTPUT_SUFFIX", "build_natural_instructions_prompt", "build_prompt"]

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


NI_INPUT_PREFIX = "\n\nNow complete the following example -\nInput: "
NI_OUTPUT_SUFFIX = "\nOutput: "


def build_natural_instructions_prompt(definition: str, text: str) -> tuple[str, tuple[int, int]]:
    """SAPT's zero-shot prompt for a natural-instructions task, and the span of the instance's input.

    ::

        "Definition: " + definition + "\\n\\nNow complete the following example -\\nInput: " + text + "\\nOutput: "

    No examples, and neither the task nor the dataset name (SAPT: ``--add_task_name False
    --add_dataset_name False``). The prompt ends with a space, so answers follow it without one.

    Example:
        >>> build_natural_instructions_prompt("Say hi.", "Bob")
        ('Definition: Say hi.\\n\\nNow complete the following example -\\nInput: Bob\\nOutput: ', (65, 68))
    """
    head = "Definition: " + definition + NI_INPUT_PREFIX
    return head + text + NI_OUTPUT_SUFFIX, (len(head), len(head) + len(text))
