"""The audit log (audit_log) with the real binary and the enclave simulator: attestation
verdicts, policy changes, pin cuts and reloads are chained records; `attestproxy audit verify`
finds an edited, a deleted and a reordered record, checks the chain across rotated files,
re-verifies archived documents at their own time, and reports a torn last line with its line
number while the records before it verify; a restart continues the chain."""
import json
import signal

import pytest

from conftest import free_port
from proxy_fixtures import Relay, wait_listening, wait_until
from simulator import service_config


@pytest.fixture
def audited(tmp_path, start_sim, start_daemon):
    """start(extra_daemon="") -> (Relay, log path, archive dir)."""
    sim = start_sim()
    log, archive = tmp_path / "audit.jsonl", tmp_path / "evidence"
    started = []

    def start(extra_daemon="", extra_service=""):
        port = free_port()
        d = start_daemon(service_config(
            sim, port, extra_service,
            f"audit_log = {log}\naudit_archive = {archive}\n" + extra_daemon))
        wait_listening(port)
        r = Relay(d, sim, port)
        started.append(r)
        return r

    return start, log, archive


def records(path):
    return [json.loads(l) for l in path.read_text().splitlines()]


def verify(run_cli, *args):
    r = run_cli("audit", "verify", *map(str, args))
    return r.returncode, r.stdout.decode() + r.stderr.decode()


def test_events_are_chained_and_archived_documents_reverify(audited, run_cli):
    start, log, archive = audited
    relay = start()
    assert relay.get("/echo").status_code == 200
    relay.daemon.signal(signal.SIGHUP)
    relay.daemon.wait_log("event=reload_applied")
    wait_until(lambda: any(r["type"] == "reload" for r in records(log)), "the reload record")
    recs = records(log)
    types = [r["type"] for r in recs]
    assert "attestation" in types and "reload" in types
    att = next(r for r in recs if r["type"] == "attestation")
    assert att["verdict"] == "verified" and att["reason"] == "ok"
    assert att["pcrs"]["pcr0"] == relay.sim.pcrs["pcr0"].lower()
    assert len(att["document_sha256"]) == 64 and len(att["pin"]) == 64
    assert (archive / (att["document_sha256"] + ".evidence")).exists()
    assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))

    code, out = verify(run_cli, "--archive", archive, "--root-ca", relay.sim.root, log)
    assert code == 0, out
    assert "archived documents verified" in out and ", 0 archived" not in out

    # A policy change drops the pins: a pin record with its reason.
    conf = relay.daemon.conf_path
    conf.write_text(conf.read_text() + "measurement = pcr0=" + "ab" * 48 + "\n")
    mark = len(relay.daemon.log())
    relay.daemon.signal(signal.SIGHUP)
    relay.daemon.wait_log("event=reload_applied", start=mark)
    wait_until(lambda: any(r["type"] == "pin" for r in records(log)), "the pin record")
    pin = next(r for r in records(log) if r["type"] == "pin")
    assert pin["event"] == "policy_enforced" and pin["reason"] == "policy_changed"
    # A rejected attestation is a verdict record with the verifier's reason.
    # (the policy changes again, so the warm attestation runs now and finds other PCRs).
    relay.sim.misbehave("wrong_pcrs")
    conf.write_text(conf.read_text() + "measurement = pcr0=" + "cd" * 48 + "\n")
    relay.daemon.signal(signal.SIGHUP)

    def rejected():
        return [r for r in records(log)
                if r["type"] == "attestation" and r["verdict"] == "rejected"]
    wait_until(rejected, "a rejected attestation record")
    assert rejected()[-1]["reason"] == "policy_pcr_mismatch", rejected()
    code, out = verify(run_cli, log)
    assert code == 0, out


def tamper(path, out, how):
    lines = path.read_text().splitlines(keepends=True)
    assert len(lines) >= 4
    if how == "edit":
        rec = json.loads(lines[1])
        rec["type"] = "reload" if rec["type"] != "reload" else "attestation"
        lines[1] = json.dumps(rec, separators=(",", ":")) + "\n"
    elif how == "delete":
        del lines[1]
    elif how == "reorder":
        lines[1], lines[2] = lines[2], lines[1]
    out.write_text("".join(lines))
    return out


