"""Matching of .dockerignore patterns, to tell which paths reach the Docker build context."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Rule:
    pattern: re.Pattern[str]
    negated: bool
    text: str


def translate(pattern: str) -> re.Pattern[str]:
    """Translate a .dockerignore pattern to a regular expression.

    Follows Go's filepath.Match as Docker extends it: `*` and `?` stay within
    one path segment, `**` spans any number of segments, and `[...]` is a
    character class.
    """
    parts: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**", index):
            index += 2
            if pattern.startswith("/", index):
                index += 1
                parts.append("(?:.*/)?")
            else:
                parts.append(".*")
            continue
        if char == "*":
            parts.append("[^/]*")
        elif char == "?":
            parts.append("[^/]")
        elif char == "[":
            end = pattern.find("]", index)
            if end == -1:
                parts.append(re.escape(char))
            else:
                body = pattern[index + 1 : end].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                parts.append(f"[{body}]")
                index = end
        elif char == "\\" and index + 1 < len(pattern):
            index += 1
            parts.append(re.escape(pattern[index]))
        else:
            parts.append(re.escape(char))
        index += 1
    return re.compile("^" + "".join(parts) + "$")


def clean(pattern: str) -> str:
    """Normalise a pattern as Docker does: no leading or trailing slash, no ./ segments."""
    pattern = pattern.strip()
    while pattern.startswith("./"):
        pattern = pattern[2:]
    return pattern.strip("/")


def load_rules(path: Path) -> list[Rule]:
    rules: list[Rule] = []
    if not path.is_file():
        return rules
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        negated = text.startswith("!")
        pattern = clean(text[1:] if negated else text)
        if pattern:
            rules.append(Rule(translate(pattern), negated, text))
    return rules


def is_excluded(path: str, rules: list[Rule]) -> bool:
    """Decide whether `path` (relative, with /) stays out of the build context.

    The last rule that matches the path, or one of its parent folders, wins,
    and `!` rules bring a path back in.
    """
    segments = path.strip("/").split("/")
    candidates = ["/".join(segments[: count + 1]) for count in range(len(segments))]
    excluded = False
    for rule in rules:
        if any(rule.pattern.match(candidate) for candidate in candidates):
            excluded = not rule.negated
    return excluded
