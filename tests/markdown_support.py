"""Reading the repository's markdown as a reader's renderer does (markdown-it-py,
CommonMark): its code blocks, with the section each is in and its line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Block:
    kind: str  # "fence" or "code_block" (indented)
    info: str  # a fence's language ("python", "text"...); "" for indented blocks
    text: str
    line: int  # 1-based line of its first line (a fence: the opening ```)
    section: str  # the text of the nearest heading above it
    after: str  # the text of the paragraph just before it ("" if none)


def parse(text: str) -> list[Block]:
    tokens = MarkdownIt("commonmark").parse(text)
    blocks: list[Block] = []
    section = after = ""
    for i, tok in enumerate(tokens):
        if tok.type == "inline" and i > 0 and tokens[i - 1].type == "heading_open":
            section = tok.content
            after = ""
        elif tok.type == "inline" and i > 0 and tokens[i - 1].type == "paragraph_open":
            after = tok.content
        elif tok.type in ("fence", "code_block"):
            assert tok.map is not None
            blocks.append(
                Block(tok.type, tok.info.strip(), tok.content, tok.map[0] + 1, section, after)
            )
            after = ""
    return blocks


def blocks_of(path: Path) -> list[Block]:
    return parse(path.read_text())


def markdown_files() -> list[Path]:
    """Every markdown file of the repository (not the virtualenv's, nor build output)."""
    skip = {".venv", ".git", "node_modules", "build", "dist", ".mypy_cache", ".ruff_cache"}
    return sorted(
        p
        for p in ROOT.rglob("*.md")
        if not skip.intersection(p.relative_to(ROOT).parts) and ".egg-info" not in str(p)
    )
