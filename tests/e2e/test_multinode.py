"""A real multi-node Ray cluster on this machine: placement, cross-node flow, and losing a worker node."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.paths import REPO_ROOT

from .conftest import database_url, free_port

pytestmark = pytest.mark.e2e
ROOT = REPO_ROOT


def test_multinode_cluster_spreads_actors_and_survives_a_lost_node(django_db_setup, django_db_blocker):
    from django.db import connection

    with django_db_blocker.unblock():
        url = database_url(connection.settings_dict)
    env = dict(os.environ, DATABASE_URL=url, DJANGO_SETTINGS_MODULE="web.settings")
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "tests.e2e.multinode_scenario", str(free_port()), str(free_port())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:] + proc.stdout[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"\nmulti-node report: {report}")
    assert report["nodes"] == 3
    assert report["courier_nodes"] == 3, "one courier (a mail server and its senders) per node"
    assert report["cross_node_pairs"] >= 1, "SMTP on one node, the courier it kicks on another"
    assert report["actors_on_removed_node"] >= 1
    assert report["lost"] == []
