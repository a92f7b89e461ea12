"""
The main job of ``scripts/run``: the node suite learns a torque map on the simulated van.

The whole suite (CAN bridge, agent, cruncher, storage, trainer, lifecycle
manager) and the simulated van run in this process (``tspace_ros.suite``, the
parameters of ``config/sim_suite.yaml``), faster than real time on the van's
simulated clock. The van drives the drive cycle again and again; each lap is
an episode that the job starts and ends through the bridge's
``episode_control`` service, as a driver's HMI would:

1. the default map's figures on the same cycle (the same simulator, run on its own);
2. ``--episodes`` training episodes: the agent explores (noise on), the cruncher
   builds transitions, the storage keeps them (Parquet), and after each stored
   episode the trainer updates the agent and publishes the new policy; the van
   waits at the end of the lap (its clock stops) until the agent runs it;
3. one evaluation episode with the final policy, deterministic (no noise).

The run directory gets the pool (every transition and episode), the trainer's
checkpoints and TensorBoard logs, the final torque map (YAML), ``report.png``
(energy per km and return per episode against the default map's, losses, the
default and learned maps side by side), ``episodes.json`` and ``summary.json``,
and the nodes' logs. Done when the learned map uses less energy per km than
the default map while the speed trace is still followed within the bound.

With ``--link cloud`` the van is behind a telematics cloud instead of on a CAN
bus: the job starts the simulated cloud (``cloud_world.CloudWorld``: tspace's
RemoteCAN on HTTPS with a token, the HMI on an MQTT broker over TLS, optionally
the TBox's uploads on an S3 server), runs the suite with the cloud bridge, and
publishes the van's clock on ``/clock``; episodes begin and end through the
remote HMI, as a driver's would. The cloud's latencies and failures
(``--cloud-profile``, ``config/cloud/profiles.yaml``) are in the van's seconds:
tspace's 3.2 s flash takes 3.2 s of driving at any real-time factor. A flash
in flight is waited for (the agent acts again only once it is acknowledged or
failed), so each step is as long as the flash takes, and a failed flash is a
step marked not applied.
"""

import argparse
import datetime
import json
import math
import os
import pathlib
import sys
import time

from tspace_ros.agents import registry

SPEED_ERROR_BOUND_KPH = 2.0   # RMS speed error the learned map must keep within
NAMESPACE = 'SIMVAN00000000001'


