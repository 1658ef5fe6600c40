"""Collects the outcome of named checks and prints them."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field


@dataclass
class Outcome:
    """The result of one named check: passed, failed with problems, or skipped."""

    name: str
    status: str
    details: list[str] = field(default_factory=list)


class Report:
    """Ordered outcomes of named checks, each printed as it arrives unless quiet."""

    def __init__(self, quiet: bool = False) -> None:
        self.outcomes: list[Outcome] = []
        self.quiet = quiet

    def result(self, name: str, problems: list[str]) -> None:
        """Record a check that passed when `problems` is empty and failed otherwise."""
        status = "FAIL" if problems else "PASS"
        self._add(Outcome(name, status, list(problems)))

    def skip(self, name: str, reason: str) -> None:
        self._add(Outcome(name, "SKIP", [reason]))

    def _add(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        if self.quiet:
            return
        line = f"{outcome.status} {outcome.name}"
        if outcome.status == "SKIP":
            line += f" ({outcome.details[0]})"
        print(line)
        if outcome.status == "FAIL":
            for detail in outcome.details:
                print(f"    {detail}")
        sys.stdout.flush()

    def count(self, status: str) -> int:
        return sum(1 for outcome in self.outcomes if outcome.status == status)

    def failed_names(self) -> list[str]:
        return [outcome.name for outcome in self.outcomes if outcome.status == "FAIL"]

    def summary(self) -> str:
        return (
            f"{self.count('PASS')} passed, {self.count('FAIL')} failed, "
            f"{self.count('SKIP')} skipped"
        )
