"""The driver's episode state machine: transitions, countdown, refusals."""

import pytest

from tspace_ros.episodes.control import (CONFIGURE, END_INVALID, END_VALID, ENDING,
                                         episode_id_for, EpisodeControl, EXIT, EXITED, IDLE,
                                         RUNNING, START, UNCONFIGURED)

S = 1_000_000_000
T0 = 1_790_000_000 * S


def configured(countdown_s=3.0):
    control = EpisodeControl(countdown_s=countdown_s)
    assert control.command(CONFIGURE, T0, 'VIN1', 'drv1').message == 'ready'
    return control


def test_valid_episode_runs_counts_down_and_is_stored():
    control = configured()
    started = control.command(START, T0 + S)
    assert (started.accepted, started.state) == (True, RUNNING)
    assert started.episode_id == episode_id_for(T0 + S) == '20260921T141321.000Z'
    ending = control.command(END_VALID, T0 + 10 * S)
    assert (ending.accepted, ending.state, ending.message) == (True, ENDING, 'ending in 3 s')
    control.tick(T0 + 12 * S)
    assert control.state == ENDING and control.collect_finished() == []
    control.tick(T0 + 13 * S)
    assert control.state == IDLE
    (episode,) = control.collect_finished()
    assert (episode.outcome, episode.start_ns, episode.end_ns) == ('stored', T0 + S, T0 + 13 * S)
    assert (episode.vehicle_id, episode.driver_id) == ('VIN1', 'drv1')


def test_invalid_end_discards_while_running_and_while_ending():
    control = configured()
    control.command(START, T0)
    assert control.command(END_INVALID, T0 + S).message == 'discarded'
    control.command(START, T0 + 2 * S)
    control.command(END_VALID, T0 + 3 * S)
    assert control.command(END_INVALID, T0 + 4 * S).accepted
    assert [e.outcome for e in control.collect_finished()] == ['discarded', 'discarded']
    assert control.state == IDLE


def test_exit_discards_a_running_episode_and_completes_an_ending_one():
    control = configured()
    control.command(START, T0)
    assert control.command(EXIT, T0 + S).state == EXITED
    assert [e.outcome for e in control.collect_finished()] == ['discarded']
    control = configured()
    control.command(START, T0)
    control.command(END_VALID, T0 + S)
    control.command(EXIT, T0 + 2 * S)
    assert [e.outcome for e in control.collect_finished()] == ['stored']


@pytest.mark.parametrize('setup, code, reason', [
    ([], START, 'not configured'),
    ([], END_VALID, 'not configured'),
    ([CONFIGURE], END_VALID, 'no episode is running'),
    ([CONFIGURE], END_INVALID, 'no episode is running'),
    ([CONFIGURE, START], START, 'is not finished'),
    ([CONFIGURE, START], CONFIGURE, 'cannot CONFIGURE while running'),
    ([CONFIGURE, START, END_VALID], END_VALID, 'already ending'),
    ([CONFIGURE, EXIT], START, 'exited'),
    ([CONFIGURE], 9, 'unknown command 9'),
])
def test_commands_that_make_no_sense_are_refused_and_change_nothing(setup, code, reason):
    control = EpisodeControl()
    for step in setup:
        assert control.command(step, T0, 'VIN1', 'drv1').accepted
    state, episode = control.state, control.episode_id
    answer = control.command(code, T0)
    assert not answer.accepted and reason in answer.message
    assert (control.state, control.episode_id) == (state, episode)


def test_configure_needs_ids_and_zero_countdown_stores_at_once():
    control = EpisodeControl()
    assert not control.command(CONFIGURE, T0).accepted
    assert control.state == UNCONFIGURED
    control = configured(countdown_s=0.0)
    control.command(START, T0)
    assert (control.command(END_VALID, T0 + S).state, control.state) == (IDLE, IDLE)
    assert [e.outcome for e in control.collect_finished()] == ['stored']
    with pytest.raises(ValueError):
        EpisodeControl(countdown_s=-1.0)