def parse_args(argv):
    """Parse the command line of the main job."""
    from tspace_ros.vehicle import CYCLE_NAMES
    from tspace_ros.vehicle.parameters import DRIVER_MODELS
    parser = argparse.ArgumentParser(
        prog='tspace_ros.bringup', description='Run the node suite on the simulated van: '
        'learn a torque map that uses less energy; write results and a report.',
        epilog='exit codes: 0 the learned map uses less energy within the speed-error '
        'bound; 3 it was trained but does not (or leaves the bound); 4 nothing was trained '
        '(too few samples for min_samples); 1 the run failed (see its logs); 2 wrong '
        'arguments or parameters')
    parser.add_argument('--episodes', type=int, default=4,
                        help='training episodes (laps of the cycle) before the evaluation '
                        '(default 4)')
    # td3 by measurement (bench/learning_seeds.py, README): its critic loss stays bounded
    # over 10 whole-cycle episodes where DDPG's grows to 1e5 within 4.
    parser.add_argument('--algorithm', choices=registry.names(), default='td3',
                        help='agent (default td3): ' + '; '.join(
                            registry.get(name).summary for name in registry.names()))
    parser.add_argument('--cycle', choices=CYCLE_NAMES, default='wltc3b',
                        help='drive cycle (default wltc3b)')
    parser.add_argument('--driver', choices=DRIVER_MODELS, default=None,
                        help='the simulated driver: pi (follows the trace exactly, inverting '
                        "the map) or dyno (a test driver within the cycle's tolerance band "
                        'who feels the map); default: the vehicle file (driver.model)')
    parser.add_argument('--lap-s', type=float, default=0.0,
                        help='drive only the first this many seconds of the cycle, as one '
                        'lap per episode (default: the whole cycle)')
    parser.add_argument('--real-time-factor', type=float, default=None,
                        help='simulated seconds per wall second asked of the van (default '
                        '40, or 10 with --link cloud; training and the agent share the CPU, '
                        'so it may reach less)')
    parser.add_argument('--seed', type=int, default=0, help='seed of weights and noise')
    parser.add_argument('--flash-protocol', choices=('transfer', 'xcp'), default=None,
                        help="how maps reach the van's VCU: transfer (MapSegment/MapCommit/"
                        'MapAck) or xcp (XCP calibration through pyxcp); default: '
                        'can_bridge.flash_protocol of config/sim_suite.yaml')
    parser.add_argument('--link', choices=('can', 'cloud'), default='can',
                        help='how the suite reaches the van: can (its CAN bus) or cloud '
                        "(tspace's RemoteCAN through a simulated telematics cloud: HTTPS, MQTT; "
                        'the job starts and stops the servers; default can)')
    parser.add_argument('--cloud-profile', default='tspace_measured',
                        help='link cloud: latencies and failures of the cloud, a profile of '
                        "config/cloud/profiles.yaml (default tspace_measured: tspace's vans)")
    parser.add_argument('--cloud-signals', choices=('get_signal', 'object_storage'),
                        default='get_signal',
                        help="link cloud: signals polled with get_signal, or the TBox's "
                        'one-second uploads read from an S3 server (default get_signal)')
    parser.add_argument('--out', type=pathlib.Path, default=pathlib.Path('runs'),
                        help='directory under which a run directory is created')
    parser.add_argument('--timeout-s', type=float, default=3600.0,
                        help='give up after this much wall time')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.add_argument('--record', action='store_true',
                        help='record the run to a rosbag2 bag (MCAP) in the run directory: '
                        'raw CAN frames, windows, maps, decisions, transitions, episodes')
    parser.add_argument('--oracle', choices=('cached', 'search', 'off'), default='cached',
                        help='the reference the learned saving is measured against: the best '
                        'fixed map the gate allows on this lap (bench/oracle_map.py). cached: '
                        'read it from --oracle-cache if there; search: search it when it is '
                        'not cached (minutes), then cache it; off: none (default cached)')
    parser.add_argument('--oracle-cache', type=pathlib.Path, default=None,
                        help='where oracle results are kept, per vehicle, driver and cycle '
                        '(default $TSPACE_ORACLE_CACHE or ~/.cache/tspace_ros/oracle)')
    parser.add_argument('--oracle-budget', type=int, default=120,
                        help='--oracle search: simulations for the search (default 120)')
    parser.add_argument('-p', '--param', action='append', default=[],
                        metavar='NODE.NAME=VALUE',
                        help='override a node parameter of config/sim_suite.yaml, e.g. '
                        '-p trainer.min_samples=200 (the value is read as YAML)')
    args = parser.parse_args(argv)
    if args.real_time_factor is None:
        # Over the cloud each call crosses HTTP, TLS and threads in this one process: about
        # 0.1-0.2 s of wall each on two cores, which at 40x would be 4-8 s of driving on
        # top of the cloud's own latencies (and steps would time out); at 10x it is 1-2 s.
        args.real_time_factor = CLOUD_REAL_TIME_FACTOR if args.link == 'cloud' else \
            REAL_TIME_FACTOR
    if args.episodes < 1 or args.timeout_s <= 0 or args.real_time_factor <= 0 or \
            args.lap_s < 0:
        parser.error('--episodes must be >= 1, --timeout-s and --real-time-factor '
                     'positive, --lap-s >= 0')
    if args.oracle_budget < 1:
        parser.error('--oracle-budget must be >= 1')
    if args.link == 'cloud' and args.flash_protocol:
        parser.error('--flash-protocol is for --link can (the cloud flashes with set_torque)')
    return args


REAL_TIME_FACTOR = 40.0
CLOUD_REAL_TIME_FACTOR = 10.0


class JobError(RuntimeError):
    """The run cannot go on (a node failed, a deadline passed)."""


class _Charger:
    """Charge the parked van between laps back to the state of charge it started with."""

    _soc_start = None

    def recharge(self) -> None:
        """
        Set the battery to its first lap's state of charge (call while parked).

        A whole WLTC 3b lap takes about 8 % of the charge: from 0.9 the van would be
        empty in the 11th lap. Wh/km does not depend on the charge in the simulator.
        """
        battery = self.sim.battery
        if self._soc_start is None:
            self._soc_start = battery.soc
        battery.soc = self._soc_start


