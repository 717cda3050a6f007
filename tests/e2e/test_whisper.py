"""The origin use case: curl uploads a 10 MiB audio file as multipart to /whisper/predict through
the daemon, and the enclave sees exactly those bytes."""
import hashlib
import json
import os
import subprocess


def test_whisper_multipart_upload_10mib(relay, tmp_path):
    audio = tmp_path / "taunt.wav"
    data = os.urandom(10 << 20)
    audio.write_bytes(data)
    r = subprocess.run(["curl", "--silent", "--show-error", "--noproxy", "*", "--max-time", "60",
                        "-F", f"audio=@{audio}", relay.url + "/whisper/predict"],
                       capture_output=True, timeout=90)
    assert r.returncode == 0, r.stderr.decode()
    out = json.loads(r.stdout)
    assert out["bytes"] == len(data)
    assert out["sha256"] == hashlib.sha256(data).hexdigest()
    assert isinstance(out["text"], str)
    assert relay.sim.stats()["evidence_requests"] == 1
