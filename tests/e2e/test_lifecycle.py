"""The daemon's lifecycle as an operator sees it: start, reload, stop, exit codes."""
import signal

import pytest

from conftest import minimal_config


def test_sigterm_stops_cleanly_with_exit_0(start_daemon):
    d = start_daemon(minimal_config())
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0
    log = d.log()
    assert "event=stopping signal=SIGTERM" in log
    assert "event=stopped" in log
    assert "handle_leak" not in log and "loop_close_failed" not in log


def test_sigint_stops_cleanly_with_exit_0(start_daemon):
    d = start_daemon(minimal_config())
    d.signal(signal.SIGINT)
    assert d.wait_exit() == 0
    assert "event=stopping signal=SIGINT" in d.log()


def test_sighup_with_broken_config_keeps_running(start_daemon):
    d = start_daemon(minimal_config())
    good = d.conf_path.read_text()
    d.conf_path.write_text(good + "no_such_key = 1\n")
    d.signal(signal.SIGHUP)
    log = d.wait_log("event=reload_rejected")
    line = [l for l in log.splitlines() if "event=reload_rejected" in l][0]
    assert "level=error" in line
    assert f"{d.conf_path}:" in line and "unknown key 'no_such_key'" in line
    assert "keeping the running configuration" in line
    assert d.proc.poll() is None, "daemon died on a bad reload"

    # A fixed file reloads fine afterwards, and the daemon still stops cleanly.
    d.conf_path.write_text(good)
    d.signal(signal.SIGHUP)
    d.wait_log("event=reload_applied")
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0


def test_sighup_applies_log_format(start_daemon):
    d = start_daemon(minimal_config())
    d.conf_path.write_text(d.conf_path.read_text().replace("[daemon]\n", "[daemon]\nlog_format = json\n"))
    d.signal(signal.SIGHUP)
    d.wait_log('"event":"reload_applied"')
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0
    assert '"event":"stopping","signal":"SIGTERM"' in d.log()


def test_invalid_config_at_start_exits_2(tmp_path, run_cli):
    conf = tmp_path / "bad.conf"
    conf.write_text(minimal_config() + "bogus = yes\n")
    r = run_cli("run", "-c", conf)
    assert r.returncode == 2
    assert f"{conf}:8: unknown key 'bogus'".encode() in r.stdout + r.stderr


def test_check_config_prints_effective_config(tmp_path, run_cli):
    conf = tmp_path / "ok.conf"
    conf.write_text(minimal_config(port=18080))
    r = run_cli("check-config", "-c", conf)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert "[service demo]\n" in out
    assert "listen = 127.0.0.1:18080\n" in out
    assert "max_age = 5m\n" in out  # a default, filled in
    assert "evidence_path = /.well-known/nitro-attestation\n" in out


def test_check_config_unknown_key_exits_2_with_file_and_line(tmp_path, run_cli):
    conf = tmp_path / "typo.conf"
    conf.write_text("[daemon]\nlog_levle = debug\n")
    r = run_cli("check-config", "-c", conf)
    assert r.returncode == 2
    assert r.stderr.decode().strip() == f"{conf}:2: unknown key 'log_levle' in [daemon]"


def test_check_config_warns_of_a_measurement_set_without_pcr0(tmp_path, run_cli):
    conf = tmp_path / "weak.conf"
    conf.write_text(minimal_config(port=18081, extra_service="measurement = pcr3=" + "ab" * 48 + "\n"))
    r = run_cli("check-config", "-c", conf)
    assert r.returncode == 0, r.stderr
    assert r.stderr.decode() == ("warning: service demo: measurement set 2 names no pcr0: any "
                                 "enclave image whose other PCRs match is admitted\n")
    ok = tmp_path / "ok.conf"
    ok.write_text(minimal_config(port=18082))
    assert run_cli("check-config", "-c", ok).stderr == b""


def test_check_config_example_file_is_valid(run_cli):
    from conftest import ROOT
    for name in ("attestproxy.conf",):
        r = run_cli("check-config", "-c", ROOT / "config" / name)
        assert r.returncode == 0, r.stderr.decode()


def test_missing_config_exits_2(run_cli):
    r = run_cli("check-config", "-c", "/nonexistent.conf")
    assert r.returncode == 2
    assert b"/nonexistent.conf: No such file or directory" in r.stderr


def test_help_and_version(run_cli):
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.startswith(b"attestproxy ")
    r = run_cli("--help")
    assert r.returncode == 0
    for word in (b"run", b"check-config", b"verify", b"Exit status"):
        assert word in r.stdout
    for cmd in ("run", "check-config"):
        r = run_cli(cmd, "--help")
        assert r.returncode == 0 and b"Usage: attestproxy" in r.stdout
        r2 = run_cli("help", cmd)
        assert r2.stdout == r.stdout


def test_usage_errors_exit_2(run_cli):
    assert run_cli("frobnicate").returncode == 2
    assert run_cli("check-config", "--bogus").returncode == 2
    assert run_cli("check-config", "-c").returncode == 2
    assert run_cli("check-config", "-c", "a", "extra").returncode == 2


