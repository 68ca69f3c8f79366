"""The files platform tools read, against their documented formats: Zephyr's prj.conf (Kconfig fragment) and
CMakeLists.txt, Arduino's library.properties (library specification 1.5). Each check is shown to pass on what we
generate and to catch a broken example; templates and names are checked too."""

from __future__ import annotations

import pytest

from tvm_pipeline.errors import InternalError, UserError
from tvm_pipeline.project import ProjectOptions, create_project
from tvm_pipeline.project.formats import (
    LIBRARY_REQUIRED,
    check_library_properties,
    check_prj_conf,
    check_zephyr_cmakelists,
    parse_properties,
)
from tvm_pipeline.project.writer import check_name, default_name, render

MODEL = "pool_linear"


@pytest.fixture(scope="module")
def zephyr_project(compiled, tmp_path_factory):
    folder = tmp_path_factory.mktemp("formats") / "z"
    create_project(compiled(MODEL), folder, ProjectOptions("zephyr", stack_bytes=3072))
    return folder


@pytest.fixture(scope="module")
def arduino_project(compiled, tmp_path_factory):
    folder = tmp_path_factory.mktemp("formats") / "a"
    create_project(compiled(MODEL), folder, ProjectOptions("arduino", stack_bytes=3072))
    return folder


def test_generated_prj_conf_and_board_fragment_are_kconfig(zephyr_project):
    text = (zephyr_project / "prj.conf").read_text()
    assert check_prj_conf(text) == []
    assert "CONFIG_MAIN_STACK_SIZE=3072\n" in text
    assert check_prj_conf((zephyr_project / "boards" / "nucleo_f746zg.conf").read_text()) == []


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("CONFIG_FPU = y", "is not CONFIG_"),
        ("CONFIG_FPU=yes", "is not CONFIG_"),
        ("FPU=y", "is not CONFIG_"),
        ('CONFIG_NAME="unterminated', "is not CONFIG_"),
        ("CONFIG_PRINTK=y\nCONFIG_PRINTK=n", "set twice"),
    ],
)
def test_prj_conf_check_catches(line, problem):
    assert check_prj_conf("# fine\nCONFIG_A=0x10\nCONFIG_B=\"s\"\n" + line)[0].count(problem) == 1


def test_generated_cmakelists_is_a_zephyr_application(zephyr_project):
    text = (zephyr_project / "CMakeLists.txt").read_text()
    assert check_zephyr_cmakelists(text, zephyr_project) == []
    assert "find_package(Zephyr REQUIRED HINTS $ENV{ZEPHYR_BASE})" in text


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda t: t.replace("VERSION 3.20.0", "VERSION 3.13.1"), "below Zephyr's 3.20.0"),
        (lambda t: t.replace("find_package(Zephyr REQUIRED HINTS $ENV{ZEPHYR_BASE})", ""), "no find_package"),
        (lambda t: t.replace("project(", "#").replace("find_package(", "project(x)\nfind_package("),
         "before find_package"),
        (lambda t: t.replace("target_sources(app", "target_sources(other"), "no target_sources(app"),
        (lambda t: t.replace("src/main.c", "src/missing.c"), "src/missing.c, which is not in the project"),
        (lambda t: "# comment first is fine\n" + t.replace("cmake_minimum_required", "message"), "first command"),
    ],
)
def test_cmakelists_check_catches(zephyr_project, edit, problem):
    text = edit((zephyr_project / "CMakeLists.txt").read_text())
    assert any(problem in found for found in check_zephyr_cmakelists(text, zephyr_project))


def test_generated_library_properties_follow_the_specification(arduino_project):
    text = (arduino_project / "library.properties").read_text()
    assert check_library_properties(text) == []
    properties = parse_properties(text)
    assert set(LIBRARY_REQUIRED) <= set(properties)
    assert properties["name"] == MODEL
    assert properties["architectures"] == "*"
    assert properties["includes"] == f"{MODEL}.h"


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda p: {k: v for k, v in p.items() if k != "maintainer"}, "missing required field maintainer"),
        (lambda p: {**p, "version": "v1"}, "is not semver"),
        (lambda p: {**p, "category": "Machine Learning"}, "is not one of"),
        (lambda p: {**p, "name": "_hidden"}, "name '_hidden'"),
        (lambda p: {**p, "name": "ArduinoModel"}, "not starting with 'Arduino'"),
        (lambda p: {**p, "url": "tvm.apache.org"}, "not an http(s) URL"),
    ],
)
def test_library_properties_check_catches(arduino_project, edit, problem):
    properties = edit(parse_properties((arduino_project / "library.properties").read_text()))
    text = "".join(f"{key}={value}\n" for key, value in properties.items())
    assert any(problem in found for found in check_library_properties(text))


def test_names_and_templates():
    assert default_name("mbv2-tiny.onnx") == "mbv2_tiny"
    assert default_name("3x3 conv.tflite") == "model_3x3_conv"
    with pytest.raises(UserError, match="start with a letter"):
        check_name("1st")
    with pytest.raises(InternalError, match="no value"):
        render("common/tvmp_sample_config.h.in")
    with pytest.raises(InternalError, match="no placeholder"):
        render("common/tvmp_sample_config.h.in", NAME="x", EXTRA="y")


def test_a_generator_bug_never_reaches_the_project_folder(compiled, tmp_path, monkeypatch):
    from tvm_pipeline.project import zephyr

    real = zephyr.project_files
    monkeypatch.setattr(zephyr, "project_files", lambda spec: {**real(spec), "prj.conf": "CONFIG_BROKEN\n"})
    with pytest.raises(InternalError, match="prj.conf: line 1"):
        create_project(compiled(MODEL), tmp_path / "z", ProjectOptions("zephyr", stack_bytes=3072))
    assert list(tmp_path.iterdir()) == []
