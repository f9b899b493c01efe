"""Sphinx extension: read vae_jax's plain-text docstrings as they are meant, without editing them.

The docstrings are written to be read in a terminal (``help()``, an editor): Google-style
sections (napoleon reads those), backticks for names, and formulas, layouts and tables as
indented or ``|``-delimited blocks. reStructuredText reads some of that as markup: an indented
block after a paragraph is a block quote (and an error when its lines are indented unevenly),
``*input_shape`` opens emphasis, ``|ℓ|`` is a substitution, ```RatePoint`s`` is not a closed
role. Before napoleon, each docstring is rewritten so that

- an indented block after a blank line, under a plain paragraph, becomes a literal block (as if
  the paragraph ended with ``::``), and so does a paragraph of ``|``-delimited table rows;
- outside literals and roles, ``*`` that does not close an emphasis of its line is escaped, and
  so are every ``|`` and the ``_`` that ends a word (``train_*`` is not a reference);
- a role followed directly by a letter (```VAE`s``) is closed with an escaped space.

Lists, Google sections, directives, field lists and blocks already introduced by ``::`` are left
as they are.
"""

import re

# napoleon's Google sections (Args:, Returns:, Raises:, ...): their indented bodies are its own.
_SECTION = re.compile(
    r"^\s*(Args|Arguments|Attributes|Examples?|Keyword Args|Keyword Arguments|Methods|Notes?|"
    r"Other Parameters|Parameters|Returns?|Raises?|References|See Also|Todo|Warnings?|Warns|"
    r"Yields?)\s*:\s*$")
_LIST_ITEM = re.compile(r"^\s*([-*+•]|\d+[.)]|#\.)\s")
# ``literal``, `role` or :role:`target`: left alone (but closed properly).
_INLINE = re.compile(r"(:[\w:.-]+:)?``.+?``|(:[\w:.-]+:)?`[^`]+`")
# *emphasis* and **strong** that reST reads as such: kept.
_EMPHASIS = re.compile(r"(?<![\w*\\])(\*\*?)(?=[^\s*])[^*]*?(?<=[^\s*\\])\1(?![\w*])")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _escape_text(text: str) -> str:
    """Escapes ``*`` outside real emphasis, and ``|``, in text without literals or roles."""
    kept = [match.span() for match in _EMPHASIS.finditer(text)]
    out = []
    for index, char in enumerate(text):
        if char == "*" and not any(start <= index < end for start, end in kept):
            out.append("\\*")
        elif char == "|" or (char == "_" and index > 0 and text[index - 1].isalnum()
                              and not text[index + 1:index + 2].isalnum()
                              and text[index + 1:index + 2] != "_"):
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def escape_inline(line: str) -> str:
    """One line of prose with its stray markup characters escaped (see the module docstring)."""
    out, position = [], 0
    for match in _INLINE.finditer(line):
        out.append(_escape_text(line[position:match.start()]))
        out.append(match.group(0))
        following = line[match.end():match.end() + 1]
        if following and (following.isalnum() or following == "_"):
            out.append("\\ ")
        position = match.end()
    out.append(_escape_text(line[position:]))
    return "".join(out)


def _is_table_row(line: str) -> bool:
    stripped = line.strip()
    return len(stripped) > 1 and stripped.startswith("|") and stripped.endswith("|")


def _plain_paragraph(paragraph: list[str]) -> bool:
    """Whether a paragraph is prose under which an indented block is preformatted text."""
    if not paragraph:
        return False
    first, last = paragraph[0], paragraph[-1]
    return not (_SECTION.match(first) or _LIST_ITEM.match(first) or first.lstrip().startswith(
        (".. ", ":")) or last.rstrip().endswith("::"))


def rewrite(lines: list[str]) -> list[str]:
    """The docstring `lines` (dedented, as autodoc gives them) rewritten for reST."""
    out: list[str] = []
    paragraph: list[str] = []  # the last paragraph of prose (lines since a blank line)
    literal_indent = None  # the indentation a literal block's lines exceed, while in one
    index = 0
    while index < len(lines):
        line = lines[index]
        blank = not line.strip()
        if literal_indent is not None:
            if blank or _indent(line) > literal_indent:
                out.append(line)
                index += 1
                continue
            literal_indent = None
        if blank:
            out.append(line)
            if previous_is_literal(paragraph):
                literal_indent = _indent(paragraph[0])
            paragraph = []
            index += 1
            continue
        after_blank = index > 0 and not lines[index - 1].strip()
        if after_blank:
            previous = _previous_paragraph(lines, index)
            base = _indent(previous[0]) if previous else 0
            if _is_table_row(line) and not previous_is_literal(previous):
                out.extend([" " * base + "::", ""])
                while index < len(lines) and _is_table_row(lines[index]):
                    out.append("    " + lines[index])
                    index += 1
                paragraph = []
                continue
            if previous and _indent(line) > base and _plain_paragraph(previous):
                out.extend([" " * base + "::", ""])
                literal_indent = base
                out.append(line)
                index += 1
                paragraph = []
                continue
        paragraph.append(line)
        doctest = paragraph[0].lstrip().startswith(">>>")
        out.append(line if doctest else escape_inline(line))
        index += 1
    return out


def previous_is_literal(paragraph: list[str]) -> bool:
    """Whether `paragraph` ends with ``::`` (the block under it is already literal)."""
    return bool(paragraph) and paragraph[-1].rstrip().endswith("::")


def _previous_paragraph(lines: list[str], index: int) -> list[str]:
    """The non-blank lines of the paragraph that ends before the blank line(s) above `index`."""
    end = index
    while end > 0 and not lines[end - 1].strip():
        end -= 1
    start = end
    while start > 0 and lines[start - 1].strip():
        start -= 1
    return lines[start:end]


def _process(app, what, name, obj, options, lines):  # pylint: disable=unused-argument
    lines[:] = rewrite(lines)


def setup(app):
    """Registers the rewrite ahead of napoleon (priority 400 < its 500)."""
    app.connect("autodoc-process-docstring", _process, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
