"""Vehicle signals: fixed-rate observation windows and their sources."""

from tspace_ros.signals.window import SignalWindow, WindowError

__all__ = ['SignalWindow', 'WindowError']
