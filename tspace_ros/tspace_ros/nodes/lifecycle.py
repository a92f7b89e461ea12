"""Shared pieces of our lifecycle nodes: typed parameters and the process main loop."""

import functools
import os
import signal
import sys
import threading
import time
import traceback
from typing import Callable, List, Optional, Sequence, Tuple

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType)
import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecyclePublisher, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.service import Service
from rclpy.signals import SignalHandlerOptions
from rclpy.subscription import Subscription
from rclpy.timer import Timer

# Parameters rclpy declares on every node (not ours to check).
IGNORED_PARAMETERS = frozenset({'use_sim_time', 'start_type_description_service'})

_PARAMETER_TYPES = {
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    str: ParameterType.PARAMETER_STRING,
}


_TRANSITION_CALLBACKS = ('on_configure', 'on_activate', 'on_deactivate', 'on_cleanup',
                         'on_shutdown')


def _guarded(method):
    """Wrap a transition callback: an exception is logged with its traceback, then ERROR."""
    @functools.wraps(method)
    def transition(self, state):
        try:
            return method(self, state)
        except Exception as error:  # a bug or a hostile input: say what, never silently
            self.last_error = f'{method.__name__[3:]} failed: {type(error).__name__}: {error}'
            self.get_logger().error(
                f'{method.__name__[3:]} failed: {type(error).__name__}: {error}\n'
                f'{traceback.format_exc()}')
            return TransitionCallbackReturn.ERROR
    transition.guarded = True
    return transition


class TspaceLifecycleNode(LifecycleNode):
    """
    A LifecycleNode that declares described parameters and knows when it is finalized.

    Its transition callbacks never let an exception escape unexplained: it is
    logged with its traceback and the transition ends in ERROR (the node
    releases its resources, see ``on_error``). ``last_error`` is the reason of
    the latest failed transition (``configure_failed`` or the exception), for
    whoever reports the failure.
    """

    def __init_subclass__(cls, **kwargs):
        """Guard the transition callbacks a subclass defines (see the class doc)."""
        super().__init_subclass__(**kwargs)
        for name in _TRANSITION_CALLBACKS:
            method = cls.__dict__.get(name)
            if method is not None and not getattr(method, 'guarded', False):
                setattr(cls, name, _guarded(method))

    def __init__(self, node_name: str, **kwargs):
        """Create the node; `finalized` turns True once it reaches the finalized state."""
        self.last_error = ''
        super().__init__(node_name, **kwargs)
        self.finalized = False
        self._parameter_errors = []
        self._steady_clock = None

    def configure_failed(self, message: str) -> None:
        """Log why configure failed and keep it as ``last_error`` (for the failure report)."""
        self.last_error = f'configure failed: {message}'.split('\n', 1)[0]
        self.get_logger().error(f'configure failed: {message}')

    def declare_described(self, name: str, default, description: str,
                          value_range: Optional[Tuple[float, float]] = None,
                          any_type: bool = False):
        """
        Declare a parameter with its type, description and optional inclusive range.

        any_type lets a value of another type through (e.g. a CAN channel given
        as 0 or as can0); read it with str(). A given value of the wrong type or
        out of range does not kill the process:
        the parameter keeps its default, the error is kept, and
        ``parameters_valid()`` (called first in ``on_configure``) reports it.
        A list default (of strings; may be empty) declares a string array; read it
        with ``string_list()``. An integer given for a float parameter is taken as
        that number (YAML writes 1 for 1.0).
        """
        if isinstance(default, list):
            descriptor = ParameterDescriptor(
                name=name, type=ParameterType.PARAMETER_STRING_ARRAY, description=description)
            try:
                return self.declare_parameter(name, default or Parameter.Type.STRING_ARRAY,
                                              descriptor)
            except (InvalidParameterTypeException, InvalidParameterValueException) as error:
                self._parameter_errors.append(f'parameter {name!r}: {error}')
                return self.declare_parameter(name, default or Parameter.Type.STRING_ARRAY,
                                              descriptor, ignore_override=True)
        descriptor = ParameterDescriptor(
            name=name, type=_PARAMETER_TYPES[type(default)], description=description,
            dynamic_typing=any_type)
        if value_range is not None:
            low, high = value_range
            if isinstance(default, int) and not isinstance(default, bool):
                descriptor.integer_range = [IntegerRange(
                    from_value=int(low), to_value=int(high), step=0)]
            else:
                descriptor.floating_point_range = [FloatingPointRange(
                    from_value=float(low), to_value=float(high), step=0.0)]
        try:
            return self.declare_parameter(name, default, descriptor)
        except (InvalidParameterTypeException, InvalidParameterValueException) as error:
            given = self._parameter_overrides.get(name)
            if isinstance(default, float) and given is not None and \
                    given.type_ == Parameter.Type.INTEGER:
                # YAML (a parameter file, -p x:=1) writes 1 for 1.0: take it as the number.
                try:
                    return self.declare_parameter(name, float(given.value), descriptor,
                                                  ignore_override=True)
                except InvalidParameterValueException as out_of_range:
                    error = out_of_range
            self._parameter_errors.append(f'parameter {name!r}: {error}')
            return self.declare_parameter(name, default, descriptor, ignore_override=True)

    def declare_task_file(self):
        """Declare ``task_file``: the vehicle's task contract every stage shares."""
        return self.declare_described(
            'task_file', '', "The vehicle's task contract, YAML: signals, window, default map, "
            "rows per action, gate limits ('' = the shipped simulated van's "
            'config/vehicles/sim_van_task.yaml).')

    def load_task(self, vehicle_id: str = ''):
        """Return the task contract of ``task_file`` (TaskContractError if it cannot work)."""
        from tspace_ros.task.contract import load_task
        return load_task(self.get_parameter('task_file').value, vehicle_id)

    def wall_timer(self, period_s: float, callback, **kwargs):
        """
        Create a timer on the steady (wall) clock.

        For housekeeping (diagnostics, status, discovery): it keeps running while a
        simulation's clock stands still, and is never tied to /clock, whose timers
        can hang the node's clean-up while the clock runs fast.
        """
        if self._steady_clock is None:
            self._steady_clock = Clock(clock_type=ClockType.STEADY_TIME)
        return self.create_timer(period_s, callback, clock=self._steady_clock, **kwargs)

    def destroy_entities(self, *entities) -> None:
        """Destroy timers, services, subscriptions and (lifecycle) publishers; skip None."""
        for entity in entities:
            if entity is None:
                continue
            if isinstance(entity, Timer):
                self.destroy_timer(entity)
            elif isinstance(entity, Service):
                self.destroy_service(entity)
            elif isinstance(entity, Subscription):
                self.destroy_subscription(entity)
            elif isinstance(entity, LifecyclePublisher):
                self.destroy_lifecycle_publisher(entity)
            elif isinstance(entity, Publisher):
                self.destroy_publisher(entity)
            else:
                raise TypeError(f'cannot destroy a {type(entity).__name__}')

    def string_list(self, name: str) -> List[str]:
        """Return a string-array parameter as a list ([] when not set)."""
        if not self.has_parameter(name):
            raise KeyError(name)
        parameter = self.get_parameter_or(name, Parameter(name, value=[]))
        return list(parameter.value or [])

    def parameters_valid(self) -> bool:
        """
        Log every rejected parameter value and every unknown key; True when there is none.

        An unknown key is a name given to this node (parameter file, -p, override)
        that it does not declare: usually a typo, which would otherwise be ignored.
        """
        errors = list(self._parameter_errors)
        unknown = sorted(set(self._parameter_overrides) - set(self._parameters) -
                         IGNORED_PARAMETERS)
        if unknown:
            files = parameter_files()
            where = f'parameter file {", ".join(files)}' if files else 'the given parameters'
            errors.append(f'{where}: unknown key(s) {unknown} for node '
                          f'{self.get_fully_qualified_name()}; it takes '
                          f'{sorted(set(self._parameters) - IGNORED_PARAMETERS)}')
        for message in errors:
            self.configure_failed(message)
        return not errors

    def release(self) -> None:
        """Release what on_configure created; must be safe to call twice (override)."""

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        """Release everything configure created."""
        self.release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        """Release everything and mark the node finalized so that its process can exit."""
        self.release()
        self.finalized = True
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state) -> TransitionCallbackReturn:
        """Recover to unconfigured after an error in a transition."""
        self.get_logger().error(f'error in state {state.label}: releasing resources')
        self.release()
        return TransitionCallbackReturn.SUCCESS


