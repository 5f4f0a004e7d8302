"""Locust users for `mlops.adapters.loadtest`: each posts one-row requests back to back (closed loop)."""

import itertools
import os

from locust import FastHttpUser, task

with open(os.environ["MLOPS_LOADTEST_PAYLOADS"]) as handle:
    PAYLOADS = [line for line in handle.read().splitlines() if line]


class ModelClient(FastHttpUser):
    def on_start(self) -> None:
        self.bodies = itertools.cycle(PAYLOADS[hash(id(self)) % len(PAYLOADS) :] + PAYLOADS)

    @task
    def invoke(self) -> None:
        self.client.post(
            "/invocations", data=next(self.bodies), headers={"Content-Type": "application/json"}, name="/invocations"
        )
