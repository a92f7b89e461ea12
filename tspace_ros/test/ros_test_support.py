"""Helpers for tests that run ROS 2 nodes: spinning until a condition, node processes."""

import pathlib
import time
from typing import Callable

import rclpy
from rclpy.executors import SingleThreadedExecutor

from tspace_ros.node_process import NodeProcess  # noqa: F401 - for the tests

PACKAGE_DIR = pathlib.Path(__file__).resolve().parents[1]
REPO_ROOT = PACKAGE_DIR.parent


def lint_paths():
    """Return the paths the linters check: this package, plus the repository's tools."""
    extras = [REPO_ROOT / name for name in ('tools', 'bench')]
    return [str(PACKAGE_DIR)] + [str(path) for path in extras if path.is_dir()]


def spin_until(executor, predicate: Callable[[], bool], timeout_s: float) -> bool:
    """Spin the executor until predicate() is true or timeout_s passes; return predicate()."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return predicate()
        executor.spin_once(timeout_sec=min(0.05, remaining))
    return True


def poll_until(predicate: Callable[[], object], timeout_s: float = 10.0,
               period_s: float = 0.02):
    """Call predicate() (no ROS spin) until it returns something true; return it, or fail."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out after {timeout_s} s')
        time.sleep(period_s)


def spin_for(executor, duration_s: float) -> None:
    """Spin the executor for duration_s (to observe that something does NOT happen)."""
    deadline = time.monotonic() + duration_s
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=min(0.05, max(0.0, deadline - time.monotonic())))


def call(executor, client, request, timeout_s: float = 10.0):
    """Call a service and spin until the response arrives; fail the test on time-out."""
    future = client.call_async(request)
    assert spin_until(executor, future.done, timeout_s), \
        f'no response from {client.srv_name} within {timeout_s} s'
    return future.result()


class RosContext:
    """An rclpy context and executor of the test's own; shut down on exit."""

    def __init__(self, executor_class=SingleThreadedExecutor):
        """Choose the executor class (MultiThreadedExecutor for blocking callbacks)."""
        self._executor_class = executor_class

    def __enter__(self):
        """Initialise rclpy in a fresh context."""
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.executor = self._executor_class(context=self.context)
        self._nodes = []
        return self

    def node(self, name: str, namespace: str = ''):
        """Create a node in this context and add it to the executor."""
        node = rclpy.create_node(name, namespace=namespace, context=self.context)
        self.executor.add_node(node)
        self._nodes.append(node)
        return node

    def __exit__(self, *exc):
        """Destroy the nodes and shut the context down."""
        self.executor.shutdown()
        for node in self._nodes:
            node.destroy_node()
        rclpy.try_shutdown(context=self.context)
