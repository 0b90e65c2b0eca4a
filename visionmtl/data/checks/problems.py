"""What a data check reports: :class:`Problem` (one finding) and :class:`CheckReport` (all of them)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# The whole file is unusable with these, whatever the policy.
FATAL_CODES: frozenset[str] = frozenset({"bad-structure", "no-categories"})


@dataclass(frozen=True)
class Problem:
    """One finding. ``entity`` ("dataset"|"category"|"image"|"annotation") and ``index`` (position
    in that JSON list) locate it even when ids are missing or duplicated; ``action`` says what a
    policy did about it ("" before cleaning)."""

    severity: str  # "error" | "warning" | "info"
    code: str
    message: str
    annotation_id: int | None = None
    image_id: int | None = None
    file_name: str | None = None
    fix_hint: str = ""
    field: str = ""
    entity: str = "dataset"
    index: int | None = None
    action: str = ""

    @property
    def where(self) -> str:
        """``annotation 7 (image 10, a.png)``, ``image 10 (a.png)``, ``category 3`` or ``top level``."""
        image = " ".join(
            str(part) for part in (self.image_id, self.file_name and f"({self.file_name})") if part
        )
        if self.entity == "annotation":
            name = self.annotation_id if self.annotation_id is not None else f"#{self.index}"
            return f"annotation {name}" + (f" (image {image})" if image else "")
        if self.entity == "image":
            return f"image {image or f'#{self.index}'}"
        if self.entity == "category":
            return f"category #{self.index}"
        return "top level"

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields."""
        return asdict(self)


@dataclass
class CheckReport:
    """All problems found in one annotation file, with counts and text/JSON renderings."""

    ann_file: Path
    problems: list[Problem] = field(default_factory=list)
    num_images: int = 0
    num_annotations: int = 0
    num_categories: int = 0

    @property
    def counts(self) -> dict[str, int]:
        """Number of problems per code, most frequent first."""
        return dict(Counter(problem.code for problem in self.problems).most_common())

    @property
    def errors(self) -> list[Problem]:
        return [problem for problem in self.problems if problem.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [problem for problem in self.problems if problem.severity == "warning"]

    @property
    def fatal(self) -> list[Problem]:
        """Problems that make the whole file unusable (no policy can repair them)."""
        return [problem for problem in self.problems if problem.code in FATAL_CODES]

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings and info are allowed)."""
        return not self.errors

    def summary(self) -> str:
        """One line: ``ann.json: 2 errors, 1 warning, 3 info in 5 images, 9 annotations (codes)``."""
        severities = Counter(problem.severity for problem in self.problems)
        codes = ", ".join(f"{code} {count}" for code, count in self.counts.items())
        return (
            f"{self.ann_file}: {severities['error']} error(s), {severities['warning']} warning(s), "
            f"{severities['info']} info in {self.num_images} images, {self.num_annotations} "
            f"annotations, {self.num_categories} categories" + (f" ({codes})" if codes else "")
        )

    def to_text(self) -> str:
        """Every problem, grouped by code (errors first), each with its fix hint; then the summary."""
        rank = {"error": 0, "warning": 1, "info": 2}
        by_code: dict[str, list[Problem]] = {}
        for problem in sorted(self.problems, key=lambda p: rank.get(p.severity, 3)):
            by_code.setdefault(problem.code, []).append(problem)
        lines = []
        for code, problems in by_code.items():
            lines.append(f"[{problems[0].severity}] {code} ({len(problems)})")
            for problem in problems:
                hint = f"  -> {problem.fix_hint}" if problem.fix_hint else ""
                action = f"  [{problem.action}]" if problem.action else ""
                lines.append(f"  {problem}{hint}{action}")
        return "\n".join([*lines, self.summary()])

    def to_json(self) -> str:
        """The report as a JSON document (``summary``, ``counts`` and ``problems``)."""
        document = {
            "ann_file": str(self.ann_file),
            "ok": self.ok,
            "summary": self.summary(),
            "counts": self.counts,
            "problems": [problem.to_dict() for problem in self.problems],
        }
        return json.dumps(document, indent=2, allow_nan=False)
