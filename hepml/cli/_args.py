"""Option types and parsers that several subcommands share, checked before any work."""

from __future__ import annotations

import argparse

import yaml

from hepml.errors import ConfigError

__all__ = ["positive_int", "positive_float", "parse_branches"]


def positive_int(text: str) -> int:
    """An ``argparse`` type: an integer >= 1 (a bad value is a usage error, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """An ``argparse`` type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _split_top_level(text: str) -> list[str]:
    """``text`` split at the commas outside brackets and quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def parse_branches(text: str | None, option: str = "--branches") -> dict[str, str] | None:
    """A branch mapping given on the command line: our field -> branch or expression.

    Written as a flow mapping, ``'{part_px: PF_px, jet_pt: pt(J_px, J_py)}'``: the items
    are split at the commas outside parentheses (YAML would split ``pt(J_px, J_py)``),
    each at its first ``": "`` (or ``":"``), so that expressions and names with ``:``
    stay whole. Anything else is read as YAML and must be a mapping of strings.

    Raises:
        ConfigError: The text is not such a mapping (one line, before any work).
    """
    if text is None:
        return None
    body = text.strip()
    if body.startswith("{") and body.endswith("}"):
        out: dict[str, str] = {}
        for item in _split_top_level(body[1:-1]):
            key, sep, value = item.partition(": ")
            if not sep:
                key, sep, value = item.partition(":")
            key, value = key.strip().strip("'\""), value.strip().strip("'\"")
            if not sep or not key or not value:
                raise ConfigError(f"{option}: {item!r} is not 'field: branch'; write the "
                                  "mapping as '{field: branch, field: expression, ...}'")
            out[key] = value
        return out
    try:
        data = yaml.safe_load(body)
    except yaml.YAMLError as exc:
        problem = str(getattr(exc, "problem", None) or exc).splitlines()[0]
        raise ConfigError(f"{option}: not valid YAML ({problem}); write the mapping as "
                          "'{field: branch, field: expression, ...}'") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in data.items()):
        raise ConfigError(f"{option}: expected a mapping of field names to branches or "
                          f"expressions, e.g. '{{part_px: PF_px}}', got {text!r}")
    return data
