"""A Celery pool process freezes its startup heap when it starts (run in a child: freezing the test process would
keep its garbage from the collector for the rest of the run)."""

import subprocess
import sys

SCRIPT = """
import gc
from celery import signals
import federation.jobs.celery_app  # connects the handler
before = gc.get_freeze_count()
signals.worker_process_init.send(sender=None)
print(before, gc.get_freeze_count())
"""


def test_a_pool_process_freezes_what_it_started_with():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=True)
    before, after = map(int, out.stdout.split())
    assert before == 0 and after > 10_000
