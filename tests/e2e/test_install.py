"""`meson install` lays out a package (binary, units, man pages, example configuration) and
`meson dist` produces a tarball that builds and installs the same way.

Each test configures its own build directory with the install recipe that README.md and
docs/operations.md give (RECIPE: --prefix=/usr --sysconfdir=/etc --buildtype=release, the
layout a distribution package uses) under pytest's tmp_path and installs into a DESTDIR there,
so the checkout's build directories are never touched.
"""
import json
import os
import shutil
import subprocess
import tarfile

import pytest

from conftest import ROOT

MESON = shutil.which("meson")
pytestmark = pytest.mark.skipif(MESON is None, reason="meson is missing")

EXPECTED = {
    "usr/sbin/attestproxy",
    "usr/lib/systemd/system/attestproxy.service",
    "usr/lib/systemd/system/attestproxy.socket",
    "usr/share/man/man8/attestproxy.8",
    "usr/share/man/man5/attestproxy.conf.5",
    "etc/attestproxy/attestproxy.conf.example",
    # The enclave companion (docs/enclave.md), built from the same tree.
    "usr/sbin/attestproxy-enclave",
    "usr/share/man/man8/attestproxy-enclave.8",
    "etc/attestproxy/enclave.conf.example",
}


# The documented recipe, word for word; test_docs_give_the_tested_recipe holds the docs to it.
RECIPE = ("--prefix=/usr", "--sysconfdir=/etc", "--buildtype=release")
RECIPE_LINE = "meson setup build " + " ".join(RECIPE)


def run(*args, cwd=None, timeout=600):
    r = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{args}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def installed_files(dest):
    out = set()
    for dirpath, _, files in os.walk(dest):
        for f in files:
            out.add(os.path.relpath(os.path.join(dirpath, f), dest))
    return out


def build_and_install(source, build, dest, *options):
    run(MESON, "setup", *RECIPE, *options, str(build), str(source))
    run(MESON, "install", "-C", str(build), "--destdir", str(dest), "--quiet")


