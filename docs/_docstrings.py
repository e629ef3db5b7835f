"""Docstring adapter for the project's house style (used by conf.py, not a Sphinx page).

The library's docstrings are prose with parameter lists written as::

    Summary line.

        name : what it is, continued on
            indented lines.
        other, names : ...

with no ``Parameters`` section header, so neither numpydoc nor napoleon parses
them, and docutils reads such a run as paragraphs followed by "unexpected
indentation".  :func:`process` turns each run of ``name : text`` lines at one
indentation into a reST definition list (each name a term, its text the
definition), and escapes the characters that plain-text mathematics uses and reST
takes as markup openers (``|`` in ``KL(p || q)`` and ``log|det|``, a ``*`` that opens
``(n, *grid.shape)``).  Literal blocks (after ``::``), doctest lines and inline
literals are left alone.  Nothing in the library is changed: this runs on
autodoc's copy of each docstring.
"""
import re

# "name : text", "a, b, c : text", "*args : text"; the name list is short and the
# separator is a colon with a space on each side.
ITEM = re.compile(r"^(?P<ind>\s*)(?P<names>\*{0,2}[A-Za-z_][\w.]*(?:\s*,\s*\*{0,2}[A-Za-z_][\w.]*)*)\s+:\s+(?P<text>\S.*)$")
# inline literals and roles are copied verbatim
LITERAL = re.compile(r"(``.+?``|:[\w:.-]+:`[^`]+`|`[^`]+`_?)")
# a '*' that reST would read as the start of emphasis: after an opening bracket or ", "
STAR = re.compile(r"(?<=[(\[])\*(?=\S)|(?<=, )\*(?=[\w.])|(?<=^)\*(?=[\w.(])")


def _indent(line):
    return len(line) - len(line.lstrip())


def _escape(line):
    stripped = line.lstrip()
    if stripped.startswith(("|", "+", ">>>", "...")) or stripped.startswith(".. "):
        return line  # grid tables, line blocks, doctests, directives
    parts = LITERAL.split(line)
    for i in range(0, len(parts), 2):  # even parts are outside literals
        text = parts[i].replace("|", r"\|")
        parts[i] = STAR.sub(r"\\*", text)
    return "".join(parts)


def convert(lines):
    """Return the lines of one docstring with parameter runs as definition lists."""
    out = []
    literal_indent = None  # indentation of the paragraph that opened a literal block
    item_indent = None  # indentation of the definition list being written
    for line in lines:
        blank = not line.strip()
        ind = _indent(line)
        if literal_indent is not None:
            if blank or ind > literal_indent:
                out.append(line)
                continue
            literal_indent = None
        m = ITEM.match(line)
        if item_indent is not None and not blank:
            if ind > item_indent:  # continuation of the current item: its definition
                line = " " * (item_indent + 4) + _escape(line.strip())
                if line.rstrip().endswith("::"):
                    literal_indent = item_indent + 4
                out.append(line)
                continue
            if not (m and ind == item_indent):
                out.append("")  # a paragraph after a definition list needs a blank line
                item_indent = None
        if m and item_indent is None and out and out[-1].strip():
            out.append("")
        if m:
            item_indent = ind
            names = ", ".join(f"``{n.strip()}``" for n in m.group("names").split(","))
            out.append(f"{m.group('ind')}{names}")
            out.append(" " * (ind + 4) + _escape(m.group("text")))
            continue
        if blank:
            item_indent = None
        line = _escape(line)
        if line.rstrip().endswith("::"):
            literal_indent = ind
        out.append(line)
    return out


def process(app, what, name, obj, options, lines):
    """``autodoc-process-docstring`` handler (edits ``lines`` in place)."""
    if lines[:1] and lines[0].startswith("ndarray(shape"):
        # A property without a docstring of its own inherits the docstring of the
        # ndarray that the base class stores under that name: not documentation.
        lines[:] = []
        return
    lines[:] = convert(lines)
