"""
The simulated vehicle, free of ROS: a 3.5 t electric van driven through a drive cycle.

Components: longitudinal dynamics (LongitudinalVehicle), reduction gear, motor
and battery (Driveline, Motor, Battery), the VCU that applies the torque map
(Vcu), a driver who follows the speed trace (Driver), the regulation's drive
cycles (drive_cycle) and the simulation that ties them together and samples
the signals (VehicleSimulation). Parameters come from
``config/vehicles/sim_van.yaml`` (load_vehicle_parameters).
"""

from tspace_ros.vehicle.cycles import (CYCLE_NAMES, drive_cycle, DriveCycle, DriveCycleError,
                                       SpeedTrace)
from tspace_ros.vehicle.driver import Driver
from tspace_ros.vehicle.longitudinal import GradeProfile, LongitudinalVehicle
from tspace_ros.vehicle.parameters import (load_torque_map, load_vehicle_parameters,
                                           vehicle_config_path, vehicle_parameters_from_dict,
                                           VehicleConfigError, VehicleParameters)
from tspace_ros.vehicle.powertrain import Battery, BatteryEmptyError, Driveline, Motor
from tspace_ros.vehicle.simulation import (DriveMetrics, SAMPLE_UNITS, VehicleSample,
                                           VehicleSimulation)
from tspace_ros.vehicle.vcu import Vcu

__all__ = ['Battery', 'BatteryEmptyError', 'CYCLE_NAMES', 'drive_cycle', 'DriveCycle',
           'DriveCycleError', 'Driveline', 'DriveMetrics', 'Driver', 'GradeProfile',
           'load_torque_map', 'load_vehicle_parameters', 'LongitudinalVehicle', 'Motor',
           'SAMPLE_UNITS', 'SpeedTrace', 'Vcu', 'vehicle_config_path',
           'vehicle_parameters_from_dict', 'VehicleConfigError', 'VehicleParameters',
           'VehicleSample', 'VehicleSimulation']
