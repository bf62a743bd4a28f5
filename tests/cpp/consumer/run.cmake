# Installs MemCache into a prefix, then builds and runs the consumer project against it
# in every configuration users need. Called by ctest (find_package_consumer).
set(prefix "${BUILD_DIR}/consumer-prefix")
execute_process(COMMAND "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${prefix}"
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
    message(FATAL_ERROR "cmake --install failed")
endif()

set(other_dir "${BUILD_DIR}/other-rust")
execute_process(COMMAND "${CMAKE_COMMAND}" -E env CARGO_TARGET_DIR=${other_dir}
                "${CARGO}" build --release --quiet
                WORKING_DIRECTORY "${SOURCE_DIR}/tests/cpp/consumer/other-rust"
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
    message(FATAL_ERROR "building the second Rust library failed")
endif()
set(other_lib "${other_dir}/release/libother_rust.a")

function(consumer name)
    set(dir "${BUILD_DIR}/consumer-${name}")
    file(REMOVE_RECURSE "${dir}")
    execute_process(COMMAND "${CMAKE_COMMAND}" -S "${SOURCE_DIR}/tests/cpp/consumer" -B "${dir}"
                            -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=Release ${ARGN}
                    RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
        message(FATAL_ERROR "consumer ${name}: configure failed")
    endif()
    execute_process(COMMAND "${CMAKE_COMMAND}" --build "${dir}" RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
        message(FATAL_ERROR "consumer ${name}: build failed")
    endif()
    execute_process(COMMAND "${dir}/consumer" RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
        message(FATAL_ERROR "consumer ${name}: run failed")
    endif()
    message(STATUS "consumer ${name}: ok")
endfunction()

consumer(static)
consumer(shared -DCONSUMER_SHARED=ON)
consumer(old-string-abi "-DCMAKE_CXX_FLAGS=-D_GLIBCXX_USE_CXX11_ABI=0")
consumer(no-exceptions "-DCMAKE_CXX_FLAGS=-fno-exceptions")
consumer(second-rust-lib -DCONSUMER_SHARED=ON -DOTHER_RUST_LIB=${other_lib})
consumer(second-rust-lib-static -DOTHER_RUST_LIB=${other_lib})
