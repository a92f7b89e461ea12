"""
The vehicle bridge, whatever the link: ``BridgeCore`` (``bridge.core``).

ROS-free. The ``can_bridge`` node adapts it to ROS for a CAN vehicle
(``can.bridge.CanBridgeCore`` adds the DBC's decoder and link); a bridge of
another link (a telematics cloud) feeds it decoded samples instead of frames.
"""

from tspace_ros.bridge.core import (BridgeCore, BridgeSettings, EpisodeNote, FlashError,
                                    FlashResult, Now, Outputs, Sample, Watchdog)

__all__ = ['BridgeCore', 'BridgeSettings', 'EpisodeNote', 'FlashError', 'FlashResult', 'Now',
           'Outputs', 'Sample', 'Watchdog']