class SimVan(_Charger):
    """The van of the CAN link: the suite's vehicle_sim node (its clock is /clock)."""

    def __init__(self, suite):
        """Take the suite that holds the vehicle_sim node."""
        self.suite = suite

    @property
    def sim(self):
        """Return the van's VehicleSimulation (odometer, figures)."""
        return self.suite['vehicle_sim'].vehicle.sim

    def park(self) -> None:
        """Stop the van (its clock stops) while the trainer works."""
        from lifecycle_msgs.msg import Transition
        self.suite.vehicle_transition(Transition.TRANSITION_DEACTIVATE)

    def drive(self) -> None:
        """Drive on."""
        from lifecycle_msgs.msg import Transition
        self.suite.vehicle_transition(Transition.TRANSITION_ACTIVATE)

    def begin_lap(self, lap_end_s: float) -> None:
        """Do nothing: vehicle_sim runs its lap (cycle_end_s) and the job parks it."""

    def measure(self, job, odometer_start, lap_start_s, lap_end_s, deadline) -> dict:
        """Return the van's figures from odometer_start until now (it is parked)."""
        return self.sim.between(odometer_start, self.sim.odometer())


class CloudVan(_Charger):
    """The van behind the cloud: the cloud world's TelematicsVan; the job publishes its clock."""

    def __init__(self, world):
        """Take the started CloudWorld; park its van until the suite is up (as vehicle_sim)."""
        self.world = world
        self.park()

    @property
    def sim(self):
        """Return the van's VehicleSimulation (odometer, figures)."""
        return self.world.van.sim

    def park(self) -> None:
        """Park the van (its clock stops) while the trainer works."""
        self.world.van.pause(time.time())

    def drive(self) -> None:
        """Drive on."""
        self.world.van.resume(time.time())

    def begin_lap(self, lap_end_s: float) -> None:
        """Have the van read its odometer at the lap's end (laps measured exactly)."""
        self.world.van.mark(lap_end_s)

    def measure(self, job, odometer_start, lap_start_s, lap_end_s, deadline) -> dict:
        """Return the van's figures over the lap, from mark to mark (it drove past it)."""
        van = self.world.van
        if van.odometer_at(lap_end_s) is None:   # parked just before the lap's end
            self.drive()
            job.wait(lambda: van.odometer_at(lap_end_s) is not None, deadline,
                     f'the van to reach the end of the lap at {lap_end_s:g} s')
            self.park()
        return self.sim.between(van.odometer_at(lap_start_s), van.odometer_at(lap_end_s))

    def clock_ns(self) -> int:
        """Return the van's true time (UTC ns): the simulated world's /clock."""
        self.world.van.advance(time.time())
        return round(self.world.van.true_time_s() * 1e9)


