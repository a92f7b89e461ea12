"""
The simulated van's default torque map, designed from its motor envelope.

Axle torque (Nm) over tspace's 14 speed rows x 17 pedal columns:

- pedal 0 regenerates ("lift-off" one-pedal braking): the axle torque of the
  regeneration envelope, at most ``lift_off_regen_nm`` (LIFT_OFF_REGEN_NM),
  faded in linearly from 0 at standstill to full at ``regen_fade_kph``;
- from pedal 0 to ``coast_pedal`` the regeneration falls linearly to 0 Nm;
- above ``coast_pedal`` the torque rises progressively,
  ``T_max(v) x x^progression`` with x = (pedal - coast_pedal) / (1 - coast_pedal),
  to the traction envelope T_max(v) at full pedal (4402 Nm below base speed).

``python -m tspace_ros.vehicle.default_map [vehicle.yaml] [out.yaml]`` writes
the map of a vehicle file (default: sim_van) as ``TorqueMap.to_dict()`` YAML.
"""

import sys

from tspace_ros.torque_map import (DEFAULT_PEDAL_BREAKPOINTS, DEFAULT_SPEED_BREAKPOINTS_KPH,
                                   TorqueMap)
from tspace_ros.torque_map.map import ORIGIN_DEFAULT
from tspace_ros.vehicle.parameters import load_vehicle_parameters, VehicleParameters
from tspace_ros.vehicle.powertrain import Driveline, Motor
import yaml

# Lift-off (pedal 0) regeneration of the default map, axle Nm: about 0.085 g for the
# 2.8 t test mass (800 / 0.345 m / 2800 kg / 9.81), a mild "normal mode" lift-off as
# most electric vans ship with, so the driver still uses the friction brakes on WLTC
# (about 6 % of the traction energy). The regeneration envelope reaches -2692 Nm; tspace's
# truck map went to -2300 Nm. The agent may only lower torque (more regeneration) by up
# to its budget, so this is the energy it can learn to win back.
LIFT_OFF_REGEN_NM = 800.0
# Pedal fraction up to which the default map regenerates (zero torque there).
COAST_PEDAL = 0.12


def design_default_map(params: VehicleParameters, lift_off_regen_nm: float = LIFT_OFF_REGEN_NM,
                       regen_fade_kph: float = 20.0, coast_pedal: float = COAST_PEDAL,
                       progression: float = 1.3) -> TorqueMap:
    """Return the default map (axle torque, Nm, 14 x 17) for a vehicle's envelope."""
    motor, driveline = Motor(params.motor), Driveline(params.driveline)
    rows = []
    for speed_kph in DEFAULT_SPEED_BREAKPOINTS_KPH:
        motor_rad_s = speed_kph / 3.6 / params.body.wheel_radius_m * driveline.ratio
        traction_nm = driveline.wheel_torque_nm(motor.max_torque_nm(motor_rad_s))
        regen_nm = max(driveline.wheel_torque_nm(motor.min_torque_nm(motor_rad_s)),
                       -lift_off_regen_nm) * min(1.0, speed_kph / regen_fade_kph)
        row = []
        for pedal in DEFAULT_PEDAL_BREAKPOINTS:
            if pedal <= coast_pedal:
                torque = regen_nm * (1.0 - pedal / coast_pedal)
            else:
                torque = traction_nm * ((pedal - coast_pedal) / (1.0 - coast_pedal)) ** progression
            row.append(round(torque, 1) + 0.0)
        rows.append(row)
    return TorqueMap(DEFAULT_SPEED_BREAKPOINTS_KPH, DEFAULT_PEDAL_BREAKPOINTS, rows,
                     params.vehicle_id, 0, ORIGIN_DEFAULT)


HEADER = """\
# Default accelerator-pedal torque map of the simulated 3.5 t electric van (sim_van.yaml).
# Format: TorqueMap.to_dict(). torque_nm[i][j] is the TOTAL TORQUE AT THE DRIVEN AXLE (both
# wheels), Nm, asked for at speed_breakpoints_kph[i] and pedal_breakpoints[j]; negative
# values regenerate. The VCU divides by the 10.5:1 reduction (and the gear efficiency) to
# get the motor torque and clips that to the motor envelope.
# Designed from the envelope by tspace_ros.vehicle.default_map.design_default_map:
# pedal 0 = mild lift-off regeneration (up to -800 Nm, about 0.085 g, faded in below
# 20 km/h), zero torque at pedal 0.12, progressive traction up to the envelope at
# pedal 1 (4402 Nm below base speed, 198 kW above it).
# Regenerate with: python -m tspace_ros.vehicle.default_map
"""


def main(argv=None) -> int:
    """Write the default map of a vehicle file as YAML (stdout or a file); exit code."""
    import argparse
    parser = argparse.ArgumentParser(
        prog='python -m tspace_ros.vehicle.default_map',
        description='Design the default torque map of a vehicle file from its motor '
        'envelope and write it as YAML.', epilog='exit codes: 0 written; 1 the vehicle '
        'file cannot be read or is wrong, or the output cannot be written; 2 wrong arguments')
    parser.add_argument('vehicle', nargs='?', default=None,
                        help='vehicle file (default: the shipped config/vehicles/sim_van.yaml)')
    parser.add_argument('out', nargs='?', default=None, help='output file (default: stdout)')
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        params = load_vehicle_parameters(args.vehicle)
        text = HEADER + yaml.safe_dump(design_default_map(params).to_dict(),
                                       default_flow_style=None, sort_keys=False, width=200)
        if args.out:
            with open(args.out, 'w') as out:
                out.write(text)
        else:
            sys.stdout.write(text)
    except (OSError, ValueError) as error:   # VehicleConfigError is a ValueError
        print(f'default_map: {error}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
