"""Redact secret-looking values before anything recorded leaves the process.

Two kinds of patterns, both extendable in settings (``redact_names``, ``redact_values``):

* **names**: a param, dict key, keyword or assignment whose name has a secret word among its
  snake/camel-case parts (``password``, ``api_key``, ``awsSecretAccessKey``, ``DB_TOKEN``...)
  has its whole value replaced.
* **values**: well-known credential formats are replaced wherever they appear (only the
  secret part): passwords in URLs (``postgresql://scott:***redacted***@db/prod``), AWS, GitHub,
  Slack, Stripe, OpenAI and Google keys, JWTs, PEM private keys, ``Bearer`` tokens.

The values a run's params held under secret names are also replaced in its error message and
traceback, where no pattern could tell them apart.

Hand-written rather than a secret-scanning library: those (detect-secrets, trufflehog) report
findings in files, while nbmlops needs to rewrite short values and code in place, keeping
everything else exactly as written.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any

MARKER = "***redacted***"
MIN_KNOWN_CHARS = 4  # shorter values of secret params are too common to replace in free text

# A name is secret when one of its parts (split on _ - . and camelCase) is one of these...
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "secrets",
        "token",
        "apikey",
        "accesskey",
        "secretkey",
        "privatekey",
        "credential",
        "credentials",
        "cred",
        "creds",
        "auth",
        "authorization",
        "cookie",
        "cookies",
        "sessionid",
    }
)
# ...or two consecutive parts form one of these...
_SECRET_PAIRS = frozenset(
    {
        ("api", "key"),
        ("access", "key"),
        ("private", "key"),
        ("secret", "key"),
        ("signing", "key"),
        ("encryption", "key"),
        ("session", "key"),
        ("session", "id"),
        ("client", "secret"),
        ("pass", "word"),
    }
)
# ...unless another part says the value describes the secret rather than holds it
# (``password_min_length = 8``, ``token_url``, ``max_tokens``, a tokenizer's ``pad_token``).
_DESCRIBING_WORDS = frozenset(
    {
        "url",
        "uri",
        "endpoint",
        "file",
        "path",
        "dir",
        "name",
        "method",
        "type",
        "mode",
        "enabled",
        "required",
        "len",
        "length",
        "count",
        "size",
        "max",
        "min",
        "num",
        "n",
        "limit",
        "ttl",
        "timeout",
        "expiry",
        "expires",
        "prefix",
        "env",
        "var",
    }
)
_TOKENIZER_WORDS = frozenset(
    {"pad", "eos", "bos", "unk", "sep", "cls", "mask", "special", "start", "end", "vocab", "id"}
)
# Values that say a secret is absent or switched, never a secret themselves.
_NOT_SECRETS = frozenset({"", "none", "null", "true", "false", "yes", "no", "off", "on"})
_PARTS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")

# Well-known credential formats; a group named ``secret`` is what gets replaced, else the match.
_VALUE_PATTERNS = [
    # userinfo password of any URL: scheme://user:PASSWORD@host
    r"\b[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s'\"]*:(?P<secret>[^@/?#\s'\"]+)@",
    r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA)[A-Z0-9]{16}\b",
    r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}\b",
    r"\bgithub_pat_[A-Za-z0-9_]{22,}",
    r"\bglpat-[A-Za-z0-9_-]{20,}",
    r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
    r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}",
    r"\bsk-[A-Za-z0-9_-]{20,}",
    r"\bAIza[0-9A-Za-z_-]{35}",
    r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
    r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----(?:[\s\S]*?-----END[A-Z0-9 ]*PRIVATE KEY-----"
    r"|[^'\"]*)",
    r"(?i)\b(?:bearer|basic)\s+(?P<secret>[A-Za-z0-9._~+/=-]{8,})",
]

_STRING = r"""[rRbBuUfF]{0,2}(?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')"""
# ``name = value``, ``name: value``, ``"name": value``, ``env["NAME"] = value``, ``name=value``
_KEY = r"""(?<![\w.])(?P<q>["']?)(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)(?P=q)\]?"""
_CODE_PAIR = re.compile(
    _KEY + r"(?P<op>\s*(?::\s*[\w.\[\], ]+?\s*)?=(?!=)\s*|\s*:\s*)"
    r"(?P<value>(?P<string>" + _STRING + r")|-?\d[\d_.eE+-]*\b)"
)
# ``log_param("db_password", "...")``, ``os.getenv("API_TOKEN", "...")``: a call's last two
# arguments (a list ``["token", "x"]`` is not a pair)
_CODE_ARG = re.compile(
    r"""(?P<q>["'])(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)(?P=q)(?P<op>\s*,\s*)"""
    r"(?P<value>(?P<string>" + _STRING + r"))(?=\s*\))"
)
_TEXT_PAIR = re.compile(
    _KEY + r"(?P<op>\s*[=:]\s*)"
    r"(?P<value>(?P<string>" + _STRING + r")|(?:(?:bearer|basic)\s+)?[^\s,;&'\"()\[\]{}<>]+)",
    re.IGNORECASE,
)
_STRING_RE = re.compile(_STRING)


def _compile(patterns: Iterable[str], flags: int = 0) -> list[re.Pattern[str]]:
    return [re.compile(p, flags) for p in patterns]


class Redactor:
    """Applies the built-in patterns plus the extra ``names`` and ``values`` regexes."""

    def __init__(
        self, names: Iterable[str] = (), values: Iterable[str] = (), known: Iterable[str] = ()
    ):
        self._names, self._extra_values = tuple(names), tuple(values)
        self._extra_names = _compile(self._names, re.IGNORECASE)
        self._values = _compile(_VALUE_PATTERNS) + _compile(self._extra_values)
        # longest first, so a known value that contains another is replaced whole
        known = sorted(set(known), key=len, reverse=True)
        if known:
            self._values.append(re.compile("|".join(re.escape(v) for v in known)))

    def knowing(self, params: dict[str, str]) -> Redactor:
        """This redactor, also replacing the values of ``params`` under secret names wherever
        they appear (an error message that quotes the password of a cell's params)."""
        known = {
            v
            for k, v in params.items()
            if isinstance(v, str) and len(v) >= MIN_KNOWN_CHARS and v != MARKER
            if self.is_secret_name(k) and v.lower() not in _NOT_SECRETS
        }
        return Redactor(self._names, self._extra_values, known) if known else self

    # --- names ------------------------------------------------------------------------------
    def is_secret_name(self, name: str) -> bool:
        """True when ``name`` looks like it holds a secret (``DB_PASSWORD``, ``apiKey``)."""
        if any(p.search(name) for p in self._extra_names):
            return True
        parts = [p.lower() for p in _PARTS.findall(name)]
        hit = None
        for i, part in enumerate(parts):
            if part in _SECRET_WORDS or (i and (parts[i - 1], part) in _SECRET_PAIRS):
                hit = part
        if hit is None:
            return False
        others = set(parts) - {hit}
        return not (others & _DESCRIBING_WORDS or (hit == "token" and others & _TOKENIZER_WORDS))

    # --- values -----------------------------------------------------------------------------
    def _values_in(self, text: str) -> str:
        for pattern in self._values:
            text = pattern.sub(_replace_secret, text)
        return text

    def _pairs(self, text: str, pattern: re.Pattern[str]) -> str:
        # A manual scan rather than re.sub: a pair whose name is not secret must not swallow
        # its value, which may hold a secret pair itself (``url=https://h/?token=abc``).
        out, pos, last = [], 0, 0
        while (m := pattern.search(text, pos)) is not None:
            value = m["value"]
            if (
                not self.is_secret_name(m["name"])
                or value.strip("'\"") in ("", MARKER)
                or (value.strip("'\"").lower() in _NOT_SECRETS)
            ):
                pos = m.end("name")
                continue
            if m["string"]:
                start = len(re.match(r"[rRbBuUfF]*", value)[0])  # type: ignore[index]
                quote = value[start : start + 3]
                quote = quote if quote in ('"""', "'''") else value[start]
                new = f"{value[:start]}{quote}{MARKER}{quote}"
            elif pattern is _CODE_PAIR:  # a number: a string marker keeps the code readable
                new = f'"{MARKER}"'
            else:
                scheme = re.match(r"(?i)(?:bearer|basic)\s+", value)
                new = (scheme[0] if scheme else "") + MARKER
            out += [text[last : m.start("value")], new]
            pos = last = m.end()
        out.append(text[last:])
        return "".join(out)

    def text(self, text: str) -> str:
        """Free text (a param value, an error message, a traceback): formats and
        ``secret_name=value`` pairs are replaced, everything else kept."""
        if not text:
            return text
        return self._pairs(self._values_in(text), _TEXT_PAIR)

    def code(self, source: str) -> str:
        """Python source: literals assigned or passed to secret names become ``"***redacted***"``
        and formats are replaced anywhere, so the code stays readable."""
        if not source:
            return source
        source = self._pairs(self._pairs(self._values_in(source), _CODE_PAIR), _CODE_ARG)
        # inside string literals, "password=tiger" (a DSN) is free text
        return _STRING_RE.sub(lambda m: self._pairs(m[0], _TEXT_PAIR), source)

    def param(self, name: str, value: str) -> str:
        """A param's recorded text: all of it under a secret name, else its secret parts."""
        if self.is_secret_name(name) and value.lower() not in _NOT_SECRETS:
            return MARKER
        return self.text(value)

    # --- records ----------------------------------------------------------------------------
    def params(self, params: dict[str, str]) -> list[str]:
        """Redact ``params`` in place; returns the names whose value changed."""
        changed = []
        for name, value in params.items():
            new = self.param(name, value) if isinstance(value, str) else value
            if new != value:
                params[name] = new
                changed.append(name)
        return changed

    def record(self, record: dict[str, Any]) -> dict[str, Any]:
        """A journal record with its params and tags redacted (the note as code)."""
        if "params" not in record and "tags" not in record:
            return record  # metric records: one per logged value, nothing to redact
        out = dict(record)
        if isinstance(out.get("params"), dict):
            out["params"] = dict(out["params"])
            self.params(out["params"])
        if isinstance(out.get("tags"), dict):
            out["tags"] = {
                k: (self.code(v) if k == "mlflow.note.content" else self.text(v))
                if isinstance(v, str)
                else v
                for k, v in out["tags"].items()
            }
        return out

    def capture_note(self, params: dict[str, str], source: str = "") -> str | None:
        """Redact captured ``params`` in place; the summary's note saying what was redacted."""
        names = self.params(params)
        in_code = source.count(MARKER) if source else 0
        if not names and not in_code:
            return None
        what = []
        if names:
            what.append(f"params {', '.join(names)}")
        if in_code:
            what.append(f"{in_code} value(s) in the recorded code")
        return (
            f"secret-looking values redacted ({'; '.join(what)}); settings redact_names and "
            "redact_values add patterns"
        )


def _replace_secret(m: re.Match[str]) -> str:
    if "secret" in m.re.groupindex and m["secret"] is not None:
        start, end = m.span("secret")
        return m[0][: start - m.start()] + MARKER + m[0][end - m.start() :]
    return MARKER


@functools.lru_cache(maxsize=8)
def _cached(names: tuple[str, ...], values: tuple[str, ...]) -> Redactor:
    return Redactor(names, values)


def redactor_for(settings: Any) -> Redactor:
    """The redactor for these settings' extra patterns (built once per pattern set)."""
    return _cached(
        tuple(getattr(settings, "redact_names", ()) or ()),
        tuple(getattr(settings, "redact_values", ()) or ()),
    )
