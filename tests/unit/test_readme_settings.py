"""The README's settings table documents every setting, and only settings."""

import re
import types
import typing
from pathlib import Path

from pydantic import BaseModel

from openanomaly.settings import Settings

README = Path(__file__).parents[2] / "README.md"


def _env_names(model: type[BaseModel], prefix: str = "OA_") -> set[str]:
    """``OA_TSDB__TLS__VERIFY``... for every leaf field, the way ``openanomaly settings`` nests."""
    names = set()
    for name, field in model.model_fields.items():
        env = prefix + name.upper()
        args = typing.get_args(field.annotation) or (field.annotation,)
        sections = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if sections and not isinstance(field.annotation, types.UnionType):
            names |= _env_names(sections[0], env + "__")
        else:
            names.add(env)
    return names


def _documented() -> set[str]:
    """The names in the Settings table; ``__PORT`` after ``OA_API__HOST`` is ``OA_API__PORT``."""
    section = README.read_text().split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    names = set()
    for row in (line for line in section.splitlines() if line.startswith("| `")):
        first_cell = row.split(" | ")[0]
        prefix = ""
        for name in re.findall(r"`([A-Z0-9_]+)`", first_cell):
            if name.startswith("OA_"):
                prefix = name.rsplit("__", 1)[0] if "__" in name else "OA_"
                names.add(name)
            else:
                names.add(prefix + name if prefix != "OA_" else "OA" + name)
    return names


def test_the_table_walks_nested_sections() -> None:
    names = _env_names(Settings)
    assert {"OA_TSDB__TLS__VERIFY", "OA_API__TOKEN", "OA_WORKERS", "OA_TSDB__HEADERS"} <= names
    assert "OA_TSDB" not in names and "OA_TSDB__TLS" not in names


def test_every_setting_is_in_the_readme_table() -> None:
    documented, settings = _documented(), _env_names(Settings)
    assert sorted(settings - documented) == []
    assert sorted(documented - settings) == []
    shown = Settings().describe()
    assert {f"OA_{k.upper()}" for k in shown} <= {n.split("__")[0] for n in settings}
