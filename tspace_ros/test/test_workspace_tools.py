"""
The workspace tools: bootstrap checks, the wheel CMake fix and the test summary.

These run the real scripts from the repository (scripts/, tools/) that the
README's commands use.
"""

import importlib.util
import os
import pathlib
import subprocess

import pytest
from ros_test_support import REPO_ROOT

BOOTSTRAP = REPO_ROOT / 'scripts' / 'bootstrap'
pytestmark = pytest.mark.skipif(not BOOTSTRAP.is_file(),
                                reason='not run from the tspace_ros repository checkout')


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_python(tmp_path, version_line, include_dir):
    """Write an executable that answers bootstrap's two probes like a given Python."""
    fake = tmp_path / 'python-fake'
    fake.write_text(
        '#!/bin/sh\n'
        'case "$*" in\n'
        f'  *sysconfig*) echo "{include_dir}" ;;\n'
        f'  *) echo "{version_line}" ;;\n'
        'esac\n')
    fake.chmod(0o755)
    return fake


def _bootstrap(tmp_path, python):
    env = dict(os.environ, PYTHON=str(python), TSPACE_VENV=str(tmp_path / 'venv'),
               TSPACE_NO_APT='1')
    return subprocess.run([str(BOOTSTRAP)], env=env, capture_output=True, text=True,
                          timeout=60)


def test_bootstrap_refuses_a_python_that_is_not_3_11(tmp_path):
    result = _bootstrap(tmp_path, _fake_python(tmp_path, '3.12 cpython', tmp_path))
    assert result.returncode != 0
    assert 'Python 3.12 cpython' in result.stderr and 'needs CPython 3.11' in result.stderr
    assert not (tmp_path / 'venv').exists(), 'a venv was created for the wrong Python'


def test_bootstrap_refuses_a_python_without_headers(tmp_path):
    no_headers = tmp_path / 'include'
    no_headers.mkdir()
    result = _bootstrap(tmp_path, _fake_python(tmp_path, '3.11 cpython', no_headers))
    assert result.returncode != 0
    assert 'Python headers are missing' in result.stderr
    assert 'python3.11-dev' in result.stderr
    assert not (tmp_path / 'venv').exists()


def test_bootstrap_names_a_missing_interpreter(tmp_path):
    result = _bootstrap(tmp_path, tmp_path / 'no-such-python')
    assert result.returncode != 0
    assert 'cannot run' in result.stderr


@pytest.mark.skipif(not (REPO_ROOT / 'install' / '.tspace-build.sha256').is_file(),
                    reason='the workspace has not been bootstrapped')
def test_second_bootstrap_with_nothing_changed_is_a_no_op():
    result = subprocess.run([str(BOOTSTRAP)], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, TSPACE_NO_APT='1'))
    assert result.returncode == 0, result.stderr
    assert 'venv up to date' in result.stdout
    assert 'build up to date' in result.stdout
    assert 'colcon build' not in result.stdout and 'installing' not in result.stdout


def test_wheel_cmake_fix_rewrites_build_machine_paths_once(tmp_path):
    fix = _load_tool('fix_wheel_cmake')
    cmake_dir = tmp_path / 'share' / 'std_msgs' / 'cmake'
    cmake_dir.mkdir(parents=True)
    broken = cmake_dir / 'export_std_msgs__rosidl_generator_pyExport.cmake'
    broken.write_text(
        f'INTERFACE_INCLUDE_DIRECTORIES "{fix.OLD_INCLUDE};{fix.OLD_NUMPY}"\n')
    untouched = cmake_dir / 'other.cmake'
    untouched.write_text('set(X /usr/include)\n')
    before = untouched.stat().st_mtime_ns

    assert fix.rewrite(tmp_path, '/py/include', '/np/include') == 1
    assert broken.read_text() == 'INTERFACE_INCLUDE_DIRECTORIES "/py/include;/np/include"\n'
    assert untouched.stat().st_mtime_ns == before
    assert fix.rewrite(tmp_path, '/py/include', '/np/include') == 0  # idempotent


def _junit(path: pathlib.Path, outcomes):
    cases = ''.join(f'<testcase name="t{i}">{body}</testcase>' for i, body in enumerate(outcomes))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'<testsuites><testsuite>{cases}</testsuite></testsuites>')


def test_summary_counts_outcomes_over_packages_and_fails_on_failure(tmp_path, capsys):
    summary = _load_tool('test_summary')
    _junit(tmp_path / 'pkg_a' / 'pytest.xml', ['', '', '<skipped/>'])
    _junit(tmp_path / 'pkg_b' / 'test_results' / 'pkg_b' / 'x.xml',
           ['', '<failure/>', '<error/>'])
    assert summary.main(['test_summary', str(tmp_path)]) == 1
    assert capsys.readouterr().out.strip() == 'tests: 3 passed, 2 failed, 1 skipped'


def test_summary_passes_clean_runs_and_refuses_empty_ones(tmp_path, capsys):
    summary = _load_tool('test_summary')
    assert summary.main(['test_summary', str(tmp_path)]) == 1  # nothing ran
    _junit(tmp_path / 'pkg' / 'pytest.xml', ['', ''])
    assert summary.main(['test_summary', str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip().endswith('tests: 2 passed, 0 failed, 0 skipped')
