"""
The task contract: one file, loaded once, from which every stage takes its sizes and limits.

A contract other than the shipped one (fewer rows per action, shorter windows,
past actions in the state, another budget, another signal in the state) must
change every stage together: the agent's states and maps, the gate, the
cruncher, the trainer's dimensions, the stored specification and the nodes
configured from the file. Hostile task files are refused with the key named.
"""

import copy
import pathlib

from hypothesis import given, HealthCheck, settings, strategies as st
import numpy as np
import pytest
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from ros_test_support import RosContext
from tspace_ros.agents.vehicle_policy import ActionMapper, StateBuilder
from tspace_ros.cruncher.core import CruncherConfig
from tspace_ros.signals.synthetic import SyntheticDrive
from tspace_ros.storage import default_spec
from tspace_ros.task.contract import (load_task, shipped_task, TaskContract, TaskContractError)
from tspace_ros.task.files import config_path
from tspace_ros.torque_map import SafetyGate
import yaml

SHIPPED = config_path('vehicles', 'sim_van_task.yaml')


def _shipped_data():
    data = yaml.safe_load(SHIPPED.read_text())
    data['default_map'] = str(SHIPPED.parent / data['default_map'])
    return data


def _write(tmp_path, data, name='task.yaml') -> pathlib.Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def other_task(tmp_path):
    """Return a task file unlike the shipped one in every size and limit."""
    data = _shipped_data()
    data['window'] = {'sample_rate_hz': 10.0, 'samples_per_window': 12}
    data['action'] = {'rows_per_action': 3, 'recent_actions': 2}
    data['gate'] = {'torque_budget_nm': 100.0, 'upper_bound': 1.2}
    data['signals'][0]['scale'] = 100.0          # speed / 100
    data['signals'][3]['role'] = 'state'         # current in the state too
    data['signals'][3]['scale'] = 200.0
    return _write(tmp_path, data)


def test_the_shipped_contract_is_the_simulated_vans_task():
    task = load_task()
    assert task is not shipped_task() and task.to_dict() == shipped_task().to_dict()
    assert task.signal_names == ('speed', 'pedal', 'brake', 'current', 'voltage')
    assert list(task.state_signals) == ['speed', 'pedal', 'brake']
    assert task.action_shape == (4, task.default_map.shape[1]) == (4, 17)
    assert task.action_dim == 68 and task.state_dim == 3 * 30 == 90
    # The cores' defaults are this contract's, not numbers typed again.
    assert StateBuilder().state_dim == task.state_dim
    assert ActionMapper(task.default_map).action_dim == task.action_dim
    gate = SafetyGate(task.default_map)
    assert (gate.torque_budget_nm, gate.upper_bound, gate.rows_per_action) == \
        (task.torque_budget_nm, task.upper_bound, task.rows_per_action)
    config = CruncherConfig()
    assert (config.samples_per_window, config.action_dim) == (30, task.action_dim)


def test_the_stored_spec_is_the_contract_the_agent_uses():
    # The stored observation spec says speed km/h, pedal 1, brake bar, as the state does.
    task = load_task()
    spec = default_spec()
    assert spec['signals'] == ['speed', 'pedal', 'brake']
    assert spec['units'] == ['km/h', '1', 'bar']
    assert spec['scales'] == [scale for _, scale in task.state_signals.values()]
    assert spec['state_size'] == task.state_builder().state_dim == task.state_dim
    assert spec['action_shape'] == list(task.action_shape)
    assert '250 Nm' in spec['action_unit']


