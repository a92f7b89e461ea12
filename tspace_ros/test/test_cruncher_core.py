"""The cruncher turns windows, decisions and episode events into transitions and summaries."""

import numpy as np
import pytest

from tspace_ros.agents.vehicle_policy import StateBuilder
from tspace_ros.cruncher import (AgentActionRecord, Cruncher, CruncherConfig,
                                 episode_start_ns_from_id, EpisodeEventRecord, RewardConfig)
from tspace_ros.episodes.control import episode_id_for
from tspace_ros.signals.window import SignalWindow

RATE = 20.0
N = 30
PERIOD_NS = 50_000_000
SPAN_NS = N * PERIOD_NS  # one window: 1.5 s; the next starts one period after this one ends
T0 = 1_795_000_000_123_456_789  # the episode's exact start (UTC ns)
EPISODE = episode_id_for(T0)
ACTION_DIM = 4
VIN, DRIVER = 'VIN0001', 'driver1'


def window(index, current=None, voltage=400.0, speed=36.0, episode=EPISODE, samples=N,
           pedal_unit='1', target=None):
    """Return window ``index`` of the episode: constant signals unless arrays are given."""
    current = 10.0 * (index + 1) if current is None else current
    names = ['speed', 'pedal', 'brake', 'current', 'voltage']
    units = ['km/h', pedal_unit, 'bar', 'A', 'V']
    rows = [speed, 0.3, 0.0, current, voltage]
    if target is not None:
        names.append('target_speed')
        units.append('km/h')
        rows.append(target)
    data = np.array([np.broadcast_to(np.asarray(row, np.float64), (samples,)) for row in rows])
    start = T0 + 2 * PERIOD_NS + index * SPAN_NS
    return SignalWindow(VIN, DRIVER, episode, index, RATE, tuple(names), tuple(units), data,
                        start, start + (samples - 1) * PERIOD_NS)


def energy(w):
    """Return the window's battery energy, Wh, computed here from its samples."""
    power = w.signal('current').astype(np.float64) * w.signal('voltage').astype(np.float64)
    return float(power.sum()) / RATE / 3600.0


def decision(w, active_since_ns=None, version=1, flashed=True, error_code=0, action=None):
    """Return the agent's decision for window w; on time (active before the next) by default."""
    if action is None:
        action = np.full(ACTION_DIM, 0.1 * (w.step_index + 1), np.float32)
    active = w.end_ns + 10_000_000 if active_since_ns is None else active_since_ns
    return AgentActionRecord(VIN, w.episode_id, w.step_index, w.end_ns, action, 3, 1, version,
                             flashed, active if flashed else 0, error_code,
                             '' if flashed else 'refused', 2.0, 20.0)


def event(code, end_ns=0, episode=EPISODE, start_ns=T0):
    """Return an episode event."""
    return EpisodeEventRecord(code, VIN, DRIVER, episode, end_ns or start_ns, start_ns, end_ns)


def cruncher(**overrides):
    """Return a cruncher for 4-value actions."""
    return Cruncher(CruncherConfig(action_dim=ACTION_DIM, **overrides))


def states(recent_actions=0):
    """Return a StateBuilder like the cruncher's (past actions start as zeros)."""
    return StateBuilder(N, ACTION_DIM, recent_actions)


def drive(c, windows, decide=lambda w: True, active=None):
    """Feed windows and on-time decisions (where ``decide``); return what came out."""
    out = []
    for w in windows:
        out += c.on_window(w)
        if decide(w):
            out += c.on_action(decision(w, active(w) if active else None,
                                        version=10 + w.step_index))
    return out


def store(c, last_window, code=EpisodeEventRecord.STORED):
    """End the episode at the end of last_window; return finished()."""
    c.on_event(event(code, end_ns=last_window.end_ns))
    return c.finished()


