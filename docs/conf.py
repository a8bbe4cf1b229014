"""Sphinx configuration for evio's documentation.

Build it with ``make docs``, which runs::

    python -m sphinx -W --keep-going -n -b html docs docs/_build/html

The reference is made from the docstrings in ``src/evio``: they are the one
source of truth, and this file makes the build fail (with ``-W``) when one is
missing or a cross-reference to an evio name is broken:

* nitpicky mode (``-n``) turns every unresolved cross-reference into a
  warning. Single backticks in a docstring (```Conn.write```) are the
  default role, ``code-or-ref``: a link when the text names a documented
  object, code otherwise (```out```, ```(out, action)```). A name that starts
  with one of evio's public names must resolve, so ```Conn.wirte``` fails.
* every name in ``evio.__all__`` must be documented on a page, every public
  method and property must have a docstring, and every public attribute of a
  class (a slot, a dataclass field, a class attribute) must be described in
  its class's docstring (as ```name```) or by a ``#:`` comment.

The examples' pages show each program's ``--help`` (the ``program-help``
directive below), so their flags are documented by the programs themselves.

Links to Python's own documentation (intersphinx) need Python's inventory,
which needs the network or a local copy, and the build must pass offline. So
the mapping is off unless ``EVIO_DOCS_INTERSPHINX`` asks for it:

* unset, empty or ``0``: no inventory; names from the standard library
  (``bytes``, ``socket.socket``, ``TimeoutError``) are shown as code, unlinked,
  and are not warnings;
* ``1``: fetch https://docs.python.org/3/objects.inv (a failure is a warning,
  so an error under ``-W``);
* a path: read the inventory from that file (on Debian 12, the package
  ``python3.11-doc`` ships ``/usr/share/doc/python3.11/html/objects.inv``);
  links still go to docs.python.org.
"""

from __future__ import annotations

import builtins
import enum
import functools
import importlib
import inspect
import os
import re
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.domains.python import PyXRefRole
from sphinx.environment import BuildEnvironment
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import evio  # noqa: E402  (after the path is set)

logger = logging.getLogger("evio.docs")

# -- Project ------------------------------------------------------------------

project = "evio for Python"
author = "the evio authors"
copyright = "the evio authors, MIT License"
release = evio.__version__
version = ".".join(release.split(".")[:2])

# -- General ------------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
]
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "bench", "Thumbs.db", ".DS_Store"]
nitpicky = True
default_role = "code-or-ref"
add_module_names = False
python_use_unqualified_type_names = True
toc_object_entries_show_parents = "hide"

# -- autodoc ------------------------------------------------------------------

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
# The typing aliases keep their names in signatures instead of being spelled out.
autodoc_type_aliases = {
    name: f"evio.{name}" for name in ("Out", "OpenedResult", "DataResult", "TickResult", "SockAddr")
}
autosummary_generate = False

#: Handles the loop makes: their constructors are not for users, so the reference shows no signature.
NO_CONSTRUCTOR = {"evio.Conn", "evio.Server", "evio.Timer", "evio.Action"}

# -- intersphinx ----------------------------------------------------------------

PYTHON_DOCS = "https://docs.python.org/3"
_inventory = os.environ.get("EVIO_DOCS_INTERSPHINX", "").strip()
if _inventory in ("", "0"):
    intersphinx_mapping: dict[str, tuple[str, str | None]] = {}
elif _inventory == "1":
    intersphinx_mapping = {"python": (PYTHON_DOCS, None)}
else:
    intersphinx_mapping = {"python": (PYTHON_DOCS, os.path.abspath(_inventory))}
intersphinx_timeout = 10

# -- HTML -----------------------------------------------------------------------

html_theme = "furo"
html_title = f"evio for Python {release}"
html_short_title = "evio"
html_copy_source = False
html_show_sourcelink = False

# -- The default role: a link where the text is a name, code otherwise -----------

