"""Checks of the files platform tools read, against their documented formats; each returns a list of problems.

- Zephyr `prj.conf` (a Kconfig fragment): every line blank, a `#` comment, or `CONFIG_<NAME>=<value>` with the value
  `y`, `n`, a decimal or hex number, or a double-quoted string; no symbol set twice.
- Arduino `library.properties` (library specification, 1.5 format rev. 2.2): `key=value` lines; required name,
  version, author, maintainer, sentence, paragraph, url, plus category and architectures (which the spec lists and
  arduino-lint requires in strict mode); the name's characters, length, the semver version, the category list.
- Zephyr application `CMakeLists.txt`: `cmake_minimum_required(VERSION >= 3.20.0)` first,
  `find_package(Zephyr REQUIRED HINTS $ENV{ZEPHYR_BASE})` before `project()`, sources added to the `app` target,
  and every source file it names present in the folder.

create_project runs them on every project it writes; the tests run them on bad examples too.
"""

from __future__ import annotations

import re
from pathlib import Path

_KCONFIG_LINE = re.compile(r'CONFIG_([A-Za-z0-9_]+)=(y|n|-?[0-9]+|0x[0-9a-fA-F]+|"(?:[^"\\]|\\.)*")')
LIBRARY_REQUIRED = ("name", "version", "author", "maintainer", "sentence", "paragraph", "category", "url",
                    "architectures")  # fmt: skip
LIBRARY_CATEGORIES = ("Display", "Communication", "Signal Input/Output", "Sensors", "Device Control", "Timing",
                      "Data Storage", "Data Processing", "Other")  # fmt: skip
# The name's allowed characters (arduino-lint's schema) and the spec's relaxed semver for version.
_LIBRARY_NAME = re.compile(r"(([a-zA-Z][a-zA-Z0-9 _.\-]*)|([0-9][a-zA-Z0-9 _.\-]*[a-zA-Z][a-zA-Z0-9 _.\-]*))*")
_VERSION = re.compile(r"(0|[1-9]\d*)(\.(0|[1-9]\d*)){0,2}(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")
ZEPHYR_MIN_CMAKE = (3, 20, 0)
_CMAKE_COMMAND = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(")


def check_prj_conf(text: str) -> list[str]:
    """Problems of a Kconfig fragment (prj.conf or boards/<board>.conf)."""
    problems, seen = [], set()
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _KCONFIG_LINE.fullmatch(line)
        if match is None:
            problems.append(f"line {number}: {line!r} is not CONFIG_<NAME>=y|n|<number>|\"<string>\"")
        elif match.group(1) in seen:
            problems.append(f"line {number}: CONFIG_{match.group(1)} is set twice")
        else:
            seen.add(match.group(1))
    return problems


def parse_properties(text: str) -> dict[str, str | None]:
    """`key=value` lines (blank lines and `#` comments skipped); a line without `=` maps to None."""
    properties: dict[str, str | None] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, separator, value = line.partition("=")
            properties[key.strip()] = value.strip() if separator else None
    return properties


def check_library_properties(text: str) -> list[str]:
    """Problems of an Arduino library.properties."""
    properties = parse_properties(text)
    problems = [f"line without '=': {key!r}" for key, value in properties.items() if value is None]
    problems += [f"missing required field {key}" for key in LIBRARY_REQUIRED if not properties.get(key)]
    name = properties.get("name") or ""
    if name and (not _LIBRARY_NAME.fullmatch(name) or len(name) > 63 or name.lower().startswith("arduino")):
        problems.append(f"name {name!r}: letters, digits, spaces, _ . - only, starting with a letter or digit, at "
                        "most 63 characters, not starting with 'Arduino'")  # fmt: skip
    version = properties.get("version") or ""
    if version and not _VERSION.fullmatch(version):
        problems.append(f"version {version!r} is not semver (MAJOR.MINOR.PATCH)")
    category = properties.get("category")
    if category and category not in LIBRARY_CATEGORIES:
        problems.append(f"category {category!r} is not one of {', '.join(LIBRARY_CATEGORIES)}")
    url = properties.get("url") or ""
    if url and not re.fullmatch(r"https?://\S+", url):
        problems.append(f"url {url!r} is not an http(s) URL")
    return problems


def cmake_commands(text: str) -> list[tuple[str, list[str]]]:
    """The commands of a CMake file as (lower-case name, arguments), comments dropped, quotes kept."""
    code = "\n".join(_strip_comment(line) for line in text.splitlines())
    commands, position = [], 0
    while match := _CMAKE_COMMAND.search(code, position):
        depth, end = 1, match.end()
        while depth and end < len(code):
            depth += {"(": 1, ")": -1}.get(code[end], 0)
            end += 1
        if depth:
            commands.append((match.group(1).lower(), ["<unbalanced parentheses>"]))
            break
        commands.append((match.group(1).lower(), re.findall(r'"[^"]*"|[^\s()]+', code[match.end() : end - 1])))
        position = end
    return commands


def check_zephyr_cmakelists(text: str, folder: Path) -> list[str]:
    """Problems of a Zephyr application CMakeLists.txt whose relative source paths are in `folder`."""
    commands = cmake_commands(text)
    names = [name for name, _ in commands]
    problems = [f"{name}(): unbalanced parentheses" for name, args in commands if args == ["<unbalanced parentheses>"]]
    if not names or names[0] != "cmake_minimum_required":
        problems.append("the first command is not cmake_minimum_required()")
    else:
        args = commands[0][1]
        version = args[1] if len(args) > 1 and args[0] == "VERSION" else ""
        if not re.fullmatch(r"\d+(\.\d+)*", version) or _version(version) < ZEPHYR_MIN_CMAKE:
            problems.append(f"cmake_minimum_required(VERSION {version}) is below Zephyr's 3.20.0")
    zephyr = ["Zephyr", "REQUIRED", "HINTS", "$ENV{ZEPHYR_BASE}"]
    finds = [index for index, (name, args) in enumerate(commands) if name == "find_package" and args == zephyr]
    projects = [index for index, name in enumerate(names) if name == "project"]
    if not finds:
        problems.append("no find_package(Zephyr REQUIRED HINTS $ENV{ZEPHYR_BASE})")
    if not projects:
        problems.append("no project()")
    if finds and projects and projects[0] < finds[0]:
        problems.append("project() comes before find_package(Zephyr ...)")
    if not any(name == "target_sources" and args[:1] == ["app"] for name, args in commands):
        problems.append("no target_sources(app ...): the application adds no source")
    for name, args in commands:
        if name in ("target_sources", "add_library"):
            for source in args[1:]:
                if source.endswith((".c", ".cpp", ".S")) and "$" not in source and not (folder / source).is_file():
                    problems.append(f"{name}({args[0]} ...) names {source}, which is not in the project")
    return problems


def _strip_comment(line: str) -> str:
    # '#' starts a comment unless it sits inside a quoted argument.
    quoted = False
    for index, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif char == "#" and not quoted:
            return line[:index]
    return line


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))