def test_another_contract_changes_every_stage_together(other_task):
    task = load_task(other_task)
    assert task.action_dim == 3 * 17 and task.state_dim == 4 * 12 + 2 * 51
    states, mapper, gate = task.state_builder(), task.action_mapper(), task.safety_gate(0.5)
    assert states.state_dim == task.state_dim and mapper.action_dim == task.action_dim
    assert (gate.torque_budget_nm, gate.upper_bound, gate.rows_per_action,
            gate.resolution_nm) == (100.0, 1.2, 3, 0.5)
    config = CruncherConfig.for_task(task, max_step_windows=2)
    assert (config.samples_per_window, config.action_dim, config.recent_actions,
            list(config.signals)) == (12, 51, 2, ['speed', 'pedal', 'brake', 'current'])
    spec = task.observation_spec('depot', 'Europe/Berlin')
    assert spec['state_size'] == task.state_dim and spec['action_shape'] == [3, 17]
    assert spec['units'] == ['km/h', '1', 'bar', 'A'] and '100 Nm' in spec['action_unit']
    assert spec['window_duration_s'] == pytest.approx(1.2)

    # A window of the task's shape becomes a state of its size; an action, a map the gate takes.
    window = SyntheticDrive(sample_rate_hz=task.sample_rate_hz,
                            samples_per_window=task.samples_per_window).window(10 ** 18)
    state = states.state(window)
    assert state.shape == (task.state_dim,)
    speed = window.signal('speed') / 100.0
    assert np.allclose(state[:task.samples_per_window], speed)
    proposed, row_start, row_count = mapper.to_map(np.full(task.action_dim, -1.0), 40.0,
                                                   task.default_map, 1)
    assert row_count == 3
    current = task.vehicle_default_map()
    proposed = current.with_torque(proposed.torque_nm, policy_version=1)
    verdict, sent = gate.admit(proposed, current, row_start, row_count)
    assert verdict.ok and sent is not None
    # One more row than the contract allows is refused by its gate.
    wide, _, _ = ActionMapper(task.default_map, 100.0, 1.2, 4).to_map(
        np.full(68, -1.0), 40.0, task.default_map, 1)
    wide = current.with_torque(wide.torque_nm, policy_version=1)
    verdict, sent = gate.admit(wide, current, row_start, 4)
    assert not verdict.ok and sent is None


def test_the_nodes_configure_from_the_task_file(other_task):
    from tspace_ros.nodes.agent import Agent
    from tspace_ros.nodes.can_bridge import CanBridge
    from tspace_ros.nodes.cruncher import CruncherNode
    from tspace_ros.nodes.map_viz import MapViz
    from tspace_ros.nodes.storage import StorageNode
    task = load_task(other_task)
    with RosContext() as ros:
        overrides = [Parameter('task_file', value=str(other_task))]
        agent = Agent('task_agent', context=ros.context, parameter_overrides=overrides)
        cruncher = CruncherNode('task_cruncher', context=ros.context,
                                parameter_overrides=overrides)
        viz = MapViz('task_viz', context=ros.context, parameter_overrides=overrides)
        storage = StorageNode('task_storage', context=ros.context, parameter_overrides=[
            *overrides, Parameter('root', value=str(other_task.parent / 'pool'))])
        bridge = CanBridge('task_bridge', context=ros.context, parameter_overrides=[
            *overrides, Parameter('can_interface', value='virtual'),
            Parameter('can_channel', value='task_contract_test')])
        nodes = (agent, cruncher, viz, storage, bridge)
        try:
            for node in nodes:
                assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, node
            assert agent._states.state_dim == task.state_dim
            assert agent._mapper.rows_per_action == 3 and agent._mapper.torque_budget_nm == 100
            assert cruncher._core.config.action_dim == task.action_dim
            assert cruncher._core.config.samples_per_window == 12
            assert np.array_equal(viz._default_map.torque_nm, task.default_map.torque_nm)
            assert storage._pool.config.spec['state_size'] == task.state_dim
            gate, windows = bridge.core.gate, bridge.core.windows
            assert (gate.rows_per_action, gate.torque_budget_nm, gate.upper_bound) == \
                (3, 100.0, 1.2)
            assert (windows.samples_per_window, windows.sample_rate_hz) == (12, 10.0)
            assert bridge.core.default_map.vehicle_id == task.vehicle_id
        finally:
            for node in nodes:
                node.destroy_node()


def test_a_bad_task_file_fails_configure_and_a_removed_size_parameter_is_named(tmp_path):
    from tspace_ros.nodes.agent import Agent
    data = _shipped_data()
    data['action']['rows_per_action'] = 99
    bad = _write(tmp_path, data)
    with RosContext() as ros:
        agent = Agent('bad_task_agent', context=ros.context,
                      parameter_overrides=[Parameter('task_file', value=str(bad))])
        stale = Agent('stale_agent', context=ros.context,
                      parameter_overrides=[Parameter('samples_per_window', value=30)])
        try:
            assert agent.trigger_configure() == TransitionCallbackReturn.FAILURE
            # A size typed again in a parameter file is an unknown key, not silently used.
            assert stale.trigger_configure() == TransitionCallbackReturn.FAILURE
        finally:
            agent.destroy_node()
            stale.destroy_node()
    with pytest.raises(TaskContractError, match='rows_per_action must be an integer in 1..14'):
        load_task(bad)


