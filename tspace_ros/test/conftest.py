"""
Test isolation for ROS 2: every pytest run talks only to itself.

``scripts/test`` already sets these; this also covers a bare ``pytest`` or
``colcon test`` run: LOCALHOST discovery (no multicast, nothing leaves the host),
a ROS_DOMAIN_ID of its own, and ROS_HOME/ROS_LOG_DIR in a temporary directory.
"""

import os
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).parent))

os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
if 'ROS_DOMAIN_ID' not in os.environ:
    os.environ['ROS_DOMAIN_ID'] = str(1 + os.getpid() % 100)
if 'ROS_HOME' not in os.environ:
    os.environ['ROS_HOME'] = tempfile.mkdtemp(prefix='tspace_ros_test_home_')
os.environ.setdefault('ROS_LOG_DIR', os.path.join(os.environ['ROS_HOME'], 'log'))

try:
    from hypothesis import settings as _hypothesis_settings
except ImportError:  # pragma: no cover - hypothesis is pinned in requirements.txt
    pass
else:
    # No example database: nothing is written into the source tree (the build's input hash
    # covers it), and a failure prints the example it found instead.
    _hypothesis_settings.register_profile('tspace', database=None, print_blob=True)
    _hypothesis_settings.load_profile('tspace')


def pytest_report_header(config):
    """Say which MongoDB the storage tests run against (never the URI: it holds a password)."""
    if os.environ.get('TSPACE_TEST_MONGODB_URI'):
        return 'storage/mongodb: real server from TSPACE_TEST_MONGODB_URI'
    return ('storage/mongodb: mongomock in-process stand-in '
            '(set TSPACE_TEST_MONGODB_URI for a real server)')
