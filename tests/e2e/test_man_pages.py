"""The manual pages format without warnings and match the program they document: every command
and option of `attestproxy --help` (and of each command's help) is in attestproxy(8), and every
key of `attestproxy check-config --reference`, with its default and range, is in
attestproxy.conf(5) — and nothing else is."""
import os
import pathlib
import re
import shutil
import subprocess

import pytest

from conftest import ROOT

MAN = ROOT / "man"


def rendered(name):
    """A page as meson renders it for a /usr package."""
    text = (MAN / (name + ".in")).read_text()
    assert set(re.findall(r"@([A-Z_]+)@", text)) <= {"VERSION", "SYSCONFDIR"}
    return text.replace("@VERSION@", "0.0.0").replace("@SYSCONFDIR@", "/etc")


def roff(s):
    """How a literal option or key is spelled in the roff source."""
    return s.replace("-", "\\-")


@pytest.mark.parametrize("width", [80, 100])
@pytest.mark.parametrize("name", ["attestproxy.8", "attestproxy.conf.5", "attestproxy-enclave.8"])
def test_pages_format_without_warnings(tmp_path, name, width):
    """No groff warning at all (a table wider than the line, a line that cannot be adjusted)
    on an 80-column terminal as on a wide one."""
    if shutil.which("groff") is None or shutil.which("man") is None:
        pytest.skip("groff/man missing (apt-get install groff-base man-db)")
    page = tmp_path / name
    page.write_text(rendered(name))
    env = dict(os.environ, LC_ALL="C.UTF-8", MANWIDTH=str(width))
    g = subprocess.run(["groff", "-t", "-man", "-ww", "-Tutf8", f"-rLL={width}n", "-z",
                        str(page)], capture_output=True, text=True, env=env, timeout=60)
    assert g.returncode == 0 and g.stderr == "", g.stderr
    m = subprocess.run(["man", "--warnings", "-l", str(page)], capture_output=True, text=True,
                       env=env, timeout=60)
    assert m.returncode == 0 and m.stderr == "", m.stderr
    assert "NAME" in m.stdout and "SEE ALSO" in m.stdout


def help_section(text, title):
    """Lines of an indented section ("Commands:", "Options:") of a --help text."""
    lines, inside = [], False
    for line in text.splitlines():
        if line.strip() == title:
            inside = True
            continue
        if inside:
            if not line.strip():
                break
            lines.append(line)
    return lines


def test_every_command_and_option_is_documented(run_cli):
    page = rendered("attestproxy.8")
    top = run_cli("--help").stdout.decode()
    commands = [l.split()[0] for l in help_section(top, "Commands:") if l.startswith("  ") and
                not l.startswith("    ")]
    assert "run" in commands and "check-config" in commands
    missing = []
    for cmd in commands:
        if f"\\fB{roff(cmd)}\\fR" not in page:
            missing.append(cmd)
        if cmd == "help":
            continue
        sub = run_cli("help", cmd)
        assert sub.returncode == 0, sub.stderr
        text = sub.stdout.decode()
        for opt in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", "\n".join(
                help_section(text, "Options:"))):
            if roff(opt) not in page:
                missing.append(f"{cmd} {opt}")
    for opt in re.findall(r"(?<![\w-])(--?[a-zA-Z][a-z-]*)", "\n".join(
            help_section(top, "Options:"))):
        if roff(opt) not in page:
            missing.append(opt)
    assert not missing, f"attestproxy.8 does not document: {missing}"


def test_exit_codes_and_signals_match_help(run_cli):
    page = rendered("attestproxy.8")
    top = run_cli("--help").stdout.decode()
    assert "SIGHUP" in top and "SIGTERM" in top
    for sig in ("SIGHUP", "SIGTERM", "SIGINT"):
        assert sig in page
    for code in ("0", "1", "2"):
        assert f".SH EXIT STATUS" in page and f"\n.B {code}\n" in page


