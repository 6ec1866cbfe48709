"""Find and redact personal data and secrets in dataset files.

Hand-written on purpose: Microsoft Presidio and similar tools need spaCy language models from a
hub that cannot be downloaded here, and what a fine-tuning set must not leak is mostly structured
identifiers (emails, phone numbers, card numbers, IBANs, IP addresses, API keys, passwords) that
regular expressions plus checksums find well. Names and street addresses need a language model and
are not detected.

Every detector is an entry in ``DETECTORS``: a kind, a regex that proposes candidates and an
optional ``check`` that returns the identifier (the candidate or a prefix of it) or ``None``. Card
numbers must pass Luhn and start like a major network's, IBANs must have their country's length and
pass ISO 13616 mod-97, IP addresses must parse (loopback, 0.0.0.0, netmasks are left alone).
Overlapping candidates are resolved in favour of the longer one, then the earlier entry (the more
specific kinds come first).
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from afinar.data.issues import Issue
from afinar.store.atomic import atomic_open
from afinar.data.reader import TEXT_SUFFIXES, Row, iter_rows
from afinar.errors import InvalidRequest, NotFound

PLACEHOLDER = re.compile(r"<[A-Z0-9]+(?:_[A-Z0-9]+)*_\d+>")
_IBAN_LENGTHS = dict((c[:2], int(c[2:])) for c in (
    "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BI27 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 DJ27 "
    "DK18 DO28 EE20 EG29 ES24 FI18 FK18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HR21 HU28 IE22 "
    "IL23 IQ23 IS26 IT27 JO30 KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 LY25 MC27 MD24 ME22 MK19 "
    "MN20 MR27 MT31 MU30 NI28 NL18 NO15 OM23 PK24 PL28 PS29 QA29 RO24 RS22 RU33 SA24 SC31 SD18 "
    "SE24 SI19 SK24 SM27 SO23 ST25 SV28 TL23 TN24 TR26 UA29 VA22 VG24 XK20 YE30").split())
_CARD_PREFIX = re.compile(r"4|5[1-5]|2[2-7]|3[47]|3[068]|35|6")  # Visa, MC, Amex, Diners, JCB, ...
# Values after ``password:`` that are types, empty markers or templates, not secrets.
_NOT_SECRETS = {"str", "string", "int", "bool", "bytes", "none", "null", "nil", "true", "false",
                "undefined", "required", "optional", "empty", "redacted", "hidden"}


def _luhn(digits: str) -> bool:
    doubled = (int(ch) * (1 + i % 2) for i, ch in enumerate(reversed(digits)))
    return sum(d - 9 if d > 9 else d for d in doubled) % 10 == 0


def _check_card(value: str) -> str | None:
    """Luhn and a major network's prefix, written whole or in groups of 4-6 digits with one kind
    of separator; a grouped run that goes on into another number is cut back group by group."""
    groups = re.split(r"[ -]", value)
    seps = set(re.findall(r"[ -]", value))
    if len(seps) > 1:
        return None
    for k in range(len(groups), 0, -1):
        digits = "".join(groups[:k])
        if len(digits) < 13 or (k > 1 and any(not 4 <= len(g) <= 6 for g in groups[:k])):
            continue
        if (len(digits) <= 19 and _CARD_PREFIX.match(digits) and len(set(digits)) > 1
                and _luhn(digits)):
            return "".join(seps).join(groups[:k])
    return None


def _check_iban(value: str) -> str | None:
    """The country's IBAN length (cut there: the regex may run on into the next word), mod-97."""
    if not (length := _IBAN_LENGTHS.get(value[:2])):
        return None
    if not (m := re.match(rf"(?: ?[A-Z0-9]){{{length}}}(?= |$)", value)):
        return None
    compact = m.group(0).replace(" ", "")
    number = "".join(str(int(ch, 36)) for ch in compact[4:] + compact[:4])
    return m.group(0) if int(number) % 97 == 1 else None


def _check_phone(value: str) -> str | None:
    digits = re.sub(r"\D", "", value)
    if value.startswith("+"):
        return value if 8 <= len(digits) <= 15 else None
    ok = 9 <= len(digits) <= 12 and len(set(digits)) > 2 and not digits.startswith("000")
    return value if ok else None


def _check_ip(value: str) -> str | None:
    """A parsable address that is somebody's: not 0.0.0.0, loopback, multicast or reserved."""
    if ":" in value:
        groups = [g for g in value.split("%")[0].split(":") if g]
        if len(groups) < 2 or sum(len(g) for g in groups) < 4:
            return None  # "a::b" in code is not an address anyone needs hidden
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    ip = getattr(ip, "ipv4_mapped", None) or ip
    if ip.is_unspecified or ip.is_loopback or ip.is_multicast or ip.is_reserved:
        return None
    return value


