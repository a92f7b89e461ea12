"""
Summarise the JUnit results that `colcon test` left in build/ as one line.

Prints ``tests: N passed, N failed, N skipped`` (errors count as failed) and
exits 1 when anything failed or no test ran at all, else 0.

Usage: ``python tools/test_summary.py BUILD_DIR``
"""

import pathlib
import sys
import xml.etree.ElementTree as ElementTree


def count(build: pathlib.Path):
    """Return (passed, failed, skipped, files) over the JUnit XML files under build."""
    files = sorted(build.glob('*/pytest.xml')) + sorted(build.glob('*/test_results/**/*.xml'))
    passed = failed = skipped = 0
    for path in files:
        root = ElementTree.parse(path).getroot()
        for case in root.iter('testcase'):
            outcomes = {child.tag for child in case}
            if outcomes & {'failure', 'error'}:
                failed += 1
            elif 'skipped' in outcomes:
                skipped += 1
            else:
                passed += 1
    return passed, failed, skipped, files


def main(argv) -> int:
    """Print the summary line for argv[1] (the colcon build directory)."""
    build = pathlib.Path(argv[1] if len(argv) > 1 else 'build')
    passed, failed, skipped, files = count(build)
    print(f'tests: {passed} passed, {failed} failed, {skipped} skipped')
    if not files or passed + failed == 0:
        print('test_summary: no test results found: no test ran', file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
