"""SIGTERM while something is stuck: the process exits within --grace-period + 2 s whatever blocks.

The real case: an owner's write reaches a mapping file that has become a FIFO, and open()
blocks under the writer lock (nothing would ever finish the write, the watcher or the
interpreter's exit). The mechanism itself (`ExitDeadline`) is also checked in-process with its
exit replaced, so it stays covered however the stuck cases are fixed one by one.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from pathlib import Path

import grpc
from consent.v1 import admin_pb2, admin_pb2_grpc
from google.protobuf import field_mask_pb2
from serving import serve_process

from consent_sidecar.process.deadline import EXIT_MARGIN, ExitDeadline

from .support import free_port, poll

GRACE = 1.0
OWNER = (("authorization", "Bearer owner-token"),)


def test_sigterm_with_a_write_stuck_on_a_fifo_exits_within_grace_plus_two_seconds(tmp_path: Path) -> None:
    principals = tmp_path / "principals.yaml"
    digest = hashlib.sha256(b"owner-token").hexdigest()
    principals.write_text(f"principals:\n  - id: alice\n    role: owner\n    token_sha256: {digest}\n")
    admin = f"127.0.0.1:{free_port()}"
    flags = ("--admin-listen", admin, "--principals", str(principals), "--grace-period", str(GRACE))
    with serve_process(tmp_path, *flags) as sc, grpc.insecure_channel(admin) as channel:
        sc.wait_started()
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        assert stub.GetCategory(admin_pb2.GetCategoryRequest(category_id="C0002"), metadata=OWNER, timeout=10).name
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        os.replace(fifo, tmp_path / "mappings.yaml")  # nothing ever writes to it: opening it blocks
        write = stub.UpdateCategory.future(
            admin_pb2.UpdateCategoryRequest(
                category_id="C0002", category=admin_pb2.Category(name="Renamed"),
                update_mask=field_mask_pb2.FieldMask(paths=["name"]),
            ),
            metadata=OWNER, timeout=60,
        )
        signalled = time.monotonic()
        sc.process.send_signal(signal.SIGTERM)
        code = sc.process.wait(GRACE + EXIT_MARGIN + 20)
        elapsed = time.monotonic() - signalled
        assert code == 0
        assert elapsed < GRACE + EXIT_MARGIN + 1.5, f"exited {elapsed:.1f} s after SIGTERM"
        assert poll(write.done, timeout=10)  # the stuck write's client got an answer (an error), not silence


def test_the_exit_deadline_ends_a_process_that_outlives_it_with_the_decided_code() -> None:
    exited: list[int] = []
    called = threading.Event()

    def fake_exit(code: int) -> None:
        exited.append(code)
        called.set()

    deadline = ExitDeadline(0.2, exit=fake_exit)
    deadline.code = 3
    armed = time.monotonic()
    deadline.arm()
    deadline.arm()  # the first call counts
    assert called.wait(10)
    assert exited == [3] and time.monotonic() - armed >= 0.2


def test_a_disarmed_exit_deadline_never_fires() -> None:
    called = threading.Event()
    deadline = ExitDeadline(0.2, exit=lambda code: called.set())
    deadline.arm()
    deadline.disarm()
    assert not called.wait(0.6)
