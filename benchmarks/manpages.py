"""A retrieval set from real translated text: Debian's manual pages in 16 languages.

Translations come from the ``manpages-l10n`` packages (and manpages-ja, -zh, -tr); the English
originals from the packages that own the pages (coreutils, util-linux, the man-pages project, ...).
Packages are fetched with ``apt-get download`` at pinned versions, unpacked with ``dpkg-deb -x``
(nothing is installed) and the result is cached as one JSON file.

A document is one page in one language: title ``name(section)``, body the page as text without
its NAME section. Queries are the pages' one-line NAME descriptions ("ls - list directory
contents" gives "list directory contents"), which the documents therefore do not contain: a
service searching for what a page does, not for its words. They come in the page's language
(same-language, where the translation has its own) and in English (cross-lingual). Each query
has one relevant document, the page in the language searched; a query in language L is run
against language L's documents, as a service searching one language's index would.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import subprocess
import tempfile
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

LANGUAGES = (
    "en", "de", "fr", "es", "it", "pt_BR", "nl", "pl", "ru", "uk", "cs", "sv", "tr", "vi", "ja", "zh_CN",
)  # fmt: skip
# Debian 12 (bookworm) versions. English originals first, then the translations.
PACKAGES = (
    "adduser=3.134 apt=2.6.2 bash=5.2.15-2+b13 bsdutils=1:2.38.1-5+deb12u3 bzip2=1.0.8-5+b1 "
    "coreutils=9.1-1 cpio=2.13+dfsg-7.1 cron=3.0pl1-162 debianutils=5.7-0.5~deb12u1 diffutils=1:3.8-4 "
    "dpkg=1.21.23 e2fsprogs=1.47.0-2+b2 file=1:5.44-3 findutils=4.9.0-4 gawk=1:5.2.1-2 "
    "gettext-base=0.21-12 grep=3.8-5 groff-base=1.22.4-10 gzip=1.12-1 hostname=3.23+nmu1 "
    "iproute2=6.1.0-3 iputils-ping=3:20221126-1+deb12u1 kmod=30+20221128-1 less=590-2.1~deb12u2 "
    "login=1:4.13+dfsg1-1+deb12u2 lsof=4.95.0-1 make=4.3-4.1 man-db=2.11.2-2 mount=2.38.1-5+deb12u3 "
    "nano=7.2-1+deb12u1 ncurses-bin=6.4-4 net-tools=2.10-0.1+deb12u2 openssh-client=1:9.2p1-2+deb12u10 "
    "passwd=1:4.13+dfsg1-1+deb12u2 patch=2.7.6-7+deb12u1 procps=2:4.0.2-3 psmisc=23.6-1 "
    "rsync=3.5.0+ds1-0+deb12u1 sed=4.9-1+deb12u1 sensible-utils=0.0.17+nmu1 strace=6.1-0.1 "
    "sudo=1.9.13p3-1+deb12u4 systemd=252.39-1~deb12u2 sysvinit-utils=3.06-4 tar=1.34+dfsg-1.2+deb12u1 "
    "time=1.9-0.2 unzip=6.0-28+deb12u1 util-linux-extra=2.38.1-5+deb12u3 util-linux=2.38.1-5+deb12u3 "
    "wget=1.21.3-1+deb12u1 xz-utils=5.4.1-1+deb12u2 zip=3.0-13+deb12u1 manpages=6.03-2 manpages-dev=6.03-2 "
    "manpages-cs=4.18.1-1 manpages-cs-dev=4.18.1-1 manpages-de=4.18.1-1 manpages-de-dev=4.18.1-1 "
    "manpages-es=4.18.1-1 manpages-es-dev=4.18.1-1 manpages-fr=4.18.1-1 manpages-fr-dev=4.18.1-1 "
    "manpages-it=4.18.1-1 manpages-it-dev=4.18.1-1 manpages-nl=4.18.1-1 manpages-nl-dev=4.18.1-1 "
    "manpages-pl=1:4.18.1-1 manpages-pl-dev=1:4.18.1-1 manpages-pt-br=4.18.1-1 manpages-pt-br-dev=4.18.1-1 "
    "manpages-ru=4.18.1-1 manpages-ru-dev=4.18.1-1 manpages-uk=4.18.1-1 manpages-uk-dev=4.18.1-1 "
    "manpages-sv=4.18.1-1 manpages-vi=4.18.1-1 manpages-tr=2.0.6-2 manpages-ja=0.5.0.0.20221215+dfsg-1 "
    "manpages-ja-dev=0.5.0.0.20221215+dfsg-1 manpages-zh=1.6.4.0-1"
).split()
# A page joins the set when English and at least this many of the other languages have it.
MIN_TRANSLATIONS = 9
# bumped when what a document or query holds changes (2: NAME sections out; 3: unknown escapes;
# 4: accented letters, named glyphs and defined strings read, no longer dropped)
RECIPE = 4


@dataclass(frozen=True)
class Page:
    name: str  # "ls.1"
    language: str
    title: str  # "ls(1)"
    description: str  # "list directory contents"
    text: str


# -- roff to text -----------------------------------------------------------------------------------
_FONT_MACROS = {"B", "I", "BR", "RB", "BI", "IB", "IR", "RI", "SM", "SB", "SS", "SH", "IP", "TP", "UR", "MT"}
_ESCAPES = {  # the characters roff's named glyphs stand for (groff_char(7)), by name
    "em": "—", "en": "–", "aq": "'", "dq": '"', "lq": "“", "rq": "”", "oq": "‘", "cq": "’",
    "bu": "•", "co": "©", "rg": "®", "ti": "~", "ha": "^", "mi": "-", "pl": "+", "mu": "×",
    ">=": "≥", "<=": "≤", "->": "→", "<-": "←", "hy": "-", "Fo": "«", "Fc": "»", "fo": "‹",
    "fc": "›", "ga": "`", "aa": "´", "de": "°", "sc": "§", "r!": "¡", "r?": "¿", "at": "@",
    "rs": "\\", "sl": "/", "bv": "|", "ba": "|", "br": "│", "ul": "_", "Bq": "„", "bq": "‚",
    "is": "∫", "if": "∞", "pd": "∂", "+-": "±", "tm": "™", "Eu": "€", "eu": "€", "ct": "¢",
    "Po": "£", "Ye": "¥", "ps": "¶", "sh": "#", "Do": "$", "eq": "=", "no": "¬", "==": "≡",
    "!=": "≠", "~~": "≈", "~=": "≅", "sr": "√", "fm": "′", "sd": "″", "dg": "†", "dd": "‡",
    "fi": "fi", "fl": "fl", "ff": "ff", "12": "½", "14": "¼", "34": "¾", "S1": "¹", "S2": "²",
    "S3": "³", "lB": "[", "rB": "]", "lC": "{", "rC": "}", "la": "⟨", "ra": "⟩", "ua": "↑",
    "da": "↓", "<>": "↔", "lA": "⇐", "rA": "⇒", "hA": "⇔", "**": "∗", "OK": "✓", "md": "⋅",
    "pc": "·", "di": "÷", "mo": "∈", "nm": "∉", "es": "∅", "fa": "∀", "te": "∃", "Of": "ª",
    "Om": "º", "ss": "ß", "ae": "æ", "AE": "Æ", "oe": "œ", "OE": "Œ", "/l": "ł", "/L": "Ł",
    "/o": "ø", "/O": "Ø", ".i": "ı", "-D": "Ð", "Sd": "ð", "TP": "Þ", "Tp": "þ", "ij": "ĳ",
    "IJ": "Ĳ", "oa": "å", "oA": "Å", "ci": "○", "or": "|", "ts": "ς",
}  # fmt: skip
_GREEK = dict(zip("abgdezyhiklmncoprstufxqw", "αβγδεζηθικλμνξοπρστυφχψω", strict=True))
# Composite glyphs: an accent then the letter it sits on ("\('e" is "é").
_ACCENTS = {
    "'": "\u0301", "`": "\u0300", "^": "\u0302", ":": "\u0308",
    "~": "\u0303", ",": "\u0327", "v": "\u030c", "o": "\u030a",
}  # fmt: skip
# The man macros', DocBook's and pod2man's strings, as nroff prints them (pod2man's own definitions
# are device tricks: "\(*W-" for a dash); a string not here is the page's own (``.ds``), else the
# glyph of its name, if there is one.
_STRINGS = {
    "R": "®", "Tm": "™", "Aq": "'", "C'": '"', "C`": '"', 'L"': '"', 'R"': '"', "--": "—",
    "PI": "π", "Lq": "“", "Rq": "”",
}  # fmt: skip
_ESCAPE = re.compile(
    r"\\(\(..|\*\(..|\*\[[^]]*\]|\*.|\[[^]]*\]|f\(..|f\[[^]]*\]|f.|s[+-]?\d|[-e&,/:|^ %0~c]|.)"
)
_DEFINE = re.compile(r"""^[.']\s*(?:i[ef]\s+(\S+)\s+)?[.']?\s*ds\s+(\S+)\s?"?(.*)$""")


