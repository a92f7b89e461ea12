# Source this file (bash) to use the bootstrapped workspace by hand:
#   source scripts/env.sh
# It activates .venv, points ament/CMake at the wheels in it, sources the colcon
# install/ and keeps ROS 2 traffic on this host (LOCALHOST discovery, no multicast).
_tspace_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_tspace_venv=${TSPACE_VENV:-$_tspace_root/.venv}
if [[ ! -f "$_tspace_venv/bin/activate" || ! -f "$_tspace_root/install/setup.bash" ]]; then
  echo "scripts/env.sh: run scripts/bootstrap first" >&2
  return 1 2>/dev/null || exit 1
fi
# shellcheck disable=SC1091
source "$_tspace_venv/bin/activate"
export AMENT_PREFIX_PATH="$_tspace_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$_tspace_venv${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
# colcon's setup scripts refer to unset variables; allow that under `set -u`.
_tspace_nounset=$([[ $- == *u* ]] && echo 1 || true)
set +u
# shellcheck disable=SC1091
source "$_tspace_root/install/setup.bash"
[[ -n "$_tspace_nounset" ]] && set -u
export RMW_IMPLEMENTATION=${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
unset _tspace_root _tspace_venv _tspace_nounset