def reference_keys(run_cli):
    """{section: {key: (default, range)}} from check-config --reference."""
    out = run_cli("check-config", "--reference").stdout.decode()
    keys, section = {}, None
    for line in out.splitlines():
        if line.startswith("### "):
            section = line[4:].split()[0]  # "[daemon]", "[service", "[policy]"
            keys[section] = {}
        elif line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            keys[section][cells[0].strip("`")] = (cells[1].strip("`"), cells[2])
    assert set(keys) == {"[daemon]", "[service", "[policy]"}, keys.keys()
    return keys


def man_keys(page):
    """{section: {key: entry text}} from the KEYS sections of attestproxy.conf.5."""
    keys, section, entry = {}, None, None
    lines = page.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(".SH "):
            title = line[4:].strip('"')
            section = title.split()[0] if "KEYS" in title else None
            if section is not None:
                keys.setdefault(section, {})
            entry = None
            continue
        if section is None:
            continue
        if line == ".TP" and i + 1 < len(lines) and lines[i + 1].startswith(".B "):
            name = lines[i + 1][3:].strip()
            assert name not in keys[section], f"{name} documented twice in {section}"
            entry = keys[section][name] = []
            continue
        if entry is not None:
            entry.append(line)
    return {s: {k: "\n".join(v) for k, v in d.items()} for s, d in keys.items()}


def test_every_key_default_and_range_is_documented(run_cli):
    ref = reference_keys(run_cli)
    doc = man_keys(rendered("attestproxy.conf.5"))
    assert set(doc) == set(ref), (doc.keys(), ref.keys())
    problems = []
    for section, keys in ref.items():
        extra = set(doc[section]) - set(keys)
        if extra:
            problems.append(f"{section}: documented but not in the program: {sorted(extra)}")
        for key, (default, rng) in keys.items():
            text = doc[section].get(key)
            if text is None:
                problems.append(f"{section} {key}: missing")
                continue
            flat = " ".join(text.split())
            if default == "required":
                want = "Required."
            elif default == "unset":
                want = "Default: unset."
            else:
                want = f"Default: \\fB{roff(default)}\\fR."
            if not flat.endswith(want):
                problems.append(f"{section} {key}: want '{want}' at the end")
            if rng:
                if f"Range: {rng}." not in flat:
                    problems.append(f"{section} {key}: want 'Range: {rng}.'")
            elif "Range:" in flat:
                problems.append(f"{section} {key}: has a range the program does not")
    assert not problems, "\n".join(problems)


COMPANION = pathlib.Path(os.environ.get("ATTESTPROXY_BUILD", ROOT / "build")) / "daemon" / \
    "enclave" / "attestproxy-enclave"


def test_companion_page_matches_its_help():
    """attestproxy-enclave(8): every option of --help, the exit codes, and every configuration
    key of config/enclave.conf."""
    if not COMPANION.exists():
        pytest.skip(f"{COMPANION} is not built")
    page = rendered("attestproxy-enclave.8")
    top = subprocess.run([str(COMPANION), "--help"], capture_output=True, text=True,
                         timeout=30).stdout
    opts = re.findall(r"(?<![\w-])(--?[a-zA-Z][a-z-]*)", "\n".join(help_section(top, "Options:")))
    assert "--config" in opts and "--check" in opts
    missing = [o for o in opts if roff(o) not in page]
    assert not missing, f"attestproxy-enclave.8 does not document: {missing}"
    for code in ("0", "1", "2"):
        assert f"\n.B {code}\n" in page
    assert "SIGTERM" in top and "SIGTERM" in page
    keys = re.findall(r"^;? ?([a-z_]+) =", (ROOT / "config" / "enclave.conf").read_text(), re.M)
    assert len(keys) >= 15
    missing = [k for k in keys if roff(k) not in page]
    assert not missing, f"attestproxy-enclave.8 does not document: {missing}"
