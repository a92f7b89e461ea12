"""
The launch description shared by sim.launch.py and vehicle.launch.py.

Each node runs in a process of its own (launch_ros LifecycleNode), in the vehicle's
namespace, with the parameters of config/sim_suite.yaml and the launch arguments on top.
The lifecycle manager brings the chain up (autostart) in dependency order and publishes
/diagnostics aggregated per vehicle on /diagnostics_agg.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import LifecycleNode, Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

# A node whose process dies (kill -9, a crash) is started again after 2 s; the lifecycle
# manager then brings it, and the chain it stopped, back to active (respawn_recovery).
# In between the vehicle is on its default map: the bridge restored it when the chain was
# deactivated, or the VCU fell back on its own when the bridge was the one that died.
RESPAWN = {'respawn': True, 'respawn_delay': 2.0}

# Launch argument -> (default, description), for both launch files.
COMMON_ARGUMENTS = {
    'namespace': ('SIMVAN00000000001', "Namespace of the vehicle's nodes (its VIN)."),
    'vehicle_id': ('SIMVAN00000000001', 'Vehicle id (VIN) stamped on the data.'),
    'driver': ('driver0', 'Driver id stamped on the data.'),
    'algorithm': ('ddpg', 'ddpg, td3 or rdpg (the registry: tspace_ros.agents.registry).'),
    'mode': ('train', 'train (exploration and training) or infer (deterministic).'),
    'storage_backend': ('parquet', 'parquet or mongodb (URI from TSPACE_MONGODB_URI).'),
    'storage_root': ('pool', 'Parquet pool directory.'),
    'record': ('false', "Record the suite's topics to a rosbag2 bag (MCAP)."),
    'bag_dir': ('bags', 'Directory for recorded bags.'),
    'params_file': ('', "Parameter file ('' = the package's config/sim_suite.yaml)."),
    'policy_file': ('', 'Policy file (.npz) for the agent; infer mode needs one.'),
    'vehicle_config': ('', "Vehicle parameter file ('' = config/vehicles/sim_van_suite.yaml)."),
    'agent_config': ('', "Agent parameter file ('' = config/agents/<algorithm>.yaml)."),
    'storage_config': ('', "Storage parameter file ('' = config/storage/<backend>.yaml)."),
    'site': ('simulation', 'Site: config/sites/<site>.yaml (name and time zone).'),
    'driver_config': ('', "Driver parameter file ('' = config/drivers/driver0.yaml)."),
    'fleet': ('', "Namespace of a fleet's shared storage and trainer (fleet.launch.py); "
              "'' = this launch starts its own."),
}
SIM_ARGUMENTS = {
    'real_time_factor': ('20.0', 'Simulated seconds per wall second.'),
    'publish_clock': ('true', 'The van publishes /clock (in a simulated fleet: one van only).'),
    'start_utc': ('', "UTC start of the van's clock ('' = now; the same for a fleet's vans)."),
    'cycle': ('wltc3b', 'Drive cycle: wltc3b, wltc3a or nedc.'),
    'flash_protocol': ('transfer', 'How maps reach the van: transfer or xcp (xcp needs a bus '
                       'that python-can opens in every process: sim_can_interface).'),
    'sim_can_interface': ('ros_topic', "The van's bus between the processes: ros_topic (ROS "
                          'topics), or a python-can interface, e.g. socketcan (vcan0).'),
    'sim_can_channel': ('ros', "The bus's channel (ros_topic: any; socketcan: vcan0)."),
}
VEHICLE_ARGUMENTS = {
    'link': ('can', 'How the bridge reaches the vehicle: can (can_bridge on its bus) or cloud '
             "(cloud_bridge: tspace's RemoteCAN through a telematics cloud)."),
    'can_interface': ('kvaser', 'python-can interface (kvaser, socketcan, pcan, ...).'),
    'can_channel': ('0', 'CAN channel of the interface.'),
    'cloud_url': ('', 'link cloud: the RemoteCAN base URL (https://...); the token comes from '
                  'TSPACE_CLOUD_TOKEN or the cloud_token_file parameter.'),
}


YES = ".lower() in ('true', '1', 'yes')"


def _arg(name):
    return LaunchConfiguration(name)


def _text(name):
    """Return a launch argument as a string parameter (never read as YAML: a date stays text)."""
    return ParameterValue(LaunchConfiguration(name), value_type=str)


def _chosen(argument, *default):
    """Return the argument's file, or the package's config/<default> when it is ''."""
    config = PathJoinSubstitution([FindPackageShare('tspace_ros'), 'config'])
    return PythonExpression(["'", _arg(argument), "' or '", config, '/', *default, "'"])


def _parameter_files(link):
    """
    Return the parameter files, layered in this order (later files win).

    The suite's, the link's (config/links/<link>.yaml), the vehicle's, the agent's, the
    storage's, the site's, the driver's; launch arguments win over all files.
    """
    config = PathJoinSubstitution([FindPackageShare('tspace_ros'), 'config'])
    return [_chosen('params_file', 'sim_suite.yaml'),
            PythonExpression(["'", config, "/links/' + '", link, "' + '.yaml'"]),
            _chosen('vehicle_config', 'vehicles/sim_van_suite.yaml'),
            _chosen('agent_config', 'agents/', _arg('algorithm'), '.yaml'),
            _chosen('storage_config', 'storage/', _arg('storage_backend'), '.yaml'),
            PythonExpression(["'", config, '/sites/', _arg('site'), ".yaml'"]),
            _chosen('driver_config', 'drivers/driver0.yaml')]


def suite_description(simulate: bool, link: str = 'can') -> LaunchDescription:
    """
    Return the launch description of the suite (with the simulated van when simulate).

    link: the default of the vehicle's ``link`` argument (``can`` or ``cloud``).
    """
    arguments = dict(COMMON_ARGUMENTS)
    arguments.update(SIM_ARGUMENTS if simulate else VEHICLE_ARGUMENTS)
    if not simulate:
        arguments['link'] = (link, VEHICLE_ARGUMENTS['link'][1])
    declared = [DeclareLaunchArgument(name, default_value=default, description=text)
                for name, (default, text) in arguments.items()]
    files = _parameter_files('can' if simulate else _arg('link'))
    clock = {'use_sim_time': simulate}
    namespace = _arg('namespace')
    training = PythonExpression(["'", _arg('mode'), "' == 'train'"])
    yes = "'" + YES
    bus = {'can_interface': _arg('sim_can_interface'),
           'can_channel': _text('sim_can_channel')} if simulate else {
        'can_interface': _arg('can_interface'), 'can_channel': _arg('can_channel')}
    link = {'flash_protocol': _arg('flash_protocol')} if simulate else {}

    def lifecycle(name, extra=None, condition=None):
        return LifecycleNode(
            package='tspace_ros', executable=name, name=name, namespace=namespace,
            output='screen', parameters=[*files, clock, extra or {}],
            condition=condition, **RESPAWN)

    alone = PythonExpression(["'", _arg('fleet'), "' == ''"])
    policy_topic = PythonExpression([
        "'/' + '", _arg('fleet'), "'.strip('/') + '/policy/update' if '", _arg('fleet'),
        "' else 'policy/update'"])
    # The bridge: the simulated van is on CAN; a real vehicle on CAN or behind the cloud.
    cloud = 'False' if simulate else PythonExpression(["'", _arg('link'), "' == 'cloud'"])
    bridges = "['can_bridge']" if simulate else PythonExpression([
        "['cloud_bridge'] if '", _arg('link'), "' == 'cloud' else ['can_bridge']"])
    managed = (['vehicle_sim'] if simulate else [])
    nodes = [
        lifecycle('storage', {'backend': _arg('storage_backend'),
                              'root': _text('storage_root')}, condition=IfCondition(alone)),
        lifecycle('trainer', {'algorithm': _arg('algorithm'), 'sample_source': 'service'},
                  condition=IfCondition(PythonExpression([training, ' and ', alone]))),
        lifecycle('can_bridge', {'vehicle_id': _text('vehicle_id'),
                                 'driver_id': _text('driver'), **bus, **link},
                  condition=UnlessCondition(cloud)),
        lifecycle('cloud_bridge', {'vehicle_id': _text('vehicle_id'),
                                   'driver_id': _text('driver'),
                                   'cloud_url': _text('cloud_url')},
                  condition=IfCondition(cloud)),
        lifecycle('cruncher'),
        lifecycle('agent', {'algorithm': _arg('algorithm'), 'mode': _arg('mode'),
                            'policy_file': _text('policy_file'),
                            'policy_topic': policy_topic}),
        lifecycle('map_viz'),
        lifecycle('recorder', {'output_dir': _text('bag_dir')},
                  condition=IfCondition(_arg('record'))),
    ]
    if simulate:
        nodes.append(lifecycle('vehicle_sim', {
            'use_sim_time': False, 'vehicle_id': _text('vehicle_id'), 'cycle': _arg('cycle'),
            'real_time_factor': _arg('real_time_factor'), 'start_utc': _text('start_utc'),
            'publish_clock': PythonExpression(["'", _arg('publish_clock'), "'", YES]),
            **bus}))
    # Dependency order: storage, trainer (train mode), the van, bridge, cruncher, agent, ...
    names = PythonExpression([
        "(['storage'] if ", alone, ' else []) + (["trainer"] if ', training, ' and ', alone,
        ' else []) + ', str(managed), ' + ', bridges, " + ['cruncher', 'agent', 'map_viz']",
        " + (['recorder'] if '", _arg('record'), yes, ' else [])'])
    manager = Node(
        package='tspace_ros', executable='lifecycle_manager', name='lifecycle_manager',
        namespace=namespace, output='screen', **RESPAWN,
        parameters=[files[0], {'use_sim_time': False, 'autostart': True,
                               'node_names': names}])
    return LaunchDescription(declared + nodes + [manager])


def fleet_description() -> LaunchDescription:
    """Return the launch description of a fleet's shared storage and trainer."""
    arguments = {
        'fleet': ('fleet', 'Namespace of the shared storage and trainer.'),
        'vehicles': ('[]', 'The vehicles served, as a list of namespaces: "[VIN1, VIN2]".'),
        'algorithm': COMMON_ARGUMENTS['algorithm'],
        'storage_backend': COMMON_ARGUMENTS['storage_backend'],
        'storage_root': COMMON_ARGUMENTS['storage_root'],
        'params_file': COMMON_ARGUMENTS['params_file'],
        'agent_config': COMMON_ARGUMENTS['agent_config'],
        'storage_config': COMMON_ARGUMENTS['storage_config'],
        'site': COMMON_ARGUMENTS['site'],
        'use_sim_time': ('false', 'Follow /clock (a simulated fleet).'),
    }
    declared = [DeclareLaunchArgument(name, default_value=default, description=text)
                for name, (default, text) in arguments.items()]
    suite_files = _parameter_files('can')  # the fleet has no link, vehicle or driver
    files = [suite_files[0], suite_files[3], suite_files[4], suite_files[5]]
    clock = {'use_sim_time': PythonExpression(["'", _arg('use_sim_time'), "'", YES])}
    nodes = [LifecycleNode(
        package='tspace_ros', executable=name, name=name, namespace=_arg('fleet'),
        output='screen', parameters=[*files, clock, extra], **RESPAWN) for name, extra in (
            ('storage', {'backend': _arg('storage_backend'), 'root': _text('storage_root'),
                         'vehicles': _arg('vehicles')}),
            ('trainer', {'algorithm': _arg('algorithm'), 'sample_source': 'service',
                         'vehicles': _arg('vehicles')}))]
    manager = Node(
        package='tspace_ros', executable='lifecycle_manager', name='lifecycle_manager',
        namespace=_arg('fleet'), output='screen', **RESPAWN,
        parameters=[files[0], {'use_sim_time': False, 'autostart': True,
                               'node_names': ['storage', 'trainer']}])
    return LaunchDescription(declared + nodes + [manager])