def check_layout(dest):
    assert installed_files(dest) == EXPECTED
    binary = dest / "usr/sbin/attestproxy"
    assert os.access(binary, os.X_OK)
    assert run(str(binary), "--version").stdout.startswith("attestproxy ")
    # The binary's default configuration is where the example was installed and the docs copy it.
    assert "(default /etc/attestproxy/attestproxy.conf)" in run(str(binary), "--help").stdout

    unit = (dest / "usr/lib/systemd/system/attestproxy.service").read_text()
    assert "ExecStart=/usr/sbin/attestproxy run -c /etc/attestproxy/attestproxy.conf\n" in unit
    assert "@" + "SBINDIR@" not in unit and "@" + "SYSCONFDIR@" not in unit
    assert (dest / "usr/lib/systemd/system/attestproxy.socket").read_text() == \
        (ROOT / "systemd" / "attestproxy.socket").read_text()

    page = (dest / "usr/share/man/man8/attestproxy.8").read_text()
    assert ".I /etc/attestproxy/attestproxy.conf\n" in page
    assert "@" + "VERSION@" not in page and '"attestproxy 0.' in page

    companion = dest / "usr/sbin/attestproxy-enclave"
    assert run(str(companion), "--version").stdout.startswith("attestproxy-enclave ")
    assert "(default /etc/attestproxy/enclave.conf)" in run(str(companion), "--help").stdout
    assert (dest / "etc/attestproxy/enclave.conf.example").read_text() == \
        (ROOT / "config" / "enclave.conf").read_text()

    # The example configuration is the repository's, and it is valid as installed.
    example = dest / "etc/attestproxy/attestproxy.conf.example"
    assert example.read_text() == (ROOT / "config" / "attestproxy.conf").read_text()
    r = subprocess.run([str(binary), "check-config", "-c", str(example)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_docs_give_the_tested_recipe():
    for doc in ("README.md", "docs/operations.md"):
        text = (ROOT / doc).read_text()
        assert RECIPE_LINE + "\n" in text, f"{doc} does not give: {RECIPE_LINE}"
        assert "meson install -C build" in text, doc
        # What the docs tell the operator to copy is where the recipe installs it.
        assert "/etc/attestproxy/attestproxy.conf.example" in text, doc
    ops = (ROOT / "docs/operations.md").read_text()
    for path in EXPECTED:
        assert "/" + path in ops, f"docs/operations.md does not list /{path}"


def test_build_without_cmocka_leaves_the_unit_tests_out(tmp_path):
    """-Dtests=auto (the default) configures without cmocka; -Dtests=enabled refuses to."""
    # A pkg-config search path with every .pc file of the host's but cmocka's.
    pcdir = tmp_path / "pkgconfig"
    pcdir.mkdir()
    search = subprocess.run(["pkg-config", "--variable", "pc_path", "pkg-config"],
                            capture_output=True, text=True, check=True).stdout.strip()
    for d in search.split(":"):
        if os.path.isdir(d):
            for pc in os.listdir(d):
                if pc.endswith(".pc") and pc != "cmocka.pc" and not (pcdir / pc).exists():
                    (pcdir / pc).symlink_to(os.path.join(d, pc))
    env = dict(os.environ, PKG_CONFIG_LIBDIR=str(pcdir))
    env.pop("PKG_CONFIG_PATH", None)

    def setup(build, *options):
        return subprocess.run([MESON, "setup", *options, str(build), str(ROOT)], env=env,
                              capture_output=True, text=True, timeout=300)

    r = setup(tmp_path / "auto")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "cmocka not found: the unit tests are not built" in r.stdout
    tests = json.loads(run(MESON, "introspect", "--tests", str(tmp_path / "auto")).stdout)
    names = {t["name"] for t in tests}
    assert "verifier" not in names and "log" not in names
    assert {"replay_config", "replay_evidence", "replay_http1"} <= names

    r = setup(tmp_path / "enabled", "-Dtests=enabled")
    assert r.returncode != 0 and "cmocka" in r.stdout + r.stderr

    # With cmocka present (the normal environment), auto builds them.
    run(MESON, "setup", str(tmp_path / "normal"), str(ROOT))
    names = {t["name"] for t in json.loads(
        run(MESON, "introspect", "--tests", str(tmp_path / "normal")).stdout)}
    assert {"verifier", "log", "admin", "sdnotify"} <= names


def test_meson_install_lays_out_a_package(tmp_path):
    build_and_install(ROOT, tmp_path / "build", tmp_path / "dest")
    check_layout(tmp_path / "dest")

    # The unit directory is an option (e.g. /lib/systemd/system for a split-usr system).
    run(MESON, "configure", str(tmp_path / "build"), "-Dsystemd_unit_dir=/lib/systemd/system")
    run(MESON, "install", "-C", str(tmp_path / "build"), "--destdir", str(tmp_path / "dest2"),
        "--quiet")
    files = installed_files(tmp_path / "dest2")
    assert "lib/systemd/system/attestproxy.service" in files
    assert "lib/systemd/system/attestproxy.socket" in files
    assert not any(f.startswith("usr/lib/systemd") for f in files)


def test_installed_units_verify_in_the_installed_tree(tmp_path):
    """The notes' recipe: verify the installed units with --root=DESTDIR after copying the host's
    /lib/systemd/system into it (ExecStart must exist there, and it does: it was installed)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is missing (apt-get install systemd)")
    dest = tmp_path / "dest"
    build_and_install(ROOT, tmp_path / "build", dest)
    for link in ("bin", "sbin", "lib"):
        (dest / link).symlink_to("usr/" + link)
    (dest / "usr/bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2("/usr/bin/kill", dest / "usr/bin/kill")
    units = dest / "usr/lib/systemd/system"
    for entry in os.scandir("/lib/systemd/system"):
        target = units / entry.name
        if not target.exists() and not target.is_symlink():
            if entry.is_symlink():
                target.symlink_to(os.readlink(entry.path))
            elif entry.is_dir():
                shutil.copytree(entry.path, target, symlinks=True)
            else:
                shutil.copy2(entry.path, target)
    r = subprocess.run([analyze, "verify", "--man=no", f"--root={dest}",
                        str(units / "attestproxy.service"), str(units / "attestproxy.socket")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == "" and r.stdout == "", r.stderr


@pytest.mark.slow
def test_meson_dist_tarball_builds_and_installs(tmp_path):
    """meson dist needs a clean git tree of committed files: it runs in a clone of HEAD."""
    if shutil.which("git") is None:
        pytest.skip("git is missing")
    clone = tmp_path / "clone"
    run("git", "clone", "--quiet", str(ROOT), str(clone))
    run(MESON, "setup", str(tmp_path / "dist-build"), str(clone))
    run(MESON, "dist", "-C", str(tmp_path / "dist-build"), "--no-tests", "--formats", "xztar")
    dist = tmp_path / "dist-build" / "meson-dist"
    tarballs = list(dist.glob("attestproxy-*.tar.xz"))
    assert len(tarballs) == 1
    with tarfile.open(tarballs[0]) as tar:
        names = set(tar.getnames())
        top = tarballs[0].name[:-len(".tar.xz")]
        for f in ("meson.build", "meson_options.txt", "systemd/attestproxy.service.in",
                  "systemd/attestproxy.socket", "systemd/meson.build", "man/attestproxy.8.in",
                  "man/attestproxy.conf.5.in", "man/meson.build", "config/attestproxy.conf",
                  "daemon/ops/sdnotify.c", "daemon/base/metrics.c", "daemon/ops/admin.c"):
            assert f"{top}/{f}" in names, f
        tar.extractall(tmp_path / "unpacked")
    build_and_install(tmp_path / "unpacked" / top, tmp_path / "build", tmp_path / "dest")
    check_layout(tmp_path / "dest")
