"""The documentation matches the code it documents."""
from conftest import ROOT


def test_configuration_reference_matches_key_table(run_cli):
    r = run_cli("check-config", "--reference")
    assert r.returncode == 0
    doc = (ROOT / "docs" / "configuration.md").read_text()
    begin = doc.index("<!-- BEGIN KEY REFERENCE (scripts/gen-config-doc) -->")
    end = doc.index("<!-- END KEY REFERENCE -->")
    block = doc[begin:end].split("\n", 1)[1]
    assert block == r.stdout.decode(), "docs/configuration.md is stale: run scripts/gen-config-doc"


def test_example_config_mentions_every_key(run_cli):
    ref = run_cli("check-config", "--reference").stdout.decode()
    example = (ROOT / "config" / "attestproxy.conf").read_text()
    keys = [line.split("`")[1] for line in ref.splitlines() if line.startswith("| `")]
    missing = sorted({k for k in keys if k not in example})
    assert not missing, f"config/attestproxy.conf does not document: {missing}"
