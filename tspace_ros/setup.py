"""Install the tspace_ros Python package, its launch files, configuration and nodes."""

from glob import glob
import os

from setuptools import find_packages, setup

PACKAGE = 'tspace_ros'

# Every node is a console script, so `ros2 run tspace_ros <node>` works.
NODES = {
    'window_source': 'tspace_ros.nodes.window_source:main',
    'vehicle_sim': 'tspace_ros.nodes.vehicle_sim:main',
    'can_bridge': 'tspace_ros.nodes.can_bridge:main',
    'cloud_bridge': 'tspace_ros.nodes.cloud_bridge:main',
    'agent': 'tspace_ros.nodes.agent:main',
    'lifecycle_manager': 'tspace_ros.nodes.lifecycle_manager:main',
    'cruncher': 'tspace_ros.nodes.cruncher:main',
    'storage': 'tspace_ros.nodes.storage:main',
    'trainer': 'tspace_ros.nodes.trainer:main',
    'map_viz': 'tspace_ros.nodes.map_viz:main',
    'diagnostics_aggregator': 'tspace_ros.nodes.diagnostics_aggregator:main',
    'recorder': 'tspace_ros.nodes.recorder:main',
    'replay': 'tspace_ros.nodes.replay:main',
}

# Commands that are not nodes.
COMMANDS = {
    'bringup': 'tspace_ros.bringup:main',
    'suite': 'tspace_ros.suite:main',
    'cloud_sim': 'tspace_ros.cloud_sim:main',
    'tspace_ctl': 'tspace_ros.ctl:main',
}

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        ('share/' + PACKAGE + '/launch', glob('launch/*.py')),
        ('share/' + PACKAGE + '/config', glob('config/*.yaml') + glob('config/*.rviz')),
        ('share/' + PACKAGE + '/config/vehicles', glob('config/vehicles/*.yaml')),
        ('share/' + PACKAGE + '/config/agents', glob('config/agents/*.yaml')),
        ('share/' + PACKAGE + '/config/storage', glob('config/storage/*.yaml')),
        ('share/' + PACKAGE + '/config/sites', glob('config/sites/*.yaml')),
        ('share/' + PACKAGE + '/config/drivers', glob('config/drivers/*.yaml')),
        ('share/' + PACKAGE + '/config/cloud', glob('config/cloud/*.yaml')),
        ('share/' + PACKAGE + '/config/links', glob('config/links/*.yaml')),
        ('share/' + PACKAGE + '/config/dbc', glob('config/dbc/*.dbc') + glob('config/dbc/*.a2l')),
        ('share/' + PACKAGE + '/config/oracle', glob('config/oracle/*.md')),
        # The shipped oracle results: config/oracle/<vehicle>/<driver>/<cycle>.json.
        *[('share/' + PACKAGE + '/' + os.path.dirname(path), [path])
          for path in sorted(glob('config/oracle/*/*/*.json'))],
    ],
    install_requires=['setuptools'],
    extras_require={'test': ['pytest']},
    zip_safe=True,
    maintainer='tspace_ros maintainers',
    maintainer_email='maintainers@tspace-ros.org',
    description='Learning vehicle control with deep reinforcement learning on ROS 2.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            f'{name} = {target}' for name, target in {**NODES, **COMMANDS}.items()],
    },
)