def glyph(name: str) -> str | None:
    """The character a named glyph (``\\(xx`` or ``\\[name]``) stands for, None when unknown."""
    if name in _ESCAPES:
        return _ESCAPES[name]
    if len(name) == 2 and name[0] == "*":
        lower = _GREEK.get(name[1].lower())
        return lower.upper() if lower and name[1].isupper() else lower
    if len(name) == 2 and name[0] in _ACCENTS and name[1].isalpha():
        composed = unicodedata.normalize("NFC", name[1] + _ACCENTS[name[0]])
        return composed if len(composed) == 1 else None
    if re.fullmatch(r"char\d{1,3}", name) and int(name[4:]) < 256:
        return chr(int(name[4:]))
    if re.fullmatch(r"u[0-9A-F]{4,6}(_[0-9A-F]{4,6})*", name):
        return unicodedata.normalize("NFC", "".join(chr(int(c, 16)) for c in name[1:].split("_")))
    return None


def defined_strings(source: str) -> dict[str, str]:
    """The page's ``.ds`` strings as nroff sees them: troff-only definitions (``.if t``, an
    ``.el`` branch or block) are skipped, and a later definition replaces an earlier one."""
    strings: dict[str, str] = {}
    skipping = False
    for raw in source.splitlines():
        line = raw.strip()
        if skipping:
            skipping = "\\}" not in line
            continue
        if re.match(r"[.']\s*(el\b|i[ef]\s+t\b)", line):
            skipping = "\\{" in line and "\\}" not in line
            continue
        match = _DEFINE.match(line)
        if match and match.group(1) in (None, "n", r"\n(.g"):
            strings[match.group(2)] = match.group(3)
    return strings


