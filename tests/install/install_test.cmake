# cmake -P script: install, then configure/build/run an example against the
# installed package only (no source tree on its include or prefix paths).
file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "command failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

run(${CMAKE_COMMAND} --install ${SAGA_BINARY_DIR} --prefix ${prefix})
run(${CMAKE_COMMAND} -S ${SAGA_EXAMPLE_DIR} -B ${WORK_DIR}/build -G ${GENERATOR}
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=Release)
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build)
run(${WORK_DIR}/build/saga_quickstart)
if(NOT last_output MATCHES "parse_rooms\\(3\\): 3")
  message(FATAL_ERROR "the installed example printed something unexpected:\n${last_output}")
endif()
message(STATUS "example output:\n${last_output}")
