# Installs nestla into a scratch prefix and builds and runs the consumer project against it.
file(REMOVE_RECURSE ${BINARY_DIR})
# The build's CMAKE_PREFIX_PATH ("|"-separated), through the environment
# (":"-separated there), where a ";" cannot be split apart on the way.
string(REPLACE "|" ":" prefix_path "${PREFIX_PATH}")
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}")
  endif()
  message(STATUS "${out}")
  set(last_output "${out}" PARENT_SCOPE)
endfunction()
set(ENV{CMAKE_PREFIX_PATH} "${prefix_path}")
run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${BINARY_DIR}/nestla -G ${GENERATOR}
    -DNESTLA_BUILD_TESTS=OFF -DNESTLA_BUILD_EXAMPLES=OFF -DCMAKE_INSTALL_PREFIX=${BINARY_DIR}/prefix)
# Not the tests, so not the CUDA tests either, even where nvcc is found.
file(STRINGS ${BINARY_DIR}/nestla/CMakeCache.txt cuda_option REGEX "^NESTLA_CUDA:BOOL=")
if(NOT cuda_option STREQUAL "NESTLA_CUDA:BOOL=OFF")
  message(FATAL_ERROR "NESTLA_CUDA defaults to on with NESTLA_BUILD_TESTS=OFF: ${cuda_option}")
endif()
run(${CMAKE_COMMAND} --install ${BINARY_DIR}/nestla)
set(ENV{CMAKE_PREFIX_PATH} "${BINARY_DIR}/prefix:${prefix_path}")
run(${CMAKE_COMMAND} -S ${CONSUMER_DIR} -B ${BINARY_DIR}/consumer -G ${GENERATOR})
# The consumer found the xsimd the tests were built with.
if(XSIMD_VERSION AND NOT last_output MATCHES "consumer: xsimd ${XSIMD_VERSION}")
  message(FATAL_ERROR "the consumer did not find xsimd ${XSIMD_VERSION}:\n${last_output}")
endif()
run(${CMAKE_COMMAND} --build ${BINARY_DIR}/consumer)
run(${BINARY_DIR}/consumer/consumer)