_NAME = re.compile(r"~?\.?[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
#: `closed(conn, err)`, `Timer.cancel()`: the name before the call is the target.
_CALL = re.compile(r"(~?\.?[A-Za-z_][A-Za-z0-9_.]*)\(.*\)", re.S)
PUBLIC = frozenset(name for name in evio.__all__ if not name.startswith("_"))


class CodeOrRef(PyXRefRole):
    """`text` in single backticks: a Python cross-reference when it names an object, literal code otherwise.

    The docstrings use backticks for both (`Conn.write`, `(out, action)`,
    `b""`); this role links what can be linked and shows the rest as code.
    """

    def run(self) -> tuple[list[nodes.Node], list[nodes.system_message]]:
        text = self.text
        call = _CALL.fullmatch(text)
        if not (_NAME.fullmatch(text) or call):
            return [nodes.literal(self.rawtext, text, classes=["code"])], []
        self.name = "py:obj"
        if call:  # link the call's name, show the whole call
            self.target = call.group(1)
            self.title = text
            self.has_explicit_title = True
        return super().run()

    def process_link(
        self, env: BuildEnvironment, refnode: nodes.Element, has_explicit_title: bool, title: str, target: str
    ) -> tuple[str, str]:
        title, target = super().process_link(env, refnode, has_explicit_title, title, target)
        refnode["evio_code"] = True
        return title, target


def _stdlib(target: str) -> bool:
    """Whether `target` names something in Python itself: a builtin, a typing name, or a stdlib object."""
    parts = target.lstrip("~.").split(".")
    if parts[0] in ("None", "True", "False", "Ellipsis", "NotImplemented"):
        return True
    if hasattr(builtins, parts[0]):
        obj: Any = builtins
    elif len(parts) == 1 and hasattr(typing, parts[0]):
        return True
    elif parts[0] in getattr(sys, "stdlib_module_names", ()):
        try:
            obj = importlib.import_module(parts[0])
        except ImportError:
            return False
        parts = parts[1:]
    else:
        return False
    for part in parts:
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def _missing_reference(
    app: Sphinx, env: BuildEnvironment, node: nodes.Element, contnode: nodes.Element
) -> nodes.Element | None:
    """What intersphinx could not resolve either: a link, code, or a warning.

    A name under evio must resolve (nitpicky mode then warns). Backticked
    text in a docstring that names no object in its context is, in order:
    a link to the one documented member of that name (`dial` to
    `Server.dial`, `closed` to `Events.closed`, `conn.outbound` to
    `Conn.outbound`) unless it is a parameter of the documented object;
    code, for standard-library names when no inventory is loaded (offline
    builds) and for the rest (`out`, `addrs`, `(out, action)`).
    """
    if node.get("refdomain") != "py":
        return None
    target: str = node.get("reftarget", "")
    head, _, rest = target.lstrip("~.").partition(".")
    if node.get("evio_code"):
        if head in ("conn", "server", "timer") and rest:  # an instance's attribute: the class's
            found = _resolve(app, env, node, contnode, f"evio.{head.capitalize()}.{rest}")
            if found is not None:
                return found
        elif not rest and target not in _parameters(node.source or ""):
            owners = _members(env).get(target, [])
            if len(owners) == 1:
                return _resolve(app, env, node, contnode, owners[0])
    if head in PUBLIC or head == "evio":
        return None  # an evio name that does not resolve: broken
    if _stdlib(target) or node.get("evio_code"):
        return contnode
    return None


def _resolve(
    app: Sphinx, env: BuildEnvironment, node: nodes.Element, contnode: nodes.Element, fullname: str
) -> nodes.Element | None:
    domain = env.get_domain("py")
    return domain.resolve_xref(env, node["refdoc"], app.builder, "obj", fullname, node, contnode)


def _members(env: BuildEnvironment) -> dict[str, list[str]]:
    """Documented members of evio's classes by their short name: `dial` -> [`evio.Server.dial`]."""
    members: dict[str, list[str]] = {}
    for fullname in env.get_domain("py").objects:  # type: ignore[attr-defined]
        parts = fullname.split(".")
        if len(parts) == 3 and parts[0] == "evio" and parts[1] in PUBLIC:
            members.setdefault(parts[2], []).append(fullname)
    return members


@functools.cache
def _parameters(source: str) -> frozenset[str]:
    """The parameter names of the object whose docstring `source` is (`...:docstring of evio.loop.serve`)."""
    match = re.search(r"docstring of ([\w.]+)", source)
    if not match:
        return frozenset()
    parts = match.group(1).split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for part in parts[cut:]:
                obj = getattr(obj, part)
            return frozenset(inspect.signature(obj).parameters)
        except (AttributeError, TypeError, ValueError):
            return frozenset()
    return frozenset()


def _alias_comment(app: Sphinx, what: str, name: str, obj: object, options: object, lines: list[str]) -> None:
    """A typing alias re-exported by `evio` gets the `#:` comment written where it is defined.

    autodoc reads `#:` comments from the module it documents (`evio`), but the
    aliases are defined, and commented, in `evio.events`.
    """
    if what != "data" or lines or not name.startswith("evio."):
        return
    short = name.rpartition(".")[2]
    for module in _submodules():
        comment = _attr_docs(module).get(("", short))
        if comment and getattr(importlib.import_module(module), short, None) is obj:
            lines.extend(comment)
            return


def _parameter_not_builtin(
    app: Sphinx, env: BuildEnvironment, node: nodes.Element, contnode: nodes.Element
) -> nodes.Element | None:
    """Before intersphinx: a bare backticked name that is also a builtin function is a parameter.

    `id` in `Server.wake`'s docstring is the connection's id, not `id()`.
    """
    if node.get("evio_code") and not node.get("refexplicit"):
        target = node.get("reftarget", "")
        if inspect.isbuiltin(getattr(builtins, target, None)):
            return contnode
    return None


def _no_constructor(
    app: Sphinx, what: str, name: str, obj: object, options: object, signature: str | None, annotation: str | None
) -> tuple[str, str | None] | None:
    """The loop makes `Conn`, `Server` and `Timer`: show them without a constructor signature."""
    if what == "class" and name in NO_CONSTRUCTOR:
        return "", None
    return None


# -- An example's flags, from the example itself ------------------------------------


class ProgramHelp(SphinxDirective):
    """``.. program-help:: ../examples/echo_server.py``: the program's ``--help``, as a literal block.

    The examples' pages show their flags as the programs print them, so the
    two cannot drift apart. A program whose ``--help`` fails is a warning.
    """

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        path = (Path(self.env.srcdir) / self.arguments[0]).resolve()
        self.env.note_dependency(str(path))
        env = dict(os.environ, COLUMNS="88", PYTHONPATH=os.pathsep.join([str(HERE.parent / "src"), str(path.parent)]))
        try:
            run = subprocess.run(
                [sys.executable, str(path), "--help"], capture_output=True, text=True, timeout=60, env=env, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            return [self.state.document.reporter.warning(f"{path.name} --help: {err}", line=self.lineno)]
        if run.returncode != 0 or not run.stdout.strip():
            why = run.stderr.strip().splitlines()[-1:] or [f"exit status {run.returncode}"]
            return [self.state.document.reporter.warning(f"{path.name} --help failed: {why[0]}", line=self.lineno)]
        text = run.stdout.rstrip()
        block = nodes.literal_block(text, text, language="text")
        self.set_source_info(block)
        return [block]


# -- Checks: a public name without a docstring fails the build ---------------------


def _mentioned(doc: str | None, name: str) -> bool:
    """Whether a class's docstring describes its attribute `name` (in backticks)."""
    return doc is not None and f"`{name}`" in doc


@functools.cache
def _attr_docs(module: str) -> dict[tuple[str, str], list[str]]:
    """The `#:` comments of `module`'s attributes, as autodoc reads them."""
    analyzer = ModuleAnalyzer.for_module(module)
    analyzer.analyze()
    return analyzer.attr_docs


def _check_docstrings() -> list[str]:
    """What in evio's public API has no documentation, one line each."""
    problems: list[str] = []
    for name in sorted(PUBLIC):
        obj = getattr(evio, name)
        if inspect.isclass(obj):
            if not obj.__dict__.get("__doc__"):
                problems.append(f"evio.{name} has no docstring")
            problems += _check_class(name, obj)
        elif inspect.isfunction(obj):
            if not obj.__doc__:
                problems.append(f"evio.{name} has no docstring")
        elif not any(("", name) in _attr_docs(m) for m in _submodules()):
            # A typing alias: it needs a `#:` comment where it is defined.
            problems.append(f"evio.{name} (an alias) has no `#:` comment where it is defined")
    return problems


def _submodules() -> list[str]:
    return sorted(f"evio.{p.stem}" for p in Path(evio.__file__).parent.glob("*.py") if p.stem != "__init__")


def _check_class(name: str, cls: type) -> list[str]:
    problems: list[str] = []
    doc = cls.__dict__.get("__doc__")
    comments = _attr_docs(cls.__module__)
    for member, value in vars(cls).items():
        qualname = f"{name}.{member}"
        if member.startswith("_"):
            continue
        if isinstance(cls, enum.EnumMeta) and member in cls.__members__:
            if (cls.__qualname__, member) not in comments:
                problems.append(f"evio.{qualname} (an enum member) has no `#:` comment")
        elif inspect.isfunction(value) or isinstance(value, (property, classmethod, staticmethod)):
            if not inspect.getdoc(value):
                problems.append(f"evio.{qualname} has no docstring")
        elif inspect.isclass(value) or callable(value):
            problems.append(f"evio.{qualname}: a public {type(value).__name__} the docs do not know how to check")
        elif not _mentioned(doc, member) and (cls.__qualname__, member) not in comments:
            # A slot, a dataclass field, a class attribute: described in the class's docstring, or by `#:`.
            problems.append(f"evio.{qualname} is not described in {name}'s docstring (as `{member}`)")
    return problems


def _report_docstrings(app: Sphinx) -> None:
    for problem in _check_docstrings():
        logger.warning("missing documentation: %s", problem, type="evio", subtype="docstring")


def _check_documented(app: Sphinx, env: BuildEnvironment) -> None:
    """Every name in `evio.__all__` is documented on some page."""
    objects = env.get_domain("py").objects  # type: ignore[attr-defined]
    for name in sorted(PUBLIC):
        if f"evio.{name}" not in objects:
            logger.warning("evio.%s is public but no page documents it (docs/api.rst)", name, type="evio")


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_role("code-or-ref", CodeOrRef())
    app.add_directive("program-help", ProgramHelp)
    app.connect("missing-reference", _parameter_not_builtin, priority=400)
    app.connect("missing-reference", _missing_reference, priority=900)
    app.connect("autodoc-process-signature", _no_constructor)
    app.connect("autodoc-process-docstring", _alias_comment)
    app.connect("builder-inited", _report_docstrings)
    app.connect("env-check-consistency", _check_documented)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