def test_on_time_actions_give_one_transition_per_window_with_minus_next_window_energy():
    c = cruncher()
    c.on_event(event(EpisodeEventRecord.STARTED))
    ws = [window(i) for i in range(5)]
    out = drive(c, ws, decide=lambda w: w.step_index < 4)
    assert [t.step_index for t in out] == [0, 1, 2]  # step 3 is held back
    assert c.stats()['steps'] == 4 and c.stats()['transitions'] == 4
    builder = states()
    for k, t in enumerate(out):
        assert t.reward == pytest.approx(-energy(ws[k + 1]), rel=1e-9)
        assert t.energy_wh == pytest.approx(energy(ws[k + 1]), rel=1e-9)
        np.testing.assert_array_equal(t.state, builder.state(ws[k]))
        np.testing.assert_array_equal(t.next_state, builder.state(ws[k + 1]))
        np.testing.assert_allclose(t.action, np.full(ACTION_DIM, 0.1 * (k + 1)), rtol=1e-6)
        assert (t.state_stamp_ns, t.next_state_stamp_ns) == (ws[k].end_ns, ws[k + 1].end_ns)
        assert (t.vehicle_id, t.driver_id, t.episode_id) == (VIN, DRIVER, EPISODE)
        assert t.episode_start_ns == T0  # STARTED's exact start, not the id's milliseconds
        assert (t.policy_version, t.action_row_start, t.action_row_count) == (10 + k, 3, 1)
        assert not t.done and not t.timed_out
    assert c.stats()['running_reward'] == pytest.approx(-sum(energy(w) for w in ws[1:]))


def test_a_late_action_stretches_the_step_until_the_first_window_under_the_new_map():
    c = cruncher()
    ws = [window(i) for i in range(5)]
    c.on_window(ws[0])
    c.on_window(ws[1])
    assert c.on_action(decision(ws[0], ws[1].start_ns + 100_000_000)) == []
    assert c.stats()['steps'] == 0  # W1 started under the old map
    c.on_window(ws[2])
    assert c.stats()['steps'] == 1
    c.on_action(decision(ws[2]))
    out = c.on_window(ws[3])
    (first,) = out
    assert first.reward == pytest.approx(-(energy(ws[1]) + energy(ws[2])), rel=1e-9)
    assert first.energy_wh == pytest.approx(energy(ws[1]) + energy(ws[2]), rel=1e-9)
    np.testing.assert_array_equal(first.next_state, states().state(ws[2]))
    assert first.next_state_stamp_ns == ws[2].end_ns
    # A decision that comes after the next window but took effect before it began
    # ends the step at once, through on_action.
    c.on_window(ws[4])
    released = c.on_action(decision(ws[3], ws[4].start_ns))
    assert [t.step_index for t in released] == [1]
    np.testing.assert_array_equal(released[0].state, states().state(ws[2]))
    assert released[0].reward == pytest.approx(-energy(ws[3]), rel=1e-9)
    assert c.stats()['steps'] == 3


def test_without_a_decision_the_step_times_out_after_max_step_windows():
    c = cruncher(max_step_windows=3)
    ws = [window(i) for i in range(7)]
    for w in ws[:3]:
        assert c.on_window(w) == []
    assert c.stats()['timed_out'] == 0
    c.on_window(ws[3])
    assert c.stats()['timed_out'] == 1 and c.stats()['steps'] == 1
    c.on_window(ws[4])
    c.on_window(ws[5])
    (t,) = c.on_window(ws[6])  # the second time-out releases the first
    assert t.timed_out and t.step_index == 0 and t.policy_version == 0
    np.testing.assert_array_equal(t.action, np.zeros(ACTION_DIM))
    assert (t.action_row_start, t.action_row_count) == (0, 0)
    np.testing.assert_array_equal(t.state, states().state(ws[0]))
    np.testing.assert_array_equal(t.next_state, states().state(ws[3]))
    assert t.reward == pytest.approx(-sum(energy(w) for w in ws[1:4]), rel=1e-9)
    # The decision for W0 now comes too late: stale.
    assert c.on_action(decision(ws[0])) == []
    assert c.stats()['stale_actions'] == 1


def test_dropped_time_outs_are_counted_and_leave_their_step_index_unused():
    c = cruncher(keep_timed_out=False, max_step_windows=2)
    ws = [window(i) for i in range(4)]
    out = drive(c, ws, decide=lambda w: w.step_index == 2)
    assert out == []
    ((summary, last),) = store(c, ws[3])
    stats = c.stats()
    assert stats['timed_out'] == 1 and stats['timed_out_dropped'] == 1
    assert stats['transitions'] == 1 and stats['steps'] == 2
    (t,) = last
    assert t.step_index == 1 and t.done and not t.timed_out
    np.testing.assert_array_equal(t.state, states().state(ws[2]))
    assert summary.step_count == 1 and summary.timed_out_steps == 1
    assert summary.total_reward == pytest.approx(t.reward)