@pytest.mark.parametrize("args,says", [
    (("audit", "verify", "--bogus", "x"), b"unknown option or missing value: --bogus"),
    (("audit", "verify", "--archive"), b"unknown option or missing value: --archive"),
    (("audit", "frob"), b"unknown subcommand 'frob'"),
    (("audit",), b"no subcommand (verify)"),
    (("audit", "verify", "--archive", "/tmp"), b"verify needs a FILE"),
    (("policy", "frob"), b"unknown subcommand 'frob'"),
    (("policy", "verify", "--bogus", "x"), b"unknown option or missing value: --bogus"),
    (("policy", "sign", "x"), b"policy sign: missing or extra arguments"),
    (("health", "--bogus"), b"unknown option or missing value: --bogus"),
    (("attest", "--bogus", "demo"), b"unknown option or missing value: --bogus"),
    (("verify", "--bogus", "x"), b"--bogus"),
    (("help", "bogus"), b"unknown command 'bogus' (see attestproxy --help)"),
    # A short option inside a cluster: getopt has not moved past the cluster yet.
    (("health", "-xh"), b"unknown option or missing value: -x"),
    (("audit", "verify", "-xh", "f"), b"unknown option or missing value: -x"),
    (("policy", "verify", "-xq", "f"), b"unknown option or missing value: -x"),
    (("check-config", "-xh"), b"unknown option or missing value: -x"),
    (("check-config", "-c"), b"unknown option or missing value: -c"),
])
def test_usage_errors_say_what_was_wrong(run_cli, args, says):
    r = run_cli(*args)
    assert r.returncode == 2
    assert says in r.stderr, r.stderr


def _policy_config(tmp_path, policy_text, port=None):
    from conftest import free_port
    pf = tmp_path / "svc.policy"
    pf.write_text(policy_text)
    return pf, (
        "[daemon]\nlog_level = debug\n[service demo]\n"
        f"listen = 127.0.0.1:{port or free_port()}\nupstream = 127.0.0.1:9\n"
        f"policy_file = {pf}\n"
    )


def test_policy_file_change_reloads_without_a_signal(tmp_path, start_daemon):
    from conftest import PCR_A
    pf, text = _policy_config(tmp_path, f"[policy]\nmeasurement = pcr0={PCR_A}\n")
    d = start_daemon(text)
    mark = len(d.log())
    # An invalid edit is rejected with the policy file's own file:line, and the daemon lives on.
    pf.write_text("[policy]\nmeasurement = pcr0=abc\n")
    log = d.wait_log("event=reload_rejected", start=mark)
    assert f"{pf}:2: measurement: pcr0 needs exactly 96 hex digits" in log[mark:]
    assert "event=policy_file_changed" in log[mark:]
    assert d.proc.poll() is None
    # A valid edit by atomic rename (what editors and config tools do) is applied.
    mark = len(d.log())
    tmp = tmp_path / "svc.policy.new"
    tmp.write_text(f"[policy]\nmeasurement = pcr0={'ab' * 48}\n")
    tmp.rename(pf)
    d.wait_log("event=reload_applied", start=mark)
    # And the watch survives the rename: a second edit is seen too.
    mark = len(d.log())
    pf.write_text(f"[policy]\nmeasurement = pcr0={'cd' * 48}\n")
    d.wait_log("event=reload_applied", start=mark)
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0


def test_policy_file_not_watched_when_disabled(tmp_path, start_daemon):
    import time
    from conftest import PCR_A
    pf, text = _policy_config(tmp_path, f"[policy]\nmeasurement = pcr0={PCR_A}\n")
    d = start_daemon(text + "watch_policy = no\n")
    mark = len(d.log())
    pf.write_text(f"[policy]\nmeasurement = pcr0={'ab' * 48}\n")
    time.sleep(0.8)
    assert "policy_file_changed" not in d.log()[mark:]
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0


def test_unloadable_root_ca_is_a_configuration_error(tmp_path, run_cli):
    """Exit 2 from run (the unit's RestartPreventExitStatus=2: no restart loop) and from
    check-config, which loads the root as run does; a missing file says why."""
    bad = tmp_path / "root.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    for root, why in ((bad, b"no PEM certificate"),
                      (tmp_path / "missing.pem", b"cannot open: No such file or directory")):
        conf = tmp_path / "c.conf"
        conf.write_text(minimal_config(extra_daemon=f"root_ca = {root}\n"))
        r = run_cli("run", "-c", conf)
        assert r.returncode == 2, r.stderr
        assert b"event=trust_root_failed" in r.stderr and why in r.stderr, r.stderr
        r = run_cli("check-config", "-c", conf)
        assert r.returncode == 2 and why in r.stderr, r.stderr


def test_a_fifo_where_a_file_is_expected_does_not_hold_a_reload(tmp_path, start_daemon):
    """root_ca, a token_file or the configuration itself replaced by a FIFO: the reload is
    rejected at once ("not a regular file"); it used to wait for a writer, and the daemon with
    it (its one loop)."""
    import os
    import time
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    d = start_daemon(minimal_config())
    good = d.conf_path.read_text()
    for text in (good.replace("[daemon]\n", f"[daemon]\nroot_ca = {fifo}\n", 1),
                 good + f"token_file = {fifo}\n"):
        d.conf_path.write_text(text)
        mark = len(d.log())
        t0 = time.monotonic()
        d.signal(signal.SIGHUP)
        log = d.wait_log("event=reload_rejected", start=mark)[mark:]
        assert time.monotonic() - t0 < 5
        assert "not a regular file" in log, log
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0


def test_reload_with_unloadable_root_ca_keeps_running(tmp_path, start_daemon):
    from conftest import ROOT
    aws = ROOT / "tests" / "vectors" / "nitro" / "aws-nitro-root-g1.pem"
    d = start_daemon(minimal_config(extra_daemon=f"root_ca = {aws}\n"))
    assert f"event=trust_root root_ca={aws}" in d.log()
    mark = len(d.log())
    d.conf_path.write_text(d.conf_path.read_text().replace(str(aws), "/nonexistent/root.pem"))
    d.signal(signal.SIGHUP)
    line = [l for l in d.wait_log("event=reload_rejected", start=mark)[mark:].splitlines()
            if "reload_rejected" in l][0]
    assert "/nonexistent/root.pem" in line
    assert d.proc.poll() is None
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0