def _entropy(s: str) -> float:
    return -sum(c / len(s) * math.log2(c / len(s)) for c in Counter(s).values())


def _check_token(value: str) -> str | None:
    """A long run that looks random: digits and letters interleaved (random keys switch between
    them every few characters; identifiers and CamelCase names rarely do), not hex (digests,
    UUIDs), not a ``sha512-`` integrity hash, not a path or URL (words between slashes)."""
    switches = sum(a.isdigit() != b.isdigit() for a, b in itertools.pairwise(value)
                   if a.isalnum() and b.isalnum())
    if switches < 4 or re.fullmatch(r"[0-9a-fA-F-]+", value) or _entropy(value) < 4.0:
        return None
    segments = value.split("/")
    if re.match(r"sha\d+-", value, re.I) or (
            len(segments) > 1 and any(re.fullmatch(r"[a-z_-]{3,}", s) for s in segments)):
        return None
    return value


def _check_password(value: str) -> str | None:
    if PLACEHOLDER.fullmatch(value):
        return None
    value = value.rstrip(".,:)]}")  # the end of the sentence, not of the password
    if not value or value.lower() in _NOT_SECRETS or value[0] in "<${%*[(" or (
            set(value) <= set("*x.-_")):
        return None  # a type, an empty marker, a template, already masked
    return value


def _check_secret(value: str) -> str | None:
    """``token``/``secret`` are common words in ML text: demand something credential-like."""
    if len(value) < 8 or not re.search(r"[\d_+/=-]", value):
        return None
    return _check_password(value)


@dataclass(frozen=True)
class Detector:
    """``pattern`` finds candidates at every position (a candidate that fails its check does not
    hide one starting inside it); ``group`` is the part that is the finding; ``check`` returns the
    identifier (the candidate or a prefix of it) or None; ``needs``, when set, is a cheap regex
    that must occur in the text for the detector to run at all."""

    name: str
    kind: str
    pattern: re.Pattern[str]
    check: Callable[[str], str | None] | None = None
    group: str = "m"
    needs: re.Pattern[str] | None = None


def _det(name: str, kind: str, regex: str, check: Callable[[str], str | None] | None = None,
         group: str = "m", needs: str | None = None) -> Detector:
    return Detector(name, kind, re.compile(f"(?=(?P<m>{regex}))"), check, group,
                    re.compile(needs) if needs else None)


_PASSWORD_KEY = r"(?:[A-Za-z0-9]+[_-])*(?:password|passwd|passphrase|pwd)"
_SECRET_KEY = (r"(?:[A-Za-z0-9]+[_-])*(?:secret|token|api[_-]?key|access[_-]?key|auth[_-]?key"
               r"|private[_-]?key)")
_ASSIGN = r"(?<![\w-])(?i:{kw})[\"']?\s*[:=]\s*[\"']?(?P<value>[^\s\"'`,;]{{3,200}})"
_END = r"(?![\w-]|\.\d)"  # not followed by more of a word or number

DETECTORS: list[Detector] = [
    _det("email", "EMAIL", r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
         r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])",
         needs="@"),
    _det("private_key", "API_KEY", r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----"
         r"[\s\S]{0,10000}?-----END (?:[A-Z]+ )*PRIVATE KEY-----", needs="PRIVATE KEY"),
    _det("api_key", "API_KEY", r"(?<![\w-])(?:sk-(?:proj-|svcacct-|admin-|ant-)?[\w-]{20,}"
         r"|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}|gh[pousr]_[A-Za-z0-9]{36,}"
         r"|github_pat_\w{22,}|glpat-[\w-]{20,}|hf_[A-Za-z0-9]{30,}"
         r"|(?:AKIA|ASIA)[0-9A-Z]{16}|xox[bpars]-[A-Za-z0-9-]{10,}|AIza[\w-]{35}"
         r"|eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]{8,})(?![\w-])"),
    _det("credit_card", "CREDIT_CARD", r"(?<![\d+-])(?:\d[ -]?){12,18}\d" + _END, _check_card),
    _det("iban", "IBAN", r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}", _check_iban),
    _det("ipv6", "IPV6", r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}"
         r"(?:\.\d{1,3}){0,3}(?:%\w+)?(?![\w:])", _check_ip, needs=r"\w?:\w*:"),
    _det("ipv4", "IPV4", r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}" + _END, _check_ip),
    # +44 20 7946 0958, +1 (555) 123-4567, +4915112345678
    _det("phone_intl", "PHONE", r"(?<![\w+])\+(?:\d{7,15}|\d{1,3}(?:[ .-]?\(\d{1,5}\))?"
         r"[ .-]?\d{1,8}(?:[ .-]\d{1,8}){0,5})" + _END, _check_phone, needs=r"\+\d"),
    # (555) 123-4567, 555.123.4567, 1-555-123-4567
    _det("phone_nanp", "PHONE", r"(?<![\w+.-])(?:1[ .-])?(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}"
         r"[ .-]\d{4}" + _END, _check_phone),
    # 020 7946 0958, 01 23 45 67 89, (030) 1234567, 0612345678
    _det("phone_trunk", "PHONE", r"(?<![\w+.-])(?:\(0\d{1,4}\) ?|0\d{1,4}[ -]?)\d{2,8}"
         r"(?:[ -]\d{2,8}){0,4}" + _END, _check_phone),
    _det("password", "PASSWORD", _ASSIGN.format(kw=_PASSWORD_KEY), _check_password, "value",
         needs="(?i)pass|pwd"),
    _det("token", "API_KEY", r"(?<![\w+/-])[A-Za-z0-9][\w+/-]{31,127}={0,2}(?![\w+/=-])",
         _check_token),
    _det("secret", "PASSWORD", _ASSIGN.format(kw=_SECRET_KEY), _check_secret, "value",
         needs="(?i)secret|token|key"),
]
_PRIORITY = {d.name: i for i, d in enumerate(DETECTORS)}
_PASSWORD_FIELD = re.compile(f"(?i:{_PASSWORD_KEY})")
_SECRET_FIELD = re.compile(f"(?i:{_SECRET_KEY})")