def test_a_failed_flash_ends_the_step_without_a_transition():
    c = cruncher()
    ws = [window(i) for i in range(4)]
    c.on_window(ws[0])
    assert c.on_action(decision(ws[0], flashed=False, error_code=7)) == []
    c.on_window(ws[1])  # starts a new step
    c.on_action(decision(ws[1]))
    c.on_window(ws[2])
    stats = c.stats()
    assert stats['flash_failed'] == 1 and stats['flash_errors'] == {7: 1}
    assert stats['abandoned_steps'] == 1 and stats['steps'] == 1
    assert 'error 7' in stats['last_problem']
    ((_, (t,)),) = store(c, ws[2])
    assert t.step_index == 0
    np.testing.assert_array_equal(t.state, states().state(ws[1]))
    assert t.reward == pytest.approx(-energy(ws[2]), rel=1e-9)


def test_decisions_for_other_windows_are_counted_and_ignored():
    c = cruncher()
    ws = [window(i) for i in range(2)]
    c.on_window(ws[0])
    other = window(0, episode=episode_id_for(T0 + 60 * 10**9))
    assert c.on_action(decision(other)) == []  # another episode
    assert c.on_action(decision(window(5))) == []  # a window not seen
    good = decision(ws[0], action=np.full(ACTION_DIM, 0.5, np.float32))
    c.on_action(good)
    assert c.on_action(decision(ws[0], action=np.full(ACTION_DIM, -0.5, np.float32))) == []
    c.on_window(ws[1])
    assert c.stats()['stale_actions'] == 3
    ((_, (t,)),) = store(c, ws[1])
    np.testing.assert_allclose(t.action, 0.5)


def test_a_stored_episode_ends_with_done_and_exact_totals():
    c = cruncher()
    c.on_event(event(EpisodeEventRecord.STARTED))
    speeds = [0.0, 18.0, 36.0, 54.0, 20.0]
    ws = [window(i, speed=s) for i, s in enumerate(speeds)]
    out = drive(c, ws, decide=lambda w: w.step_index < 4)
    c.on_event(event(EpisodeEventRecord.ENDING))
    assert c.finished() == []
    ((summary, last),) = store(c, ws[-1])
    assert c.finished() == []
    transitions = out + last
    assert [t.step_index for t in transitions] == [0, 1, 2, 3]
    assert [t.done for t in transitions] == [False, False, False, True]
    assert summary.valid and summary.step_count == 4
    assert (summary.vehicle_id, summary.driver_id, summary.episode_id) == (VIN, DRIVER, EPISODE)
    assert (summary.episode_start_ns, summary.episode_end_ns) == (T0, ws[-1].end_ns)
    assert summary.energy_wh == pytest.approx(sum(energy(w) for w in ws), rel=1e-9)
    assert summary.distance_km == pytest.approx(sum(s * 1.5 / 3600 for s in speeds), rel=1e-6)
    assert summary.total_reward == pytest.approx(sum(t.reward for t in transitions), rel=1e-12)
    # The steps' energies cover every window after the first observation.
    assert sum(t.energy_wh for t in transitions) == pytest.approx(
        summary.energy_wh - energy(ws[0]), rel=1e-9)
    assert (summary.first_policy_version, summary.last_policy_version) == (10, 13)
    stats = c.stats()
    assert stats['episodes_stored'] == 1 and stats['open_episodes'] == 0
    assert stats['last_episode']['total_reward'] == summary.total_reward
    assert stats['episode_id'] == '' and stats['running_reward'] == 0.0


def test_a_discarded_episode_is_invalid_and_its_held_back_transition_never_comes_out():
    c = cruncher()
    ws = [window(i) for i in range(3)]
    out = drive(c, ws)
    assert [t.step_index for t in out] == [0]
    ((summary, transitions),) = store(c, ws[-1], EpisodeEventRecord.DISCARDED)
    assert not summary.valid and transitions == []
    assert c.stats()['episodes_discarded'] == 1 and c.stats()['episodes_stored'] == 0
    assert c.flush() == []


