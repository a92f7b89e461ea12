"""Launch the window_source lifecycle node and bring it to active."""

import launch
from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition


def generate_launch_description():
    """Start window_source with its parameter file, configure it, then activate it."""
    params = PathJoinSubstitution(
        [FindPackageShare('tspace_ros'), 'config', 'window_source.yaml'])
    node = LifecycleNode(
        package='tspace_ros', executable='window_source', name='window_source',
        namespace=LaunchConfiguration('namespace'), output='screen',
        parameters=[params, {'vehicle_id': LaunchConfiguration('vehicle_id')}])
    configure = EmitEvent(event=ChangeState(
        lifecycle_node_matcher=matches_action(node),
        transition_id=Transition.TRANSITION_CONFIGURE))
    activate_when_configured = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=node, goal_state='inactive',
        entities=[EmitEvent(event=ChangeState(
            lifecycle_node_matcher=matches_action(node),
            transition_id=Transition.TRANSITION_ACTIVATE))]))
    return launch.LaunchDescription([
        DeclareLaunchArgument('namespace', default_value='',
                              description='Namespace of the node (for example a VIN)'),
        DeclareLaunchArgument('vehicle_id', default_value='SIM0000000000001',
                              description='Vehicle id stamped on the windows'),
        node,
        activate_when_configured,
        configure,
    ])