class Driver:
    """The job's own node: the van's clock, the HMI (episode_control) and what it reports."""

    def __init__(self, suite, start_ns: int, cloud: 'CloudVan' = None,
                 clock_period_s: float = 0.0125):
        """
        Create the node in the vehicle's namespace, in the suite's executor.

        cloud: the van behind the cloud: the node publishes its clock on /clock every
        clock_period_s (wall), and episode commands go through the remote HMI (MQTT).
        """
        from rosgraph_msgs.msg import Clock
        from tspace_interfaces.msg import EpisodeSummary, TrainerStatus
        from tspace_interfaces.srv import EpisodeControl

        from tspace_ros.nodes.qos import RECORD_QOS
        import rclpy
        self.suite, self.start_ns = suite, start_ns
        self.node = rclpy.create_node('job', namespace=NAMESPACE)
        self.clock_ns, self.summaries, self.status = 0, [], None
        self.node.create_subscription(Clock, '/clock', self._on_clock, 10)
        self.node.create_subscription(EpisodeSummary, 'episode/summary',
                                      self.summaries.append, RECORD_QOS)
        self.node.create_subscription(TrainerStatus, 'trainer/status', self._on_status, 10)
        self.hmi = self.node.create_client(EpisodeControl, 'episode_control')
        self.EpisodeControl = EpisodeControl
        self.cloud = cloud
        if cloud is not None:
            from tspace_ros.nodes.vehicle_sim import CLOCK_QOS, CLOCK_TOPIC
            publisher = self.node.create_publisher(Clock, CLOCK_TOPIC, CLOCK_QOS)

            from builtin_interfaces.msg import Time

            def publish_clock():
                ns = cloud.clock_ns()
                publisher.publish(Clock(clock=Time(sec=ns // 1_000_000_000,
                                                   nanosec=ns % 1_000_000_000)))
            self._clock_timer = self.node.create_timer(clock_period_s, publish_clock)
        suite.executor.add_node(self.node)

    def _on_clock(self, msg):
        self.clock_ns = msg.clock.sec * 1_000_000_000 + msg.clock.nanosec

    def _on_status(self, msg):
        self.status = msg

    @property
    def sim_s(self) -> float:
        """Return the van's simulated time since the start, s."""
        return max(self.clock_ns - self.start_ns, 0) / 1e9

    def wait(self, predicate, deadline: float, what: str):
        """Wait (the executor spins in its thread) until predicate() holds."""
        while not predicate():
            if self.suite.manager.failure:
                raise JobError(f'the suite failed: {self.suite.manager.failure}')
            if time.monotonic() > deadline:
                raise JobError(f'timed out waiting for {what}')
            time.sleep(0.01)

    def command(self, code: int, deadline: float) -> str:
        """Send an episode command; return the episode id; JobError if refused."""
        if self.cloud is not None:
            return self._remote_command(code, deadline)
        self.wait(self.hmi.service_is_ready, deadline, 'the episode_control service')
        future = self.hmi.call_async(self.EpisodeControl.Request(command=code))
        self.wait(future.done, deadline, f'an answer to episode command {code}')
        answer = future.result()
        if not answer.accepted:
            raise JobError(f'episode command {code} refused: {answer.message}')
        return answer.episode_id

    def _remote_command(self, code: int, deadline: float) -> str:
        """Send the command through the remote HMI (MQTT); wait until the bridge took it."""
        from tspace_ros.episodes import control
        from tspace_ros.servers import ServerError
        episodes = self.suite[self.suite.bridge_name].core.episodes
        before = episodes.episode_id
        try:
            self.cloud.world.hmi(code)
        except ServerError as error:
            raise JobError(str(error)) from None
        if code == control.START:
            self.wait(lambda: episodes.state == control.RUNNING and
                      episodes.episode_id not in ('', before), deadline,
                      'the bridge to start the episode the remote HMI asked for')
            return episodes.episode_id
        if code == control.END_VALID:
            self.wait(lambda: episodes.state != control.RUNNING, deadline,
                      'the bridge to end the episode the remote HMI asked for')
        return before


def run_episode(job, index: int, lap_s: float, evaluate: bool, deadline: float,
                countdown_s: float) -> dict:
    """Drive one lap as an episode; pause the van at its end; return its figures."""
    from rclpy.parameter import Parameter
    suite, control = job.suite, job.EpisodeControl.Request
    sim = job.van.sim
    lap_start = index * lap_s
    job.van.begin_lap(lap_start + lap_s)
    if evaluate:
        suite['agent'].set_parameters([Parameter('mode', value='infer')])
    job.wait(lambda: job.sim_s >= lap_start + 0.5, deadline, 'the lap to begin')
    odometer_start, wall_start = sim.odometer(), time.monotonic()
    episode_id = job.command(control.START, deadline)
    job.wait(lambda: job.sim_s >= lap_start + lap_s - countdown_s - 2.0, deadline,
             f'the end of lap {index}')
    job.command(control.END_VALID, deadline)
    job.wait(lambda: any(s.episode_id == episode_id for s in job.summaries), deadline,
             f'the summary of episode {episode_id}')
    # The lap is done: the van waits (its clock stops) while the trainer works.
    job.van.park()
    measured = job.van.measure(job, odometer_start, lap_start, lap_start + lap_s, deadline)
    wall_s = time.monotonic() - wall_start
    summary = next(s for s in job.summaries if s.episode_id == episode_id)
    figures = {'index': index, 'kind': 'eval' if evaluate else 'train',
               'episode_id': episode_id, 'steps': summary.step_count,
               'total_reward': summary.total_reward,
               'energy_per_km_wh': measured['energy_per_km_wh'],
               'battery_energy_wh': measured['battery_energy_wh'],
               'distance_km': measured['distance_km'],
               'speed_error_rms_kph': measured['speed_error_rms_kph'],
               'windows_energy_per_km_wh': summary.energy_per_km_wh,
               'policy_version': summary.last_policy_version,
               'wall_s': wall_s, 'real_time_factor': measured['duration_s'] / wall_s,
               'timed_out_steps': summary_timed_out(suite, episode_id)}
    return figures