@dataclass
class Finding:
    kind: str
    value: str
    start: int  # offsets into the string value
    end: int
    line: int | None = None
    field: str | None = None

    def to_dict(self, masked: bool = True) -> dict[str, Any]:
        return {"line": self.line, "field": self.field, "kind": self.kind, "start": self.start,
                "end": self.end, "value": mask(self.kind, self.value) if masked else self.value}


def scan_text(text: str) -> list[Finding]:
    """Non-overlapping findings in ``text``, in order; on overlap the longer candidate wins, then
    the more specific detector (the earlier in ``DETECTORS``)."""
    candidates: list[tuple[int, int, int, str, str]] = []
    for det in DETECTORS:
        if det.needs is not None and not det.needs.search(text):
            continue
        for m in det.pattern.finditer(text):
            start, value = m.start(det.group), m.group(det.group)
            if det.check is not None and not (value := det.check(value)):
                continue
            candidates.append((-len(value), _PRIORITY[det.name], start, det.kind, value))
    chosen: list[Finding] = []
    taken = bytearray(len(text))
    for neg_len, _, start, kind, value in sorted(candidates):
        end = start - neg_len
        if taken.find(1, start, end) == -1:
            taken[start:end] = b"\x01" * (end - start)
            chosen.append(Finding(kind, value, start, end))
    return sorted(chosen, key=lambda f: f.start)


def _field_secret(key: Any, value: Any) -> Finding | None:
    """A whole string under a key named like a credential (``"db_password": "..."``) is one, unless
    it holds a more specific finding (an email, an API key)."""
    if not isinstance(value, str) or not isinstance(key, str) or not value.strip():
        return None
    if _PASSWORD_FIELD.fullmatch(key):
        check = _check_password
    elif _SECRET_FIELD.fullmatch(key):
        check = _check_secret
    else:
        return None
    if check(value.strip()) != value.strip() or scan_text(value):
        return None
    return Finding("PASSWORD", value, 0, len(value))


