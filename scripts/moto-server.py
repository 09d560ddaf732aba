"""Runs moto's server (SQS and SNS for the queue tests) with SQS receives made atomic.

moto serves each request on its own thread and its ReceiveMessage checks that
a message is visible, then marks it received, without a lock: two consumers
polling one queue at the same moment can both get the same message, which real
SQS never does within the visibility timeout (and FIFO queues never at all).
The competing-consumer tests saw exactly that once. Here every SQS call that
reads or changes a queue's messages holds one lock; a long-polling receive
holds it only while it looks, never while it waits.

Usage: moto-server.py HOST PORT (run with the moto venv's python).
"""

import functools
import sys
import threading
import time

from moto.server import main
from moto.sqs.models import SQSBackend

_LOCK = threading.RLock()
_POLL_SECONDS = 0.05


def _locked(method):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with _LOCK:
            return method(*args, **kwargs)

    return wrapper


for _name in (
    "send_message",
    "send_message_batch",
    "delete_message",
    "delete_message_batch",
    "change_message_visibility",
    "change_message_visibility_batch",
    "purge_queue",
):
    if hasattr(SQSBackend, _name):
        setattr(SQSBackend, _name, _locked(getattr(SQSBackend, _name)))

_receive = SQSBackend.receive_message


@functools.wraps(_receive)
def _receive_atomically(self, queue_name, count, wait_seconds_timeout, visibility_timeout, *args, **kwargs):
    end = time.monotonic() + (wait_seconds_timeout or 0)
    while True:
        with _LOCK:
            found = _receive(self, queue_name, count, 0, visibility_timeout, *args, **kwargs)
        if found or time.monotonic() >= end:
            return found
        time.sleep(_POLL_SECONDS)


SQSBackend.receive_message = _receive_atomically

if __name__ == "__main__":
    host, port = sys.argv[1], sys.argv[2]
    main(["-H", host, "-p", port])
