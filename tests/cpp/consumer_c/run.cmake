# Installs MemCache into a fresh prefix, then builds the C consumer (project(... C):
# a C compiler and the C linker only) against it with find_package and runs it,
# linked to the static and to the shared library. Called by ctest
# (find_package_consumer_c).
set(prefix "${BUILD_DIR}/consumer-c-prefix")
file(REMOVE_RECURSE "${prefix}")
execute_process(COMMAND "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${prefix}"
                OUTPUT_QUIET RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
    message(FATAL_ERROR "cmake --install failed")
endif()

function(consumer name)
    set(dir "${BUILD_DIR}/consumer-c-${name}")
    file(REMOVE_RECURSE "${dir}")
    execute_process(COMMAND "${CMAKE_COMMAND}" -S "${SOURCE_DIR}/tests/cpp/consumer_c"
                            -B "${dir}" -DCMAKE_PREFIX_PATH=${prefix}
                            -DCMAKE_BUILD_TYPE=Release ${ARGN}
                    RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
        message(FATAL_ERROR "C consumer ${name}: configure failed")
    endif()
    execute_process(COMMAND "${CMAKE_COMMAND}" --build "${dir}" RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
        message(FATAL_ERROR "C consumer ${name}: build failed")
    endif()
    execute_process(COMMAND "${dir}/consumer_c" RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
        message(FATAL_ERROR "C consumer ${name}: run failed")
    endif()
    message(STATUS "C consumer ${name}: ok")
endfunction()

consumer(static)
consumer(shared -DCONSUMER_SHARED=ON)