def _child(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def scan_value(obj: Any, path: str = "") -> Iterator[Finding]:
    """Findings in every string value of a JSON value (keys are context, never scanned), with
    ``field`` set to where each is, e.g. ``messages[1].content``."""
    if isinstance(obj, str):
        for f in scan_text(obj):
            f.field = path or None
            yield f
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if (whole := _field_secret(k, v)) is not None:
                whole.field = _child(path, k)
                yield whole
            else:
                yield from scan_value(v, _child(path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from scan_value(v, _child(path, i))


def _read(path: str | os.PathLike) -> Iterator[Row | Issue]:
    """Rows and per-line problems. A file that cannot be read (missing, binary, a broken JSON
    array or CSV) raises, since scanning part of it would pass it as cleaner than it is."""
    p = Path(path)
    if not p.is_file():
        raise NotFound(f"{p} is not a file", param="file")
    per_line = p.suffix.lower() not in (".json", ".csv", *TEXT_SUFFIXES)  # JSONL

    def rows() -> Iterator[Row | Issue]:
        for item in iter_rows(p):
            if isinstance(item, Issue) and item.code != "empty_file" and (
                    item.code == "binary_file" or not per_line):
                raise InvalidRequest(f"cannot read {p}: {item}", param="file")
            yield item

    return rows()


def scan_file(path: str | os.PathLike) -> Iterator[Finding | Issue]:
    """Findings in every row of a dataset file, in order; unreadable lines pass through as Issues.
    In text files (``.txt``/``.md``, read as one row) ``line`` is the line within the file."""
    is_text = Path(path).suffix.lower() in TEXT_SUFFIXES
    for row in _read(path):
        if isinstance(row, Issue):
            yield row
            continue
        for f in scan_value(row.data):
            f.line = row.line
            if is_text and f.field == "text":
                f.line += row.data["text"].count("\n", 0, f.start)
            yield f


def mask(kind: str, value: str) -> str:
    """A preview that says what was found without showing it: ``j***@example.com``, ``***1111``."""
    if kind == "EMAIL":
        local, _, domain = value.rpartition("@")
        return f"{local[:1]}***@{domain}"
    if kind == "CREDIT_CARD":
        return "***" + re.sub(r"\D", "", value)[-4:]
    if kind in ("IBAN", "PHONE"):
        return value[:2 if kind == "IBAN" else 0] + "***" + value[-2:]
    if kind in ("IPV4", "IPV6"):
        return re.split(r"[.:]", value)[0] + "***"
    if kind == "API_KEY":
        m = re.match(r"-----BEGIN [A-Z ]+-----|[A-Za-z]+[_-](?:[a-z]+[_-])?", value)
        return (m.group(0) if m and len(m.group(0)) <= len(value) // 2 else value[:2]) + "***"
    return "***"


class Redactor:
    """Replaces findings with typed placeholders, ``<EMAIL_1>``, numbered per kind in order of
    first appearance, so one value gets the same placeholder everywhere this redactor meets it.

    ``mapping`` (placeholder -> original) is kept for the caller; it is as sensitive as the data,
    so nothing here writes it anywhere.
    """

    def __init__(self) -> None:
        self.mapping: dict[str, str] = {}
        self.counts: Counter[str] = Counter()  # occurrences replaced, per kind
        self.distinct: Counter[str] = Counter()  # distinct values replaced, per kind
        self._placeholders: dict[tuple[str, str], str] = {}

    def placeholder(self, kind: str, value: str) -> str:
        self.counts[kind] += 1
        if (ph := self._placeholders.get((kind, value))) is None:
            self.distinct[kind] += 1
            ph = self._placeholders[kind, value] = f"<{kind}_{self.distinct[kind]}>"
            self.mapping[ph] = value
        return ph

    def redact_text(self, text: str, findings: list[Finding] | None = None) -> str:
        parts, pos = [], 0
        for f in scan_text(text) if findings is None else findings:
            parts += [text[pos:f.start], self.placeholder(f.kind, f.value)]
            pos = f.end
        return "".join(parts) + text[pos:]

    def redact_value(self, obj: Any) -> Any:
        """A copy of a JSON value with its string values redacted; keys and structure are kept."""
        if isinstance(obj, str):
            return self.redact_text(obj)
        if isinstance(obj, dict):
            return {k: self.redact_text(v, [whole]) if (whole := _field_secret(k, v))
                    else self.redact_value(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.redact_value(v) for v in obj]
        return obj


@dataclass
class RedactSummary:
    dst: Path
    examples: int  # rows written
    counts: dict[str, int]  # occurrences replaced, per kind
    distinct: dict[str, int]  # distinct values replaced, per kind
    skipped_lines: list[int] = field(default_factory=list)  # unreadable rows, not written
    issues: list[Issue] = field(default_factory=list)


def redact_file(src: str | os.PathLike, dst: str | os.PathLike,
                redactor: Redactor | None = None) -> RedactSummary:
    """Write a redacted JSONL copy of ``src`` to ``dst`` atomically, one row per line in order.

    The copy is streamed to a temporary sibling and renamed into place. Unreadable rows are not
    written and are listed in ``skipped_lines``; a file that cannot be read at all raises
    ``InvalidRequest`` and leaves ``dst`` untouched.
    """
    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve() or (dst.exists() and src.exists() and dst.samefile(src)):
        raise InvalidRequest(f"refusing to overwrite the input {src} with its redacted copy",
                             param="redact")
    red = redactor or Redactor()
    rows = _read(src)
    summary = RedactSummary(dst, 0, {}, {})
    with atomic_open(dst, "w") as out:
        for row in rows:
            if isinstance(row, Issue):
                summary.issues.append(row)
                if row.line is not None:
                    summary.skipped_lines.append(row.line)
                continue
            out.write(json.dumps(red.redact_value(row.data), ensure_ascii=False) + "\n")
            summary.examples += 1
    summary.counts, summary.distinct = dict(red.counts), dict(red.distinct)
    return summary
