"""Branch expressions for workflow files: a small registry, parsed, never ``eval``-ed.

A field in a workflow's ``branches:`` mapping is either a branch name or a call of a
registered function on branch names, numbers and other calls, for example::

    branches:
      part_pt: pt(Jet_Px, Jet_Py)
      part_eta: eta(Jet_Px, Jet_Py, Jet_Pz)
      mu_pt: pt1

The functions work element-wise on numpy and awkward arrays alike (jagged included).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import awkward as ak
import numpy as np

from hepml.errors import ConfigError, closest

__all__ = ["FUNCTIONS", "Expression", "parse", "register", "wrap_phi"]


def wrap_phi(phi: Any) -> Any:
    """Angles (or differences of angles) mapped into [-π, π): ``(φ + π) mod 2π - π``.

    The one φ wrapping of hepml, for numpy, awkward (jagged included) and torch alike:
    ``%`` is each library's floored remainder (``np.remainder``, ``torch.remainder``), so
    the result has the input's type and dtype. The hit representations keep another
    formula, :func:`hepml.representations.hits.wrap_phi`: it returns an angle that is
    already inside exactly, where ``(φ + π) - π`` here rounds, and tracking results
    depend on those last bits.
    """
    return (phi + np.pi) % (2 * np.pi) - np.pi


# The kinematics below are written out rather than taken from scikit-hep ``vector``
# (``vector.zip({"px": ..., ...}).pt`` etc.), because vector does not give the same numbers.
# On the shipped jets (data_samples/top_qcd_jets.root, float32): its pt is
# sqrt(x**2 + y**2) where this is hypot, and differs in 17 % of the constituents, its eta
# in 11 % (1 to 3 ulp); its energy from (pt, eta, phi, mass) differs in half of them, by up
# to 5e-7 relative (2e-7 in float64), because it reads a negative mass as spacelike
# (E**2 = p**2 - m**2) where this adds m**2, and 23 % of the constituents have a slightly
# negative mass**2 from rounding; its eta is 0 where pT = pz = 0 (nan here). Its phi, p,
# mass, px, py and pz agree bit for bit.


def _pt(px, py):
    return np.hypot(px, py)


def _p(px, py, pz):
    return np.sqrt(px * px + py * py + pz * pz)


def _eta(px, py, pz):
    return np.arcsinh(pz / np.hypot(px, py))


def _phi(px, py):
    return np.arctan2(py, px)


def _mass(px, py, pz, e):
    m2 = e * e - (px * px + py * py + pz * pz)
    return np.sign(m2) * np.sqrt(np.abs(m2))


def _px(pt, phi):
    return pt * np.cos(phi)


def _py(pt, phi):
    return pt * np.sin(phi)


def _pz(pt, eta):
    return pt * np.sinh(eta)


def _energy(pt, eta, phi, m):
    return np.sqrt((pt * np.cosh(eta)) ** 2 + m * m)


def _delta_phi(a, b):
    return wrap_phi(a - b)


def _float32(a):
    return ak.values_astype(a, np.float32) if isinstance(a, ak.Array) else np.asarray(a, np.float32)


#: Name -> (function, number of arguments). Extend with :func:`register`.
FUNCTIONS: dict[str, tuple[Callable[..., Any], int]] = {
    "pt": (_pt, 2),
    "p": (_p, 3),
    "eta": (_eta, 3),
    "phi": (_phi, 2),
    "mass": (_mass, 4),
    "px": (_px, 2),
    "py": (_py, 2),
    "pz": (_pz, 2),
    "energy": (_energy, 4),
    "delta_phi": (_delta_phi, 2),
    "add": (lambda a, b: a + b, 2),
    "sub": (lambda a, b: a - b, 2),
    "mul": (lambda a, b: a * b, 2),
    "div": (lambda a, b: a / b, 2),
    "neg": (lambda a: -a, 1),
    "abs": (np.abs, 1),
    "log": (np.log, 1),
    "exp": (np.exp, 1),
    "sqrt": (np.sqrt, 1),
    "float32": (lambda a: _float32(a), 1),
    "gt": (lambda a, b: _float32(a > b), 2),  # 1.0 where a > b, else 0.0 (e.g. a b-tag cut)
    "lt": (lambda a, b: _float32(a < b), 2),
}


def register(name: str, function: Callable[..., Any], n_args: int) -> None:
    """Add a function to the expression registry."""
    if not re.fullmatch(r"[A-Za-z_]\w*", name):
        raise ConfigError(f"expression function name {name!r} is not an identifier")
    FUNCTIONS[name] = (function, n_args)


@dataclass(frozen=True)
class Expression:
    """A parsed expression: a branch, a number, or a registered function applied to those."""

    op: str  # "branch", "number" or a function name
    args: tuple[Any, ...]
    text: str = ""

    @property
    def branches(self) -> set[str]:
        """Every branch the expression reads."""
        if self.op == "branch":
            return {self.args[0]}
        if self.op == "number":
            return set()
        out: set[str] = set()
        for a in self.args:
            out |= a.branches
        return out

    def evaluate(self, arrays: Mapping[str, Any]) -> Any:
        """Compute the expression from a mapping of branch name -> array."""
        if self.op == "branch":
            return arrays[self.args[0]]
        if self.op == "number":
            return self.args[0]
        function, _ = FUNCTIONS[self.op]
        return function(*(a.evaluate(arrays) for a in self.args))


_TOKEN = re.compile(r"\s*(?:(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|"
                    r"(?P<name>[A-Za-z_][\w.]*)|(?P<punct>[(),]))")


def parse(text: str, *, where: str = "branches") -> Expression:
    """Parse an expression string; raise :class:`ConfigError` naming the problem."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    text_stripped = text.strip()
    while pos < len(text_stripped):
        m = _TOKEN.match(text_stripped, pos)
        if not m or m.end() == pos:
            raise ConfigError(f"{where}: cannot parse {text!r} at {text_stripped[pos:]!r}")
        kind = m.lastgroup
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    if not tokens:
        raise ConfigError(f"{where}: empty expression")
    expr, rest = _parse(tokens, text, where)
    if rest:
        raise ConfigError(f"{where}: unexpected {rest[0][1]!r} in {text!r}")
    return expr


def _parse(tokens, text, where):
    kind, value = tokens[0]
    if kind == "number":
        return Expression("number", (float(value),), value), tokens[1:]
    if kind != "name":
        raise ConfigError(f"{where}: unexpected {value!r} in {text!r}")
    if len(tokens) > 1 and tokens[1] == ("punct", "("):
        if value not in FUNCTIONS:
            hint = closest(value, FUNCTIONS)
            sug = f" Did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(
                f"{where}: unknown function {value!r} in {text!r}.{sug} "
                f"Known: {', '.join(sorted(FUNCTIONS))}"
            )
        args = []
        rest = tokens[2:]
        while True:
            if not rest:
                raise ConfigError(f"{where}: missing ')' in {text!r}")
            if rest[0] == ("punct", ")") and not args:
                rest = rest[1:]
                break
            arg, rest = _parse(rest, text, where)
            args.append(arg)
            if rest and rest[0] == ("punct", ","):
                rest = rest[1:]
                continue
            if rest and rest[0] == ("punct", ")"):
                rest = rest[1:]
                break
            raise ConfigError(f"{where}: expected ',' or ')' in {text!r}")
        n_args = FUNCTIONS[value][1]
        if len(args) != n_args:
            raise ConfigError(f"{where}: {value}() takes {n_args} arguments, "
                              f"got {len(args)} in {text!r}")
        return Expression(value, tuple(args), text), rest
    return Expression("branch", (value,), value), tokens[1:]
