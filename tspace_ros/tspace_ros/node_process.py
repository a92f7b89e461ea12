"""
Run tspace_ros nodes as processes of their own, and stop them by PID.

What ``ros2 launch`` does for each node, for the single-process bringup's
launcher and for tests: ``python -m <module> --ros-args ...`` with the
environment of this process, output to a log file, stopped with SIGTERM (the
node shuts down through its lifecycle) and SIGKILL only if that hangs.
"""

import os
import pathlib
import signal
import subprocess
import sys
from typing import Optional, Sequence


class NodeProcess:
    """A node in its own process, stopped by PID (SIGTERM, then SIGKILL)."""

    def __init__(self, module: str, log_path: pathlib.Path,
                 ros_args: Sequence[str] = (), env: Optional[dict] = None):
        """Start ``python -m <module> --ros-args <ros_args>``; output goes to log_path."""
        self.log_path = pathlib.Path(log_path)
        self._log = open(self.log_path, 'wb')
        command = [sys.executable, '-m', module]
        if ros_args:
            command += ['--ros-args', *ros_args]
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT,
            env=dict(os.environ, **(env or {})))

    @property
    def pid(self) -> int:
        """Return the process id of the node."""
        return self.process.pid

    def wait(self, timeout_s: float) -> Optional[int]:
        """Wait for the process to exit; return its code, or None if it is still running."""
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout_s: float = 10.0) -> int:
        """Stop the process by its PID: SIGTERM, then SIGKILL after timeout_s."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            if self.wait(timeout_s) is None:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def output(self) -> str:
        """Return everything the process printed so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors='replace')

    def __enter__(self):
        """Use as a context manager that always stops the process."""
        return self

    def __exit__(self, *exc):
        """Stop the process (by PID) on leaving the block."""
        self.stop()
