"""The README and docs: generated results tables match their reports, relative links resolve."""

import importlib.util
import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", "tflic/bundled/MODEL_CARD.md", "docs/*.md")


def _readme_tables():
  spec = importlib.util.spec_from_file_location(
      "readme_tables", REPO / "tools" / "readme_tables.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_generated_tables_match_their_reports():
  readme_tables = _readme_tables()
  readme = (REPO / "README.md").read_text(encoding="utf-8")
  card = (REPO / "tflic" / "bundled" / "MODEL_CARD.md").read_text(encoding="utf-8")
  # The README's results table is the bundled model's: the report its model card names.
  bundled = {d for kind, d in readme_tables.blocks(card) if kind == "results"}
  assert len(bundled) == 1, bundled
  assert ("results", *bundled) in readme_tables.blocks(readme)
  diffs = readme_tables.check()
  assert not diffs, ("generated blocks differ from their reports (run python "
                     "tools/readme_tables.py):\n" + "\n".join(diffs))


def _documents():
  for pattern in DOCUMENTS:
    yield from sorted(REPO.glob(pattern))


def _anchors(path):
  """GitHub's anchors of a Markdown file's headings."""
  text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
  headings = re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)
  return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_relative_links_resolve():
  link = re.compile(r"\]\(([^)\s]+)\)")
  broken = []
  for path in _documents():
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    for target in link.findall(text):
      if re.match(r"[a-z]+:", target):
        continue  # a URL
      name, _, anchor = target.partition("#")
      linked = (path.parent / name) if name else path
      if not linked.exists():
        broken.append(f"{path.relative_to(REPO)}: {target}")
      elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
        broken.append(f"{path.relative_to(REPO)}: {target} (no such heading)")
  assert not broken, "links to missing files or headings:\n" + "\n".join(broken)
