"""A service listener passed by systemd socket activation is adopted, not bound again, and
serves attested traffic."""
import os
import signal
import socket

from conftest import free_port
from proxy_fixtures import Relay
from simulator import service_config


def test_service_listener_is_adopted(tmp_path, start_daemon, start_sim):
    sim = start_sim()
    port = free_port()
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(16)
    fd = lsock.fileno()

    def as_fd3():
        os.dup2(fd, 3)

    d = start_daemon(service_config(sim, port),
                     env={"LISTEN_FDS": "1", "LISTEN_FDNAMES": "demo"},
                     wrapper=["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh"],
                     preexec_fn=as_fd3, pass_fds=(fd, 3))
    lsock.close()  # only the daemon holds the listening socket now
    assert f"listen=127.0.0.1:{port} socket=adopted" in d.log()
    relay = Relay(d, sim, port)
    r = relay.get("/echo")
    assert r.status_code == 200
    assert [x["evidence"] for x in sim.requests()] == [True, False]
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0
