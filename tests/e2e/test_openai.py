"""The Node `openai` package, unmodified, pointed at the daemon: a plain and a streaming chat
completion. Every streamed event reaches the SDK before the simulator sends the next one."""
import json
import subprocess


def run_client(script, relay, mode):
    r = subprocess.run(["node", str(script), relay.url + "/v1", mode, "sim-model"],
                       capture_output=True, timeout=90)
    lines = [json.loads(line) for line in r.stdout.decode().splitlines() if line.strip()]
    assert r.returncode == 0, (r.stdout + r.stderr).decode()
    return lines


def test_openai_plain_completion(openai_sdk, relay):
    lines = run_client(openai_sdk, relay, "plain")
    assert lines[-1]["kind"] == "done"
    assert lines[-1]["content"] == "Attested hello from the enclave."
    assert relay.sim.stats()["evidence_requests"] == 1
    assert [r["path"] for r in relay.app_requests()] == ["/v1/chat/completions"]


def test_openai_streaming_completion_event_by_event(openai_sdk, start_relay):
    relay = start_relay(sim_args=("--sse-interval", "400"))
    lines = run_client(openai_sdk, relay, "stream")
    chunks = [line for line in lines if line["kind"] == "chunk"]
    assert lines[-1]["kind"] == "done"
    assert lines[-1]["content"] == "Attested hello from the enclave."
    assert [c["seq"] for c in chunks] == list(range(len(chunks)))
    assert len(chunks) >= 6
    # Each chunk was in the SDK's hands before the simulator sent the next (400 ms later):
    # nothing in between buffered the stream.
    for c, nxt in zip(chunks, chunks[1:]):
        assert c["at"] < nxt["sent_at"], f"chunk {c['seq']} arrived after chunk {nxt['seq']} was sent"