def parameter_files() -> List[str]:
    """Return the --params-file arguments this process was started with."""
    argv = sys.argv
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == '--params-file']


def run_lifecycle_node(factory: Callable[[], TspaceLifecycleNode],
                       args: Optional[Sequence[str]] = None,
                       executor_class=SingleThreadedExecutor,
                       shutdown_timeout_s: float = 4.0) -> int:
    """
    Spin one lifecycle node until it is finalized; SIGINT/SIGTERM shut it down cleanly.

    On a signal the node goes through its shutdown transition inside the
    executor (so on_shutdown can still talk to the vehicle, e.g. restore the
    default torque map) before rclpy shuts down; if that takes longer than
    shutdown_timeout_s the process exits anyway with code 1. The default (4 s)
    is inside ``ros2 launch``'s 5 s between SIGINT and SIGTERM: a node always
    ends by itself.
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    node = None
    code = 0
    try:
        node = factory()
        executor = executor_class()
        executor.add_node(node)
        deadline = None
        while not node.finalized:
            if stop.is_set() and deadline is None:
                node.get_logger().info('signal received: shutting down')
                deadline = time.monotonic() + shutdown_timeout_s
                executor.create_task(node.trigger_shutdown)
            if deadline is not None and time.monotonic() > deadline:
                node.get_logger().error(
                    f'shutdown did not finish within {shutdown_timeout_s} s; exiting')
                # A callback is stuck: destroying the node would wait for it forever.
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(1)
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        # ros2 launch forwards Ctrl-C to every process, which the terminal has already sent
        # to the whole group: a second signal during the exit must not kill the process.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
    return code


def declare_string_array(node: TspaceLifecycleNode, name: str, default, description: str):
    """Declare a string-array parameter; a wrong value keeps the default and fails configure."""
    descriptor = ParameterDescriptor(name=name, type=ParameterType.PARAMETER_STRING_ARRAY,
                                     description=description)
    try:
        return node.declare_parameter(name, list(default), descriptor)
    except (InvalidParameterTypeException, InvalidParameterValueException) as error:
        node._parameter_errors.append(f'parameter {name!r}: {error}')
        return node.declare_parameter(name, list(default), descriptor, ignore_override=True)