def _unescape(text: str, strings: dict[str, str] | None = None, depth: int = 0) -> str:
    strings = strings or {}

    def one(m: re.Match[str]) -> str:
        seq = m.group(1)
        if seq[0] == "*" and len(seq) > 1:  # a string: \*X, \*(XY, \*[name]
            name = seq[2:] if seq[1] == "(" else seq[2:-1] if seq[1] == "[" else seq[1]
            value = _STRINGS.get(name, strings.get(name))
            if value is None:
                return glyph(name) or ""
            return _unescape(value, strings, depth + 1) if depth < 3 else ""
        if seq[0] == "(" or (seq[0] == "[" and seq.endswith("]")):
            return glyph(seq[1:3] if seq[0] == "(" else seq[1:-1]) or ""
        if seq in ("-", "~", " ", "0"):
            return "-" if seq == "-" else " "
        if seq == "e":
            return "\\"
        if seq[0] in "f[s" or seq in "&,/:|^%c*":  # fonts, sizes, zero-width marks
            return ""
        return seq

    return _ESCAPE.sub(one, text)


def _macro_args(line: str) -> str:
    parts = re.findall(r'"[^"]*"|\S+', line)
    return " ".join(p.strip('"') for p in parts[1:])


def roff_to_text(source: str) -> tuple[str, list[tuple[str, str]]]:
    """The page's text without its NAME section, and every section ``(heading, text)``, from man(7)
    roff source."""
    sections: list[tuple[str, list[str]]] = [("", [])]
    strings = defined_strings(source)
    for raw in source.splitlines():
        if raw.startswith(('.\\"', "'\\\"", '\\"', ".\\}")) or raw.strip() in (".", "'"):
            continue
        if raw.startswith((".", "'")):
            macro = raw[1:].split(maxsplit=1)[0] if raw[1:].strip() else ""
            if macro == "SH":
                sections.append((_unescape(_macro_args(raw), strings).strip(), []))
                continue
            if macro not in _FONT_MACROS:
                continue
            raw = _macro_args(raw)
        line = _unescape(raw, strings).strip()
        if line:
            sections[-1][1].append(line)
    parts = [(heading, " ".join(lines)) for heading, lines in sections if lines or heading]
    named = next((i for i, (h, _) in enumerate(parts) if h), None)
    body = [p for i, p in enumerate(parts) if i != named]
    text = "\n".join(f"{h}\n{t}" if h else t for h, t in body)
    return text, parts


