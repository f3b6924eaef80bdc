"""Rules files that extend others: ``extends: default`` and ``catalogue: shipped``.

A site's rules file names what it changes and inherits the rest, so it keeps working
from any folder and picks up new shipped rules on upgrade::

    version: 1
    extends: default          # the shipped rules/default.yaml (or a path, relative to this file)
    rules:
      - id: partner-crawler   # a new rule: goes before the inherited ones (or `after:`/`before:` an id)
        match: {agent: ExampleBot}
        action: allow
      - id: track-sprint      # an inherited id: this rule replaces it, in its place
        ...
      - id: robots-txt
        remove: true          # drops the inherited rule

How the two files combine (:func:`merge`):

* ``rules`` by ``id``, as above; ``paths`` by group name (a known group's patterns are
  replaced in place, a new group goes before the inherited ones: the first group that
  matches a path wins);
* the other sections (``directives``, ``redis``, ``metrics``, ...) key by key;
* anything else (``exempt``, ``verify``, ``shadow``, ...) is replaced when given.

Paths in the inherited file (its catalogue and the :data:`FILE_KEYS`) stay relative to
that file. ``catalogue: shipped`` names the shipped catalogue, whose
``ranges/`` folder (the crawlers' published IP ranges) comes with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from guard.errors import ConfigError
from guard.yamlfile import Located, load_yaml

#: Names a rules file may give to ``extends`` and ``catalogue`` instead of a path.
SHIPPED_RULES = {"default": "default.yaml"}
SHIPPED_CATALOGUE = "shipped"
#: The catalogue a rules file without ``catalogue:`` reads when it sits beside one.
LOCAL_CATALOGUE = "agents.yaml"
#: Sections merged key by key; every other top-level key is replaced when given.
SECTIONS = (
    "reverse_dns",
    "signatures",
    "metrics",
    "log",
    "clients",
    "subnets",
    "memory",
    "redis",
    "directives",
    "consent",
    "sessions",
)
#: (section, key) of the file references a rules file may hold, relative to itself.
FILE_KEYS = (
    ("directives", "merge_robots"),
    ("signatures", "directory"),
    ("consent", "file"),
    ("consent", "licence_key"),
    ("sessions", "key_file"),
)
MAX_DEPTH = 8


_CHECKOUT = Path(__file__).resolve().parent.parent.parent / "rules"


def shipped_dir() -> Path:
    """The folder of the shipped rules, catalogue and ranges (``rules/`` in a checkout, ``guard/shipped`` installed)."""
    if (_CHECKOUT / "default.yaml").exists():
        return _CHECKOUT
    from importlib.resources import files

    return Path(str(files("guard.shipped").joinpath("default.yaml"))).parent  # a namespace package: ask for a file


def catalogue_path(ref: str | None, base_dir: Path) -> Path:
    """The catalogue file a rules file names: ``shipped``, or a path relative to the rules file.

    None (no ``catalogue:``) is ``agents.yaml`` beside the rules file when there is one,
    else the shipped catalogue: a first rules file works from any folder.
    """
    if ref is None:
        beside = base_dir / LOCAL_CATALOGUE
        return beside if beside.exists() else shipped_dir() / LOCAL_CATALOGUE
    return shipped_dir() / LOCAL_CATALOGUE if ref == SHIPPED_CATALOGUE else base_dir / ref


def load_extended(path: str | Path, _depth: int = 0) -> Located:
    """Read a rules file; if it ``extends`` another, the two merged (see the module doc)."""
    doc = load_yaml(path)
    root = doc.data
    if not isinstance(root, dict) or "extends" not in root:
        return doc
    ref = root["extends"]
    line, column = doc.position(root, "extends") or (1, 1)
    if not isinstance(ref, str) or not ref.strip():
        reason = "'extends' names a rules file: default, or a path relative to this file"
        raise ConfigError(doc.file, line, reason, column)
    target = shipped_dir() / SHIPPED_RULES[ref] if ref in SHIPPED_RULES else Path(doc.file).parent / ref
    if _depth >= MAX_DEPTH:
        raise ConfigError(doc.file, line, f"'extends' goes {MAX_DEPTH} files deep: is there a loop?", column)
    try:
        base = load_extended(target, _depth + 1)
    except ConfigError as exc:
        if exc.line is not None:
            raise  # a problem inside the extended file: its own file and line
        raise ConfigError(doc.file, line, f"extends '{ref}': {exc.reason}", column) from None
    return merge(base, doc)


def merge(base: Located, child: Located) -> Located:
    """``child`` applied over ``base``; positions of what the child wrote stay the child's.

    What comes from the base is located at the child's ``extends`` key (its own lines are
    in another file), so a problem the combination makes points there.
    """
    if not isinstance(base.data, dict):
        raise ConfigError(base.file, 1, "a rules file is a mapping (version, paths, rules, ...)", 1)
    root: dict[str, Any] = child.data
    here = child.position(root, "extends", of_key=True) or (1, 1)
    merged = Located(child.file, None)
    merged._marks.update(child._marks)
    base_dir, child_dir = Path(base.file).parent, Path(child.file).parent
    data: dict[str, Any] = {}
    entries: dict[Any, tuple[tuple[int, int], tuple[int, int]]] = {}
    inherited = _rebase_paths(base.data, base_dir, child_dir)
    for key, value in inherited.items():
        if key == "extends":
            continue
        data[key] = value
        entries[key] = (here, here)
    for key, value in root.items():
        if key == "rules" and isinstance(value, list) and isinstance(data.get(key), list):
            data[key] = _merge_rules(data[key], value, child, merged, here)
        elif key == "paths" and isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = _merge_paths(data[key], value, child, merged, here)
        elif key in SECTIONS and isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = _merge_section(data[key], value, child, merged, here)
        else:
            data[key] = value
        entries[key] = child._marks[id(root)][1][key]
    merged._marks[id(data)] = (child.position(root) or (1, 1), entries)
    merged.data = data
    return merged


def _rebase_paths(doc: dict[str, Any], base_dir: Path, child_dir: Path) -> dict[str, Any]:
    """``doc`` with its file references made absolute, so they still name the base's files."""
    out = dict(doc)
    catalogue = out.get("catalogue")
    if catalogue is None or (isinstance(catalogue, str) and catalogue != SHIPPED_CATALOGUE):
        out["catalogue"] = str(catalogue_path(catalogue, base_dir).resolve())
    for section, key in FILE_KEYS:
        value = out.get(section, {}).get(key) if isinstance(out.get(section), dict) else None
        if isinstance(value, str) and value != "upstream":
            out[section] = {**out[section], key: str((base_dir / value).resolve())}
    return out


