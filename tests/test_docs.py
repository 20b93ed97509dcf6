"""The README and the guides: short, and every link, config path and data option they name exists."""

import inspect
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "benchmarks" / "README.md",
         REPO / "benchmarks" / "results" / "README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")
CONFIG_PATH = re.compile(r"configs/[\w/]+\.yaml")
DATA_OPTION = re.compile(r"(?<![\w/])data\.([a-z_]+)\b")  # data.tasks, --data.seed; not docs/data.md


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower-case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_readme_stays_short():
    assert len((REPO / "README.md").read_text().splitlines()) <= 150


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page):
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: not checked offline
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.relative_to(REPO)} links to {target}, which does not exist"
        if anchor:
            assert anchor in anchors(resolved), f"{page.relative_to(REPO)} links to {target}: no such heading"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_named_configs_exist(page):
    for name in set(CONFIG_PATH.findall(page.read_text())):
        if name.startswith("configs/instruction_config"):  # a file of O-LoRA's repository, named as such
            continue
        if name == "configs/methods/shrink_b.yaml":  # architecture.md's example of a new method (tests/methods/test_add_a_method.py)
            continue
        assert (REPO / name).is_file(), f"{page.relative_to(REPO)} names {name}, which does not exist"


def test_data_options_in_the_guides_exist():
    from nlora_lightning import TaskSequenceDataModule

    options = set(inspect.signature(TaskSequenceDataModule.__init__).parameters)
    for page in PAGES:
        for name in set(DATA_OPTION.findall(page.read_text())) - {"md"}:  # a link to data.md
            assert name in options, f"{page.relative_to(REPO)} names data.{name}, which TaskSequenceDataModule does not take"