def name_line(sections: list[tuple[str, str]]) -> tuple[str, str] | None:
    """``(names, description)`` of the NAME section (the first section, whatever its language)."""
    named = [t for h, t in sections if h]
    if not named:
        return None
    match = re.match(r"\s*(.+?)\s+[-\u2013\u2014]+\s+(.+)", named[0])
    if not match:
        return None
    return match.group(1).strip(), match.group(2).strip().rstrip(".")


# -- fetching ---------------------------------------------------------------------------------------
def _download(into: Path) -> list[str]:
    """The pinned packages as .deb files; returns the versions actually fetched."""
    fetched = []
    for pin in PACKAGES:
        done = subprocess.run(["apt-get", "download", pin], cwd=into, capture_output=True, text=True)
        if done.returncode:
            name = pin.split("=")[0]
            print(f"  {pin} is no longer served; taking the current {name} (the set's digest changes)")
            subprocess.run(["apt-get", "download", name], cwd=into, check=True, capture_output=True)
            fetched.append(name)
        else:
            fetched.append(pin)
    return fetched


def _pages(root: Path) -> dict[tuple[str, str], Path]:
    """(language, "name.section") -> file, for real pages (no links, no ``.so`` stubs)."""
    found = {}
    man = root / "usr/share/man"
    for language in LANGUAGES:
        base = man if language == "en" else man / language
        for path in base.glob("man*/*"):
            if path.is_symlink() or not path.is_file():
                continue
            name = path.name.removesuffix(".gz")
            found[(language, name)] = path
    return found


def _read(path: Path) -> str:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return data.decode("utf-8", errors="replace")


def build(cache: Path) -> dict:
    """The set, from the cache or built (about a minute: 90 packages, 45 MB)."""
    key = hashlib.blake2b(f"{' '.join(PACKAGES)} {MIN_TRANSLATIONS} {RECIPE}".encode(), digest_size=6)
    path = cache / f"manpages-{key.hexdigest()}.json"
    if path.exists():
        return json.loads(path.read_text())
    with tempfile.TemporaryDirectory(prefix="ea-manpages-") as tmp:
        debs, root = Path(tmp, "debs"), Path(tmp, "root")
        debs.mkdir()
        print(f"fetching {len(PACKAGES)} Debian packages (pinned) ...")
        fetched = _download(debs)
        for deb in sorted(debs.glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        pages: dict[str, dict[str, Page]] = {}
        for (language, name), file in _pages(root).items():
            text, sections = roff_to_text(_read(file))
            named = name_line(sections)
            if named is None or len(text) < 200 or text.lstrip().startswith(".so"):
                continue
            section = name.rsplit(".", 1)[-1]
            title = f"{name.rsplit('.', 1)[0]}({section})"
            pages.setdefault(name, {})[language] = Page(name, language, title, named[1], text)
    kept = {n: by for n, by in pages.items() if "en" in by and len(by) - 1 >= MIN_TRANSLATIONS}
    documents, queries = [], []
    for name, by_language in sorted(kept.items()):
        english = by_language["en"].description
        for language, page in sorted(by_language.items()):
            doc_id = f"{name}.{language}"
            documents.append({"doc_id": doc_id, "title": page.title, "body": page.text, "language": language})
            if language == "en" or page.description.casefold() != english.casefold():
                queries.append(
                    {"text": page.description, "language": language, "kind": "same", "doc": doc_id}
                )
            if language != "en":
                queries.append({"text": english, "language": language, "kind": "cross", "doc": doc_id})
    dataset = {"packages": fetched, "documents": documents, "queries": queries}
    cache.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataset, ensure_ascii=False))
    return dataset


def describe(dataset: dict) -> str:
    docs = Counter(d["language"] for d in dataset["documents"])
    kinds = Counter(q["kind"] for q in dataset["queries"])
    digest = hashlib.blake2b(json.dumps(dataset["documents"]).encode(), digest_size=6).hexdigest()
    distinct = len({d["doc_id"].rsplit(".", 1)[0] for d in dataset["documents"]})
    return (
        f"{len(dataset['documents'])} pages ({distinct} distinct) in {len(docs)} languages, "
        f"{kinds['same']} same-language and {kinds['cross']} English queries; set {digest}"
    )
