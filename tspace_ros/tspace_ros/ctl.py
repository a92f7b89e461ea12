"""
tspace_ros's control tool: what the ``ros2`` CLI does for the suite, without it.

The PyPI set-up has no ``ros2`` command. ``python -m tspace_ros.ctl`` (installed
as ``tspace_ctl``) covers the recipes of the README:

- ``export-policy CHECKPOINT_DIR OUT.npz``: the trained policy of a trainer's
  checkpoint as the policy file the agent's ``policy_file`` takes (infer mode);
  no ROS.
- ``pool PATH``: what a Parquet pool holds (records, episodes, vehicles); no ROS.
- ``bag PATH``: a rosbag2 bag's topics, counts, start, duration, checksums; no ROS.
- ``lifecycle NODE configure|activate|deactivate|cleanup|shutdown|get`` (as
  ``ros2 lifecycle set/get``): NODE is its full name, e.g. ``/VAN1/storage``.
- ``episode NAMESPACE start|end|discard|exit`` (as ``ros2 service call
  .../episode_control``).

Exit codes: 0 done; 1 the node refused or did not answer, or the file could
not be read; 2 wrong arguments.
"""

import argparse
import json
import os
import sys

TRANSITIONS = ('configure', 'activate', 'deactivate', 'cleanup', 'shutdown')
EPISODE_COMMANDS = {'start': 1, 'end': 2, 'discard': 3, 'exit': 4}
TIMEOUT_S = 10.0


def export_policy(checkpoint_dir: str, out: str) -> dict:
    """
    Write the policy of a trainer checkpoint (trainer.json + agent-*) as a policy file.

    Returns what was written (algorithm, version, sizes, path). ValueError or
    OSError if the directory holds no usable checkpoint.
    """
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    from tspace_ros.training.trainer import STATE_FILE, TrainerConfig, TrainerCore
    state_path = os.path.join(checkpoint_dir, STATE_FILE)
    try:
        with open(state_path, encoding='utf-8') as handle:
            state = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f'{checkpoint_dir}: no trainer checkpoint ({error})') from None
    if not isinstance(state, dict) or not isinstance(state.get('trainer_config'), dict):
        raise ValueError(f'{state_path}: not a trainer state')
    config = TrainerConfig.from_dict(state['trainer_config'])
    config.export_litert = True
    core = TrainerCore(config, state['state_dim'], state['action_dim'],
                       checkpoint_dir=checkpoint_dir)
    try:
        blob = core.current_blob()
        blob.save(out)
    finally:
        core.checkpoint_dir = None   # read only: no new checkpoint on close
        core.close()
    return {'path': out, 'algorithm': blob.algorithm, 'version': blob.version,
            'state_dim': blob.state_dim, 'action_dim': blob.action_dim,
            'model_format': blob.model_format}


def pool_summary(root: str) -> dict:
    """Return a Parquet pool's figures (``TransitionPool.stats``)."""
    from tspace_ros.storage import open_pool, PoolConfig
    if not os.path.isdir(root):
        raise ValueError(f'{root}: no such pool directory')
    with open_pool(PoolConfig(root=root)) as pool:
        return pool.stats()


def bag_summary(path: str) -> dict:
    """Return a bag's description (``tspace_ros.bags.bag_info``)."""
    from tspace_ros.bags import bag_info
    info = bag_info(path)
    return {key: info[key] for key in ('path', 'topics', 'counts', 'message_count', 'start_ns',
                                       'end_ns', 'duration_s', 'verified')}


