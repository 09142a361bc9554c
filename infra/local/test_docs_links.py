"""The README and docs/ link where they say: every relative link names a file of the
repository, and every `#anchor` a heading of its target (as GitHub makes anchors from
headings); the README stays a first page; `make help` (the default target) lists every
target. Run by `make test` (python -m unittest discover -s infra/local).
"""

import re
import subprocess
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: `[text](target)`, outside code spans; the target up to the first space or `)`.
LINK = re.compile(r"(?<!`)\[[^\]\n]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def documents() -> list[Path]:
    """The README and every page of docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def unfenced(path: Path) -> list[str]:
    """The file's lines outside fenced code blocks."""
    kept, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            kept.append(line)
    return kept


def prose(path: Path) -> str:
    """The file's text without code (a link in a code block or span is an example)."""
    return "\n".join(re.sub(r"`[^`]*`", "", line) for line in unfenced(path))


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading's text: lower case, punctuation dropped, spaces to `-`."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor the headings of `path` make (GitHub numbers repeated ones -1, -2, ...)."""
    made: dict[str, int] = {}
    found = set()
    for line in unfenced(path):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = anchor(match.group(1))
        count = made.get(base, 0)
        made[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(path: Path) -> list[str]:
    """The links of `path` that name no file, or no heading of their file."""
    broken = []
    for target in LINK.findall(prose(path)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # http:, https:, mailto:: not the repository's
        file_part, _, fragment = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            broken.append(f"{target}: no such file {resolved}")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            broken.append(f"{target}: no heading #{fragment} in {resolved.name}")
    return broken


class DocsLinksTest(unittest.TestCase):
    def test_every_relative_link_of_the_readme_and_docs_resolves(self):
        for path in documents():
            with self.subTest(document=path.name):
                self.assertEqual(broken_links(path), [])

    def test_the_readme_is_a_first_page(self):
        lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
        self.assertLessEqual(len(lines), 250, "the README is a first page; reference goes to docs/")
        first_screen = "\n".join(lines[:60])
        for shown in ("make dev", "make test"):
            self.assertIn(shown, "\n".join(lines[:80]), f"{shown} near the top")
        self.assertTrue(first_screen.startswith("# "), "a title first")

    def test_the_checker_finds_what_is_broken(self):
        page = ROOT / ".local" / "test_docs_links.md"
        page.parent.mkdir(exist_ok=True)
        self.addCleanup(page.unlink)
        page.write_text(
            "# A page\n## Its part\n[ok](#its-part) [ok](../README.md) [web](https://x.y/z)\n"
            "[gone](../no-such-file.md) [no heading](#nothing-here) `[code](nowhere.md)`\n"
            "```\n[fenced](nowhere.md)\n```\n",
            encoding="utf-8",
        )
        self.assertEqual(
            [line.split(":")[0] for line in broken_links(page)],
            ["../no-such-file.md", "#nothing-here"],
        )

    def test_anchors_are_made_as_github_makes_them(self):
        self.assertEqual(anchor("Stopping `make dev`"), "stopping-make-dev")
        self.assertEqual(anchor("Reliability: the faults tried, and what held"),
                         "reliability-the-faults-tried-and-what-held")
        self.assertEqual(anchor("`POST /api/managed-agents/cancel` `{\"sessionId\": \"<uuid>\"}`"),
                         "post-apimanaged-agentscancel-sessionid-uuid")
        self.assertEqual(anchor("to `status_terminated`, and"), "to-status_terminated-and")


class MakeHelpTest(unittest.TestCase):
    def test_make_help_lists_every_target_and_is_the_default(self):
        makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
        phony = re.search(r"^\.PHONY:(.*)$", makefile, re.M).group(1).split()
        for args in (["help"], []):
            shown = subprocess.run(["make", "-s", "-C", str(ROOT), *args], capture_output=True,
                                   text=True, check=True).stdout
            listed = re.findall(r"^  make (\S+)", shown, re.M)
            self.assertEqual(sorted(listed), sorted(phony), f"make {' '.join(args)}")
        self.assertIn("make unit", shown)


if __name__ == "__main__":
    unittest.main()