def _merge_section(base: dict, child: dict, doc: Located, merged: Located, here: Any) -> dict:
    out = {**base, **child}
    own = doc._marks.get(id(child), (here, {}))
    merged._marks[id(out)] = (own[0], {k: own[1].get(k, (here, here)) for k in out})
    return out


def _merge_paths(base: dict, child: dict, doc: Located, merged: Located, here: Any) -> dict:
    """Known groups replaced in place; new groups first, in the child's order."""
    new = {name: patterns for name, patterns in child.items() if name not in base}
    out = {**new, **{name: child.get(name, patterns) for name, patterns in base.items()}}
    own = doc._marks.get(id(child), (here, {}))
    merged._marks[id(out)] = (own[0], {k: own[1].get(k, (here, here)) for k in out})
    return out


def _merge_rules(base: list, child: list, doc: Located, merged: Located, here: Any) -> list:
    """Rules by id: replace in place, remove, or insert (first, or ``after``/``before`` an id)."""
    rules: list[Any] = list(base)
    origin: dict[int, tuple[Any, Any]] = {id(rule): (here, here) for rule in rules}
    child_marks = doc._marks.get(id(child), (here, {}))[1]
    inserted = 0
    for i, rule in enumerate(child):
        position = child_marks.get(i, (here, here))
        if not isinstance(rule, dict) or not isinstance(rule.get("id"), str):
            rules.insert(inserted, rule)  # the model says what is wrong with it
            inserted += 1
            origin[id(rule)] = position
            continue
        ids = [r.get("id") if isinstance(r, dict) else None for r in rules]
        rule_id = rule["id"]
        anchor = rule.get("after") or rule.get("before")
        if rule.get("remove") is True:
            if rule_id not in ids:
                raise doc.error(rule, "remove", f"rule '{rule_id}': no inherited rule with this id to remove")
            del rules[ids.index(rule_id)]
            continue
        if anchor is not None:
            if rule_id in ids:
                del rules[ids.index(rule_id)]
                ids.remove(rule_id)
            if anchor not in ids:
                key = "after" if rule.get("after") else "before"
                raise doc.error(rule, key, f"rule '{rule_id}': no rule '{anchor}' to put it {key}")
            rules.insert(ids.index(anchor) + (1 if rule.get("after") else 0), rule)
        elif rule_id in ids:
            rules[ids.index(rule_id)] = rule
        else:
            rules.insert(inserted, rule)
            inserted += 1
        origin[id(rule)] = position
    merged._marks[id(rules)] = (doc.position(child) or here, {i: origin[id(r)] for i, r in enumerate(rules)})
    return rules
