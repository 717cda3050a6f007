"""Signed policy bundles (docs/policy-bundles.md) with the real binary in front of the enclave
simulator: the bundle in force admits the enclave; a lower version, a bad signature, an unknown
key, an expired or a malformed bundle is refused with its reason, counted in /metrics, and
leaves the policy in force; the highest accepted version survives a restart (state_dir); a
bundle past its expiry refuses new attestations with 503 policy_expired."""
import re
import signal
import time
import urllib.request

import pytest

from bundle_helpers import Signer, body, bundle_config, utc
from conftest import free_port
from proxy_fixtures import Relay, wait_listening, wait_until

VERSION_RE = r"event=policy_bundle_refused service=demo file=\S+ reason={}"


def metrics(admin):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10) as r:
        return r.read().decode()


def refused_count(admin, reason):
    m = re.search(r'^attestproxy_policy_bundle_refused_total\{service="demo",reason="%s"\} (\d+)$'
                  % reason, metrics(admin), re.M)
    return int(m.group(1)) if m else 0


def replace(path, text):
    """Writes `text` next to `path`, then renames it over: how bundles are published."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    tmp.rename(path)


@pytest.fixture
def setup(tmp_path, start_sim, start_daemon):
    """(sim, signer, bundle path, state dir, start(extra_service, wait) -> Relay)."""
    sim = start_sim()
    signer = Signer(tmp_path, "release")
    bundle = tmp_path / "demo.bundle"
    state = tmp_path / "state"

    def start(extra_service="", extra_daemon="", wait=True):
        port = free_port()
        d = start_daemon(bundle_config(sim, port, bundle, [signer.config_line], state,
                                       extra_service, extra_daemon), wait=wait)
        if wait:
            wait_listening(port)
        return Relay(d, sim, port)

    return sim, signer, bundle, state, start


def test_a_lower_version_is_refused_while_running_and_after_a_restart(setup):
    sim, signer, bundle, state, start = setup
    bundle.write_text(signer.sign(body(sim.pcrs, 2)))
    relay = start()
    assert relay.get("/echo").status_code == 200
    assert "version 2" in (state / "policy-bundle.demo").read_text()

    # Rolled back on disk to an older, validly signed release: refused, version 2 stays.
    mark = len(relay.daemon.log())
    replace(bundle, signer.sign(body(sim.pcrs, 1)))
    relay.daemon.wait_log("reason=rollback", start=mark)
    assert "keeping the policy bundle in force" in relay.daemon.log()[mark:]
    assert relay.get("/echo").status_code == 200
    assert "version 2" in (state / "policy-bundle.demo").read_text()

    # A restart reads the old file again: the state directory still says 2.
    relay.daemon.stop()
    relay = start()
    log = relay.daemon.wait_log("event=policy_bundle_applied")
    assert re.search(VERSION_RE.format("rollback"), log), log
    assert "source=state_dir version=2" in log
    assert relay.get("/echo").status_code == 200

    # A higher version is accepted and becomes the new floor.
    mark = len(relay.daemon.log())
    replace(bundle, signer.sign(body(sim.pcrs, 3)))
    relay.daemon.wait_log("source=policy_bundle version=3", start=mark)
    assert "version 3" in (state / "policy-bundle.demo").read_text()


def test_bad_signature_unknown_key_expired_and_malformed_are_refused_and_counted(
        setup, tmp_path, run_cli):
    sim, signer, bundle, state, start = setup
    admin = free_port()
    bundle.write_text(signer.sign(body(sim.pcrs, 5)))
    relay = start(extra_service="negative_cache = 0s\n",
                  extra_daemon=f"admin_listen = 127.0.0.1:{admin}\n")
    assert relay.get("/echo").status_code == 200

    stranger = Signer(tmp_path, "stranger")
    good = signer.sign(body(sim.pcrs, 9))
    tampered = good.replace("version 9", "version 10")
    cases = [
        ("bad_signature", tampered),
        ("unknown_key", stranger.sign(body(sim.pcrs, 9))),
        ("expired", signer.sign(body(sim.pcrs, 9, issued=utc(-7200), expires=utc(-3600)))),
        ("malformed", good.replace("allow_debug no\n", "allow_debug no\ncomment hi\n")),
        ("not_for_service", signer.sign(body(sim.pcrs, 9, services=("other",)))),
    ]
    for reason, text in cases:
        mark = len(relay.daemon.log())
        replace(bundle, text)
        relay.daemon.wait_log(f"reason={reason}", start=mark)
        wait_until(lambda: refused_count(admin, reason) == 1, f"{reason} counted once")
    for reason, _ in cases:
        assert refused_count(admin, reason) == 1, reason

    # The policy in force (version 5) still admits the enclave: also a new key, attested now.
    sim.rotate_key()
    r = relay.get("/echo")
    assert r.status_code == 200, r.text
    assert "version 5" in (state / "policy-bundle.demo").read_text()

    # The offline check agrees.
    (tmp_path / "tampered").write_text(tampered)
    r = run_cli("policy", "verify", "--key", signer.key, tmp_path / "tampered")
    assert r.returncode == 1 and b"bad_signature" in r.stderr
    (tmp_path / "good").write_text(good)
    r = run_cli("policy", "verify", "--key", stranger.key, tmp_path / "good")
    assert r.returncode == 1 and b"unknown_key" in r.stderr
    r = run_cli("policy", "verify", "--key", stranger.key, "--key", signer.key, tmp_path / "good")
    assert r.returncode == 0 and b"version 9 signed by release" in r.stdout


def test_a_refused_bundle_at_start_without_a_valid_one_in_force_exits_2(setup):
    sim, signer, bundle, state, start = setup
    bundle.write_text(signer.sign(body(sim.pcrs, 1)).replace("version 1", "version 2"))
    relay = start(wait=False)
    assert relay.daemon.wait_exit() == 2
    log = relay.daemon.log()
    assert f"{bundle}: policy bundle refused: bad_signature" in log
    assert not (state / "policy-bundle.demo").exists()


def test_an_expired_bundle_refuses_new_attestations_with_policy_expired(setup):
    sim, signer, bundle, state, start = setup
    expires = time.time() + 3
    bundle.write_text(signer.sign(body(sim.pcrs, 1, expires=utc(3))))
    relay = start(extra_service="warm_attestation = no\nnegative_cache = 0s\n")
    wait_until(lambda: time.time() > expires + 0.2, "the bundle's expiry", timeout=10)
    r = relay.get("/echo")
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "policy_expired"
    assert sim.stats()  # the simulator is up: the refusal is the policy's


def test_policy_expiry_grace_keeps_admitting_after_expires(setup):
    sim, signer, bundle, state, start = setup
    expires = time.time() + 3
    bundle.write_text(signer.sign(body(sim.pcrs, 1, expires=utc(3))))
    relay = start(extra_service="warm_attestation = no\npolicy_expiry_grace = 1h\n")
    wait_until(lambda: time.time() > expires + 0.2, "the bundle's expiry", timeout=10)
    assert relay.get("/echo").status_code == 200


def test_a_reload_that_removes_the_signing_key_stops_trusting_its_bundle(setup, tmp_path):
    """Removing a leaked key is the revocation: the reload that drops it applies, the bundle it
    signed leaves force with it, and every attestation is refused (fail closed) until a bundle
    a remaining key signed is in place; then the service works again. (The reload used to be
    rejected, which kept the removed key and its bundle trusted.)"""
    sim, signer, bundle, state, start = setup
    bundle.write_text(signer.sign(body(sim.pcrs, 4)))
    relay = start(extra_service="negative_cache = 0s\n")
    assert relay.get("/echo").status_code == 200
    served = len(relay.app_requests())
    successor = Signer(tmp_path, "successor")
    conf = relay.daemon.conf_path
    conf.write_text(conf.read_text().replace(signer.config_line, successor.config_line))

    mark = len(relay.daemon.log())
    log = reload_outcome(relay.daemon)
    assert "event=reload_applied" in log and "unknown_key" in log, log
    assert "event=policy_bundle_revoked service=demo" in log, log
    assert "keeping the policy bundle in force" not in log, log
    for _ in range(3):
        r = relay.get("/echo")
        assert r.status_code in (502, 503), r.text
        assert "no measurement sets" in r.json()["error"]["message"], r.text
    assert len(relay.app_requests()) == served  # nothing reached the enclave's application

    replace(bundle, successor.sign(body(sim.pcrs, 5)))
    relay.daemon.wait_log("source=policy_bundle version=5", start=mark)
    wait_until(lambda: relay.get("/echo").status_code == 200, "served again under version 5")
    assert "version 5" in (state / "policy-bundle.demo").read_text()


def test_the_same_version_signed_again_is_the_same_bundle(setup, tmp_path):
    """Key rotation step 2 (docs/policy-bundles.md): the bundle in force signed once more by the
    new key is the same bundle, not a reused version; other content under the same version is."""
    sim, signer, bundle, state, start = setup
    text = signer.sign(body(sim.pcrs, 6))
    bundle.write_text(text)
    relay = start()
    successor = Signer(tmp_path, "successor")
    mark = len(relay.daemon.log())
    replace(bundle, successor.sign(text))  # one more signature line
    log = reload_outcome(relay.daemon)
    assert "reason=version_reused" not in relay.daemon.log()[mark:], log
    assert relay.get("/echo").status_code == 200

    mark = len(relay.daemon.log())
    replace(bundle, signer.sign(body(sim.pcrs, 6, extra_sets=("pcr0=" + "ab" * 48,))))
    relay.daemon.wait_log("reason=version_reused", start=mark)


def test_check_config_verifies_the_bundle_and_attest_writes_nothing(setup, tmp_path, run_cli):
    """check-config catches a bundle that start or a reload would refuse; neither it nor the
    one-shot `attest` writes state_dir (they may run as another user than the service)."""
    sim, signer, bundle, state, _ = setup
    conf = tmp_path / "attestproxy.conf"
    conf.write_text(bundle_config(sim, free_port(), bundle, [signer.config_line], state))
    good = signer.sign(body(sim.pcrs, 4))
    bundle.write_text(good)
    r = run_cli("check-config", "-c", conf)
    assert r.returncode == 0, r.stderr
    assert b"event=policy_bundle_verified" in r.stderr and b"bundle_applied" not in r.stderr
    r = run_cli("attest", "-c", conf, "demo")
    assert r.returncode == 0, r.stderr
    assert b'"verdict"' in r.stdout or b'"pin"' in r.stdout
    assert not (state / "policy-bundle.demo").exists()

    bundle.write_text(good.replace("version 4", "version 5"))
    r = run_cli("check-config", "-c", conf)
    assert r.returncode == 2
    assert b"policy bundle refused: bad_signature" in r.stderr, r.stderr
    bundle.write_text(signer.sign(body(sim.pcrs, 4, services=("other",))))
    r = run_cli("check-config", "-c", conf)
    assert r.returncode == 2 and b"not_for_service" in r.stderr, r.stderr
    assert not (state / "policy-bundle.demo").exists()


def test_check_config_refuses_a_bad_bundle_file_even_with_a_good_one_in_state_dir(setup, tmp_path,
                                                                                 run_cli):
    """On a host that ran once, state_dir holds an accepted bundle that run would fall back to;
    check-config still judges the file: a rollback or an expired bundle exits 2."""
    sim, signer, bundle, state, start = setup
    bundle.write_text(signer.sign(body(sim.pcrs, 5)))
    relay = start()
    assert relay.get("/echo").status_code == 200
    relay.daemon.stop()
    assert "version 5" in (state / "policy-bundle.demo").read_text()
    conf = relay.daemon.conf_path
    cases = [("rollback", signer.sign(body(sim.pcrs, 4))),
             ("expired", signer.sign(body(sim.pcrs, 6, issued=utc(-7200), expires=utc(-3600))))]
    for reason, text in cases:
        bundle.write_text(text)
        r = run_cli("check-config", "-c", conf)
        assert r.returncode == 2, (reason, r.stderr)
        assert f"policy bundle refused: {reason}".encode() in r.stderr, r.stderr
    bundle.write_text(signer.sign(body(sim.pcrs, 6)))
    assert run_cli("check-config", "-c", conf).returncode == 0
    assert "version 5" in (state / "policy-bundle.demo").read_text()  # nothing written



def test_a_new_bundle_moves_the_policy_generation(setup):
    """A new bundle version with the same measurement sets changes what is trusted (its expiry,
    its signer, its place in the version order): the generation moves; a reload of the same
    file does not."""
    sim, signer, bundle, state, start = setup
    admin = free_port()
    issued, expires = utc(-60), utc(86400)  # the same for both versions: only the version moves
    bundle.write_text(signer.sign(body(sim.pcrs, 1, issued=issued, expires=expires)))
    relay = start(extra_daemon=f"admin_listen = 127.0.0.1:{admin}\n")

    def generation():
        m = re.search(r"^attestproxy_policy_generation (\d+)$", metrics(admin), re.M)
        return int(m.group(1))

    def reload():
        mark = len(relay.daemon.log())
        relay.daemon.signal(signal.SIGHUP)
        relay.daemon.wait_log("event=reload_applied", start=mark)

    assert generation() == 0
    reload()
    assert generation() == 0
    replace(bundle, signer.sign(body(sim.pcrs, 2, issued=issued, expires=expires)))
    relay.daemon.wait_log("source=policy_bundle version=2")
    wait_until(lambda: generation() == 1, "the generation after version 2")


def reload_outcome(daemon):
    """SIGHUP, then the log written since, once it says whether the reload applied."""
    mark = len(daemon.log())
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: "event=reload_applied" in daemon.log()[mark:] or
               "event=reload_rejected" in daemon.log()[mark:], "the reload's outcome")
    return daemon.log()[mark:]


def test_removing_the_only_key_revokes_and_a_restart_refuses(setup, tmp_path):
    """The usual set-up has one key: removing it (no successor yet) still revokes on a running
    daemon — announced once, however many reloads follow — and a restart with no trusted key
    does not start (exit 2)."""
    from conftest import Daemon
    sim, signer, bundle, state, start = setup
    bundle.write_text(signer.sign(body(sim.pcrs, 3)))
    relay = start(extra_service="negative_cache = 0s\n")
    assert relay.get("/echo").status_code == 200
    conf = relay.daemon.conf_path
    conf.write_text(conf.read_text().replace(signer.config_line + "\n", ""))
    for i in range(2):
        log = reload_outcome(relay.daemon)
        assert "event=reload_applied" in log, log
        assert ("event=policy_bundle_revoked" in log) == (i == 0), log
        assert relay.get("/echo").status_code in (502, 503)
    relay.daemon.stop()
    d = Daemon(conf, tmp_path / "restart.log")
    assert d.wait_exit() == 2
    assert "unknown_key" in d.log()


def test_a_bad_bundle_for_a_service_that_had_none_rejects_the_reload(setup, tmp_path):
    """Moving a service from inline measurements to a bundle that is refused is not a
    revocation: the reload is rejected and the inline policy stays."""
    from conftest import Daemon
    sim, signer, bundle, state, start = setup
    bundle.write_text(signer.sign(body(sim.pcrs, 1)))
    relay = start()
    conf = relay.daemon.conf_path
    inline = conf.read_text().replace(f"policy_bundle = {bundle}\n", sim.measurement())
    relay.daemon.stop()
    conf.write_text(inline)
    d = Daemon(conf, tmp_path / "inline.log")
    try:
        d.wait_log("event=started")
        import shutil
        shutil.rmtree(state)  # no accepted bundle to fall back on
        bundle.write_text(signer.sign(body(sim.pcrs, 2)).replace("version 2", "version 9"))
        conf.write_text(inline.replace(sim.measurement(), f"policy_bundle = {bundle}\n"))
        log = reload_outcome(d)
        assert "event=reload_rejected" in log and "bad_signature" in log, log
        assert "policy_bundle_revoked" not in log
    finally:
        d.stop()

