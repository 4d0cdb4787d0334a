"""The README is short and points to every docs page; the docs pages point at files that exist."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md"))


def test_the_readme_is_short_and_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    assert PAGES, "no docs pages"
    linked = set(re.findall(r"\]\((docs/[^)#]+\.md)\)", readme))
    assert linked == {f"docs/{p.name}" for p in PAGES}, linked


def test_every_relative_link_and_picture_exists():
    for page in [ROOT / "README.md", *PAGES]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which is missing"


def test_every_commands_help_points_to_an_existing_docs_page():
    import importlib

    names = [p.stem for p in (ROOT / "copart_cli" / "commands").glob("*.py") if p.stem not in ("__init__", "options")]
    for name in names:
        module = importlib.import_module(f"copart.commands.{name}")
        epilog = getattr(module, "EPILOG", None)
        if epilog is None:
            continue
        pages = re.findall(r"docs/([\w-]+\.md)", epilog)
        assert pages, f"copart {name} --help names no docs page"
        for page in pages:
            assert (ROOT / "docs" / page).exists(), f"copart {name} --help names docs/{page}, which is missing"