def test_stored_before_the_last_windows_waits_for_them():
    c = cruncher()
    ws = [window(i) for i in range(6)]
    out = drive(c, ws[:3])
    c.on_event(event(EpisodeEventRecord.STORED, end_ns=ws[4].end_ns))
    assert c.finished() == []
    out += drive(c, ws[3:5])
    ((summary, last),) = c.finished()
    assert summary.energy_wh == pytest.approx(sum(energy(w) for w in ws[:5]), rel=1e-9)
    assert [t.step_index for t in out + last] == [0, 1, 2, 3]
    assert last[0].done and last[0].next_state_stamp_ns == ws[4].end_ns
    # A window that still carries the id but ends after the episode is not part of it.
    assert c.on_window(ws[5]) == [] and c.finished() == []
    assert c.stats()['late_windows'] == 1


def test_an_episode_ends_on_flush_or_on_a_later_window_when_its_end_is_not_reached():
    c = cruncher()
    ws = [window(i) for i in range(3)]
    drive(c, ws)
    c.on_event(event(EpisodeEventRecord.STORED, end_ns=ws[2].end_ns + 10 * SPAN_NS))
    assert c.finished() == []
    assert c.flush()[0][0].energy_wh == pytest.approx(sum(energy(w) for w in ws), rel=1e-9)
    c2 = cruncher()
    drive(c2, ws)
    c2.on_event(event(EpisodeEventRecord.STORED, end_ns=ws[2].end_ns + 10 * SPAN_NS))
    c2.on_window(window(0, episode=''))
    assert len(c2.finished()) == 1


def test_gaps_are_counted_and_no_step_spans_one():
    c = cruncher()
    ws = [window(i) for i in (0, 1, 3, 4, 7)]
    out = drive(c, ws)
    stats = c.stats()
    assert stats['gaps'] == 2 and stats['missing_windows'] == 3
    assert stats['abandoned_steps'] == 2
    ((summary, last),) = store(c, ws[-1])
    pairs = [(t.state_stamp_ns, t.next_state_stamp_ns) for t in out + last]
    assert pairs == [(ws[0].end_ns, ws[1].end_ns), (ws[2].end_ns, ws[3].end_ns)]
    assert summary.energy_wh == pytest.approx(sum(energy(w) for w in ws), rel=1e-9)


def test_a_bad_window_is_counted_not_raised_and_the_step_restarts():
    c = cruncher()
    ws = [window(0), window(1, pedal_unit='%'), window(2, samples=20), window(3), window(4)]
    c.on_window(ws[0])
    c.on_action(decision(ws[0]))
    assert c.on_window(ws[1]) == []
    assert c.stats()['abandoned_steps'] == 1 and "'pedal'" in c.stats()['last_problem']
    assert c.on_window(ws[2]) == []
    stats = c.stats()
    assert stats['bad_windows'] == 2 and stats['abandoned_steps'] == 1
    assert '20 samples' in stats['last_problem']
    out = drive(c, ws[3:])
    ((summary, last),) = store(c, ws[-1])
    (t,) = out + last
    np.testing.assert_array_equal(t.state, states().state(ws[3]))
    np.testing.assert_array_equal(t.next_state, states().state(ws[4]))
    # The summary still counts the energy of every window.
    assert summary.energy_wh == pytest.approx(sum(energy(w) for w in ws), rel=1e-9)
    c.on_window(window(0, episode=episode_id_for(T0 + 10**12), current=[1.0] * 29 + [np.nan]))
    assert c.stats()['bad_windows'] == 3 and 'not finite' in c.stats()['last_problem']


def test_states_carry_the_recent_actions_with_zeros_for_timed_out_steps():
    c = cruncher(recent_actions=2, max_step_windows=1)
    ws = [window(i) for i in range(4)]
    out = drive(c, ws, decide=lambda w: w.step_index != 1)
    ((_, last),) = store(c, ws[-1])
    t0, t1, t2 = out + last
    zeros = np.zeros(ACTION_DIM, np.float32)
    a0, a2 = (np.full(ACTION_DIM, 0.1 * (k + 1), np.float32) for k in (0, 2))
    signals = states().state(ws[0]).size
    np.testing.assert_array_equal(t0.state[signals:], np.concatenate([zeros, zeros]))
    np.testing.assert_array_equal(t0.next_state[signals:], np.concatenate([zeros, a0]))
    np.testing.assert_array_equal(t1.state, t0.next_state)
    assert t1.timed_out
    np.testing.assert_array_equal(t1.next_state[signals:], np.concatenate([a0, zeros]))
    np.testing.assert_array_equal(t2.next_state[signals:], np.concatenate([zeros, a2]))
    np.testing.assert_array_equal(t2.next_state[:signals], states().state(ws[3]))


