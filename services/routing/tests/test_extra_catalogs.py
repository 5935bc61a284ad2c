"""The operator's own catalog files (ROUTING_EXTRA_CATALOGS): merged with the bundled catalog,
refused at start-up with the file and the entry named."""

from __future__ import annotations

from pathlib import Path

import pytest

from routing.catalog import Catalog, CatalogError

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "deploy/selfhosted/catalog.yaml"

GOOD = """
defaults: {owned_by: me}
models:
  - id: my-sdxl
    providers: [comfyui]
    sizes: [1024x1024]
    default_size: 1024x1024
    eta_seconds: 5
"""


def write(tmp_path: Path, text: str, name: str = "mine.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_example_file_adds_its_models_with_the_bundled_defaults() -> None:
    catalog = Catalog.load({"comfyui", "local"}, extra=(EXAMPLE,))
    entry = catalog.get("sdxl-selfhosted")
    assert entry.owned_by == "self-hosted" and entry.providers[0] == "comfyui"
    assert entry.max_prompt_chars == 4000 and entry.output_formats == ["png", "webp", "jpeg"]  # bundled defaults
    assert catalog.get("pixelmesh-sketch").id == "pixelmesh-sketch"


def test_an_extra_model_is_served_only_with_its_pool() -> None:
    assert "sdxl-selfhosted" not in {e.id for e in Catalog.load({"local"}, extra=(EXAMPLE,)).available()}


def test_several_files_are_merged(tmp_path) -> None:
    second = write(tmp_path, GOOD.replace("my-sdxl", "my-flux"), "second.yaml")
    catalog = Catalog.load({"comfyui"}, extra=(write(tmp_path, GOOD), second))
    assert {catalog.get("my-sdxl").id, catalog.get("my-flux").id} == {"my-sdxl", "my-flux"}


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (
            GOOD.replace("default_size: 1024x1024", "default_size: 512x512"),
            "models[0] ('my-sdxl'): Value error, my-sdxl: default_size '512x512' not in sizes",
        ),
        (GOOD.replace("    sizes: [1024x1024]\n", ""), "models[0] ('my-sdxl'): sizes: Field required"),
        (GOOD.replace("    providers: [comfyui]\n", "    providers: []\n"), "models[0] ('my-sdxl'): providers:"),
        (GOOD + "    steps: 30\n", "models[0] ('my-sdxl'): steps: Extra inputs are not permitted"),
        (GOOD.replace("id: my-sdxl", "id: dall-e-3"), "model name 'dall-e-3' defined twice"),
        (
            GOOD.replace("id: my-sdxl", "id: my-sdxl\n    aliases: [nano-banana]"),
            "model name 'nano-banana' defined twice",
        ),
        (GOOD.replace("defaults:", "default_model: my-sdxl\ndefaults:"), "an extra catalog has `models`"),
        ("models: {my-sdxl: {}}\n", "an extra catalog has `models` (a list)"),
        ("models:\n  - just-a-name\n", "models[0] ('?'): is not a mapping"),
        ("models: [\n", "cannot be read as YAML"),
    ],
)
def test_a_bad_entry_is_refused_naming_it(tmp_path, text, named) -> None:
    path = write(tmp_path, text)
    with pytest.raises(CatalogError) as exc:
        Catalog.load({"comfyui"}, extra=(path,))
    assert str(path) in str(exc.value) and named in str(exc.value), str(exc.value)


def test_a_missing_file_is_refused(tmp_path) -> None:
    with pytest.raises(CatalogError, match="absent.yaml: cannot be read"):
        Catalog.load({"comfyui"}, extra=(tmp_path / "absent.yaml",))