@pytest.mark.parametrize("how,want", [
    ("edit", ":2: prev is not the hash"),   # line 3 no longer links to the edited line 2
    ("delete", ":2: seq 3 follows seq 1"),
    ("reorder", ":2: seq 3 follows seq 1"),
])
def test_an_edited_deleted_or_reordered_record_is_detected(audited, run_cli, tmp_path, how, want):
    start, log, _ = audited
    relay = start()
    for _ in range(3):
        n = len(records(log))  # counted before the signal: its record may come at once
        relay.daemon.signal(signal.SIGHUP)
        wait_until(lambda n=n: len(records(log)) > n, "a reload record")
    code, out = verify(run_cli, log)
    assert code == 0, out
    bad = tamper(log, tmp_path / f"{how}.jsonl", how)
    code, out = verify(run_cli, bad)
    assert code == 1, out
    if how == "edit":
        want = ":3: prev is not the hash"
    assert f"{bad}{want}" in out, out


def test_rotation_keeps_one_chain_across_files(audited, run_cli):
    start, log, _ = audited
    relay = start(extra_daemon="audit_max_bytes = 1k\n")
    for i in range(12):
        mark = len(relay.daemon.log())
        relay.daemon.signal(signal.SIGHUP)
        relay.daemon.wait_log(f"event=reload_applied config={relay.daemon.conf_path}", start=mark)
    files = sorted(log.parent.glob("audit.jsonl.*"), key=lambda p: -int(p.suffix[1:]))
    assert len(files) >= 2
    code, out = verify(run_cli, *files, log)
    assert code == 0, out
    # The newest file alone verifies, and says its chain starts earlier.
    code, out = verify(run_cli, log)
    assert code == 0 and "starts in an earlier file" in out, out
    # A missing middle file breaks the chain.
    code, out = verify(run_cli, files[0], log)
    assert code == 1 and "follows seq" in out, out


def test_kill_9_leaves_a_verifiable_log_and_a_torn_tail_is_reported(audited, run_cli):
    start, log, _ = audited
    relay = start(extra_daemon="audit_fsync = none\n")
    for i in range(5):
        relay.daemon.signal(signal.SIGHUP)
        wait_until(lambda: sum(r["type"] == "reload" for r in records(log)) == i + 1,
                   f"{i + 1} reload records")
    relay.daemon.proc.send_signal(signal.SIGKILL)
    relay.daemon.proc.wait(timeout=10)
    code, out = verify(run_cli, log)
    assert code == 0, out
    n = len(log.read_text().splitlines())

    # What a write cut short by a crash leaves: a record without its end and newline. (One
    # write() per record does not tear under SIGKILL alone; a power loss or a full disk can.)
    with open(log, "a") as f:
        f.write('{"seq":%d,"ts":"2026-12-06T05:01:11.123Z","prev":"ab' % (n + 1))
    code, out = verify(run_cli, log)
    assert code == 3, out
    assert f"{log}:{n + 1}: torn record" in out
    assert f"torn: {n} records" in out

    # The next start cuts the fragment, records that it did, and the chain continues.
    relay = start()
    wait_until(lambda: log.read_text().endswith("\n") and
               any(r["type"] == "recovered" for r in records(log)), "the recovered record")
    rec = next(r for r in records(log) if r["type"] == "recovered")
    assert rec["seq"] == n + 1 and rec["torn_bytes"] > 0
    code, out = verify(run_cli, log)
    assert code == 0, out


def test_an_endless_line_is_a_finding_not_a_memory_blow_up(tmp_path):
    """A tampered log with one 64 MiB line: a finding, in bounded memory (getline() grew to
    the line's size)."""
    import subprocess
    import sys
    from conftest import BIN
    log = tmp_path / "audit.jsonl"
    with open(log, "wb") as f:
        f.write(b"x" * (64 << 20) + b"\n")
    # A fresh interpreter runs it, so that its children's peak RSS is this command's alone.
    probe = ("import resource, subprocess, sys\n"
             "r = subprocess.run(sys.argv[1:], capture_output=True)\n"
             "sys.stdout.write(r.stdout.decode() + r.stderr.decode())\n"
             "print('maxrss', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
             "sys.exit(r.returncode)\n")
    r = subprocess.run([sys.executable, "-c", probe, BIN, "audit", "verify", str(log)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stdout
    assert "line longer than any record" in r.stdout
    peak_kib = int(r.stdout.rsplit("maxrss ", 1)[1])
    assert peak_kib < 32 * 1024, peak_kib