def test_past_actions_start_from_zeros_in_each_episode():
    c = cruncher(recent_actions=1)
    drive(c, [window(i) for i in range(3)])
    store(c, window(2))
    other = episode_id_for(T0 + 10**12)
    out = drive(c, [window(i, episode=other) for i in range(3)])
    signals = states().state(window(0)).size
    np.testing.assert_array_equal(out[0].state[signals:], np.zeros(ACTION_DIM))


def test_a_window_that_ends_after_the_episode_is_left_out_of_it():
    c = cruncher()
    ws = [window(i) for i in range(7)]
    drive(c, ws[:3])
    c.on_event(event(EpisodeEventRecord.STORED, end_ns=ws[5].end_ns))
    assert c.finished() == []  # windows 3 to 5 may still come
    c.on_window(ws[6])  # they were lost; this one still carries the id
    ((summary, _),) = c.finished()
    assert summary.energy_wh == pytest.approx(sum(energy(w) for w in ws[:3]), rel=1e-9)
    assert c.stats()['late_windows'] == 1 and c.stats()['missing_windows'] == 3


def kinetic_wh(w, mass):
    """Return the kinetic energy at the window's last sample, Wh."""
    v = float(w.signal('speed')[-1]) / 3.6
    return 0.5 * mass * v * v / 3600.0


def test_kinetic_energy_shaping_adds_gamma_phi_next_minus_phi_and_telescopes_to_zero():
    profile = [np.zeros(N), np.linspace(0, 36, N), np.full(N, 36.0), np.linspace(54, 0, N),
               np.zeros(N)]
    ws = [window(i, speed=s) for i, s in enumerate(profile)]
    mass = 2000.0

    def rewards(reward):
        c = cruncher(reward=reward)
        out = drive(c, ws, decide=lambda w: w.step_index < 4)
        ((_, last),) = store(c, ws[-1])
        return out + last

    plain = rewards(RewardConfig())
    shaped = rewards(RewardConfig(kinetic_energy_mass_kg=mass, shaping_gamma=0.9))
    for k, (a, b) in enumerate(zip(plain, shaped)):
        expected = 0.9 * kinetic_wh(ws[k + 1], mass) - kinetic_wh(ws[k], mass)
        assert b.reward - a.reward == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert b.energy_wh == a.energy_wh
    assert any(b.reward != a.reward for a, b in zip(plain, shaped))
    undiscounted = rewards(RewardConfig(kinetic_energy_mass_kg=mass, shaping_gamma=1.0))
    assert sum(t.reward for t in undiscounted) == pytest.approx(
        sum(t.reward for t in plain), rel=1e-12)


def test_speed_tracking_and_action_terms():
    w0, w1 = window(0, target=36.0), window(1, speed=40.0, target=np.linspace(30, 50, N))
    action = np.array([0.5, -0.5, 1.0, 0.0], np.float32)
    config = RewardConfig(speed_tracking_weight=0.01, action_weight=2.0)
    reward, energy_wh, terms = config.compute([w1], w0, action)
    mse = float(np.mean((40.0 - np.linspace(30, 50, N)) ** 2))
    assert terms['speed_tracking'] == pytest.approx(-0.01 * mse, rel=1e-6)
    assert terms['action'] == pytest.approx(-2.0 * 1.5)
    assert terms['energy'] == pytest.approx(-energy(w1)) and energy_wh == pytest.approx(energy(w1))
    assert reward == pytest.approx(sum(terms.values()))
    notes = []
    _, _, terms = config.compute([window(1)], w0, action, notes)
    assert 'speed_tracking' not in terms and "'target_speed'" in notes[0]
    # Through the cruncher: counted, the reason kept.
    c = cruncher(reward=config)
    drive(c, [window(0), window(1)])
    assert c.stats()['speed_tracking_skipped'] == 1
    assert 'target_speed' in c.stats()['last_problem']


