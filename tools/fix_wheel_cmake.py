"""
Point the ROS 2 wheels' exported CMake files at this Python's headers.

The wheels on PyPI were built on a manylinux machine whose Python lives in
/opt/python/cp311-cp311. Their exported CMake targets (``share/**/*.cmake``)
name that machine's Python include directory and numpy include directory, so
CMake stops with "Imported target ... includes non-existent path /opt/python/..."
when another package (ours) links against them. This rewrites those paths to
the running interpreter's include directory and numpy's, in place.

Usage: ``python tools/fix_wheel_cmake.py [PREFIX]`` with the virtual
environment's Python (PREFIX defaults to ``sys.prefix``). Idempotent: files
without the old paths are left untouched. Prints how many files it changed.
"""

import pathlib
import sys
import sysconfig

BUILD_PYTHON = '/opt/python/cp311-cp311'
OLD_INCLUDE = BUILD_PYTHON + '/include/python3.11'
OLD_NUMPY = BUILD_PYTHON + '/lib/python3.11/site-packages/numpy/_core/include'


def rewrite(prefix: pathlib.Path, include: str, numpy_include: str) -> int:
    """Rewrite the build machine's paths in prefix/share/**/*.cmake; return files changed."""
    replacements = [(OLD_NUMPY, numpy_include), (OLD_INCLUDE, include)]
    changed = 0
    for path in pathlib.Path(prefix, 'share').rglob('*.cmake'):
        text = path.read_text(encoding='utf-8', errors='surrogateescape')
        if BUILD_PYTHON not in text:
            continue
        new = text
        for old, replacement in replacements:
            new = new.replace(old, replacement)
        if new != text:
            path.write_text(new, encoding='utf-8', errors='surrogateescape')
            changed += 1
    return changed


def main(argv: list) -> int:
    """Fix the CMake files under the given prefix (default sys.prefix); return an exit code."""
    prefix = pathlib.Path(argv[1] if len(argv) > 1 else sys.prefix)
    try:
        import numpy
    except ImportError:
        print('fix_wheel_cmake: numpy is not installed in this environment', file=sys.stderr)
        return 1
    include = sysconfig.get_paths()['include']
    if not pathlib.Path(include, 'Python.h').is_file():
        print(f'fix_wheel_cmake: Python.h not found in {include}', file=sys.stderr)
        return 1
    changed = rewrite(prefix, include, numpy.get_include())
    print(f'fix_wheel_cmake: rewrote {changed} CMake file(s) under {prefix} to {include}')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
