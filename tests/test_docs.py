"""README is the front door (a few screens); the manual lives in docs/, every page linked, no dead links."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")

# the sections the README had before it became a front door (2026-12-02): each lives on in docs/
MOVED = ["What `make demo` does and prints", "Corpora", "Ingesting every night", "Manifest",
         "Shard schema (version 2)", "What a batch is, where the data comes from, what is kept, what is logged",
         "How separation covers the full band and both channels", "Songs played by sampled instruments and voices",
         "The generated demo corpus", "What it shows, and what semisep does about it", "Speed", "Layout",
         "Ray dashboard, and where Ray's messages go", "Sweeps: `semisep tune`", "Model registry and promotion",
         "From laptop to cluster", "The nightly job", "Tested on real Ray nodes"]


def _anchor(title: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def _headings(page: Path) -> list[str]:
    return [line.lstrip("#").strip() for line in page.read_text().splitlines() if line.startswith("#")]


def test_readme_is_a_few_screens():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


def test_every_relative_link_resolves():
    dead = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                dead.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in {_anchor(h) for h in _headings(file)}:
                dead.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not dead, "\n".join(dead)


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in LINK.findall((ROOT / "README.md").read_text())}
    missing = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in linked]
    assert not missing, missing


def test_the_sections_the_readme_had_live_on_in_docs():
    headings = {h for page in (ROOT / "docs").glob("*.md") for h in _headings(page)}
    assert not [title for title in MOVED if title not in headings]
