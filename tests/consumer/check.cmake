# Installs nestla into a scratch prefix and builds and runs the consumer project against it.
file(REMOVE_RECURSE ${BINARY_DIR})
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}")
  endif()
  message(STATUS "${out}")
endfunction()
run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${BINARY_DIR}/nestla -G ${GENERATOR}
    -DNESTLA_BUILD_TESTS=OFF -DNESTLA_BUILD_EXAMPLES=OFF -DCMAKE_INSTALL_PREFIX=${BINARY_DIR}/prefix)
run(${CMAKE_COMMAND} --install ${BINARY_DIR}/nestla)
run(${CMAKE_COMMAND} -S ${CONSUMER_DIR} -B ${BINARY_DIR}/consumer -G ${GENERATOR}
    -DCMAKE_PREFIX_PATH=${BINARY_DIR}/prefix)
run(${CMAKE_COMMAND} --build ${BINARY_DIR}/consumer)
run(${BINARY_DIR}/consumer/consumer)