def _ros_call(service_type, name: str, request, what: str):
    """Call a service once (its own context, localhost discovery as configured); the response."""
    import rclpy
    rclpy.init(args=['--ros-args', '--disable-stdout-logs'])
    try:
        node = rclpy.create_node('tspace_ctl')
        client = node.create_client(service_type, name)
        if not client.wait_for_service(timeout_sec=TIMEOUT_S):
            raise RuntimeError(f'{what}: no service {name} within {TIMEOUT_S:g} s (is the node '
                               'running, in this ROS_DOMAIN_ID?)')
        future = client.call_async(request)
        rclpy.spin_until_future_complete(node, future, timeout_sec=TIMEOUT_S)
        if not future.done() or future.result() is None:
            raise RuntimeError(f'{what}: {name} did not answer within {TIMEOUT_S:g} s')
        return future.result()
    finally:
        rclpy.try_shutdown()


def lifecycle(node: str, verb: str) -> str:
    """Change (or get) a lifecycle node's state; return the state now. RuntimeError if refused."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState
    node = '/' + node.strip('/')
    if verb == 'get':
        return _ros_call(GetState, f'{node}/get_state', GetState.Request(),
                         'get').current_state.label
    transition = Transition(id=getattr(Transition, f'TRANSITION_{verb.upper()}'))
    if verb == 'shutdown':
        transition.id = Transition.TRANSITION_ACTIVE_SHUTDOWN
    response = _ros_call(ChangeState, f'{node}/change_state',
                         ChangeState.Request(transition=transition), verb)
    if not response.success:
        raise RuntimeError(f'{node} refused {verb} (see its log)')
    return lifecycle(node, 'get') if verb != 'shutdown' else 'finalized'


def episode(namespace: str, command: str) -> str:
    """Send an episode command to a bridge; return its answer. RuntimeError if refused."""
    from tspace_interfaces.srv import EpisodeControl
    name = '/' + namespace.strip('/') + '/episode_control'
    request = EpisodeControl.Request(command=EPISODE_COMMANDS[command])
    response = _ros_call(EpisodeControl, name, request, command)
    if not response.accepted:
        raise RuntimeError(f'{name} refused {command}: {response.message}')
    return json.dumps({'accepted': True, 'state': response.state, 'message': response.message,
                       'episode_id': response.episode_id})


def parse_args(argv):
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog='tspace_ctl', description=__doc__.split('\n')[1],
                                     epilog='exit codes: 0 done; 1 refused, no answer or an '
                                     'unreadable file; 2 wrong arguments')
    sub = parser.add_subparsers(dest='command', required=True)
    export = sub.add_parser('export-policy', help="a checkpoint's policy as a policy file")
    export.add_argument('checkpoint_dir', help="the trainer's checkpoint_dir (trainer.json)")
    export.add_argument('out', help='the policy file to write (.npz), for agent.policy_file')
    sub.add_parser('pool', help='what a Parquet pool holds').add_argument('root')
    sub.add_parser('bag', help='a bag: topics, counts, times').add_argument('path')
    life = sub.add_parser('lifecycle', help='change or get a lifecycle state')
    life.add_argument('node', help='full node name, e.g. /VAN1/storage')
    life.add_argument('verb', choices=TRANSITIONS + ('get',))
    ep = sub.add_parser('episode', help="start or end an episode at a vehicle's bridge")
    ep.add_argument('namespace', help="the vehicle's namespace, e.g. VAN1")
    ep.add_argument('verb', choices=tuple(EPISODE_COMMANDS))
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Run one command; print its result; return the exit code."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == 'export-policy':
            result = export_policy(args.checkpoint_dir, args.out)
            print(f'policy {result["algorithm"]} version {result["version"]} (state '
                  f'{result["state_dim"]}, action {result["action_dim"]}, '
                  f'{result["model_format"] or "no"} model) written to {result["path"]}')
        elif args.command == 'pool':
            print(json.dumps(pool_summary(args.root), indent=1, default=str))
        elif args.command == 'bag':
            print(json.dumps(bag_summary(args.path), indent=1, default=str))
        elif args.command == 'lifecycle':
            print(lifecycle(args.node, args.verb))
        else:
            print(episode(args.namespace, args.verb))
    except (ValueError, OSError, RuntimeError) as error:
        print(f'tspace_ctl {args.command}: {error}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