def test_jerk_term_is_minus_weight_times_mean_squared_jerk_over_the_joined_windows():
    w0 = window(0)
    spike = np.zeros(N)
    spike[10] = 3.6  # one sample 1 m/s up: second differences 1, -2, 1 m/s
    config = RewardConfig(jerk_weight=0.001)
    reward, _, terms = config.compute([window(1, speed=spike)], w0, np.zeros(ACTION_DIM))
    expected = (1 + 4 + 1) * RATE ** 4 / (N - 2)  # (m/s^3)^2, jerk = second diff x rate^2
    assert terms['jerk'] == pytest.approx(-0.001 * expected, rel=1e-6)  # float32 samples
    assert reward == pytest.approx(sum(terms.values()))
    # Constant acceleration across two windows joined in order: no jerk at all.
    ramp = np.arange(2 * N) * 0.5
    ws = [window(1, speed=ramp[:N]), window(2, speed=ramp[N:])]
    _, _, terms = config.compute(ws, w0, np.zeros(ACTION_DIM))
    assert terms['jerk'] == pytest.approx(0.0, abs=1e-6)
    # Too few samples: no term, the reason noted.
    notes = []
    _, _, terms = config.compute([window(1, samples=2)], w0, np.zeros(ACTION_DIM), notes)
    assert 'jerk' not in terms and 'jerk term left out' in notes[0]
    # Off by default.
    assert set(RewardConfig().compute([window(1, speed=spike)], w0, [0.0])[2]) == {'energy'}


def test_band_term_is_minus_weight_times_the_seconds_outside_the_band():
    w0 = window(0, target=36.0)
    speed = np.full(N, 36.0)
    speed[:5] = 38.5   # 2.5 km/h fast: outside +-2
    speed[5:8] = 34.1  # 1.9 km/h slow: inside +-2, outside +-1.5
    config = RewardConfig(band_weight=3.0)
    reward, _, terms = config.compute([window(1, speed=speed, target=36.0)], w0,
                                      np.zeros(ACTION_DIM))
    assert terms['band'] == pytest.approx(-3.0 * 5 / RATE)
    assert reward == pytest.approx(terms['energy'] + terms['band'])
    narrow = RewardConfig(band_weight=3.0, band_kph=1.5)
    _, _, terms = narrow.compute([window(1, speed=speed, target=36.0)], w0, np.zeros(ACTION_DIM))
    assert terms['band'] == pytest.approx(-3.0 * 8 / RATE)
    notes = []
    _, _, terms = config.compute([window(1, speed=speed)], w0, np.zeros(ACTION_DIM), notes)
    assert 'band' not in terms and "'target_speed'" in notes[0] and 'band term' in notes[0]


@pytest.mark.parametrize('field, value', [
    ('kinetic_energy_mass_kg', -1.0), ('kinetic_energy_mass_kg', float('nan')),
    ('shaping_gamma', 1.5), ('shaping_gamma', -0.1), ('speed_tracking_weight', -0.1),
    ('action_weight', float('inf')), ('speed_signal', ''), ('action_weight', 'x'),
    ('jerk_weight', -1.0), ('jerk_weight', float('nan')), ('band_weight', -0.5),
    ('band_weight', True), ('band_kph', 0.0), ('band_kph', -2.0), ('band_kph', float('inf'))])
def test_reward_config_names_the_bad_field(field, value):
    with pytest.raises(ValueError, match=field):
        RewardConfig(**{field: value})


@pytest.mark.parametrize('field, value', [
    ('max_step_windows', 0), ('action_dim', 0), ('recent_actions', -1),
    ('samples_per_window', 1.5), ('reward', None)])
def test_cruncher_config_names_the_bad_field(field, value):
    with pytest.raises(ValueError, match=field):
        CruncherConfig(**{field: value})


def test_episode_start_without_started_comes_from_the_id_and_started_later_still_counts():
    assert episode_start_ns_from_id(episode_id_for(T0)) == T0 // 1_000_000 * 1_000_000
    assert episode_start_ns_from_id('not-an-id') is None
    ws = [window(i) for i in range(4)]
    c = cruncher()
    out = drive(c, ws)
    assert out[0].episode_start_ns == T0 // 1_000_000 * 1_000_000
    # STARTED before the first transition comes out: its exact start is used.
    c2 = cruncher()
    drive(c2, ws[:2])
    c2.on_event(event(EpisodeEventRecord.STARTED))
    assert drive(c2, ws[2:])[0].episode_start_ns == T0


def test_windows_outside_episodes_make_no_transitions():
    c = cruncher(max_step_windows=1)
    ws = [window(i, episode='') for i in range(5)]
    assert drive(c, ws) == []
    stats = c.stats()
    assert stats['windows'] == 5 and stats['steps'] == 0 and stats['stale_actions'] == 5
    assert c.flush() == []