@pytest.mark.parametrize('change, named', [
    (lambda d: d.pop('gate'), "missing keys ['gate']"),
    (lambda d: d.update(extra=1), "unknown keys ['extra']"),
    (lambda d: d['gate'].update(torque_budget_nm=0.0), 'torque_budget_nm must be > 0'),
    (lambda d: d['gate'].update(upper_bound=0.5), 'upper_bound must be in 1..10'),
    (lambda d: d['window'].update(samples_per_window=2.5), 'samples_per_window must be an'),
    (lambda d: d['window'].update(sample_rate_hz=float('nan')), 'sample_rate_hz must be in'),
    (lambda d: d['signals'].pop(3), "needs 'current' in 'A'"),
    (lambda d: d['signals'][0].update(unit='m/s'), "needs 'speed' in 'km/h', has 'm/s'"),
    (lambda d: d['signals'][1].pop('scale'), 'state signal without a scale'),
    (lambda d: d['signals'][2].update(role='input'), 'role must be one of'),
    (lambda d: d['signals'].append(dict(d['signals'][0])), 'duplicate names'),
    (lambda d: d.update(default_map='no_such_map.yaml'), 'default_map'),
    (lambda d: d['action'].update(recent_actions=-1), 'recent_actions must be an integer'),
    (lambda d: d.update(vehicle_id=''), 'vehicle_id must be a non-empty string'),
    (lambda d: d['action'].update(scaling='log'), "action.scaling must be one of ['budget', "),
    (lambda d: d['action'].update(rows=2), 'action must be a mapping of exactly'),
])
def test_every_problem_of_a_task_file_is_named(tmp_path, change, named):
    data = _shipped_data()
    change(data)
    with pytest.raises(TaskContractError, match=named.replace('(', r'\(').replace('[', r'\[')):
        load_task(_write(tmp_path, data))


def test_the_contract_round_trips_through_its_dict():
    task = load_task()
    again = TaskContract.from_dict(task.to_dict())
    assert again.to_dict() == task.to_dict()
    assert again.for_vehicle('VIN2').vehicle_id == 'VIN2'
    assert again.for_vehicle('VIN2').vehicle_default_map().vehicle_id == 'VIN2'


_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 6, 10 ** 6),
                    st.floats(allow_nan=True), st.text(max_size=8))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.lists(st.sampled_from(['signals', 'window', 'action', 'gate', 'vehicle_id', 0,
                                      1, 'scale', 'unit', 'role', 'name', 'sample_rate_hz',
                                      'samples_per_window', 'rows_per_action',
                                      'torque_budget_nm', 'upper_bound']),
                     min_size=1, max_size=3),
       value=st.one_of(_LEAVES, st.lists(_LEAVES, max_size=3),
                       st.dictionaries(st.text(max_size=4), _LEAVES, max_size=3)))
def test_property_any_damaged_task_is_a_contract_or_a_named_error(path, value):
    data = _shipped_data()
    data['default_map'] = load_task().default_map.to_dict()
    damaged = copy.deepcopy(data)
    node = damaged
    for key in path[:-1]:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return
    try:
        node[path[-1]] = value
    except (IndexError, TypeError):
        return
    try:
        task = TaskContract.from_dict(damaged, source='damaged.yaml')
    except TaskContractError as error:
        assert 'damaged.yaml' in str(error)
        return
    # Accepted: then everything derived from it works.
    assert task.state_builder().state_dim == task.state_dim > 0
    assert task.safety_gate().rows_per_action == task.rows_per_action


def test_the_action_scaling_is_the_tasks_and_tspaces_when_left_out(tmp_path):
    assert load_task().action_scaling == 'budget'
    assert load_task().action_mapper().scaling == 'budget'
    data = _shipped_data()
    data['action']['scaling'] = 'limits'
    assert load_task(_write(tmp_path, data, 'limits.yaml')).action_mapper().scaling == \
        'limits'
    data = _shipped_data()
    data['action'].pop('scaling')
    assert load_task(_write(tmp_path, data)).action_scaling == 'budget'