def summary_timed_out(suite, episode_id: str) -> int:
    """Return the cruncher's count of timed-out steps in the episode (its last one)."""
    last = suite['cruncher'].core.stats().get('last_episode') or {}
    return int(last.get('timed_out_steps', 0)) if last.get('episode_id') == episode_id else 0


def wait_for_policy(job, episodes: int, deadline: float) -> int:
    """Wait until the trainer has taken `episodes` episodes and the agent runs its policy."""
    node, agent = job.suite['trainer'], job.suite['agent']
    trainer = node.core
    job.wait(lambda: node.episodes_handled >= episodes, deadline,
             f'the trainer to take episode {episodes}')
    job.wait(lambda: agent._actor_version == trainer.policy_version, deadline,
             f'the agent to run policy version {trainer.policy_version}')
    return trainer.policy_version


def main(argv=None) -> int:
    """Run the main job; return the process exit code."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    stamp = datetime.datetime.now(datetime.timezone.utc)
    run_dir = (args.out / stamp.strftime('%Y%m%dT%H%M%SZ')).resolve()
    (run_dir / 'logs').mkdir(parents=True, exist_ok=True)
    os.environ['ROS_LOG_DIR'] = str(run_dir / 'logs')  # node logs to files, not the screen
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    print(f'tspace_ros run: {args.algorithm}, {args.episodes} training episodes + 1 '
          f'evaluation on {args.cycle} at {args.real_time_factor:g}x real time; '
          f'results in {run_dir}', flush=True)
    from tspace_ros.suite import SuiteConfigError
    try:
        return _run(args, run_dir, stamp)
    except SuiteConfigError as error:
        print(f'tspace_ros run: {error}', file=sys.stderr)
        return 2
    except JobError as error:
        print(f'tspace_ros run failed: {error}; logs: {run_dir}/logs', file=sys.stderr)
        return 1


def _run(args, run_dir: pathlib.Path, stamp) -> int:
    import rclpy

    from tspace_ros.suite import (config_path, link_params_path, LINKS, load_parameter_files,
                                  params_file_path, parse_overrides, Suite)
    from tspace_ros.training.report import write_map_yaml, write_report
    from tspace_ros.vehicle import drive_cycle, load_vehicle_parameters, VehicleSimulation
    cycle = drive_cycle(args.cycle)
    if args.lap_s:
        cycle = cycle.truncated(args.lap_s)
    lap_s = cycle.duration_s
    started = time.monotonic()
    deadline = started + args.timeout_s

    # 1. The default map on the same cycle: the same simulator, on its own.
    params = load_vehicle_parameters()
    default_map = params.load_default_map()
    reference = VehicleSimulation(params, cycle, repeat_cycle=True, driver_model=args.driver)
    reading = reference.odometer()
    reference.run(lap_s)
    baseline = reference.between(reading, reference.odometer())
    baseline['kind'] = 'baseline'
    driver_model = reference.driver_model
    print(f'  default map: {baseline["energy_per_km_wh"]:.2f} Wh/km, speed error RMS '
          f'{baseline["speed_error_rms_kph"]:.2f} km/h (driver {driver_model})', flush=True)

    start_ns = int(stamp.timestamp()) * 1_000_000_000
    start_utc = datetime.datetime.fromtimestamp(start_ns / 1e9, datetime.timezone.utc)
    # The bridge's settings: the suite's file and the link's layer (as the Suite reads them).
    bridge = load_parameter_files([params_file_path(), link_params_path(args.link)]).get(
        LINKS[args.link], {})
    countdown_s = float(bridge.get('episode_countdown_s', 3.0))
    overrides = parse_overrides(args.param)
    world = van = None
    if args.link == 'cloud':
        world = _cloud_world(args, cycle, params, start_utc, run_dir,
                             str(bridge.get('driver_id', 'driver0')))
        van = CloudVan(world)
        # The link polls on the wall: every 2 s of driving at the asked real-time factor.
        poll_s = min(2.0, max(0.05, 2.0 / args.real_time_factor))
        # The bridge's clock is /clock, which reaches it through a busy executor: allow
        # half a wall second of lag, in the van's seconds, before a TBox second is "future".
        skew_s = 5.0 + 0.5 * args.real_time_factor
        overrides['cloud_bridge'] = {**world.bridge_parameters(poll_s),
                                     'max_clock_skew_s': skew_s,
                                     **overrides.get('cloud_bridge', {})}
    for node, values in {
        'vehicle_sim': {'cycle': args.cycle, 'cycle_end_s': float(args.lap_s),
                        'real_time_factor': args.real_time_factor,
                        'start_utc': start_utc.isoformat(), 'repeat_cycle': True,
                        'driver_model': args.driver or ''},
        'agent': {'algorithm': args.algorithm, 'mode': 'train', 'seed': args.seed},
        'trainer': {'algorithm': args.algorithm, 'seed': args.seed,
                    'checkpoint_dir': str(run_dir / 'checkpoints'),
                    'log_dir': str(run_dir / 'tensorboard')},
        'storage': {'root': str(run_dir / 'pool')},
        'recorder': {'output_dir': str(run_dir / 'bags')},
        'can_bridge': {'republish_raw': bool(args.record),
                       **({'flash_protocol': args.flash_protocol} if args.flash_protocol
                          else {})},
    }.items():
        overrides[node] = {**values, **overrides.get(node, {})}
    if world is not None:
        overrides.pop('vehicle_sim')
    suite, episodes, failure = None, [], ''
    try:
        rclpy.init(args=['--ros-args', '--disable-stdout-logs'])
        # The suite's parameters, then the agent's (config/agents/<algorithm>.yaml).
        files = [params_file_path(), config_path('agents', f'{args.algorithm}.yaml')]
        suite = Suite(NAMESPACE, files, overrides=overrides, record=args.record,
                      link=args.link, simulate=world is None)
        van = van or SimVan(suite)
        job = Driver(suite, start_ns, cloud=van if world is not None else None,
                     clock_period_s=0.5 / args.real_time_factor)
        job.van = van
        ok, message = suite.startup()
        if not ok:
            raise JobError(message if message.startswith('startup failed') else
                           f'startup failed: {message}')
        bar = None if args.no_progress else _progress(args.episodes + 1)
        for index in range(args.episodes + 1):
            evaluate = index == args.episodes
            van.recharge()   # parked between laps (at the first, not yet driving far)
            van.drive()   # (the simulated van is already driving at the first lap)
            figures = run_episode(job, index, lap_s, evaluate, deadline, countdown_s)
            if not evaluate:
                wait_for_policy(job, index + 1, deadline)
            status = job.suite['trainer'].core.status()
            figures['critic_loss'] = status.get('critic_loss')
            figures['actor_loss'] = status.get('actor_loss')
            episodes.append(figures)
            _report_progress(bar, figures, baseline)
        if bar is not None:
            bar.close()
        learned_map = suite[suite.bridge_name].core.active_map
        flashes = flash_figures(suite[suite.bridge_name].core)
        if world is not None:
            flashes['cloud'] = cloud_figures(suite[suite.bridge_name], world)
        losses = list(suite['trainer'].core.loss_history)
        # The trained policy as the file the agent's policy_file takes (infer mode).
        suite['trainer'].core.current_blob().save(run_dir / 'policy.npz')
        trainer = dict(suite['trainer'].core.status(),
                       min_samples=suite['trainer'].core.config.min_samples)
    except JobError as error:
        failure = str(error)
    finally:
        if suite is not None:
            if van is not None:
                van.drive()  # the bridge restores the default map: the van must answer
            suite.shutdown()
            suite.close()
        rclpy.try_shutdown()
        if world is not None:
            world.stop()
    if failure:
        raise JobError(failure)
    wall_s = time.monotonic() - started
    final = episodes[-1]
    saving = 1.0 - final['energy_per_km_wh'] / baseline['energy_per_km_wh']
    tracking_ok = final['speed_error_rms_kph'] <= SPEED_ERROR_BOUND_KPH
    # Trained: the evaluation drove a policy the trainer had updated.
    trained = trainer['update_count'] > 0 and final.get('policy_version', 0) > 0
    oracle = _oracle(args, params, baseline, saving)
    share = oracle.get('share')
    write_map_yaml(run_dir / 'learned_map.yaml', learned_map,
                   header=f'learned by tspace_ros {args.algorithm}, {args.episodes} episodes')
    write_report(run_dir / 'report.png', episodes, baseline, losses, default_map, learned_map,
                 title=f'tspace_ros {args.algorithm} on {args.cycle}: '
                 f'{final["energy_per_km_wh"]:.1f} vs {baseline["energy_per_km_wh"]:.1f} '
                 f'Wh/km ({100 * saving:+.2f} %'
                 f'{"" if share is None else f", {100 * share:.0f} % of the oracle"})',
                 oracle_wh_per_km=oracle.get('wh_per_km_best'))
    (run_dir / 'episodes.json').write_text(json.dumps(episodes, indent=2) + '\n')
    summary = {
        'algorithm': args.algorithm, 'cycle': args.cycle, 'lap_s': lap_s,
        'driver': driver_model,
        'training_episodes': args.episodes, 'wall_s': round(wall_s, 1),
        'simulated_s': round(lap_s * (args.episodes + 1), 1),
        'real_time_factor_overall': round(lap_s * (args.episodes + 1) / wall_s, 1),
        'default': baseline, 'learned': final, 'energy_saving': saving,
        'speed_error_bound_kph': SPEED_ERROR_BOUND_KPH, 'tracking_within_bound': tracking_ok,
        'learned_uses_less_energy': saving > 0, 'flashes': flashes, 'oracle': oracle,
        'trained': trained, 'trainer': {key: trainer[key] for key in (
            'algorithm', 'update_count', 'policy_version', 'buffer_size', 'min_samples',
            'critic_loss')}}
    (run_dir / 'summary.json').write_text(json.dumps(summary, indent=2) + '\n')
    if not trained:
        print(f'tspace_ros run: NOT TRAINED: {trainer["update_count"]} updates; the trainer '
              f'starts once the pool holds min_samples {trainer["min_samples"]} samples and '
              f'held {trainer["buffer_size"]} after {args.episodes} training episodes. Give '
              f'more --episodes or a lower -p trainer.min_samples (short laps need one). '
              f'The evaluation drove policy version {final.get("policy_version", 0)} '
              f'({100 * saving:+.2f} % against the default map)')
        print(f'  results: {run_dir}/summary.json, episodes.json, logs/')
        return 4
    verdict = 'less' if saving > 0 else 'NOT less'
    print(f'tspace_ros run: learned map {final["energy_per_km_wh"]:.2f} Wh/km vs default '
          f'{baseline["energy_per_km_wh"]:.2f} Wh/km: {100 * saving:+.2f} % ({verdict} '
          f'energy), speed error RMS {final["speed_error_rms_kph"]:.2f} km/h (bound '
          f'{SPEED_ERROR_BOUND_KPH:g}), {args.episodes + 1} episodes in {wall_s:.0f} s '
          f'({summary["real_time_factor_overall"]}x real time)')
    timed_out = sum(e['timed_out_steps'] for e in episodes)
    steps = sum(e['steps'] for e in episodes)
    print(f'  flashes ({flashes["protocol"]}): {flashes["acknowledged"]} acknowledged, '
          f'{flashes["timed_out"]} timed out, {flashes["failed"]} failed otherwise; '
          f'{timed_out} of {steps} steps timed out (no flash in time)')
    if oracle.get('saving') is not None:
        print(f'  oracle (the best fixed map the gate allows, {oracle["status"]}): '
              f'{oracle["wh_per_km_best"]:.2f} Wh/km, {100 * oracle["saving"]:+.2f} %; the '
              f'learned map reached '
              f'{"n/a" if share is None else f"{100 * share:.0f} %"} of it')
    elif oracle['status'] != 'off':
        print(f'  oracle: {oracle["status"]} ({oracle["reason"]}); run with --oracle search, '
              f'or: python bench/oracle_map.py --cycles {args.cycle}'
              f'{f" --lap-s {args.lap_s:g}" if args.lap_s else ""} --cache-dir '
              f'{oracle.get("cache_dir", "DIR")}')
    print(f'  results: {run_dir}/report.png, summary.json, episodes.json, learned_map.yaml, '
          f'policy.npz, pool/, checkpoints/, tensorboard/, logs/'
          f'{", bags/" if args.record else ""}')
    return 0 if saving > 0 and tracking_ok else 3


def _oracle(args, params, baseline: dict, saving: float) -> dict:
    """Return the oracle's figures for this run (vehicle.oracle.run_reference)."""
    from tspace_ros.task.contract import load_task
    from tspace_ros.vehicle.oracle import default_cache_dir, OracleCacheError, run_reference
    if args.oracle == 'search':
        print(f'  oracle: searching the best fixed map on this lap ({args.oracle_budget} '
              'simulations)', flush=True)
    try:
        return run_reference(args.oracle, args.oracle_cache or default_cache_dir(), params,
                             load_task(), args.cycle, args.lap_s or None,
                             baseline['energy_per_km_wh'], saving, args.oracle_budget,
                             driver_model=args.driver)
    except (OSError, ValueError, OracleCacheError) as error:
        return {'status': 'failed', 'reason': f'{type(error).__name__}: {error}'}


