from nlora_lightning.data.templates import build_prompt


def test_prompt_matches_reference_template_exactly():
    prompt, span = build_prompt(
        "yelp", "SC", "What is the sentiment of the following paragraph? Choose one from the option.\n",
        ["negative", "positive"], "Text: great food",
    )
    assert prompt == (
        "Task:SC\nDataset:yelp\nWhat is the sentiment of the following paragraph? Choose one from the option.\n"
        "Option: negative, positive \nText: great food\nAnswer:"
    )
    assert prompt[span[0] : span[1]] == "Text: great food"


def test_copa_uses_sentence_only():
    sentence = 'Which sentence is the cause of "X"? Choose one between A and B.\nA: a\nB: b'
    prompt, span = build_prompt("COPA", "COPA", None, ["A", "B"], sentence)
    assert prompt == sentence + "\nAnswer:"
    assert span == (0, len(sentence))


def test_task_header_can_be_dropped():
    args = ("yelp", "SC", "Pick the sentiment.\n", ["negative", "positive"], "Text: great food")
    prompt, span = build_prompt(*args, task_header=False)
    assert prompt == "Pick the sentiment.\nOption: negative, positive \nText: great food\nAnswer:"
    assert prompt[span[0] : span[1]] == "Text: great food"
    assert build_prompt(*args)[0] == "Task:SC\nDataset:yelp\n" + prompt  # default: the paper's header
