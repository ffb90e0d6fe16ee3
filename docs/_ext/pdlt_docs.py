"""Sphinx helpers for the pdlt docs.

``.. pdlt-result-types:: pdlt.kernel pdlt.criticality ...`` documents the classes that the named
public functions return (read from their return annotations) when those classes are not
themselves exported from :mod:`pdlt`. Reading the annotation instead of hard-coding
``pdlt.theory.criticality.Criticality`` keeps the reference correct when internals move.
"""

from __future__ import annotations

import importlib
import inspect
import re
import typing

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective


def _resolve(dotted: str) -> object:
    module, _, name = dotted.rpartition(".")
    obj = importlib.import_module(module)
    return getattr(obj, name)


def result_type(func: object) -> type | None:
    """The class ``func`` is annotated to return, if it is one of pdlt's own."""
    try:
        ret = typing.get_type_hints(func).get("return")
    except Exception:  # a forward reference that does not resolve: nothing to document
        return None
    if inspect.isclass(ret) and ret.__module__.startswith("pdlt."):
        return ret
    return None


class ResultTypes(SphinxDirective):
    has_content = False
    required_arguments = 1
    optional_arguments = 50

    def run(self) -> list[nodes.Node]:
        import pdlt

        exported = {getattr(pdlt, n) for n in pdlt.__all__}
        seen: list[type] = []
        for dotted in self.arguments:
            cls = result_type(_resolve(dotted))
            if cls is None:
                raise self.error(f"pdlt-result-types: {dotted} has no pdlt class return annotation")
            if cls not in exported and cls not in seen:
                seen.append(cls)
        lines: list[str] = []
        for cls in seen:
            lines += [
                f".. autoclass:: {cls.__module__}.{cls.__qualname__}",
                "   :members:",
                "",
            ]
        node = nodes.section()
        node.document = self.state.document
        self.state.nested_parse(StringList(lines, source="pdlt-result-types"), 0, node)
        return node.children


_LITERAL = re.compile(r"``.*?``")


def _escape_bars(text: str) -> str:
    """``|x|`` → ``\\|x\\|`` outside inline literals, so docutils does not read a substitution."""
    out, last = [], 0
    for m in _LITERAL.finditer(text):
        out.append(text[last : m.start()].replace("|", "\\|"))
        out.append(m.group(0))
        last = m.end()
    out.append(text[last:].replace("|", "\\|"))
    return "".join(out)


def escape_norm_bars(app, what, name, obj, options, lines: list[str]) -> None:
    """pdlt's docstrings write norms and absolute values as ``|x|²`` in prose, which reST reads
    as substitution references. Escape the bars in prose; leave literal blocks (after ``::``)
    and doctest blocks (``>>>`` up to the next blank line) as written."""
    literal_indent: int | None = None
    in_doctest = False
    for i, line in enumerate(lines):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if literal_indent is not None:
            if not stripped or indent > literal_indent:
                continue
            literal_indent = None
        if in_doctest:
            if not stripped:
                in_doctest = False
            continue
        if stripped.startswith(">>>"):
            in_doctest = True
            continue
        lines[i] = _escape_bars(line)
        if stripped.endswith("::"):
            literal_indent = indent


_LIST_SECTIONS = {"Parameters", "Other Parameters", "Attributes", "Returns", "Yields", "Raises"}
_ENTRY = re.compile(r"^(?P<names>[A-Za-z_*][\w*]*(?:\s*,\s*[A-Za-z_*][\w*]*)*):$")


def strip_entry_colons(app, what, name, obj, options, lines: list[str]) -> None:
    """pdlt's docstrings head each numpydoc entry ``name:`` (no type); numpydoc expects
    ``name`` or ``name : type`` and would print the colon. Drop it inside list sections."""
    section = None
    for i, line in enumerate(lines):
        nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if nxt and set(nxt) == {"-"} and line.strip():
            section = line.strip()
            continue
        if section in _LIST_SECTIONS and line and not line[0].isspace():
            m = _ENTRY.match(line.rstrip())
            if m:
                lines[i] = m.group("names")


def skip_sklearn_routing(app, what, name, obj, skip, options):
    """scikit-learn adds ``set_{method}_request`` (metadata routing) to every estimator class;
    they are sklearn's, documented there, and their docstrings point into sklearn's glossary."""
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", skip_sklearn_routing)
    app.connect("autodoc-process-docstring", strip_entry_colons, priority=300)
    app.add_directive("pdlt-result-types", ResultTypes)
    # before numpydoc (priority 500) turns the sections into reST
    app.connect("autodoc-process-docstring", escape_norm_bars, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