def _cloud_world(args, cycle, params, start_utc, run_dir: pathlib.Path, driver: str):
    """Start the simulated cloud of --link cloud; JobError if a server cannot start."""
    from tspace_ros.cloud_world import CloudWorld
    from tspace_ros.servers import ServerError, ServerUnavailable
    from tspace_ros.suite import SuiteConfigError
    from tspace_ros.vehicle import VehicleSimulation
    from tspace_ros.vehicle.tbox import cloud_profile, CloudSimConfig
    try:
        profile = cloud_profile(args.cloud_profile)
    except ValueError as error:
        raise SuiteConfigError(f'--cloud-profile: {error}') from None
    config = CloudSimConfig(**{**profile, 'cycle': args.cycle,
                               'real_time_factor': args.real_time_factor,
                               'start_utc': start_utc, 'durations_in_vehicle_time': True,
                               'seed': args.seed})
    simulation = VehicleSimulation(params, cycle, repeat_cycle=True, driver_model=args.driver)
    try:
        world = CloudWorld(config, driver, args.cloud_signals, log_dir=run_dir / 'logs',
                           simulation=simulation).start()
    except (ServerUnavailable, ServerError, OSError, ValueError) as error:
        raise JobError(f'the simulated cloud cannot start: {error}') from None
    print(f'  cloud: {world.cloud.url} (HTTPS, token), HMI on MQTT/TLS port '
          f'{world.broker.port}, signals by {args.cloud_signals}, profile '
          f'{args.cloud_profile}', flush=True)
    return world


