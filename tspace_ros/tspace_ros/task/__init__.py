"""
The task, as every stage sees it, free of ROS and of the simulator.

``files``: the shipped configuration files (vehicle files, default maps) and the
torque-map loader that vehicle-side nodes use; nothing here imports the
simulated vehicle, so a node on a real vehicle never loads the simulation.
``spec``: the observation specification stored with the data, derived from the
signal mapping and the state layout.
"""
