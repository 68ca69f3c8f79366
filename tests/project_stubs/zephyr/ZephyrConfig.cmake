# Test stub of the Zephyr CMake package (Zephyr cannot be installed here): what an application CMakeLists.txt relies
# on. find_package(Zephyr) sets up the toolchain (project()), the `zephyr_interface` target that carries Zephyr's
# compile flags and include folders, and the `app` library the application adds its sources to.
# STUB_CPU_FLAGS (a ;-list) are the board's CPU flags; the glue is compiled with -Wall -Wextra -Werror against the
# declarations in include/, which copy the signatures of Zephyr's API documentation.
project(zephyr_stub LANGUAGES C)
add_library(zephyr_interface INTERFACE)
target_include_directories(zephyr_interface INTERFACE ${CMAKE_CURRENT_LIST_DIR}/include)
target_compile_options(zephyr_interface INTERFACE ${STUB_CPU_FLAGS} -std=c11 -Wall -Wextra -Werror)
target_compile_definitions(zephyr_interface INTERFACE CONFIG_MAIN_STACK_SIZE=2048)
add_library(app STATIC)
target_link_libraries(app PUBLIC zephyr_interface)
