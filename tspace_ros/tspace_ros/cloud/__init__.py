"""
A remote vehicle through a telematics cloud (tspace's RemoteCAN contract), free of ROS.

``remote_can``: the requests (``get_signal``, ``set_torque``), the replies and
their typed codes, parsed without trusting the body. ``batches``: a
``get_signal`` result (ragged one-second lists in the vehicle's local time)
turned into timestamped samples for the window builder, with duplicate, late,
future and malformed seconds counted.
"""
