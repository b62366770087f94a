"""Question and rephrase templates per relation: the YAML kedit ships (``templates.yaml`` beside this
module) with any number of override files on top, relation by relation.

A relation's entry::

    has phenotype:
      question: ["What is a clinical feature of {subject}?"]
      rephrase: ["Which phenotypic abnormality is seen in patients with {subject}?", ...]

Relation names match case-insensitively, with ``_`` and runs of spaces alike (``has_phenotype`` is
``Has phenotype``). A template must hold ``{subject}`` exactly once and no other brace. A malformed
entry is an error naming the file, line and field; asking for a relation no file has a template
for is an error naming the relation, the files searched and the fix, unless a ``fallback`` template
(``"What is the {relation} of {subject}?"``, the reference code's) is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kedit.errors import DataError

SHIPPED = Path(__file__).with_name("templates.yaml")
SUBJECT = "{subject}"
RELATION = "{relation}"
PAPER_FALLBACK = "What is the {relation} of {subject}?"


def relation_key(name: str) -> str:
    """The form relation names are matched in."""
    return " ".join(name.replace("_", " ").casefold().split())


def _check(template: str, where: str, allow_relation: bool = False) -> str:
    if not isinstance(template, str) or not template.strip():
        raise DataError(f"{where}: a template must be a non-empty string, got {template!r}")
    rest = template.replace(RELATION, "") if allow_relation else template
    if rest.count(SUBJECT) != 1:
        raise DataError(f"{where}: template {template!r} must contain {SUBJECT} exactly once")
    if "{" in rest.replace(SUBJECT, "") or "}" in rest.replace(SUBJECT, ""):
        raise DataError(f"{where}: template {template!r} has a brace besides {SUBJECT}")
    return template.strip()


@dataclass(frozen=True)
class RelationTemplates:
    """A relation's question templates (the first is the case prompt) and rephrase templates."""

    relation: str
    questions: tuple[str, ...]
    rephrases: tuple[str, ...]
    source: str

    def prompt(self) -> str:
        """The first question with ``{}`` for the subject (the form :class:`~kedit.requests.EditRequest` takes)."""
        return self.questions[0].replace(SUBJECT, "{}")

    def rephrase_prompts(self) -> tuple[str, ...]:
        """Rephrases (then the other question templates), each with ``{}`` for the subject."""
        return tuple(t.replace(SUBJECT, "{}") for t in dict.fromkeys((*self.rephrases, *self.questions[1:])))

    def question(self, subject: str) -> str:
        return self.questions[0].replace(SUBJECT, subject)


@dataclass(frozen=True)
class TemplateBook:
    """Templates by relation key, the files they were read from, and an optional fallback."""

    by_key: Mapping[str, RelationTemplates]
    files: tuple[str, ...]
    fallback: str | None = None

    def require(self, relation: str, where: str = "") -> RelationTemplates:
        """The templates of ``relation``; a DataError naming the fix when there are none."""
        found = self.by_key.get(relation_key(relation))
        if found is not None:
            return found
        if self.fallback is not None:
            question = self.fallback.replace(RELATION, relation.casefold())
            return RelationTemplates(relation, (question,), (), "fallback")
        origin = f" (first triple: {where})" if where else ""
        raise DataError(f"no question template for relation {relation!r}{origin} in {', '.join(self.files)}; "
                        f"add it to a YAML file given with --templates, or leave the relation out with "
                        f"--drop-relation {relation!r}")

    def overrides(self) -> tuple[str, ...]:
        """Relation keys that come from a file other than the shipped one."""
        return tuple(key for key, entry in self.by_key.items() if not entry.source.startswith(SHIPPED.name))


def _read(path: Path) -> dict[str, RelationTemplates]:
    import yaml

    if not path.is_file():
        raise DataError(f"--templates {path}: no such file")
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise DataError(f"{path}{line}: not valid YAML ({getattr(error, 'problem', error)})") from None
    if root is None:
        return {}
    if not isinstance(root, yaml.MappingNode):
        raise DataError(f"{path}:{root.start_mark.line + 1}: the file must map relation names to their templates")
    entries: dict[str, RelationTemplates] = {}
    for key_node, value_node in root.value:
        where = f"{path.name}:{key_node.start_mark.line + 1}"
        relation = str(key_node.value)
        if not isinstance(value_node, yaml.MappingNode):
            raise DataError(f"{where}: relation {relation!r} must map 'question' (and 'rephrase') to lists of templates")
        fields: dict[str, tuple[str, ...]] = {}
        for field_node, list_node in value_node.value:
            field = str(field_node.value)
            field_where = f"{path.name}:{field_node.start_mark.line + 1}"
            if field not in {"question", "rephrase"}:
                raise DataError(f"{field_where}: relation {relation!r}: unknown field {field!r} (use 'question', 'rephrase')")
            items = list_node.value if isinstance(list_node, yaml.SequenceNode) else [list_node]
            fields[field] = tuple(_check(item.value, f"{path.name}:{item.start_mark.line + 1}: {relation} {field}")
                                  for item in items)
        if not fields.get("question"):
            raise DataError(f"{where}: relation {relation!r} has no 'question' template")
        entries[relation_key(relation)] = RelationTemplates(relation, fields["question"], fields.get("rephrase", ()), where)
    return entries


def load_templates(overrides: Sequence[Path] = (), fallback: str | None = None) -> TemplateBook:
    """The shipped templates, then each file of ``overrides`` on top (later files win per relation)."""
    by_key = _read(SHIPPED)
    for path in overrides:
        by_key.update(_read(Path(path)))
    if fallback is not None:
        _check(fallback, "--fallback-template", allow_relation=True)
    return TemplateBook(by_key=by_key, files=(SHIPPED.name, *(str(path) for path in overrides)), fallback=fallback)
