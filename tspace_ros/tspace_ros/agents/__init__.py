"""
Agents: DDPG and recurrent RDPG, their policy exchange format and runtimes.

This package imports no TensorFlow at import time: the vehicle-side agent node
uses ``policy_exchange``, ``litert`` and ``vehicle_policy`` only and must stay
small; the trainer imports ``ddpg``/``rdpg``/``export``, which need TensorFlow.
"""