def cloud_figures(bridge, world) -> dict:
    """Return the cloud link's counts (per call and code, latencies) and the van's."""
    stats = bridge.link.stats() if bridge.link is not None else {}
    keep = {k: v for k, v in stats.items() if isinstance(v, (int, float)) and
            k.startswith(('get_signal_', 'objects_', 'set_torque_', 'latency_', 'batch_',
                          'fill_', 'data_age', 'seconds_missed', 'catch_up'))}
    return {'link': keep, 'van': world.van.state()['counts']}


def flash_figures(core) -> dict:
    """Return the bridge's flash counts: protocol, acknowledged, timed out, failed otherwise."""
    counts = dict(core.flash_counts)
    acknowledged, timed_out = counts.get('NONE', 0), counts.get('TIMEOUT', 0)
    return {'protocol': core.flash_protocol, 'acknowledged': acknowledged,
            'timed_out': timed_out,
            'failed': sum(n for name, n in counts.items()
                          if name not in ('NONE', 'TIMEOUT', 'superseded')),
            'counts': counts}


def _progress(total: int):
    from tqdm import tqdm
    return tqdm(total=total, unit='episode', dynamic_ncols=True, file=sys.stdout)


def _report_progress(bar, figures: dict, baseline: dict):
    loss = figures.get('critic_loss')
    if loss is None:
        loss = 'none yet (no update)'
    else:
        loss = f'{loss:.3g}' if math.isfinite(loss) else f'{loss} (diverged)'
    text = (f'episode {figures["index"]} ({figures["kind"]}): '
            f'{figures["energy_per_km_wh"]:.2f} Wh/km (default '
            f'{baseline["energy_per_km_wh"]:.2f}), reward {figures["total_reward"]:.0f}, '
            f'critic loss {loss}')
    if bar is None:
        print(f'  {text}', flush=True)
    else:
        bar.set_postfix_str(text)
        bar.update(1)
        bar.write(f'  {text}')


if __name__ == '__main__':
    sys.exit(main())
