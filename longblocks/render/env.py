"""The sandboxed jinja2 environment and where templates live.

Templates sit in the repository's top-level `templates/` folder; a built wheel carries them
as `longblocks/_templates`. Every template is rendered with `StrictUndefined`, so a missing
variable is an error instead of an empty string in the data.
"""

from functools import cache
from pathlib import Path

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

_PACKAGE = Path(__file__).resolve().parents[1]


def find_folder(name: str) -> Path:
    """A top-level project folder (templates, schemas, data_cards), in a checkout or a wheel."""
    for candidate in (_PACKAGE / f"_{name}", _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"cannot find the {name}/ folder next to {_PACKAGE}")


TEMPLATES_DIR = find_folder("templates")


@cache
def environment() -> SandboxedEnvironment:
    """One shared environment: templates compile once per process."""
    return SandboxedEnvironment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(name: str, **variables) -> str:
    """Render one template file, e.g. `render("en/prompt.jinja", question=...)`."""
    return environment().get_template(name).render(**variables)
